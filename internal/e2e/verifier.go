package e2e

import (
	"context"
	"crypto/rsa"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/verifier"
)

// VerifierOptions configures StartVerifier; zero values give fast test timings.
type VerifierOptions struct {
	QuoteInterval time.Duration // default 200 ms
	RetryInterval time.Duration // default 100 ms
	MaxRetries    int           // default 3
	// Revocations: sign with the CA's RevocationNotifier key, notify agents and/or a webhook.
	NotifyAgents bool
	WebhookURL   string
	// AgentConnections is verifier.KeepAlive (default) or verifier.ConnectPerQuote.
	AgentConnections string
}

// StartVerifier (re)starts the verifier on a new loopback port with the system's verifier.db.
func (s *System) StartVerifier(opts VerifierOptions) {
	t := s.t
	t.Helper()
	if opts.QuoteInterval == 0 {
		opts.QuoteInterval = 200 * time.Millisecond
	}
	if opts.RetryInterval == 0 {
		opts.RetryInterval = 100 * time.Millisecond
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 3
	}
	srv, err := transport.LoadMaterial(s.CADir, "server")
	if err != nil {
		t.Fatal(err)
	}
	cl := s.ClientTLS()
	ln := listen(t)
	port := ln.Addr().(*net.TCPAddr).Port
	v, err := verifier.New(verifier.Config{
		DBPath:             filepath.Join(s.Dir, "verifier.db"),
		TLS:                transport.ServerConfig(srv.Cert, srv.Pool, transport.OptionalClientCert),
		ClientCert:         &cl.Cert,
		IP:                 "127.0.0.1",
		Port:               port,
		QuoteInterval:      opts.QuoteInterval,
		RetryInterval:      opts.RetryInterval,
		MaxRetries:         opts.MaxRetries,
		ExponentialBackoff: false,
		RequestTimeout:     5 * time.Second,
		RevocationKey:      s.RevocationKey(),
		NotifyAgents:       opts.NotifyAgents,
		WebhookURL:         opts.WebhookURL,
		AgentConnections:   opts.AgentConnections,
		Log:                s.Log.With().Str("role", "verifier").Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Serve(ctx, ln) }()
	s.VerifierURL = "https://127.0.0.1:" + strconv.Itoa(port)
	s.Verifier = client.NewVerifier(transport.NewHTTPClient(transport.ClientConfig(&cl.Cert, cl.Pool), 10*time.Second), s.VerifierURL, api.CurrentVersion)
	var once sync.Once
	s.stopVerifier = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("verifier: %v", err)
			}
			if err := v.Close(); err != nil {
				t.Errorf("verifier close: %v", err)
			}
		})
	}
	t.Cleanup(s.stopVerifier)
}

// StopVerifier stops the verifier gracefully (its database stays).
func (s *System) StopVerifier() { s.stopVerifier() }

// AddRequest builds the verifier add-agent body for a registered agent from its registrar record, the
// way a tenant does (no payload).
func (s *System) AddRequest(id, tpmPolicy string) (*api.AddAgentRequest, error) {
	rec, err := s.Admin.Agent(context.Background(), id)
	if err != nil {
		return nil, fmt.Errorf("registrar record: %w", err)
	}
	if rec.IP == nil || rec.Port == nil {
		return nil, fmt.Errorf("agent %s has no contact address", id)
	}
	empty := ""
	return &api.AddAgentRequest{
		CloudAgentIP:            *rec.IP,
		CloudAgentPort:          api.Port(*rec.Port),
		TPMPolicy:               tpmPolicy,
		MBPolicyName:            &empty,
		Metadata:                "{}",
		AcceptTPMHashAlgs:       []string{"sha512", "sha384", "sha256"},
		AcceptTPMEncryptionAlgs: []string{"ecc", "rsa"},
		AcceptTPMSigningAlgs:    []string{"ecdsa", "rsassa"},
		AKTPM:                   rec.AIKTPM,
		MTLSCert:                rec.MTLSCert,
		SupportedVersion:        api.CurrentVersion,
	}, nil
}

// AddAgent adds a registered agent to the verifier with tpmPolicy.
func (s *System) AddAgent(id, tpmPolicy string) error {
	req, err := s.AddRequest(id, tpmPolicy)
	if err != nil {
		return err
	}
	return s.Verifier.Add(context.Background(), id, req)
}

// WaitVerifier polls the verifier until cond holds for the agent's status or the deadline passes; it
// returns the last status seen.
func (s *System) WaitVerifier(id string, within time.Duration, cond func(*api.VerifierAgent) bool) (*api.VerifierAgent, error) {
	deadline := time.Now().Add(within)
	var last *api.VerifierAgent
	var err error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		last, err = s.Verifier.Agent(ctx, id)
		cancel()
		if err == nil && cond(last) {
			return last, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("condition not met within %v (state %s, count %d, last failure %q)",
					within, api.StateName(last.OperationalState), last.AttestationCount, last.LastFailure)
			}
			return last, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Attested is true once the agent passed at least n attestations and is in Get Quote.
func Attested(n int) func(*api.VerifierAgent) bool {
	return func(a *api.VerifierAgent) bool {
		return a.OperationalState == api.StateGetQuote && a.AttestationCount >= n
	}
}

// InState is true once the agent is in state.
func InState(state int) func(*api.VerifierAgent) bool {
	return func(a *api.VerifierAgent) bool { return a.OperationalState == state }
}

// PCRPolicy returns a tpm_policy allowing the current sha256 values of pcrs on the agent's TPM.
func (a *Agent) PCRPolicy(pcrs ...int) (string, error) {
	vals, err := a.Device.PCRRead(0x000B, pcrs)
	if err != nil {
		return "", err
	}
	out := "{"
	for i, p := range pcrs {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%q: [%q]", strconv.Itoa(p), hex.EncodeToString(vals[p]))
	}
	return out + "}", nil
}

// RevocationKey is the CA directory's RevocationNotifier key.
func (s *System) RevocationKey() *rsa.PrivateKey {
	b, err := os.ReadFile(filepath.Join(s.CADir, ca.RevocationNotifier+"-private.pem"))
	if err != nil {
		s.t.Fatal(err)
	}
	k, err := ca.ParseKeyPEM(b)
	if err != nil {
		s.t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

// RevocationCert is the path of the CA directory's RevocationNotifier certificate.
func (s *System) RevocationCert() string {
	return filepath.Join(s.CADir, ca.RevocationNotifier+"-cert.crt")
}
