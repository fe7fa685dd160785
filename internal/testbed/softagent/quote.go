package softagent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/api"
)

// Tamper is a set of faults a real TPM or agent cannot produce, for attack tests. The zero value is
// honest behaviour. Install it with TPM.SetTamper or Agent.SetTamper; it applies to the quotes and
// requests that follow, and may be changed at any time from any goroutine.
type Tamper struct {
	// Clock, when set, is reported in quotes instead of the TPM's clock (which goes on unchanged).
	Clock *ClockInfo
	// SignWith, when set, signs quotes instead of the AK: an *rsa.PrivateKey (RSASSA) or an
	// *ecdsa.PrivateKey (ECDSA), with the AK's scheme hash.
	SignWith crypto.Signer
	// Nonce, when not nil, is quoted instead of the nonce asked for (a replayed or stale quote).
	Nonce []byte
	// EditAttest changes the attestation before it is signed: a forgery signed with the AK, which a
	// TPM never produces (its restricted AK signs only what the TPM itself generated).
	EditAttest func(*tpm2.TPMSAttest)
	// CorruptPCRs flips a bit of the lowest reported PCR value after signing, so that the PCR blob no
	// longer matches the signed pcrDigest.
	CorruptPCRs bool
	// DataPCRData, when not nil, is what the agent binds into PCR 16 instead of its NK PEM (the quote
	// then binds another key than the one the agent reports). Agent only.
	DataPCRData []byte
	// Response edits every quote response before it is sent (lie about hash_alg, drop or replace the
	// pubkey, alter the IMA log, ...). Agent only.
	Response func(*api.QuoteResponse)
	// Delay holds every API answer for this long. Agent only.
	Delay time.Duration
	// FailStatus, when not 0, answers every API request with this HTTP status. Agent only.
	FailStatus int
}

// Quote is TPM2_Quote with the AK over nonce for pcrs of bank (tpm2.TPMAlgSHA1 or tpm2.TPMAlgSHA256):
// the marshalled TPMS_ATTEST (magic, TPM_ST_ATTEST_QUOTE, qualifiedSigner = the AK's qualified name,
// extraData = nonce, clockInfo, firmwareVersion, TPMS_QUOTE_INFO with the PCR selection and pcrDigest =
// H(selected PCR values in ascending order)), the marshalled TPMT_SIGNATURE over H(attest), and the values
// of the quoted PCRs. H is the AK's scheme hash, whatever the bank, as in a TPM. Successive quotes report
// strictly increasing Clock values. Faults installed with SetTamper apply.
//
// The attestation is go-tpm's tpm2.TPMSAttest (what Tamper.EditAttest edits, then tpm2.Marshal encodes);
// without EditAttest it is encoded by hand in one allocation, byte for byte what tpm2.Marshal and swtpm
// produce (quote_test.go, fidelity_test.go), because go-tpm's reflection costs hundreds of allocations.
func (t *TPM) Quote(nonce []byte, bank tpm2.TPMAlgID, pcrs []int) (attest, sig []byte, values map[int][]byte, err error) {
	if len(nonce) > MaxNonce {
		return nil, nil, nil, fmt.Errorf("softagent: quote: nonce of %d bytes, at most %d", len(nonce), MaxNonce)
	}
	if len(pcrs) == 0 {
		return nil, nil, nil, fmt.Errorf("%w: no PCRs selected", ErrBadPCR)
	}
	var mask uint32
	for _, p := range pcrs {
		if p < 0 || p >= NumPCRs {
			return nil, nil, nil, fmt.Errorf("%w: PCR %d", ErrBadPCR, p)
		}
		mask |= 1 << p
	}
	f := t.faults()
	if f.Nonce != nil {
		nonce = f.Nonce
	}

	h := t.hash.New()
	t.mu.Lock()
	size := 0
	switch bank {
	case tpm2.TPMAlgSHA1:
		size = len(t.sha1[0])
	case tpm2.TPMAlgSHA256:
		size = len(t.sha256[0])
	default:
		t.mu.Unlock()
		return nil, nil, nil, fmt.Errorf("%w: bank %#x", ErrBadPCR, uint16(bank))
	}
	values = make(map[int][]byte, len(pcrs))
	store := make([]byte, 0, len(pcrs)*size) // one allocation for all values
	for p := range NumPCRs {
		if mask&(1<<p) == 0 {
			continue
		}
		v, _ := t.pcr(bank, p)
		store = append(store, v...)
		values[p] = store[len(store)-size : len(store) : len(store)]
		h.Write(v)
	}
	q := quoteFields{qname: t.qname, nonce: nonce, clock: t.clockLocked(), firmware: t.firmware, bank: bank, mask: mask}
	if q.clock.Clock <= t.lastClock {
		// A real quote takes more than a millisecond: the TPM never reports one Clock twice.
		q.clock.Clock = t.lastClock + 1
	}
	t.lastClock = q.clock.Clock
	t.mu.Unlock()
	if f.Clock != nil {
		q.clock = *f.Clock
	}
	var digestBuf [64]byte
	q.digest = h.Sum(digestBuf[:0])

	if f.EditAttest != nil {
		att := q.attest()
		f.EditAttest(&att)
		attest = tpm2.Marshal(att)
	} else {
		attest = q.marshal()
	}
	signer := t.key
	if f.SignWith != nil {
		signer = f.SignWith
	}
	if sig, err = t.sign(signer, attest); err != nil {
		return nil, nil, nil, err
	}
	if f.CorruptPCRs {
		for p := range NumPCRs {
			if v, ok := values[p]; ok {
				v[0] ^= 1
				break
			}
		}
	}
	return attest, sig, values, nil
}

