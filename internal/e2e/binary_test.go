package e2e

import (
	"context"
	"fmt"

	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/transport"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// TestMain removes the binary keylimeBinary built once the package's tests are done.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// keylimeBinary builds the release binary once per test process (CGO_ENABLED=0, as shipped).
func keylimeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "keylime-bin")
		if buildErr != nil {
			return
		}
		binPath, buildErr = testbed.BuildKeylime(binDir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a keylime process started by a test.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(t *testing.T, logName string, args ...string) *proc {
	t.Helper()
	logf, err := os.Create(logName)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(keylimeBinary(t), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() { p.kill(syscall.SIGTERM) })
	return p
}

func (p *proc) kill(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// TestBinaryKill9 runs registrar, verifier and agent as real processes of the release binary, kills the
// verifier with SIGKILL and checks that the restarted verifier polls the agent again with no manual step.
func TestBinaryKill9(t *testing.T) {
	testbed.RequireSWTPM(t)
	dir := t.TempDir()
	sw := testbed.StartSWTPM(t)
	regPort, regTLS, verPort, agentPort := testbed.FreePort(t), testbed.FreePort(t), testbed.FreePort(t), testbed.FreePort(t)
	conf := fmt.Sprintf(`
[registrar]
keylime_dir = %[1]q
port = %[2]d
tls_port = %[3]d

[verifier]
keylime_dir = %[1]q
port = %[4]d
quote_interval = "200ms"
retry_interval = "200ms"

[agent]
keylime_dir = %[6]q
uuid = "binary-agent"
port = %[5]d
contact_port = %[5]d
registrar_port = %[2]d
trusted_client_ca = %[7]q
tpm = %[8]q
registration_retry_interval = "100ms"
`, dir, regPort, regTLS, verPort, agentPort, filepath.Join(dir, "agent"), filepath.Join(dir, "cv_ca", "cacert.crt"), sw.Spec())
	cfgPath := filepath.Join(dir, "keylime.toml")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startProc(t, filepath.Join(dir, "registrar.log"), "--config", cfgPath, "registrar")
	// The registrar creates the CA; wait for it before the verifier (which would otherwise race it).
	waitFile(t, filepath.Join(dir, "cv_ca", "client-cert.crt"))
	ver := startProc(t, filepath.Join(dir, "verifier.log"), "--config", cfgPath, "verifier")
	agentStart := time.Now()
	startProc(t, filepath.Join(dir, "agent.log"), "--config", cfgPath, "agent")

	cl, err := transport.LoadMaterial(filepath.Join(dir, "cv_ca"), "client")
	if err != nil {
		t.Fatal(err)
	}
	hc := transport.NewHTTPClient(transport.ClientConfig(&cl.Cert, cl.Pool), 5*time.Second)
	reg := client.NewRegistrar(hc, "https://127.0.0.1:"+strconv.Itoa(regTLS), api.CurrentVersion)
	s := &System{t: t, Admin: reg, CADir: filepath.Join(dir, "cv_ca")}
	if _, err := s.WaitActive("binary-agent", 30*time.Second); err != nil {
		t.Fatalf("agent not active: %v (see %s)", err, dir)
	}
	t.Logf("agent process start → active at the registrar: %v", time.Since(agentStart))
	s.Verifier = client.NewVerifier(hc, "https://127.0.0.1:"+strconv.Itoa(verPort), api.CurrentVersion)
	if err := waitFor(10*time.Second, func() error { _, err := s.Verifier.Version(context.Background()); return err }); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAgent("binary-agent", "{}"); err != nil {
		t.Fatal(err)
	}
	st, err := s.WaitVerifier("binary-agent", 10*time.Second, Attested(2))
	if err != nil {
		t.Fatal(err)
	}
	ver.kill(syscall.SIGKILL)
	startProc(t, filepath.Join(dir, "verifier2.log"), "--config", cfgPath, "verifier")
	if err := waitFor(10*time.Second, func() error { _, err := s.Verifier.Version(context.Background()); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitVerifier("binary-agent", 10*time.Second, Attested(st.AttestationCount+3)); err != nil {
		t.Fatalf("no polling after kill -9 and restart: %v", err)
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	if err := waitFor(10*time.Second, func() error { _, err := os.Stat(path); return err }); err != nil {
		t.Fatal(err)
	}
}

func waitFor(within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
