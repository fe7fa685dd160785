package verifier

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/tpm"
)

// checkResult is the verdict on one quote.
type checkResult struct {
	failures []policy.Failure
	clock    clockInfo
	nkPEM    string
	// integrity is what the measured-boot and IMA checks found (their failures are in failures).
	integrity integrityResult
}

func quoteFailure(id, msg string, ctx map[string]any) policy.Failure {
	if ctx == nil {
		ctx = map[string]any{}
	}
	ctx["message"] = msg
	// "qoute" is Keylime's spelling on the wire.
	return policy.Failure{EventID: "qoute_validation." + id, Context: ctx}
}

// normaliseEncAlg maps the pre-2.5 spellings to the sized ones, as Keylime's verifier does.
func normaliseEncAlg(s string) string {
	switch s {
	case "rsa":
		return "rsa2048"
	case "ecc":
		return "ecc256"
	}
	return s
}

func acceptsEncAlg(accepted []string, got string) bool {
	got = normaliseEncAlg(got)
	for _, a := range accepted {
		if normaliseEncAlg(a) == got || (len(got) > len(a) && got[:len(a)] == a && (a == "rsa" || a == "ecc")) {
			return true
		}
	}
	return false
}

// check verifies a quote response against st's AK, nonce and policies. Every check runs; the result
// lists all failures, the first one being the most basic (signature before PCRs).
func (v *Verifier) check(st *agentState, q *api.QuoteResponse, nonce string, wantPubkey bool, pols agentPolicies) checkResult {
	st.mu.Lock()
	rec := st.rec
	ak, pol := st.ak, st.policy
	st.mu.Unlock()
	var res checkResult
	add := func(f policy.Failure) { res.failures = append(res.failures, f) }

	if !slices.Contains(rec.AcceptHashAlgs, q.HashAlg) {
		add(quoteFailure("invalid_hash_alg", "hash algorithm not accepted", map[string]any{"got": q.HashAlg, "accepted": rec.AcceptHashAlgs}))
	}
	if !acceptsEncAlg(rec.AcceptEncryptionAlgs, q.EncAlg) {
		add(quoteFailure("invalid_enc_alg", "encryption algorithm not accepted", map[string]any{"got": q.EncAlg, "accepted": rec.AcceptEncryptionAlgs}))
	}
	if !slices.Contains(rec.AcceptSigningAlgs, q.SignAlg) {
		add(quoteFailure("invalid_sign_alg", "signing algorithm not accepted", map[string]any{"got": q.SignAlg, "accepted": rec.AcceptSigningAlgs}))
	}
	if len(res.failures) > 0 {
		return res
	}
	quote, err := tpm.ParseQuote(q.Quote)
	if err != nil {
		add(quoteFailure("quote_validation", "malformed quote: "+err.Error(), nil))
		return res
	}
	data, err := tpm.VerifyQuote(quote, ak, []byte(nonce), q.HashAlg)
	if err != nil {
		add(quoteFailure("quote_validation", "quote verification failed: "+err.Error(), nil))
		return res
	}
	res.clock = clockInfo{Clock: data.Clock, ResetCount: data.ResetCount, RestartCount: data.RestartCount}
	if rec.HaveClock {
		if msg := clockProblem(rec.Clock, res.clock); msg != "" {
			add(quoteFailure("clock_check", msg, map[string]any{
				"previous": rec.Clock, "got": res.clock,
			}))
		}
	}

	// PCR 16 binds the quote to the NK: H(0…0 || H(pubkey PEM)).
	nk := rec.NKPEM
	if q.PubKey != "" {
		nk = q.PubKey
		res.nkPEM = q.PubKey
	} else if wantPubkey {
		add(policy.Failure{EventID: "pcr_validation.missing_pubkey", Context: map[string]any{"message": "the agent sent no public key with a full quote"}})
	}
	got16, ok := data.PCRs[policy.DataPCR]
	switch {
	case !ok:
		add(policy.Failure{EventID: "pcr_validation.missing_pcr_16", Context: map[string]any{"message": "PCR 16 (data PCR) is not in the quote"}})
	case nk != "":
		want, err := tpm.DataPCRValue(q.HashAlg, []byte(nk))
		if err != nil || !bytes.Equal(got16, want) {
			add(policy.Failure{EventID: "pcr_validation.invalid_pcr_16", Context: map[string]any{
				"message":  "PCR 16 does not bind the agent's public key",
				"pcr":      policy.DataPCR,
				"got":      hex.EncodeToString(got16),
				"expected": hex.EncodeToString(want),
			}})
		}
	}

	quoted := make(map[int]string, len(data.PCRs))
	for pcr, val := range data.PCRs {
		quoted[pcr] = hex.EncodeToString(val)
	}
	// PCRs judged by the runtime or measured-boot policy are not compared with static values.
	var skip map[int]bool
	if judged := v.judgedPCRs(pols, &rec); judged != 0 {
		skip = map[int]bool{}
		for _, p := range policy.MaskPCRs(judged) {
			skip[p] = true
		}
	}
	res.failures = append(res.failures, pol.Check(quoted, skip)...)
	res.integrity = v.checkIntegrity(st, &rec, pols, q, data)
	res.failures = append(res.failures, res.integrity.failures...)
	return res
}

// clockProblem describes why the TPM clock state of a quote cannot follow the previous one: the reset
// count never decreases, the restart count never decreases within one reset, and the clock never goes
// backwards.
func clockProblem(prev, got clockInfo) string {
	switch {
	case got.ResetCount < prev.ResetCount:
		return fmt.Sprintf("TPM reset count went backwards (%d after %d)", got.ResetCount, prev.ResetCount)
	case got.ResetCount == prev.ResetCount && got.RestartCount < prev.RestartCount:
		return fmt.Sprintf("TPM restart count went backwards (%d after %d)", got.RestartCount, prev.RestartCount)
	case got.Clock < prev.Clock:
		return fmt.Sprintf("TPM clock went backwards (%d ms after %d ms)", got.Clock, prev.Clock)
	}
	return ""
}
