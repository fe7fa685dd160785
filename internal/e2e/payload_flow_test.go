package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/payload"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/tenant"
)

// keyProxy stands between the tenant and verifier and one agent, presenting the agent's own mTLS
// certificate (its key is read from the agent's data directory), and records the bodies of keys/ukey and
// keys/vkey. A path in drop is answered 200 without reaching the agent.
type keyProxy struct {
	Port int
	drop string
	// failOnce is a path whose first request is answered 503 without reaching the agent.
	failOnce string
	failed   bool

	mu     sync.Mutex
	bodies map[string][][]byte
	hits   map[string]int
}

func startKeyProxy(t *testing.T, s *System, a *Agent, drop string) *keyProxy {
	t.Helper()
	cert, err := transport.LoadKeyPair(filepath.Join(a.DataDir, "server-cert.crt"), filepath.Join(a.DataDir, "server-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cl := s.ClientTLS()
	up := transport.PinnedClientConfig(&cl.Cert, cert.Leaf)
	hc := transport.NewHTTPClient(up, 10*time.Second)
	upstream := "https://127.0.0.1:" + itoa(a.Port)
	p := &keyProxy{drop: drop, bodies: map[string][][]byte{}, hits: map[string]int{}}
	ln := listen(t)
	p.Port = ln.Addr().(*net.TCPAddr).Port
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		for _, k := range []string{"/keys/ukey", "/keys/vkey"} {
			if strings.HasSuffix(r.URL.Path, k) {
				p.mu.Lock()
				p.bodies[k] = append(p.bodies[k], body)
				p.mu.Unlock()
			}
		}
		p.mu.Lock()
		fail := p.failOnce != "" && strings.HasSuffix(r.URL.Path, p.failOnce) && !p.failed
		if fail {
			p.failed = true
		}
		p.hits[r.URL.Path]++
		p.mu.Unlock()
		if fail {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		if drop != "" && strings.HasSuffix(r.URL.Path, drop) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"code": 200, "status": "Success", "results": {}}`))
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, upstream+r.URL.RequestURI(), bytes.NewReader(body))
		req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
		resp, err := hc.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(b)
	})
	srv := transport.NewServer(handler, transport.ServerConfig(cert, cl.Pool, transport.RequireClientCert), zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- transport.Serve(ctx, srv, ln) }()
	t.Cleanup(func() { cancel(); <-done; hc.CloseIdleConnections() })
	return p
}

// Hits counts the requests whose path ends in suffix.
func (p *keyProxy) Hits(suffix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for path, c := range p.hits {
		if strings.HasSuffix(path, suffix) {
			n += c
		}
	}
	return n
}

// half decrypts the key half recorded for path (the last one) with the agent's NK.
func (p *keyProxy) half(t *testing.T, a *Agent, path string) []byte {
	t.Helper()
	p.mu.Lock()
	bs := p.bodies[path]
	p.mu.Unlock()
	if len(bs) == 0 {
		t.Fatalf("no %s went through the proxy", path)
	}
	var body struct {
		EncryptedKey string `json:"encrypted_key"`
	}
	if err := json.Unmarshal(bs[len(bs)-1], &body); err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(filepath.Join(a.DataDir, "payload-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	nk, err := ca.ParseKeyPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	h, err := payload.UnwrapKey(nk.(*rsa.PrivateKey), body.EncryptedKey)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// newTestTenant is a tenant of the system's CA with fast retries, no EK check needed (swtpm's EK CA is
// not in any store here), logging to log.
func newTestTenant(t *testing.T, s *System, log zerolog.Logger, maxRetries int) *tenant.Tenant {
	t.Helper()
	tn, err := tenant.New(tenant.Config{
		VerifierURL: s.VerifierURL, RegistrarURL: s.RegistrarTLSURL, TLS: s.ClientTLS(),
		AcceptHashAlgs: []string{"sha512", "sha384", "sha256"}, AcceptEncAlgs: []string{"ecc", "rsa"},
		AcceptSignAlgs: []string{"ecdsa", "rsassa"}, MaxRetries: maxRetries, RetryInterval: 100 * time.Millisecond,
		RequestTimeout: 5 * time.Second, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tn.Close)
	return tn
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitContent(t *testing.T, path string, within time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if b, err := os.ReadFile(path); err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// encodings are the ways a byte string could reach a log line.
func encodings(b []byte) []string {
	raw, _ := json.Marshal(string(b))
	return []string{
		hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		fmt.Sprint(b), strings.Trim(string(raw), `"`),
	}
}

// TestSecretsNeverLogged: during a whole payload delivery (tenant add with a payload, V released after
// attestation, the agent deriving K, unzipping and running autorun.sh, tenant --verify) no log line of
// the agent, the verifier or the tenant, at debug level, holds K, U, V, the auth_tag or the payload's
// plaintext in any usual encoding. U and V are read off the wire by a proxy holding the agent's keys, so
// the test knows the real halves.
func TestSecretsNeverLogged(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	logs := &testbed.LogBuffer{}
	s.Log = zerolog.New(logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	s.StartVerifier(VerifierOptions{})
	a := s.StartAgent(AgentOptions{})
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	p := startKeyProxy(t, s, a, "")
	tn := newTestTenant(t, s, s.Log.With().Str("role", "tenant").Logger(), 3)
	secret := make([]byte, 24)
	_, _ = rand.Read(secret)
	secretText := "payload-secret-" + hex.EncodeToString(secret)
	zipped := zipFiles(t, map[string]string{"autorun.sh": "#!/bin/sh\necho " + secretText + "\necho done > marker\n", "secret.txt": secretText})
	pol, err := a.PCRPolicy(15)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 20*time.Second)
	if _, err := tn.Add(ctx, tenant.AddOptions{AgentID: a.UUID(), AgentIP: "127.0.0.1", AgentPort: p.Port, TPMPolicy: pol, NoEKCheck: true, Payload: zipped}); err != nil {
		t.Fatal(err)
	}
	if err := tn.VerifyPayload(ctx, a.UUID(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(a.DataDir, "secure", "unzipped")
	waitContent(t, filepath.Join(dir, "marker"), 5*time.Second)
	// A few more polls, so steady-state logging is covered too.
	st, _ := s.Verifier.Agent(ctx, a.UUID())
	if _, err := s.WaitVerifier(a.UUID(), 5*time.Second, Attested(st.AttestationCount+2)); err != nil {
		t.Fatal(err)
	}

	u, v := p.half(t, a, "/keys/ukey"), p.half(t, a, "/keys/vkey")
	k, err := payload.Combine(u, v)
	if err != nil {
		t.Fatal(err)
	}
	if onDisk, _ := os.ReadFile(filepath.Join(dir, "derived_tci_key")); !bytes.Equal(onDisk, k) {
		t.Fatal("the halves read off the wire do not give the agent's K: the test would check the wrong secrets")
	}
	var ukey api.UKeyRequest
	p.mu.Lock()
	_ = json.Unmarshal(p.bodies["/keys/ukey"][0], &ukey)
	p.mu.Unlock()

	out := logs.String()
	for _, role := range []string{`"role":"agent"`, `"role":"verifier"`, `"role":"tenant"`, "V delivered to the agent", "bootstrap key derived", "payload script finished", "the agent derived the payload key"} {
		if !strings.Contains(out, role) {
			t.Fatalf("log capture incomplete: no %s in\n%s", role, out)
		}
	}
	secrets := map[string][]string{
		"K": encodings(k), "U": encodings(u), "V": encodings(v),
		"auth_tag":          {ukey.AuthTag},
		"payload plaintext": append([]string{secretText}, encodings(zipped)[2:4]...),
	}
	for name, forms := range secrets {
		for _, f := range forms {
			if f != "" && strings.Contains(out, f) {
				t.Errorf("%s appears in the log (as %q)", name, f)
			}
		}
	}
	t.Logf("checked %d log lines", strings.Count(out, "\n"))
}

// TestTenantVerifyGivesUp: an agent that attests but never derives K (its U never arrived) is stopped on
// the verifier by the tenant's --verify after max_retries attempts: the verifier shows Tenant Quote
// Failed and polls it no more, and the tenant reports ErrPayloadNotVerified.
func TestTenantVerifyGivesUp(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	a := s.StartAgent(AgentOptions{})
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	p := startKeyProxy(t, s, a, "/keys/ukey")
	tn := newTestTenant(t, s, s.Log, 3)
	pol, err := a.PCRPolicy(15)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 20*time.Second)
	zipped := zipFiles(t, map[string]string{"autorun.sh": "#!/bin/sh\necho ran > marker\n"})
	if _, err := tn.Add(ctx, tenant.AddOptions{AgentID: a.UUID(), AgentIP: "127.0.0.1", AgentPort: p.Port, TPMPolicy: pol, NoEKCheck: true, Payload: zipped}); err != nil {
		t.Fatal(err)
	}
	// The agent attests and gets V, but without U it cannot derive K.
	if _, err := s.WaitVerifier(a.UUID(), 5*time.Second, Attested(1)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, vs, _ := a.BootstrapState(); vs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("V never reached the agent")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	err = tn.VerifyPayload(ctx, a.UUID(), 0)
	if !errors.Is(err, tenant.ErrPayloadNotVerified) {
		t.Fatalf("VerifyPayload = %v, want ErrPayloadNotVerified", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %v; 3 attempts 100 ms apart should take well under a second", took)
	}
	st, err := s.WaitVerifier(a.UUID(), 2*time.Second, InState(api.StateTenantFailed))
	if err != nil {
		t.Fatalf("agent not stopped on the verifier: %v", err)
	}
	time.Sleep(600 * time.Millisecond) // three quote intervals
	after, err := s.Verifier.Agent(ctx, a.UUID())
	if err != nil {
		t.Fatal(err)
	}
	if after.OperationalState != api.StateTenantFailed || after.AttestationCount != st.AttestationCount || after.LastReceivedQuote != st.LastReceivedQuote {
		t.Errorf("verifier still polls the stopped agent: state %s, count %d -> %d", api.StateName(after.OperationalState), st.AttestationCount, after.AttestationCount)
	}
	if haveU, vs, haveK := a.BootstrapState(); haveU || vs != 1 || haveK {
		t.Errorf("agent: U=%v V×%d K=%v; want V only", haveU, vs, haveK)
	}
	if _, err := os.Stat(filepath.Join(a.DataDir, "secure")); err == nil {
		t.Error("the agent wrote a secure directory without K")
	}
}
