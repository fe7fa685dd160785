package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/transport"
)

// startAttested starts an agent, adds it to the verifier with a policy over PCR 15's current value and
// waits for its first good attestation.
func startAttested(t *testing.T, s *System, opts AgentOptions) *Agent {
	t.Helper()
	a := s.StartAgent(opts)
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatalf("agent never active at the registrar: %v", err)
	}
	pol, err := a.PCRPolicy(15)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddAgent(a.UUID(), pol); err != nil {
		t.Fatalf("add: %v", err)
	}
	if _, err := s.WaitVerifier(a.UUID(), 10*time.Second, Attested(1)); err != nil {
		t.Fatalf("never attested: %v", err)
	}
	return a
}

func TestAddAttestTamper(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	interval := 500 * time.Millisecond
	s.StartVerifier(VerifierOptions{QuoteInterval: interval})
	a := s.StartAgent(AgentOptions{})
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	pol, err := a.PCRPolicy(15)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.AddAgent(a.UUID(), pol); err != nil {
		t.Fatal(err)
	}
	st, err := s.WaitVerifier(a.UUID(), 2*interval, Attested(1))
	if err != nil {
		t.Fatalf("not attested within 2 intervals: %v", err)
	}
	t.Logf("add → first successful attestation: %v", time.Since(start))
	if st.HashAlg != "sha256" || st.SignAlg != "rsassa" || st.EncAlg != "rsa2048" || st.AttestationStatus != "PASS" {
		t.Errorf("status = %+v", st)
	}
	if !strings.Contains(st.TPMPolicy, `"mask":"0x8000"`) {
		t.Errorf("stored tpm_policy %s", st.TPMPolicy)
	}
	// Polling goes on.
	if _, err := s.WaitVerifier(a.UUID(), 5*interval, Attested(3)); err != nil {
		t.Fatal(err)
	}

	// Something extends PCR 15: the next quote fails, naming the PCR and both values.
	d := sha256.Sum256([]byte("unexpected measurement"))
	if err := a.Device.PCRExtend(15, tpm2.TPMAlgSHA256, d[:]); err != nil {
		t.Fatal(err)
	}
	st, err = s.WaitVerifier(a.UUID(), 5*interval, InState(api.StateInvalidQuote))
	if err != nil {
		t.Fatal(err)
	}
	if st.LastEventID == nil || *st.LastEventID != "pcr_validation.invalid_pcr_15" {
		t.Fatalf("last_event_id = %v", st.LastEventID)
	}
	if !strings.Contains(st.LastFailure, "pcr=15") || !strings.Contains(st.LastFailure, "expected=") || !strings.Contains(st.LastFailure, "got=") {
		t.Errorf("failure reason not actionable: %q", st.LastFailure)
	}
	if st.AttestationStatus != "FAIL" || st.SeverityLevel == nil {
		t.Errorf("status after failure: %+v", st)
	}
	// Failed agents are not polled any more.
	count := st.AttestationCount
	time.Sleep(2 * interval)
	if st, _ = s.Verifier.Agent(context.Background(), a.UUID()); st.AttestationCount != count {
		t.Errorf("failed agent still polled: %d → %d", count, st.AttestationCount)
	}

	// Delete: gone.
	if err := s.Verifier.Delete(context.Background(), a.UUID()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verifier.Agent(context.Background(), a.UUID()); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("deleted agent still there: %v", err)
	}
	if ids, err := s.Verifier.List(context.Background()); err != nil || len(ids) != 0 {
		t.Fatalf("list after delete: %v %v", ids, err)
	}
}

