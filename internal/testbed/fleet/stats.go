package fleet

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// LateFactor is how much longer than the quote interval a gap between two polls of one agent may be
// before the second poll counts as late.
const LateFactor = 1.1

// recorder collects the timings of the quote requests the fleet serves.
type recorder struct {
	mu     sync.Mutex
	since  time.Time
	gaps   []time.Duration
	rounds []time.Duration
	errors int
}

func (r *recorder) add(gap, round time.Duration, failed bool) {
	r.mu.Lock()
	if gap > 0 {
		r.gaps = append(r.gaps, gap)
	}
	r.rounds = append(r.rounds, round)
	if failed {
		r.errors++
	}
	r.mu.Unlock()
}

// Percentiles summarises a set of durations.
type Percentiles struct {
	P50, P90, P99, Max time.Duration
}

// Summarize returns the nearest-rank percentiles of d (sorted in place).
func Summarize(d []time.Duration) Percentiles { return percentiles(d) }

// percentiles returns the nearest-rank percentiles of d (sorted in place).
func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(d))+0.5) - 1
		return d[max(0, min(i, len(d)-1))]
	}
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: d[len(d)-1]}
}

// Stats are the timings of the quote requests served since ResetStats.
type Stats struct {
	// Window is the time since ResetStats; Requests the integrity quote requests served in it (Rate per
	// second) and Errors those answered with a status other than 200.
	Window   time.Duration
	Requests int
	Rate     float64
	Errors   int
	// AgentRound is request arrival to response written, at the agent (TLS and network excluded).
	AgentRound Percentiles
	// Gap is the time between two consecutive quote requests to one agent (the first one an agent
	// receives has no gap), Gaps their number.
	Gap  Percentiles
	Gaps int
	// VerifierRound is Gap minus the quote interval: a verifier that waits quote_interval after each
	// round spends this much on one round (request, answer, checks, storage) plus its timer's delay.
	VerifierRound Percentiles
	// Late counts gaps longer than LateFactor × the interval; LateShare is Late / Gaps.
	Late      int
	LateShare float64
	// Unpolled counts the agents that received no quote request in the window.
	Unpolled int
}

// ResetStats starts a new measurement window.
func (f *Fleet) ResetStats() {
	f.rec.mu.Lock()
	f.rec.since = time.Now()
	f.rec.gaps = f.rec.gaps[:0]
	f.rec.rounds = f.rec.rounds[:0]
	f.rec.errors = 0
	f.rec.mu.Unlock()
	for _, a := range f.agents {
		a.atReset.Store(a.requests.Load())
	}
}

// Stats returns the timings since ResetStats (or since the fleet started) for a verifier polling every
// interval.
func (f *Fleet) Stats(interval time.Duration) Stats {
	f.rec.mu.Lock()
	gaps := slices.Clone(f.rec.gaps)
	rounds := slices.Clone(f.rec.rounds)
	s := Stats{Window: time.Since(f.rec.since), Requests: len(f.rec.rounds), Errors: f.rec.errors, Gaps: len(gaps)}
	f.rec.mu.Unlock()
	for _, a := range f.agents {
		if a.requests.Load() == a.atReset.Load() {
			s.Unpolled++
		}
	}
	if s.Window > 0 {
		s.Rate = float64(s.Requests) / s.Window.Seconds()
	}
	limit := time.Duration(float64(interval) * LateFactor)
	vr := make([]time.Duration, len(gaps))
	for i, g := range gaps {
		if g > limit {
			s.Late++
		}
		vr[i] = max(0, g-interval)
	}
	if s.Gaps > 0 {
		s.LateShare = float64(s.Late) / float64(s.Gaps)
	}
	s.AgentRound, s.Gap, s.VerifierRound = percentiles(rounds), percentiles(gaps), percentiles(vr)
	return s
}

// MarkEpoch makes now the moment after which each agent's first quote request is noted (see
// WaitAllPolled), forgetting the notes of a previous epoch, and returns it.
func (f *Fleet) MarkEpoch() time.Time {
	for _, a := range f.agents {
		a.firstSince.Store(0)
	}
	now := time.Now()
	f.epoch.Store(now.UnixNano())
	return now
}

// PolledSinceEpoch returns how many agents have received a quote request since MarkEpoch.
func (f *Fleet) PolledSinceEpoch() int {
	n := 0
	for _, a := range f.agents {
		if a.firstSince.Load() != 0 {
			n++
		}
	}
	return n
}

// WaitAllPolled waits until every agent has received a quote request since MarkEpoch and returns how
// long after the epoch the last of them arrived.
func (f *Fleet) WaitAllPolled(ctx context.Context) (time.Duration, error) {
	ep := f.epoch.Load()
	if ep == 0 {
		return 0, fmt.Errorf("fleet: WaitAllPolled without MarkEpoch")
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		latest, all := int64(0), true
		for _, a := range f.agents {
			v := a.firstSince.Load()
			if v == 0 {
				all = false
				break
			}
			latest = max(latest, v)
		}
		if all {
			return time.Duration(latest - ep), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("fleet: %d of %d agents polled since the epoch: %w", f.PolledSinceEpoch(), len(f.agents), ctx.Err())
		case <-t.C:
		}
	}
}

// PolledAfterEpoch returns the time from MarkEpoch to the first quote request of the agent at quantile
// q (0.5: half the agents had been polled by then); agents not polled yet are left out.
func (f *Fleet) PolledAfterEpoch(q float64) time.Duration {
	ep := f.epoch.Load()
	var ds []int64
	for _, a := range f.agents {
		if v := a.firstSince.Load(); v != 0 {
			ds = append(ds, v-ep)
		}
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return time.Duration(ds[min(len(ds)-1, int(q*float64(len(ds))))])
}

// WaitRequests waits until every agent has received at least n integrity quote requests in all.
func (f *Fleet) WaitRequests(ctx context.Context, n uint64) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		behind := 0
		for _, a := range f.agents {
			if a.requests.Load() < n {
				behind++
			}
		}
		if behind == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fleet: %d of %d agents have fewer than %d quote requests: %w", behind, len(f.agents), n, ctx.Err())
		case <-t.C:
		}
	}
}
