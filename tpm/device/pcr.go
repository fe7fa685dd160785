package device

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

const (
	// maxPCR is the highest PCR index accepted (PC Client TPMs have 24 PCRs, 0-23).
	maxPCR = 23
	// pcrRetries bounds how often a read or quote is repeated when PCRs change underneath it.
	pcrRetries = 10
)

var (
	// ErrPCRUnavailable means the TPM did not return a requested PCR: the bank is not active or
	// the PCR does not exist.
	ErrPCRUnavailable = errors.New("PCR not available")
	// ErrPCRsChanging means PCRs kept changing (other processes extending them) while a consistent
	// read or quote was attempted.
	ErrPCRsChanging = errors.New("PCRs changed during the read")
)

// Quote is a TPM2_Quote and the PCR values it covers.
type Quote struct {
	// Attest is the signed TPMS_ATTEST structure, without its TPM2B size prefix.
	Attest []byte
	// Signature is the marshalled TPMT_SIGNATURE over Attest.
	Signature []byte
	// Bank is the PCR bank quoted.
	Bank tpm2.TPMAlgID
	// PCRs maps each quoted PCR to its value; their digest equals the pcrDigest inside Attest.
	PCRs map[int][]byte
}

// selection builds a TPML_PCR_SELECTION for pcrs in bank after checking the indexes.
func selection(bank tpm2.TPMAlgID, pcrs []int) (tpm2.TPMLPCRSelection, error) {
	if len(pcrs) == 0 {
		return tpm2.TPMLPCRSelection{}, errors.New("no PCRs selected")
	}
	if _, err := bank.Hash(); err != nil {
		return tpm2.TPMLPCRSelection{}, fmt.Errorf("PCR bank 0x%x: %w", uint16(bank), err)
	}
	idx := make([]uint, len(pcrs))
	for i, p := range pcrs {
		if p < 0 || p > maxPCR {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("PCR %d out of range 0-%d", p, maxPCR)
		}
		idx[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: bank, PCRSelect: tpm2.PCClientCompatible.PCRs(idx...)},
	}}, nil
}

// selected lists the PCR indexes selected for bank in sel, in ascending order (the order in
// which the TPM returns and digests their values).
func selected(sel tpm2.TPMLPCRSelection, bank tpm2.TPMAlgID) []int {
	var out []int
	for _, s := range sel.PCRSelections {
		if s.Hash != bank {
			continue
		}
		for i, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) != 0 {
					out = append(out, i*8+bit)
				}
			}
		}
	}
	return out
}

// PCRRead returns the values of pcrs in bank, read consistently: when the PCR update counter
// changes between the TPM2_PCR_Read calls (at most 8 PCRs each), the read starts over.
func (t *TPM) PCRRead(bank tpm2.TPMAlgID, pcrs []int) (map[int][]byte, error) {
	tpm, err := t.lock()
	if err != nil {
		return nil, err
	}
	defer t.unlock()
	vals, _, err := pcrRead(tpm, bank, pcrs)
	return vals, err
}

// pcrRead reads pcrs in bank and returns the values and the PCR update counter.
func pcrRead(tpm transport.TPM, bank tpm2.TPMAlgID, pcrs []int) (map[int][]byte, uint32, error) {
	if _, err := selection(bank, pcrs); err != nil {
		return nil, 0, err
	}
	want := slices.Compact(slices.Sorted(slices.Values(pcrs)))
	for range pcrRetries {
		vals := map[int][]byte{}
		var counter uint32
		consistent := true
		for first := true; len(vals) < len(want); first = false {
			var rest []int
			for _, p := range want {
				if _, ok := vals[p]; !ok {
					rest = append(rest, p)
				}
			}
			sel, _ := selection(bank, rest)
			r, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(tpm)
			if err != nil {
				return nil, 0, fmt.Errorf("TPM2_PCR_Read: %w", err)
			}
			got := selected(r.PCRSelectionOut, bank)
			if len(got) == 0 {
				return nil, 0, fmt.Errorf("%w: PCRs %v of bank 0x%x", ErrPCRUnavailable, rest, uint16(bank))
			}
			if len(got) != len(r.PCRValues.Digests) {
				return nil, 0, fmt.Errorf("TPM2_PCR_Read: %d PCRs selected but %d values", len(got), len(r.PCRValues.Digests))
			}
			if !first && r.PCRUpdateCounter != counter {
				consistent = false
				break
			}
			counter = r.PCRUpdateCounter
			for i, p := range got {
				if !slices.Contains(rest, p) {
					return nil, 0, fmt.Errorf("TPM2_PCR_Read: returned PCR %d, not asked for", p)
				}
				vals[p] = r.PCRValues.Digests[i].Buffer
			}
		}
		if consistent {
			return vals, counter, nil
		}
	}
	return nil, 0, ErrPCRsChanging
}

