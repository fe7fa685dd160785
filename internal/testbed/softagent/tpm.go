package softagent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// KeyAlg selects the type of a generated AK.
type KeyAlg int

const (
	// RSA is an RSA-2048 RSASSA-SHA256 AK, Keylime's default.
	RSA KeyAlg = iota
	// ECC is a NIST P-256 ECDSA-SHA256 AK.
	ECC
)

// String returns "rsa" or "ecc".
func (a KeyAlg) String() string {
	if a == ECC {
		return "ecc"
	}
	return "rsa"
}

// NumPCRs is the number of PCRs per bank (a PC-client TPM).
const NumPCRs = 24

// MaxNonce is the longest qualifying data Quote accepts (Keylime's MAX_NONCE_SIZE).
const MaxNonce = 64

// DefaultFirmwareVersion is the firmwareVersion a new TPM reports (an arbitrary vendor value; see
// SetFirmwareVersion).
const DefaultFirmwareVersion uint64 = 0x2019102300163636

// akAttributes are the AK's TPMA_OBJECT: fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth |
// restricted | sign = 0x00050072, what tpm2_createak gives and tpm.CheckAK requires.
var akAttributes = tpm2.TPMAObject{
	FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
	Restricted: true, SignEncrypt: true,
}

// Errors of the TPM's commands.
var (
	// ErrBadPCR means a PCR index outside 0-23, an unsupported bank or a value of the wrong size.
	ErrBadPCR = errors.New("softagent: bad PCR request")
	// ErrBadKey means a key NewTPMWithKey cannot use as an AK.
	ErrBadKey = errors.New("softagent: unusable AK")
)

// ClockInfo is the TPM's TPMS_CLOCK_INFO.
type ClockInfo struct {
	// Clock is in milliseconds; it advances with real time.
	Clock uint64
	// ResetCount counts TPM resets (reboots), RestartCount restarts since the last reset.
	ResetCount, RestartCount uint32
	// Safe says no greater Clock value was reported before.
	Safe bool
}

// TPM is a software TPM with one AK. It is safe for concurrent use.
type TPM struct {
	key     crypto.Signer
	sigAlg  tpm2.TPMAlgID // RSASSA or ECDSA
	hashAlg tpm2.TPMAlgID // the AK scheme's hash: digests PCRs and attestations
	hash    crypto.Hash
	public  []byte // TPM2B_PUBLIC
	name    []byte
	qname   []byte

	mu        sync.Mutex
	sha1      [NumPCRs][sha1.Size]byte
	sha256    [NumPCRs][sha256.Size]byte
	clockBase uint64
	clockAt   time.Time
	lastClock uint64 // the last Clock quoted
	reset     uint32
	restart   uint32
	safe      bool
	firmware  uint64

	tamper atomic.Pointer[Tamper]
}

// NewTPM returns a TPM with a freshly generated AK: RSA-2048 RSASSA-SHA256 or P-256 ECDSA-SHA256.
// Generating an RSA key takes tens of milliseconds; fleets can share keys through NewTPMWithKey.
func NewTPM(alg KeyAlg) (*TPM, error) {
	var (
		key crypto.Signer
		err error
	)
	switch alg {
	case RSA:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case ECC:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("%w: key type %d", ErrBadKey, alg)
	}
	if err != nil {
		return nil, fmt.Errorf("softagent: generate AK: %w", err)
	}
	return NewTPMWithKey(key, crypto.SHA256)
}

