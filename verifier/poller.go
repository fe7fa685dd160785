package verifier

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/payload"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/store"
)

// maxFailures is how many failures a record keeps (newest last).
const maxFailures = 10

// Polling is timer driven: an agent between two quotes is a struct and a pending timer, not a
// goroutine or a context. When the timer fires, the round (step) runs on a long-lived worker and
// schedules the next. A round gets its own context, cancelled when the round ends or the poller is
// stopped; the verifier's context ending stops every poller (stopAll).

// startPolling starts st's poller; v.mu must be held.
func (v *Verifier) startPolling(st *agentState) { v.startPollingAfter(st, 0, false) }

// startPollingAfter starts st's poller with its first round after delay; v.mu must be held. resumed
// marks an agent resumed by start, whose first round counts down v.resuming.
func (v *Verifier) startPollingAfter(st *agentState, delay time.Duration, resumed bool) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if v.ctx == nil || v.ctx.Err() != nil || st.polling {
		return false
	}
	st.polling, st.stopping = true, false
	// The first quote after (re)start carries the NK (partial=0).
	st.poll = pollState{needPubkey: true, resumed: resumed}
	v.wg.Add(1)
	round := func() { v.round(st) }
	st.timer = time.AfterFunc(delay, func() { v.dispatch(st, round) })
	return true
}

// dispatch runs a round of st that is due: a resumed agent's first round through the resume gate,
// the others on a worker at once.
func (v *Verifier) dispatch(st *agentState, round func()) {
	st.mu.Lock()
	first := st.poll.resumed
	st.mu.Unlock()
	if first && v.resumeGate != nil {
		v.resumeGate.enter(round)
		return
	}
	v.workers.run(round)
}

