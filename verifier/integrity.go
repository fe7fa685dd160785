package verifier

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"unsafe"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/policy/mb"
	"github.com/keylime-go/keylime/tpm"
)

// agentPolicies are the named policies an agent is judged by, looked up per poll so that an updated
// policy applies from the next quote on; nil when the agent has none.
type agentPolicies struct {
	runtime *ima.Compiled
	// runtimeMissing is set when the agent names a runtime policy that does not compile or is gone.
	runtimeMissing string
	mb             *mb.RefState
	mbDigest       string
	mbMissing      string
}

func (v *Verifier) agentPolicies(rec *record) agentPolicies {
	var p agentPolicies
	if n := rec.RuntimePolicyName; n != "" {
		cp := v.policies[kindRuntime].get(n)
		if c, ok := valueOf(cp).(*ima.Compiled); ok {
			p.runtime = c
		} else {
			p.runtimeMissing = n
		}
	}
	if n := rec.MBPolicyName; n != "" {
		cp := v.policies[kindMB].get(n)
		if r, ok := valueOf(cp).(*mb.RefState); ok {
			if !r.Empty() {
				p.mb, p.mbDigest = r, cp.Digest
			}
		} else {
			p.mbMissing = n
		}
	}
	return p
}

func valueOf(cp *compiledPolicy) any {
	if cp == nil {
		return nil
	}
	return cp.Value
}

// judgedPCRs is the mask of PCRs the runtime and measured-boot policies judge: PCR 10 with a runtime
// policy, the policy's measured-boot PCRs with a non-empty reference state. They are quoted, and not
// compared with static tpm_policy values.
func (v *Verifier) judgedPCRs(p agentPolicies, rec *record) uint32 {
	var m uint32
	if rec.RuntimePolicyName != "" {
		m |= 1 << policy.IMAPCR
	}
	if p.mb != nil {
		m |= v.mbMask
	}
	return m
}

// integrityResult is what the measured-boot and IMA checks of one quote found.
type integrityResult struct {
	failures []policy.Failure
	// ima is the IMA state to keep after a good quote; imaRestart asks to poll again from entry 0.
	ima        ima.State
	imaRestart bool
}

// checkIntegrity judges a verified quote's logs: the UEFI event log against the quoted measured-boot
// PCRs and the reference state, then the IMA log against PCR 10 and the runtime policy.
func (v *Verifier) checkIntegrity(st *agentState, rec *record, pols agentPolicies, q *api.QuoteResponse, data *tpm.QuoteData) integrityResult {
	var res integrityResult
	add := func(fs ...policy.Failure) { res.failures = append(res.failures, fs...) }
	if pols.runtimeMissing != "" {
		add(policy.Failure{EventID: "ima.policy_missing", Context: map[string]any{"message": "runtime policy " + pols.runtimeMissing + " does not exist or does not compile", "policy": pols.runtimeMissing}})
	}
	if pols.mbMissing != "" {
		add(policy.Failure{EventID: "measured_boot.policy_missing", Context: map[string]any{"message": "measured-boot policy " + pols.mbMissing + " does not exist or does not compile", "policy": pols.mbMissing}})
	}

	var bootAggregates [][]byte
	if pols.mb != nil {
		fails, aggs := v.checkMB(st, pols, q, data)
		add(fails...)
		bootAggregates = aggs
	}
	if pols.runtime != nil {
		fails, r := v.checkIMA(rec, pols.runtime, q, data, bootAggregates)
		add(fails...)
		res.ima, res.imaRestart = r.State, r.Restart
	}
	return res
}

