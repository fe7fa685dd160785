package payload

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"
)

// BenchmarkPayload measures the tenant's and the agent's payload crypto: the key split, sealing and
// opening a 64 KiB payload, wrapping a key half for the NK (RSA-OAEP) and unwrapping it, and the
// auth_tag.
func BenchmarkPayload(b *testing.B) {
	nk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	k, u, _, err := Split(nil)
	if err != nil {
		b.Fatal(err)
	}
	plain := make([]byte, 64<<10)
	sealed, _ := Encrypt(nil, k, plain)
	wrapped, _ := WrapKey(nil, &nk.PublicKey, u)
	b.Run("split", func(b *testing.B) {
		for b.Loop() {
			if _, _, _, err := Split(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encrypt-64KiB", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := Encrypt(nil, k, plain); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decrypt-64KiB", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := Decrypt(k, sealed); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("wrap-oaep", func(b *testing.B) {
		for b.Loop() {
			if _, err := WrapKey(nil, &nk.PublicKey, u); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unwrap-oaep", func(b *testing.B) {
		for b.Loop() {
			if _, err := UnwrapKey(nk, wrapped); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("auth-tag", func(b *testing.B) {
		for b.Loop() {
			_ = Tag(k, "d432fbb3-d2f1-4a97-9ef7-75bd81c00000")
		}
	})
}
