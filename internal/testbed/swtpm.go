// Package testbed holds test-only helpers that run real components, starting with a software TPM
// (swtpm) launcher whose TPMs carry EK certificates from a local CA. It is never linked into the
// release binary (internal/deptest enforces that).
package testbed

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// swtpmBinaries are the programs StartSWTPM runs (swtpm_localca also needs certtool and swtpm_cert,
// which the Debian packages swtpm-tools and gnutls-bin bring along).
var swtpmBinaries = []string{"swtpm", "swtpm_setup", "swtpm_localca"}

// swtpmMaxSunPath is the longest unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
const swtpmMaxSunPath = 107

// SWTPM is one software TPM 2.0 provisioned like a real one: an RSA-2048 EK persisted at 0x81010001
// with its certificate in NV 0x01c00002, an ECC NIST P-384 EK at 0x81010016 with its certificate in
// NV 0x01c00016, and a platform certificate in NV 0x01c08000, all signed by the test binary's shared
// local CA. The state lives in Dir and is removed when the test ends.
type SWTPM struct {
	// Dir is the instance directory: TPM state in Dir/tpm, EK certificates (DER) in Dir/certs, the
	// sockets and the logs swtpm.log and swtpm_setup.log.
	Dir string
	// Socket is the unix data socket; the control socket is Socket+".ctrl".
	Socket string
	// CACerts are PEM files of the root CA and of the intermediate that signed the EK certificates,
	// in that order: what a Keylime tpm_cert_store needs.
	CACerts []string
	// EKCertRSA and EKCertECC are the DER EK certificates swtpm_setup wrote (RSA-2048, ECC P-384).
	EKCertRSA, EKCertECC string
	// PCRBanks are the PCR banks activated at provisioning, e.g. "sha1,sha256".
	PCRBanks string

	mu   sync.Mutex
	proc *swtpmProc // nil while stopped
}

// swtpmConfig collects SWTPMOption settings.
type swtpmConfig struct {
	banks   string
	timeout time.Duration
}

// SWTPMOption changes how ProvisionSWTPM and StartSWTPM set up a software TPM.
type SWTPMOption func(*swtpmConfig)

// WithPCRBanks activates the given PCR banks (comma-separated swtpm_setup names such as
// "sha256" or "sha1,sha256,sha384") instead of the default "sha1,sha256".
func WithPCRBanks(banks string) SWTPMOption {
	return func(c *swtpmConfig) { c.banks = banks }
}

// WithStartTimeout bounds how long StartSWTPM and Restart wait for swtpm to answer (default 10 s).
func WithStartTimeout(d time.Duration) SWTPMOption {
	return func(c *swtpmConfig) { c.timeout = d }
}

// RequireSWTPM skips the test when the swtpm programs are not installed, or fails it when the
// environment variable CI is "true", where a missing swtpm must not hide tests.
func RequireSWTPM(t testing.TB) {
	t.Helper()
	RequireTools(t, "swtpm swtpm-tools", swtpmBinaries...)
}

