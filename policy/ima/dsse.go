package ima

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// PayloadType is the DSSE payload type of a signed runtime policy.
const PayloadType = "application/vnd.keylime+json"

// DSSE and signed-policy errors, mapped to Keylime's answers.
var (
	// ErrBadEnvelope: not a DSSE envelope Keylime would read (400).
	ErrBadEnvelope = errors.New("invalid DSSE envelope")
	// ErrEnvelopeSignature: no signature of the envelope verifies with the key (401 "Runtime policy
	// failed DSSE signature verification!").
	ErrEnvelopeSignature = errors.New("runtime policy failed DSSE signature verification")
	// ErrNotSigned: a signature is required but the policy is not an envelope (400 "Runtime policy is
	// not signed!").
	ErrNotSigned = errors.New("runtime policy is not signed")
	// ErrNoKey: a signed policy must be verified but no key was given (401).
	ErrNoKey = errors.New("runtime policy signature verification required but no key was given")
	// ErrBadDSSEKey: the verification key is not a PEM EC public key or an X.509 certificate with one.
	ErrBadDSSEKey = errors.New("invalid DSSE verification key")
)

// Envelope is a DSSE envelope as Keylime writes it.
type Envelope struct {
	Payload     string              `json:"payload"`
	PayloadType string              `json:"payloadType"`
	Signatures  []EnvelopeSignature `json:"signatures"`
}

// EnvelopeSignature is one signature of an Envelope. Keylime's keyid is the hex SHA-256 of the PEM
// public key (ecdsa backend) or a base64 PEM certificate (x509 backend).
type EnvelopeSignature struct {
	KeyID string `json:"keyid,omitempty"`
	Sig   string `json:"sig"`
}

// PAE is DSSE's pre-authentication encoding: "DSSEv1 <len(type)> <type> <len(payload)> <payload>".
func PAE(payloadType string, payload []byte) []byte {
	b := make([]byte, 0, 32+len(payloadType)+len(payload))
	b = append(b, "DSSEv1 "...)
	b = strconv.AppendInt(b, int64(len(payloadType)), 10)
	b = append(b, ' ')
	b = append(b, payloadType...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(payload)), 10)
	b = append(b, ' ')
	return append(b, payload...)
}

// dsseDecode decodes a payload or signature string as Keylime's dsse.b64dec does: hex first (so an
// even-length string of hex digits is read as hex), then standard base64, then URL-safe base64 (both
// with padding).
func dsseDecode(s string) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil && len(b) > 0 {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	b, err := base64.StdEncoding.DecodeString(strings.NewReplacer("-", "+", "_", "/").Replace(s))
	if err != nil {
		return nil, fmt.Errorf("neither hex nor base64: %v", err)
	}
	return b, nil
}

// IsEnvelope reports whether data is a JSON object with a non-empty "payload", which is how Keylime
// tells a signed runtime policy from a plain one.
func IsEnvelope(data []byte) bool {
	var probe map[string]json.RawMessage
	if json.Unmarshal(data, &probe) != nil {
		return false
	}
	p, ok := probe["payload"]
	if !ok {
		return false
	}
	switch strings.TrimSpace(string(p)) {
	case `""`, "null", "false", "0", "[]", "{}":
		return false
	}
	return true
}

func parseEnvelope(data []byte) (*Envelope, []byte, error) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadEnvelope, err)
	}
	if env.PayloadType != PayloadType {
		return nil, nil, fmt.Errorf("%w: payloadType %q, want %q", ErrBadEnvelope, env.PayloadType, PayloadType)
	}
	payload, err := dsseDecode(env.Payload)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: payload: %v", ErrBadEnvelope, err)
	}
	return &env, payload, nil
}

// UnwrapEnvelope returns an envelope's payload without verifying any signature: what Keylime's
// verifier does when require_allow_list_signatures is off.
func UnwrapEnvelope(data []byte) ([]byte, error) {
	_, payload, err := parseEnvelope(data)
	return payload, err
}

