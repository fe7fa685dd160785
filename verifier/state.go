package verifier

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/policy/mb"
	"github.com/keylime-go/keylime/tpm"
)

// agentState is one agent's hot state: its record, parsed once (AK, policy, pinned certificate) and an
// HTTP client with kept-alive connections.
type agentState struct {
	mu  sync.Mutex
	rec record

	ak     *tpm.Public
	policy *policy.TPMPolicy
	client *client.Agent

	// cancel stops the poller; done is closed when it has stopped. Both nil while not polling.
	cancel context.CancelFunc
	done   chan struct{}
	// timer runs the next polling round; poll is the polling session's round-to-round state.
	timer *time.Timer
	poll  pollState
	// mbPassed identifies the last boot log (with the measured-boot policy) that passed evaluation, and
	// mbLog is that log's replay: with measured_boot_evaluate "once" the same log is neither parsed nor
	// evaluated again, only its PCR values compared with each quote.
	mbPassed [32]byte
	mbLog    *mb.Log
	mbAggs   [][]byte
	// lastWrite is when the record was last written (routine updates are written at most every
	// routineWriteEvery).
	lastWrite time.Time
	// deleted is set when the agent was removed; a poller that sees it exits without writing.
	deleted bool
}

func getRecordBytes(b []byte) (*record, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// newState parses what the record holds once, so no poll parses it again.
func (v *Verifier) newState(rec *record) (*agentState, error) {
	ak, err := tpm.ParsePublic(rec.AKTPM)
	if err != nil {
		return nil, fmt.Errorf("ak_tpm: %w", err)
	}
	pol, err := policy.ParseTPMPolicy(rec.TPMPolicy)
	if err != nil {
		return nil, err
	}
	hc, baseURL, err := v.agentHTTP(rec)
	if err != nil {
		return nil, err
	}
	return &agentState{
		rec:    *rec,
		ak:     ak,
		policy: pol,
		client: client.NewAgent(hc, baseURL, rec.SupportedVersion),
	}, nil
}

// agentHTTP builds the HTTPS client that pins the agent's registered certificate.
func (v *Verifier) agentHTTP(rec *record) (*http.Client, string, error) {
	hostport := net.JoinHostPort(rec.IP, strconv.Itoa(rec.Port))
	if rec.MTLSCert == "" || rec.MTLSCert == "disabled" {
		return transport.NewHTTPClient(nil, v.cfg.RequestTimeout), "http://" + hostport, nil
	}
	cert, err := transport.ParseCertPEM(rec.MTLSCert)
	if err != nil {
		return nil, "", fmt.Errorf("mtls_cert: %w", err)
	}
	conf, err := transport.PinnedClientConfig(v.cfg.ClientCert, cert)
	if err != nil {
		return nil, "", fmt.Errorf("mtls_cert: %w", err)
	}
	hc := transport.NewHTTPClient(conf, v.cfg.RequestTimeout)
	if v.cfg.AgentConnections == ConnectPerQuote {
		// A fresh connection per quote, resuming the TLS session (no certificates or signatures in
		// the handshake): no idle connection buffers and goroutines per agent.
		// Sessions are cached per agent: the cache is keyed by server name, which agents may share.
		// X25519 alone: a post-quantum hybrid key share per quote would cost more than the quote.
		conf.ClientSessionCache = agentSessions{prefix: rec.AgentID + "\x00", cache: v.sessions}
		conf.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
		hc.Transport.(*http.Transport).DisableKeepAlives = true
	}
	return hc, "https://" + hostport, nil
}

// agentSessions is one agent's view of the verifier's TLS session cache.
type agentSessions struct {
	prefix string
	cache  tls.ClientSessionCache
}

func (a agentSessions) Get(key string) (*tls.ClientSessionState, bool) {
	return a.cache.Get(a.prefix + key)
}

func (a agentSessions) Put(key string, cs *tls.ClientSessionState) { a.cache.Put(a.prefix+key, cs) }

// status renders the record as Keylime's GET agent results.
func (v *Verifier) status(st *agentState) api.VerifierAgent {
	st.mu.Lock()
	r := st.rec
	st.mu.Unlock()
	a := api.VerifierAgent{
		OperationalState:           r.State,
		IP:                         r.IP,
		Port:                       r.Port,
		TPMPolicy:                  r.TPMPolicy,
		MetaData:                   r.Metadata,
		AcceptTPMHashAlgs:          nonNil(r.AcceptHashAlgs),
		AcceptTPMEncryptionAlgs:    nonNil(r.AcceptEncryptionAlgs),
		AcceptTPMSigningAlgs:       nonNil(r.AcceptSigningAlgs),
		HashAlg:                    r.HashAlg,
		EncAlg:                     r.EncAlg,
		SignAlg:                    r.SignAlg,
		VerifierID:                 v.cfg.ID,
		VerifierIP:                 v.cfg.IP,
		VerifierPort:               v.cfg.Port,
		SeverityLevel:              r.SeverityLevel,
		AttestationCount:           r.AttestationCount,
		LastReceivedQuote:          r.LastReceived,
		LastSuccessfulAttestation:  r.LastSuccess,
		AttestationStatus:          attestationStatus(&r),
		AttestationPeriod:          seconds(v.cfg.QuoteInterval.Seconds()),
		MaximumAttestationInterval: seconds(5 * v.cfg.QuoteInterval.Seconds()),
		Failures:                   r.Failures,
		LastFailure:                r.LastFailure,
	}
	if r.MBPolicyName != "" {
		a.HasMBRefstate = 1
	}
	if r.RuntimePolicyName != "" {
		a.HasRuntimePolicy = 1
	}
	if r.LastEventID != "" {
		id := r.LastEventID
		a.LastEventID = &id
	}
	return a
}

// attestationStatus is Keylime's PASS/FAIL/PENDING, except that an agent never attested yet is PENDING.
func attestationStatus(r *record) string {
	s := api.AttestationStatus(r.State)
	if s == "PASS" && r.AttestationCount == 0 {
		return "PENDING"
	}
	return s
}

func seconds(s float64) string { return strconv.FormatFloat(s, 'f', -1, 64) + "s" }

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
