package device

import (
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

var (
	// ErrEKMismatch means no key the TPM holds or derives matches the public key in its EK certificate.
	ErrEKMismatch = errors.New("EK does not match its certificate")
	// errNotFound marks an absent NV index or persistent handle.
	errNotFound = errors.New("not found")
)

// maxNVChunk bounds one TPM2_NV_Read (TPM_PT_NV_BUFFER_MAX is at least this on PC TPMs).
const maxNVChunk = 1024

// EK is an endorsement key: persistent when the platform provisioned one that matches the
// certificate, else created from its TCG template (and flushed on Close).
type EK struct {
	// Alg is the requested key type.
	Alg KeyAlg
	// Template is the TCG EK Credential Profile template the key belongs to: "L-1" (RSA-2048),
	// "L-2" (P-256), "H-1", "H-2" or "H-3" (P-384).
	Template string
	// Handle is the persistent handle (0x81xxxxxx) or the transient one of a created EK.
	Handle tpm2.TPMHandle
	// Persistent tells whether Handle is a persistent handle.
	Persistent bool
	// Name is the TPM Name (nameAlg || digest of the public area).
	Name []byte
	// Public is the public area (TPMT_PUBLIC).
	Public tpm2.TPMTPublic
	// PublicBytes is the marshalled TPM2B_PUBLIC: what Keylime sends base64-encoded as ek_tpm.
	PublicBytes []byte
	// Cert is the DER EK certificate read from NV (trailing padding removed), or nil when the TPM
	// has none.
	Cert []byte
	// CertIndex is the NV index Cert was read from, 0 when Cert is nil.
	CertIndex tpm2.TPMHandle

	auth ekAuthKind
}

// CertPEM returns the EK certificate PEM-encoded, or nil when there is none.
func (e *EK) CertPEM() []byte {
	if e.Cert == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.Cert})
}

// PublicKey returns the EK public key as an *rsa.PublicKey or *ecdsa.PublicKey.
func (e *EK) PublicKey() (crypto.PublicKey, error) { return tpm2.Pub(e.Public) }

// authHandle returns the EK as a handle authorised for its USER role.
func (e *EK) authHandle() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: e.Handle, Name: tpm2.TPM2BName{Buffer: e.Name}, Auth: ekSession(e.auth, e.Public.NameAlg)}
}

// EK returns the endorsement key of type alg and its certificate. It looks for the certificate at
// the TCG NV indexes of alg (RSA: 0x01c00002, then 0x01c00012; ECC: P-256 0x01c0000a and
// 0x01c00014, then P-384 0x01c00016), uses a persistent key whose public key equals the
// certificate's (0x81010001, 0x81010002, 0x81010016 …), and otherwise creates the EK from the
// template that belongs to that index and checks it against the certificate. A TPM without an EK
// certificate is not an error: Cert is then nil and the low-range template (or a persistent key made
// from it) is used. The result is cached; repeated calls return the same *EK.
func (t *TPM) EK(alg KeyAlg) (*EK, error) {
	tpm, err := t.lock()
	if err != nil {
		return nil, err
	}
	defer t.unlock()
	if ek := t.eks[alg]; ek != nil {
		return ek, nil
	}
	if alg != RSA && alg != ECC {
		return nil, fmt.Errorf("EK: unsupported algorithm %v", alg)
	}
	var fallback *ekTemplate
	for i := range ekTemplates {
		tmpl := &ekTemplates[i]
		if tmpl.alg != alg {
			continue
		}
		if fallback == nil {
			fallback = tmpl
		}
		raw, err := readNV(tpm, tmpl.certIndex)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read EK certificate: %w", err)
		}
		cert, err := trimDER(raw)
		if err != nil {
			return nil, fmt.Errorf("EK certificate at NV 0x%08x: %w", uint32(tmpl.certIndex), err)
		}
		certKey, err := certPublicKey(cert)
		if err != nil {
			return nil, fmt.Errorf("EK certificate at NV 0x%08x: %w", uint32(tmpl.certIndex), err)
		}
		ek, err := t.ekFor(tpm, tmpl, certKey)
		if err != nil {
			return nil, err
		}
		ek.Cert, ek.CertIndex = cert, tmpl.certIndex
		t.eks[alg] = ek
		return ek, nil
	}
	ek, err := t.ekFor(tpm, fallback, nil)
	if err != nil {
		return nil, err
	}
	t.eks[alg] = ek
	return ek, nil
}

