package tpm

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// ErrBadCredential means bytes are not a well-formed credential blob.
var ErrBadCredential = errors.New("invalid credential blob")

// Credential blob layout: the tpm2-tools tpm2_makecredential output file, which
// Keylime sends base64-encoded as the registrar's "blob".
const (
	credentialMagic   uint32 = 0xBADCC0DE
	credentialVersion uint32 = 1
	// maxIDObject is sizeof(TPMS_ID_OBJECT): two TPM2B_DIGESTs of at most 64 bytes.
	maxIDObject = 2*2 + 2*64
	// maxEncSecret is sizeof(TPMU_ENCRYPTED_SECRET): an RSA-4096 ciphertext.
	maxEncSecret = 512
)

// ChallengeLen is the length of a registration challenge (Keylime's random_password(32)).
const ChallengeLen = 32

const challengeAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// NewChallenge returns ChallengeLen characters drawn uniformly from [A-Za-z0-9],
// reading randomness from rand (use crypto/rand.Reader). It rejects bytes >= 248
// so that every character is equally likely.
func NewChallenge(rand io.Reader) ([]byte, error) {
	if rand == nil {
		return nil, errors.New("new challenge: no random source")
	}
	const limit = 256 - 256%len(challengeAlphabet) // 248
	out := make([]byte, 0, ChallengeLen)
	buf := make([]byte, ChallengeLen+ChallengeLen/4)
	for len(out) < ChallengeLen {
		if _, err := io.ReadFull(rand, buf); err != nil {
			return nil, fmt.Errorf("read random: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < ChallengeLen {
				out = append(out, challengeAlphabet[int(b)%len(challengeAlphabet)])
			}
		}
	}
	return out, nil
}

// MakeCredential performs TPM2_MakeCredential in software: it protects secret so
// that only the TPM holding ek, with an object of Name akName loaded, can recover it
// with TPM2_ActivateCredential. RSA EKs use OAEP with label "IDENTITY", ECC EKs
// (P-256, P-384, P-521) use ECDH and KDFe. The result is the tpm2-tools credential
// file Keylime uses:
//
//	BE32 0xBADCC0DE | BE32 1 | BE16 len | idObject | BE16 len | encSecret
//
// secret must be 1 to (digest size of the EK nameAlg) bytes, the TPM's own limit.
// ek should have passed CheckEK.
func MakeCredential(rand io.Reader, ek *Public, akName []byte, secret []byte) ([]byte, error) {
	if rand == nil || ek == nil {
		return nil, errors.New("make credential: no random source or no EK")
	}
	if err := checkName(akName); err != nil {
		return nil, fmt.Errorf("make credential: AK name: %w", err)
	}
	h, err := nameHash(ek.Public.NameAlg)
	if err != nil {
		return nil, fmt.Errorf("make credential: %w", err)
	}
	if len(secret) == 0 || len(secret) > h.Size() {
		return nil, fmt.Errorf("make credential: secret is %d bytes, want 1 to %d", len(secret), h.Size())
	}
	key, err := tpm2.ImportEncapsulationKey(&ek.Public)
	if err != nil {
		return nil, fmt.Errorf("make credential: import EK: %w", err)
	}
	// go-tpm reads the RSA seed with a single Read; make every Read a full one.
	idObject, encSecret, err := tpm2.CreateCredential(fullReader{rand}, key, akName, secret)
	if err != nil {
		return nil, fmt.Errorf("make credential: %w", err)
	}
	return marshalCredentialBlob(idObject, encSecret)
}

func marshalCredentialBlob(idObject, encSecret []byte) ([]byte, error) {
	if len(idObject) == 0 || len(idObject) > maxIDObject || len(encSecret) == 0 || len(encSecret) > maxEncSecret {
		return nil, fmt.Errorf("%w: idObject %d bytes, encSecret %d bytes", ErrBadCredential, len(idObject), len(encSecret))
	}
	blob := make([]byte, 0, 12+len(idObject)+len(encSecret))
	blob = binary.BigEndian.AppendUint32(blob, credentialMagic)
	blob = binary.BigEndian.AppendUint32(blob, credentialVersion)
	blob = binary.BigEndian.AppendUint16(blob, uint16(len(idObject)))
	blob = append(blob, idObject...)
	blob = binary.BigEndian.AppendUint16(blob, uint16(len(encSecret)))
	blob = append(blob, encSecret...)
	return blob, nil
}

