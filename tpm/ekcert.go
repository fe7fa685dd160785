package tpm

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Errors returned by the EK certificate functions.
var (
	// ErrBadCert means bytes are not a certificate this package can parse.
	ErrBadCert = errors.New("invalid certificate")
	// ErrEKCertMismatch means an EK certificate certifies a key other than the EK.
	ErrEKCertMismatch = errors.New("EK certificate does not match the EK")
	// ErrEKCertUntrusted means an EK certificate does not chain to a trusted CA.
	ErrEKCertUntrusted = errors.New("EK certificate is not trusted")
)

// maxCertInput bounds the encoded input of ParseEKCert and ParseEKCertChain.
const maxCertInput = 256 << 10

var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidRSAESOAEP      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
)

// ParseEKCert parses an EK certificate given the way Keylime's registrar accepts it:
// PEM (the first CERTIFICATE block is used, other block types are skipped), raw DER
// (input starting with a SEQUENCE tag) or standard base64 of DER.
//
// Tolerated beyond Go's strict DER parser: a negative serial number (decoded
// through a patched copy; Raw and RawTBSCertificate keep the original bytes, so
// signatures still verify). Go itself tolerates unsorted SET OF in names (the
// Nuvoton "InvalidSetOrdering" certificates that python-cryptography rejects).
// A critical SubjectAltName that Go parsed but found no DNS, email, IP or URI name
// in (TCG EK certificates carry only a directoryName) is removed from
// UnhandledCriticalExtensions. An RSA key under the id-RSAES-OAEP algorithm
// leaves PublicKey nil but is understood by EKCertMatches.
//
// Not tolerated: BER (indefinite or non-minimal lengths), non-minimal integers,
// malformed times or strings, and trailing data after the certificate.
func ParseEKCert(data []byte) (*x509.Certificate, error) {
	ders, err := decodeCertInput(data, false)
	if err != nil {
		return nil, err
	}
	return parseCertificate(ders[0])
}

// ParseEKCertChain is ParseEKCert for every CERTIFICATE block of a PEM input, in
// order. rust-keylime sends the EK CA chain from NV followed by the EK certificate
// in one PEM string, so the EK certificate is not always the first block.
func ParseEKCertChain(data []byte) ([]*x509.Certificate, error) {
	ders, err := decodeCertInput(data, true)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(ders))
	for i, der := range ders {
		c, err := parseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// decodeCertInput returns the DER of the first (or every) certificate in data.
func decodeCertInput(data []byte, all bool) ([][]byte, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadCert)
	}
	if len(data) > maxCertInput {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrBadCert, len(data), maxCertInput)
	}
	if data[0] == 0x30 { // DER SEQUENCE; never the first byte of PEM or base64 text
		return [][]byte{data}, nil
	}
	text := bytes.TrimSpace(data)
	if bytes.Contains(text, []byte("-----BEGIN")) {
		var ders [][]byte
		for rest := text; ; {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			ders = append(ders, block.Bytes)
			if !all {
				break
			}
		}
		if len(ders) == 0 {
			return nil, fmt.Errorf("%w: no CERTIFICATE PEM block", ErrBadCert)
		}
		return ders, nil
	}
	der, err := base64.StdEncoding.DecodeString(string(text))
	if err != nil {
		return nil, fmt.Errorf("%w: neither PEM, DER nor base64: %w", ErrBadCert, err)
	}
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadCert)
	}
	return [][]byte{der}, nil
}

// parseCertificate parses one DER certificate with the tolerances of ParseEKCert.
func parseCertificate(der []byte) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		var ok bool
		if cert, ok = parseNegativeSerial(der); !ok {
			return nil, fmt.Errorf("%w: %w", ErrBadCert, err)
		}
	}
	cert.UnhandledCriticalExtensions = withoutSAN(cert.UnhandledCriticalExtensions)
	return cert, nil
}

// withoutSAN drops the SubjectAltName OID. Go lists a critical SAN as unhandled
// only after parsing it successfully and finding no name type it supports.
func withoutSAN(oids []asn1.ObjectIdentifier) []asn1.ObjectIdentifier {
	return slices.DeleteFunc(slices.Clone(oids), func(o asn1.ObjectIdentifier) bool {
		return o.Equal(oidSubjectAltName)
	})
}

// parseNegativeSerial parses a certificate whose only defect is a negative serial
// number. It flips the first serial byte of a copy to 0x01 (same length, positive,
// minimal), parses that, then restores the byte; every Raw field of the result
// aliases the copy, so it then holds the original bytes.
func parseNegativeSerial(der []byte) (*x509.Certificate, bool) {
	buf := bytes.Clone(der)
	pos, n, ok := serialOffset(buf)
	if !ok || buf[pos]&0x80 == 0 {
		return nil, false
	}
	orig := buf[pos]
	buf[pos] = 0x01
	cert, err := x509.ParseCertificate(buf)
	buf[pos] = orig
	if err != nil {
		return nil, false
	}
	serial := new(big.Int).SetBytes(buf[pos : pos+n])
	cert.SerialNumber = serial.Sub(serial, new(big.Int).Lsh(big.NewInt(1), uint(8*n)))
	return cert, true
}

// serialOffset finds the content of the serialNumber INTEGER in a DER certificate.
func serialOffset(b []byte) (pos, n int, ok bool) {
	tag, hdr, _, ok := derHeader(b)
	if !ok || tag != 0x30 {
		return 0, 0, false
	}
	p := hdr
	if tag, hdr, _, ok = derHeader(b[p:]); !ok || tag != 0x30 { // tbsCertificate
		return 0, 0, false
	}
	p += hdr
	tag, hdr, n, ok = derHeader(b[p:])
	if ok && tag == 0xa0 { // [0] EXPLICIT version
		p += hdr + n
		tag, hdr, n, ok = derHeader(b[p:])
	}
	if !ok || tag != 0x02 || n == 0 {
		return 0, 0, false
	}
	return p + hdr, n, true
}