// sign returns the marshalled TPMT_SIGNATURE of H(data) by key, with the AK's scheme hash.
func (t *TPM) sign(key crypto.Signer, data []byte) ([]byte, error) {
	h := t.hash.New()
	h.Write(data)
	var sumBuf [64]byte
	sum := h.Sum(sumBuf[:0])
	switch k := key.(type) {
	case *rsa.PrivateKey:
		s, err := rsa.SignPKCS1v15(nil, k, t.hash, sum)
		if err != nil {
			return nil, fmt.Errorf("softagent: sign: %w", err)
		}
		return marshalSignature(tpm2.TPMAlgRSASSA, t.hashAlg, s), nil
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, sum)
		if err != nil {
			return nil, fmt.Errorf("softagent: sign: %w", err)
		}
		// The TPM pads r and s to the curve size.
		size := (k.Curve.Params().BitSize + 7) / 8
		rs := make([]byte, 2*size)
		return marshalSignature(tpm2.TPMAlgECDSA, t.hashAlg, r.FillBytes(rs[:size]), s.FillBytes(rs[size:])), nil
	}
	return nil, fmt.Errorf("%w: cannot sign with %T", ErrBadKey, key)
}

// marshalSignature encodes a TPMT_SIGNATURE: sigAlg, hashAlg, then each part as a TPM2B (RSASSA: the
// signature; ECDSA: r and s). It equals tpm2.Marshal of the go-tpm structure (see quote_test.go).
func marshalSignature(alg, hash tpm2.TPMAlgID, parts ...[]byte) []byte {
	n := 4
	for _, p := range parts {
		n += 2 + len(p)
	}
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint16(b, uint16(alg))
	b = binary.BigEndian.AppendUint16(b, uint16(hash))
	for _, p := range parts {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

// quoteFields are the variable parts of a quote's TPMS_ATTEST.
type quoteFields struct {
	qname, nonce []byte
	clock        ClockInfo
	firmware     uint64
	bank         tpm2.TPMAlgID
	mask         uint32
	digest       []byte
}

// attest returns the attestation as go-tpm's structure.
func (q *quoteFields) attest() tpm2.TPMSAttest {
	return tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: q.qname},
		ExtraData:       tpm2.TPM2BData{Buffer: q.nonce},
		ClockInfo: tpm2.TPMSClockInfo{
			Clock: q.clock.Clock, ResetCount: q.clock.ResetCount, RestartCount: q.clock.RestartCount,
			Safe: tpm2.TPMIYesNo(q.clock.Safe),
		},
		FirmwareVersion: q.firmware,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
				Hash:      q.bank,
				PCRSelect: []byte{byte(q.mask), byte(q.mask >> 8), byte(q.mask >> 16)},
			}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: q.digest},
		}),
	}
}

// marshal encodes the attestation in one allocation; it equals tpm2.Marshal(q.attest()) (checked in
// quote_test.go), which costs hundreds of allocations through reflection.
func (q *quoteFields) marshal() []byte {
	n := 4 + 2 + 2 + len(q.qname) + 2 + len(q.nonce) + 8 + 4 + 4 + 1 + 8 + 4 + 2 + 1 + 3 + 2 + len(q.digest)
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint32(b, uint32(tpm2.TPMGeneratedValue))
	b = binary.BigEndian.AppendUint16(b, uint16(tpm2.TPMSTAttestQuote))
	b = binary.BigEndian.AppendUint16(b, uint16(len(q.qname)))
	b = append(b, q.qname...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(q.nonce)))
	b = append(b, q.nonce...)
	b = binary.BigEndian.AppendUint64(b, q.clock.Clock)
	b = binary.BigEndian.AppendUint32(b, q.clock.ResetCount)
	b = binary.BigEndian.AppendUint32(b, q.clock.RestartCount)
	safe := byte(0)
	if q.clock.Safe {
		safe = 1
	}
	b = append(b, safe)
	b = binary.BigEndian.AppendUint64(b, q.firmware)
	b = binary.BigEndian.AppendUint32(b, 1) // one PCR selection
	b = binary.BigEndian.AppendUint16(b, uint16(q.bank))
	b = append(b, 3, byte(q.mask), byte(q.mask>>8), byte(q.mask>>16))
	b = binary.BigEndian.AppendUint16(b, uint16(len(q.digest)))
	return append(b, q.digest...)
}
