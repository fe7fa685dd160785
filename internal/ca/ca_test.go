package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestEnsureLayoutAndIssue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cv_ca")
	created, err := Ensure(dir, DefaultSubject, []string{"verifier.example", "10.1.2.3"})
	if err != nil || !created {
		t.Fatalf("Ensure: %v %v", created, err)
	}
	for _, f := range []string{CACertFile, CAKeyFile, "server-cert.crt", "server-private.pem", "server-public.pem", "client-cert.crt", "client-private.pem", "RevocationNotifier-cert.crt", "RevocationNotifier-private.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, CAKeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %v", fi.Mode())
	}
	if again, err := Ensure(dir, DefaultSubject, nil); err != nil || again {
		t.Fatalf("second Ensure created=%v err=%v", again, err)
	}
	if _, err := Init(dir, DefaultSubject); !errors.Is(err, ErrExists) {
		t.Fatalf("Init over a CA: %v", err)
	}
	c, err := Load(dir, DefaultSubject)
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(filepath.Join(dir, "server-cert.crt"))
	srv, err := ParseCertPEM(pem)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.Cert)
	for _, name := range []string{"verifier.example", "localhost", "10.1.2.3", "127.0.0.1"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("server cert for %s: %v", name, err)
		}
	}
	cl, err := c.Issue("tenant", Client, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert: %v", err)
	}
	if _, err := Load(t.TempDir(), DefaultSubject); !errors.Is(err, ErrNoCA) {
		t.Errorf("Load of an empty dir: %v", err)
	}
}

// TestEnsureConcurrent: two roles generating the same directory at once end with one CA that signed
// both pairs.
func TestEnsureConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cv_ca")
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = Ensure(dir, DefaultSubject, nil) }()
	}
	wg.Wait()
	c, err := Load(dir, DefaultSubject)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.Cert)
	for _, n := range []string{"server-cert.crt", "client-cert.crt"} {
		pem, _ := os.ReadFile(filepath.Join(dir, n))
		cert, err := ParseCertPEM(pem)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s not signed by the CA on disk: %v", n, err)
		}
	}
}

// TestCRL: the CA writes an empty CRL signed by itself, in DER and PEM.
func TestCRL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	c, err := Init(dir, DefaultSubject)
	if err != nil {
		t.Fatal(err)
	}
	der, err := c.CRL()
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(c.Cert); err != nil {
		t.Fatalf("CRL not signed by the CA: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 0 || !crl.NextUpdate.After(time.Now()) {
		t.Errorf("CRL %+v", crl)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, "cacrl.der"))
	if err != nil || !bytes.Equal(onDisk, der) {
		t.Fatalf("cacrl.der: %v", err)
	}
	p, err := os.ReadFile(filepath.Join(dir, "cacrl.pem"))
	if blk, _ := pem.Decode(p); err != nil || blk == nil || blk.Type != "X509 CRL" || !bytes.Equal(blk.Bytes, der) {
		t.Fatalf("cacrl.pem: %v", err)
	}
}
