package ima

import (
	"bytes"
	"crypto"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/keylime-go/keylime/policy"
)

// Event ids of IMA failures, as Keylime names them (note "validator" and the misspelt
// "qoute_validation", both Keylime's).
const (
	EventParse             = "ima.parser.entry"
	EventPCR               = "ima.validation.ima_pcr"
	EventToMToU            = "ima.validation.tomtou"
	EventTemplateHash      = "ima.validation.ima_hash"
	EventNotInPolicy       = "ima.validation.ima-ng.not_in_allowlist"
	EventDigestNotAllowed  = "ima.validation.ima-ng.runtime_policy_hash"
	EventInvalidSignature  = "ima.validator.ima-sig.invalid_signature"
	EventInvalidKey        = "ima.invalid_key"
	EventPCRMismatch       = "ima.pcr_mismatch"
	EventQuoteProgress     = "ima.quote_progress"
	EventInvalidEntryIndex = "qoute_validation.invalid_ima_entry_nb"
)

// DefaultMaxFailures is how many per-entry failures Attest lists when Options.MaxFailures is 0.
const DefaultMaxFailures = 100

// State is what a verifier keeps per agent between polls for incremental IMA attestation
// (Keylime's AgentAttestState): small, JSON-serialisable, and reset to the zero State after any
// failure. Persist it after each attestation that evaluated PCR 10.
type State struct {
	// Bank is the PCR bank of PCR10 ("sha256").
	Bank string `json:"bank,omitempty"`
	// PCR10 is the hex PCR 10 value after the entries already attested (empty: zeros).
	PCR10 string `json:"pcr10,omitempty"`
	// NextEntry is the next entry to ask the agent for (ima_ml_entry).
	NextEntry int `json:"next_entry"`
	// BootTime is the agent's boot time the attested entries belong to.
	BootTime int64 `json:"boottime"`
	// Extend is the ExtendMode (its String) the quote matched with, once known: "template-hash"
	// or "padded-sha1"; empty while undetermined (both are tried).
	Extend string `json:"extend,omitempty"`
	// Keyrings are the keys learned from ima-buf entries already attested, by keyring name.
	Keyrings map[string]*Keyring `json:"keyrings,omitempty"`
	// Progress is the quote progress of the previous poll (nil before the first).
	Progress *Progress `json:"quote_progress,omitempty"`
}

// Progress records where the quote matched the previous poll's log (Keylime's quote_progress).
type Progress struct {
	// MatchLine is the number of that poll's entries the quote covered.
	MatchLine int `json:"match_line"`
	// LogLength is the number of entries that poll received.
	LogLength int `json:"log_length"`
}

// Evidence is what one poll brought for IMA: the agent's answer and the verified quote's PCR 10.
type Evidence struct {
	// Log is the agent's ima_measurement_list (possibly empty); Reader, when set, is read instead.
	Log    []byte
	Reader io.Reader
	// FirstEntry is the agent's ima_measurement_list_entry: the number of Log's first entry.
	FirstEntry int
	// BootTime is the agent's boottime (0 when it sent none).
	BootTime int64
	// Bank is the quote's hash algorithm; PCR10 the quoted PCR 10 value of that bank.
	Bank  crypto.Hash
	PCR10 []byte
	// BootAggregates are extra digests accepted for "boot_aggregate" (computed from the
	// measured-boot log of this poll, any bank).
	BootAggregates [][]byte
}

// Options are verifier settings for Attest.
type Options struct {
	// Keys, when set, replace the policy's verification keys for this agent (Keylime's deprecated
	// per-agent ima_sign_verification_keys).
	Keys *Keyring
	// FailViolations reports each violation entry as ima.validation.tomtou. Keylime does so when
	// [verifier] ignore_tomtou_errors is True (sic; its shipped default False accepts violations).
	FailViolations bool
	// MaxFailures bounds the per-entry failures listed (DefaultMaxFailures when 0); the rest are
	// only counted in Result.Suppressed. PCR, progress and entry-number failures are always listed.
	MaxFailures int
}