// RequireTools skips the test when a program is missing from PATH, or fails it when the environment
// variable CI is "true", where a missing program must not hide tests; packages is the Debian
// packages to install, for the message.
func RequireTools(t testing.TB, packages string, tools ...string) {
	t.Helper()
	var missing []string
	for _, b := range tools {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("missing %s (apt-get install %s)", strings.Join(missing, ", "), packages)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// StartSWTPM provisions a fresh software TPM (unique EKs and EK certificates from the shared CA)
// and starts `swtpm socket --tpm2` on a unix socket as a child process. It returns once the TPM
// answers a command; the process is stopped and the directory removed when the test ends.
func StartSWTPM(t testing.TB, opts ...SWTPMOption) *SWTPM {
	t.Helper()
	s := ProvisionSWTPM(t, opts...)
	s.start(t, opts...)
	return s
}

// ProvisionSWTPM creates and provisions the state of a software TPM without starting it; call
// Restart to start it. The directory is removed when the test ends.
func ProvisionSWTPM(t testing.TB, opts ...SWTPMOption) *SWTPM {
	t.Helper()
	RequireSWTPM(t)
	cfg := newSWTPMConfig(opts)
	ca, err := swtpmSharedCA()
	if err != nil {
		t.Fatalf("swtpm: %v", err)
	}
	// t.TempDir names can exceed sun_path; a short directory directly under the temp dir cannot.
	dir, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatalf("swtpm: %v", err)
	}
	s := &SWTPM{
		Dir:       dir,
		Socket:    filepath.Join(dir, "sock"),
		CACerts:   []string{ca.rootCert(), ca.issuerCert()},
		EKCertRSA: filepath.Join(dir, "certs", "ek-rsa2048.crt"),
		EKCertECC: filepath.Join(dir, "certs", "ek-secp384r1.crt"),
		PCRBanks:  cfg.banks,
	}
	t.Cleanup(func() {
		s.Stop()
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("swtpm: remove %s: %v", dir, err)
		}
	})
	if n := len(s.Socket + ".ctrl"); n > swtpmMaxSunPath {
		t.Fatalf("swtpm: socket path %s.ctrl is %d bytes, more than %d (set a shorter TMPDIR)", s.Socket, n, swtpmMaxSunPath)
	}
	if err := swtpmProvision(s, ca, cfg.banks); err != nil {
		t.Fatalf("swtpm: %v", err)
	}
	return s
}

func newSWTPMConfig(opts []SWTPMOption) swtpmConfig {
	cfg := swtpmConfig{banks: "sha1,sha256", timeout: 10 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// swtpmProvision runs swtpm_setup for s with certificates from ca.
func swtpmProvision(s *SWTPM, ca *swtpmLocalCA, banks string) error {
	for _, d := range []string{"tpm", "certs"} {
		if err := os.Mkdir(filepath.Join(s.Dir, d), 0o700); err != nil {
			return err
		}
	}
	conf := filepath.Join(s.Dir, "swtpm_setup.conf")
	text := fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = %s\n",
		ca.tool, ca.conf, ca.options, banks)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	logFile := filepath.Join(s.Dir, "swtpm_setup.log")
	cmd := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", filepath.Join(s.Dir, "tpm"),
		"--createek", "--create-ek-cert", "--create-platform-cert",
		"--pcr-banks", banks, "--not-overwrite", "--config", conf,
		"--write-ek-cert-files", filepath.Join(s.Dir, "certs"), "--logfile", logFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("swtpm_setup: %w: %s\n%s", err, bytes.TrimSpace(out), swtpmLogTail(logFile, 20))
	}
	return nil
}

// Spec returns the TPM address in the form tpm/device.Open takes: "swtpm:" + Socket.
func (s *SWTPM) Spec() string { return "swtpm:" + s.Socket }

// Restart stops the TPM if it runs and starts it again on the same state, like a reboot: PCRs are
// reset, persistent keys, NV indexes and the seeds are kept, loaded objects and sessions are gone.
func (s *SWTPM) Restart(t testing.TB, opts ...SWTPMOption) {
	t.Helper()
	s.Stop()
	s.start(t, opts...)
}

// start launches swtpm on s's state and waits until it answers a TPM2_GetRandom.
func (s *SWTPM) start(t testing.TB, opts ...SWTPMOption) {
	t.Helper()
	cfg := newSWTPMConfig(opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		t.Fatalf("swtpm: %s already running", s.Dir)
	}
	logFile := filepath.Join(s.Dir, "swtpm.log")
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,path="+s.Socket,
		"--ctrl", "type=unixio,path="+s.Socket+".ctrl",
		"--tpmstate", "dir="+filepath.Join(s.Dir, "tpm"),
		"--flags", "not-need-init,startup-clear",
		"--log", "file="+logFile+",level=1")
	// Kill swtpm when the test binary dies without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("swtpm: start: %v", err)
	}
	p := &swtpmProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(cfg.timeout)
	for {
		err := swtpmPing(s.Socket)
		if err == nil {
			s.proc = p
			return
		}
		select {
		case <-p.done:
			t.Fatalf("swtpm exited: %v: %s\n%s", p.err, bytes.TrimSpace(out.Bytes()), swtpmLogTail(logFile, 5))
		default:
		}
		if time.Now().After(deadline) {
			p.terminate()
			t.Fatalf("swtpm did not answer within %v: %v\n%s", cfg.timeout, err, swtpmLogTail(logFile, 5))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Stop ends swtpm gracefully (SIGTERM, then SIGKILL after 5 s) and waits for it. It is idempotent
// and safe to call when the TPM was never started.
func (s *SWTPM) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.terminate()
	}
}

