package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// The verifier checks thousands of quotes a second. go-tpm's reflection-based (un)marshalling costs as
// much as the signature check itself, so the two structures of a quote are decoded here by hand, strictly
// (every length checked, no trailing bytes); attest_test.go checks them against go-tpm.

// attestQuote is a decoded TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
type attestQuote struct {
	magic           uint32
	typ             uint16
	extraData       []byte
	clock           uint64
	resetCount      uint32
	restartCount    uint32
	safe            bool
	firmwareVersion uint64
	selections      []pcrSelection
	pcrDigest       []byte
}

type pcrSelection struct {
	hash tpm2.TPMAlgID
	sel  []byte
}

// signature is a decoded TPMT_SIGNATURE of scheme RSASSA, RSAPSS, ECDSA or another ECC scheme.
type signature struct {
	alg  tpm2.TPMAlgID
	hash tpm2.TPMAlgID
	rsa  []byte // RSASSA / RSAPSS
	r, s []byte // ECDSA and other ECC schemes
}

var errShort = errors.New("truncated structure")

type reader struct {
	b   []byte
	err error
}

func (r *reader) u8() uint8 {
	if r.err != nil || len(r.b) < 1 {
		r.err = errShort
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if r.err != nil || len(r.b) < 2 {
		r.err = errShort
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.err = errShort
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errShort
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = errShort
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// tpm2b reads a u16-sized buffer of at most max bytes.
func (r *reader) tpm2b(max int) []byte {
	n := int(r.u16())
	if r.err == nil && n > max {
		r.err = fmt.Errorf("buffer of %d bytes exceeds %d", n, max)
		return nil
	}
	return r.bytes(n)
}

func (r *reader) done() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return nil
}

// parseAttestQuote decodes a TPMS_ATTEST; any type other than a quote is refused.
func parseAttestQuote(b []byte) (*attestQuote, error) {
	r := reader{b: b}
	a := &attestQuote{}
	a.magic = r.u32()
	a.typ = r.u16()
	if r.err == nil && a.typ != uint16(tpm2.TPMSTAttestQuote) {
		return a, nil // the caller reports the wrong type
	}
	r.tpm2b(2 + 64) // qualifiedSigner: a TPM Name
	a.extraData = r.tpm2b(64)
	a.clock = r.u64()
	a.resetCount = r.u32()
	a.restartCount = r.u32()
	safe := r.u8()
	if r.err == nil && safe > 1 {
		return nil, fmt.Errorf("safe flag %d is not a TPMI_YES_NO", safe)
	}
	a.safe = safe == 1
	a.firmwareVersion = r.u64()
	count := r.u32()
	if r.err == nil && count > 16 {
		return nil, fmt.Errorf("%d PCR selections", count)
	}
	for i := uint32(0); i < count && r.err == nil; i++ {
		h := tpm2.TPMAlgID(r.u16())
		n := int(r.u8())
		if r.err == nil && n > 4 {
			return nil, fmt.Errorf("PCR select of %d bytes", n)
		}
		a.selections = append(a.selections, pcrSelection{hash: h, sel: r.bytes(n)})
	}
	a.pcrDigest = r.tpm2b(64)
	if err := r.done(); err != nil {
		return nil, err
	}
	return a, nil
}

// parseSignature decodes a TPMT_SIGNATURE.
func parseSignature(b []byte) (*signature, error) {
	r := reader{b: b}
	s := &signature{alg: tpm2.TPMAlgID(r.u16())}
	switch s.alg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		s.hash = tpm2.TPMAlgID(r.u16())
		s.rsa = r.tpm2b(512)
	case tpm2.TPMAlgECDSA, tpm2.TPMAlgECDAA, tpm2.TPMAlgSM2, tpm2.TPMAlgECSchnorr:
		s.hash = tpm2.TPMAlgID(r.u16())
		s.r = r.tpm2b(66)
		s.s = r.tpm2b(66)
	default:
		if r.err == nil {
			return nil, fmt.Errorf("unsupported signature scheme %s", algName(s.alg))
		}
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return s, nil
}
