// Package transport is the only place that builds tls.Configs and HTTP servers and clients: TLS 1.2 or
// newer, client certificates checked against the Keylime CA, servers checked against the CA (never the
// system roots) or pinned to one exact certificate (agents' self-signed certificates).
package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
)

// LoadKeyPair loads a PEM certificate and private key.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return c, fmt.Errorf("load key pair %s, %s: %w", certFile, keyFile, err)
	}
	return c, nil
}

// LoadPool reads one or more PEM files of CA certificates into a new pool (no system roots).
func LoadPool(files ...string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("load CA %s: %w", f, err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("load CA %s: no PEM certificate", f)
		}
	}
	return pool, nil
}

// ClientAuth says whether a server demands a client certificate.
type ClientAuth int

// Client certificate policies.
const (
	// RequireClientCert refuses the handshake without a client certificate from the CA.
	RequireClientCert ClientAuth = iota
	// OptionalClientCert verifies a client certificate when one is sent; handlers decide what needs one.
	OptionalClientCert
)

// ServerConfig returns the TLS configuration of a server presenting cert and checking client certificates
// against clientCAs.
func ServerConfig(cert tls.Certificate, clientCAs *x509.CertPool, auth ClientAuth) *tls.Config {
	mode := tls.RequireAndVerifyClientCert
	if auth == OptionalClientCert {
		mode = tls.VerifyClientCertIfGiven
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    clientCAs,
		ClientAuth:   mode,
	}
}

// ClientConfig returns the TLS configuration of a client that trusts only the servers whose certificates
// chain to roots, presenting cert (may be nil) as its client certificate.
func ClientConfig(cert *tls.Certificate, roots *x509.CertPool) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// ErrPinMismatch is returned when a server presents a certificate other than the pinned one.
var ErrPinMismatch = errors.New("server certificate does not match the pinned certificate")

// PinnedClientConfig returns the TLS configuration of a client that accepts exactly one server
// certificate, pinned (an agent's self-signed certificate as recorded at registration), whatever host name
// or address it is reached at. The certificate must still be within its validity period.
func PinnedClientConfig(cert *tls.Certificate, pinned *x509.Certificate) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	pin(c, pinned.Raw)
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// pin makes c accept exactly the certificate whose DER is pinned, within its validity period. The pin
// is the identity: no chain is built and no host name checked (the agent is reached at whatever address
// it registered, and its certificate need not name it), which is what InsecureSkipVerify turns off
// here. The handshake still proves that the server holds the certificate's key (TLS 1.3
// CertificateVerify, TLS 1.2 the signed key exchange), and VerifyConnection sees resumed sessions too.
// Nothing of the certificate is parsed per connection beyond what the handshake parses.
func pin(c *tls.Config, pinned []byte) {
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, pinned) {
			return ErrPinMismatch
		}
		leaf := cs.PeerCertificates[0]
		if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			return x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired,
				Detail: fmt.Sprintf("the pinned certificate is valid from %s to %s",
					leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))}
		}
		return nil
	}
}

// CertPEMDER returns the DER of the first certificate of a PEM text, without parsing it.
func CertPEMDER(s string) ([]byte, error) {
	blk, _ := pem.Decode([]byte(s))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return blk.Bytes, nil
}

// ParseCertPEM parses the first certificate of a PEM text.
func ParseCertPEM(s string) (*x509.Certificate, error) {
	der, err := CertPEMDER(s)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// NewServer returns an http.Server with sane timeouts for h; tlsConf nil means plain HTTP.
func NewServer(h http.Handler, tlsConf *tls.Config, log zerolog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          newStdLogger(log),
	}
}

// Serve runs srv on ln until ctx ends, then shuts it down gracefully (at most 5 s). TLS is used when the
// server has a TLSConfig.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// NewHTTPClient returns a client with kept-alive connections using tlsConf (nil: plain HTTP) and an overall
// per-request timeout.
func NewHTTPClient(tlsConf *tls.Config, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// Material is a certificate with its key and the CA pool to trust, loaded from a Keylime CA directory.
type Material struct {
	Cert tls.Certificate
	Pool *x509.CertPool
}

// LoadMaterial loads <dir>/<pair>-cert.crt, <dir>/<pair>-private.pem and <dir>/cacert.crt.
func LoadMaterial(dir, pair string) (*Material, error) {
	return LoadMaterialFiles(filepath.Join(dir, pair+"-cert.crt"), filepath.Join(dir, pair+"-private.pem"), filepath.Join(dir, "cacert.crt"))
}

// LoadMaterialFiles loads a certificate, its key and a CA file.
func LoadMaterialFiles(certFile, keyFile, caFile string) (*Material, error) {
	cert, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool, err := LoadPool(caFile)
	if err != nil {
		return nil, err
	}
	return &Material{Cert: cert, Pool: pool}, nil
}
