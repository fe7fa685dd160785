package vmtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/transport"
)

// hostSystem is the host side: registrar and verifier run from the release binary, the tenant and
// policy commands run from it too; clients read the registrar's and verifier's state.
type hostSystem struct {
	t        *testing.T
	bin, dir string
	cfg      string // host keylime.toml
	regPort  int    // registrar plain port (the agent's)
	regTLS   int
	verPort  int
	Admin    *client.Registrar
	Verifier *client.Verifier
	mat      *transport.Material
}

// buildKeylime builds the release binary as shipped (CGO_ENABLED=0, static), or takes the one named
// by KEYLIME_VM_BINARY (to attest a binary built elsewhere).
func buildKeylime(t *testing.T, dir string) string {
	t.Helper()
	if b := os.Getenv("KEYLIME_VM_BINARY"); b != "" {
		return b
	}
	bin, err := testbed.BuildKeylime(dir)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startHost writes the host configuration and starts the registrar and the verifier. The verifier
// keeps retrying an unreachable agent for two minutes (a reboot under TCG takes well under that).
func startHost(t *testing.T, bin, dir, certStore string) *hostSystem {
	t.Helper()
	s := &hostSystem{t: t, bin: bin, dir: dir, cfg: filepath.Join(dir, "keylime.toml"),
		regPort: testbed.FreePort(t), regTLS: testbed.FreePort(t), verPort: testbed.FreePort(t)}
	conf := fmt.Sprintf(`[registrar]
keylime_dir = %[1]q
port = %[2]d
tls_port = %[3]d

[verifier]
keylime_dir = %[1]q
port = %[4]d
quote_interval = "1s"
retry_interval = "1s"
max_retries = 120
exponential_backoff = false
request_timeout = "30s"

[tenant]
keylime_dir = %[1]q
verifier_port = %[4]d
registrar_port = %[3]d
tpm_cert_store = %[5]q
`, dir, s.regPort, s.regTLS, s.verPort, certStore)
	if err := os.WriteFile(s.cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start("registrar")
	waitFor(t, 30*time.Second, "the registrar's CA", func() error {
		_, err := os.Stat(filepath.Join(dir, "cv_ca", "client-cert.crt"))
		return err
	})
	s.start("verifier")
	mat, err := transport.LoadMaterial(filepath.Join(dir, "cv_ca"), "client")
	if err != nil {
		t.Fatal(err)
	}
	s.mat = mat
	hc := transport.NewHTTPClient(transport.ClientConfig(&mat.Cert, mat.Pool), 10*time.Second)
	s.Admin = client.NewRegistrar(hc, "https://127.0.0.1:"+strconv.Itoa(s.regTLS), api.CurrentVersion)
	s.Verifier = client.NewVerifier(hc, "https://127.0.0.1:"+strconv.Itoa(s.verPort), api.CurrentVersion)
	waitFor(t, 30*time.Second, "the verifier", func() error { _, err := s.Verifier.Version(t.Context()); return err })
	return s
}

// start runs a long-lived role of the binary with its log in dir/<role>.log.
func (s *hostSystem) start(role string) {
	t := s.t
	t.Helper()
	logf, err := os.Create(filepath.Join(s.dir, role+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.bin, "--config", s.cfg, "--log-level", "debug", role)
	cmd.Env = binaryEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

// binaryEnv is the environment without this harness's KEYLIME_VM_* switches: the binary reads
// KEYLIME_<SECTION>_<KEY> variables as configuration and refuses unknown ones.
func binaryEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KEYLIME_VM_") {
			env = append(env, e)
		}
	}
	return env
}

// run runs a one-shot command of the binary (tenant, policy) and returns its output and exit code.
func (s *hostSystem) run(args ...string) (string, int) {
	s.t.Helper()
	cmd := exec.Command(s.bin, append([]string{"--config", s.cfg}, args...)...)
	cmd.Env = binaryEnv()
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			s.t.Fatalf("keylime %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// mustRun runs a command that must exit 0.
func (s *hostSystem) mustRun(args ...string) string {
	s.t.Helper()
	out, code := s.run(args...)
	if code != 0 {
		s.t.Fatalf("keylime %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// waitRegistered waits until the registrar holds exactly one active agent registered at least
// regCount times and returns it.
func (s *hostSystem) waitRegistered(within time.Duration, regCount int) (string, *api.RegistrarAgent) {
	s.t.Helper()
	var id string
	var ag *api.RegistrarAgent
	waitFor(s.t, within, fmt.Sprintf("an active agent registered %d time(s)", regCount), func() error {
		ids, err := s.Admin.List(s.t.Context())
		if err != nil {
			return err
		}
		if len(ids) != 1 {
			return fmt.Errorf("registrar lists %d agents", len(ids))
		}
		a, err := s.Admin.Agent(s.t.Context(), ids[0])
		if err != nil {
			return err
		}
		if !a.Active || a.RegCount < regCount {
			return fmt.Errorf("agent %s active=%v regcount=%d", ids[0], a.Active, a.RegCount)
		}
		id, ag = ids[0], a
		return nil
	})
	return id, ag
}

// agentClient talks to the agent as the tenant does: the CA's client certificate, the agent's server
// certificate pinned from its registration.
func (s *hostSystem) agentClient(ag *api.RegistrarAgent, url string) *client.Agent {
	s.t.Helper()
	if ag.MTLSCert == nil {
		s.t.Fatal("the agent registered no mTLS certificate")
	}
	pinned, err := transport.ParseCertPEM(*ag.MTLSCert)
	if err != nil {
		s.t.Fatal(err)
	}
	tc := transport.PinnedClientConfig(&s.mat.Cert, pinned)
	c := client.NewAgent(transport.NewHTTPClient(tc, 60*time.Second), url, api.CurrentVersion)
	v, err := c.Version(s.t.Context())
	if err != nil {
		s.t.Fatalf("agent version: %v", err)
	}
	c.SetVersion(strings.TrimPrefix(v.SupportedVersion, "v"))
	return c
}

// fetchLogs asks the agent for a quote over PCRs 0 and 10 with the whole IMA log and returns the IMA
// log and the UEFI event log it sent, as the verifier receives them.
func fetchLogs(t *testing.T, c *client.Agent) (imaLog string, bootLog []byte) {
	t.Helper()
	nonce := make([]byte, 10)
	_, _ = rand.Read(nonce)
	q, err := c.IntegrityQuote(t.Context(), hex.EncodeToString(nonce), "0x401", true, 0)
	if err != nil {
		t.Fatalf("integrity quote: %v", err)
	}
	if q.IMAMeasurementList == nil || q.MBMeasurementList == nil {
		t.Fatalf("the agent sent no IMA log (%v) or no boot log (%v)", q.IMAMeasurementList != nil, q.MBMeasurementList != nil)
	}
	bootLog, err = base64.StdEncoding.DecodeString(*q.MBMeasurementList)
	if err != nil {
		t.Fatalf("boot log: %v", err)
	}
	return *q.IMAMeasurementList, bootLog
}

// waitVerifier polls the verifier's view of the agent until ok accepts it.
func (s *hostSystem) waitVerifier(id string, within time.Duration, what string, ok func(*api.VerifierAgent) bool) *api.VerifierAgent {
	s.t.Helper()
	var st *api.VerifierAgent
	waitFor(s.t, within, what, func() error {
		var err error
		st, err = s.Verifier.Agent(s.t.Context(), id)
		if err != nil {
			return err
		}
		if !ok(st) {
			return fmt.Errorf("state %s, %d attestations, last failure %q", api.StateName(st.OperationalState), st.AttestationCount, st.LastFailure)
		}
		return nil
	})
	return st
}

// failureWith returns the context of the first failure with event id, or nil.
func failureWith(st *api.VerifierAgent, id string) map[string]any {
	for _, f := range st.Failures {
		if f.EventID == id {
			c := map[string]any{}
			_ = json.Unmarshal(f.Context, &c)
			return c
		}
	}
	return nil
}

func failureIDs(st *api.VerifierAgent) []string {
	var ids []string
	for _, f := range st.Failures {
		ids = append(ids, f.EventID)
	}
	return ids
}

// waitFor polls f every 250 ms until it succeeds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