// NewTPMWithKey returns a TPM whose AK is key: an *rsa.PrivateKey (2048, 3072 or 4096 bits; RSASSA) or an
// *ecdsa.PrivateKey (P-256, P-384 or P-521; ECDSA), with scheme hash h (SHA-1, SHA-256, SHA-384 or
// SHA-512). The scheme hash also digests the quoted PCRs, as in a real TPM, so quotes verify only for the
// bank of that hash; tpm.CheckAK refuses a SHA-1 scheme.
func NewTPMWithKey(key crypto.Signer, h crypto.Hash) (*TPM, error) {
	hashAlg, err := hashAlgOf(h)
	if err != nil {
		return nil, err
	}
	t := &TPM{key: key, hashAlg: hashAlg, hash: h, clockAt: time.Now(), safe: true, firmware: DefaultFirmwareVersion}
	var pub tpm2.TPMTPublic
	switch k := key.(type) {
	case *rsa.PrivateKey:
		bits := k.N.BitLen()
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return nil, fmt.Errorf("%w: RSA-%d", ErrBadKey, bits)
		}
		exp := uint32(0)
		if k.E != 65537 {
			exp = uint32(k.E)
		}
		t.sigAlg = tpm2.TPMAlgRSASSA
		pub = tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: akAttributes,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: hashAlg}),
				},
				KeyBits:  tpm2.TPMKeyBits(bits),
				Exponent: exp,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, bits/8))}),
		}
	case *ecdsa.PrivateKey:
		var curve tpm2.TPMECCCurve
		switch k.Curve {
		case elliptic.P256():
			curve = tpm2.TPMECCNistP256
		case elliptic.P384():
			curve = tpm2.TPMECCNistP384
		case elliptic.P521():
			curve = tpm2.TPMECCNistP521
		default:
			return nil, fmt.Errorf("%w: curve %s", ErrBadKey, k.Curve.Params().Name)
		}
		t.sigAlg = tpm2.TPMAlgECDSA
		point, err := k.PublicKey.Bytes() // 0x04 || X || Y, each coordinate padded to the curve size
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
		}
		x, y := point[1:1+len(point)/2], point[1+len(point)/2:]
		pub = tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: akAttributes,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: hashAlg}),
				},
				CurveID: curve,
				KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: x},
				Y: tpm2.TPM2BECCParameter{Buffer: y},
			}),
		}
	default:
		return nil, fmt.Errorf("%w: %T", ErrBadKey, key)
	}
	t.public = tpm2.Marshal(tpm2.New2B(pub))
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, fmt.Errorf("softagent: AK name: %w", err)
	}
	t.name = name.Buffer
	// The AK lives under an EK in the endorsement hierarchy; a random EK name stands in for the EK.
	ekName := make([]byte, 2+sha256.Size)
	binary.BigEndian.PutUint16(ekName, uint16(tpm2.TPMAlgSHA256))
	if _, err := rand.Read(ekName[2:]); err != nil {
		return nil, err
	}
	hierarchy := binary.BigEndian.AppendUint32(nil, uint32(tpm2.TPMRHEndorsement))
	t.qname = QualifiedName(QualifiedName(hierarchy, ekName), t.name)
	t.resetPCRs()
	return t, nil
}

// SetParentQualifiedName places the AK under a parent with the given qualified name (by default a random
// EK in the endorsement hierarchy); quotes' qualifiedSigner changes accordingly.
func (t *TPM) SetParentQualifiedName(qn []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.qname = QualifiedName(qn, t.name)
}

func hashAlgOf(h crypto.Hash) (tpm2.TPMAlgID, error) {
	switch h {
	case crypto.SHA1:
		return tpm2.TPMAlgSHA1, nil
	case crypto.SHA256:
		return tpm2.TPMAlgSHA256, nil
	case crypto.SHA384:
		return tpm2.TPMAlgSHA384, nil
	case crypto.SHA512:
		return tpm2.TPMAlgSHA512, nil
	}
	return 0, fmt.Errorf("%w: scheme hash %v", ErrBadKey, h)
}

// QualifiedName is the TPM's qualified name of an object with the given Name under a parent whose
// qualified name is parentQN: nameAlg || H_nameAlg(parentQN || name). The qualified name of a hierarchy
// is its 4-byte handle. A quote's qualifiedSigner is the AK's qualified name.
func QualifiedName(parentQN, name []byte) []byte {
	if len(name) < 2 {
		return nil
	}
	alg := tpm2.TPMAlgID(binary.BigEndian.Uint16(name))
	h, err := alg.Hash()
	if err != nil {
		return nil
	}
	d := h.New()
	d.Write(parentQN)
	d.Write(name)
	return d.Sum(append([]byte(nil), name[:2]...))
}

// AKPublic returns the AK's TPM2B_PUBLIC: what Keylime sends base64-encoded as aik_tpm / ak_tpm.
func (t *TPM) AKPublic() []byte { return append([]byte(nil), t.public...) }

// AKName returns the AK's TPM Name (nameAlg || SHA-256 of the public area).
func (t *TPM) AKName() []byte { return append([]byte(nil), t.name...) }

// AKHash returns the AK's scheme hash, which is the bank its quotes verify for.
func (t *TPM) AKHash() crypto.Hash { return t.hash }

// Signer returns the AK private key.
func (t *TPM) Signer() crypto.Signer { return t.key }

// SetTamper installs faults for the quotes that follow (the zero Tamper is honest behaviour).
func (t *TPM) SetTamper(f Tamper) { t.tamper.Store(&f) }

// Tamper returns the installed faults.
func (t *TPM) Tamper() Tamper {
	if f := t.tamper.Load(); f != nil {
		return *f
	}
	return Tamper{}
}

func (t *TPM) faults() *Tamper {
	if f := t.tamper.Load(); f != nil {
		return f
	}
	return &noTamper
}

var noTamper Tamper

