package device

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
)

// errBadCert means EK certificate bytes from NV are not a DER certificate.
var errBadCert = errors.New("malformed EK certificate")

// trimDER cuts NV contents to the DER certificate they start with: some TPMs pad the EK
// certificate index with zeros or 0xff after the certificate.
func trimDER(b []byte) ([]byte, error) {
	var v asn1.RawValue
	rest, err := asn1.Unmarshal(b, &v)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadCert, err)
	}
	if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagSequence || !v.IsCompound {
		return nil, fmt.Errorf("%w: no SEQUENCE at the start of %d bytes", errBadCert, len(b))
	}
	return b[:len(b)-len(rest)], nil
}

// certPublicKey returns the subject public key of a DER certificate. TPM vendors' EK certificates
// are not always accepted by crypto/x509 (negative serial numbers, odd extensions), so when
// ParseCertificate fails it reads just the SubjectPublicKeyInfo out of the TBSCertificate.
func certPublicKey(der []byte) (crypto.PublicKey, error) {
	if c, err := x509.ParseCertificate(der); err == nil {
		return c.PublicKey, nil
	}
	spki, err := certSPKI(der)
	if err != nil {
		return nil, err
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("%w: subject public key: %w", errBadCert, err)
	}
	return pub, nil
}

// certSPKI returns the raw SubjectPublicKeyInfo of a DER X.509 certificate.
func certSPKI(der []byte) ([]byte, error) {
	var cert, tbs asn1.RawValue
	if _, err := asn1.Unmarshal(der, &cert); err != nil || cert.Tag != asn1.TagSequence || !cert.IsCompound {
		return nil, fmt.Errorf("%w: no Certificate SEQUENCE", errBadCert)
	}
	if _, err := asn1.Unmarshal(cert.Bytes, &tbs); err != nil || tbs.Tag != asn1.TagSequence || !tbs.IsCompound {
		return nil, fmt.Errorf("%w: no TBSCertificate", errBadCert)
	}
	// [0] version (optional), serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
	fields := []struct {
		name string
		tag  int
	}{
		{"serialNumber", asn1.TagInteger},
		{"signature", asn1.TagSequence},
		{"issuer", asn1.TagSequence},
		{"validity", asn1.TagSequence},
		{"subject", asn1.TagSequence},
		{"subjectPublicKeyInfo", asn1.TagSequence},
	}
	rest := tbs.Bytes
	var v asn1.RawValue
	sawVersion := false
	for i := 0; i < len(fields); {
		var err error
		if rest, err = asn1.Unmarshal(rest, &v); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", errBadCert, fields[i].name, err)
		}
		if i == 0 && !sawVersion && v.Class == asn1.ClassContextSpecific && v.Tag == 0 {
			sawVersion = true
			continue
		}
		if v.Class != asn1.ClassUniversal || v.Tag != fields[i].tag {
			return nil, fmt.Errorf("%w: %s has tag %d/%d", errBadCert, fields[i].name, v.Class, v.Tag)
		}
		i++
	}
	return v.FullBytes, nil
}