// Result is the outcome of one Attest call.
type Result struct {
	// State is the state to keep for the next poll (the zero State after a failure or Restart).
	State State
	// Failures lists what failed; empty means PCR 10 and the log passed.
	Failures []policy.Failure
	// Suppressed counts failures beyond Options.MaxFailures.
	Suppressed int
	// Restart is set when the agent rebooted (its boottime changed) or the bank changed while an
	// incremental log was sent: nothing was judged and the state was reset, so the verifier should
	// poll again at once asking for entry 0 (Keylime counts such a poll as passed without looking at
	// the quote).
	Restart bool
	// Entries is the number of entries in Log; Matched how many of them the quote covers (-1: the
	// quote matched nowhere).
	Entries, Matched int
	// Replayed is PCR 10 after replaying all of Log.
	Replayed []byte
}

// Attest judges one poll's IMA log incrementally, as Keylime's verifier does
// (process_quote_response, process_measurement_list):
//   - FirstEntry 0 starts over from zeros (keys learned so far are forgotten); a FirstEntry other
//     than prev.NextEntry fails with qoute_validation.invalid_ima_entry_nb (irrecoverable); a changed
//     boot time (or bank) resets the state and sets Result.Restart.
//   - Every entry of PCR 10 is extended into the running value (violations as all 0xff, others as
//     H_bank(template data)); the quoted PCR 10 is compared before the first entry and after each
//     one, the first match wins (the quote may lag the log), and no match is ima.pcr_mismatch.
//   - On a match after n entries the state moves to that value and entry FirstEntry+n; the entries
//     after the match are still judged, and will be sent again.
//   - Quote progress: when the previous poll's quote lagged its log by k entries, this poll's match
//     must cover at least k entries unless it covers the whole log, else ima.quote_progress.
//   - Every entry is judged against pol (see the package documentation); a nil pol accepts every
//     entry that parses and has a correct template hash.
//   - Any failure resets the state.
func Attest(prev State, ev Evidence, pol *Compiled, opts Options) Result {
	if opts.MaxFailures <= 0 {
		opts.MaxFailures = DefaultMaxFailures
	}
	a := &attestor{pol: pol, opts: opts, ev: &ev}
	res := Result{Matched: -1}
	if err := CheckBank(ev.Bank); err != nil {
		a.always(EventPCRMismatch, ctx("message", fmt.Sprintf("cannot replay PCR 10: %v", err)))
		return a.result(res)
	}
	bankName := BankName(ev.Bank)
	if len(ev.PCR10) != ev.Bank.Size() {
		a.always(EventPCRMismatch, ctx("message", fmt.Sprintf("quoted PCR 10 has %d bytes, the %s bank %d", len(ev.PCR10), bankName, ev.Bank.Size())))
		return a.result(res)
	}
	st := prev
	running := make([]byte, ev.Bank.Size())
	switch {
	case ev.FirstEntry == 0:
		st = State{}
	case ev.FirstEntry != prev.NextEntry:
		f := ctx("message", "Agent did not respond with requested next IMA measurement list entry", "got", ev.FirstEntry, "expected", prev.NextEntry)
		a.failures = append(a.failures, policy.Failure{EventID: EventInvalidEntryIndex, Context: f})
		return a.result(res)
	case prev.BootTime != ev.BootTime || prev.Bank != bankName:
		res.Restart = true
		return res
	default:
		v, err := hex.DecodeString(prev.PCR10)
		if prev.PCR10 != "" && (err != nil || len(v) != len(running)) {
			res.Restart = true // a corrupt stored state: start over
			return res
		}
		copy(running, v)
	}
	st.Bank, st.BootTime = bankName, ev.BootTime
	if ev.FirstEntry == 0 {
		st.NextEntry = 0
	}
	a.rings = []*Keyring{opts.Keys}
	if opts.Keys == nil && pol != nil {
		a.rings[0] = pol.keys
	}
	for _, r := range st.Keyrings {
		a.rings = append(a.rings, r)
	}
	a.pollKeys = NewKeyring()
	a.rings = append(a.rings, a.pollKeys)

	// Which extend modes to replay: both until a match has shown which one the kernel uses for
	// this bank (they are the same for SHA-1). A log in memory is replayed in the template-hash
	// mode, and again in the padded-SHA-1 mode only when that found no match (the rare kernel).
	track := [2]bool{true, ev.Bank != crypto.SHA1}
	switch st.Extend {
	case ExtendTemplateHash.String():
		track[ExtendPaddedSHA1] = false
	case ExtendPaddedSHA1.String():
		track[ExtendTemplateHash] = !track[ExtendPaddedSHA1]
	}
	secondPass := track[ExtendTemplateHash] && track[ExtendPaddedSHA1] && ev.Reader == nil
	if secondPass {
		track[ExtendPaddedSHA1] = false
	}
	start := bytes.Clone(running)
	runs := [2][]byte{running, bytes.Clone(running)}
	mode := ExtendTemplateHash
	if !track[mode] {
		mode = ExtendPaddedSHA1
	}

	var p *Parser
	if ev.Reader != nil {
		p = NewParser(ev.Reader, ev.FirstEntry)
	} else {
		p = NewBytesParser(ev.Log, ev.FirstEntry)
	}
	matched := bytes.Equal(running, ev.PCR10)
	matchLine := 0
	var v [sha512.Size]byte
	n := 0
	for {
		e, err := p.Next()
		if err == io.EOF {
			break
		}
		if pe, ok := err.(*ParseError); ok {
			n++
			a.fail(EventParse, ctx("message", "Line was not parsable into a valid IMA entry: "+pe.Reason, "entry", pe.Entry, "line", pe.Line, "text", pe.Text))
			continue
		}
		if err != nil {
			a.always(EventParse, ctx("message", err.Error(), "entry", ev.FirstEntry+n))
			break
		}
		n++
		a.pos = n
		if e.PCR == policy.IMAPCR {
			for m := range runs {
				if track[m] {
					extend(ev.Bank, runs[m], e.ExtendValueMode(ev.Bank, ExtendMode(m), v[:0]))
				}
			}
		}
		a.check(e)
		if matched {
			continue
		}
		for m := range runs {
			if track[m] && bytes.Equal(runs[m], ev.PCR10) {
				matched, matchLine, mode = true, n, ExtendMode(m)
				st.PCR10 = hex.EncodeToString(runs[m])
				st.NextEntry = ev.FirstEntry + n
				break
			}
		}
	}
	if secondPass && !matched {
		var line int
		var ok bool
		ok, line, runs[ExtendPaddedSHA1] = replayMatch(ev, start, ExtendPaddedSHA1)
		track[ExtendPaddedSHA1] = true
		if ok {
			matched, matchLine, mode = true, line, ExtendPaddedSHA1
			st.NextEntry = ev.FirstEntry + line
			st.PCR10 = hex.EncodeToString(quoteValue(ev))
		}
	}
	if matched && matchLine > 0 {
		st.Extend = mode.String()
	}
	running = runs[mode]
	res.Entries, res.Replayed = n, running
	if !matched {
		a.always(EventPCRMismatch, ctx("message", fmt.Sprintf("IMA measurement list does not match TPM PCR %x", ev.PCR10),
			"bank", bankName, "quoted", hex.EncodeToString(ev.PCR10), "replayed", hex.EncodeToString(runs[ExtendTemplateHash]),
			"first_entry", ev.FirstEntry, "entries", n))
		if track[ExtendTemplateHash] && track[ExtendPaddedSHA1] {
			a.failures[len(a.failures)-1].Context["replayed_padded_sha1"] = hex.EncodeToString(runs[ExtendPaddedSHA1])
		} else if !track[ExtendTemplateHash] {
			a.failures[len(a.failures)-1].Context["replayed"] = hex.EncodeToString(runs[ExtendPaddedSHA1])
		}
		return a.result(res)
	}
	res.Matched = matchLine
	if prevProgress := st.Progress; prevProgress != nil {
		lag := prevProgress.LogLength - prevProgress.MatchLine
		if matchLine != n && lag > 0 && matchLine < lag {
			a.always(EventQuoteProgress, ctx("message", "PCR quote did not make progress to catch up with log",
				"match_line", matchLine, "log_length", n, "previous_lag", lag))
		}
	}
	st.Progress = &Progress{MatchLine: matchLine, LogLength: n}
	if len(a.failures) > 0 || a.suppressed > 0 {
		return a.result(res)
	}
	st.Keyrings = a.keepLearned(st.Keyrings, matchLine)
	res.State = st
	return res
}

