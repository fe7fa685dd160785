package vmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Errors a Machine returns.
var (
	// ErrNotRunning means the VM is not running (never booted, powered off or crashed).
	ErrNotRunning = errors.New("the VM is not running")
	// ErrCommandFailed means a guest command exited with a non-zero status.
	ErrCommandFailed = errors.New("guest command failed")
	// errKVMBroken means KVM could not run the firmware (seen under nested virtualisation).
	errKVMBroken = errors.New("KVM cannot run the firmware")
)

// MachineConfig describes a VM: q35, OVMF with its own variable store, a TPM 2.0 (TIS) backed by
// swtpm, virtio networking with QEMU user networking, the host share over 9p, and a direct kernel boot.
type MachineConfig struct {
	// Host holds QEMU, OVMF and the kernel.
	Host *Host
	// Dir holds the machine's files: the firmware variables (kept across boots, like NVRAM), console
	// logs, swtpm's control socket and log. Keep it short: a unix socket path has at most 107 bytes.
	Dir string
	// TPMState is a swtpm state directory provisioned by swtpm_setup (EKs and EK certificates).
	TPMState string
	// Share is the host directory the guest mounts at GuestShare.
	Share string
	// Initrd is the initramfs image (see BuildInitramfs).
	Initrd string
	// Forward maps ports on the host's 127.0.0.1 to guest TCP ports.
	Forward map[int]int
	// MemoryMB and CPUs size the VM (defaults 1024 and 2).
	MemoryMB, CPUs int
	// Accel is "kvm", "tcg" or "" for KVM when it works, else TCG.
	Accel string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Machine is one VM that boots, runs commands and powers off, possibly several times. Its firmware
// variables and TPM state persist across boots; each boot is a power cycle (new QEMU and swtpm processes).
type Machine struct {
	cfg   MachineConfig
	accel string
	vars  string
	boots int
	qemu  *process
	swtpm *process
	boot  *BootInfo
	next  int // number of the next guest command of this boot
}

// BootInfo describes one boot.
type BootInfo struct {
	// N counts the guest's boots from 1 (its agent log is agent-<N>.log in the share).
	N int
	// Accel is the accelerator used (kvm or tcg); Cmdline the kernel command line.
	Accel, Cmdline string
	// Started is when QEMU started; Ready when the guest's init had started the agent.
	Started, Ready time.Time
	// GuestUptime is the guest's uptime in seconds when it started the agent.
	GuestUptime float64
	// Console is the console (serial) log of this boot.
	Console string
}

// NewMachine prepares a machine: a copy of the firmware's variable store in cfg.Dir.
func NewMachine(cfg MachineConfig) (*Machine, error) {
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 1024
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	m := &Machine{cfg: cfg, accel: cfg.Accel, vars: filepath.Join(cfg.Dir, "vars.fd")}
	if m.accel == "" && !cfg.Host.KVM {
		m.accel = "tcg"
	}
	b, err := os.ReadFile(cfg.Host.OVMFVars)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(m.vars, b, 0o600); err != nil {
		return nil, err
	}
	return m, nil
}

// Boot powers the machine on with the given kernel command line and returns once the guest's init has
// started the agent. Without a configured accelerator it tries KVM and falls back to TCG when KVM
// fails to run the firmware.
func (m *Machine) Boot(ctx context.Context, cmdline string) (*BootInfo, error) {
	if m.qemu != nil && m.qemu.running() {
		return nil, errors.New("boot: the VM is already running")
	}
	accel := m.accel
	if accel == "" {
		accel = "kvm"
	}
	info, err := m.boot1(ctx, cmdline, accel)
	if errors.Is(err, errKVMBroken) && m.accel == "" {
		m.cfg.Logf("vm: KVM failed to run OVMF (%v); falling back to TCG", err)
		m.boots--
		accel = "tcg"
		info, err = m.boot1(ctx, cmdline, accel)
	}
	if err != nil {
		return nil, err
	}
	m.accel = accel // later boots use what worked
	return info, nil
}

func (m *Machine) boot1(ctx context.Context, cmdline, accel string) (*BootInfo, error) {
	m.boots++
	n := m.boots
	ctl := filepath.Join(m.cfg.Share, "ctl")
	if err := os.RemoveAll(ctl); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(ctl, 0o755); err != nil {
		return nil, err
	}
	m.next = 0
	sock := filepath.Join(m.cfg.Dir, "swtpm.ctrl")
	_ = os.Remove(sock)
	sw, err := startProcess(filepath.Join(m.cfg.Dir, fmt.Sprintf("swtpm-%d.out", n)), m.cfg.Host.SWTPM, "socket", "--tpm2",
		"--tpmstate", "dir="+m.cfg.TPMState, "--ctrl", "type=unixio,path="+sock,
		"--log", "file="+filepath.Join(m.cfg.Dir, "swtpm.log")+",level=1", "--terminate")
	if err != nil {
		return nil, fmt.Errorf("start swtpm: %w", err)
	}
	m.swtpm = sw
	if err := waitUntil(ctx, 10*time.Second, func() (bool, error) {
		if !sw.running() {
			return false, fmt.Errorf("swtpm exited: %s", tail(sw.log, 10))
		}
		_, err := os.Stat(sock)
		return err == nil, nil
	}); err != nil {
		sw.stop()
		return nil, err
	}
	var fwd []string
	ports := make([]int, 0, len(m.cfg.Forward))
	for hp := range m.cfg.Forward {
		ports = append(ports, hp)
	}
	sort.Ints(ports)
	for _, hp := range ports {
		fwd = append(fwd, fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", hp, m.cfg.Forward[hp]))
	}
	console := filepath.Join(m.cfg.Dir, fmt.Sprintf("console-%d-%s.log", n, accel))
	args := []string{
		"-machine", "q35,accel=" + accel, "-m", strconv.Itoa(m.cfg.MemoryMB), "-smp", strconv.Itoa(m.cfg.CPUs),
		"-nographic", "-no-reboot",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + m.cfg.Host.OVMFCode,
		"-drive", "if=pflash,format=raw,file=" + m.vars,
		"-chardev", "socket,id=chrtpm,path=" + sock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
		"-netdev", "user,id=n0" + strings.Join(fwd, ""), "-device", "virtio-net-pci,netdev=n0",
		"-virtfs", "local,path=" + m.cfg.Share + ",mount_tag=host,security_model=none,multidevs=remap,id=host",
		"-kernel", m.cfg.Host.Kernel, "-initrd", m.cfg.Initrd, "-append", cmdline,
	}
	info := &BootInfo{N: n, Accel: accel, Cmdline: cmdline, Started: time.Now(), Console: console}
	m.cfg.Logf("vm: boot %d (%s): %s", n, accel, cmdline)
	q, err := startProcess(console, m.cfg.Host.QEMU, args...)
	if err != nil {
		sw.stop()
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	m.qemu, m.boot = q, info
	ready := regexp.MustCompile(`=== vmtest ready uptime ([0-9.]+)`)
	err = waitUntil(ctx, 10*time.Minute, func() (bool, error) {
		out := readConsole(console)
		if strings.Contains(out, "KVM internal error") {
			return false, fmt.Errorf("%w: %s", errKVMBroken, firstLine(out, "KVM internal error"))
		}
		if mm := ready.FindStringSubmatch(out); mm != nil {
			info.Ready = time.Now()
			info.GuestUptime, _ = strconv.ParseFloat(mm[1], 64)
			return true, nil
		}
		if !q.running() {
			return false, fmt.Errorf("%w: QEMU exited before the guest was ready: %s", ErrNotRunning, tail(console, 20))
		}
		return false, nil
	})
	if err != nil {
		m.Kill()
		return nil, fmt.Errorf("boot %d: %w", n, err)
	}
	// The guest counts its boots in the share; that count names its agent log (agent-<n>.log).
	if b, err := os.ReadFile(filepath.Join(m.cfg.Share, "boots")); err == nil {
		if gn, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			info.N = gn
		}
	}
	for _, l := range strings.Split(readConsole(console), "\n") {
		if strings.Contains(l, "=== vmtest error") {
			m.cfg.Logf("vm: guest: %s", l)
		}
	}
	m.cfg.Logf("vm: boot %d ready after %v (guest uptime %.1fs)", n, info.Ready.Sub(info.Started).Round(100*time.Millisecond), info.GuestUptime)
	return info, nil
}

// Exec runs a shell script in the guest (as root, sourced by the init's command loop, so the script
// itself is not measured by IMA; the programs it executes are) and returns its output. A non-zero exit
// status gives ErrCommandFailed.
func (m *Machine) Exec(ctx context.Context, script string) (string, error) {
	if m.qemu == nil || !m.qemu.running() {
		return "", ErrNotRunning
	}
	base := filepath.Join(m.cfg.Share, "ctl", strconv.Itoa(m.next))
	m.next++
	if err := os.WriteFile(base+".tmp", []byte(script+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(base+".tmp", base+".cmd"); err != nil {
		return "", err
	}
	var rc []byte
	err := waitUntil(ctx, 5*time.Minute, func() (bool, error) {
		b, err := os.ReadFile(base + ".rc")
		if err == nil {
			rc = b
			return true, nil
		}
		if !m.qemu.running() {
			return false, ErrNotRunning
		}
		return false, nil
	})
	if err != nil {
		return "", fmt.Errorf("guest command %q: %w", clip(script, 60), err)
	}
	out, _ := os.ReadFile(base + ".out")
	if code := strings.TrimSpace(string(rc)); code != "0" {
		return string(out), fmt.Errorf("%w: %q exited %s: %s", ErrCommandFailed, clip(script, 60), code, clip(string(out), 400))
	}
	return string(out), nil
}

// PowerOff stops the agent, powers the guest off and waits for QEMU and swtpm to exit.
func (m *Machine) PowerOff(ctx context.Context) error {
	if m.qemu == nil || !m.qemu.running() {
		m.Kill()
		return nil
	}
	base := filepath.Join(m.cfg.Share, "ctl", strconv.Itoa(m.next))
	m.next++
	script := "kill $(cat /run/agent.pid); sleep 1; poweroff -f\n"
	if err := os.WriteFile(base+".tmp", []byte(script), 0o644); err != nil {
		return err
	}
	if err := os.Rename(base+".tmp", base+".cmd"); err != nil {
		return err
	}
	q := m.qemu
	err := waitUntil(ctx, 2*time.Minute, func() (bool, error) { return !q.running(), nil })
	m.Kill()
	if err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return nil
}

// Kill stops QEMU and swtpm at once (pulling the plug).
func (m *Machine) Kill() {
	if m.qemu != nil {
		m.qemu.stop()
	}
	if m.swtpm != nil {
		m.swtpm.stop()
	}
}

// Running reports whether QEMU runs.
func (m *Machine) Running() bool { return m.qemu != nil && m.qemu.running() }

// Console returns the console log of the current (or last) boot, without carriage returns.
func (m *Machine) Console() string {
	if m.boot == nil {
		return ""
	}
	return readConsole(m.boot.Console)
}

// process is a child process whose output goes to a log file.
type process struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProcess(logPath, name string, args ...string) (*process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, err
	}
	p := &process{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = f.Close(); close(p.done) }()
	return p, nil
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after five seconds, and waits for the exit.
func (p *process) stop() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitUntil polls f every 100 ms until it reports done, fails, ctx ends or within passes.
func waitUntil(ctx context.Context, within time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := f()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func readConsole(p string) string {
	b, _ := os.ReadFile(p)
	return strings.ReplaceAll(string(b), "\r", "")
}

// tail returns the last n lines of a log file.
func tail(p string, n int) string {
	lines := strings.Split(strings.TrimRight(readConsole(p), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
