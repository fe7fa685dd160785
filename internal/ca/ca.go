// Package ca creates and uses a Keylime certificate authority directory: cacert.crt and ca-private.pem,
// plus issued pairs named <name>-cert.crt / <name>-private.pem / <name>-public.pem (server, client, …), the
// layout Keylime's verifier, registrar, tenant and agents expect.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// File names inside a CA directory, as Keylime names them.
const (
	CACertFile = "cacert.crt"
	CAKeyFile  = "ca-private.pem"
)

// Subject holds the distinguished-name parts and lifetimes used for new certificates ([ca] section).
type Subject struct {
	Country, State, Locality, Organization, OrgUnit string
	CAName                                          string
	CALifetime, Lifetime                            time.Duration
}

// DefaultSubject is Keylime's default [ca] settings.
var DefaultSubject = Subject{
	Country: "US", State: "MA", Locality: "Lexington", Organization: "Keylime", OrgUnit: "53",
	CAName: "Keylime Certificate Authority", CALifetime: 3650 * 24 * time.Hour, Lifetime: 365 * 24 * time.Hour,
}

// CA is a loaded certificate authority able to issue certificates.
type CA struct {
	Dir  string
	Cert *x509.Certificate
	key  crypto.Signer
	subj Subject
}

// ErrNoCA is returned by Load when the directory holds no CA.
var ErrNoCA = errors.New("no CA in directory")

// ErrExists is returned by Init when the directory already holds a CA.
var ErrExists = errors.New("CA exists")

// Kind says what an issued certificate is for.
type Kind int

// Kinds of issued certificates.
const (
	Server Kind = iota
	Client
	// Signer is an RSA-2048 signing certificate, such as the verifier's RevocationNotifier (revocation
	// messages are signed with RSA-PSS).
	Signer
)

// RevocationNotifier is the name of the verifier's revocation-signing pair in a CA directory, as Keylime
// names it: RevocationNotifier-cert.crt and RevocationNotifier-private.pem.
const RevocationNotifier = "RevocationNotifier"

// Init creates a new CA in dir (0700); it refuses to overwrite an existing one.
func Init(dir string, subj Subject) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, CACertFile)); err == nil {
		return nil, fmt.Errorf("CA already exists in %s: %w", dir, ErrExists)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create CA dir: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               subj.name(subj.CAName),
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(subj.CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	if err := writeKey(filepath.Join(dir, CAKeyFile), key); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, CACertFile), "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return &CA{Dir: dir, Cert: cert, key: key, subj: subj}, nil
}

// Load opens the CA in dir.
func Load(dir string, subj Subject) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w %s", ErrNoCA, dir)
	}
	if err != nil {
		return nil, err
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate in %s: %w", dir, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key in %s: %w", dir, err)
	}
	return &CA{Dir: dir, Cert: cert, key: key, subj: subj}, nil
}

// Issue creates <name>-cert.crt, <name>-private.pem and <name>-public.pem in the CA directory, signed by
// the CA. Server certificates carry the given DNS names and IP addresses (localhost and 127.0.0.1 are
// always added).
func (c *CA) Issue(name string, kind Kind, sans []string) (*x509.Certificate, error) {
	var key crypto.Signer
	var err error
	if kind == Signer {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      c.subj.name(name),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(c.subj.Lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	switch kind {
	case Server:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		addSANs(tmpl, append([]string{"localhost", "127.0.0.1", "::1"}, sans...))
	case Client:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		addSANs(tmpl, sans)
	case Signer:
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Cert, key.Public(), c.key)
	if err != nil {
		return nil, fmt.Errorf("issue %s certificate: %w", name, err)
	}
	cert, _ := x509.ParseCertificate(der)
	if err := writeKey(filepath.Join(c.Dir, name+"-private.pem"), key); err != nil {
		return nil, err
	}
	pub, _ := x509.MarshalPKIXPublicKey(key.Public())
	if err := writePEM(filepath.Join(c.Dir, name+"-public.pem"), "PUBLIC KEY", pub, 0o644); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(c.Dir, name+"-cert.crt"), "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return cert, nil
}

// CRL writes the CA's certificate revocation list, as Keylime's CA does, to cacrl.der and cacrl.pem
// in the CA directory and returns its DER form. Nothing is revoked (this CA does not revoke
// certificates); the list is valid for the certificate lifetime and signed by the CA.
func (c *CA) CRL() ([]byte, error) {
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:     big.NewInt(now.Unix()),
		ThisUpdate: now.Add(-time.Hour),
		NextUpdate: now.Add(c.subj.Lifetime),
	}, c.Cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("CRL: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(c.Dir, "cacrl.der"), der, 0o644); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(c.Dir, "cacrl.pem"), "X509 CRL", der, 0o644); err != nil {
		return nil, err
	}
	return der, nil
}

// Ensure makes dir hold a complete Keylime layout (CA, server and client pairs), creating what is missing;
// it is what `tls_dir = "generate"` does on first start. It returns whether anything was created.
func Ensure(dir string, subj Subject, serverSANs []string) (bool, error) {
	// Roles started together (registrar and verifier on one machine) may both generate: one at a time.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create CA dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, fmt.Errorf("lock CA dir: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return false, fmt.Errorf("lock CA dir: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	c, err := Load(dir, subj)
	created := false
	if errors.Is(err, ErrNoCA) {
		if c, err = Init(dir, subj); err != nil {
			return false, err
		}
		created = true
	} else if err != nil {
		return false, err
	}
	for _, p := range []struct {
		name string
		kind Kind
		sans []string
	}{{"server", Server, serverSANs}, {"client", Client, nil}, {RevocationNotifier, Signer, nil}} {
		if _, err := os.Stat(filepath.Join(dir, p.name+"-cert.crt")); err == nil {
			continue
		}
		if _, err := c.Issue(p.name, p.kind, p.sans); err != nil {
			return created, err
		}
		created = true
	}
	return created, nil
}

func addSANs(t *x509.Certificate, sans []string) {
	seen := map[string]bool{}
	for _, s := range sans {
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		if ip := net.ParseIP(s); ip != nil {
			if !ip.IsUnspecified() {
				t.IPAddresses = append(t.IPAddresses, ip)
			}
		} else {
			t.DNSNames = append(t.DNSNames, s)
		}
	}
}

func (s Subject) name(cn string) pkix.Name {
	n := pkix.Name{CommonName: cn}
	if s.Country != "" {
		n.Country = []string{s.Country}
	}
	if s.State != "" {
		n.Province = []string{s.State}
	}
	if s.Locality != "" {
		n.Locality = []string{s.Locality}
	}
	if s.Organization != "" {
		n.Organization = []string{s.Organization}
	}
	if s.OrgUnit != "" {
		n.OrganizationalUnit = []string{s.OrgUnit}
	}
	return n
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n.Add(n, big.NewInt(1))
}

// ParseCertPEM parses the first CERTIFICATE block of a PEM file.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// ParseKeyPEM parses a PKCS#8, PKCS#1 or SEC1 private key in PEM form.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM private key found")
	}
	var k any
	var err error
	switch blk.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
	return s, nil
}

// MarshalKeyPEM encodes a private key as PKCS#8 PEM.
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func writeKey(path string, key crypto.Signer) error {
	b, err := MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, b, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// WriteFileAtomic writes data to a temporary file in the same directory and renames it over path, so a
// crash never leaves a half-written key or certificate.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
