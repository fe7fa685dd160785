package verifier

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/revocation"
	"github.com/keylime-go/keylime/policy"
)

// notification is one signed revocation message waiting to be delivered.
type notification struct {
	env     revocation.Envelope
	agentID string // the failed agent, not notified itself
}

// notifier delivers revocation messages from bounded queues, one per kind of receiver (the other
// agents, the webhook), each with its own worker: a slow or dead receiver never stalls polling nor the
// other kind of receiver. When a queue is full its oldest message is dropped (and logged).
type notifier struct {
	v     *Verifier
	sinks []*sink
}

// sink is one kind of receiver with its queue.
type sink struct {
	name    string
	queue   chan notification
	deliver func(context.Context, notification)
}

func newNotifier(v *Verifier) *notifier {
	size := v.cfg.NotifyQueue
	if size <= 0 {
		size = 1024
	}
	n := &notifier{v: v}
	if v.cfg.NotifyAgents {
		n.sinks = append(n.sinks, &sink{name: "agent", queue: make(chan notification, size), deliver: n.toAgents})
	}
	if v.cfg.WebhookURL != "" {
		n.sinks = append(n.sinks, &sink{name: "webhook", queue: make(chan notification, size), deliver: n.toWebhook})
	}
	return n
}

func (n *notifier) enqueue(m notification) {
	for _, s := range n.sinks {
		s.enqueue(n.v, m)
	}
}

func (s *sink) enqueue(v *Verifier, m notification) {
	for {
		select {
		case s.queue <- m:
			return
		default:
		}
		select {
		case old := <-s.queue:
			v.log.Error().Str("agent", old.agentID).Str("notifier", s.name).Msg("revocation queue full; dropped the oldest notification")
		default:
		}
	}
}

// run delivers notifications until ctx ends.
func (n *notifier) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range n.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case m := <-s.queue:
					s.deliver(ctx, m)
				}
			}
		}()
	}
	wg.Wait()
}

// toAgents sends a message to every other attested agent, 16 at a time.
func (n *notifier) toAgents(ctx context.Context, m notification) {
	v := n.v
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, st := range v.attestedAgents(m.agentID) {
		wg.Add(1)
		sem <- struct{}{}
		go func(st *agentState) {
			defer wg.Done()
			defer func() { <-sem }()
			err := n.retry(ctx, func(c context.Context) error { return st.client.Revoke(c, m.env.Msg, m.env.Signature) })
			ev := v.log.Info()
			if err != nil {
				ev = v.log.Warn().Err(err)
			}
			ev.Str("agent", st.rec.AgentID).Str("revoked", m.agentID).Msg("revocation notification to agent")
		}(st)
	}
	wg.Wait()
}

func (n *notifier) toWebhook(ctx context.Context, m notification) {
	err := n.retry(ctx, func(c context.Context) error { return n.webhook(c, m.env) })
	ev := n.v.log.Info()
	if err != nil {
		ev = n.v.log.Warn().Err(err)
	}
	ev.Str("url", n.v.cfg.WebhookURL).Str("revoked", m.agentID).Msg("revocation notification to webhook")
}

// retry runs f up to max_retries+1 times, waiting retry_interval (exponentially when configured).
func (n *notifier) retry(ctx context.Context, f func(context.Context) error) error {
	var err error
	for attempt := 0; attempt <= n.v.cfg.MaxRetries; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(n.v.retryDelay(attempt))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		c, cancel := context.WithTimeout(ctx, n.v.cfg.RequestTimeout)
		err = f(c)
		cancel()
		if err == nil {
			return nil
		}
	}
	return err
}

func (n *notifier) webhook(ctx context.Context, env revocation.Envelope) error {
	body, _ := json.Marshal(env)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.v.cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.v.cfg.WebhookClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("webhook answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// attestedAgents are the agents currently attesting successfully, except the one named.
func (v *Verifier) attestedAgents(except string) []*agentState {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []*agentState
	for id, st := range v.agents {
		if id == except {
			continue
		}
		st.mu.Lock()
		ok := (st.rec.State == api.StateGetQuote || st.rec.State == api.StateProvideV) && st.rec.AttestationCount > 0
		st.mu.Unlock()
		if ok {
			out = append(out, st)
		}
	}
	return out
}

// notifyFailure signs and queues the revocation message for st's failure.
func (v *Verifier) notifyFailure(st *agentState, state int, fails []policy.Failure) {
	if v.notifier == nil || (!v.cfg.NotifyAgents && v.cfg.WebhookURL == "") {
		return
	}
	st.mu.Lock()
	rec := st.rec
	st.mu.Unlock()
	typ := "revocation"
	if state == api.StateFailed {
		// Unreachable agents: Keylime reports a communication error, and only once the agent had attested.
		if rec.AttestationCount == 0 && fails[0].EventID == "not_reachable" {
			return
		}
		typ = "comm_error"
	}
	ip, port := rec.IP, rec.Port
	m := &revocation.Message{
		Type: typ, IP: &ip, AgentID: rec.AgentID, Port: &port, TPMPolicy: rec.TPMPolicy, MetaData: rec.Metadata,
		EventTime: revocation.EventTime(v.cfg.Now()), EventID: fails[0].EventID, SeverityLabel: "emergency",
		Context: fails[0].ContextJSON(),
	}
	msg := m.Encode()
	key := v.cfg.RevocationKey
	if rec.RevocationKey != "" {
		if k, err := parseRSAPrivatePEM(rec.RevocationKey); err == nil {
			key = k
		} else {
			v.log.Warn().Err(err).Str("agent", rec.AgentID).Msg("the agent's revocation_key is unusable; signing with the verifier's key")
		}
	}
	sig := ""
	if key != nil {
		var err error
		if sig, err = revocation.Sign(key, msg); err != nil {
			v.log.Error().Err(err).Msg("cannot sign the revocation message")
			return
		}
	}
	v.notifier.enqueue(notification{env: revocation.Envelope{Msg: msg, Signature: sig}, agentID: rec.AgentID})
}

func parseRSAPrivatePEM(s string) (*rsa.PrivateKey, error) {
	k, err := ca.ParseKeyPEM([]byte(s))
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("revocation key is %T, want RSA", k)
	}
	return rk, nil
}