// Clock returns the clock as the next quote would report it.
func (t *TPM) Clock() ClockInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.clockLocked()
}

func (t *TPM) clockLocked() ClockInfo {
	return ClockInfo{
		Clock:        t.clockBase + uint64(time.Since(t.clockAt).Milliseconds()),
		ResetCount:   t.reset,
		RestartCount: t.restart,
		Safe:         t.safe,
	}
}

// SetClock sets the clock, also backwards; it goes on advancing with real time from c.Clock.
func (t *TPM) SetClock(c ClockInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.clockBase, t.clockAt, t.lastClock = c.Clock, time.Now(), 0
	t.reset, t.restart, t.safe = c.ResetCount, c.RestartCount, c.Safe
}

// SetFirmwareVersion sets the firmwareVersion quotes report.
func (t *TPM) SetFirmwareVersion(v uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.firmware = v
}

// Reboot is a TPM reset: PCRs return to their power-on values, resetCount goes up by one and
// restartCount to zero; the clock keeps running.
func (t *TPM) Reboot() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resetPCRs()
	t.reset++
	t.restart = 0
}

// resetPCRs sets the power-on values: zeros, except PCRs 17-22 (locality-reset, all ones).
func (t *TPM) resetPCRs() {
	for p := range NumPCRs {
		v := byte(0)
		if p >= 17 && p <= 22 {
			v = 0xff
		}
		for i := range t.sha1[p] {
			t.sha1[p][i] = v
		}
		for i := range t.sha256[p] {
			t.sha256[p][i] = v
		}
	}
}

// pcr returns the storage of one PCR; the caller holds mu.
func (t *TPM) pcr(bank tpm2.TPMAlgID, p int) ([]byte, error) {
	if p < 0 || p >= NumPCRs {
		return nil, fmt.Errorf("%w: PCR %d", ErrBadPCR, p)
	}
	switch bank {
	case tpm2.TPMAlgSHA1:
		return t.sha1[p][:], nil
	case tpm2.TPMAlgSHA256:
		return t.sha256[p][:], nil
	}
	return nil, fmt.Errorf("%w: bank %#x", ErrBadPCR, uint16(bank))
}

// extendLocked sets pcr = H(pcr || digest) without allocating.
func extendLocked(pcr, digest []byte) {
	var buf [2 * sha256.Size]byte
	n := copy(buf[:], pcr)
	copy(buf[n:], digest)
	switch len(pcr) {
	case sha1.Size:
		s := sha1.Sum(buf[:2*sha1.Size])
		copy(pcr, s[:])
	case sha256.Size:
		s := sha256.Sum256(buf[:])
		copy(pcr, s[:])
	}
}

// Extend extends PCR p of bank with digest, which must have the bank's size.
func (t *TPM) Extend(p int, bank tpm2.TPMAlgID, digest []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, err := t.pcr(bank, p)
	if err != nil {
		return err
	}
	if len(digest) != len(v) {
		return fmt.Errorf("%w: %d-byte digest for a %d-byte PCR", ErrBadPCR, len(digest), len(v))
	}
	extendLocked(v, digest)
	return nil
}

// ExtendData measures data into PCR p of every bank: each bank is extended with its own hash of data, as
// the kernel does for an IMA entry's template data.
func (t *TPM) ExtendData(p int, data []byte) error {
	s1, s256 := sha1.Sum(data), sha256.Sum256(data)
	t.mu.Lock()
	defer t.mu.Unlock()
	if p < 0 || p >= NumPCRs {
		return fmt.Errorf("%w: PCR %d", ErrBadPCR, p)
	}
	extendLocked(t.sha1[p][:], s1[:])
	extendLocked(t.sha256[p][:], s256[:])
	return nil
}

// Reset sets PCR p to zeros in every bank (a real TPM allows this for PCRs 16 and 23 only).
func (t *TPM) Reset(p int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p < 0 || p >= NumPCRs {
		return fmt.Errorf("%w: PCR %d", ErrBadPCR, p)
	}
	clear(t.sha1[p][:])
	clear(t.sha256[p][:])
	return nil
}

// Set overwrites PCR p of bank with value, which must have the bank's size.
func (t *TPM) Set(p int, bank tpm2.TPMAlgID, value []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, err := t.pcr(bank, p)
	if err != nil {
		return err
	}
	if len(value) != len(v) {
		return fmt.Errorf("%w: %d-byte value for a %d-byte PCR", ErrBadPCR, len(value), len(v))
	}
	copy(v, value)
	return nil
}

// Read returns a copy of PCR p of bank.
func (t *TPM) Read(p int, bank tpm2.TPMAlgID) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, err := t.pcr(bank, p)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), v...), nil
}
