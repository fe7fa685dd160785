package softagent_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/tpm"
)

var (
	rsaKeyOnce sync.Once
	rsaKeyVal  *rsa.PrivateKey
)

// rsaAKKey is one RSA-2048 AK key for the tests that need a specific scheme hash.
func rsaAKKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	rsaKeyOnce.Do(func() {
		var err error
		if rsaKeyVal, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return rsaKeyVal
}

func eccKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newTPM(t testing.TB, key crypto.Signer, h crypto.Hash) *softagent.TPM {
	t.Helper()
	st, err := softagent.NewTPMWithKey(key, h)
	if err != nil {
		t.Fatalf("NewTPMWithKey: %v", err)
	}
	return st
}

// The AK's public area is what tpm2_createak makes: tpm.ParsePublic and tpm.CheckAK accept it, its
// attributes are 0x00050072, its Name is SHA-256 of the public area and its key is the signer's.
func TestAKPublic(t *testing.T) {
	tests := []struct {
		name    string
		key     crypto.Signer
		hash    crypto.Hash
		checkAK bool
	}{
		{"RSA-2048 SHA-256", rsaAKKey(t), crypto.SHA256, true},
		{"P-256 SHA-256", eccKey(t), crypto.SHA256, true},
		{"RSA-2048 SHA-1", rsaAKKey(t), crypto.SHA1, false}, // CheckAK refuses SHA-1 schemes
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newTPM(t, tt.key, tt.hash)
			pub, err := tpm.ParsePublic(st.AKPublic())
			if err != nil {
				t.Fatalf("ParsePublic: %v", err)
			}
			if err := tpm.CheckAK(pub); (err == nil) != tt.checkAK {
				t.Errorf("CheckAK = %v, want accepted=%v", err, tt.checkAK)
			}
			if pub.Attributes() != tpm.AKAttributes || pub.Attributes() != 0x00050072 {
				t.Errorf("attributes %#08x", pub.Attributes())
			}
			if !bytes.Equal(pub.Name, st.AKName()) {
				t.Errorf("Name %x, TPM says %x", pub.Name, st.AKName())
			}
			if k, ok := tt.key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub.Key) {
				t.Errorf("AK public key is not the signer's")
			}
		})
	}
	if _, err := softagent.NewTPMWithKey(rsaAKKey(t), crypto.MD5); !errors.Is(err, softagent.ErrBadKey) {
		t.Errorf("MD5 scheme: %v", err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if _, err := softagent.NewTPMWithKey(p224, crypto.SHA256); !errors.Is(err, softagent.ErrBadKey) {
		t.Errorf("P-224 AK: %v", err)
	}
}

// Quotes fetched over real mTLS with the Keylime agent client verify with tpm.VerifyQuote for RSA and
// ECC AKs and the sha1 and sha256 banks; PCR 16 binds the NK; the clock advances; the IMA log replays to
// the quoted PCR 10, in full and incrementally.
func TestQuotes(t *testing.T) {
	m := newPKI(t)
	tests := []struct {
		name    string
		key     crypto.Signer
		hash    crypto.Hash
		hashAlg string
		sign    string
	}{
		{"RSA sha256", rsaAKKey(t), crypto.SHA256, "sha256", "rsassa"},
		{"ECC sha256", eccKey(t), crypto.SHA256, "sha256", "ecdsa"},
		{"RSA sha1", rsaAKKey(t), crypto.SHA1, "sha1", "rsassa"},
		{"ECC sha1", eccKey(t), crypto.SHA1, "sha1", "ecdsa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := startAgent(t, m, softagent.Config{
				TPM:     newTPM(t, tt.key, tt.hash),
				HashAlg: tt.hashAlg,
				IMA:     &softagent.IMAConfig{Initial: 5, PerQuote: 2},
			})
			c := dial(t, a, m, api.CurrentVersion)
			ctx := context.Background()

			v, err := c.Version(ctx)
			if err != nil {
				t.Fatalf("Version: %v", err)
			}
			if v.SupportedVersion != api.CurrentVersion || !reflect.DeepEqual(v.SupportedVersions, api.SupportedVersions) {
				t.Errorf("version = %+v", v)
			}
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatalf("Info: %v", err)
			}
			want := api.AgentInfo{AgentUUID: a.UUID(), TPMHashAlg: tt.hashAlg, TPMEncAlg: "rsa2048", TPMSignAlg: tt.sign, AKHandle: softagent.AKHandle}
			if *info != want {
				t.Errorf("info = %+v, want %+v", *info, want)
			}
			pk, err := c.PubKey(ctx)
			if err != nil || pk != string(a.NKPEM()) || !strings.HasPrefix(pk, "-----BEGIN PUBLIC KEY-----\n") {
				t.Errorf("PubKey = %q, %v", pk, err)
			}

			nonce := "identity0123456789ab"
			res, err := c.IdentityQuote(ctx, nonce)
			if err != nil {
				t.Fatalf("IdentityQuote: %v", err)
			}
			if res.HashAlg != tt.hashAlg || res.SignAlg != tt.sign || res.EncAlg != "rsa2048" || res.PubKey != string(a.NKPEM()) {
				t.Errorf("identity quote fields: %s %s %s pubkey=%t", res.HashAlg, res.SignAlg, res.EncAlg, res.PubKey != "")
			}
			if res.IMAMeasurementList != nil || res.MBMeasurementList != nil {
				t.Error("identity quote carries logs")
			}
			first, err := check(t, a, res, nonce, nil)
			if err != nil {
				t.Fatalf("identity quote: %v", err)
			}
			if !reflect.DeepEqual(keys(first.PCRs), []int{16}) {
				t.Errorf("identity quote covers PCRs %v", keys(first.PCRs))
			}

			nonce = "integrity0123456789a"
			res, err = c.IntegrityQuote(ctx, nonce, "0x408400", false, 0)
			if err != nil {
				t.Fatalf("IntegrityQuote: %v", err)
			}
			data, err := check(t, a, res, nonce, first)
			if err != nil {
				t.Fatalf("integrity quote: %v", err)
			}
			if !reflect.DeepEqual(keys(data.PCRs), []int{10, 15, 16, 22}) {
				t.Errorf("integrity quote covers PCRs %v", keys(data.PCRs))
			}
			if res.PubKey != string(a.NKPEM()) || res.IMAMeasurementList == nil || res.IMAMeasurementListEntry == nil || *res.IMAMeasurementListEntry != 0 {
				t.Fatalf("integrity quote (partial=0, entry 0) lacks pubkey or IMA log")
			}
			h, _ := tpm2.TPMAlgSHA1.Hash()
			if tt.hashAlg == "sha256" {
				h = crypto.SHA256
			}
			pcr10, n := replayIMA(t, tt.hashAlg, make([]byte, h.Size()), *res.IMAMeasurementList)
			if n != 5+2+2 { // initial + identity quote + this quote
				t.Errorf("IMA log has %d entries, want 9", n)
			}
			if !bytes.Equal(pcr10, data.PCRs[10]) {
				t.Fatalf("%v: replay %x, quoted %x", errIMA, pcr10, data.PCRs[10])
			}

			nonce = "incremental123456789"
			res, err = c.IntegrityQuote(ctx, nonce, "0x400", true, n)
			if err != nil {
				t.Fatalf("IntegrityQuote: %v", err)
			}
			data2, err := check(t, a, res, nonce, data)
			if err != nil {
				t.Fatalf("second integrity quote: %v", err)
			}
			if res.PubKey != "" || *res.IMAMeasurementListEntry != n {
				t.Errorf("partial quote: pubkey %t, entry %d (want %d)", res.PubKey != "", *res.IMAMeasurementListEntry, n)
			}
			pcr10, n2 := replayIMA(t, tt.hashAlg, pcr10, *res.IMAMeasurementList)
			if n2 != 2 || !bytes.Equal(pcr10, data2.PCRs[10]) {
				t.Errorf("%v: %d new entries, replay %x, quoted %x", errIMA, n2, pcr10, data2.PCRs[10])
			}
			if a.Quotes() != 3 {
				t.Errorf("Quotes() = %d", a.Quotes())
			}
		})
	}
}

