package agent

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
	"time"

	"github.com/keylime-go/keylime/internal/ca"
)

// loadOrCreateNK returns the agent's NK, the RSA-2048 key that receives the payload key halves (U and V),
// kept in PEM at path (0600) and created on first start. It returns whether it created the key.
func loadOrCreateNK(path string) (*rsa.PrivateKey, bool, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := ca.ParseKeyPEM(b)
		if err != nil {
			return nil, false, fmt.Errorf("payload key %s: %w", path, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, false, fmt.Errorf("payload key %s: want an RSA key, got %T", path, k)
		}
		return rk, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("payload key: %w", err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, false, err
	}
	pemBytes, err := ca.MarshalKeyPEM(k)
	if err != nil {
		return nil, false, err
	}
	if err := ca.WriteFileAtomic(path, pemBytes, 0o600); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// publicKeyPEM is the SubjectPublicKeyInfo PEM of a public key, with the trailing newline Keylime expects
// (its hash goes into PCR 16).
func publicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// mtlsIdentity is the agent's TLS server key and self-signed certificate.
type mtlsIdentity struct {
	Key     crypto.Signer
	Cert    *x509.Certificate
	CertPEM []byte
}

// loadOrCreateMTLS loads the agent's server key and certificate, or creates an ECDSA P-256 key and a
// self-signed certificate with CN = uuid when they are missing, expire within a day, or name another
// agent. It returns whether it created them.
func loadOrCreateMTLS(keyPath, certPath, uuid string, ips []string, now time.Time) (*mtlsIdentity, bool, error) {
	if id, err := loadMTLS(keyPath, certPath); err == nil {
		if id.Cert.Subject.CommonName == uuid && now.Add(24*time.Hour).Before(id.Cert.NotAfter) {
			return id, false, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: uuid},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
	}
	seen := map[string]bool{}
	for _, s := range append([]string{"127.0.0.1", "::1"}, ips...) {
		if ip := net.ParseIP(s); ip != nil && !ip.IsUnspecified() && !seen[ip.String()] {
			seen[ip.String()] = true
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, false, fmt.Errorf("create agent certificate: %w", err)
	}
	keyPEM, err := ca.MarshalKeyPEM(key)
	if err != nil {
		return nil, false, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := ca.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := ca.WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, false, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &mtlsIdentity{Key: key, Cert: cert, CertPEM: certPEM}, true, nil
}

func loadMTLS(keyPath, certPath string) (*mtlsIdentity, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	cert, err := ca.ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("agent certificate %s: %w", certPath, err)
	}
	key, err := ca.ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("agent key %s: %w", keyPath, err)
	}
	return &mtlsIdentity{Key: key, Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}, nil
}