// round runs one polling round of st and schedules the next, or ends the poller. Rounds keep a fixed
// rate: the next starts one interval after this one started, so a round delayed (by a slow agent, a
// garbage collection) does not shift every later one, and rounds delayed together do not stay bunched.
func (v *Verifier) round(st *agentState) {
	st.mu.Lock()
	if st.stopping || v.ctx.Err() != nil {
		v.endPolling(st)
		st.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(v.ctx)
	st.abort = cancel
	st.mu.Unlock()

	start := time.Now()
	wait, more := v.step(ctx, st)
	if st.poll.resumed {
		st.poll.resumed = false
		v.resumedRound()
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	st.abort = nil
	cancel()
	if !more || st.stopping || v.ctx.Err() != nil {
		v.endPolling(st)
		return
	}
	if st.poll.retries == 0 { // retries wait retry_interval after the failure
		wait = max(0, wait-time.Since(start))
	}
	st.timer.Reset(wait)
}

// endPolling marks st's poller stopped and wakes whoever waits for that; st.mu must be held, and
// no round may be pending or running after it.
func (v *Verifier) endPolling(st *agentState) {
	st.polling, st.timer = false, nil
	if st.poll.resumed { // stopped before its first round
		st.poll.resumed = false
		v.resumedRound()
	}
	st.tr.CloseIdle() // not polled any more: no connection kept for it
	if st.stopped != nil {
		close(st.stopped)
		st.stopped = nil
	}
	v.wg.Done()
}

// stopPolling stops st's poller and waits for it: a pending round is cancelled, a running one has its
// requests cancelled and ends. v.mu must not be held by the poller's path.
func (v *Verifier) stopPolling(st *agentState) {
	if wait := v.requestStop(st); wait != nil {
		<-wait
	}
}

// requestStop asks st's poller to stop. It returns nil when the poller is stopped already, or a
// channel closed once the running round has ended it.
func (v *Verifier) requestStop(st *agentState) <-chan struct{} {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.polling {
		return nil
	}
	st.stopping = true
	if st.abort != nil {
		st.abort()
	}
	if st.timer.Stop() { // no round pending or running: nothing else will end the poller
		v.endPolling(st)
		return nil
	}
	// The timer fired: a round is queued or running, and it ends the poller when it sees stopping.
	if st.stopped == nil {
		st.stopped = make(chan struct{})
	}
	return st.stopped
}

// stopAll stops every poller without waiting (the verifier's context ended; Serve waits for them).
func (v *Verifier) stopAll() {
	v.mu.Lock()
	agents := make([]*agentState, 0, len(v.agents))
	for _, st := range v.agents {
		agents = append(agents, st)
	}
	v.mu.Unlock()
	for _, st := range agents {
		v.requestStop(st)
	}
}

// workers runs polling rounds on goroutines that outlive a round: a round needs a deep stack (TLS,
// JSON, ECDSA), which a fresh goroutine per round would grow, copying it, every time. A round goes to an
// idle worker, or to a new one when all are busy (an agent that is slow to answer never holds up
// another's round); workers idle for workerIdle exit.
type workers struct{ jobs chan func() }

const workerIdle = 10 * time.Second

func newWorkers() *workers { return &workers{jobs: make(chan func())} }

func (w *workers) run(f func()) {
	select {
	case w.jobs <- f:
	default:
		go w.work(f)
	}
}

func (w *workers) work(f func()) {
	f()
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		select {
		case f = <-w.jobs:
			f()
			t.Reset(workerIdle)
		case <-t.C:
			return
		}
	}
}

// pollState is what the rounds of one polling session carry from one to the next (only the running
// round touches it).
type pollState struct {
	retries, restarts int
	needPubkey        bool
	// resumed is set until the first round of an agent resumed by start.
	resumed bool
}

// outcome of one attestation round.
type outcome int

const (
	attested    outcome = iota // quote verified, policies passed
	unreachable                // network error, timeout or 5xx: retry
	refused                    // the agent answered with another error: FAILED
	invalid                    // the quote failed verification or policy: INVALID_QUOTE
	restart                    // the agent rebooted: quote again at once from IMA entry 0
)

func (v *Verifier) agentLog(st *agentState) *zerolog.Logger {
	l := v.log.With().Str("agent", st.rec.AgentID).Logger()
	return &l
}

// step is one attestation round: it returns when to run the next one, or more=false when the agent
// reached a final state (or ctx ended).
func (v *Verifier) step(ctx context.Context, st *agentState) (wait time.Duration, more bool) {
	ps := &st.poll
	res, fails, err := v.attestOnce(ctx, st, ps.needPubkey)
	if ctx.Err() != nil {
		return 0, false
	}
	switch res {
	case attested:
		ps.retries, ps.restarts = 0, 0
		ps.needPubkey = false
		wait = v.cfg.QuoteInterval
		if done := v.provideV(ctx, st, &ps.retries); !done {
			if ctx.Err() != nil {
				return 0, false
			}
			st.mu.Lock()
			failed := st.rec.State == api.StateFailed
			st.mu.Unlock()
			if failed {
				return 0, false
			}
			wait = v.retryDelay(ps.retries)
		}
	case restart:
		v.agentLog(st).Info().Msg("agent rebooted; asking for its IMA log from entry 0")
		ps.restarts++
		if ps.restarts > 1 { // never spin on an agent that keeps restarting
			wait = v.cfg.QuoteInterval
		}
	case unreachable:
		if ps.retries >= v.cfg.MaxRetries {
			v.agentLog(st).Warn().Err(err).Int("retries", ps.retries).Msg("agent unreachable; giving up")
			v.fail(st, api.StateFailed, []policy.Failure{{
				EventID: "not_reachable",
				Context: map[string]any{"message": "agent did not answer after " + itoa(ps.retries) + " retries: " + errText(err)},
			}})
			return 0, false
		}
		ps.retries++
		wait = v.retryDelay(ps.retries)
		v.agentLog(st).Info().Err(err).Int("retry", ps.retries).Dur("in", wait).Msg("agent unreachable; will retry")
		v.setState(st, api.StateGetQuoteRetry)
	case refused:
		v.agentLog(st).Warn().Err(err).Msg("agent refused the quote request")
		f := policy.Failure{EventID: "no_quote", Context: map[string]any{"message": "agent answered the quote request with an error: " + errText(err)}}
		if isCertError(err) {
			f = policy.Failure{EventID: "agent_certificate_mismatch", Context: map[string]any{
				"message": "agent presented a TLS certificate other than the one it registered: " + errText(err)}}
		}
		v.fail(st, api.StateFailed, []policy.Failure{f})
		return 0, false
	case invalid:
		v.agentLog(st).Warn().Str("reason", fails[0].Message()).Int("failures", len(fails)).Msg("attestation failed")
		v.fail(st, api.StateInvalidQuote, fails)
		return 0, false
	}
	return wait, true
}

// retryDelay is Keylime's retry_time: retry_interval ** n seconds with exponential backoff (when the
// interval is above one second), else retry_interval.
func (v *Verifier) retryDelay(n int) time.Duration {
	base := v.cfg.RetryInterval.Seconds()
	if v.cfg.ExponentialBackoff && base > 1 {
		d := math.Pow(base, float64(n))
		if d > 3600 {
			d = 3600
		}
		return time.Duration(d * float64(time.Second))
	}
	return v.cfg.RetryInterval
}

// attestOnce asks for one quote and judges it.
func (v *Verifier) attestOnce(ctx context.Context, st *agentState, needPubkey bool) (outcome, []policy.Failure, error) {
	nonce, err := newNonce()
	if err != nil {
		return unreachable, nil, err
	}
	st.mu.Lock()
	pols := v.agentPolicies(&st.rec)
	mask := policy.FormatMask(st.policy.Mask | v.judgedPCRs(pols, &st.rec))
	imaEntry := st.rec.IMA.NextEntry
	st.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, v.cfg.RequestTimeout)
	q, err := st.client.IntegrityQuote(rctx, nonce, mask, !needPubkey, imaEntry)
	cancel()
	if err != nil {
		if isCertError(err) {
			return refused, nil, err
		}
		code := client.StatusCode(err)
		switch {
		case code == 0, code == http.StatusRequestTimeout, code >= 500:
			return unreachable, nil, err
		case code == http.StatusBadRequest && strings.Contains(err.Error(), api.VersionNotSupported):
			if rerr := v.renegotiate(ctx, st); rerr == nil {
				return unreachable, nil, err
			}
			return refused, nil, err
		default:
			return refused, nil, err
		}
	}
	now := v.cfg.Now()
	res := v.check(st, q, nonce, needPubkey, pols)
	st.mu.Lock()
	st.rec.LastReceived = now.Unix()
	if len(res.failures) > 0 {
		st.rec.IMA = ima.State{} // judged again from entry 0 if the agent is reactivated
		st.mu.Unlock()
		return invalid, res.failures, nil
	}
	st.rec.IMA = res.integrity.ima
	if res.integrity.imaRestart {
		// The machine rebooted while an incremental IMA log was asked for: ask again from entry 0
		// before counting an attestation.
		st.mu.Unlock()
		v.persist(st, false)
		return restart, nil, nil
	}

	st.rec.AttestationCount++
	st.rec.LastSuccess = now.Unix()
	st.rec.HashAlg, st.rec.EncAlg, st.rec.SignAlg = q.HashAlg, q.EncAlg, q.SignAlg
	st.rec.Clock, st.rec.HaveClock = res.clock, true
	if res.nkPEM != "" {
		if res.nkPEM != st.rec.NKPEM {
			st.rec.VSent = false // a new NK (the agent restarted): V must be sent again
		}
		st.rec.NKPEM = res.nkPEM
	}
	// Written at once only if the disk says otherwise: a restarted verifier's agents go from Start back
	// to the Get Quote already on disk, which needs no write per agent.
	changed := st.storedState != api.StateGetQuote
	st.rec.State = api.StateGetQuote
	st.mu.Unlock()
	v.persist(st, changed)
	return attested, nil, nil
}

