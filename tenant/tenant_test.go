package tenant_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/e2e"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/tenant"
	"github.com/keylime-go/keylime/tpm/device"
)

// bed is a running system (CA, registrar, verifier) plus a cert store trusting the swtpm EK CA.
type bed struct {
	s     *e2e.System
	store string
}

func newBed(t *testing.T) *bed {
	t.Helper()
	testbed.RequireSWTPM(t)
	t.Parallel()
	s := e2e.NewSystem(t)
	s.StartVerifier(e2e.VerifierOptions{QuoteInterval: 200 * time.Millisecond})
	return &bed{s: s}
}

// startAgent starts an agent and waits until the registrar has it active; the first agent's swtpm CA
// certificates become the bed's cert store.
func (b *bed) startAgent(t *testing.T) *e2e.Agent {
	t.Helper()
	a := b.s.StartAgent(e2e.AgentOptions{})
	if _, err := b.s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatalf("agent never active: %v", err)
	}
	if b.store == "" {
		b.store = certStore(t, a.TPM.CACerts...)
	}
	return a
}

// certStore copies PEM files into a new directory.
func certStore(t *testing.T, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func testLog(t *testing.T) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	}
	return zerolog.Nop()
}

// tenant returns a tenant of the bed with Keylime's default accept lists and fast retries.
func (b *bed) tenant(t *testing.T, mod ...func(*tenant.Config)) *tenant.Tenant {
	t.Helper()
	cfg := tenant.Config{
		VerifierURL:    b.s.VerifierURL,
		RegistrarURL:   b.s.RegistrarTLSURL,
		TLS:            b.s.ClientTLS(),
		CertStore:      b.store,
		RequireEKCert:  true,
		AcceptHashAlgs: []string{"sha512", "sha384", "sha256"},
		AcceptEncAlgs:  []string{"ecc", "rsa"},
		AcceptSignAlgs: []string{"ecdsa", "rsassa"},
		MaxRetries:     3,
		RetryInterval:  100 * time.Millisecond,
		RequestTimeout: 5 * time.Second,
		Log:            testLog(t),
	}
	for _, m := range mod {
		m(&cfg)
	}
	tn, err := tenant.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tn.Close)
	return tn
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestAddAttestUpdateDelete(t *testing.T) {
	b := newBed(t)
	a := b.startAgent(t)
	tn := b.tenant(t)
	id := a.UUID()
	pol, err := a.PCRPolicy(15)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, time.Minute)

	start := time.Now()
	res, err := tn.Add(ctx, tenant.AddOptions{AgentID: id, TPMPolicy: pol})
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	added := time.Since(start)
	// Poll tightly (WaitAttested polls every 50 ms) to measure add → first successful attestation.
	var first time.Duration
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if st, err := tn.CVStatus(ctx, id); err == nil && st.AttestationCount >= 1 {
			first = time.Since(start)
			break
		}
	}
	st, err := tn.WaitAttested(ctxT(t, 10*time.Second), id, 0)
	if err != nil || first == 0 {
		t.Fatalf("never attested: %v", err)
	}
	t.Logf("tenant add took %v; first successful attestation %v after add began", added, first)
	if st.OperationalState != api.StateGetQuote || st.AttestationCount < 1 {
		t.Fatalf("status %+v", st)
	}
	if res.EKCheck != tenant.EKVerified || res.EKCertIssuer == "" || res.Mask != "0x8000" ||
		res.AgentAPIVersion != api.CurrentVersion || res.AgentPort != a.Port || res.HashAlg != "sha256" ||
		res.SignAlg != "rsassa" || res.RegCount != 1 || len(res.Warnings) != 0 {
		t.Errorf("add result %+v", res)
	}
	// What the verifier stored is the policy with its mask.
	stored, err := policy.ParseTPMPolicy(st.TPMPolicy)
	if err != nil || stored.Mask != 1<<15 || len(stored.PCRs[15]) != 1 {
		t.Errorf("stored tpm_policy %s (%v)", st.TPMPolicy, err)
	}

	// The queries all see the agent.
	if ids, err := tn.CVList(ctx); err != nil || !slices.Contains(ids, id) {
		t.Errorf("cvlist %v %v", ids, err)
	}
	if ids, err := tn.RegList(ctx); err != nil || !slices.Contains(ids, id) {
		t.Errorf("reglist %v %v", ids, err)
	}
	if all, err := tn.BulkInfo(ctx); err != nil || all[id].AttestationCount < 1 {
		t.Errorf("bulkinfo %v %v", all, err)
	}
	if s, err := tn.Status(ctx, id); err != nil || s.Registrar == nil || s.Verifier == nil || !s.Registrar.Active {
		t.Errorf("status %+v %v", s, err)
	}

	// Adding again conflicts; update replaces the policy.
	if _, err := tn.Add(ctx, tenant.AddOptions{AgentID: id, TPMPolicy: pol}); !errors.Is(err, tenant.ErrAlreadyAdded) {
		t.Errorf("second add: %v", err)
	}
	if _, err := tn.Update(ctx, tenant.AddOptions{AgentID: id}); err != nil {
		t.Fatalf("update: %v", err)
	}
	st, err = tn.CVStatus(ctx, id)
	if err != nil || !strings.Contains(st.TPMPolicy, `"mask":"0x0"`) {
		t.Errorf("after update: %+v %v", st, err)
	}
	if _, err := tn.WaitAttested(ctxT(t, 10*time.Second), id, 0); err != nil {
		t.Fatalf("updated agent never attested: %v", err)
	}

	// Delete: gone, and a second delete says so.
	if err := tn.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.CVStatus(ctx, id); !errors.Is(err, tenant.ErrNotOnVerifier) {
		t.Errorf("status after delete: %v", err)
	}
	if err := tn.Delete(ctx, id); !errors.Is(err, tenant.ErrNotOnVerifier) || !strings.Contains(err.Error(), "not on the verifier") {
		t.Errorf("second delete: %v", err)
	}
	// Status still answers from the registrar.
	if s, err := tn.Status(ctx, id); err != nil || s.Registrar == nil || s.Verifier != nil {
		t.Errorf("status of a registered-only agent: %+v %v", s, err)
	}
}

