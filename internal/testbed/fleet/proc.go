package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/transport"
)

// DeploymentConfig describes a registrar and a verifier run as processes of the keylime binary.
type DeploymentConfig struct {
	// Binary is the keylime release binary.
	Binary string
	// Dir is the keylime_dir of both (CA in Dir/cv_ca, databases, keylime.toml, logs).
	Dir string
	// CA is an existing Keylime CA directory (cacert.crt, server-*, client-*, …) copied to Dir/cv_ca;
	// empty creates a new CA there.
	CA string
	// QuoteInterval is the verifier's quote_interval (2 s when zero).
	QuoteInterval time.Duration
	// LogLevel is passed as --log-level ("warn" when empty).
	LogLevel string
	// VerifierCommand, when set, runs the verifier as VerifierCommand followed by keylime's arguments
	// (e.g. a wrapper that runs keylime in-process with profiling) instead of Binary.
	VerifierCommand []string
	// ExtraVerifierConfig is TOML appended to the [verifier] section.
	ExtraVerifierConfig string
}

// Deployment is a running registrar and verifier with clients for them.
type Deployment struct {
	cfg        DeploymentConfig
	ConfigPath string
	// Registrar and Verifier are the processes.
	Registrar, Verifier *Process
	// Reg is a client of the registrar's registration port, Admin of its TLS (admin) port, Ver of the
	// verifier (with the CA's client certificate).
	Reg, Admin *client.Registrar
	Ver        *client.Verifier
	// ClientTLS is the CA's client certificate and trust pool (what the verifier presents to agents).
	ClientTLS *transport.Material
	// DBPath is the verifier's bbolt file.
	DBPath   string
	restarts int
}

