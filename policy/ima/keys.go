package ima

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
)

// Key parsing errors.
var (
	// ErrNotAKey: the data is not a certificate, public key or private key (DER or PEM).
	ErrNotAKey = errors.New("not a key")
	// ErrUnsupportedKey: a key IMA signatures cannot use (DSA, Ed25519, X25519, …); Keylime
	// reports such an ima-buf key as ima.invalid_key.
	ErrUnsupportedKey = errors.New("unsupported key type")
	// ErrUnsupportedCurve: an EC key on a curve Go's standard library lacks (secp256k1,
	// brainpool, …). Keylime (OpenSSL) accepts it; here it is recognised as a key but cannot verify.
	ErrUnsupportedCurve = errors.New("elliptic curve not supported by Go's standard library")
	// ErrBadKeyring: a verification-keys / keyring JSON document is malformed.
	ErrBadKeyring = errors.New("invalid IMA keyring")
)

// Key is one IMA signature verification key.
type Key struct {
	// ID is the IMA keyid v2: the last 4 bytes of the key's SHA-1 identifier.
	ID uint32
	// Public is an *rsa.PublicKey or an *ecdsa.PublicKey.
	Public crypto.PublicKey
	spki   []byte
}

// Keyring holds IMA signature verification keys by keyid v2, like Keylime's ImaKeyring. Its JSON
// form is Keylime's: {"pubkeys": [<base64 DER SubjectPublicKeyInfo>], "keyids": [<u32>]}. A Keyring is
// not safe for concurrent modification; Attest never modifies the keyrings it is given.
type Keyring struct {
	keys []Key
}

// NewKeyring returns an empty keyring.
func NewKeyring() *Keyring { return &Keyring{} }

// Len returns the number of keys.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// Keys returns the keys in the order they were added.
func (k *Keyring) Keys() []Key {
	if k == nil {
		return nil
	}
	return append([]Key(nil), k.keys...)
}

// Add adds an RSA or ECDSA public key with its keyid v2; id 0 computes it from the key. A key
// already present (same id, same key) is not added twice.
func (k *Keyring) Add(pub crypto.PublicKey, id uint32) error {
	key, err := newKey(pub, id)
	if err != nil {
		return err
	}
	k.add(key)
	return nil
}

// newKey checks the key type and computes the keyid when id is 0.
func newKey(pub crypto.PublicKey, id uint32) (Key, error) {
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return Key{}, fmt.Errorf("%w %T", ErrUnsupportedKey, pub)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Key{}, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	if id == 0 {
		if id, err = KeyIDv2(pub); err != nil {
			return Key{}, err
		}
	}
	return Key{ID: id, Public: pub, spki: spki}, nil
}

func (k *Keyring) add(key Key) {
	for _, have := range k.keys {
		if have.ID == key.ID && bytes.Equal(have.spki, key.spki) {
			return
		}
	}
	k.keys = append(k.keys, key)
}

// Clone returns a copy that can be modified independently (the keys themselves are shared).
func (k *Keyring) Clone() *Keyring {
	if k == nil {
		return NewKeyring()
	}
	return &Keyring{keys: append([]Key(nil), k.keys...)}
}

// KeyIDv2 computes a key's IMA keyid v2 as the kernel and Keylime do: the last 4 bytes (big-endian)
// of SHA-1 over the RSA key's PKCS#1 RSAPublicKey DER, or over the EC key's uncompressed point.
func KeyIDv2(pub crypto.PublicKey) (uint32, error) {
	var b []byte
	switch k := pub.(type) {
	case *rsa.PublicKey:
		b = x509.MarshalPKCS1PublicKey(k)
	case *ecdsa.PublicKey:
		e, err := k.ECDH()
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrUnsupportedCurve, err)
		}
		b = e.Bytes()
	default:
		return 0, fmt.Errorf("%w %T", ErrUnsupportedKey, pub)
	}
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint32(sum[16:]), nil
}

var (
	oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidSKID        = asn1.ObjectIdentifier{2, 5, 29, 14}
)

