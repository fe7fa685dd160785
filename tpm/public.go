package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/bits"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Errors returned by the public-area functions. Callers test them with errors.Is.
var (
	// ErrBadPublic means bytes are not an acceptable TPM2B_PUBLIC.
	ErrBadPublic = errors.New("invalid TPM public area")
	// ErrBadAK means a public area is not acceptable as a Keylime attestation key.
	ErrBadAK = errors.New("unacceptable attestation key")
	// ErrBadEK means a public area is not acceptable as an endorsement key.
	ErrBadEK = errors.New("unacceptable endorsement key")
)

// AKAttributes is the exact TPMA_OBJECT an AK must have: fixedTPM | fixedParent |
// sensitiveDataOrigin | userWithAuth | restricted | sign, as checked by Keylime's
// pre-2025 registrar (tpm2_objects.AK_EXPECTED_ATTRS).
const AKAttributes uint32 = attrFixedTPM | attrFixedParent | attrSensitiveDataOrigin |
	attrUserWithAuth | attrRestricted | attrSign

// TPMA_OBJECT bits (TPM 2.0 Part 2, 8.3).
const (
	attrFixedTPM             uint32 = 1 << 1
	attrSTClear              uint32 = 1 << 2
	attrFixedParent          uint32 = 1 << 4
	attrSensitiveDataOrigin  uint32 = 1 << 5
	attrUserWithAuth         uint32 = 1 << 6
	attrAdminWithPolicy      uint32 = 1 << 7
	attrFirmwareLimited      uint32 = 1 << 8
	attrNoDA                 uint32 = 1 << 10
	attrEncryptedDuplication uint32 = 1 << 11
	attrRestricted           uint32 = 1 << 16
	attrDecrypt              uint32 = 1 << 17
	attrSign                 uint32 = 1 << 18
	attrX509Sign             uint32 = 1 << 19
)

var attrNames = []struct {
	bit  uint32
	name string
}{
	{attrFixedTPM, "fixedTPM"},
	{attrSTClear, "stClear"},
	{attrFixedParent, "fixedParent"},
	{attrSensitiveDataOrigin, "sensitiveDataOrigin"},
	{attrUserWithAuth, "userWithAuth"},
	{attrAdminWithPolicy, "adminWithPolicy"},
	{attrFirmwareLimited, "firmwareLimited"},
	{attrNoDA, "noDA"},
	{attrEncryptedDuplication, "encryptedDuplication"},
	{attrRestricted, "restricted"},
	{attrDecrypt, "decrypt"},
	{attrSign, "sign"},
	{attrX509Sign, "x509sign"},
}

// maxPublicSize bounds a TPM2B_PUBLIC. The largest key accepted here (RSA-4096
// with a SHA-512 policy) marshals to about 600 bytes.
const maxPublicSize = 1024

// Public is a parsed and validated TPM2B_PUBLIC of an RSA or ECC key.
type Public struct {
	// Bytes is the TPM2B_PUBLIC exactly as received, including the u16 size.
	Bytes []byte
	// Public is the decoded TPMT_PUBLIC.
	Public tpm2.TPMTPublic
	// Name is the TPM Name: u16 nameAlg || H_nameAlg(TPMT_PUBLIC).
	Name []byte
	// Key is the public key: *rsa.PublicKey or *ecdsa.PublicKey.
	Key crypto.PublicKey
}

// ParsePublic parses a marshalled TPM2B_PUBLIC and validates it. It checks that:
//   - the u16 size prefix equals the number of bytes that follow (no trailing bytes)
//     and the TPMT_PUBLIC re-marshals to exactly those bytes;
//   - the type is RSA or ECC and nameAlg is SHA-256, SHA-384 or SHA-512 (SHA-1 and
//     SM3 are refused, like Keylime's default accept_tpm_hash_algs);
//   - authPolicy is empty or one nameAlg digest long;
//   - an RSA key has 2048, 3072 or 4096 bits, a modulus of exactly that size and an
//     exponent that is 0 (meaning 65537) or odd and in [3, 2^31-1];
//   - an ECC key is on NIST P-256, P-384 or P-521, its coordinates are padded to the
//     curve size (as TPMs produce them) and the point is on the curve.
//
// Object attributes are not checked here; see CheckAK and CheckEK. The byte slices in
// the returned Public share memory; treat them as read-only.
func ParsePublic(tpm2b []byte) (*Public, error) {
	if err := checkPublicSize(tpm2b); err != nil {
		return nil, err
	}
	p, err := parsePublicFast(tpm2b)
	if !errors.Is(err, errNotFast) {
		return p, err
	}
	return parsePublicReflect(tpm2b)
}