// renegotiate asks the agent for its versions after it refused ours and switches to the best common one.
func (v *Verifier) renegotiate(ctx context.Context, st *agentState) error {
	rctx, cancel := context.WithTimeout(ctx, v.cfg.RequestTimeout)
	defer cancel()
	ver, err := st.client.Version(rctx)
	if err != nil {
		return err
	}
	remote := append([]string{ver.SupportedVersion}, ver.SupportedVersions...)
	best := api.Negotiate(remote, api.SupportedVersions)
	if best == "" {
		return client.ErrNoCommonVersion
	}
	st.mu.Lock()
	st.rec.SupportedVersion = best
	st.mu.Unlock()
	st.client.SetVersion(best)
	v.persist(st, true)
	return nil
}

// fail moves st to a failed state, records why, and persists at once.
func (v *Verifier) fail(st *agentState, state int, fails []policy.Failure) {
	now := v.cfg.Now().Unix()
	st.mu.Lock()
	st.rec.State = state
	for _, f := range fails {
		st.rec.Failures = append(st.rec.Failures, api.FailureInfo{EventID: f.EventID, Context: []byte(f.ContextJSON()), Time: now})
	}
	if n := len(st.rec.Failures); n > maxFailures {
		st.rec.Failures = append([]api.FailureInfo(nil), st.rec.Failures[n-maxFailures:]...)
	}
	st.rec.LastEventID = fails[0].EventID
	st.rec.LastFailure = fails[0].Message()
	sev := severityEmergency
	st.rec.SeverityLevel = &sev
	st.mu.Unlock()
	v.persist(st, true)
	v.notifyFailure(st, state, fails)
}

