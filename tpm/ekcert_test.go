package tpm

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func mustCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	c, err := ParseEKCert(data)
	if err != nil {
		t.Fatalf("ParseEKCert: %v", err)
	}
	return c
}

// swtpmCA returns the swtpm local CA root and intermediate from testdata.
func swtpmCA(t *testing.T) (root, issuer *x509.Certificate) {
	t.Helper()
	return mustCert(t, readFixture(t, "swtpm-rootca.pem")), mustCert(t, readFixture(t, "swtpm-issuer.pem"))
}

func TestParseEKCertEncodings(t *testing.T) {
	der := readFixture(t, "ek-rsa2048.der")
	b64 := base64.StdEncoding.EncodeToString(der)
	wrapped := ""
	for s := b64; s != ""; {
		n := min(76, len(s))
		wrapped += s[:n] + "\n"
		s = s[n:]
	}
	keyPEM := readFixture(t, "ek-rsa2048.pubkey.pem")
	tests := []struct {
		name string
		in   []byte
	}{
		{"DER", der},
		{"PEM", pemCert(der)},
		{"PEM with surrounding space", append(append([]byte("\n  "), pemCert(der)...), "\n\n"...)},
		{"PEM after a PUBLIC KEY block", append(bytes.Clone(keyPEM), pemCert(der)...)},
		{"PEM after a text header", append([]byte("subject=CN = unknown\n"), pemCert(der)...)},
		{"base64", []byte(b64)},
		{"base64 with newlines", []byte(wrapped)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCert(t, tt.in)
			if !bytes.Equal(c.Raw, der) {
				t.Fatal("Raw differs from the DER")
			}
			if len(c.UnhandledCriticalExtensions) != 0 {
				t.Errorf("UnhandledCriticalExtensions = %v", c.UnhandledCriticalExtensions)
			}
		})
	}
	// Without the workaround Go flags the directoryName-only SAN of swtpm's cert.
	plain, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.UnhandledCriticalExtensions) != 1 || !plain.UnhandledCriticalExtensions[0].Equal(oidSubjectAltName) {
		t.Errorf("crypto/x509 unhandled = %v; the fixture no longer exercises the SAN workaround", plain.UnhandledCriticalExtensions)
	}
}

func TestParseEKCertRejects(t *testing.T) {
	der := readFixture(t, "ek-rsa2048.der")
	tests := map[string][]byte{
		"empty":                  nil,
		"spaces":                 []byte("   \n"),
		"garbage text":           []byte("this is not a certificate"),
		"PEM without a cert":     readFixture(t, "ek-rsa2048.pubkey.pem"),
		"base64 of garbage":      []byte(base64.StdEncoding.EncodeToString([]byte("garbage"))),
		"DER with trailing byte": append(bytes.Clone(der), 0),
		"truncated DER":          der[:len(der)-1],
		"truncated PEM":          pemCert(der)[:200],
		"too large":              append(bytes.Clone(der), make([]byte, maxCertInput)...),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if c, err := ParseEKCert(in); !errors.Is(err, ErrBadCert) {
				t.Fatalf("ParseEKCert = %v, %v; want ErrBadCert", c, err)
			}
		})
	}
}

