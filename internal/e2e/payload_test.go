package e2e

import (
	"archive/zip"
	"bytes"
	"context"
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
	"github.com/keylime-go/keylime/internal/payload"
	"github.com/keylime-go/keylime/internal/revocation"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/transport"
)

// agentClient is a tenant-side client of an agent, pinned to its registered certificate.
func agentClient(t *testing.T, s *System, a *Agent) *client.Agent {
	t.Helper()
	cert, err := transport.LoadKeyPair(filepath.Join(a.DataDir, "server-cert.crt"), filepath.Join(a.DataDir, "server-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cl := s.ClientTLS()
	conf := transport.PinnedClientConfig(&cl.Cert, cert.Leaf)
	return client.NewAgent(transport.NewHTTPClient(conf, 5*time.Second), "https://127.0.0.1:"+itoa(a.Port), api.CurrentVersion)
}

// sendU does the tenant's half: U wrapped for the agent's NK, the auth_tag and the sealed payload.
func sendU(t *testing.T, c *client.Agent, id string, k, u, zipped []byte) {
	t.Helper()
	pem, err := c.PubKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nk, err := payload.ParseNK(pem)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, _ := payload.WrapKey(nil, nk, u)
	sealed, _ := payload.Encrypt(nil, k, zipped)
	if err := c.PostUKey(context.Background(), &api.UKeyRequest{AuthTag: payload.Tag(k, id), EncryptedKey: wrapped, Payload: sealed}); err != nil {
		t.Fatal(err)
	}
}

func zipFiles(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for n, b := range files {
		w, _ := zw.Create(n)
		_, _ = w.Write([]byte(b))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPayloadOnlyAfterGoodAttestation: V (and so the payload) reaches an agent only after a quote that
// passed every policy; an agent failing its first attestation never receives V.
func TestPayloadOnlyAfterGoodAttestation(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	good := s.StartAgent(AgentOptions{})
	bad := s.StartAgent(AgentOptions{})
	for _, a := range []*Agent{good, bad} {
		if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	zipped := zipFiles(t, map[string]string{"autorun.sh": "#!/bin/sh\ndate > marker\n"})
	for _, tc := range []struct {
		a      *Agent
		policy string
	}{
		{good, ""},
		{bad, `{"15": ["` + strings.Repeat("ab", 32) + `"]}`}, // PCR 15 is zero: the first quote fails
	} {
		k, u, v, _ := payload.Split(nil)
		sendU(t, agentClient(t, s, tc.a), tc.a.UUID(), k, u, zipped)
		if _, err := os.Stat(filepath.Join(tc.a.DataDir, "secure", "unzipped", "marker")); err == nil {
			t.Fatal("payload ran with U alone")
		}
		pol := tc.policy
		if pol == "" {
			var err error
			if pol, err = tc.a.PCRPolicy(15); err != nil {
				t.Fatal(err)
			}
		}
		req, err := s.AddRequest(tc.a.UUID(), pol)
		if err != nil {
			t.Fatal(err)
		}
		vb := base64.StdEncoding.EncodeToString(v)
		req.V = &vb
		if err := s.Verifier.Add(context.Background(), tc.a.UUID(), req); err != nil {
			t.Fatal(err)
		}
	}
	marker := filepath.Join(good.DataDir, "secure", "unzipped", "marker")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("payload never ran on the attested agent")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := s.WaitVerifier(bad.UUID(), 10*time.Second, InState(api.StateInvalidQuote)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if haveU, vs, haveK := bad.BootstrapState(); !haveU || vs != 0 || haveK {
		t.Fatalf("failing agent: U=%v, V received %d times, K=%v; want U only", haveU, vs, haveK)
	}
	if _, err := os.Stat(filepath.Join(bad.DataDir, "secure")); err == nil {
		t.Fatal("the failing agent has a secure directory")
	}
}

// TestRevocationNotifications: when one agent fails, the other attested agent gets a signed message and
// runs its action, and the webhook gets the same message; a dead webhook does not stall polling.
func TestRevocationNotifications(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	var mu sync.Mutex
	var hooked []revocation.Envelope
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env revocation.Envelope
		b, _ := io.ReadAll(r.Body)
		if json.Unmarshal(b, &env) == nil {
			mu.Lock()
			hooked = append(hooked, env)
			mu.Unlock()
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer hook.Close()
	s.StartVerifier(VerifierOptions{NotifyAgents: true, WebhookURL: hook.URL})
	actions := t.TempDir()
	got := filepath.Join(t.TempDir(), "revoked.json")
	if err := os.WriteFile(filepath.Join(actions, "record"), []byte("#!/bin/sh\ncp \"$1\" "+got+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	watcher := startAttested(t, s, AgentOptions{Revocation: agent.RevocationConfig{CertPath: s.RevocationCert(), ActionsDir: actions, Actions: []string{"record"}}})
	victim := startAttested(t, s, AgentOptions{})
	_ = watcher
	d := sha256.Sum256([]byte("tamper"))
	if err := victim.Device.PCRExtend(15, tpm2.TPMAlgSHA256, d[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitVerifier(victim.UUID(), 10*time.Second, InState(api.StateInvalidQuote)); err != nil {
		t.Fatal(err)
	}
	var msg revocation.Message
	var raw []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(got)
		if err == nil && json.Unmarshal(b, &msg) == nil {
			raw = b
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other agent never ran its revocation action")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if msg.AgentID != victim.UUID() || msg.EventID != "pcr_validation.invalid_pcr_15" || msg.Type != "revocation" {
		t.Errorf("message = %+v", msg)
	}
	mu.Lock()
	n := len(hooked)
	var first revocation.Envelope
	if n > 0 {
		first = hooked[0]
	}
	mu.Unlock()
	if n != 1 {
		t.Fatalf("webhook got %d messages", n)
	}
	if _, err := revocation.Verify(&s.RevocationKey().PublicKey, first); err != nil {
		t.Fatalf("webhook message does not verify: %v", err)
	}
	if first.Msg != string(raw) {
		t.Errorf("the webhook and the agent got different messages:\n%s\n%s", first.Msg, raw)
	}
}

// TestDeadWebhookDoesNotStallPolling: a webhook that never answers leaves polling untouched.
func TestDeadWebhookDoesNotStallPolling(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	block := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer hook.Close()
	defer close(block)
	s.StartVerifier(VerifierOptions{WebhookURL: hook.URL})
	a := startAttested(t, s, AgentOptions{})
	b := startAttested(t, s, AgentOptions{})
	d := sha256.Sum256([]byte("tamper"))
	if err := b.Device.PCRExtend(15, tpm2.TPMAlgSHA256, d[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitVerifier(b.UUID(), 10*time.Second, InState(api.StateInvalidQuote)); err != nil {
		t.Fatal(err)
	}
	st, _ := s.Verifier.Agent(context.Background(), a.UUID())
	if _, err := s.WaitVerifier(a.UUID(), 5*time.Second, Attested(st.AttestationCount+5)); err != nil {
		t.Fatalf("polling stalled behind the webhook: %v", err)
	}
}
