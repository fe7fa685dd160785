package mb

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/keylime-go/keylime/policy"
)

// BootAggregates returns, per bank the log replays, the two boot aggregates IMA may have logged:
// H(PCR0‖…‖PCR7) and H(PCR0‖…‖PCR9), lower-case hex. A PCR the log does not extend counts as zero,
// which is what the TPM holds (Keylime skips the aggregate instead).
func (v PCRValues) BootAggregates() map[tpm2.TPMAlgID][]string {
	out := map[tpm2.TPMAlgID][]string{}
	for _, b := range v.sortedBanks() {
		zero := make([]byte, len(hashOf(b)))
		for _, n := range []int{8, 10} {
			var parts [][]byte
			for p := 0; p < n; p++ {
				if val, ok := v[b][p]; ok {
					parts = append(parts, val)
				} else {
					parts = append(parts, zero)
				}
			}
			out[b] = append(out[b], hex.EncodeToString(hashOf(b, parts...)))
		}
	}
	return out
}

// PCRsToCheck lists the PCRs whose quoted values must equal the log's replay under a policy: Keylime's
// MEASUREDBOOT_PCRS restricted to the policy's relevant PCRs (all of them for accept-all and
// reject-all).
func PCRsToCheck(policyName string) ([]int, error) {
	rel, err := RelevantPCRs(policyName)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, p := range policy.MeasuredBootPCRs {
		if rel == nil || slices.Contains(rel, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// CheckPCRs compares quoted PCR values of one bank with the log's replay, for each PCR in pcrs that
// was quoted. A PCR the log does not extend must be all zeros. A mismatch is
// measured_boot.invalid_pcr_<n> naming the PCR, the bank, the expected (log) and got (quote) values;
// a bank the log does not carry is measured_boot.parser.invalid_pcrs_hashes.
func (l *Log) CheckPCRs(bank tpm2.TPMAlgID, quoted map[int][]byte, pcrs []int) []policy.Failure {
	vals, ok := l.pcrs[bank]
	if !ok {
		return []policy.Failure{{EventID: "measured_boot.parser.invalid_pcrs_hashes", Recoverable: true, Context: map[string]any{
			"message": fmt.Sprintf("the boot event log has no %s digests, the bank the quote covers", BankName(bank)),
			"bank":    BankName(bank), "log_banks": bankList(l.Banks),
		}}}
	}
	var fails []policy.Failure
	for _, p := range slices.Sorted(slices.Values(pcrs)) {
		got, quotedP := quoted[p]
		if !quotedP {
			continue
		}
		want, inLog := vals[p]
		if !inLog {
			want = make([]byte, len(hashOf(bank)))
		}
		if bytes.Equal(want, got) {
			continue
		}
		fails = append(fails, policy.Failure{EventID: fmt.Sprintf("measured_boot.invalid_pcr_%d", p), Recoverable: true, Context: map[string]any{
			"message":  fmt.Sprintf("%s boot event log PCR value does not match", BankName(bank)),
			"pcr":      p,
			"bank":     BankName(bank),
			"expected": hex.EncodeToString(want),
			"got":      hex.EncodeToString(got),
		}})
	}
	return fails
}

// Quote is what the verifier hands Check: the PCR values of the quoted bank.
type Quote struct {
	Bank tpm2.TPMAlgID
	PCRs map[int][]byte
}

// Check runs the measured-boot part of one attestation as Keylime's verifier does: with an empty
// reference state nothing is checked; otherwise the log must parse (measured_boot.parser.eventlog),
// the policy's relevant PCRs must be quoted (measured_boot.missing_pcrs), the quoted measured-boot PCRs
// must equal the replay (CheckPCRs), and, when evaluate is true (Keylime's measured_boot_evaluate
// "always", or "once" before the first success), the log is judged by Evaluate. rawLog is the decoded
// mb_measurement_list; nil means the agent sent none (pcr_validation.unused_pcr_<n> per PCR).
func Check(policyName string, ref *RefState, rawLog []byte, q Quote, evaluate bool) []policy.Failure {
	if ref.Empty() {
		return nil
	}
	toCheck, err := PCRsToCheck(policyName)
	if err != nil {
		return []policy.Failure{{EventID: "measured_boot.invalid_policy_name", Context: map[string]any{"message": err.Error()}}}
	}
	if rawLog == nil {
		var fails []policy.Failure
		for _, p := range toCheck {
			if _, ok := q.PCRs[p]; ok {
				fails = append(fails, policy.Failure{EventID: fmt.Sprintf("pcr_validation.unused_pcr_%d", p), Recoverable: true,
					Context: map[string]any{"message": fmt.Sprintf("Measured Boot PCR %d in policy, but no measurement list provided", p)}})
			}
		}
		return fails
	}
	log, err := Parse(rawLog)
	if err != nil {
		return []policy.Failure{{EventID: "measured_boot.parser.eventlog", Recoverable: true, Context: map[string]any{"message": err.Error()}}}
	}
	return CheckParsed(policyName, ref, log, q, evaluate)
}

// CheckParsed is Check for a log the caller already parsed (to take its boot aggregates for IMA).
func CheckParsed(policyName string, ref *RefState, log *Log, q Quote, evaluate bool) []policy.Failure {
	if ref.Empty() {
		return nil
	}
	toCheck, err := PCRsToCheck(policyName)
	if err != nil {
		return []policy.Failure{{EventID: "measured_boot.invalid_policy_name", Context: map[string]any{"message": err.Error()}}}
	}
	fails := log.CheckPCRs(q.Bank, q.PCRs, toCheck)
	if !evaluate {
		return fails
	}
	rel, _ := RelevantPCRs(policyName)
	var missing []int
	for _, p := range rel {
		if _, ok := q.PCRs[p]; !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return append(fails, policy.Failure{EventID: "measured_boot.missing_pcrs", Recoverable: true,
			Context: map[string]any{"message": "PCRs are missing in quote", "data": missing}})
	}
	return append(fails, Evaluate(policyName, ref, log)...)
}