// severityEmergency is the index of "emergency" in Keylime's default severity_labels; the default
// severity policy maps every event to it.
const severityEmergency = 6

func (v *Verifier) setState(st *agentState, state int) {
	st.mu.Lock()
	changed := st.rec.State != state
	st.rec.State = state
	st.mu.Unlock()
	if changed {
		v.persist(st, true)
	}
}

// persist writes st's record: state changes at once; routine updates (counters, the IMA position)
// only mark the agent dirty (an atomic flag, no lock shared between pollers) and are written with every
// other dirty agent's by the flusher, so no poll waits for the disk or for another poll.
func (v *Verifier) persist(st *agentState, immediate bool) {
	if (!immediate || v.storeDown.failing()) && v.flusherOn.Load() {
		st.dirty.Store(true)
		return
	}
	v.writeRecords([]*agentState{st}, true)
}

// flushInterval is how often the flusher writes the dirty agents.
const flushInterval = 250 * time.Millisecond

// flusher writes the dirty agents every flushInterval in one transaction, and once more when ctx ends.
func (v *Verifier) flusher(ctx context.Context) {
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			v.flusherOn.Store(false)
			v.flush(true)
			return
		case <-t.C:
			v.flush(false)
		}
	}
}

// routineWriteEvery is how often one agent's routine updates reach the disk. Losing the last few
// seconds of them in a crash is harmless: counters and times lag; the stored clock is older than the
// TPM's (still monotonic); the IMA position is an earlier consistent one, from which the log is asked
// for and judged again.
const routineWriteEvery = 10 * time.Second

// flush writes the dirty agents last written at least routineWriteEvery ago (every dirty agent when
// all is set, at shutdown). While the disk fails it only tries again when storeDown says so, and then
// writes every dirty agent.
func (v *Verifier) flush(all bool) {
	if retry, due := v.storeDown.due(time.Now()); !due && !all {
		return
	} else if retry {
		all = true
	}
	v.mu.Lock()
	sts := make([]*agentState, 0, len(v.agents))
	for _, st := range v.agents {
		sts = append(sts, st)
	}
	v.mu.Unlock()
	cutoff := time.Now().Add(-routineWriteEvery).UnixNano()
	batch := sts[:0] // filtered in place
	for _, st := range sts {
		if !st.dirty.Load() || (!all && st.lastWrite.Load() > cutoff) {
			continue
		}
		st.dirty.Store(false)
		batch = append(batch, st)
	}
	if len(batch) > 0 {
		v.writeRecords(batch, false)
	}
}