// ekFor finds or creates the EK of tmpl. With a certificate key it accepts only that key; without,
// it accepts a persistent key made from tmpl.
func (t *TPM) ekFor(tpm transport.TPM, tmpl *ekTemplate, certKey crypto.PublicKey) (*EK, error) {
	for _, h := range tmpl.handles {
		rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(tpm)
		if errors.Is(err, tpm2.TPMRCHandle) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read persistent key 0x%08x: %w", uint32(h), err)
		}
		pub, err := rp.OutPublic.Contents()
		if err != nil {
			return nil, fmt.Errorf("persistent key 0x%08x: %w", uint32(h), err)
		}
		if certKey != nil {
			if !samePublicKey(pub, certKey) {
				continue
			}
		} else if !sameTemplate(pub, &tmpl.public) {
			continue
		}
		return newEK(tmpl, h, true, pub, rp.Name.Buffer)
	}

	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl.public),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("create EK from template %s: %w", tmpl.name, err)
	}
	pub, err := cp.OutPublic.Contents()
	if err == nil && certKey != nil && !samePublicKey(pub, certKey) {
		err = fmt.Errorf("%w: template %s gives another key than the certificate at NV 0x%08x holds",
			ErrEKMismatch, tmpl.name, uint32(tmpl.certIndex))
	}
	var ek *EK
	if err == nil {
		ek, err = newEK(tmpl, cp.ObjectHandle, false, pub, cp.Name.Buffer)
	}
	if err != nil {
		_, _ = tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(tpm)
		return nil, err
	}
	t.transient[cp.ObjectHandle] = true
	return ek, nil
}

func newEK(tmpl *ekTemplate, h tpm2.TPMHandle, persistent bool, pub *tpm2.TPMTPublic, name []byte) (*EK, error) {
	auth, err := ekAuthFor(pub)
	if err != nil {
		return nil, fmt.Errorf("EK 0x%08x: %w", uint32(h), err)
	}
	return &EK{
		Alg:         tmpl.alg,
		Template:    tmpl.name,
		Handle:      h,
		Persistent:  persistent,
		Name:        append([]byte(nil), name...),
		Public:      *pub,
		PublicBytes: tpm2.Marshal(tpm2.New2B(*pub)),
		auth:        auth,
	}, nil
}

// samePublicKey reports whether the TPM public area holds the key k.
func samePublicKey(pub *tpm2.TPMTPublic, k crypto.PublicKey) bool {
	tk, err := tpm2.Pub(*pub)
	if err != nil {
		return false
	}
	eq, ok := tk.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(k)
}

// readNV reads a whole NV index, in chunks of at most maxNVChunk bytes. It returns errNotFound when
// the index is not defined.
func readNV(tpm transport.TPM, index tpm2.TPMHandle) ([]byte, error) {
	rp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(tpm)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, fmt.Errorf("NV 0x%08x: %w", uint32(index), errNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("NV 0x%08x: %w", uint32(index), err)
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("NV 0x%08x: %w", uint32(index), err)
	}
	var auth tpm2.AuthHandle
	switch a := pub.Attributes; {
	case a.AuthRead:
		auth = tpm2.AuthHandle{Handle: index, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)}
	case a.OwnerRead:
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	case a.PPRead:
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)}
	default:
		return nil, fmt.Errorf("NV 0x%08x: not readable without a policy", uint32(index))
	}
	chunk := uint16(maxNVChunk)
	if m, err := property(tpm, tpm2.TPMPTNVBufferMax); err == nil && m > 0 && m < maxNVChunk {
		chunk = uint16(m)
	}
	out := make([]byte, 0, pub.DataSize)
	for off := uint16(0); off < pub.DataSize; {
		n := min(pub.DataSize-off, chunk)
		r, err := tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: rp.NVName},
			Size:       n,
			Offset:     off,
		}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("NV 0x%08x at %d: %w", uint32(index), off, err)
		}
		if len(r.Data.Buffer) != int(n) {
			return nil, fmt.Errorf("NV 0x%08x at %d: read %d bytes, asked for %d", uint32(index), off, len(r.Data.Buffer), n)
		}
		out = append(out, r.Data.Buffer...)
		off += n
	}
	return out, nil
}