type spkiASN1 struct {
	Algorithm pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

type certASN1 struct {
	TBS struct {
		Version   int `asn1:"optional,explicit,default:0,tag:0"`
		Serial    asn1.RawValue
		SigAlg    asn1.RawValue
		Issuer    asn1.RawValue
		Validity  asn1.RawValue
		Subject   asn1.RawValue
		PublicKey spkiASN1
		Rest      []asn1.RawValue `asn1:"optional"`
	}
	SigAlg asn1.RawValue
	Sig    asn1.BitString
}

// sec1ASN1 is RFC 5915's ECPrivateKey.
type sec1ASN1 struct {
	Version    int
	PrivateKey []byte
	Params     asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	PublicKey  asn1.BitString        `asn1:"optional,explicit,tag:1"`
}

// pkcs8ASN1 is RFC 5208's PrivateKeyInfo.
type pkcs8ASN1 struct {
	Version    int
	Algorithm  pkix.AlgorithmIdentifier
	PrivateKey []byte
	Attributes asn1.RawValue `asn1:"optional,tag:0"`
}

// Forms of DER an EC key on an unsupported curve may come in.
const (
	derCert = iota
	derSPKI
	derPrivate
)

// unsupportedEC reports whether der is an EC key in the given form (or a certificate carrying
// one); it is asked after Go refused to parse der, so the curve is one Go lacks.
func unsupportedEC(der []byte, form int) bool {
	switch form {
	case derCert:
		var c certASN1
		rest, err := asn1.Unmarshal(der, &c)
		return err == nil && len(rest) == 0 && c.TBS.PublicKey.Algorithm.Algorithm.Equal(oidECPublicKey)
	case derSPKI:
		var s spkiASN1
		rest, err := asn1.Unmarshal(der, &s)
		return err == nil && len(rest) == 0 && s.Algorithm.Algorithm.Equal(oidECPublicKey)
	}
	var p8 pkcs8ASN1
	if rest, err := asn1.Unmarshal(der, &p8); err == nil && len(rest) == 0 {
		return p8.Algorithm.Algorithm.Equal(oidECPublicKey)
	}
	var ec sec1ASN1
	rest, err := asn1.Unmarshal(der, &ec)
	return err == nil && len(rest) == 0 && ec.Version == 1 && len(ec.Params) > 0
}

// ParsePublicKey reads a key the way Keylime's get_pubkey does, trying in turn a DER and a PEM X.509
// certificate, a DER and a PEM public key, a DER and a PEM private key. It returns the public key and,
// for a certificate with a Subject Key Identifier, its last 4 bytes as keyid (else 0). Errors:
// ErrNotAKey, ErrUnsupportedKey (DSA, Ed25519, …), ErrUnsupportedCurve.
func ParsePublicKey(data []byte) (crypto.PublicKey, uint32, error) {
	var blocks []*pem.Block
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	pemOf := func(types ...string) [][]byte {
		var out [][]byte
		for _, b := range blocks {
			for _, t := range types {
				if b.Type == t {
					out = append(out, b.Bytes)
				}
			}
		}
		return out
	}
	// Certificates.
	for _, der := range append([][]byte{data}, pemOf("CERTIFICATE")...) {
		if c, err := x509.ParseCertificate(der); err == nil {
			id := uint32(0)
			if len(c.SubjectKeyId) >= 4 {
				id = binary.BigEndian.Uint32(c.SubjectKeyId[len(c.SubjectKeyId)-4:])
			}
			return checkKeyType(c.PublicKey, id)
		} else if unsupportedEC(der, derCert) {
			return nil, 0, fmt.Errorf("certificate: %w", ErrUnsupportedCurve)
		}
	}
	// Public keys.
	for _, der := range append([][]byte{data}, pemOf("PUBLIC KEY", "RSA PUBLIC KEY")...) {
		if pub, err := x509.ParsePKIXPublicKey(der); err == nil {
			return checkKeyType(pub, 0)
		} else if unsupportedEC(der, derSPKI) {
			return nil, 0, fmt.Errorf("public key: %w", ErrUnsupportedCurve)
		}
		if pub, err := x509.ParsePKCS1PublicKey(der); err == nil {
			return checkKeyType(pub, 0)
		}
	}
	// Private keys.
	for _, der := range append([][]byte{data}, pemOf("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")...) {
		if priv, err := x509.ParsePKCS8PrivateKey(der); err == nil {
			if s, ok := priv.(crypto.Signer); ok {
				return checkKeyType(s.Public(), 0)
			}
			return nil, 0, fmt.Errorf("%w %T", ErrUnsupportedKey, priv)
		}
		if priv, err := x509.ParsePKCS1PrivateKey(der); err == nil {
			return checkKeyType(priv.Public(), 0)
		}
		if priv, err := x509.ParseECPrivateKey(der); err == nil {
			return checkKeyType(priv.Public(), 0)
		}
		if unsupportedEC(der, derPrivate) {
			return nil, 0, fmt.Errorf("private key: %w", ErrUnsupportedCurve)
		}
	}
	return nil, 0, ErrNotAKey
}

func checkKeyType(pub crypto.PublicKey, id uint32) (crypto.PublicKey, uint32, error) {
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
		return pub, id, nil
	}
	return nil, 0, fmt.Errorf("%w %T", ErrUnsupportedKey, pub)
}

