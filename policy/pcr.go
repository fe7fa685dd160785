package policy

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Reserved PCRs, as Keylime reserves them.
const (
	// IMAPCR is extended by the kernel's IMA; the runtime policy judges it, never tpm_policy.
	IMAPCR = 10
	// DataPCR binds the quote to the agent's NK (reset and extended by the agent before each quote).
	DataPCR = 16
	// NumPCRs is the number of PCRs of a PC-client TPM.
	NumPCRs = 24
)

// MeasuredBootPCRs are the PCRs a measured-boot policy adds to the mask (Keylime's MEASUREDBOOT_PCRS).
var MeasuredBootPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15}

// TPMPolicy is Keylime's static PCR policy: for each PCR the values it may have, plus the mask of PCRs
// to quote. Values are lower-case hex of any bank; only values of the quoted bank's length can match.
type TPMPolicy struct {
	PCRs map[int][]string
	// Mask is the bit set of PCRs to quote (bit n = PCR n); it includes the policy's PCRs and whatever
	// the runtime and measured-boot policies need.
	Mask uint32
}

// ErrBadTPMPolicy wraps every tpm_policy parse error.
var ErrBadTPMPolicy = errors.New("invalid tpm_policy")

// ParseTPMPolicy parses a tpm_policy JSON object: {"15": ["<hex>", …], "7": "<hex>", "mask": "0x…"}.
// A "mask" key is accepted (the verifier stores the policy with it); PCR 10 and 16 and PCRs above 23
// are refused, as are values that are not hex digests (20, 32, 48 or 64 bytes).
func ParseTPMPolicy(s string) (*TPMPolicy, error) {
	if strings.TrimSpace(s) == "" {
		return &TPMPolicy{PCRs: map[int][]string{}}, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", ErrBadTPMPolicy, err)
	}
	p := &TPMPolicy{PCRs: map[int][]string{}}
	for key, val := range raw {
		if key == "mask" {
			var m string
			if err := json.Unmarshal(val, &m); err != nil {
				return nil, fmt.Errorf("%w: mask must be a hex string", ErrBadTPMPolicy)
			}
			mask, err := ParseMask(m)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadTPMPolicy, err)
			}
			p.Mask |= mask
			continue
		}
		pcr, err := strconv.Atoi(key)
		if err != nil || pcr < 0 || pcr >= NumPCRs || strconv.Itoa(pcr) != key {
			return nil, fmt.Errorf("%w: key %q is not a PCR number 0-23", ErrBadTPMPolicy, key)
		}
		if pcr == IMAPCR {
			return nil, fmt.Errorf("%w: PCR 10 is judged by the runtime (IMA) policy, not tpm_policy", ErrBadTPMPolicy)
		}
		if pcr == DataPCR {
			return nil, fmt.Errorf("%w: PCR 16 binds the agent's key and cannot be in tpm_policy", ErrBadTPMPolicy)
		}
		var values []string
		var one string
		if err := json.Unmarshal(val, &one); err == nil {
			values = []string{one}
		} else if err := json.Unmarshal(val, &values); err != nil {
			return nil, fmt.Errorf("%w: PCR %d: want a hex string or a list of them", ErrBadTPMPolicy, pcr)
		}
		if len(values) == 0 {
			return nil, fmt.Errorf("%w: PCR %d has no allowed value", ErrBadTPMPolicy, pcr)
		}
		for i, v := range values {
			v = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(v), "0x"))
			b, err := hex.DecodeString(v)
			if err != nil || !digestSize(len(b)) {
				return nil, fmt.Errorf("%w: PCR %d value %q is not a SHA-1/256/384/512 hex digest", ErrBadTPMPolicy, pcr, values[i])
			}
			values[i] = v
		}
		p.PCRs[pcr] = values
		p.Mask |= 1 << pcr
	}
	return p, nil
}

func digestSize(n int) bool { return n == 20 || n == 32 || n == 48 || n == 64 }

// ParseMask parses a PCR mask such as "0x408400" (the "0x" is optional).
func ParseMask(s string) (uint32, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if h == "" || len(h) > 8 {
		return 0, fmt.Errorf("mask %q is not a hex PCR mask", s)
	}
	v, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("mask %q is not a hex PCR mask", s)
	}
	if v>>NumPCRs != 0 {
		return 0, fmt.Errorf("mask %q selects PCRs above 23", s)
	}
	return uint32(v), nil
}

// FormatMask writes a mask as Keylime does (Python hex(): "0x" and lower-case digits, no padding).
func FormatMask(m uint32) string { return "0x" + strconv.FormatUint(uint64(m), 16) }

// MaskPCRs lists the PCRs of a mask in ascending order.
func MaskPCRs(m uint32) []int {
	var out []int
	for i := 0; i < NumPCRs; i++ {
		if m&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// JSON returns the policy as Keylime stores it: the PCR lists and the mask, as one JSON object text.
func (p *TPMPolicy) JSON() string {
	obj := map[string]any{"mask": FormatMask(p.Mask)}
	for pcr, vals := range p.PCRs {
		obj[strconv.Itoa(pcr)] = vals
	}
	b, _ := json.Marshal(obj)
	return string(b)
}

// Check judges the quoted PCR values of one bank (lower-case hex) against the policy, as Keylime's
// verifier does for static PCRs: every policy PCR that was quoted must have one of its allowed values
// (pcr_validation.invalid_pcr_N), and every policy PCR must have been quoted (pcr_validation.missing_pcrs).
// PCRs in skip (judged by another policy, e.g. measured boot) are not compared.
func (p *TPMPolicy) Check(quoted map[int]string, skip map[int]bool) []Failure {
	var fails []Failure
	var missing []int
	pcrs := make([]int, 0, len(p.PCRs))
	for pcr := range p.PCRs {
		pcrs = append(pcrs, pcr)
	}
	sort.Ints(pcrs)
	for _, pcr := range pcrs {
		if skip[pcr] {
			continue
		}
		got, ok := quoted[pcr]
		if !ok {
			missing = append(missing, pcr)
			continue
		}
		if !contains(p.PCRs[pcr], strings.ToLower(got)) {
			fails = append(fails, Failure{
				EventID: fmt.Sprintf("pcr_validation.invalid_pcr_%d", pcr),
				Context: map[string]any{
					"message":  "PCR value is not in allowlist",
					"pcr":      pcr,
					"got":      strings.ToLower(got),
					"expected": p.PCRs[pcr],
				},
			})
		}
	}
	if len(missing) > 0 {
		fails = append(fails, Failure{
			EventID: "pcr_validation.missing_pcrs",
			Context: map[string]any{"message": "PCRs in tpm_policy were not quoted", "pcrs": missing},
		})
	}
	return fails
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