// rust-keylime sends the EK CA chain followed by the EK cert.
func TestParseEKCertChain(t *testing.T) {
	issuer := readFixture(t, "swtpm-issuer.pem")
	ekDER := readFixture(t, "ek-rsa2048.der")
	in := append(bytes.Clone(issuer), pemCert(ekDER)...)
	certs, err := ParseEKCertChain(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || certs[0].Subject.CommonName != "swtpm-localca" || !bytes.Equal(certs[1].Raw, ekDER) {
		t.Fatalf("ParseEKCertChain returned %d certs", len(certs))
	}
	if first := mustCert(t, in); first.Subject.CommonName != "swtpm-localca" {
		t.Errorf("ParseEKCert took %q, want the first block", first.Subject.CommonName)
	}
	bad := append(bytes.Clone(in), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")...)
	if _, err := ParseEKCertChain(bad); !errors.Is(err, ErrBadCert) {
		t.Errorf("chain with a bad block: %v", err)
	}
}

func TestEKCertMatches(t *testing.T) {
	rsaCert := mustCert(t, readFixture(t, "ek-rsa2048.der"))
	eccCert := mustCert(t, readFixture(t, "ek-ecc384.der"))
	rsaEKPub := mustParse(t, readFixture(t, "ek-rsa2048.pub"))
	eccEKPub := mustParse(t, readFixture(t, "ek-ecc384.pub"))
	otherRSA := mustParse(t, marshal2B(rsaEK(&rsaKey(t, 2048).PublicKey)))
	otherECC := mustParse(t, marshal2B(eccEK(ecdhKey(t, ecdh.P384()))))
	tests := []struct {
		name string
		cert *x509.Certificate
		ek   *Public
		ok   bool
	}{
		{"RSA EK", rsaCert, rsaEKPub, true},
		{"P-384 EK", eccCert, eccEKPub, true},
		{"RSA cert, ECC EK", rsaCert, eccEKPub, false},
		{"ECC cert, RSA EK", eccCert, rsaEKPub, false},
		{"other RSA key", rsaCert, otherRSA, false},
		{"other P-384 key", eccCert, otherECC, false},
		{"nil cert", nil, rsaEKPub, false},
		{"nil EK", rsaCert, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := EKCertMatches(tt.cert, tt.ek)
			if tt.ok && err != nil {
				t.Fatalf("EKCertMatches = %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrEKCertMismatch) {
				t.Fatalf("EKCertMatches = %v, want ErrEKCertMismatch", err)
			}
		})
	}
}

func TestVerifyEKCert(t *testing.T) {
	root, issuer := swtpmCA(t)
	rsaCert := mustCert(t, readFixture(t, "ek-rsa2048.der"))
	eccCert := mustCert(t, readFixture(t, "ek-ecc384.der"))
	vendorRoot := mustCert(t, readFixture(t, "certstore/INF_RSA_010RT.pem"))
	tests := []struct {
		name                 string
		cert                 *x509.Certificate
		roots, intermediates []*x509.Certificate
		ok                   bool
	}{
		{"RSA EK via intermediate", rsaCert, []*x509.Certificate{root}, []*x509.Certificate{issuer}, true},
		{"P-384 EK via intermediate", eccCert, []*x509.Certificate{root}, []*x509.Certificate{issuer}, true},
		{"intermediate as trust anchor", rsaCert, []*x509.Certificate{issuer}, nil, true},
		{"whole store as anchors", rsaCert, []*x509.Certificate{vendorRoot, root, issuer}, nil, true},
		{"missing intermediate", rsaCert, []*x509.Certificate{root}, nil, false},
		{"other vendor's root", rsaCert, []*x509.Certificate{vendorRoot}, []*x509.Certificate{issuer}, false},
		{"no roots", rsaCert, nil, []*x509.Certificate{issuer}, false},
		{"nil cert", nil, []*x509.Certificate{root}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyEKCert(tt.cert, tt.roots, tt.intermediates)
			if tt.ok && err != nil {
				t.Fatalf("VerifyEKCert = %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrEKCertUntrusted) {
				t.Fatalf("VerifyEKCert = %v, want ErrEKCertUntrusted", err)
			}
		})
	}

	// The plain crypto/x509 check fails on the critical directoryName SAN.
	plain, _ := x509.ParseCertificate(rsaCert.Raw)
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	pool.AddCert(root)
	inter.AddCert(issuer)
	if _, err := plain.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("crypto/x509 accepted the swtpm EK cert; the SAN workaround is untested")
	}

	// The swtpm certs are valid from their creation until 9999.
	if err := VerifyEKCertAt(rsaCert, []*x509.Certificate{root}, []*x509.Certificate{issuer}, time.Now()); err != nil {
		t.Errorf("VerifyEKCertAt(now) = %v", err)
	}
	if err := VerifyEKCertAt(rsaCert, []*x509.Certificate{root}, []*x509.Certificate{issuer}, rsaCert.NotBefore.Add(-time.Hour)); !errors.Is(err, ErrEKCertUntrusted) {
		t.Errorf("VerifyEKCertAt(before issue) = %v", err)
	}
}

// testCA is a software CA for certificates the fixtures do not cover.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newTestCA(t *testing.T, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test EK CA"},
		NotBefore: notBefore, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: key, cert: mustCert(t, der)}
}

