// Package verifier is Keylime's verifier: it keeps a list of agents added by tenants and attests each one
// continuously — every quote_interval it asks the agent for a quote over a fresh nonce and checks the AK
// signature, the nonce, the PCR digest, the binding of the agent's NK into PCR 16, the TPM clock and the
// policies — and records and reports why an agent failed. Its hot state lives in memory; verifier.db keeps
// what a restart needs to resume polling every agent.
package verifier

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/httpx"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/policy/mb"
	"github.com/keylime-go/keylime/store"
)

// Config is everything a verifier needs; internal/cli builds it from keylime.toml.
type Config struct {
	// Addr is the listen address of the HTTPS API.
	Addr string
	// DBPath is the verifier.db file.
	DBPath string
	// TLS is the server configuration (client certificates verified when given; every agent route needs
	// one, see transport.OptionalClientCert).
	TLS *tls.Config
	// ClientCert is presented to agents; agents' own certificates are pinned as registered.
	ClientCert *tls.Certificate
	// ID, IP and Port are reported in status (verifier_id, verifier_ip, verifier_port).
	ID   string
	IP   string
	Port int

	QuoteInterval      time.Duration
	RetryInterval      time.Duration
	MaxRetries         int
	ExponentialBackoff bool
	RequestTimeout     time.Duration
	// MaxBody bounds request bodies (add-agent bodies carry policies; default 100 MiB as Keylime).
	MaxBody int64

	// MBPolicyName is the measured-boot policy engine ("example" when empty; "accept-all",
	// "reject-all"); MBEvaluateAlways evaluates every quote's boot log, not only a log not seen pass.
	MBPolicyName     string
	MBEvaluateAlways bool
	// RequirePolicySignatures refuses runtime policies that are not DSSE envelopes verified with the
	// runtime_policy_key sent along (Keylime's require_allow_list_signatures).
	RequirePolicySignatures bool
	// IMAFailViolations fails attestation on IMA ToMToU / open-writers violations.
	IMAFailViolations bool

	// AgentConnections is KeepAlive (default: one idle connection per agent between quotes) or
	// ConnectPerQuote (a new TLS connection per quote with session resumption: about 3x the CPU, for
	// networks that drop idle connections).
	AgentConnections string

	// RevocationKey signs revocation messages (an agent's own revocation_key, sent by its tenant, wins).
	RevocationKey *rsa.PrivateKey
	// NotifyAgents sends revocation messages to every other attested agent; WebhookURL (with
	// WebhookClient) to a webhook. NotifyQueue bounds the messages waiting to be sent.
	NotifyAgents  bool
	WebhookURL    string
	WebhookClient *http.Client
	NotifyQueue   int

	Log zerolog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Agent connection modes (Config.AgentConnections; [verifier] agent_connections).
const (
	KeepAlive       = "keep-alive"
	ConnectPerQuote = "per-quote"
)

// Verifier is a running verifier.
type Verifier struct {
	cfg Config
	db  *store.DB
	log zerolog.Logger

	mu     sync.Mutex
	agents map[string]*agentState
	// adding reserves the ids of adds being written.
	adding map[string]bool
	// policies are the named runtime and measured-boot policies, compiled once; compilers parse them.
	policies  map[policyKind]*policySet
	compilers map[policyKind]func([]byte) (any, error)
	ctx       context.Context // set by Start; pollers run under it
	wg        sync.WaitGroup
	// notifier delivers revocation messages.
	notifier *notifier
	// flusherOn is set while the flusher runs (routine updates are then left to it).
	flusherOn atomic.Bool
	// writeTx runs a write transaction (db.Update, or db.Batch when coalesced); tests replace it to
	// make the disk fail.
	writeTx func(coalesce bool, fn func(*store.Tx) error) error
	// storeDown tracks a failing disk: while writes fail, they are left to the flusher's retries.
	storeDown storeDown
	// resuming counts the agents resumed by start that have not had their first round; restoreGC,
	// when set, puts the GC percent back (relaxGC).
	resuming  atomic.Int64
	restoreGC atomic.Pointer[func()]
	// resumeGate paces the first rounds of the agents resumed by start.
	resumeGate *resumeGate
	// workers run the polling rounds.
	workers *workers
	// mbMask is the PCRs a non-empty measured-boot reference state is judged on (the policy's).
	mbMask uint32
	// agentTLS is the TLS configuration every agent connection starts from (client certificate,
	// versions, key exchange); each pins its agent's certificate.
	agentTLS *tls.Config
}

// New opens verifier.db and loads every agent.
func New(cfg Config) (*Verifier, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ID == "" {
		cfg.ID = "default"
	}
	if cfg.QuoteInterval < 0 {
		cfg.QuoteInterval = 0
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 2 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 60 * time.Second
	}
	if cfg.MBPolicyName == "" {
		cfg.MBPolicyName = "example"
	}
	mbPCRs, err := mb.PCRsToCheck(cfg.MBPolicyName)
	if err != nil {
		return nil, fmt.Errorf("measured_boot_policy_name: %w", err)
	}
	switch cfg.AgentConnections {
	case "":
		cfg.AgentConnections = KeepAlive
	case KeepAlive, ConnectPerQuote:
	default:
		return nil, fmt.Errorf("agent_connections %q: want %q or %q", cfg.AgentConnections, KeepAlive, ConnectPerQuote)
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 100 << 20
	}
	if cfg.WebhookClient == nil {
		cfg.WebhookClient = transport.NewHTTPClient(nil, cfg.RequestTimeout)
	}
	db, err := store.Open(cfg.DBPath, store.Options{Owner: "verifier", Migrations: migrations})
	if err != nil {
		return nil, err
	}
	v := &Verifier{cfg: cfg, db: db, log: cfg.Log, agents: map[string]*agentState{}, agentTLS: transport.AgentClientBase(cfg.ClientCert), workers: newWorkers(), adding: map[string]bool{},
		policies: map[policyKind]*policySet{}, compilers: defaultCompilers()}
	v.writeTx = func(coalesce bool, fn func(*store.Tx) error) error {
		if coalesce {
			return db.Batch(fn)
		}
		return db.Update(fn)
	}
	for _, pcr := range mbPCRs {
		v.mbMask |= 1 << pcr
	}
	if err := v.loadPolicies(); err != nil {
		db.Close()
		return nil, err
	}
	kvs, err := db.List(bucketAgents)
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := v.loadAgents(kvs); err != nil {
		db.Close()
		return nil, err
	}
	return v, nil
}

// loadAgents decodes the stored records and parses what each holds (AK, policy, pinned certificate)
// on every CPU: a restarted verifier with thousands of agents serves and polls sooner.
func (v *Verifier) loadAgents(kvs []store.KV) error {
	sts := make([]*agentState, len(kvs))
	errs := make([]error, len(kvs))
	n := min(runtime.GOMAXPROCS(0), max(1, len(kvs)/64))
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			for i := w; i < len(kvs); i += n {
				rec, err := getRecordBytes(kvs[i].Value)
				if err != nil {
					errs[i] = fmt.Errorf("load agent %s: %w", kvs[i].Key, err)
					continue
				}
				if sts[i], err = v.newState(rec); err != nil {
					v.log.Error().Err(err).Str("agent", rec.AgentID).Msg("cannot load agent; it will not be polled")
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, st := range sts {
		if st != nil {
			v.agents[st.rec.AgentID] = st
		}
	}
	return nil
}

// Close stops nothing (cancel Run's context for that) and closes the database.
func (v *Verifier) Close() error {
	v.wg.Wait()
	v.flush(true) // updates marked dirty while the flusher stopped
	return v.db.Close()
}

// Handler returns the HTTP API handler.
func (v *Verifier) Handler() http.Handler {
	return httpx.NewRouter(v.log, api.SupportedVersions, append(v.routes(), v.policyRoutes()...))
}

// Run listens on Addr and serves and polls until ctx ends.
func (v *Verifier) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", v.cfg.Addr)
	if err != nil {
		return fmt.Errorf("verifier listen %s: %w", v.cfg.Addr, err)
	}
	return v.Serve(ctx, ln)
}

// Serve serves the API on ln and polls the agents until ctx ends.
func (v *Verifier) Serve(ctx context.Context, ln net.Listener) error {
	v.start(ctx)
	v.log.Info().Str("addr", ln.Addr().String()).Int("agents", len(v.agents)).Msg("verifier serving (HTTPS, mTLS)")
	err := transport.Serve(ctx, transport.NewServer(v.Handler(), v.cfg.TLS, v.log), ln)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	v.wg.Wait()
	return err
}

// start resumes polling every agent whose state says it should be polled.
func (v *Verifier) start(ctx context.Context) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ctx = ctx
	context.AfterFunc(ctx, v.stopAll)
	v.notifier = newNotifier(v)
	v.flusherOn.Store(true)
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		v.flusher(ctx)
	}()
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		v.notifier.run(ctx)
	}()
	// Resumed agents are spread over half a quote interval (at most a second) instead of all
	// handshaking at once, and their first rounds pass the resume gate: a restarted verifier with
	// thousands of agents stays responsive and its memory bounded.
	var resume []*agentState
	for _, st := range v.agents {
		if resumable(st.rec.State) {
			st.rec.State = api.StateStart
			resume = append(resume, st)
		}
	}
	spread := min(v.cfg.QuoteInterval/2, time.Second)
	resumed := len(resume)
	if resumed > 0 {
		v.resuming.Store(int64(resumed))
		v.relaxGC()
		v.resumeGate = newResumeGate(resumeSlotsPerCPU*runtime.GOMAXPROCS(0), resumeHold, v.workers.run)
	}
	for i, st := range resume {
		if !v.startPollingAfter(st, spread*time.Duration(i)/time.Duration(resumed), true) {
			v.resumedRound()
		}
	}
	if resumed > 0 {
		v.log.Info().Int("agents", resumed).Msg("resumed polling")
	}
}