// quoteValue is the quoted PCR 10 (a copy).
func quoteValue(ev Evidence) []byte { return bytes.Clone(ev.PCR10) }

// replayMatch replays ev.Log from start in one extend mode only, returning whether and after how
// many entries it matched the quote, and the final value.
func replayMatch(ev Evidence, start []byte, mode ExtendMode) (bool, int, []byte) {
	pcr := bytes.Clone(start)
	p := NewBytesParser(ev.Log, ev.FirstEntry)
	var v [sha512.Size]byte
	n, line, ok := 0, 0, false
	for {
		e, err := p.Next()
		if err == io.EOF {
			return ok, line, pcr
		}
		n++
		if err != nil || e.PCR != policy.IMAPCR {
			continue
		}
		extend(ev.Bank, pcr, e.ExtendValueMode(ev.Bank, mode, v[:0]))
		if !ok && bytes.Equal(pcr, ev.PCR10) {
			ok, line = true, n
		}
	}
}

// ctx builds a failure context from key/value pairs.
func ctx(kv ...any) map[string]any {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// learnedKey is a key an ima-buf entry loaded onto a keyring during this poll.
type learnedKey struct {
	keyring string
	key     Key
	pos     int // 1-based position of the entry in this poll's log
}

// attestor carries one Attest call's working data.
type attestor struct {
	pol        *Compiled
	opts       Options
	ev         *Evidence
	rings      []*Keyring
	pollKeys   *Keyring
	learned    []learnedKey
	failures   []policy.Failure
	suppressed int
	pos        int
}

// fail records a per-entry failure, subject to MaxFailures.
func (a *attestor) fail(id string, c map[string]any) {
	if len(a.failures) >= a.opts.MaxFailures {
		a.suppressed++
		return
	}
	a.failures = append(a.failures, policy.Failure{EventID: id, Context: c, Recoverable: true})
}

// always records a failure whatever the count.
func (a *attestor) always(id string, c map[string]any) {
	a.failures = append(a.failures, policy.Failure{EventID: id, Context: c, Recoverable: true})
}

// result finishes a failed (or aborted) attestation: the state is reset.
func (a *attestor) result(res Result) Result {
	res.Failures, res.Suppressed = a.failures, a.suppressed
	res.State = State{}
	return res
}

// keepLearned adds to the stored keyrings the keys learned from entries the quote covers; keys
// from entries after the match are not kept (those entries are sent and judged again).
func (a *attestor) keepLearned(rings map[string]*Keyring, matchLine int) map[string]*Keyring {
	var out map[string]*Keyring
	for _, l := range a.learned {
		if l.pos > matchLine {
			continue
		}
		if out == nil {
			out = make(map[string]*Keyring, len(rings)+1)
			for k, v := range rings {
				out[k] = v
			}
		}
		r := out[l.keyring]
		if r == rings[l.keyring] {
			r = r.Clone()
			out[l.keyring] = r
		}
		_ = r.Add(l.key.Public, l.key.ID)
	}
	if out == nil {
		return rings
	}
	return out
}