func keys(m map[int][]byte) []int {
	return tpm.PCRBank{Values: m}.PCRs()
}

// The API validates requests as the Rust agent does and answers with Keylime's envelope.
func TestAPIValidation(t *testing.T) {
	m := newPKI(t)
	a := startAgent(t, m, softagent.Config{TPM: newTPM(t, eccKey(t), crypto.SHA256), EKAlg: softagent.ECC})
	ctx := context.Background()
	c := dial(t, a, m, "2.6")
	tests := []struct {
		name string
		call func() error
		code int
	}{
		{"nonce with a dash", func() error { _, err := c.IdentityQuote(ctx, "abc-def"); return err }, 400},
		{"empty nonce", func() error { _, err := c.IdentityQuote(ctx, ""); return err }, 400},
		{"65-character nonce", func() error { _, err := c.IdentityQuote(ctx, strings.Repeat("a", 65)); return err }, 400},
		{"64-character nonce", func() error { _, err := c.IdentityQuote(ctx, strings.Repeat("a", 64)); return err }, 0},
		{"mask not hex", func() error { _, err := c.IntegrityQuote(ctx, "abc", "0xzz", false, 0); return err }, 400},
		{"mask above PCR 23", func() error { _, err := c.IntegrityQuote(ctx, "abc", "0x1000000", false, 0); return err }, 400},
		{"mask with a dash", func() error { _, err := c.IntegrityQuote(ctx, "abc", "-1", false, 0); return err }, 400},
		{"agent/info on 2.1", func() error { _, err := dial(t, a, m, "2.1").Info(ctx); return err }, 404},
		{"unknown version", func() error { _, err := dial(t, a, m, "1.0").PubKey(ctx); return err }, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if got := client.StatusCode(err); got != tt.code {
				t.Errorf("status %d (%v), want %d", got, err, tt.code)
			}
		})
	}
	// enc_alg spelling before and after API 2.5.
	for version, want := range map[string]string{"2.4": "ecc", "2.5": "ecc256"} {
		res, err := dial(t, a, m, version).IdentityQuote(ctx, "abc")
		if err != nil || res.EncAlg != want {
			t.Errorf("API %s: enc_alg %q, %v; want %q", version, res.EncAlg, err, want)
		}
	}
}