// issue makes an EK-like certificate for pub, then lets edit change the DER of
// the TBSCertificate (keeping its length) and signs the result.
func (ca *testCA) issue(t *testing.T, pub any, serial *big.Int, notBefore time.Time, edit func(tbs []byte)) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "test EK"},
		NotBefore: notBefore, NotAfter: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage: x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if edit == nil {
		return der
	}
	var c struct {
		TBS asn1.RawValue
		Alg asn1.RawValue
		Sig asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &c); err != nil {
		t.Fatal(err)
	}
	tbs := bytes.Clone(c.TBS.FullBytes)
	edit(tbs)
	sum := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, ca.key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	c.TBS = asn1.RawValue{FullBytes: tbs}
	c.Sig = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	out, err := asn1.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseEKCertNegativeSerial(t *testing.T) {
	ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	key := rsaKey(t, 2048)
	// Serial 0x0123456789 becomes 0x8123456789 = -(2^40 - 0x8123456789).
	der := ca.issue(t, &key.PublicKey, big.NewInt(0x0123456789), time.Now().Add(-time.Minute), func(tbs []byte) {
		i := bytes.Index(tbs, []byte{0x02, 0x05, 0x01, 0x23, 0x45, 0x67, 0x89})
		if i < 0 {
			t.Fatal("serial not found")
		}
		tbs[i+2] = 0x81
	})
	if _, err := x509.ParseCertificate(der); err == nil {
		t.Fatal("crypto/x509 parsed a negative serial; test is moot")
	}
	c := mustCert(t, der)
	want := new(big.Int).Sub(big.NewInt(0x8123456789), new(big.Int).Lsh(big.NewInt(1), 40))
	if c.SerialNumber.Cmp(want) != 0 {
		t.Errorf("serial = %v, want %v", c.SerialNumber, want)
	}
	if !bytes.Equal(c.Raw, der) {
		t.Error("Raw is not the original DER")
	}
	if err := c.CheckSignatureFrom(ca.cert); err != nil {
		t.Errorf("signature over the original TBS: %v", err)
	}
	if err := VerifyEKCert(c, []*x509.Certificate{ca.cert}, nil); err != nil {
		t.Errorf("VerifyEKCert: %v", err)
	}
	if err := EKCertMatches(c, mustParse(t, marshal2B(rsaEK(&key.PublicKey)))); err != nil {
		t.Errorf("EKCertMatches: %v", err)
	}
}

// Some RSA EK certificates name the key id-RSAES-OAEP instead of rsaEncryption.
func TestEKCertOAEPKey(t *testing.T) {
	ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	key := rsaKey(t, 2048)
	rsaEncryption := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01}
	der := ca.issue(t, &key.PublicKey, big.NewInt(7), time.Now().Add(-time.Minute), func(tbs []byte) {
		i := bytes.Index(tbs, rsaEncryption)
		if i < 0 {
			t.Fatal("rsaEncryption OID not found")
		}
		tbs[i+len(rsaEncryption)-1] = 0x07
	})
	c := mustCert(t, der)
	if c.PublicKey != nil {
		t.Fatalf("crypto/x509 decoded the OAEP key (%T); test is moot", c.PublicKey)
	}
	if err := EKCertMatches(c, mustParse(t, marshal2B(rsaEK(&key.PublicKey)))); err != nil {
		t.Errorf("EKCertMatches: %v", err)
	}
	if err := EKCertMatches(c, mustParse(t, marshal2B(rsaEK(&rsaKey(t, 3072).PublicKey)))); !errors.Is(err, ErrEKCertMismatch) {
		t.Errorf("EKCertMatches(other key) = %v", err)
	}
}