// checkPublicSize checks the length of a TPM2B_PUBLIC against its u16 size prefix.
func checkPublicSize(tpm2b []byte) error {
	if len(tpm2b) < 2 {
		return fmt.Errorf("%w: %d bytes, too short for a TPM2B", ErrBadPublic, len(tpm2b))
	}
	if len(tpm2b) > maxPublicSize {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrBadPublic, len(tpm2b), maxPublicSize)
	}
	size := int(binary.BigEndian.Uint16(tpm2b))
	if size != len(tpm2b)-2 {
		return fmt.Errorf("%w: size prefix says %d bytes but %d follow", ErrBadPublic, size, len(tpm2b)-2)
	}
	return nil
}

// parsePublicReflect is ParsePublic with go-tpm's reflection decoder and tpm2.Pub. It
// handles every input parsePublicFast does not decode, and is the reference the fast
// path is fuzzed against.
func parsePublicReflect(tpm2b []byte) (*Public, error) {
	if err := checkPublicSize(tpm2b); err != nil {
		return nil, err
	}
	inner := tpm2b[2:]
	pub, err := unmarshalPublic(inner)
	if err != nil {
		return nil, err
	}
	if err := checkPublic(pub); err != nil {
		return nil, err
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPublic, err)
	}
	if ec, ok := key.(*ecdsa.PublicKey); ok {
		if _, err := ec.ECDH(); err != nil {
			return nil, fmt.Errorf("%w: ECC point: %w", ErrBadPublic, err)
		}
	}
	// inner re-marshals to itself (unmarshalPublic checked), so the Name is computed over it directly.
	h, _ := nameHash(pub.NameAlg)
	hh := h.New()
	hh.Write(inner)
	name := binary.BigEndian.AppendUint16(make([]byte, 0, 2+h.Size()), uint16(pub.NameAlg))
	return &Public{
		Bytes:  bytes.Clone(tpm2b),
		Public: *pub,
		Name:   hh.Sum(name),
		Key:    key,
	}, nil
}

// ParsePublicBase64 decodes standard base64 (as in Keylime's ek_tpm and aik_tpm
// fields) and calls ParsePublic.
func ParsePublicBase64(s string) (*Public, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %w", ErrBadPublic, err)
	}
	return ParsePublic(b)
}

// unmarshalPublic decodes a TPMT_PUBLIC and insists that it re-marshals to the same
// bytes. go-tpm's reflection-based decoder is not written for hostile input, so any
// panic in it becomes an error.
func unmarshalPublic(b []byte) (pub *tpm2.TPMTPublic, err error) {
	defer func() {
		if r := recover(); r != nil {
			pub, err = nil, fmt.Errorf("%w: malformed TPMT_PUBLIC", ErrBadPublic)
		}
	}()
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPublic, err)
	}
	if !bytes.Equal(tpm2.Marshal(*pub), b) {
		return nil, fmt.Errorf("%w: trailing or non-canonical bytes in TPMT_PUBLIC", ErrBadPublic)
	}
	return pub, nil
}

func checkPublic(pub *tpm2.TPMTPublic) error {
	h, err := nameHash(pub.NameAlg)
	if err != nil {
		return err
	}
	if n := len(pub.AuthPolicy.Buffer); n != 0 && n != h.Size() {
		return fmt.Errorf("%w: authPolicy is %d bytes, want 0 or %d", ErrBadPublic, n, h.Size())
	}
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		return checkRSA(pub)
	case tpm2.TPMAlgECC:
		return checkECC(pub)
	default:
		return fmt.Errorf("%w: key type 0x%04x is neither RSA nor ECC", ErrBadPublic, uint16(pub.Type))
	}
}

// nameHash returns the hash of an accepted name or scheme algorithm.
func nameHash(alg tpm2.TPMIAlgHash) (crypto.Hash, error) {
	switch alg {
	case tpm2.TPMAlgSHA256:
		return crypto.SHA256, nil
	case tpm2.TPMAlgSHA384:
		return crypto.SHA384, nil
	case tpm2.TPMAlgSHA512:
		return crypto.SHA512, nil
	default:
		return 0, fmt.Errorf("%w: hash algorithm 0x%04x is not SHA-256, SHA-384 or SHA-512", ErrBadPublic, uint16(alg))
	}
}

