package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/agent"
	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/revocation"
	"github.com/keylime-go/keylime/internal/testbed"
)

// TestRevocationRetriesAndForgeries: forged revocation messages posted to a running agent over mTLS
// (unsigned, bad signature, signed by another key, altered body) are refused with 400 and run nothing;
// when an agent really fails, the verifier retries a webhook that answered 503 and an agent whose first
// delivery failed, and both end up with the one message, signed by the RevocationNotifier key.
func TestRevocationRetriesAndForgeries(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	var mu sync.Mutex
	var hookCalls int
	var hooked []revocation.Envelope
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if hookCalls++; hookCalls == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var env revocation.Envelope
		if json.Unmarshal(b, &env) == nil {
			hooked = append(hooked, env)
		}
	}))
	defer hook.Close()
	s.StartVerifier(VerifierOptions{NotifyAgents: true, WebhookURL: hook.URL})

	actions := t.TempDir()
	got := filepath.Join(t.TempDir(), "revoked.json")
	if err := os.WriteFile(filepath.Join(actions, "record"), []byte("#!/bin/sh\ncp \"$1\" "+got+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	watcher := s.StartAgent(AgentOptions{Revocation: agent.RevocationConfig{CertPath: s.RevocationCert(), ActionsDir: actions, Actions: []string{"record"}}})
	if _, err := s.WaitActive(watcher.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	// The verifier reaches the watcher through a proxy that fails its first revocation delivery.
	p := startKeyProxy(t, s, watcher, "")
	p.mu.Lock()
	p.failOnce = "/notifications/revocation"
	p.mu.Unlock()
	pol, err := watcher.PCRPolicy(15)
	if err != nil {
		t.Fatal(err)
	}
	req, err := s.AddRequest(watcher.UUID(), pol)
	if err != nil {
		t.Fatal(err)
	}
	req.CloudAgentPort = api.Port(p.Port)
	if err := s.Verifier.Add(context.Background(), watcher.UUID(), req); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitVerifier(watcher.UUID(), 10*time.Second, Attested(1)); err != nil {
		t.Fatal(err)
	}

	// Forgeries, straight to the agent.
	ac := agentClient(t, s, watcher)
	ip, port := "127.0.0.1", 9002
	msg := (&revocation.Message{Type: "revocation", IP: &ip, AgentID: "some-agent", Port: &port, TPMPolicy: "{}", MetaData: "{}",
		EventTime: revocation.EventTime(time.Now()), EventID: "pcr_validation.invalid_pcr_15", SeverityLabel: "emergency", Context: "{}"}).Encode()
	sig, err := revocation.Sign(s.RevocationKey(), msg)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherSig, _ := revocation.Sign(other, msg)
	raw, _ := base64.StdEncoding.DecodeString(sig)
	raw[0] ^= 0x01
	for _, tc := range []struct{ name, msg, sig string }{
		{"unsigned", msg, ""},
		{"bad signature", msg, base64.StdEncoding.EncodeToString(raw)},
		{"other key", msg, otherSig},
		{"altered body", strings.Replace(msg, "some-agent", "another-agent", 1), sig},
	} {
		err := ac.Revoke(context.Background(), tc.msg, tc.sig)
		if code := client.StatusCode(err); code != http.StatusBadRequest {
			t.Errorf("%s: got %v (HTTP %d), want 400", tc.name, err, code)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(got); err == nil {
		t.Fatal("a forged message ran the revocation action")
	}

	victim := startAttested(t, s, AgentOptions{})
	d := sha256.Sum256([]byte("tamper"))
	if err := victim.Device.PCRExtend(15, tpm2.TPMAlgSHA256, d[:]); err != nil {
		t.Fatal(err)
	}
	var raw2 []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		var m revocation.Message
		if b, err := os.ReadFile(got); err == nil && json.Unmarshal(b, &m) == nil {
			if m.AgentID != victim.UUID() {
				t.Fatalf("action got a message about %s", m.AgentID)
			}
			raw2 = b
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watcher never ran its action: the verifier did not retry after the 503")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := p.Hits("/notifications/revocation"); n != 2 {
		t.Errorf("verifier delivered to the watcher in %d requests, want 2 (one 503, one retry)", n)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n, calls := len(hooked), hookCalls
		mu.Unlock()
		if n == 1 && calls == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook: %d calls, %d messages; want 2 calls (one 503, one retry), 1 message", calls, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	env := hooked[0]
	mu.Unlock()
	if _, err := revocation.Verify(&s.RevocationKey().PublicKey, env); err != nil || env.Msg != string(raw2) {
		t.Errorf("webhook message: %v; same as the agent's: %v", err, env.Msg == string(raw2))
	}
}
