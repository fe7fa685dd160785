package payload

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"
)

// FuzzDecrypt: any payload string is either refused with ErrDecrypt or opens to a plaintext that seals
// and opens again to itself.
func FuzzDecrypt(f *testing.F) {
	k := bytes.Repeat([]byte{0x11, 0x22}, 16)
	good, _ := Encrypt(fixedReader(0x42), k, []byte("hello payload"))
	for _, s := range []string{good, "", "AAAA", "!!!", good[:20], good + "AA=="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sealed string) {
		p, err := Decrypt(k, sealed)
		if err != nil {
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("error not ErrDecrypt: %v", err)
			}
			return
		}
		again, err := Encrypt(nil, k, p)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := Decrypt(k, again); err != nil || !bytes.Equal(back, p) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzUnwrapKey: any encrypted_key is refused with ErrDecrypt or yields a 16- or 32-byte half.
func FuzzUnwrapKey(f *testing.F) {
	nk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := WrapKey(nil, &nk.PublicKey, make([]byte, 32))
	short, _ := WrapKey(nil, &nk.PublicKey, make([]byte, 7))
	for _, s := range []string{good, short, "", "%%%", good[:40]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, wrapped string) {
		h, err := UnwrapKey(nk, wrapped)
		if err != nil {
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("error not ErrDecrypt: %v", err)
			}
			return
		}
		if len(h) != 16 && len(h) != 32 {
			t.Fatalf("half of %d bytes accepted", len(h))
		}
	})
}