// PCRExtend extends digest into pcr of bank; digest must have the bank's hash size.
func (t *TPM) PCRExtend(pcr int, bank tpm2.TPMAlgID, digest []byte) error {
	if _, err := selection(bank, []int{pcr}); err != nil {
		return err
	}
	h, _ := bank.Hash()
	if len(digest) != h.Size() {
		return fmt.Errorf("PCR extend: %d-byte digest for a %d-byte bank", len(digest), h.Size())
	}
	tpm, err := t.lock()
	if err != nil {
		return err
	}
	defer t.unlock()
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: bank, Digest: digest}}},
	}.Execute(tpm)
	if err != nil {
		return fmt.Errorf("TPM2_PCR_Extend %d: %w", pcr, err)
	}
	return nil
}

// PCRReset resets pcr to zeros in every bank. At locality 0 only PCR 16 (debug) and 23
// (application) are resettable.
func (t *TPM) PCRReset(pcr int) error {
	if pcr < 0 || pcr > maxPCR {
		return fmt.Errorf("PCR %d out of range 0-%d", pcr, maxPCR)
	}
	tpm, err := t.lock()
	if err != nil {
		return err
	}
	defer t.unlock()
	_, err = tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)}}.Execute(tpm)
	if err != nil {
		return fmt.Errorf("TPM2_PCR_Reset %d: %w", pcr, err)
	}
	return nil
}

// resolve substitutes, one PCR at a time, each proposed value (latest first) into vals until digest
// matches want; vals is left unchanged when none does.
func resolve(vals map[int][]byte, proposed map[int][][]byte, digest func() []byte, want []byte) bool {
	for pcr, list := range proposed {
		orig, ok := vals[pcr]
		if !ok {
			continue
		}
		for i := len(list) - 1; i >= 0; i-- {
			vals[pcr] = list[i]
			if bytes.Equal(digest(), want) {
				return true
			}
		}
		vals[pcr] = orig
	}
	return false
}

// Quote signs pcrs of bank with ak over nonce (the qualifying data, at most 64 bytes) and reads
// those PCRs right after, under the same lock. It checks that the values read hash to the pcrDigest
// in the quote and repeats quote and read when PCRs changed in between (another process extending).
func (t *TPM) Quote(ak *AK, nonce []byte, bank tpm2.TPMAlgID, pcrs []int) (*Quote, error) {
	return t.QuoteResolving(ak, nonce, bank, pcrs, nil)
}

// Candidates proposes values a PCR may have had when it was quoted, for a PCR that some other party
// (the kernel's IMA) keeps extending: e.g. every running value of PCR 10 replayed from the IMA log.
type Candidates func(bank tpm2.TPMAlgID) map[int][][]byte

// QuoteResolving is Quote for a platform where PCRs keep changing: when the values read after the
// quote do not hash to its digest, it tries, one PCR at a time, the values candidates proposes (read
// after the quote, so a log holds the quoted state) before quoting again.
func (t *TPM) QuoteResolving(ak *AK, nonce []byte, bank tpm2.TPMAlgID, pcrs []int, candidates Candidates) (*Quote, error) {
	if ak == nil {
		return nil, errors.New("quote: no AK")
	}
	sel, err := selection(bank, pcrs)
	if err != nil {
		return nil, err
	}
	digestAlg, err := akSigHash(&ak.Public)
	if err != nil {
		return nil, err
	}
	tpm, err := t.lock()
	if err != nil {
		return nil, err
	}
	defer t.unlock()
	for range pcrRetries {
		q, err := tpm2.Quote{
			SignHandle:     ak.handle(),
			QualifyingData: tpm2.TPM2BData{Buffer: nonce},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      sel,
		}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("TPM2_Quote: %w", err)
		}
		attest, err := q.Quoted.Contents()
		if err != nil {
			return nil, fmt.Errorf("quote: %w", err)
		}
		info, err := attest.Attested.Quote()
		if err != nil {
			return nil, fmt.Errorf("quote: %w", err)
		}
		quoted := selected(info.PCRSelect, bank)
		if !slices.Equal(quoted, selected(sel, bank)) {
			return nil, fmt.Errorf("quote covers PCRs %v, asked for %v", quoted, selected(sel, bank))
		}
		vals, _, err := pcrRead(tpm, bank, quoted)
		if err != nil {
			return nil, err
		}
		digest := func() []byte {
			h := digestAlg.New()
			for _, p := range quoted {
				h.Write(vals[p])
			}
			return h.Sum(nil)
		}
		if !bytes.Equal(digest(), info.PCRDigest.Buffer) {
			// PCRs changed between quote and read: try the values they may have had.
			if candidates == nil || !resolve(vals, candidates(bank), digest, info.PCRDigest.Buffer) {
				continue
			}
		}
		return &Quote{
			Attest:    q.Quoted.Bytes(),
			Signature: tpm2.Marshal(q.Signature),
			Bank:      bank,
			PCRs:      vals,
		}, nil
	}
	return nil, ErrPCRsChanging
}
