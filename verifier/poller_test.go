package verifier

import (
	"encoding/json"
	"net"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"
)

// hangingAgent accepts connections and never answers, like an agent whose machine froze.
func hangingAgent(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func addBody(t *testing.T, port int) string {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"cloudagent_ip": "127.0.0.1", "cloudagent_port": port, "tpm_policy": "{}", "mb_policy_name": "", "metadata": "{}",
		"accept_tpm_hash_algs": []string{"sha256"}, "accept_tpm_encryption_algs": []string{"rsa"},
		"accept_tpm_signing_algs": []string{"rsassa"}, "ak_tpm": fixtureB64(t, "ak-rsa.tpm2b"), "mtls_cert": selfSignedPEM(t),
		"supported_version": "2.1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// TestDeleteCancelsRunningRound: deleting an agent whose round hangs on a request cancels the request
// instead of waiting for the request timeout, and the agent is gone.
func TestDeleteCancelsRunningRound(t *testing.T) {
	tv := startVerifier(t, func(c *Config) { c.RequestTimeout = time.Minute })
	if code, env := tv.do(t, "POST", "/v2.1/agents/frozen", addBody(t, hangingAgent(t))); code != 200 {
		t.Fatalf("add: %d %s", code, env.Status)
	}
	time.Sleep(200 * time.Millisecond) // the first round is now waiting for the agent
	start := time.Now()
	if code, env := tv.do(t, "DELETE", "/v2.1/agents/frozen", ""); code != 200 && code != 202 {
		t.Fatalf("delete: %d %s", code, env.Status)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("delete took %v: the running round was not cancelled", d)
	}
	if code, _ := tv.do(t, "GET", "/v2.1/agents/frozen", ""); code != 404 {
		t.Fatalf("deleted agent answered %d, want 404", code)
	}
}

// TestShutdownStopsWaitingPollers: when the verifier's context ends, pollers waiting for their next
// round (here a retry an hour away) and rounds hanging on an agent all stop, so Serve returns at once.
func TestShutdownStopsWaitingPollers(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close() // connections are refused: the agent is retried after RetryInterval

	tv := startVerifier(t, func(c *Config) {
		c.RetryInterval, c.MaxRetries, c.RequestTimeout = time.Hour, 5, time.Minute
	})
	for id, port := range map[string]int{"waiting": deadPort, "hanging": hangingAgent(t)} {
		if code, env := tv.do(t, "POST", "/v2.1/agents/"+id, addBody(t, port)); code != 200 {
			t.Fatalf("add %s: %d %s", id, code, env.Status)
		}
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	tv.stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Serve returned %v after its context ended", d)
	}
}

// gcPercent reads the garbage collector's current GOGC.
func gcPercent(t *testing.T) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatal("no /gc/gogc:percent metric")
	}
	return s[0].Value.Uint64()
}

// TestResumeRelaxesGC: a restarted verifier raises GOGC while it resumes its agents and puts it back
// once every resumed agent had its first round.
func TestResumeRelaxesGC(t *testing.T) {
	db := filepath.Join(t.TempDir(), "verifier.db")
	tv := startVerifier(t, func(c *Config) { c.DBPath = db })
	if code, env := tv.do(t, "POST", "/v2.1/agents/resumed", addBody(t, hangingAgent(t))); code != 200 {
		t.Fatalf("add: %d %s", code, env.Status)
	}
	tv.stop()

	prev := debug.SetGCPercent(50)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	// The agent never answers: its first round lasts the request timeout.
	startVerifier(t, func(c *Config) { c.DBPath, c.RequestTimeout = db, 2*time.Second })
	waitFor := func(want uint64, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for gcPercent(t) != want {
			if time.Now().After(deadline) {
				t.Fatalf("GOGC %d, want %d", gcPercent(t), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(restartGCPercent, time.Second)
	waitFor(50, 10*time.Second)
}

// TestResumeGate: at most slots rounds run at once, and a round that does not end gives its slot up
// after hold.
func TestResumeGate(t *testing.T) {
	const slots, n = 3, 20
	var (
		mu         sync.Mutex
		running    int
		maxRunning int
		started    int
		hung       = make(chan struct{})
	)
	g := newResumeGate(slots, 50*time.Millisecond, func(f func()) { go f() })
	for i := range n {
		g.enter(func() {
			mu.Lock()
			running++
			started++
			maxRunning = max(maxRunning, running)
			mu.Unlock()
			if i < slots { // the first rounds hang: the rest start only as their slots are handed on
				<-hung
			} else {
				time.Sleep(5 * time.Millisecond)
			}
			mu.Lock()
			running--
			mu.Unlock()
		})
	}
	waitGate(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return started == n
	}, "every round started")
	close(hung)
	waitGate(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.free == slots && g.queue == nil
	}, "every slot free and the queue gone")
	mu.Lock()
	defer mu.Unlock()
	// The hung rounds, and the rounds their slots were handed on to.
	if maxRunning > 2*slots {
		t.Errorf("%d rounds ran at once, want at most %d", maxRunning, 2*slots)
	}
}

// TestResumeGateOrder: queued rounds run in the order they came.
func TestResumeGateOrder(t *testing.T) {
	var (
		mu    sync.Mutex
		order []int
	)
	g := newResumeGate(1, time.Minute, func(f func()) { go f() })
	const n = 50
	for i := range n {
		g.enter(func() {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		})
	}
	waitGate(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == n
	}, "every round ran")
	mu.Lock()
	defer mu.Unlock()
	for i, got := range order {
		if got != i {
			t.Fatalf("rounds ran in order %v", order)
		}
	}
}

func waitGate(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached within 10s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