// PID returns the process id of the running swtpm, or 0 when it is stopped.
func (s *SWTPM) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// swtpmProc is one run of the swtpm process.
type swtpmProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned; err is set before
	err  error
}

// terminate sends SIGTERM, waits up to 5 s, then kills.
func (p *swtpmProc) terminate() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// swtpmGetRandomCmd is TPM2_GetRandom(8): tag NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested.
var swtpmGetRandomCmd = []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}

// swtpmPing sends one TPM2_GetRandom over the data socket and checks for a success response.
func swtpmPing(sock string) error {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write(swtpmGetRandomCmd); err != nil {
		return err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return err
	}
	if rc := binary.BigEndian.Uint32(hdr[6:]); rc != 0 {
		return fmt.Errorf("TPM2_GetRandom: response code 0x%x", rc)
	}
	return nil
}

// swtpmLogTail returns the last n lines of a log file, for error messages.
func swtpmLogTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return path + ":\n" + strings.Join(lines, "\n")
}

// swtpmLocalCA is the swtpm_localca CA shared by all software TPMs of one test process.
type swtpmLocalCA struct {
	dir     string
	tool    string // absolute path of swtpm_localca
	conf    string // swtpm-localca.conf
	options string // swtpm-localca.options
}

func (c *swtpmLocalCA) rootCert() string {
	return filepath.Join(c.dir, "swtpm-localca-rootca-cert.pem")
}
func (c *swtpmLocalCA) issuerCert() string { return filepath.Join(c.dir, "issuercert.pem") }

// swtpmCAPrefix names the shared CA directories in os.TempDir: swtpmCAPrefix + pid.
const swtpmCAPrefix = "keylime-swtpm-ca-"

var (
	swtpmCAOnce sync.Once
	swtpmCA     *swtpmLocalCA
	swtpmCAErr  error
)

// swtpmSharedCA returns the CA of this process, creating its directory and configuration on first
// use. swtpm_localca creates the keys on the first signing, under its own file lock, so parallel
// provisioning is safe. The directory is keyed by the process id; directories of processes that no
// longer run are removed here, since a test binary has no exit hook.
func swtpmSharedCA() (*swtpmLocalCA, error) {
	swtpmCAOnce.Do(func() { swtpmCA, swtpmCAErr = newSWTPMLocalCA() })
	return swtpmCA, swtpmCAErr
}

func newSWTPMLocalCA() (*swtpmLocalCA, error) {
	removeStaleSWTPMCAs()
	tool, err := exec.LookPath("swtpm_localca")
	if err != nil {
		return nil, err
	}
	if tool, err = filepath.Abs(tool); err != nil {
		return nil, err
	}
	dir := filepath.Join(os.TempDir(), swtpmCAPrefix+strconv.Itoa(os.Getpid()))
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create CA dir: %w", err)
	}
	c := &swtpmLocalCA{
		dir:     dir,
		tool:    tool,
		conf:    filepath.Join(dir, "swtpm-localca.conf"),
		options: filepath.Join(dir, "swtpm-localca.options"),
	}
	conf := fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", dir)
	opts := "--platform-manufacturer KeylimeTest\n--platform-version 2.1\n--platform-model swtpm\n"
	if err := errors.Join(os.WriteFile(c.conf, []byte(conf), 0o600), os.WriteFile(c.options, []byte(opts), 0o600)); err != nil {
		return nil, fmt.Errorf("write CA config: %w", err)
	}
	return c, nil
}

// removeStaleSWTPMCAs deletes CA directories left by test processes that have exited.
func removeStaleSWTPMCAs() {
	entries, err := os.ReadDir(os.TempDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), swtpmCAPrefix))
		if !e.IsDir() || !strings.HasPrefix(e.Name(), swtpmCAPrefix) || err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); errors.Is(err, os.ErrNotExist) {
			_ = os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
		}
	}
}
