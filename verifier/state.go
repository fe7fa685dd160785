package verifier

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unique"

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
	// tr is the agent's connection; savedSession is the tr.SessionGen whose TLS session is on disk.
	tr           *transport.AgentTransport
	savedSession uint32

	// polling is set while the poller runs; timer runs its next round (nil while not polling).
	// stopping asks it to stop; abort cancels the running round's requests; stopped, when not nil,
	// is closed once the poller has stopped. poll is the round-to-round state (only the running
	// round touches it).
	polling, stopping bool
	timer             *time.Timer
	abort             context.CancelFunc
	stopped           chan struct{}
	poll              pollState
	// mbPassed identifies the last boot log (with the measured-boot policy) that passed evaluation, and
	// mbLog is that log's replay: with measured_boot_evaluate "once" the same log is neither parsed nor
	// evaluated again, only its PCR values compared with each quote.
	mbPassed [32]byte
	mbLog    *mb.Log
	mbAggs   [][]byte
	// storedState is the operational state in the record last written (or loaded).
	storedState int
	// dirty marks routine updates not written yet; lastWrite is when the record was last written
	// (UnixNano; routine updates are written at most every routineWriteEvery).
	dirty     atomic.Bool
	lastWrite atomic.Int64
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
	tr, err := v.agentTransport(rec)
	if err != nil {
		return nil, err
	}
	// The agent's TLS session lives in verifier.db (written by the flusher), not in memory.
	key := []byte(rec.AgentID)
	tr.SetSessionSource(func() []byte {
		b, err := v.db.Get(bucketSessions, key)
		if err != nil {
			return nil
		}
		return b
	})
	intern(rec)
	return &agentState{
		// Only the AK's key is used after this check; the decoded public area is dropped.
		ak:          &tpm.Public{Key: ak.Key},
		rec:         *rec,
		storedState: rec.State,
		policy:      pol,
		tr:          tr,
		client:      client.NewAgent(tr.Client(), tr.URL(), rec.SupportedVersion),
	}, nil
}

// intern makes the strings that most agents share (policies, metadata, algorithm names) one copy each
// instead of one per agent.
func intern(r *record) {
	for _, p := range []*string{&r.IP, &r.TPMPolicy, &r.Metadata, &r.SupportedVersion, &r.HashAlg, &r.EncAlg, &r.SignAlg, &r.RuntimePolicyName, &r.MBPolicyName} {
		*p = unique.Make(*p).Value()
	}
	for _, l := range [][]string{r.AcceptHashAlgs, r.AcceptEncryptionAlgs, r.AcceptSigningAlgs} {
		for i := range l {
			l[i] = unique.Make(l[i]).Value()
		}
	}
}

// agentTransport builds the connection to the agent, pinning its registered certificate (plain HTTP
// when the agent's mTLS is disabled).
func (v *Verifier) agentTransport(rec *record) (*transport.AgentTransport, error) {
	hostport := net.JoinHostPort(rec.IP, strconv.Itoa(rec.Port))
	keep := v.cfg.AgentConnections != ConnectPerQuote
	if rec.MTLSCert == "" || rec.MTLSCert == "disabled" {
		return transport.NewAgentTransport(hostport, nil, "", keep)
	}
	tr, err := transport.NewAgentTransport(hostport, v.agentTLS, rec.MTLSCert, keep)
	if err != nil {
		return nil, fmt.Errorf("mtls_cert: %w", err)
	}
	return tr, nil
}

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
