// Package tenant is the operator's side of Keylime: it enrols agents with the verifier after checking
// them (registrar record, EK certificate against a cert store, identity quote from the agent itself) and
// queries or changes their state on the verifier and the registrar. It speaks to the other roles only
// through their HTTP APIs (internal/client) and has no command-line code; internal/cli wraps it.
package tenant

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/transport"
)

// Errors a caller can test with errors.Is; the returned errors carry the agent id and the cause.
var (
	// ErrNotRegistered means the registrar does not know the agent (or it never activated).
	ErrNotRegistered = errors.New("agent is not registered at the registrar")
	// ErrNotActive means the registrar knows the agent but it never proved its AK (activation).
	ErrNotActive = errors.New("agent is registered but not active")
	// ErrNotOnVerifier means the verifier does not know the agent.
	ErrNotOnVerifier = errors.New("agent is not on the verifier")
	// ErrAlreadyAdded means the verifier already has the agent (run delete or update first).
	ErrAlreadyAdded = errors.New("agent is already on the verifier")
	// ErrEKCert means the agent's EK certificate is missing, does not match its EK or is not trusted.
	ErrEKCert = errors.New("EK certificate check failed")
	// ErrIdentityQuote means the agent's identity quote does not prove what the registrar recorded.
	ErrIdentityQuote = errors.New("identity quote check failed")
	// ErrAgentContact means the agent could not be reached or gave no usable answer.
	ErrAgentContact = errors.New("cannot talk to the agent")
	// ErrAgentFailed means the verifier reports the agent in a failed state.
	ErrAgentFailed = errors.New("agent failed attestation")
	// ErrNoAgentID means an operation that needs an agent id was given none.
	ErrNoAgentID = errors.New("no agent id given")
)

// Config is what the tenant needs: where the verifier and the registrar are, the client TLS material of
// the Keylime CA, how to judge EK certificates, what algorithms to accept and how to retry.
type Config struct {
	// VerifierURL is the verifier's base URL, e.g. "https://127.0.0.1:8881".
	VerifierURL string
	// RegistrarURL is the registrar's HTTPS (admin) base URL, e.g. "https://127.0.0.1:8891".
	RegistrarURL string
	// TLS is the tenant's client certificate and the CA pool trusted for the verifier and registrar; the
	// certificate is also presented to agents (which pin nothing but require a Keylime CA client cert).
	TLS *transport.Material
	// CertStore is the directory of CA certificates that EK certificates must chain to (tpm_cert_store).
	CertStore string
	// RequireEKCert refuses agents that registered without an EK certificate (require_ek_cert).
	RequireEKCert bool
	// AcceptHashAlgs, AcceptEncAlgs and AcceptSignAlgs are the algorithms accepted in the identity quote
	// and sent to the verifier (accept_tpm_*_algs).
	AcceptHashAlgs, AcceptEncAlgs, AcceptSignAlgs []string
	// MaxRetries bounds the attempts to reach an agent and to see an add or delete take effect.
	MaxRetries int
	// RetryInterval is the delay between attempts; with ExponentialBackoff it is raised to the power of
	// the attempt number (Keylime's retry_time: only when it is above one second).
	RetryInterval      time.Duration
	ExponentialBackoff bool
	// RequestTimeout bounds each HTTP request, policy downloads included.
	RequestTimeout time.Duration
	// MBRefstate is the measured-boot reference state file that --mb-policy default names
	// (tenant.mb_refstate); empty when none is configured.
	MBRefstate string
	// Log receives warnings (e.g. regcount > 1, EK checks disabled) and debug detail.
	Log zerolog.Logger
}

// Tenant runs tenant operations; it keeps one HTTP client (kept-alive connections) for the verifier and
// the registrar and is safe for concurrent use.
type Tenant struct {
	cfg Config
	hc  *http.Client

	mu          sync.Mutex
	verifier    *client.Verifier
	registrar   *client.Registrar
	vNegotiated bool
	rNegotiated bool
	// keys are the payload keys K this tenant sent, by agent, for VerifyPayload.
	keys map[string][]byte
}