// checkMB replays the boot log against the quote and evaluates it against the reference state (once
// per distinct log and policy unless measured_boot_evaluate is "always").
func (v *Verifier) checkMB(st *agentState, pols agentPolicies, q *api.QuoteResponse, data *tpm.QuoteData) ([]policy.Failure, [][]byte) {
	bank, ok := mb.BankByName(q.HashAlg)
	if !ok {
		return []policy.Failure{{EventID: "measured_boot.parser.invalid_pcrs_hashes", Context: map[string]any{"message": "unsupported bank " + q.HashAlg}}}, nil
	}
	quote := mb.Quote{Bank: bank, PCRs: data.PCRs}
	if q.MBMeasurementList == nil || *q.MBMeasurementList == "" {
		return mb.Check(v.cfg.MBPolicyName, pols.mb, nil, quote, false), nil
	}
	// The log's identity: the policy and the log as sent (hashing the base64 text spares decoding a log
	// that passed before).
	h := sha256.New()
	h.Write([]byte(pols.mbDigest))
	h.Write(readOnlyBytes(*q.MBMeasurementList))
	var id [32]byte
	h.Sum(id[:0])
	st.mu.Lock()
	known, aggs := st.mbLog, st.mbAggs
	if st.mbPassed != id || st.mbLog == nil {
		known, aggs = nil, nil
	}
	st.mu.Unlock()
	if known != nil && !v.cfg.MBEvaluateAlways {
		return mb.CheckParsed(v.cfg.MBPolicyName, pols.mb, known, quote, false), aggs
	}
	raw, err := base64.StdEncoding.DecodeString(*q.MBMeasurementList)
	if err != nil {
		return []policy.Failure{{EventID: "measured_boot.parser.eventlog", Context: map[string]any{"message": "mb_measurement_list is not base64: " + err.Error()}}}, nil
	}
	log, err := mb.Parse(raw)
	if err != nil {
		return []policy.Failure{{EventID: "measured_boot.parser.eventlog", Context: map[string]any{"message": err.Error()}}}, nil
	}
	fails := mb.CheckParsed(v.cfg.MBPolicyName, pols.mb, log, quote, true)
	aggs = nil
	for _, list := range log.PCRs().BootAggregates() {
		for _, s := range list {
			if b, err := hex.DecodeString(s); err == nil {
				aggs = append(aggs, b)
			}
		}
	}
	if len(fails) > 0 {
		return fails, aggs
	}
	// The evaluation does not depend on the rest of the quote's checks: remember the verdict.
	st.mu.Lock()
	st.mbPassed, st.mbLog, st.mbAggs = id, log.Replayed(), aggs
	st.mu.Unlock()
	return nil, aggs
}

// readOnlyBytes views s as bytes without copying (a large log is not duplicated per poll); the IMA
// parser only reads its input.
func readOnlyBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// checkIMA replays the new IMA entries from the agent's stored state and judges them.
func (v *Verifier) checkIMA(rec *record, pol *ima.Compiled, q *api.QuoteResponse, data *tpm.QuoteData, bootAggregates [][]byte) ([]policy.Failure, ima.Result) {
	pcr10, ok := data.PCRs[policy.IMAPCR]
	if !ok {
		return []policy.Failure{{EventID: "pcr_validation.missing_pcr_10", Context: map[string]any{"message": "PCR 10 (IMA) is not in the quote"}}}, ima.Result{}
	}
	if q.IMAMeasurementList == nil || q.IMAMeasurementListEntry == nil {
		return []policy.Failure{{EventID: "ima.missing_measurement_list", Context: map[string]any{
			"message": "the agent sent no IMA measurement list although a runtime policy applies"}}}, ima.Result{}
	}
	bank, err := ima.BankByName(q.HashAlg)
	if err != nil {
		return []policy.Failure{{EventID: "ima.unsupported_bank", Context: map[string]any{"message": err.Error()}}}, ima.Result{}
	}
	ev := ima.Evidence{
		Log:            readOnlyBytes(*q.IMAMeasurementList),
		FirstEntry:     *q.IMAMeasurementListEntry,
		Bank:           bank,
		PCR10:          pcr10,
		BootAggregates: bootAggregates,
	}
	prev := rec.IMA
	if rec.HaveClock && data.ResetCount != rec.Clock.ResetCount && prev.NextEntry > 0 {
		// The TPM was reset (the machine rebooted): the stored PCR 10 and entry index belong to the
		// previous boot. A log from entry 0 is judged from scratch; anything else is asked again.
		prev = ima.State{}
		if ev.FirstEntry != 0 {
			return nil, ima.Result{Restart: true}
		}
	}
	r := ima.Attest(prev, ev, pol, ima.Options{FailViolations: v.cfg.IMAFailViolations})
	fails := r.Failures
	if r.Suppressed > 0 {
		fails = append(fails, policy.Failure{EventID: "ima.more_failures", Context: map[string]any{
			"message": itoa(r.Suppressed) + " more IMA entries failed", "count": r.Suppressed}})
	}
	return fails, r
}
