// Package payload is Keylime's secure-payload cryptography: a 32-byte bootstrap key K split into two
// halves U ⊕ V = K, the payload sealed with AES-GCM under K (b64(IV16 || ciphertext || tag16), no AAD),
// each half wrapped for the agent's NK with RSA-OAEP (SHA-1, MGF1-SHA-1, no label), and the HMAC-SHA384
// tags that prove knowledge of K (auth_tag over the agent id, keys/verify over a challenge).
package payload

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
)

// KeySize is the size of K, U and V (AES-256); halves of 16 bytes (AES-128) are accepted too.
const KeySize = 32

// ivSize and tagSize are Keylime's AES-GCM layout: a 16-byte IV (not GCM's usual 12) and a 16-byte tag.
const (
	ivSize  = 16
	tagSize = 16
)

// ErrDecrypt is returned for every payload or key-half that does not decrypt or authenticate.
var ErrDecrypt = errors.New("payload does not decrypt")

// Split draws a random K and V and returns K, U = K ⊕ V and V.
func Split(r io.Reader) (k, u, v []byte, err error) {
	if r == nil {
		r = rand.Reader
	}
	k, v = make([]byte, KeySize), make([]byte, KeySize)
	if _, err := io.ReadFull(r, k); err != nil {
		return nil, nil, nil, err
	}
	if _, err := io.ReadFull(r, v); err != nil {
		return nil, nil, nil, err
	}
	u, _ = Combine(k, v)
	return k, u, v, nil
}

// Combine returns a ⊕ b; the halves must have the same length, 16 or 32 bytes.
func Combine(a, b []byte) ([]byte, error) {
	if len(a) != len(b) || (len(a) != 16 && len(a) != 32) {
		return nil, fmt.Errorf("key halves of %d and %d bytes: want two of 16 or 32", len(a), len(b))
	}
	out := make([]byte, len(a))
	subtle.XORBytes(out, a, b)
	return out, nil
}

// Encrypt seals plaintext under k: base64(IV || ciphertext || tag) with a random 16-byte IV.
func Encrypt(r io.Reader, k, plaintext []byte) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	gcm, err := newGCM(k)
	if err != nil {
		return "", err
	}
	iv := make([]byte, ivSize, ivSize+len(plaintext)+tagSize)
	if _, err := io.ReadFull(r, iv); err != nil {
		return "", err
	}
	sealed := gcm.Seal(iv, iv, plaintext, nil)
	return base64.StdEncoding.EncodeToString(sealed), nil
}

// Decrypt opens a payload made by Encrypt (or Keylime's tenant).
func Decrypt(k []byte, payload string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrDecrypt)
	}
	if len(raw) < ivSize+tagSize {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrDecrypt, len(raw))
	}
	gcm, err := newGCM(k)
	if err != nil {
		return nil, err
	}
	out, err := gcm.Open(nil, raw[:ivSize], raw[ivSize:], nil)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrDecrypt)
	}
	return out, nil
}

func newGCM(k []byte) (cipher.AEAD, error) {
	if len(k) != 16 && len(k) != 32 {
		return nil, fmt.Errorf("AES key of %d bytes: want 16 or 32", len(k))
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithNonceSize(block, ivSize)
}

// ParseNK reads the agent's NK as it sends it (pubkey): a PEM SubjectPublicKeyInfo of an RSA key.
func ParseNK(pemText string) (*rsa.PublicKey, error) {
	blk, _ := pem.Decode([]byte(pemText))
	if blk == nil {
		return nil, errors.New("NK is not PEM")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("NK: %w", err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("NK is %T, want RSA", k)
	}
	return rk, nil
}

// WrapKey encrypts a key half for the agent's NK: base64 of RSA-OAEP (SHA-1, MGF1-SHA-1, no label).
func WrapKey(r io.Reader, nk *rsa.PublicKey, half []byte) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	ct, err := rsa.EncryptOAEP(sha1.New(), r, nk, half, nil)
	if err != nil {
		return "", fmt.Errorf("wrap key half: %w", err)
	}
	return base64.StdEncoding.EncodeToString(ct), nil
}

// UnwrapKey decrypts a key half with the NK; only 16- or 32-byte halves are accepted.
func UnwrapKey(nk *rsa.PrivateKey, wrapped string) ([]byte, error) {
	ct, err := base64.StdEncoding.DecodeString(wrapped)
	if err != nil {
		return nil, fmt.Errorf("%w: encrypted_key is not base64", ErrDecrypt)
	}
	half, err := rsa.DecryptOAEP(sha1.New(), nil, nk, ct, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: encrypted_key does not decrypt with the NK", ErrDecrypt)
	}
	if len(half) != 16 && len(half) != 32 {
		return nil, fmt.Errorf("%w: key half of %d bytes", ErrDecrypt, len(half))
	}
	return half, nil
}

// Tag is lowercase hex HMAC-SHA384(key, msg): Keylime's auth_tag (msg = agent id) and keys/verify answer
// (msg = challenge).
func Tag(key []byte, msg string) string {
	m := hmac.New(sha512.New384, key)
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// CheckTag compares a tag with Tag(key, msg) in constant time.
func CheckTag(key []byte, msg, tag string) bool {
	return hmac.Equal([]byte(Tag(key, msg)), []byte(tag))
}
