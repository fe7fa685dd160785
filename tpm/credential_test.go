package tpm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-tpm/tpm2"
)

func TestNewChallenge(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		c, err := NewChallenge(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if len(c) != ChallengeLen {
			t.Fatalf("len = %d", len(c))
		}
		for _, b := range c {
			if !strings.ContainsRune(challengeAlphabet, rune(b)) {
				t.Fatalf("challenge %q has %q", c, b)
			}
		}
		seen[string(c)] = true
	}
	if len(seen) != 100 {
		t.Errorf("only %d distinct challenges of 100", len(seen))
	}
}

// Bytes 248..255 are rejected (so each character has probability 4/248); the rest
// map to alphabet[b%62].
func TestNewChallengeUnbiased(t *testing.T) {
	src := bytes.Repeat([]byte{255, 248, 0, 61, 62, 247}, 40)
	c, err := NewChallenge(bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	// Per 6 input bytes, 4 are used: 0->'A', 61->'9', 62->'A', 247->'9' (247%62=61).
	want := strings.Repeat("A9A9", 8)
	if string(c) != want {
		t.Errorf("NewChallenge = %q, want %q", c, want)
	}
	if _, err := NewChallenge(bytes.NewReader(bytes.Repeat([]byte{250}, 1000))); err == nil {
		t.Error("a source of only rejected bytes did not end in an error")
	}
	if _, err := NewChallenge(iotest.ErrReader(io.ErrUnexpectedEOF)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read error not returned: %v", err)
	}
}

// activateSoftware is TPM2_ActivateCredential in software (TPM 2.0 Part 1, 24 and
// Part 3, 12.5), written from the spec independently of go-tpm's CreateCredential,
// using the EK's private key.
func activateSoftware(t *testing.T, priv any, ek *Public, akName, blob []byte) ([]byte, error) {
	t.Helper()
	idObject, encSecret, err := ParseCredentialBlob(blob)
	if err != nil {
		return nil, err
	}
	h, err := nameHash(ek.Public.NameAlg)
	if err != nil {
		return nil, err
	}
	var seed []byte
	var symBits int
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		if seed, err = rsa.DecryptOAEP(h.New(), nil, k, encSecret, []byte("IDENTITY\x00")); err != nil {
			return nil, fmt.Errorf("OAEP: %w", err)
		}
		d, _ := ek.Public.Parameters.RSADetail()
		bits, _ := d.Symmetric.KeyBits.AES()
		symBits = int(*bits)
	case *ecdh.PrivateKey:
		pt, err := tpm2.Unmarshal[tpm2.TPMSECCPoint](encSecret)
		if err != nil {
			return nil, err
		}
		if len(tpm2.Marshal(*pt)) != len(encSecret) {
			return nil, errors.New("trailing bytes after ECC point")
		}
		eph, err := k.Curve().NewPublicKey(append(append([]byte{4}, pt.X.Buffer...), pt.Y.Buffer...))
		if err != nil {
			return nil, err
		}
		z, err := k.ECDH(eph)
		if err != nil {
			return nil, err
		}
		raw := k.PublicKey().Bytes()[1:]
		seed = tpm2.KDFe(h, z, "IDENTITY", pt.X.Buffer, raw[:len(raw)/2], h.Size()*8)
		d, _ := ek.Public.Parameters.ECCDetail()
		bits, _ := d.Symmetric.KeyBits.AES()
		symBits = int(*bits)
	default:
		return nil, fmt.Errorf("key type %T", priv)
	}
	// idObject = TPM2B integrityHMAC || encIdentity
	if len(idObject) < 2 {
		return nil, errors.New("short idObject")
	}
	n := int(binary.BigEndian.Uint16(idObject))
	if n != h.Size() || len(idObject) < 2+n {
		return nil, fmt.Errorf("integrity HMAC is %d bytes", n)
	}
	integrity, encIdentity := idObject[2:2+n], idObject[2+n:]
	mac := hmac.New(h.New, tpm2.KDFa(h, seed, "INTEGRITY", nil, nil, h.Size()*8))
	mac.Write(encIdentity)
	mac.Write(akName)
	if !hmac.Equal(mac.Sum(nil), integrity) {
		return nil, errors.New("integrity check failed")
	}
	block, err := aes.NewCipher(tpm2.KDFa(h, seed, "STORAGE", akName, nil, symBits))
	if err != nil {
		return nil, err
	}
	plain := make([]byte, len(encIdentity))
	cipher.NewCFBDecrypter(block, make([]byte, block.BlockSize())).XORKeyStream(plain, encIdentity)
	if len(plain) < 2 || int(binary.BigEndian.Uint16(plain)) != len(plain)-2 {
		return nil, errors.New("bad credential TPM2B")
	}
	return plain[2:], nil
}

