package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/ca"
)

// newCA creates a Keylime CA layout in a temp dir and returns its directory.
func newCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cv_ca")
	if _, err := ca.Ensure(dir, ca.DefaultSubject, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func pair(t *testing.T, dir, name string) tls.Certificate {
	t.Helper()
	c, err := LoadKeyPair(filepath.Join(dir, name+"-cert.crt"), filepath.Join(dir, name+"-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	p, err := LoadPool(filepath.Join(dir, ca.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// serve starts an HTTPS server with conf on loopback and returns its URL.
func serve(t *testing.T, conf *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }), conf, zerolog.Nop())
	go func() { done <- Serve(ctx, srv, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "https://" + ln.Addr().String()
}

func get(conf *tls.Config, url string) error {
	resp, err := NewHTTPClient(conf, 5*time.Second).Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func TestMutualTLS(t *testing.T) {
	dir := newCA(t)
	other := newCA(t)
	url := serve(t, ServerConfig(pair(t, dir, "server"), pool(t, dir), RequireClientCert))
	client := pair(t, dir, "client")
	foreign := pair(t, other, "client")
	for _, tc := range []struct {
		name string
		conf *tls.Config
		ok   bool
	}{
		{"client cert from the CA", ClientConfig(&client, pool(t, dir)), true},
		{"no client cert", ClientConfig(nil, pool(t, dir)), false},
		{"client cert from another CA", ClientConfig(&foreign, pool(t, dir)), false},
		{"server not trusted (other CA)", ClientConfig(&client, pool(t, other)), false},
		{"server not trusted (system roots are never used)", ClientConfig(&client, x509.NewCertPool()), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := get(tc.conf, url)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// selfSigned makes an agent-like self-signed certificate.
// selfSigned makes a self-signed certificate for localhost and 10.1.2.3, valid for an hour either side
// of now, changed by edit.
func selfSigned(t testing.TB, cn string, edit ...func(*x509.Certificate)) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("10.1.2.3")},
	}
	for _, e := range edit {
		e(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, cert
}

func TestPinnedCertificate(t *testing.T) {
	dir := newCA(t)
	agentPair, agentCert := selfSigned(t, "agent-1")
	_, impostorCert := selfSigned(t, "agent-1")
	// The agent is reached at 127.0.0.1, which is not in its certificate: the pin is the identity.
	url := serve(t, ServerConfig(agentPair, pool(t, dir), RequireClientCert))
	client := pair(t, dir, "client")

	good := PinnedClientConfig(&client, agentCert)
	if err := get(good, url); err != nil {
		t.Fatalf("pinned cert refused: %v", err)
	}
	bad := PinnedClientConfig(&client, impostorCert)
	if err := get(bad, url); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("a certificate other than the pinned one: %v, want %v", err, ErrPinMismatch)
	}

	// A certificate that names no host or address, with no key usage: the pin alone decides.
	bare, bareCert := selfSigned(t, "agent-2", func(c *x509.Certificate) {
		c.DNSNames, c.IPAddresses, c.ExtKeyUsage = nil, nil, nil
	})
	if err := get(PinnedClientConfig(&client, bareCert), serve(t, ServerConfig(bare, pool(t, dir), RequireClientCert))); err != nil {
		t.Fatalf("pinned certificate without subjectAltName refused: %v", err)
	}

	// The pinned certificate itself, expired.
	expired, expiredCert := selfSigned(t, "agent-3", func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	})
	err := get(PinnedClientConfig(&client, expiredCert), serve(t, ServerConfig(expired, pool(t, dir), RequireClientCert)))
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Fatalf("expired pinned certificate: %v, want an x509.CertificateInvalidError for expiry", err)
	}
}

func TestServeStops(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, NewServer(http.NotFoundHandler(), nil, zerolog.Nop()), ln) }()
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}