// TestAddECC: an agent with an ECC P-384 EK (certificate from the swtpm CA) and an ECC AK is accepted with
// the default accept lists and attests.
func TestAddECC(t *testing.T) {
	b := newBed(t)
	a := b.s.StartAgent(e2e.AgentOptions{EKAlg: device.ECC, AKAlg: device.ECC})
	if _, err := b.s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	b.store = certStore(t, a.TPM.CACerts...)
	tn := b.tenant(t)
	ctx := ctxT(t, time.Minute)
	res, err := tn.Add(ctx, tenant.AddOptions{AgentID: a.UUID()})
	if err != nil {
		t.Fatal(err)
	}
	if res.EKCheck != tenant.EKVerified || res.EncAlg != "ecc384" || res.SignAlg != "ecdsa" {
		t.Errorf("result %+v", res)
	}
	if _, err := tn.WaitAttested(ctxT(t, 10*time.Second), a.UUID(), 0); err != nil {
		t.Fatal(err)
	}
	// With Keylime's exact spelling list, a P-384 EK is refused before anything reaches the verifier.
	strict := b.tenant(t, func(c *tenant.Config) { c.AcceptEncAlgs = []string{"ecc256", "rsa2048"} })
	if _, err := strict.Update(ctx, tenant.AddOptions{AgentID: a.UUID()}); !errors.Is(err, tenant.ErrIdentityQuote) || !strings.Contains(err.Error(), "ecc384") {
		t.Fatalf("strict accept list: %v", err)
	}
	if _, err := tn.CVStatus(ctx, a.UUID()); err != nil {
		t.Fatalf("a refused update removed the enrolment: %v", err)
	}
}

