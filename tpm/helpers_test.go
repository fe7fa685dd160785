package tpm

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// readFixture returns the contents of testdata/name.
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return b
}

// Software keys, generated once per test binary (RSA key generation is slow).
var (
	rsaKeysOnce sync.Once
	rsaKeys     map[int]*rsa.PrivateKey
)

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	rsaKeysOnce.Do(func() {
		rsaKeys = map[int]*rsa.PrivateKey{}
		for _, b := range []int{2048, 3072} {
			k, err := rsa.GenerateKey(rand.Reader, b)
			if err != nil {
				panic(err)
			}
			rsaKeys[b] = k
		}
	})
	k, ok := rsaKeys[bits]
	if !ok {
		t.Fatalf("no test RSA key of %d bits", bits)
	}
	return k
}

func ecdhKey(t testing.TB, c ecdh.Curve) *ecdh.PrivateKey {
	t.Helper()
	k, err := c.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// marshal2B marshals pub as a TPM2B_PUBLIC.
func marshal2B(pub tpm2.TPMTPublic) []byte {
	return tpm2.Marshal(tpm2.New2B(pub))
}

// mustParse parses a TPM2B_PUBLIC built by a test.
func mustParse(t testing.TB, b []byte) *Public {
	t.Helper()
	p, err := ParsePublic(b)
	if err != nil {
		t.Fatalf("ParsePublic: %v", err)
	}
	return p
}

func rsaParms(sym tpm2.TPMTSymDefObject, scheme tpm2.TPMTRSAScheme, bits int) tpm2.TPMUPublicParms {
	return tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
		Symmetric: sym, Scheme: scheme, KeyBits: tpm2.TPMKeyBits(bits),
	})
}

func aesCFB(bits int) tpm2.TPMTSymDefObject {
	return tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(bits)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
}

// rsaEK returns the TCG RSA EK template (go-tpm RSAEKTemplate) filled with the
// modulus of a software key.
func rsaEK(key *rsa.PublicKey) tpm2.TPMTPublic {
	pub := tpm2.RSAEKTemplate
	bits := key.N.BitLen()
	pub.Parameters = rsaParms(aesCFB(128), tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull}, bits)
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: key.N.FillBytes(make([]byte, bits/8))})
	return pub
}

// eccEK returns an ECC EK public area for a software key. P-256 uses go-tpm's
// ECCEKTemplate (low range: SHA-256, AES-128); P-384 and P-521 follow the TCG
// high-range templates (SHA-384/SHA-512 names, AES-256).
func eccEK(key *ecdh.PrivateKey) tpm2.TPMTPublic {
	pub := tpm2.ECCEKTemplate
	raw := key.PublicKey().Bytes()[1:]
	x, y := raw[:len(raw)/2], raw[len(raw)/2:]
	curve := tpm2.TPMECCNistP256
	symBits := 128
	switch key.Curve() {
	case ecdh.P384():
		curve, symBits = tpm2.TPMECCNistP384, 256
		pub.NameAlg = tpm2.TPMAlgSHA384
		pub.AuthPolicy = tpm2.TPM2BDigest{Buffer: make([]byte, 48)}
	case ecdh.P521():
		curve, symBits = tpm2.TPMECCNistP521, 256
		pub.NameAlg = tpm2.TPMAlgSHA512
		pub.AuthPolicy = tpm2.TPM2BDigest{Buffer: make([]byte, 64)}
	}
	pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: aesCFB(symBits),
		Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		CurveID:   curve,
		KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	})
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y},
	})
	return pub
}

// akObjectAttributes is AKAttributes as a go-tpm struct.
var akObjectAttributes = tpm2.TPMAObject{
	FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
	Restricted: true, SignEncrypt: true,
}

func rsassa(h tpm2.TPMIAlgHash) tpm2.TPMTRSAScheme {
	return tpm2.TPMTRSAScheme{
		Scheme:  tpm2.TPMAlgRSASSA,
		Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: h}),
	}
}

// rsaAK is the AK template Keylime agents create (tpm2_createak -G rsa -s rsassa).
func rsaAK(key *rsa.PublicKey) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgRSA,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: akObjectAttributes,
		Parameters:       rsaParms(tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, rsassa(tpm2.TPMAlgSHA256), key.N.BitLen()),
		Unique:           tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: key.N.Bytes()}),
	}
}

func ecdsaScheme(h tpm2.TPMIAlgHash) tpm2.TPMTECCScheme {
	return tpm2.TPMTECCScheme{
		Scheme:  tpm2.TPMAlgECDSA,
		Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: h}),
	}
}

// eccAK is a P-256 ECDSA-SHA256 AK.
func eccAK(key *ecdh.PrivateKey) tpm2.TPMTPublic {
	raw := key.PublicKey().Bytes()[1:]
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgECC,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: akObjectAttributes,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    ecdsaScheme(tpm2.TPMAlgSHA256),
			CurveID:   tpm2.TPMECCNistP256,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: raw[:32]}, Y: tpm2.TPM2BECCParameter{Buffer: raw[32:]},
		}),
	}
}
