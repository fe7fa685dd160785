package verifier

import (
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/store"
)

// TestFailingDisk: while verifier.db cannot be written, state changes do not each try the disk and
// log an error; the flusher retries with a growing delay, and once the disk is back the newest state
// is written and the recovery logged.
func TestFailingDisk(t *testing.T) {
	var failing atomic.Bool
	var attempts atomic.Int64
	logs := &testbed.LogBuffer{}
	tv := startPreparedVerifier(t, func(v *Verifier) {
		write := v.writeTx
		v.writeTx = func(coalesce bool, fn func(*store.Tx) error) error {
			if failing.Load() {
				attempts.Add(1)
				return errors.New("no space left on device (injected)")
			}
			return write(coalesce, fn)
		}
	}, func(c *Config) {
		c.RequestTimeout = time.Minute // the agent never answers: its round changes nothing
		c.Log = zerolog.New(logs)
	})
	if code, env := tv.do(t, "POST", "/v2.1/agents/a", addBody(t, hangingAgent(t))); code != 200 {
		t.Fatalf("add: %d %s", code, env.Status)
	}
	v := tv.v
	v.mu.Lock()
	st := v.agents["a"]
	v.mu.Unlock()
	stored := func() int {
		t.Helper()
		raw, err := v.db.Get(bucketAgents, []byte("a"))
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			N int `json:"attestation_count"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		return r.N
	}
	change := func(n int) {
		st.mu.Lock()
		st.rec.AttestationCount = n
		st.mu.Unlock()
		v.persist(st, true) // as a state change does
	}

	failing.Store(true)
	const changes = 200
	for i := 1; i <= changes; i++ {
		change(i)
		time.Sleep(5 * time.Millisecond)
	}
	// About 1.2 s of failing disk: the first write, and the flusher's retries after 0.25, 0.5 s, ...
	if n := attempts.Load(); n < 2 || n > 8 {
		t.Errorf("%d write attempts for %d changes over a failing disk, want the first and a few retries", n, changes)
	}
	if n := strings.Count(logs.String(), "cannot save agent state"); n != 1 {
		t.Errorf("%d error lines for a failing disk, want 1:\n%s", n, logs.String())
	}

	failing.Store(false)
	deadline := time.Now().Add(15 * time.Second)
	for stored() != changes {
		if time.Now().After(deadline) {
			t.Fatalf("stored attestation_count %d after the disk came back, want %d", stored(), changes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "agent state saved again") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
	// Writes go straight to the disk again.
	change(changes + 1)
	if got := stored(); got != changes+1 {
		t.Errorf("stored attestation_count %d right after a state change, want %d", got, changes+1)
	}
}