// Deploy creates a CA in cfg.Dir, writes keylime.toml, starts `keylime registrar` and `keylime verifier`
// and waits until both answer.
func Deploy(ctx context.Context, cfg DeploymentConfig) (*Deployment, error) {
	if cfg.QuoteInterval == 0 {
		cfg.QuoteInterval = 2 * time.Second
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "warn"
	}
	caDir := filepath.Join(cfg.Dir, "cv_ca")
	if cfg.CA != "" {
		if err := copyDir(cfg.CA, caDir); err != nil {
			return nil, fmt.Errorf("fleet: CA: %w", err)
		}
	}
	if _, err := ca.Ensure(caDir, ca.DefaultSubject, []string{"127.0.0.1", "localhost"}); err != nil {
		return nil, fmt.Errorf("fleet: CA: %w", err)
	}
	cl, err := transport.LoadMaterial(caDir, "client")
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`[registrar]
keylime_dir = %[1]q
tls_dir = "default"
port = %[2]d
tls_port = %[3]d

[verifier]
keylime_dir = %[1]q
tls_dir = "default"
port = %[4]d
quote_interval = %[5]q
retry_interval = "1s"
max_retries = 30
exponential_backoff = false
request_timeout = "30s"
%[6]s

[revocations]
enabled_revocation_notifications = []
`, cfg.Dir, ports[0], ports[1], ports[2], cfg.QuoteInterval.String(), cfg.ExtraVerifierConfig)
	d := &Deployment{cfg: cfg, ConfigPath: filepath.Join(cfg.Dir, "keylime.toml"), ClientTLS: cl, DBPath: filepath.Join(cfg.Dir, "verifier.db")}
	if err := os.WriteFile(d.ConfigPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	// Fleets register and add agents many at a time: keep that many connections alive.
	hc := transport.NewHTTPClient(transport.ClientConfig(&cl.Cert, cl.Pool), 30*time.Second)
	hc.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	plain := transport.NewHTTPClient(nil, 30*time.Second)
	plain.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	d.Reg = client.NewRegistrar(plain, "http://127.0.0.1:"+strconv.Itoa(ports[0]), api.CurrentVersion)
	d.Admin = client.NewRegistrar(hc, "https://127.0.0.1:"+strconv.Itoa(ports[1]), api.CurrentVersion)
	d.Ver = client.NewVerifier(hc, "https://127.0.0.1:"+strconv.Itoa(ports[2]), api.CurrentVersion)

	if d.Registrar, err = d.start("registrar", cfg.Binary); err != nil {
		return nil, err
	}
	if err := waitUp(ctx, d.Registrar, func(ctx context.Context) error { _, err := d.Admin.Version(ctx); return err }); err != nil {
		d.Close()
		return nil, fmt.Errorf("fleet: registrar: %w", err)
	}
	if err := d.StartVerifier(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// StartVerifier starts the verifier process (again) and waits until it answers.
func (d *Deployment) StartVerifier(ctx context.Context) error {
	name := "verifier"
	if d.restarts > 0 {
		name = "verifier-" + strconv.Itoa(d.restarts)
	}
	d.restarts++
	p, err := d.start(name, d.cfg.Binary, d.cfg.VerifierCommand...)
	if err != nil {
		return err
	}
	d.Verifier = p
	if err := waitUp(ctx, p, func(ctx context.Context) error { _, err := d.Ver.Version(ctx); return err }); err != nil {
		return fmt.Errorf("fleet: verifier: %w", err)
	}
	return nil
}

// start runs `<binary> --config … --log-level … <role>` (or wrapper… followed by the same arguments).
func (d *Deployment) start(name, binary string, wrapper ...string) (*Process, error) {
	args := []string{"--config", d.ConfigPath, "--log-level", d.cfg.LogLevel, strings.SplitN(name, "-", 2)[0]}
	if len(wrapper) > 0 {
		args = append(append([]string(nil), wrapper[1:]...), args...)
		binary = wrapper[0]
	}
	return StartProcess(binary, args, filepath.Join(d.cfg.Dir, name+".log"))
}

// Close stops both processes (SIGTERM, then SIGKILL after 10 s).
func (d *Deployment) Close() {
	for _, p := range []*Process{d.Verifier, d.Registrar} {
		if p != nil {
			p.Stop(syscall.SIGTERM, 10*time.Second)
		}
	}
}

// Process is a started child process whose log goes to a file.
type Process struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// StartProcess starts binary with args, its output in logPath; it is killed if this process dies.
func StartProcess(binary string, args []string, logPath string) (*Process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("fleet: start %s: %w", binary, err)
	}
	p := &Process{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath returns the file holding the process's output.
func (p *Process) LogPath() string { return p.log }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends sig and waits up to grace for the process to end, then kills it.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Process) Kill() { p.Stop(syscall.SIGKILL, time.Minute) }

// waitUp polls up until it succeeds, the process exits or ctx ends.
func waitUp(ctx context.Context, p *Process, up func(context.Context) error) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := up(rctx)
		cancel()
		if err == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("process exited (%v); see %s: %s", p.err, p.log, tail(p.log, 600))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// tail returns up to n bytes from the end of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}

// copyDir copies the regular files of src into dst (created).
func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, info.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("fleet: free port: %w", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// Usage is a process's resource use read from /proc.
type Usage struct {
	// CPU is user plus system time.
	CPU time.Duration
	// RSS is the resident set (VmRSS), HWM its peak (VmHWM), in bytes.
	RSS, HWM int64
	// Anon is RSS's private part (RssAnon: heap, stacks); the rest is file pages mapped from the page
	// cache (the binary, the bbolt file's mmap), which the kernel can drop and re-read.
	Anon int64
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every Linux architecture Go supports
// except alpha.
const clockTick = 10 * time.Millisecond

// ErrNoProc means /proc has no usable entry for the process.
var ErrNoProc = errors.New("no /proc entry")

// ReadUsage reads the CPU time and memory of a process (0: this one) from /proc.
func ReadUsage(pid int) (Usage, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	var u Usage
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return u, fmt.Errorf("%w: %w", ErrNoProc, err)
	}
	// Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14, 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, fmt.Errorf("%w: malformed stat", ErrNoProc)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("%w: malformed stat", ErrNoProc)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return u, fmt.Errorf("%w: malformed stat", ErrNoProc)
	}
	u.CPU = time.Duration(ut+st) * clockTick
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return u, fmt.Errorf("%w: %w", ErrNoProc, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM" && k != "RssAnon") {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) != 2 || fs[1] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			u.RSS = kb << 10
		case "VmHWM":
			u.HWM = kb << 10
		case "RssAnon":
			u.Anon = kb << 10
		}
	}
	return u, nil
}

// Usage reads the process's CPU time and memory.
func (p *Process) Usage() (Usage, error) { return ReadUsage(p.Pid()) }
