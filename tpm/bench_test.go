package tpm

import (
	"crypto/rand"
	"testing"
)

func BenchmarkParsePublic(b *testing.B) {
	for _, name := range []string{"ek-rsa2048.pub", "ak-ecc.pub", "ak-rsa.pub", "ek-ecc384.pub"} {
		raw := readFixture(b, name)
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := ParsePublic(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParsePublicReflect is the go-tpm path ParsePublic falls back to (and used
// for every key before the hand decoder), for comparison.
func BenchmarkParsePublicReflect(b *testing.B) {
	for _, name := range []string{"ek-rsa2048.pub", "ak-ecc.pub", "ak-rsa.pub", "ek-ecc384.pub"} {
		raw := readFixture(b, name)
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := parsePublicReflect(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMakeCredential(b *testing.B) {
	akName := readFixture(b, "ak-rsa.name")
	secret := readFixture(b, "secret.bin")
	for _, name := range []string{"ek-rsa2048.pub", "ek-ecc384.pub"} {
		ek := mustParse(b, readFixture(b, name))
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := MakeCredential(rand.Reader, ek, akName, secret); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
