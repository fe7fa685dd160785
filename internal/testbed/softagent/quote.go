package softagent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
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

	values = make(map[int][]byte, len(pcrs))
	digest := t.hash.New()
	t.mu.Lock()
	if _, err := t.pcr(bank, 0); err != nil {
		t.mu.Unlock()
		return nil, nil, nil, err
	}
	for p := range NumPCRs {
		if mask&(1<<p) == 0 {
			continue
		}
		v, _ := t.pcr(bank, p)
		values[p] = append([]byte(nil), v...)
		digest.Write(v)
	}
	clock, firmware, qname := t.clockLocked(), t.firmware, t.qname
	if clock.Clock <= t.lastClock {
		// A real quote takes more than a millisecond: the TPM never reports one Clock twice.
		clock.Clock = t.lastClock + 1
	}
	t.lastClock = clock.Clock
	t.mu.Unlock()
	if f.Clock != nil {
		clock = *f.Clock
	}

	att := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: qname},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		ClockInfo: tpm2.TPMSClockInfo{
			Clock: clock.Clock, ResetCount: clock.ResetCount, RestartCount: clock.RestartCount,
			Safe: tpm2.TPMIYesNo(clock.Safe),
		},
		FirmwareVersion: firmware,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
				Hash:      bank,
				PCRSelect: []byte{byte(mask), byte(mask >> 8), byte(mask >> 16)},
			}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: digest.Sum(nil)},
		}),
	}
	if f.EditAttest != nil {
		f.EditAttest(&att)
	}
	attest = tpm2.Marshal(att)
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
	sum := h.Sum(nil)
	switch k := key.(type) {
	case *rsa.PrivateKey:
		s, err := rsa.SignPKCS1v15(nil, k, t.hash, sum)
		if err != nil {
			return nil, fmt.Errorf("softagent: sign: %w", err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgRSASSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA, &tpm2.TPMSSignatureRSA{
				Hash: t.hashAlg, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: s},
			}),
		}), nil
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, sum)
		if err != nil {
			return nil, fmt.Errorf("softagent: sign: %w", err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		return tpm2.Marshal(tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgECDSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
				Hash:       t.hashAlg,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, size))},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, size))},
			}),
		}), nil
	}
	return nil, fmt.Errorf("%w: cannot sign with %T", ErrBadKey, key)
}