func TestEKCertStore(t *testing.T) {
	b := newBed(t)
	a := b.startAgent(t)
	caCerts := a.TPM.CACerts // root, then the intermediate that signed the EK certificates
	id := a.UUID()
	ctx := ctxT(t, 2*time.Minute)
	for _, tc := range []struct {
		name      string
		store     string
		noEKCheck bool
		want      tenant.EKCheck // "" = refused
		msg       string
	}{
		{name: "root and intermediate", store: certStore(t, caCerts...), want: tenant.EKVerified},
		{name: "intermediate alone is a trust anchor", store: certStore(t, caCerts[1]), want: tenant.EKVerified},
		{name: "root alone: chain incomplete", store: certStore(t, caCerts[0]), msg: "does not chain to cert store"},
		{name: "empty store", store: t.TempDir(), msg: "(0 certificates)"},
		{name: "missing store", store: filepath.Join(t.TempDir(), "nope"), msg: "read cert store"},
		{name: "another CA", store: certStore(t, filepath.Join(b.s.CADir, "cacert.crt")), msg: "does not chain"},
		{name: "empty store with --no-ek-check", store: t.TempDir(), noEKCheck: true, want: tenant.EKSkipped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := b.tenant(t, func(c *tenant.Config) { c.CertStore = tc.store })
			res, err := tn.Add(ctx, tenant.AddOptions{AgentID: id, NoEKCheck: tc.noEKCheck})
			if tc.want == "" {
				if !errors.Is(err, tenant.ErrEKCert) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), id) {
					t.Fatalf("error %v, want ErrEKCert naming the agent and %q", err, tc.msg)
				}
				if _, err := tn.CVStatus(ctx, id); !errors.Is(err, tenant.ErrNotOnVerifier) {
					t.Fatalf("refused agent reached the verifier: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if res.EKCheck != tc.want {
				t.Errorf("ek_check %s, want %s", res.EKCheck, tc.want)
			}
			if tc.noEKCheck && len(res.Warnings) == 0 {
				t.Error("no warning for a skipped EK check")
			}
			if err := tn.Delete(ctx, id); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// tamperedRegistrar serves the registrar's admin API through a man in the middle (with the Keylime CA's
// server certificate) that rewrites single agent records with mutate.
func tamperedRegistrar(t *testing.T, s *e2e.System, mutate func(*api.RegistrarAgent)) string {
	t.Helper()
	srv, err := transport.LoadMaterial(s.CADir, "server")
	if err != nil {
		t.Fatal(err)
	}
	cl := s.ClientTLS()
	hc := transport.NewHTTPClient(transport.ClientConfig(&cl.Cert, cl.Pool), 5*time.Second)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, s.RegistrarTLSURL+r.URL.RequestURI(), r.Body)
		resp, err := hc.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if r.Method == http.MethodGet && resp.StatusCode == http.StatusOK && !strings.HasSuffix(r.URL.Path, "/agents/") {
			var env api.Response
			var rec api.RegistrarAgent
			if json.Unmarshal(body, &env) == nil && env.Decode(&rec) == nil && rec.AIKTPM != "" {
				mutate(&rec)
				body, _ = json.Marshal(api.Success(rec))
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := transport.NewServer(h, transport.ServerConfig(srv.Cert, srv.Pool, transport.OptionalClientCert), zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- transport.Serve(ctx, hs, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return "https://" + ln.Addr().String()
}

// TestRegistrarRecordChecks: what the tenant does with a registrar record that is wrong or suspicious.
func TestRegistrarRecordChecks(t *testing.T) {
	b := newBed(t)
	a := b.startAgent(t)
	other := b.startAgent(t)
	otherRec, err := b.s.Admin.Agent(context.Background(), other.UUID())
	if err != nil {
		t.Fatal(err)
	}
	id := a.UUID()
	ctx := ctxT(t, 2*time.Minute)
	for _, tc := range []struct {
		name       string
		mutate     func(*api.RegistrarAgent)
		noRequire  bool
		wantErr    error
		msg        string
		wantEK     tenant.EKCheck
		wantWarn   string
		verifierOK bool
	}{
		{name: "another agent's AK", mutate: func(r *api.RegistrarAgent) { r.AIKTPM = otherRec.AIKTPM },
			wantErr: tenant.ErrIdentityQuote, msg: "does not verify with the registrar's AK"},
		{name: "not an AK", mutate: func(r *api.RegistrarAgent) { r.AIKTPM = r.EKTPM },
			wantErr: tenant.ErrIdentityQuote, msg: "aik_tpm"},
		{name: "another TPM's EK certificate", mutate: func(r *api.RegistrarAgent) { r.EKCert = otherRec.EKCert },
			wantErr: tenant.ErrEKCert, msg: "does not match the EK"},
		{name: "no EK certificate, required", mutate: func(r *api.RegistrarAgent) { r.EKCert = nil },
			wantErr: tenant.ErrEKCert, msg: "without an EK certificate"},
		{name: "no EK certificate, not required", mutate: func(r *api.RegistrarAgent) { r.EKCert = nil }, noRequire: true,
			wantEK: tenant.EKAbsent, wantWarn: "no EK certificate"},
		{name: "not active", mutate: func(r *api.RegistrarAgent) { r.Active = false },
			wantErr: tenant.ErrNotActive, msg: id},
		{name: "another agent's mTLS certificate", mutate: func(r *api.RegistrarAgent) { r.MTLSCert = otherRec.MTLSCert },
			wantErr: tenant.ErrAgentContact, msg: "pinned"},
		{name: "registered twice", mutate: func(r *api.RegistrarAgent) { r.RegCount = 2 },
			wantEK: tenant.EKVerified, wantWarn: "registered 2 times"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := tamperedRegistrar(t, b.s, tc.mutate)
			tn := b.tenant(t, func(c *tenant.Config) { c.RegistrarURL = reg; c.RequireEKCert = !tc.noRequire })
			res, err := tn.Add(ctx, tenant.AddOptions{AgentID: id})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("error %v, want %v mentioning %q", err, tc.wantErr, tc.msg)
				}
				if _, err := tn.CVStatus(ctx, id); !errors.Is(err, tenant.ErrNotOnVerifier) {
					t.Fatalf("refused agent reached the verifier: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if res.EKCheck != tc.wantEK || !strings.Contains(strings.Join(res.Warnings, "\n"), tc.wantWarn) {
				t.Errorf("result %+v", res)
			}
			if err := tn.Delete(ctx, id); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestIdentityQuoteTampered: a man in the middle holding the agent's own TLS key (so the pinned
// certificate matches) rewrites the identity quote; the tenant refuses, and nothing reaches the verifier.
func TestIdentityQuoteTampered(t *testing.T) {
	b := newBed(t)
	a := b.startAgent(t)
	cert, err := transport.LoadKeyPair(filepath.Join(a.DataDir, "server-cert.crt"), filepath.Join(a.DataDir, "server-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := b.s.StartProxy(t, cert, a)
	id := a.UUID()
	ctx := ctxT(t, time.Minute)
	tn := b.tenant(t)

	// A genuine quote of this agent over another nonce, to replay.
	cl := b.s.ClientTLS()
	conf := transport.PinnedClientConfig(&cl.Cert, cert.Leaf)
	direct := client.NewAgent(transport.NewHTTPClient(conf, 5*time.Second), "https://127.0.0.1:"+strconv.Itoa(a.Port), api.CurrentVersion)
	old, err := direct.IdentityQuote(ctx, "0ldn0nce0ldn0nce0ldn")
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	strangerNK := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))

	for _, tc := range []struct {
		name   string
		mutate func(*api.QuoteResponse)
		msg    string
	}{
		{"replayed quote", func(q *api.QuoteResponse) { q.Quote = old.Quote }, "nonce mismatch"},
		{"altered attestation", func(q *api.QuoteResponse) {
			parts := strings.Split(q.Quote, ":")
			parts[0] = parts[0][:len(parts[0])-4] + "AAAA"
			q.Quote = strings.Join(parts, ":")
		}, "signature does not verify"},
		{"swapped public key", func(q *api.QuoteResponse) { q.PubKey = strangerNK }, "PCR 16 does not bind"},
		{"unaccepted hash", func(q *api.QuoteResponse) { q.HashAlg = "sha1" }, "not accepted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy.Mutate(tc.mutate)
			_, err := tn.Add(ctx, tenant.AddOptions{AgentID: id, AgentIP: "127.0.0.1", AgentPort: proxy.Port})
			if !errors.Is(err, tenant.ErrIdentityQuote) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want ErrIdentityQuote mentioning %q", err, tc.msg)
			}
			if _, err := tn.CVStatus(ctx, id); !errors.Is(err, tenant.ErrNotOnVerifier) {
				t.Fatalf("refused agent reached the verifier: %v", err)
			}
		})
	}
	// Unchanged, the same path works (the proxy is not what the tenant refuses); the verifier is told
	// the agent's real address.
	proxy.Mutate(nil)
	res, err := tn.Add(ctx, tenant.AddOptions{AgentID: id, AgentIP: "127.0.0.1", AgentPort: proxy.Port})
	if err != nil {
		t.Fatalf("add through an honest proxy: %v", err)
	}
	if res.AgentPort != proxy.Port {
		t.Errorf("result %+v", res)
	}
}

func TestReactivate(t *testing.T) {
	b := newBed(t)
	a := b.startAgent(t)
	tn := b.tenant(t)
	id := a.UUID()
	ctx := ctxT(t, time.Minute)
	if _, err := tn.Add(ctx, tenant.AddOptions{AgentID: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.WaitAttested(ctxT(t, 10*time.Second), id, 0); err != nil {
		t.Fatal(err)
	}
	// Stop polling (Keylime's tenant does this when --verify fails): state Tenant Quote Failed.
	if err := b.s.Verifier.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	st, err := tn.CVStatus(ctx, id)
	if err != nil || st.OperationalState != api.StateTenantFailed {
		t.Fatalf("after stop: %+v %v", st, err)
	}
	if _, err := tn.WaitAttested(ctx, id, 0); !errors.Is(err, tenant.ErrAgentFailed) {
		t.Fatalf("waiting on a stopped agent: %v", err)
	}
	if err := tn.Reactivate(ctx, id); err != nil {
		t.Fatal(err)
	}
	again, err := tn.WaitAttested(ctxT(t, 10*time.Second), id, st.AttestationCount)
	if err != nil {
		t.Fatalf("not attested after reactivate: %v", err)
	}
	if again.AttestationCount <= st.AttestationCount {
		t.Errorf("count %d → %d", st.AttestationCount, again.AttestationCount)
	}
	if err := tn.Reactivate(ctx, "nobody"); !errors.Is(err, tenant.ErrNotOnVerifier) {
		t.Errorf("reactivate unknown: %v", err)
	}
}

// TestPolicyFailureReported: an agent whose PCR 15 leaves the policy fails, and WaitAttested says why.
func TestPolicyFailureReported(t *testing.T) {
	b := newBed(t)
	a := b.startAgent(t)
	tn := b.tenant(t)
	id := a.UUID()
	ctx := ctxT(t, time.Minute)
	pol, err := a.PCRPolicy(15)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("something else ran"))
	if err := a.Device.PCRExtend(15, tpm2.TPMAlgSHA256, d[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.Add(ctx, tenant.AddOptions{AgentID: id, TPMPolicy: pol}); err != nil {
		t.Fatal(err)
	}
	st, err := tn.WaitAttested(ctxT(t, 10*time.Second), id, 0)
	if !errors.Is(err, tenant.ErrAgentFailed) || !strings.Contains(err.Error(), "pcr=15") {
		t.Fatalf("error %v", err)
	}
	if st == nil || st.OperationalState != api.StateInvalidQuote {
		t.Fatalf("status %+v", st)
	}
}

func TestRegDeleteAndErrors(t *testing.T) {
	b := newBed(t)
	a := b.startAgent(t)
	tn := b.tenant(t)
	id := a.UUID()
	ctx := ctxT(t, time.Minute)

	for _, tc := range []struct {
		name string
		run  func() error
		want error
	}{
		{"add unknown agent", func() error { _, err := tn.Add(ctx, tenant.AddOptions{AgentID: "nobody"}); return err }, tenant.ErrNotRegistered},
		{"add without id", func() error { _, err := tn.Add(ctx, tenant.AddOptions{}); return err }, tenant.ErrNoAgentID},
		{"bad policy", func() error {
			_, err := tn.Add(ctx, tenant.AddOptions{AgentID: id, TPMPolicy: `{"16": []}`})
			return err
		}, policy.ErrBadTPMPolicy},
		{"cvstatus unknown", func() error { _, err := tn.CVStatus(ctx, "nobody"); return err }, tenant.ErrNotOnVerifier},
		{"status unknown", func() error { _, err := tn.Status(ctx, "nobody"); return err }, tenant.ErrNotRegistered},
		{"regstatus unknown", func() error { _, err := tn.RegStatus(ctx, "nobody"); return err }, tenant.ErrNotRegistered},
		{"regdelete unknown", func() error { return tn.RegDelete(ctx, "nobody") }, tenant.ErrNotRegistered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}

	if err := tn.RegDelete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.RegStatus(ctx, id); !errors.Is(err, tenant.ErrNotRegistered) {
		t.Errorf("regstatus after regdelete: %v", err)
	}
	if ids, err := tn.RegList(ctx); err != nil || slices.Contains(ids, id) {
		t.Errorf("reglist after regdelete: %v %v", ids, err)
	}

	// A verifier nobody listens on: a clear error, quickly.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()
	down := b.tenant(t, func(c *tenant.Config) { c.VerifierURL = dead })
	if _, err := down.CVList(ctx); err == nil || !strings.Contains(err.Error(), dead) {
		t.Errorf("unreachable verifier: %v", err)
	}
}