// writeRecords writes the records of sts in one transaction, with the TLS sessions that changed since
// they were last saved; a deleted agent is never written back. With coalesce, the transaction is
// shared with other goroutines' writes (bbolt's Batch): when thousands of agents change state at once
// (a restart, a network outage) they share a few disk syncs instead of taking turns for one each.
func (v *Verifier) writeRecords(sts []*agentState, coalesce bool) {
	type item struct {
		st      *agentState
		id      string
		raw     []byte
		session []byte
		gen     uint32
	}
	items := make([]item, 0, len(sts))
	for _, st := range sts {
		st.mu.Lock()
		if st.deleted {
			st.mu.Unlock()
			continue
		}
		raw, err := encodeRecord(&st.rec)
		id := st.rec.AgentID
		st.storedState = st.rec.State
		st.lastWrite.Store(time.Now().UnixNano())
		var session []byte
		var gen uint32
		if st.tr.SessionGen() != st.savedSession {
			session, gen = st.tr.Session()
		}
		st.mu.Unlock()
		if err != nil {
			v.log.Error().Err(err).Str("agent", id).Msg("cannot save agent state")
			continue
		}
		items = append(items, item{st, id, raw, session, gen})
	}
	if len(items) == 0 {
		return
	}
	err := v.writeTx(coalesce, func(tx *store.Tx) error {
		for _, it := range items {
			// A concurrent delete wins: never resurrect a deleted agent.
			if ok, err := tx.Has(bucketAgents, []byte(it.id)); err != nil || !ok {
				continue
			}
			if err := tx.PutOwned(bucketAgents, []byte(it.id), it.raw); err != nil {
				return err
			}
			if it.session != nil {
				if err := tx.PutOwned(bucketSessions, []byte(it.id), it.session); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		v.storeDown.failed(v.log, err, len(items))
		for _, it := range items {
			it.st.mu.Lock()
			it.st.storedState = -1 // unknown: the next state is written at once
			it.st.mu.Unlock()
			it.st.dirty.Store(true) // the flusher tries again
		}
		return
	}
	v.storeDown.succeeded(v.log, len(items))
	// Saved sessions leave memory; a connection that needs one reads it back.
	for _, it := range items {
		if it.session != nil {
			it.st.mu.Lock()
			it.st.savedSession = it.gen
			it.st.mu.Unlock()
			it.st.tr.DropSession(it.gen)
		}
	}
}

// storeDown keeps a failing disk (full, read-only, gone) from turning every attestation into a failed
// write and an error line: after a write fails, state changes too are left to the flusher, which
// tries again after 250 ms, then twice as long each time up to 10 s, and then writes every dirty agent
// in one transaction. The failure is logged when it starts, every 30 s while it lasts (with the number
// of failed writes) and when writes succeed again. Polling goes on meanwhile; what a crash would lose
// is only what has not reached the disk yet.
type storeDown struct {
	mu       sync.Mutex
	since    time.Time // when writes started to fail; zero while they succeed
	failures int       // failed writes since then
	delay    time.Duration
	retryAt  time.Time
	logged   time.Time
	down     atomic.Bool // since is set (read without mu on every persist)
}

const (
	storeRetryMin  = flushInterval
	storeRetryMax  = 10 * time.Second
	storeLogRepeat = 30 * time.Second
)

func (d *storeDown) failing() bool { return d.down.Load() }

// due reports whether the flusher should write now: always while writes succeed (retry false), and
// while they fail once the retry delay has passed (retry true).
func (d *storeDown) due(now time.Time) (retry, due bool) {
	if !d.down.Load() {
		return false, true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return true, !now.Before(d.retryAt)
}

func (d *storeDown) failed(log zerolog.Logger, err error, agents int) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failures++
	if d.since.IsZero() {
		d.since, d.delay, d.logged = now, storeRetryMin, now
		d.down.Store(true)
		log.Error().Err(err).Int("agents", agents).Msg("cannot save agent state; polling goes on and the writes are retried")
	} else {
		d.delay = min(2*d.delay, storeRetryMax)
		if now.Sub(d.logged) >= storeLogRepeat {
			d.logged = now
			log.Error().Err(err).Int("failed_writes", d.failures).Time("since", d.since).Msg("still cannot save agent state")
		}
	}
	d.retryAt = now.Add(d.delay)
}

func (d *storeDown) succeeded(log zerolog.Logger, agents int) {
	if !d.down.Load() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.since.IsZero() {
		return
	}
	log.Warn().Int("failed_writes", d.failures).Dur("after", time.Since(d.since)).Int("agents", agents).Msg("agent state saved again")
	d.since, d.failures = time.Time{}, 0
	d.down.Store(false)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func itoa(n int) string { return strconv.Itoa(n) }

// isCertError reports whether err is the agent's TLS certificate failing verification against the pin:
// an impostor or a changed certificate, never retried.
func isCertError(err error) bool {
	var cve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	return errors.Is(err, transport.ErrPinMismatch) || errors.As(err, &cve) || errors.As(err, &ua) ||
		errors.As(err, &ci) || errors.As(err, &he)
}

// provideV sends V, wrapped for the agent's NK, after an attestation that passed every policy, unless it
// was sent already. It returns false when V still has to be sent (unreachable: retry later), moving the
// agent to Failed after max_retries.
func (v *Verifier) provideV(ctx context.Context, st *agentState, retries *int) bool {
	st.mu.Lock()
	vHalf, sent, nkPEM := st.rec.V, st.rec.VSent, st.rec.NKPEM
	st.mu.Unlock()
	if vHalf == nil || sent {
		return true
	}
	nk, err := payload.ParseNK(nkPEM)
	if err != nil {
		v.fail(st, api.StateFailed, []policy.Failure{{EventID: "no_v", Context: map[string]any{"message": "the agent's NK is unusable: " + err.Error()}}})
		return false
	}
	wrapped, err := payload.WrapKey(nil, nk, vHalf)
	if err != nil {
		v.fail(st, api.StateFailed, []policy.Failure{{EventID: "no_v", Context: map[string]any{"message": err.Error()}}})
		return false
	}
	v.setState(st, api.StateProvideV)
	rctx, cancel := context.WithTimeout(ctx, v.cfg.RequestTimeout)
	err = st.client.PostVKey(rctx, wrapped)
	cancel()
	if err == nil {
		st.mu.Lock()
		st.rec.VSent = true
		st.rec.State = api.StateGetQuote
		st.mu.Unlock()
		v.persist(st, true)
		v.agentLog(st).Info().Msg("V delivered to the agent")
		*retries = 0
		return true
	}
	if code := client.StatusCode(err); code != 0 && code < 500 && code != http.StatusRequestTimeout {
		v.fail(st, api.StateFailed, []policy.Failure{{EventID: "no_v", Context: map[string]any{"message": "agent refused V: " + err.Error()}}})
		return false
	}
	if *retries >= v.cfg.MaxRetries {
		v.fail(st, api.StateFailed, []policy.Failure{{EventID: "not_reachable_v",
			Context: map[string]any{"message": "could not deliver V after " + itoa(*retries) + " retries: " + err.Error()}}})
		return false
	}
	*retries++
	v.setState(st, api.StateProvideVRetry)
	v.agentLog(st).Info().Err(err).Int("retry", *retries).Msg("cannot deliver V; will retry")
	return false
}

// resumeGate bounds how many first rounds of resumed agents run at once. A restarted verifier resumes
// every agent within a second, and each first round is a TLS handshake (resumed, but with a key
// exchange on both sides) and a first quote. Run all at once, thousands of rounds share the CPU, each
// holds its connection, handshake state and a grown goroutine stack for seconds, and the collector
// scans them all: with 5,000 agents on 2 cores the verifier peaked at 410-480 MB and took as long.
// Through the gate, rounds queue (a closure each, in order) and at most slots run; a slot is free
// again when its round ends or after hold, so agents that are down or slow to answer delay the others
// by hold at most. Later rounds do not pass the gate.
type resumeGate struct {
	run  func(func()) // starts a round (the verifier's workers)
	hold time.Duration

	mu    sync.Mutex
	free  int
	queue []func()
}

const (
	// resumeSlotsPerCPU first rounds run at once per CPU: enough to keep the CPUs busy while rounds
	// wait for their agents. On 2 CPUs, 5,000 agents were all polled again as soon with 128 slots as
	// with 512 or no bound (2.3-3.2 s, within the noise), at a peak RSS of 290-305 MB against 300-370
	// and 380-460 MB; with 32 slots it took a third longer.
	resumeSlotsPerCPU = 64
	// resumeHold frees the slot of a first round that has not ended.
	resumeHold = 250 * time.Millisecond
)

func newResumeGate(slots int, hold time.Duration, run func(func())) *resumeGate {
	return &resumeGate{run: run, hold: hold, free: max(1, slots)}
}

// enter runs f when a slot is free, at once or after the rounds queued before it.
func (g *resumeGate) enter(f func()) {
	g.mu.Lock()
	if g.free == 0 {
		g.queue = append(g.queue, f)
		g.mu.Unlock()
		return
	}
	g.free--
	g.mu.Unlock()
	g.start(f)
}

func (g *resumeGate) start(f func()) {
	g.run(func() {
		var once sync.Once
		release := func() { once.Do(g.release) }
		t := time.AfterFunc(g.hold, release)
		f()
		t.Stop()
		release()
	})
}

// release hands a slot to the next queued round, or frees it.
func (g *resumeGate) release() {
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.free++
		g.queue = nil // the resume is over: let the queue's array go
		g.mu.Unlock()
		return
	}
	f := g.queue[0]
	g.queue[0] = nil
	g.queue = g.queue[1:]
	g.mu.Unlock()
	g.start(f)
}