func TestMakeCredentialSoftwareActivation(t *testing.T) {
	akPub := mustParse(t, readFixture(t, "ak-rsa.pub"))
	type ekCase struct {
		name string
		priv any
		pub  tpm2.TPMTPublic
		// sizes of the blob parts: idObject = 2 + HMAC + 2 + 32; encSecret
		wantID, wantEnc int
	}
	p256, p384, p521 := ecdhKey(t, ecdh.P256()), ecdhKey(t, ecdh.P384()), ecdhKey(t, ecdh.P521())
	r2048, r3072 := rsaKey(t, 2048), rsaKey(t, 3072)
	cases := []ekCase{
		{"RSA-2048", r2048, rsaEK(&r2048.PublicKey), 2 + 32 + 34, 256},
		{"RSA-3072", r3072, rsaEK(&r3072.PublicKey), 2 + 32 + 34, 384},
		{"P-256", p256, eccEK(p256), 2 + 32 + 34, 2 + 32 + 2 + 32},
		{"P-384 high range", p384, eccEK(p384), 2 + 48 + 34, 2 + 48 + 2 + 48},
		{"P-521 high range", p521, eccEK(p521), 2 + 64 + 34, 2 + 66 + 2 + 66},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ek := mustParse(t, marshal2B(tc.pub))
			secret, err := NewChallenge(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			blob, err := MakeCredential(rand.Reader, ek, akPub.Name, secret)
			if err != nil {
				t.Fatalf("MakeCredential: %v", err)
			}
			if got, want := len(blob), 4+4+2+tc.wantID+2+tc.wantEnc; got != want {
				t.Errorf("blob is %d bytes, want %d", got, want)
			}
			got, err := activateSoftware(t, tc.priv, ek, akPub.Name, blob)
			if err != nil {
				t.Fatalf("software activation: %v", err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("activated %q, want %q", got, secret)
			}
			// Bound to the AK name: another name fails the integrity check.
			other := bytes.Clone(akPub.Name)
			other[len(other)-1] ^= 1
			if _, err := activateSoftware(t, tc.priv, ek, other, blob); err == nil {
				t.Error("activation with a different AK name succeeded")
			}
		})
	}
}

// Golden layout for the swtpm RSA-2048 EK (336 bytes, per research/tpm-tooling.md)
// and the P-384 EK (196 bytes), matching the sizes tpm2_makecredential produced
// for the same EKs (testdata/cred-*.blob).
func TestCredentialBlobGolden(t *testing.T) {
	akName := readFixture(t, "ak-rsa.name")
	secret := readFixture(t, "secret.bin")
	tests := []struct {
		ek, tools string
		header    []byte // magic | version | idObject size | HMAC size
		wantLen   int
		encSize   int
	}{
		{"ek-rsa2048.pub", "cred-rsa.blob", []byte{0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1, 0x00, 0x44, 0x00, 0x20}, 336, 256},
		{"ek-ecc384.pub", "cred-ecc384.blob", []byte{0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1, 0x00, 0x54, 0x00, 0x30}, 196, 100},
	}
	for _, tt := range tests {
		t.Run(tt.ek, func(t *testing.T) {
			ek := mustParse(t, readFixture(t, tt.ek))
			blob, err := MakeCredential(rand.Reader, ek, akName, secret)
			if err != nil {
				t.Fatal(err)
			}
			tools := readFixture(t, tt.tools)
			for name, b := range map[string][]byte{"ours": blob, "tpm2-tools": tools} {
				if len(b) != tt.wantLen {
					t.Errorf("%s: %d bytes, want %d", name, len(b), tt.wantLen)
				}
				if !bytes.HasPrefix(b, tt.header) {
					t.Errorf("%s: header %x, want %x", name, b[:len(tt.header)], tt.header)
				}
				id, enc, err := ParseCredentialBlob(b)
				if err != nil {
					t.Fatalf("%s: ParseCredentialBlob: %v", name, err)
				}
				if len(enc) != tt.encSize || 12+len(id)+len(enc) != len(b) {
					t.Errorf("%s: idObject %d, encSecret %d bytes", name, len(id), len(enc))
				}
			}
		})
	}
}

// ParseCredentialBlob returns exactly what go-tpm's CreateCredential produced.
func TestParseCredentialBlobRoundTrip(t *testing.T) {
	ek := mustParse(t, readFixture(t, "ek-rsa2048.pub"))
	key, err := tpm2.ImportEncapsulationKey(&ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	name := readFixture(t, "ak-ecc.name")
	id, enc, err := tpm2.CreateCredential(rand.Reader, key, name, []byte("0123456789abcdefghijABCDEFGHIJKL"))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := marshalCredentialBlob(id, enc)
	if err != nil {
		t.Fatal(err)
	}
	gotID, gotEnc, err := ParseCredentialBlob(blob)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotID, id) || !bytes.Equal(gotEnc, enc) {
		t.Error("parsed parts differ from go-tpm's")
	}
}

