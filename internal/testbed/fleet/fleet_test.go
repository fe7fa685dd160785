package fleet_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed/fleet"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/registrar"
	"github.com/keylime-go/keylime/verifier"
)

// inProcess is a registrar and a verifier running in the test process, with clients for them.
type inProcess struct {
	reg, admin *client.Registrar
	ver        *client.Verifier
	clientTLS  *transport.Material
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// sharedCA is one Keylime CA for every test of the binary (its RSA keys are slow to generate).
var sharedCA string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleet-ca-")
	if err != nil {
		panic(err)
	}
	sharedCA = filepath.Join(dir, "cv_ca")
	if _, err := ca.Ensure(sharedCA, ca.DefaultSubject, []string{"127.0.0.1", "localhost"}); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startInProcess starts a registrar and a verifier (quote_interval interval) with real bbolt files.
func startInProcess(t *testing.T, interval time.Duration) *inProcess {
	t.Helper()
	dir := t.TempDir()
	caDir := sharedCA
	srv, err := transport.LoadMaterial(caDir, "server")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := transport.LoadMaterial(caDir, "client")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg, err := registrar.New(registrar.Config{
		DBPath: filepath.Join(dir, "registrar.db"),
		TLS:    transport.ServerConfig(srv.Cert, srv.Pool, transport.OptionalClientCert),
		Log:    zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	plain, tlsLn, verLn := listen(t), listen(t), listen(t)
	ver, err := verifier.New(verifier.Config{
		DBPath:         filepath.Join(dir, "verifier.db"),
		TLS:            transport.ServerConfig(srv.Cert, srv.Pool, transport.OptionalClientCert),
		ClientCert:     &cl.Cert,
		IP:             "127.0.0.1",
		Port:           verLn.Addr().(*net.TCPAddr).Port,
		QuoteInterval:  interval,
		RetryInterval:  100 * time.Millisecond,
		MaxRetries:     3,
		RequestTimeout: 5 * time.Second,
		Log:            zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	regDone, verDone := make(chan error, 1), make(chan error, 1)
	go func() { regDone <- reg.Serve(ctx, plain, tlsLn) }()
	go func() { verDone <- ver.Serve(ctx, verLn) }()
	t.Cleanup(func() {
		cancel()
		for _, c := range []chan error{regDone, verDone} {
			if err := <-c; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
		reg.Close()
		ver.Close()
	})
	hc := transport.NewHTTPClient(transport.ClientConfig(&cl.Cert, cl.Pool), 10*time.Second)
	return &inProcess{
		reg:       client.NewRegistrar(transport.NewHTTPClient(nil, 10*time.Second), "http://"+plain.Addr().String(), api.CurrentVersion),
		admin:     client.NewRegistrar(hc, "https://"+tlsLn.Addr().String(), api.CurrentVersion),
		ver:       client.NewVerifier(hc, "https://"+verLn.Addr().String(), api.CurrentVersion),
		clientTLS: cl,
	}
}

var (
	nkOnce sync.Once
	nkKey  *rsa.PrivateKey
)

// newFleet starts a fleet whose agents share the NK in testdata (RSA key generation is slow).
func newFleet(t *testing.T, cfg fleet.Config) *fleet.Fleet {
	t.Helper()
	nkOnce.Do(func() {
		b, err := os.ReadFile(filepath.Join("testdata", "nk.pem"))
		if err != nil {
			panic(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			panic("testdata/nk.pem is not PEM")
		}
		if nkKey, err = x509.ParsePKCS1PrivateKey(blk.Bytes); err != nil {
			panic(err)
		}
	})
	cfg.NK = nkKey
	f, err := fleet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("fleet close: %v", err)
		}
	})
	return f
}

// checkStats checks that the fleet's timings are plausible for a verifier polling every interval.
func checkStats(t *testing.T, s fleet.Stats, interval time.Duration) {
	t.Helper()
	t.Logf("%d requests in %v (%.1f/s), %d errors; agent round p50 %v p99 %v; gap p50 %v p99 %v; verifier round p50 %v p99 %v; late %d/%d",
		s.Requests, s.Window.Round(time.Millisecond), s.Rate, s.Errors, s.AgentRound.P50, s.AgentRound.P99, s.Gap.P50, s.Gap.P99,
		s.VerifierRound.P50, s.VerifierRound.P99, s.Late, s.Gaps)
	switch {
	case s.Requests == 0 || s.Gaps == 0 || s.Rate <= 0:
		t.Errorf("no requests measured: %+v", s)
	case s.Errors != 0:
		t.Errorf("%d quote requests failed", s.Errors)
	case s.AgentRound.P50 <= 0 || s.AgentRound.P99 < s.AgentRound.P50 || s.AgentRound.Max < s.AgentRound.P99:
		t.Errorf("agent round percentiles out of order: %+v", s.AgentRound)
	case s.Gap.P50 < interval || s.Gap.P99 < s.Gap.P50:
		t.Errorf("gap percentiles %+v: a verifier waits the interval %v between rounds", s.Gap, interval)
	case s.VerifierRound.P99 < s.VerifierRound.P50 || s.VerifierRound.P50 != s.Gap.P50-interval:
		t.Errorf("verifier round %+v does not follow the gaps %+v", s.VerifierRound, s.Gap)
	case s.LateShare < 0 || s.LateShare > 1 || s.Late > s.Gaps:
		t.Errorf("late share %v (%d of %d)", s.LateShare, s.Late, s.Gaps)
	}
}

// Twenty agents register over the wire (activation included), are added through the tenant API with a
// named runtime policy, and are all attested repeatedly with growing IMA logs; the fleet's timings are
// sane.
func TestFleetInProcess(t *testing.T) {
	const n, interval = 20, 200 * time.Millisecond
	sys := startInProcess(t, interval)
	imaCfg := &softagent.IMAConfig{Initial: 5, PerQuote: 2}
	f := newFleet(t, fleet.Config{N: n, ClientCAs: sys.clientTLS.Pool, IMA: imaCfg})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := f.Register(ctx, sys.reg, 8); err != nil {
		t.Fatal(err)
	}
	ids, err := sys.admin.List(ctx)
	if err != nil || len(ids) != n {
		t.Fatalf("registrar lists %d agents (%v), want %d", len(ids), err, n)
	}
	for _, a := range f.Agents() {
		rec, err := sys.admin.Agent(ctx, a.UUID())
		if err != nil || !rec.Active {
			t.Fatalf("agent %s not active at the registrar: %v", a.UUID(), err)
		}
		if rec.EKTPM != base64.StdEncoding.EncodeToString(a.EK().Public()) || rec.MTLSCert == nil || *rec.MTLSCert != string(a.CertPEM()) {
			t.Fatalf("registrar record of %s differs from the agent's identity", a.UUID())
		}
	}
	pol, err := fleet.RuntimePolicy(imaCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.ver.PutRuntimePolicy(ctx, "fleet", &api.RuntimePolicyRequest{RuntimePolicy: base64.StdEncoding.EncodeToString(pol)}, false); err != nil {
		t.Fatal(err)
	}
	if err := f.AddToVerifier(ctx, sys.admin, sys.ver, fleet.AddOptions{RuntimePolicyName: "fleet"}, 8); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitRequests(ctx, 2); err != nil {
		t.Fatal(err)
	}
	f.ResetStats()
	time.Sleep(8 * interval)
	if err := f.WaitRequests(ctx, 6); err != nil {
		t.Fatal(err)
	}
	checkStats(t, f.Stats(interval), interval)

	bulk, err := sys.ver.Bulk(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range f.Agents() {
		st, ok := bulk[a.UUID()]
		switch {
		case !ok:
			t.Errorf("agent %s not on the verifier", a.UUID())
		case st.OperationalState != api.StateGetQuote || st.AttestationCount < 4 || st.HasRuntimePolicy != 1:
			t.Errorf("agent %s: state %s, %d attestations, runtime policy %d, last failure %q", a.UUID(),
				api.StateName(st.OperationalState), st.AttestationCount, st.HasRuntimePolicy, st.LastFailure)
		}
		if _, entries := a.Soft().IMALog(); entries < 5+2*6 {
			t.Errorf("agent %s: IMA log of %d entries, want it grown per quote", a.UUID(), entries)
		}
	}
	if n := f.Requests(); n < 6*uint64(len(f.Agents())) {
		t.Errorf("fleet served %d quote requests", n)
	}
}

// An agent whose blob is activated with another EK cannot activate its registration: the registrar's
// auth_tag check is exercised over the wire.
func TestRegisterWrongEK(t *testing.T) {
	sys := startInProcess(t, time.Second)
	f := newFleet(t, fleet.Config{N: 1, ClientCAs: sys.clientTLS.Pool})
	a := f.Agents()[0]
	ctx := context.Background()
	other, err := softagent.NewEK(softagent.ECC)
	if err != nil {
		t.Fatal(err)
	}
	cert := string(a.CertPEM())
	blob64, err := sys.reg.Register(ctx, a.UUID(), &api.RegisterRequest{
		EKTPM:    base64.StdEncoding.EncodeToString(a.EK().Public()),
		AIKTPM:   base64.StdEncoding.EncodeToString(a.Soft().AKPublic()),
		MTLSCert: &cert,
	})
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := base64.StdEncoding.DecodeString(blob64)
	if _, err := a.Soft().TPM().ActivateCredential(other, blob); !errors.Is(err, softagent.ErrActivation) {
		t.Fatalf("activation with another EK: %v", err)
	}
	if err := sys.reg.Activate(ctx, a.UUID(), "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"); err == nil {
		t.Fatal("registrar accepted a wrong auth_tag")
	}
	if err := a.Register(ctx, sys.reg); err != nil {
		t.Fatalf("registration after the refused attempt: %v", err)
	}
}

// keylimeBinary builds the release binary into a temporary directory, or skips in -short mode.
func keylimeBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the keylime binary")
	}
	bin := filepath.Join(t.TempDir(), "keylime")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/keylime-go/keylime")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// The release binary's registrar and verifier attest the fleet; after kill -9 a restarted verifier
// polls every agent again, and /proc shows its CPU time and memory.
func TestFleetBinary(t *testing.T) {
	const n, interval = 20, 300 * time.Millisecond
	bin := keylimeBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	d, err := fleet.Deploy(ctx, fleet.DeploymentConfig{Binary: bin, Dir: dir, CA: sharedCA, QuoteInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	f := newFleet(t, fleet.Config{N: n, ClientCAs: d.ClientTLS.Pool})
	if err := f.Register(ctx, d.Reg, 8); err != nil {
		t.Fatal(err)
	}
	if err := f.AddToVerifier(ctx, d.Admin, d.Ver, fleet.AddOptions{}, 8); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitRequests(ctx, 2); err != nil {
		t.Fatal(err)
	}
	u0, err := d.Verifier.Usage()
	if err != nil {
		t.Fatal(err)
	}
	f.ResetStats()
	time.Sleep(6 * interval)
	checkStats(t, f.Stats(interval), interval)
	u1, err := d.Verifier.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u1.RSS <= 1<<20 || u1.HWM < u1.RSS || u1.CPU < u0.CPU {
		t.Errorf("verifier usage %+v then %+v", u0, u1)
	}
	if fi, err := os.Stat(d.DBPath); err != nil || fi.Size() == 0 {
		t.Errorf("verifier.db: %v", err)
	}

	d.Verifier.Kill()
	epoch := f.MarkEpoch()
	if err := d.StartVerifier(ctx); err != nil {
		t.Fatal(err)
	}
	back, err := f.WaitAllPolled(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restart: every agent polled %v after the kill", back)
	if back <= 0 || back > time.Since(epoch) {
		t.Errorf("restart time %v", back)
	}
	if polled := f.PolledSinceEpoch(); polled != n {
		t.Errorf("%d agents polled after the restart", polled)
	}
}

func TestReadUsage(t *testing.T) {
	u, err := fleet.ReadUsage(0)
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS <= 0 || u.HWM < u.RSS || u.Anon <= 0 || u.Anon > u.RSS {
		t.Errorf("own usage %+v", u)
	}
	if _, err := fleet.ReadUsage(1 << 30); !errors.Is(err, fleet.ErrNoProc) {
		t.Errorf("usage of a missing process: %v", err)
	}
}

// The key cache hands out the same keys again and appends what it lacks.
func TestRSAKeyCache(t *testing.T) {
	dir := t.TempDir()
	first, err := fleet.RSAKeys(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	again, err := fleet.RSAKeys(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 3 || !first[0].Equal(again[0]) || !first[1].Equal(again[1]) || again[2].Equal(again[1]) {
		t.Fatal("cache did not return the stored keys first")
	}
	if k, err := fleet.RSAKeys("", 1); err != nil || len(k) != 1 {
		t.Errorf("without cache: %v", err)
	}
}

func TestSummarize(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = ms(100 - i) // unsorted
	}
	tests := []struct {
		name string
		in   []time.Duration
		want fleet.Percentiles
	}{
		{"empty", nil, fleet.Percentiles{}},
		{"one", []time.Duration{ms(7)}, fleet.Percentiles{P50: ms(7), P90: ms(7), P99: ms(7), Max: ms(7)}},
		{"1..100 ms", hundred, fleet.Percentiles{P50: ms(50), P90: ms(90), P99: ms(99), Max: ms(100)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := fleet.Summarize(tc.in); got != tc.want {
				t.Errorf("Summarize = %+v, want %+v", got, tc.want)
			}
		})
	}
}