// New checks cfg and returns a tenant.
func New(cfg Config) (*Tenant, error) {
	if cfg.TLS == nil {
		return nil, errors.New("tenant: no client TLS material")
	}
	for name, u := range map[string]string{"verifier": cfg.VerifierURL, "registrar": cfg.RegistrarURL} {
		p, err := url.Parse(u)
		if err != nil || p.Scheme != "https" || p.Host == "" {
			return nil, fmt.Errorf("tenant: %s URL %q must be https://host:port", name, u)
		}
	}
	if cfg.MaxRetries < 1 {
		cfg.MaxRetries = 1
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 60 * time.Second
	}
	hc := transport.NewHTTPClient(transport.ClientConfig(&cfg.TLS.Cert, cfg.TLS.Pool), cfg.RequestTimeout)
	return &Tenant{
		cfg:       cfg,
		hc:        hc,
		verifier:  client.NewVerifier(hc, cfg.VerifierURL, api.CurrentVersion),
		registrar: client.NewRegistrar(hc, cfg.RegistrarURL, api.CurrentVersion),
	}, nil
}

// Close releases idle connections.
func (t *Tenant) Close() { t.hc.CloseIdleConnections() }

// PolicyFetcher returns the downloader of runtime policies and allowlists given by URL, bounded by
// the tenant's request timeout and logging to its log.
func (t *Tenant) PolicyFetcher() PolicyFetcher {
	return PolicyFetcher{Timeout: t.cfg.RequestTimeout, Log: t.cfg.Log}
}

// MBRefstate is the configured default measured-boot reference state file (empty when none is).
func (t *Tenant) MBRefstate() string { return t.cfg.MBRefstate }

// verifierClient returns the verifier client, negotiating the API version on first use.
func (t *Tenant) verifierClient(ctx context.Context) (*client.Verifier, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.vNegotiated {
		v, err := t.verifier.Negotiate(ctx)
		if err != nil {
			return nil, fmt.Errorf("verifier %s: %w", t.cfg.VerifierURL, err)
		}
		t.vNegotiated = true
		t.cfg.Log.Debug().Str("api_version", v).Msg("verifier API version negotiated")
	}
	return t.verifier, nil
}

// registrarClient returns the registrar client, negotiating the API version on first use.
func (t *Tenant) registrarClient(ctx context.Context) (*client.Registrar, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.rNegotiated {
		v, err := t.registrar.Negotiate(ctx)
		if err != nil {
			return nil, fmt.Errorf("registrar %s: %w", t.cfg.RegistrarURL, err)
		}
		t.rNegotiated = true
		t.cfg.Log.Debug().Str("api_version", v).Msg("registrar API version negotiated")
	}
	return t.registrar, nil
}

// retryDelay is Keylime's retry_time: base**n with exponential backoff (when base > 1 s), else base.
func (t *Tenant) retryDelay(n int) time.Duration {
	base := t.cfg.RetryInterval
	if t.cfg.ExponentialBackoff && base > time.Second {
		d := 1.0
		for i := 0; i < n; i++ {
			d *= base.Seconds()
		}
		if d > 3600 {
			d = 3600
		}
		return time.Duration(d * float64(time.Second))
	}
	return base
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// transient reports whether err is worth retrying: refused or reset connections, timeouts, and 503/504.
func transient(err error) bool {
	switch client.StatusCode(err) {
	case http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	case 0:
	default:
		return false
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// hostPort splits a base URL's host and port (for the verifier_ip/verifier_port fields).
func hostPort(base string) (string, int) {
	u, err := url.Parse(base)
	if err != nil {
		return "", 0
	}
	port, _ := strconv.Atoi(u.Port())
	return u.Hostname(), port
}
