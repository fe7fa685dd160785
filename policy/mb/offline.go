package mb

import (
	"github.com/keylime-go/keylime/policy"
)

// OfflineResult is the answer of `keylime policy evaluate measured-boot`, shaped as the CLI prints it:
// {"pcrs": {"sha256": {"0": "<hex>", …}, …}, "valid": …, "failures": [{"event_id", "context"}]}.
type OfflineResult struct {
	// PCRs are the replayed values: bank name → PCR number → lower-case hex.
	PCRs map[string]map[string]string `json:"pcrs"`
	// Valid is true when the log parsed and (with a reference state) the policy accepted it.
	Valid bool `json:"valid"`
	// Failures say why not.
	Failures []policy.Failure `json:"failures"`
	// Notes are replay notes (banks or events left out); not part of the CLI's JSON.
	Notes []string `json:"-"`
	// BootAggregates are the IMA boot aggregates per bank name; not part of the CLI's JSON.
	BootAggregates map[string][]string `json:"-"`
}

// EvaluateOffline parses and replays a log and, when refState is not empty, judges it under the named
// policy (PolicyExample when policyName is ""). Nothing is compared with a quote.
func EvaluateOffline(rawLog, refState []byte, policyName string) OfflineResult {
	res := OfflineResult{PCRs: map[string]map[string]string{}, Failures: []policy.Failure{}}
	if policyName == "" {
		policyName = PolicyExample
	}
	ref, err := ParseRefState(refState)
	if err != nil {
		res.Failures = append(res.Failures, policyFailure(policyName, "policy evaluation failed: "+err.Error(), nil))
	}
	log, err := Parse(rawLog)
	if err != nil {
		res.Failures = append(res.Failures, policy.Failure{EventID: "measured_boot.parser.eventlog", Recoverable: true,
			Context: map[string]any{"message": err.Error()}})
		return res
	}
	res.PCRs, res.Notes = log.PCRs().Hex(), log.Notes
	res.BootAggregates = map[string][]string{}
	for b, aggs := range log.PCRs().BootAggregates() {
		res.BootAggregates[BankName(b)] = aggs
	}
	if ref != nil {
		if _, err := RelevantPCRs(policyName); err != nil {
			res.Failures = append(res.Failures, policyFailure(policyName, err.Error(), nil))
		} else {
			res.Failures = append(res.Failures, Evaluate(policyName, ref, log)...)
		}
	}
	res.Valid = len(res.Failures) == 0
	return res
}
