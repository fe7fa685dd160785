package payload

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"
)

// fixedReader returns the same byte for ever: deterministic "randomness" for golden vectors.
type fixedReader byte

func (f fixedReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(f)
	}
	return len(p), nil
}

// TestGoldenVectors pins U/V/K, auth_tag and the payload layout; expected values come from an
// independent computation below (plain crypto/cipher calls, not this package).
func TestGoldenVectors(t *testing.T) {
	k, u, v, err := Split(fixedReader(0x5a))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k, bytes.Repeat([]byte{0x5a}, 32)) || !bytes.Equal(v, k) || !bytes.Equal(u, make([]byte, 32)) {
		t.Fatalf("split: k %x u %x v %x", k, u, v)
	}
	// Real-looking halves.
	k = bytes.Repeat([]byte{0x11, 0x22}, 16)
	v = bytes.Repeat([]byte{0x0f}, 32)
	u, _ = Combine(k, v)
	if hex.EncodeToString(u) != "1e2d1e2d1e2d1e2d1e2d1e2d1e2d1e2d1e2d1e2d1e2d1e2d1e2d1e2d1e2d1e2d" {
		t.Errorf("U = %x", u)
	}
	back, _ := Combine(u, v)
	if !bytes.Equal(back, k) {
		t.Error("U ⊕ V != K")
	}
	// auth_tag = hex HMAC-SHA384(K, uuid).
	tag := Tag(k, "d432fbb3-d2f1-4a97-9ef7-75bd81c00000")
	m := hmac.New(sha512.New384, k)
	m.Write([]byte("d432fbb3-d2f1-4a97-9ef7-75bd81c00000"))
	// Also computed with Python's hmac module.
	const wantTag = "ef79dcf53201d1efa1aa65c33c29ec765eaa91e687cd0030d5a6b2dbb3521b6cdb9c70f5f39aa634df3f3b498754b733"
	if tag != hex.EncodeToString(m.Sum(nil)) || tag != wantTag {
		t.Errorf("auth_tag %s", tag)
	}
	if !CheckTag(k, "d432fbb3-d2f1-4a97-9ef7-75bd81c00000", tag) || CheckTag(k, "other", tag) {
		t.Error("CheckTag")
	}
	// Payload: IV (16 × 0x42) || ciphertext || tag, decrypted independently.
	sealed, err := Encrypt(fixedReader(0x42), k, []byte("hello payload"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(sealed)
	if len(raw) != 16+13+16 || !bytes.Equal(raw[:16], bytes.Repeat([]byte{0x42}, 16)) {
		t.Fatalf("layout: %x", raw)
	}
	block, _ := aes.NewCipher(k)
	gcm, _ := cipher.NewGCMWithNonceSize(block, 16)
	plain, err := gcm.Open(nil, raw[:16], raw[16:], nil)
	if err != nil || string(plain) != "hello payload" {
		t.Fatalf("independent decrypt: %q %v", plain, err)
	}
	// Pinned ciphertext for these inputs, computed with Python's cryptography AESGCM (16-byte IV).
	const want = "QkJCQkJCQkJCQkJCQkJCQt824iyyQzFiAfnuTKfvc8AmLWBK/3Y8cAF415G1"
	if sealed != want {
		t.Errorf("ciphertext changed: %s", sealed)
	}
}

func TestRoundTripsAndFailures(t *testing.T) {
	k, u, v, err := Split(nil)
	if err != nil {
		t.Fatal(err)
	}
	nk, _ := rsa.GenerateKey(rand.Reader, 2048)
	wu, err := WrapKey(nil, &nk.PublicKey, u)
	if err != nil {
		t.Fatal(err)
	}
	gotU, err := UnwrapKey(nk, wu)
	if err != nil || !bytes.Equal(gotU, u) {
		t.Fatalf("unwrap: %v", err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := UnwrapKey(other, wu); !errors.Is(err, ErrDecrypt) {
		t.Errorf("half unwrapped with another NK: %v", err)
	}
	sealed, _ := Encrypt(nil, k, []byte("secret"))
	kk, _ := Combine(gotU, v)
	if p, err := Decrypt(kk, sealed); err != nil || string(p) != "secret" {
		t.Fatalf("decrypt: %q %v", p, err)
	}
	bad := make([]byte, 32)
	if _, err := Decrypt(bad, sealed); !errors.Is(err, ErrDecrypt) {
		t.Errorf("wrong key: %v", err)
	}
	raw, _ := base64.StdEncoding.DecodeString(sealed)
	raw[20] ^= 1
	if _, err := Decrypt(k, base64.StdEncoding.EncodeToString(raw)); !errors.Is(err, ErrDecrypt) {
		t.Errorf("tampered payload: %v", err)
	}
	for _, p := range []string{"", "AAAA", "!!!"} {
		if _, err := Decrypt(k, p); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%q: %v", p, err)
		}
	}
	if _, err := Combine(make([]byte, 32), make([]byte, 16)); err == nil {
		t.Error("halves of different sizes combined")
	}
}