// derHeader decodes a DER tag and definite length (up to 3 length bytes).
func derHeader(b []byte) (tag byte, hdr, n int, ok bool) {
	if len(b) < 2 || b[0]&0x1f == 0x1f {
		return 0, 0, 0, false
	}
	tag, l := b[0], int(b[1])
	if l < 0x80 {
		return tag, 2, l, 2+l <= len(b)
	}
	k := l & 0x7f
	if k == 0 || k > 3 || len(b) < 2+k {
		return 0, 0, 0, false
	}
	for _, c := range b[2 : 2+k] {
		n = n<<8 | int(c)
	}
	return tag, 2 + k, n, 2+k+n <= len(b)
}

// EKCertMatches checks that cert certifies exactly the public key of ek, the
// registrar's ek_tpm/ekcert consistency check. An RSA key under the
// id-RSAES-OAEP SPKI algorithm is compared like rsaEncryption.
func EKCertMatches(cert *x509.Certificate, ek *Public) error {
	if cert == nil || ek == nil {
		return fmt.Errorf("%w: missing certificate or EK", ErrEKCertMismatch)
	}
	key, err := certPublicKey(cert)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrEKCertMismatch, err)
	}
	k, ok := ek.Key.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(key) {
		return ErrEKCertMismatch
	}
	return nil
}

// certPublicKey returns the certificate's key, decoding RSAES-OAEP SPKIs too.
func certPublicKey(cert *x509.Certificate) (crypto.PublicKey, error) {
	if cert.PublicKey != nil {
		return cert.PublicKey, nil
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	rest, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki)
	if err != nil || len(rest) != 0 {
		return nil, errors.New("malformed subject public key info")
	}
	if !spki.Algorithm.Algorithm.Equal(oidRSAESOAEP) {
		return nil, fmt.Errorf("unsupported public key algorithm %v", spki.Algorithm.Algorithm)
	}
	key, err := x509.ParsePKCS1PublicKey(spki.PublicKey.RightAlign())
	if err != nil {
		return nil, fmt.Errorf("RSAES-OAEP public key: %w", err)
	}
	return key, nil
}

// VerifyEKCert checks that cert chains to one of roots, through any of
// intermediates, with full chain building (signatures, CA constraints, name
// chaining on raw bytes, path lengths). Like Keylime's tpm_cert_store, every
// certificate in roots is a trust anchor, self-signed or not. Extended key usage
// is not restricted (ExtKeyUsageAny). A critical SubjectAltName holding only a
// directoryName is accepted in every certificate.
//
// Validity is checked at cert.NotBefore, the moment the EK certificate was issued:
// TPM EK certificates outlive their issuing CAs (several Infineon intermediates
// in Keylime's store expired in 2025), and an expired EK certificate still
// identifies the TPM, so Keylime checks no dates at all. Use VerifyEKCertAt to
// check at another time. SHA-1 signatures are rejected by Go; a SHA-1-signed
// intermediate works when it is itself given as a trust anchor.
func VerifyEKCert(cert *x509.Certificate, roots, intermediates []*x509.Certificate) error {
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrEKCertUntrusted)
	}
	return VerifyEKCertAt(cert, roots, intermediates, cert.NotBefore)
}

// VerifyEKCertAt is VerifyEKCert with validity checked at the given time.
func VerifyEKCertAt(cert *x509.Certificate, roots, intermediates []*x509.Certificate, at time.Time) error {
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrEKCertUntrusted)
	}
	if len(roots) == 0 {
		return fmt.Errorf("%w: no trusted CA certificates", ErrEKCertUntrusted)
	}
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range roots {
		rootPool.AddCert(tolerant(c))
	}
	for _, c := range intermediates {
		interPool.AddCert(tolerant(c))
	}
	_, err := tolerant(cert).Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: interPool,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrEKCertUntrusted, err)
	}
	return nil
}

// tolerant returns c, or a shallow copy of it without the SAN in
// UnhandledCriticalExtensions.
func tolerant(c *x509.Certificate) *x509.Certificate {
	if !slices.ContainsFunc(c.UnhandledCriticalExtensions, func(o asn1.ObjectIdentifier) bool {
		return o.Equal(oidSubjectAltName)
	}) {
		return c
	}
	cc := *c
	cc.UnhandledCriticalExtensions = withoutSAN(c.UnhandledCriticalExtensions)
	return &cc
}

// LoadCertPool reads every *.pem, *.crt, *.cer and *.der file (any case) in dir, as
// Keylime's tpm_cert_store, and returns their certificates in file-name order. A
// file may hold several PEM CERTIFICATE blocks or one DER certificate, parsed with
// the tolerances of ParseEKCert. Files that cannot be read or hold no certificate
// are skipped and reported in the error (joined, one per file), while the
// certificates of the other files are still returned; the error alone is
// returned when dir cannot be read.
func LoadCertPool(dir string) ([]*x509.Certificate, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read cert store: %w", err)
	}
	var certs []*x509.Certificate
	var errs []error
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".pem", ".crt", ".cer", ".der":
		default:
			continue
		}
		if e.IsDir() {
			continue
		}
		cs, err := loadCertFile(filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, fmt.Errorf("cert store file %s: %w", e.Name(), err))
			continue
		}
		certs = append(certs, cs...)
	}
	return certs, errors.Join(errs...)
}

func loadCertFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.Contains(data, []byte("-----BEGIN")) {
		return ParseEKCertChain(data)
	}
	c, err := ParseEKCert(data)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{c}, nil
}