// The API needs a client certificate from the configured CA; the agent's certificate is what the
// verifier pins (CN = UUID, SANs localhost and 127.0.0.1).
func TestMTLS(t *testing.T) {
	m := newPKI(t)
	other := newPKI(t)
	a := startAgent(t, m, softagent.Config{TPM: newTPM(t, eccKey(t), crypto.SHA256)})
	cert := a.Cert()
	if cert.Subject.CommonName != a.UUID() || !slicesContain(cert.DNSNames, "localhost") || !ipsContain(cert, "127.0.0.1") {
		t.Errorf("certificate: CN %q, DNS %v, IPs %v", cert.Subject.CommonName, cert.DNSNames, cert.IPAddresses)
	}
	if p, err := transport.ParseCertPEM(string(a.CertPEM())); err != nil || !p.Equal(cert) {
		t.Errorf("CertPEM does not hold Cert: %v", err)
	}
	ctx := context.Background()
	if _, err := dial(t, a, m, "2.6").PubKey(ctx); err != nil {
		t.Fatalf("with the CA's client certificate: %v", err)
	}
	for name, cert := range map[string]*tls.Certificate{"no client certificate": nil, "certificate of another CA": &other.Cert} {
		t.Run(name, func(t *testing.T) {
			conf := transport.PinnedClientConfig(cert, a.Cert())
			hc := transport.NewHTTPClient(conf, 5*time.Second)
			defer hc.CloseIdleConnections()
			if _, err := client.NewAgent(hc, a.URL(), "2.6").PubKey(ctx); err == nil || client.StatusCode(err) != 0 {
				t.Errorf("request succeeded or got an HTTP answer: %v", err)
			}
		})
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func ipsContain(c *x509.Certificate, ip string) bool {
	for _, x := range c.IPAddresses {
		if x.String() == ip {
			return true
		}
	}
	return false
}