func TestUnreachableAgentThenReactivate(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{QuoteInterval: 200 * time.Millisecond, RetryInterval: 100 * time.Millisecond, MaxRetries: 3})
	a := startAttested(t, s, AgentOptions{})
	id, port := a.UUID(), a.Port
	a.Stop()
	st, err := s.WaitVerifier(id, 10*time.Second, InState(api.StateFailed))
	if err != nil {
		t.Fatal(err)
	}
	if st.LastEventID == nil || *st.LastEventID != "not_reachable" || !strings.Contains(st.LastFailure, "3 retries") {
		t.Fatalf("failure = %v %q", st.LastEventID, st.LastFailure)
	}
	count := st.AttestationCount

	// The agent comes back on the same port with the same TPM and data: it registers again.
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	b := s.StartAgent(AgentOptions{TPM: a.TPM, DataDir: a.DataDir, Listener: ln})
	if b.UUID() != id {
		t.Fatalf("restarted agent has id %s, want %s", b.UUID(), id)
	}
	if _, err := s.WaitActive(id, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Verifier.Reactivate(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitVerifier(id, 10*time.Second, Attested(count+1)); err != nil {
		t.Fatalf("not attested after reactivate: %v", err)
	}
}

func TestVerifierRestartResumes(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	a := startAttested(t, s, AgentOptions{})
	st, err := s.WaitVerifier(a.UUID(), 10*time.Second, Attested(2))
	if err != nil {
		t.Fatal(err)
	}
	s.StopVerifier()
	s.StartVerifier(VerifierOptions{})
	if _, err := s.WaitVerifier(a.UUID(), 10*time.Second, Attested(st.AttestationCount+2)); err != nil {
		t.Fatalf("polling did not resume after a restart: %v", err)
	}
}

func TestAdminAPINeedsCACert(t *testing.T) {
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	ctx := context.Background()
	pool := s.ClientTLS().Pool
	anon := client.NewVerifier(transport.NewHTTPClient(transport.ClientConfig(nil, pool), 5*time.Second), s.VerifierURL, api.CurrentVersion)
	if _, err := anon.List(ctx); client.StatusCode(err) != http.StatusForbidden {
		t.Fatalf("verifier list without client cert: %v", err)
	}
	if _, err := anon.Version(ctx); err != nil {
		t.Fatalf("version should be public: %v", err)
	}
	other := filepath.Join(t.TempDir(), "other")
	if _, err := ca.Ensure(other, ca.DefaultSubject, nil); err != nil {
		t.Fatal(err)
	}
	foreign, err := transport.LoadMaterial(other, "client")
	if err != nil {
		t.Fatal(err)
	}
	stranger := client.NewVerifier(transport.NewHTTPClient(transport.ClientConfig(&foreign.Cert, pool), 5*time.Second), s.VerifierURL, api.CurrentVersion)
	if _, err := stranger.List(ctx); err == nil {
		t.Fatal("verifier accepted a client certificate from another CA")
	}
	strangerReg := client.NewRegistrar(transport.NewHTTPClient(transport.ClientConfig(&foreign.Cert, pool), 5*time.Second), s.RegistrarTLSURL, api.CurrentVersion)
	if _, err := strangerReg.List(ctx); err == nil {
		t.Fatal("registrar accepted a client certificate from another CA")
	}
}

// TestAttacksRefused puts a man in the middle between the verifier and a real agent and checks that
// every forgery it can make is caught.
func TestAttacksRefused(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	victim := s.StartAgent(AgentOptions{})
	other := s.StartAgent(AgentOptions{})
	for _, a := range []*Agent{victim, other} {
		if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	stolen, err := transport.LoadKeyPair(filepath.Join(victim.DataDir, "server-cert.crt"), filepath.Join(victim.DataDir, "server-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		setup   func(p *Proxy)
		event   string
		message string
	}{
		{
			name: "replayed quote with an old nonce",
			setup: func(p *Proxy) {
				var first *api.QuoteResponse
				p.Mutate(func(q *api.QuoteResponse) {
					if first == nil {
						c := *q
						first = &c
						return
					}
					*q = *first
				})
			},
			event: "qoute_validation.quote_validation", message: "nonce",
		},
		{
			name:  "quote signed by another AK",
			setup: func(p *Proxy) { p.SetUpstream(t, s, other) },
			event: "qoute_validation.quote_validation", message: "signature",
		},
		{
			name: "PCR blob altered",
			setup: func(p *Proxy) {
				p.Mutate(func(q *api.QuoteResponse) {
					parts := strings.Split(q.Quote, ":")
					blob, _ := base64.StdEncoding.DecodeString(parts[2])
					blob[132+4+4+2] ^= 1 // first byte of the first PCR value
					parts[2] = base64.StdEncoding.EncodeToString(blob)
					q.Quote = strings.Join(parts, ":")
				})
			},
			event: "qoute_validation.quote_validation", message: "PCR",
		},
		{
			name: "PCR 16 bound to another key",
			setup: func(p *Proxy) {
				nk := agentNK(t, s, other)
				p.Mutate(func(q *api.QuoteResponse) {
					if q.PubKey != "" {
						q.PubKey = nk
					}
				})
			},
			event: "pcr_validation.invalid_pcr_16", message: "PCR 16",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := s.StartProxy(t, stolen, victim)
			tc.setup(p)
			req, err := s.AddRequest(victim.UUID(), "{}")
			if err != nil {
				t.Fatal(err)
			}
			req.CloudAgentPort = api.Port(p.Port)
			if err := s.Verifier.Add(context.Background(), victim.UUID(), req); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Verifier.Delete(context.Background(), victim.UUID()) })
			st, err := s.WaitVerifier(victim.UUID(), 10*time.Second, InState(api.StateInvalidQuote))
			if err != nil {
				t.Fatal(err)
			}
			if st.LastEventID == nil || *st.LastEventID != tc.event || !strings.Contains(st.LastFailure, tc.message) {
				t.Fatalf("failure = %v %q, want %s mentioning %q", st.LastEventID, st.LastFailure, tc.event, tc.message)
			}
		})
	}

	t.Run("agent presents a certificate other than the pinned one", func(t *testing.T) {
		p := s.StartProxy(t, selfSignedPair(t), victim)
		req, err := s.AddRequest(victim.UUID(), "{}")
		if err != nil {
			t.Fatal(err)
		}
		req.CloudAgentPort = api.Port(p.Port)
		if err := s.Verifier.Add(context.Background(), victim.UUID(), req); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Verifier.Delete(context.Background(), victim.UUID()) })
		st, err := s.WaitVerifier(victim.UUID(), 10*time.Second, InState(api.StateFailed))
		if err != nil {
			t.Fatal(err)
		}
		if st.AttestationCount != 0 || !strings.Contains(st.LastFailure, "certificate") {
			t.Fatalf("failure = %v %q (count %d)", st.LastEventID, st.LastFailure, st.AttestationCount)
		}
	})
}

// agentNK fetches an agent's NK public key PEM over its API.
func agentNK(t *testing.T, s *System, a *Agent) string {
	t.Helper()
	pem, err := agentClient(t, s, a).PubKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pem
}

func selfSignedPair(t *testing.T) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "impostor"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func itoa(n int) string { return strconv.Itoa(n) }