func checkRSA(pub *tpm2.TPMTPublic) error {
	parms, err := pub.Parameters.RSADetail()
	if err != nil {
		return fmt.Errorf("%w: RSA parameters: %w", ErrBadPublic, err)
	}
	switch parms.KeyBits {
	case 2048, 3072, 4096:
	default:
		return fmt.Errorf("%w: RSA key size %d is not 2048, 3072 or 4096", ErrBadPublic, parms.KeyBits)
	}
	n, err := pub.Unique.RSA()
	if err != nil {
		return fmt.Errorf("%w: RSA modulus: %w", ErrBadPublic, err)
	}
	m := n.Buffer
	if len(m)*8 != int(parms.KeyBits) || m[0]&0x80 == 0 || m[len(m)-1]&1 == 0 {
		return fmt.Errorf("%w: RSA modulus is not an odd %d-bit number", ErrBadPublic, parms.KeyBits)
	}
	if e := parms.Exponent; e != 0 && (e < 3 || e%2 == 0 || bits.Len32(e) > 31) {
		return fmt.Errorf("%w: RSA exponent %d", ErrBadPublic, e)
	}
	return nil
}

func checkECC(pub *tpm2.TPMTPublic) error {
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return fmt.Errorf("%w: ECC parameters: %w", ErrBadPublic, err)
	}
	var size int
	switch parms.CurveID {
	case tpm2.TPMECCNistP256:
		size = 32
	case tpm2.TPMECCNistP384:
		size = 48
	case tpm2.TPMECCNistP521:
		size = 66
	default:
		return fmt.Errorf("%w: ECC curve 0x%04x is not NIST P-256, P-384 or P-521", ErrBadPublic, uint16(parms.CurveID))
	}
	pt, err := pub.Unique.ECC()
	if err != nil {
		return fmt.Errorf("%w: ECC point: %w", ErrBadPublic, err)
	}
	if len(pt.X.Buffer) != size || len(pt.Y.Buffer) != size {
		return fmt.Errorf("%w: ECC coordinates are %d and %d bytes, want %d", ErrBadPublic, len(pt.X.Buffer), len(pt.Y.Buffer), size)
	}
	return nil
}

// Attributes returns the raw TPMA_OBJECT bits of the key.
func (p *Public) Attributes() uint32 {
	return binary.BigEndian.Uint32(p.Bytes[6:10])
}

// PEM returns the key as a PEM "PUBLIC KEY" block (DER SubjectPublicKeyInfo, 64-column
// base64, trailing newline), the same text OpenSSL's PEM_write_PUBKEY produces.
func (p *Public) PEM() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(p.Key)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// HashEK returns the agent UUID Keylime derives from an EK when the agent's uuid
// option is "hash_ek": the lowercase hex SHA-256 of the EK public key in PEM form.
// This matches rust-keylime keylime/src/hash_ek.rs (hash_ek_pubkey: SHA-256 over
// tss_pubkey_to_pem, which is OpenSSL's public_key_to_pem of the SPKI).
func HashEK(ek *Public) (string, error) {
	pemText, err := ek.PEM()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(pemText)
	return hex.EncodeToString(sum[:]), nil
}

// CheckAK checks that a public area is acceptable as a Keylime AK:
//   - its attributes are exactly AKAttributes (so it is a restricted signing key
//     that cannot decrypt, has no adminWithPolicy, noDA, stClear, ...);
//   - an RSA key uses RSASSA and an ECC key uses ECDSA (the only quote signatures
//     Keylime verifies), with SHA-256, SHA-384 or SHA-512.
//
// The error wraps ErrBadAK and says what is wrong, e.g. "AK is not restricted".
func CheckAK(p *Public) error {
	if p == nil {
		return fmt.Errorf("%w: no AK", ErrBadAK)
	}
	var problems []string
	if a := p.Attributes(); a != AKAttributes {
		problems = attrProblems("AK", a, AKAttributes)
	}
	if err := checkSigScheme(&p.Public); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s (attributes 0x%08x)", ErrBadAK, strings.Join(problems, ", "), p.Attributes())
	}
	return nil
}