func TestParseCredentialBlobRejects(t *testing.T) {
	good := readFixture(t, "cred-rsa.blob")
	set := func(off int, b ...byte) []byte {
		c := bytes.Clone(good)
		copy(c[off:], b)
		return c
	}
	tests := map[string][]byte{
		"empty":                      nil,
		"header only":                good[:8],
		"bad magic":                  set(0, 0xba, 0xdc, 0xc0, 0xdf),
		"version 2":                  set(4, 0, 0, 0, 2),
		"zero idObject":              set(8, 0, 0),
		"idObject longer than blob":  set(8, 0x01, 0x50),
		"idObject above TPM maximum": append(append(bytes.Clone(good[:8]), 0, 133), make([]byte, 133+2+256)...),
		"encSecret size missing":     good[:8+2+0x44],
		"encSecret truncated":        good[:len(good)-1],
		"zero encSecret":             set(8+2+0x44, 0, 0),
		"encSecret above maximum":    append(set(8+2+0x44, 0x02, 0x01), make([]byte, 513-256)...),
		"trailing byte":              append(bytes.Clone(good), 0),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if id, enc, err := ParseCredentialBlob(in); !errors.Is(err, ErrBadCredential) {
				t.Fatalf("ParseCredentialBlob = %x, %x, %v; want ErrBadCredential", id, enc, err)
			}
		})
	}
}

func TestMakeCredentialRejects(t *testing.T) {
	ek := mustParse(t, readFixture(t, "ek-rsa2048.pub"))
	ak := mustParse(t, readFixture(t, "ak-rsa.pub"))
	secret := readFixture(t, "secret.bin")
	tests := []struct {
		name   string
		rand   io.Reader
		ek     *Public
		akName []byte
		secret []byte
	}{
		{"nil rand", nil, ek, ak.Name, secret},
		{"nil EK", rand.Reader, nil, ak.Name, secret},
		{"empty secret", rand.Reader, ek, ak.Name, nil},
		{"secret longer than EK name digest", rand.Reader, ek, ak.Name, make([]byte, 33)},
		{"short AK name", rand.Reader, ek, ak.Name[:10], secret},
		{"AK name with unknown alg", rand.Reader, ek, append([]byte{0x77, 0x77}, ak.Name[2:]...), secret},
		{"AK is not a storage key", rand.Reader, ak, ak.Name, secret},
		{"random source fails", iotest.ErrReader(io.ErrUnexpectedEOF), ek, ak.Name, secret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if blob, err := MakeCredential(tt.rand, tt.ek, tt.akName, tt.secret); err == nil {
				t.Fatalf("MakeCredential = %x, want error", blob)
			}
		})
	}
}

// Expected value computed independently with OpenSSL:
//
//	printf 'd432fbb3-d2f1-4a97-9ef7-75bd81c00000' | openssl dgst -sha384 \
//	  -hmac "$(printf 'ABCDEFGHIJKLMNOPQRSTUVWXYZ012345' | base64)"
//
// (the HMAC key is the base64 text QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU=).
func TestAuthTagGolden(t *testing.T) {
	const (
		agentID = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000"
		want    = "99371ba1dbc4052a34e8eda70f0c10ec0701be7cdb3f7f99671aee66fa55624a49ccd038a7f9d8924aa3e95c14209853"
	)
	secret := readFixture(t, "secret.bin")
	if got := AuthTag(secret, agentID); got != want {
		t.Fatalf("AuthTag = %s, want %s", got, want)
	}
	tests := []struct {
		name, id, tag string
		secret        []byte
		ok            bool
	}{
		{"match", agentID, want, secret, true},
		{"uppercase hex", agentID, strings.ToUpper(want), secret, false},
		{"other agent", "other", want, secret, false},
		{"other secret", agentID, want, []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZ012346"), false},
		{"truncated tag", agentID, want[:95], secret, false},
		{"empty tag", agentID, "", secret, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckAuthTag(tt.secret, tt.id, tt.tag); got != tt.ok {
				t.Errorf("CheckAuthTag = %v, want %v", got, tt.ok)
			}
		})
	}
}

func FuzzParseCredentialBlob(f *testing.F) {
	f.Add(readFixture(f, "cred-rsa.blob"))
	f.Add(readFixture(f, "cred-ecc384.blob"))
	f.Add([]byte{0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, blob []byte) {
		id, enc, err := ParseCredentialBlob(blob)
		if err != nil {
			if !errors.Is(err, ErrBadCredential) {
				t.Fatalf("error %v is not ErrBadCredential", err)
			}
			return
		}
		again, err := marshalCredentialBlob(id, enc)
		if err != nil || !bytes.Equal(again, blob) {
			t.Fatalf("accepted blob does not re-marshal to itself: %v", err)
		}
	})
}