// An EK certificate issued while its CA was valid still verifies after the CA
// expired (VerifyEKCert checks at issuance), but not with VerifyEKCertAt(now).
func TestVerifyEKCertExpiredCA(t *testing.T) {
	caStart := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
	ca := newTestCA(t, caStart, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	ek := ecdhKey(t, ecdh.P256())
	pub, err := x509.ParsePKIXPublicKey(mustPKIX(t, ek))
	if err != nil {
		t.Fatal(err)
	}
	c := mustCert(t, ca.issue(t, pub, big.NewInt(9), time.Date(2015, 6, 1, 0, 0, 0, 0, time.UTC), nil))
	if err := VerifyEKCert(c, []*x509.Certificate{ca.cert}, nil); err != nil {
		t.Errorf("VerifyEKCert = %v", err)
	}
	if err := VerifyEKCertAt(c, []*x509.Certificate{ca.cert}, nil, time.Now()); !errors.Is(err, ErrEKCertUntrusted) {
		t.Errorf("VerifyEKCertAt(now) = %v, want ErrEKCertUntrusted", err)
	}
}

func mustPKIX(t *testing.T, k *ecdh.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestLoadCertPool(t *testing.T) {
	dir := t.TempDir()
	root := readFixture(t, "swtpm-rootca.pem")
	issuer := readFixture(t, "swtpm-issuer.pem")
	ekDER := readFixture(t, "ek-rsa2048.der")
	issuerDER, _ := pem.Decode(issuer)
	files := map[string][]byte{
		"a-root.pem":   root,
		"b-issuer.crt": issuerDER.Bytes,
		"c-ek.cer":     ekDER,
		"d-chain.PEM":  append(bytes.Clone(issuer), root...),
		"e-bad.pem":    []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
		"f-readme.txt": []byte("not a cert"),
		"g-empty.der":  nil,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "h-dir.pem"), 0o755); err != nil {
		t.Fatal(err)
	}
	certs, err := LoadCertPool(dir)
	var names []string
	for _, c := range certs {
		names = append(names, c.Subject.CommonName)
	}
	want := []string{"swtpm-localca-rootca", "swtpm-localca", "unknown", "swtpm-localca", "swtpm-localca-rootca"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("certs = %v, want %v", names, want)
	}
	if !errors.Is(err, ErrBadCert) || !strings.Contains(err.Error(), "e-bad.pem") || !strings.Contains(err.Error(), "g-empty.der") {
		t.Errorf("error = %v, want one naming e-bad.pem and g-empty.der", err)
	}
	if strings.Contains(err.Error(), "readme") || strings.Contains(err.Error(), "h-dir") {
		t.Errorf("error mentions a skipped entry: %v", err)
	}

	if _, err := LoadCertPool(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing directory gave no error")
	}
}

// Certificates from Keylime's shipped tpm_cert_store (keylime/keylime tpm_cert_store/)
// load, including a Nuvoton root with an unsorted multi-valued RDN that
// python-cryptography rejects ("InvalidSetOrdering") and a SHA-1-signed Infineon
// intermediate that expired in 2025.
func TestLoadCertPoolKeylimeStore(t *testing.T) {
	certs, err := LoadCertPool(filepath.Join("testdata", "certstore"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range certs {
		names = append(names, c.Subject.CommonName)
	}
	want := "IFX TPM EK Intermediate CA 01,Infineon OPTIGA(TM) RSA Root CA,Nuvoton TPM Root CA 2110,STM TPM ECC Root CA 01"
	if got := strings.Join(names, ","); got != want {
		t.Errorf("loaded %s, want %s", got, want)
	}
	for _, c := range certs {
		if c.Subject.CommonName == "Nuvoton TPM Root CA 2110" {
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("Nuvoton self-signature: %v", err)
			}
		}
	}
}

func FuzzParseEKCert(f *testing.F) {
	der := readFixture(f, "ek-rsa2048.der")
	f.Add(der)
	f.Add(readFixture(f, "ek-ecc384.der"))
	f.Add(pemCert(der))
	f.Add([]byte(base64.StdEncoding.EncodeToString(der)))
	f.Add(readFixture(f, "swtpm-issuer.pem"))
	f.Add(readFixture(f, "certstore/NUVO_2110.pem"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseEKCert(data)
		if err != nil {
			if !errors.Is(err, ErrBadCert) {
				t.Fatalf("error %v is not ErrBadCert", err)
			}
			return
		}
		if len(c.Raw) == 0 || c.SerialNumber == nil {
			t.Fatal("accepted certificate without Raw or serial")
		}
		again, err := ParseEKCert(c.Raw)
		if err != nil || !bytes.Equal(again.Raw, c.Raw) || again.SerialNumber.Cmp(c.SerialNumber) != 0 {
			t.Fatalf("Raw of an accepted certificate does not parse the same: %v", err)
		}
		_, _ = ParseEKCertChain(data)
	})
}