// ParseCredentialBlob splits a tpm2-tools credential file into the TPM2B_ID_OBJECT
// and TPM2B_ENCRYPTED_SECRET contents (without their size fields). It checks the
// magic, the version (1), that both parts are non-empty and within the TPM's size
// limits, and that no bytes follow. The returned slices alias blob.
func ParseCredentialBlob(blob []byte) (idObject, encSecret []byte, err error) {
	if len(blob) < 12 {
		return nil, nil, fmt.Errorf("%w: %d bytes, too short", ErrBadCredential, len(blob))
	}
	if m := binary.BigEndian.Uint32(blob); m != credentialMagic {
		return nil, nil, fmt.Errorf("%w: magic 0x%08x, want 0x%08x", ErrBadCredential, m, credentialMagic)
	}
	if v := binary.BigEndian.Uint32(blob[4:]); v != credentialVersion {
		return nil, nil, fmt.Errorf("%w: version %d, want %d", ErrBadCredential, v, credentialVersion)
	}
	rest := blob[8:]
	idObject, rest, err = read2B(rest, "idObject", maxIDObject)
	if err != nil {
		return nil, nil, err
	}
	encSecret, rest, err = read2B(rest, "encSecret", maxEncSecret)
	if err != nil {
		return nil, nil, err
	}
	if len(rest) != 0 {
		return nil, nil, fmt.Errorf("%w: %d trailing bytes", ErrBadCredential, len(rest))
	}
	return idObject, encSecret, nil
}

func read2B(b []byte, what string, max int) (val, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, fmt.Errorf("%w: %s size missing", ErrBadCredential, what)
	}
	n := int(binary.BigEndian.Uint16(b))
	if n == 0 || n > max {
		return nil, nil, fmt.Errorf("%w: %s is %d bytes, want 1 to %d", ErrBadCredential, what, n, max)
	}
	if len(b)-2 < n {
		return nil, nil, fmt.Errorf("%w: %s is %d bytes but only %d remain", ErrBadCredential, what, n, len(b)-2)
	}
	return b[2 : 2+n], b[2+n:], nil
}

// checkName checks that name is a TPM object Name: u16 hash alg || digest.
func checkName(name []byte) error {
	if len(name) < 2 {
		return fmt.Errorf("%d bytes, too short", len(name))
	}
	h, err := nameHash(tpm2.TPMIAlgHash(binary.BigEndian.Uint16(name)))
	if err != nil {
		return err
	}
	if len(name) != 2+h.Size() {
		return fmt.Errorf("%d bytes, want %d", len(name), 2+h.Size())
	}
	return nil
}

// AuthTag computes the auth_tag an agent sends to activate its registration:
// lowercase hex HMAC-SHA384 keyed with the standard base64 text of the decrypted
// challenge (not the raw bytes) over the agent ID, exactly as Keylime's
// crypto.do_hmac(base64(challenge), agent_id).
func AuthTag(secret []byte, agentID string) string {
	mac := hmac.New(sha512.New384, []byte(base64.StdEncoding.EncodeToString(secret)))
	mac.Write([]byte(agentID))
	return hex.EncodeToString(mac.Sum(nil))
}

// CheckAuthTag reports whether tag is AuthTag(secret, agentID), comparing in
// constant time. Like Keylime it is case-sensitive: only lowercase hex matches.
func CheckAuthTag(secret []byte, agentID, tag string) bool {
	return hmac.Equal([]byte(AuthTag(secret, agentID)), []byte(tag))
}

// fullReader turns every Read into an io.ReadFull.
type fullReader struct{ r io.Reader }

func (f fullReader) Read(p []byte) (int, error) { return io.ReadFull(f.r, p) }
