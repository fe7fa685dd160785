package verifier

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/revocation"
	"github.com/keylime-go/keylime/internal/testbed"
)

// TestRevocationQueueDropsOldest: while the webhook is stuck on one message, a full queue drops its
// oldest messages (logging each), keeps the newest, and delivers them once the webhook answers.
func TestRevocationQueueDropsOldest(t *testing.T) {
	var (
		mu       sync.Mutex
		got      []string
		arrived  = make(chan struct{}, 16)
		release  = make(chan struct{})
		released sync.Once
	)
	hook := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env revocation.Envelope
		if err := json.NewDecoder(r.Body).Decode(&env); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, env.Msg)
		first := len(got) == 1
		mu.Unlock()
		arrived <- struct{}{}
		if first {
			<-release
		}
	}))
	t.Cleanup(hook.Close)
	t.Cleanup(func() { released.Do(func() { close(release) }) })

	logs := &testbed.LogBuffer{}
	tv := startVerifier(t, func(c *Config) {
		c.WebhookURL, c.WebhookClient, c.NotifyQueue = hook.URL, hook.Client(), 2
		c.RequestTimeout, c.MaxRetries = 10*time.Second, 0
		c.Log = zerolog.New(logs)
	})
	n := waitNotifier(t, tv.v)
	send := func(i int) {
		id := fmt.Sprintf("agent-%d", i)
		n.enqueue(notification{env: revocation.Envelope{Msg: id, Signature: "sig"}, agentID: id})
	}
	waitArrival := func() {
		t.Helper()
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("the webhook received nothing")
		}
	}

	send(1)
	waitArrival() // agent-1 is in flight, the webhook holds it
	for i := 2; i <= 5; i++ {
		send(i) // the queue holds 2: agent-2 and agent-3 are dropped for agent-4 and agent-5
	}
	released.Do(func() { close(release) })
	waitArrival()
	waitArrival()
	mu.Lock()
	delivered := strings.Join(got, " ")
	mu.Unlock()
	if want := "agent-1 agent-4 agent-5"; delivered != want {
		t.Fatalf("webhook received %q, want %q", delivered, want)
	}
	for _, id := range []string{"agent-2", "agent-3"} {
		if !strings.Contains(logs.String(), `"agent":"`+id+`","notifier":"webhook","message":"revocation queue full`) {
			t.Errorf("no log of %s being dropped:\n%s", id, logs)
		}
	}
}

// waitNotifier returns the verifier's notifier once Serve has started it.
func waitNotifier(t *testing.T, v *Verifier) *notifier {
	t.Helper()
	for range 200 {
		v.mu.Lock()
		n := v.notifier
		v.mu.Unlock()
		if n != nil {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the verifier did not start its notifier")
	return nil
}