// restartGCPercent is the garbage collector's GOGC while a restarted verifier resumes its agents.
// Resuming builds the whole live heap within a few seconds (every agent's connection, handshake and
// first quote), and at GOGC=50 the collector runs again and again over the growing heap: a fifth of the
// verifier's CPU then (profiled with 5,000 agents). The relaxed setting lasts until every resumed agent
// had its first round (at most resumeGCLimit). With 5,000 agents on 2 cores, GOGC=250 took the time
// until all were polled again from 4.3-5.0 s to 2.5-3.7 s, at a peak RSS of 400-460 MB instead of
// 350-370 (the steady state is about 180 MB). Since the resume gate bounds the rounds in flight, 100
// does as well as 250 (2.6-4.1 s against 2.6-4.0 s over 7 runs each, the machine noisy) at a peak of
// 205-218 MB instead of 270-305; GOMEMLIMIT, when set, still bounds it.
const (
	restartGCPercent = 100
	resumeGCLimit    = 30 * time.Second
)

// relaxGC raises the GC percent for the resume (never lowers it, and leaves GOGC=off alone) and arms
// the bound on how long it lasts.
func (v *Verifier) relaxGC() {
	prev := debug.SetGCPercent(restartGCPercent)
	if prev < 0 || prev >= restartGCPercent {
		debug.SetGCPercent(prev)
		return
	}
	var once sync.Once
	restore := func() {
		once.Do(func() {
			debug.SetGCPercent(prev)
			v.log.Debug().Int("gc_percent", prev).Msg("resume done; garbage collector back to its setting")
		})
	}
	v.restoreGC.Store(&restore)
	time.AfterFunc(resumeGCLimit, restore)
}

// resumedRound counts down the agents resumed by start; after the last one's first round the GC
// percent goes back.
func (v *Verifier) resumedRound() {
	if v.resuming.Add(-1) == 0 {
		if r := v.restoreGC.Load(); r != nil {
			(*r)()
		}
	}
}

// resumable are Keylime's APPROVED_REACTIVATE_STATES: polling resumes after a restart.
func resumable(s int) bool {
	switch s {
	case api.StateStart, api.StateGetQuote, api.StateGetQuoteRetry, api.StateProvideV, api.StateProvideVRetry:
		return true
	}
	return false
}

// nonceAlphabet is what Keylime's random_password draws from.
const nonceAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newNonce returns 20 random alphanumeric characters, as Keylime's verifier sends, drawn without bias
// from one read of random bytes (rarely two).
func newNonce() (string, error) {
	const n = 20
	const limit = 256 - 256%len(nonceAlphabet)
	var out [n]byte
	var buf [48]byte
	got := 0
	for got < n {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", err
		}
		for _, c := range buf {
			if int(c) < limit {
				out[got] = nonceAlphabet[int(c)%len(nonceAlphabet)]
				if got++; got == n {
					break
				}
			}
		}
	}
	return string(out[:]), nil
}