// ParseKeys reads a key file for IMA signature verification (what `keylime-policy
// --add-ima-signature-verification-key` takes): a certificate, public key or private key, DER or PEM.
func ParseKeys(data []byte) (*Keyring, error) {
	pub, id, err := ParsePublicKey(data)
	if err != nil {
		return nil, err
	}
	k := NewKeyring()
	if err := k.Add(pub, id); err != nil {
		return nil, err
	}
	return k, nil
}

type keyringJSON struct {
	Meta *struct {
		Version *int64 `json:"version"`
	} `json:"meta,omitempty"`
	KeyIDs  []json.Number `json:"keyids"`
	PubKeys []string      `json:"pubkeys"`
}

// MarshalJSON writes Keylime's keyring form {"pubkeys": [...], "keyids": [...]}.
func (k *Keyring) MarshalJSON() ([]byte, error) {
	out := struct {
		PubKeys []string `json:"pubkeys"`
		KeyIDs  []uint32 `json:"keyids"`
	}{PubKeys: []string{}, KeyIDs: []uint32{}}
	if k != nil {
		for _, key := range k.keys {
			out.PubKeys = append(out.PubKeys, base64.StdEncoding.EncodeToString(key.spki))
			out.KeyIDs = append(out.KeyIDs, key.ID)
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads Keylime's keyring form; keys on curves Go cannot use are left out. It is
// strict: a malformed document or key is an error.
func (k *Keyring) UnmarshalJSON(b []byte) error {
	r, _, err := parseKeyringJSON(b)
	if err != nil {
		return err
	}
	*k = *r
	return nil
}

// String returns the keyring's JSON form.
func (k *Keyring) String() string {
	b, _ := k.MarshalJSON()
	return string(b)
}

// ParseVerificationKeys parses a runtime policy's "verification-keys" string: empty, or Keylime's
// keyring JSON (also accepted JSON-encoded twice, as Keylime's database holds it). It validates the
// document like Keylime's IMA_KEYRING_JSON_SCHEMA and every key strictly; keys on curves Go's standard
// library lacks (Keylime's own test key is secp256k1) are left out and named in the warnings.
func ParseVerificationKeys(s string) (*Keyring, []string, error) {
	if s == "" {
		return NewKeyring(), nil, nil
	}
	b := []byte(s)
	var inner string
	if json.Unmarshal(b, &inner) == nil {
		b = []byte(inner)
	}
	return parseKeyringJSON(b)
}

func parseKeyringJSON(b []byte) (*Keyring, []string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, nil, fmt.Errorf("%w: not a JSON object: %v", ErrBadKeyring, err)
	}
	for _, req := range []string{"keyids", "pubkeys"} {
		if _, ok := raw[req]; !ok {
			return nil, nil, fmt.Errorf("%w: %q is a required property", ErrBadKeyring, req)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc keyringJSON
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadKeyring, err)
	}
	if m, ok := raw["meta"]; ok {
		if doc.Meta == nil || doc.Meta.Version == nil {
			return nil, nil, fmt.Errorf("%w: meta: %q is a required property (got %s)", ErrBadKeyring, "version", m)
		}
		if *doc.Meta.Version < 1 {
			return nil, nil, fmt.Errorf("%w: meta.version %d is less than the minimum of 1", ErrBadKeyring, *doc.Meta.Version)
		}
	}
	ids := make([]uint32, len(doc.KeyIDs))
	for i, n := range doc.KeyIDs {
		v, err := n.Int64()
		if err != nil || v < 0 || v > math.MaxUint32 {
			return nil, nil, fmt.Errorf("%w: keyids[%d] = %s is not a 32-bit key id", ErrBadKeyring, i, n)
		}
		ids[i] = uint32(v)
	}
	k := NewKeyring()
	var warnings []string
	for i, s := range doc.PubKeys {
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: pubkeys[%d] is not base64: %v", ErrBadKeyring, i, err)
		}
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			if unsupportedEC(der, derSPKI) {
				warnings = append(warnings, fmt.Sprintf("pubkeys[%d]: %v; signatures by this key cannot be verified", i, ErrUnsupportedCurve))
				continue
			}
			return nil, nil, fmt.Errorf("%w: pubkeys[%d] is not a DER SubjectPublicKeyInfo: %v", ErrBadKeyring, i, err)
		}
		var id uint32
		if i < len(ids) {
			id = ids[i]
		}
		if err := k.Add(pub, id); err != nil {
			return nil, nil, fmt.Errorf("%w: pubkeys[%d]: %v", ErrBadKeyring, i, err)
		}
	}
	return k, warnings, nil
}