// ParseDSSEKey reads a DSSE verification key: a PEM EC public key (Keylime's
// --runtime-policy-sig-key) or a PEM X.509 certificate carrying one. No chain is checked.
func ParseDSSEKey(key []byte) (*ecdsa.PublicKey, error) {
	for rest := key; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		switch b.Type {
		case "PUBLIC KEY":
			pub, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadDSSEKey, err)
			}
			if ec, ok := pub.(*ecdsa.PublicKey); ok {
				return ec, nil
			}
			return nil, fmt.Errorf("%w: a %T, not an EC key", ErrBadDSSEKey, pub)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadDSSEKey, err)
			}
			if ec, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
				return ec, nil
			}
			return nil, fmt.Errorf("%w: certificate key is a %T, not an EC key", ErrBadDSSEKey, c.PublicKey)
		}
	}
	return nil, fmt.Errorf("%w: no PEM PUBLIC KEY or CERTIFICATE block", ErrBadDSSEKey)
}

// VerifyEnvelope verifies a DSSE envelope with an EC key (see ParseDSSEKey) and returns its payload:
// any one signature that verifies (ECDSA with SHA-256 over the PAE, DER-encoded, whatever the
// curve) suffices, and keyids are not compared, as in Keylime. The payload type must be PayloadType.
func VerifyEnvelope(data, key []byte) ([]byte, error) {
	pub, err := ParseDSSEKey(key)
	if err != nil {
		return nil, err
	}
	env, payload, err := parseEnvelope(data)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(PAE(env.PayloadType, payload))
	for _, s := range env.Signatures {
		sig, err := dsseDecode(s.Sig)
		if err == nil && ecdsa.VerifyASN1(pub, digest[:], sig) {
			return payload, nil
		}
	}
	return nil, fmt.Errorf("%w (%d signature(s))", ErrEnvelopeSignature, len(env.Signatures))
}

// DSSEKeyID is Keylime's ecdsa-backend keyid: the hex SHA-256 of the PEM SubjectPublicKeyInfo.
func DSSEKeyID(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadDSSEKey, err)
	}
	sum := sha256.Sum256(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	return hex.EncodeToString(sum[:]), nil
}

// SignEnvelope wraps payload in a DSSE envelope signed with key as `keylime-policy sign runtime
// --backend ecdsa` does (ECDSA with SHA-256 over the PAE, DER signature, keyid from DSSEKeyID).
func SignEnvelope(payload []byte, key *ecdsa.PrivateKey) ([]byte, error) {
	digest := sha256.Sum256(PAE(PayloadType, payload))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("sign DSSE envelope: %w", err)
	}
	id, err := DSSEKeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Envelope{
		Payload:     base64.StdEncoding.EncodeToString(payload),
		PayloadType: PayloadType,
		Signatures:  []EnvelopeSignature{{KeyID: id, Sig: base64.StdEncoding.EncodeToString(sig)}},
	})
}

// OpenRuntimePolicy reads an uploaded runtime policy as Keylime's verifier and tenant do
// (verify_runtime_policy, then the schema): a DSSE envelope is verified with key when key is given
// or requireSignature is set (no key → ErrNoKey), else only unwrapped; a plain policy is refused
// with ErrNotSigned when requireSignature is set or a key was given. The payload is then decoded with
// DecodeRuntimePolicy.
func OpenRuntimePolicy(data, key []byte, requireSignature bool) (*RuntimePolicy, error) {
	verify := requireSignature || len(key) > 0
	if verify && len(key) == 0 {
		return nil, ErrNoKey
	}
	if !IsEnvelope(data) {
		if verify {
			return nil, ErrNotSigned
		}
		return DecodeRuntimePolicy(data)
	}
	var payload []byte
	var err error
	if verify {
		payload, err = VerifyEnvelope(data, key)
	} else {
		payload, err = UnwrapEnvelope(data)
	}
	if err != nil {
		return nil, err
	}
	return DecodeRuntimePolicy(payload)
}