// attrProblems describes how attributes a differ from want, one phrase per bit.
func attrProblems(what string, a, want uint32) []string {
	var out []string
	for _, n := range attrNames {
		switch {
		case want&n.bit != 0 && a&n.bit == 0:
			switch n.bit {
			case attrSign:
				out = append(out, what+" cannot sign")
			case attrDecrypt:
				out = append(out, what+" cannot decrypt")
			default:
				out = append(out, what+" is not "+n.name)
			}
		case want&n.bit == 0 && a&n.bit != 0:
			switch n.bit {
			case attrDecrypt:
				out = append(out, what+" can decrypt")
			case attrSign:
				out = append(out, what+" can sign")
			default:
				out = append(out, what+" has "+n.name)
			}
		}
	}
	known := uint32(0)
	for _, n := range attrNames {
		known |= n.bit
	}
	if extra := a &^ want &^ known; extra != 0 {
		out = append(out, fmt.Sprintf("%s has unknown attribute bits 0x%08x", what, extra))
	}
	return out
}

func checkSigScheme(pub *tpm2.TPMTPublic) error {
	var hashAlg tpm2.TPMIAlgHash
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return err
		}
		if parms.Scheme.Scheme != tpm2.TPMAlgRSASSA {
			return fmt.Errorf("AK scheme is %s, want RSASSA", algName(parms.Scheme.Scheme))
		}
		s, err := parms.Scheme.Details.RSASSA()
		if err != nil {
			return err
		}
		hashAlg = s.HashAlg
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return err
		}
		if parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
			return fmt.Errorf("AK scheme is %s, want ECDSA", algName(parms.Scheme.Scheme))
		}
		s, err := parms.Scheme.Details.ECDSA()
		if err != nil {
			return err
		}
		hashAlg = s.HashAlg
	default:
		return fmt.Errorf("AK type 0x%04x", uint16(pub.Type))
	}
	if _, err := nameHash(hashAlg); err != nil {
		return fmt.Errorf("AK scheme hash 0x%04x is not SHA-256, SHA-384 or SHA-512", uint16(hashAlg))
	}
	return nil
}

func algName(a tpm2.TPMAlgID) string {
	switch a {
	case tpm2.TPMAlgNull:
		return "NULL"
	case tpm2.TPMAlgRSASSA:
		return "RSASSA"
	case tpm2.TPMAlgRSAPSS:
		return "RSAPSS"
	case tpm2.TPMAlgRSAES:
		return "RSAES"
	case tpm2.TPMAlgOAEP:
		return "OAEP"
	case tpm2.TPMAlgECDSA:
		return "ECDSA"
	case tpm2.TPMAlgECDAA:
		return "ECDAA"
	case tpm2.TPMAlgECSchnorr:
		return "ECSCHNORR"
	case tpm2.TPMAlgSM2:
		return "SM2"
	case tpm2.TPMAlgECDH:
		return "ECDH"
	default:
		return fmt.Sprintf("0x%04x", uint16(a))
	}
}

// CheckEK checks that a public area can serve as the EK of a credential challenge:
// a restricted decryption (storage) key that cannot sign, is fixedTPM, has no
// asymmetric scheme and protects children with AES in CFB mode, as in the TCG EK
// templates. The error wraps ErrBadEK.
func CheckEK(p *Public) error {
	if p == nil {
		return fmt.Errorf("%w: no EK", ErrBadEK)
	}
	a := p.Attributes()
	var problems []string
	need := attrRestricted | attrDecrypt | attrFixedTPM
	if a&need != need {
		problems = append(problems, attrProblems("EK", a&need, need)...)
	}
	if a&attrSign != 0 {
		problems = append(problems, "EK can sign")
	}
	var sym *tpm2.TPMTSymDefObject
	var scheme tpm2.TPMAlgID
	switch p.Public.Type {
	case tpm2.TPMAlgRSA:
		parms, err := p.Public.Parameters.RSADetail()
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadEK, err)
		}
		sym, scheme = &parms.Symmetric, parms.Scheme.Scheme
	case tpm2.TPMAlgECC:
		parms, err := p.Public.Parameters.ECCDetail()
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadEK, err)
		}
		sym, scheme = &parms.Symmetric, parms.Scheme.Scheme
	default:
		return fmt.Errorf("%w: type 0x%04x", ErrBadEK, uint16(p.Public.Type))
	}
	if scheme != tpm2.TPMAlgNull {
		problems = append(problems, "EK scheme is "+algName(scheme)+", want NULL")
	}
	if sym.Algorithm != tpm2.TPMAlgAES {
		problems = append(problems, fmt.Sprintf("EK symmetric algorithm 0x%04x is not AES", uint16(sym.Algorithm)))
	} else if mode, err := sym.Mode.AES(); err != nil || *mode != tpm2.TPMAlgCFB {
		problems = append(problems, "EK symmetric mode is not CFB")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s (attributes 0x%08x)", ErrBadEK, strings.Join(problems, ", "), a)
	}
	return nil
}
