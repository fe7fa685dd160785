// Package device is the agent's access to its TPM 2.0: it opens the TPM (a Linux device such as
// /dev/tpmrm0, or swtpm on a unix socket), finds the endorsement key (EK) and its certificate,
// creates or reloads the attestation key (AK) under the EK the way Keylime's tpm2_createak does,
// answers registration challenges with TPM2_ActivateCredential, and reads, extends and quotes PCRs.
//
// Only the agent imports this package; checking what a TPM produced is the job of package tpm.
// A *TPM is safe for concurrent use: one mutex serialises every command sequence, which also keeps
// swtpm (one client connection, three object slots, no resource manager) usable from many
// goroutines.
package device

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// DefaultDevice is the TPM Open uses for an empty spec: the kernel's resource manager.
const DefaultDevice = "/dev/tpmrm0"

var (
	// ErrBadSpec means Open was given something that is neither a device path nor "swtpm:<socket>".
	ErrBadSpec = errors.New("unsupported TPM address")
	// ErrNotDevice means the path given to Open exists but is not a device file.
	ErrNotDevice = errors.New("not a device file")
	// ErrClosed is returned by every method of a TPM after Close.
	ErrClosed = errors.New("TPM is closed")
)

// KeyAlg selects the key type of an EK or AK. The zero value is RSA, Keylime's default.
type KeyAlg int

const (
	// RSA is an RSA-2048 key (EK: TCG template L-1 or H-1; AK: RSASSA-SHA256).
	RSA KeyAlg = iota
	// ECC is a NIST elliptic-curve key (EK: P-256 template L-2/H-2 or P-384 H-3, whichever the
	// TPM holds a certificate for; AK: P-256 ECDSA-SHA256).
	ECC
)

// String returns "rsa" or "ecc", the names Keylime's configuration uses.
func (a KeyAlg) String() string {
	switch a {
	case RSA:
		return "rsa"
	case ECC:
		return "ecc"
	}
	return fmt.Sprintf("KeyAlg(%d)", int(a))
}

// TPM is an open TPM. Keys it loads (the AK, an EK created from a template) stay loaded until Close.
type TPM struct {
	mu        sync.Mutex
	tpm       transport.TPMCloser // nil after Close
	spec      string
	eks       map[KeyAlg]*EK
	aks       map[string]*AK          // by hex Name
	transient map[tpm2.TPMHandle]bool // objects this TPM loaded, flushed on Close
	busy      atomic.Int64            // nanoseconds spent waiting for the TPM's answers
}

// Open opens the TPM named by spec: a device path such as "/dev/tpmrm0" (the default when spec is
// empty) or "swtpm:<unix socket path>" (also "swtpm:path=<path>", the tpm2-tss TCTI form) for
// swtpm's data socket. The socket connection is kept open and dialled again after a failure; swtpm
// serves one client at a time, so a second client waits until the first closes. Open then flushes
// transient objects and sessions leaked by earlier users, since swtpm and a raw /dev/tpm0 have no
// resource manager to do it. Commands the TPM answers with TPM_RC_RETRY, TPM_RC_TESTING or
// TPM_RC_YIELDED (swtpm answers RETRY to the first quote or activation after start) are resent.
func Open(spec string) (*TPM, error) {
	if spec == "" {
		spec = DefaultDevice
	}
	var (
		tr  transport.TPMCloser
		err error
	)
	switch {
	case strings.HasPrefix(spec, "swtpm:"):
		path := strings.TrimPrefix(strings.TrimPrefix(spec, "swtpm:"), "path=")
		if path == "" {
			return nil, fmt.Errorf("%w %q: swtpm: needs a socket path", ErrBadSpec, spec)
		}
		tr, err = dialSocket(path)
	case strings.HasPrefix(spec, "/"):
		tr, err = openDevice(spec)
	default:
		return nil, fmt.Errorf("%w %q: use a device path such as %s or swtpm:<socket>", ErrBadSpec, spec, DefaultDevice)
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	t := &TPM{
		spec:      spec,
		eks:       map[KeyAlg]*EK{},
		aks:       map[string]*AK{},
		transient: map[tpm2.TPMHandle]bool{},
	}
	t.tpm = retryTPM{tr, &t.busy}
	if err := t.flushLeaked(); err != nil {
		_ = tr.Close()
		return nil, fmt.Errorf("tpm %s: %w", spec, err)
	}
	return t, nil
}

// Busy is the time spent waiting for the TPM's answers since Open, resends included: what a caller's
// own time on top of it is can be told apart from the TPM's.
func (t *TPM) Busy() time.Duration { return time.Duration(t.busy.Load()) }

// String returns the spec the TPM was opened with.
func (t *TPM) String() string { return t.spec }

// Close flushes the objects this TPM loaded and closes the connection. Calling it again is a no-op.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil
	}
	var errs []error
	for h := range t.transient {
		if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t.tpm); err != nil {
			errs = append(errs, fmt.Errorf("flush 0x%08x: %w", uint32(h), err))
		}
	}
	errs = append(errs, t.tpm.Close())
	t.tpm = nil
	t.eks, t.aks, t.transient = nil, nil, nil
	return errors.Join(errs...)
}

// lock takes the command mutex and returns the transport, or ErrClosed.
func (t *TPM) lock() (transport.TPM, error) {
	t.mu.Lock()
	if t.tpm == nil {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	return t.tpm, nil
}

// unlock releases the command mutex. On a swtpm socket it also hangs up, so other clients (tpm2-tools,
// a test extending PCRs) can use the TPM between the agent's command sequences: swtpm serves one
// connection at a time, and loaded objects survive the reconnect.
func (t *TPM) unlock() {
	if r, ok := t.tpm.(interface{ release() }); ok {
		r.release()
	}
	t.mu.Unlock()
}

// flushLeaked flushes every transient object and session the TPM reports.
func (t *TPM) flushLeaked() error {
	for _, first := range []uint32{
		uint32(tpm2.TPMHTTransient) << 24,
		uint32(tpm2.TPMHTHMACSession) << 24,   // loaded sessions
		uint32(tpm2.TPMHTPolicySession) << 24, // saved sessions
	} {
		handles, err := listHandles(t.tpm, first)
		if err != nil {
			return fmt.Errorf("list handles 0x%08x: %w", first, err)
		}
		for _, h := range handles {
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t.tpm); err != nil {
				return fmt.Errorf("flush leaked handle 0x%08x: %w", uint32(h), err)
			}
		}
	}
	return nil
}

// listHandles returns the handles of the type whose range starts at first.
func listHandles(tpm transport.TPM, first uint32) ([]tpm2.TPMHandle, error) {
	var out []tpm2.TPMHandle
	next := first
	for {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: next, PropertyCount: 64}.Execute(tpm)
		if err != nil {
			return nil, err
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, err
		}
		// Loaded-session lists hold HMAC (0x02) and policy (0x03) handles alike: keep all of them.
		for _, h := range hs.Handle {
			out = append(out, h)
		}
		if !rsp.MoreData || len(hs.Handle) == 0 || uint32(hs.Handle[len(hs.Handle)-1]) < next {
			return out, nil
		}
		next = uint32(hs.Handle[len(hs.Handle)-1]) + 1
	}
}

// property reads one TPM_PT property.
func property(tpm transport.TPM, pt tpm2.TPMPT) (uint32, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(pt), PropertyCount: 1}.Execute(tpm)
	if err != nil {
		return 0, err
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return 0, err
	}
	if len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != pt {
		return 0, fmt.Errorf("TPM does not report property 0x%x", uint32(pt))
	}
	return props.TPMProperty[0].Value, nil
}
