package vmtest

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrUnavailable means this machine lacks something a VM needs (QEMU, OVMF, a kernel, a static
// busybox, swtpm); the error text names what and the Debian package that brings it.
var ErrUnavailable = errors.New("this machine cannot boot the measured-boot VM")

// Packages are the Debian packages a host needs to boot the VM.
var Packages = []string{"qemu-system-x86", "ovmf", "swtpm", "swtpm-tools", "linux-image-amd64", "busybox-static"}

// Host holds the programs and files of the host that a Machine uses.
type Host struct {
	// QEMU is qemu-system-x86_64.
	QEMU string
	// OVMFCode and OVMFVars are the UEFI firmware and its variable store template.
	OVMFCode, OVMFVars string
	// Kernel is the kernel image; KernelVersion its release, whose modules are in Modules.
	Kernel, KernelVersion, Modules string
	// Busybox is a statically linked busybox (the guest's shell and tools).
	Busybox string
	// SWTPM is the swtpm program.
	SWTPM string
	// KVM reports whether /dev/kvm can be opened; KVM may still fail (nested virtualisation), and
	// the Machine then falls back to TCG.
	KVM bool
}

// ovmfPairs are firmware and variable store pairs, preferred first (Debian and Ubuntu paths).
var ovmfPairs = [][2]string{
	{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
}

// FindHost looks for everything a VM needs. The kernel is $KEYLIME_VM_KERNEL or the newest
// /boot/vmlinuz-*. The error wraps ErrUnavailable and lists every missing piece.
func FindHost() (*Host, error) {
	h := &Host{}
	var missing []string
	need := func(what, pkg string) { missing = append(missing, fmt.Sprintf("%s (Debian package %s)", what, pkg)) }
	var err error
	if h.QEMU, err = exec.LookPath("qemu-system-x86_64"); err != nil {
		need("qemu-system-x86_64", "qemu-system-x86")
	}
	if h.SWTPM, err = exec.LookPath("swtpm"); err != nil {
		need("swtpm", "swtpm")
	}
	for _, p := range ovmfPairs {
		if readable(p[0]) && readable(p[1]) {
			h.OVMFCode, h.OVMFVars = p[0], p[1]
			break
		}
	}
	if h.OVMFCode == "" {
		need("OVMF firmware (/usr/share/OVMF/OVMF_CODE_4M.fd)", "ovmf")
	}
	if err := h.findKernel(); err != nil {
		need(err.Error(), "linux-image-amd64")
	}
	if h.Busybox, err = findStaticBusybox(); err != nil {
		need(err.Error(), "busybox-static")
	}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		_ = f.Close()
		h.KVM = true
	}
	if len(missing) > 0 {
		return h, fmt.Errorf("%w: missing %s", ErrUnavailable, strings.Join(missing, "; "))
	}
	return h, nil
}

func readable(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	_ = f.Close()
	return true
}

// findKernel picks the kernel image and checks that it has IMA and that its modules are installed.
func (h *Host) findKernel() error {
	k := os.Getenv("KEYLIME_VM_KERNEL")
	if k == "" {
		images, _ := filepath.Glob("/boot/vmlinuz-*")
		for _, img := range images {
			if k == "" || versionLess(strings.TrimPrefix(k, "/boot/vmlinuz-"), strings.TrimPrefix(img, "/boot/vmlinuz-")) {
				k = img
			}
		}
	}
	if k == "" {
		return errors.New("a kernel in /boot/vmlinuz-*")
	}
	if !readable(k) {
		return fmt.Errorf("a readable kernel (%s is not)", k)
	}
	h.Kernel, h.KernelVersion = k, strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
	h.Modules = filepath.Join("/lib/modules", h.KernelVersion)
	if _, err := os.Stat(filepath.Join(h.Modules, "modules.dep")); err != nil {
		return fmt.Errorf("the modules of kernel %s (%s/modules.dep)", h.KernelVersion, h.Modules)
	}
	if cfg, err := os.ReadFile(filepath.Join("/boot", "config-"+h.KernelVersion)); err == nil && !strings.Contains(string(cfg), "\nCONFIG_IMA=y") {
		return fmt.Errorf("a kernel with IMA (%s has no CONFIG_IMA=y)", k)
	}
	return nil
}

// versionLess compares kernel releases such as 6.1.0-9-amd64 and 6.1.0-56-amd64 numerically.
func versionLess(a, b string) bool {
	fa, fb := versionFields(a), versionFields(b)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		na, ea := strconv.Atoi(fa[i])
		nb, eb := strconv.Atoi(fb[i])
		switch {
		case ea == nil && eb == nil && na != nb:
			return na < nb
		case (ea != nil || eb != nil) && fa[i] != fb[i]:
			return fa[i] < fb[i]
		}
	}
	return len(fa) < len(fb)
}

func versionFields(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '~' })
}

// findStaticBusybox returns a busybox without a program interpreter (statically linked), which can run
// in an initramfs that has no C library.
func findStaticBusybox() (string, error) {
	candidates := []string{"/bin/busybox", "/usr/bin/busybox"}
	if p, err := exec.LookPath("busybox"); err == nil {
		candidates = append([]string{p}, candidates...)
	}
	for _, p := range candidates {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		_ = f.Close()
		if static {
			return p, nil
		}
	}
	return "", errors.New("a statically linked busybox")
}

// moduleFiles returns the module files that load the named modules, dependencies first, leaving out
// modules built into the kernel.
func (h *Host) moduleFiles(names ...string) ([]string, error) {
	builtin := map[string]bool{}
	if f, err := os.Open(filepath.Join(h.Modules, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			builtin[moduleName(sc.Text())] = true
		}
		_ = f.Close()
	}
	dep := map[string][]string{} // module name → [its path, its dependencies' paths…]
	f, err := os.Open(filepath.Join(h.Modules, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if ok {
			dep[moduleName(mod)] = append([]string{mod}, strings.Fields(deps)...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		if seen[name] || builtin[name] {
			return nil
		}
		seen[name] = true
		d, ok := dep[name]
		if !ok {
			return fmt.Errorf("kernel %s has no module %s", h.KernelVersion, name)
		}
		for _, p := range d[1:] {
			if err := visit(moduleName(p)); err != nil {
				return err
			}
		}
		out = append(out, filepath.Join(h.Modules, d[0]))
		return nil
	}
	for _, n := range names {
		if err := visit(strings.ReplaceAll(n, "-", "_")); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// moduleName turns kernel/fs/9p/9p.ko.xz into 9p (and dashes into underscores, as the kernel does).
func moduleName(p string) string {
	b := filepath.Base(strings.TrimSpace(p))
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// readModule returns a module file's content, decompressed when it is .ko.xz, .ko.zst or .ko.gz.
func readModule(p string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(p, ".xz"):
		tool = "xz"
	case strings.HasSuffix(p, ".zst"):
		tool = "zstd"
	case strings.HasSuffix(p, ".gz"):
		tool = "gzip"
	default:
		return os.ReadFile(p)
	}
	out, err := exec.Command(tool, "-dc", p).Output()
	if err != nil {
		return nil, fmt.Errorf("decompress %s with %s: %w", p, tool, err)
	}
	return out, nil
}
