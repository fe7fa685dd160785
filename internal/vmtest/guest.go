package vmtest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// GuestModules are the kernel modules the guest loads (with their dependencies): the virtio network
// card and the 9p file system of the host share.
var GuestModules = []string{"virtio_pci", "virtio_net", "9pnet_virtio", "9p"}

// GuestIMAPolicy is the IMA policy the guest's init writes before anything else runs: every executed
// file, every executable mapping and every kernel module, except on proc, sysfs and securityfs.
const GuestIMAPolicy = `dont_measure fsmagic=0x9fa0
dont_measure fsmagic=0x62656572
dont_measure fsmagic=0x73636673
measure func=BPRM_CHECK
measure func=FILE_MMAP mask=MAY_EXEC
measure func=MODULE_CHECK
`

// Guest paths.
const (
	// GuestAgent is where the keylime binary lives in the initramfs.
	GuestAgent = "/bin/keylime"
	// GuestConfig is the agent's configuration (keylime's default path, so no --config is needed).
	GuestConfig = "/etc/keylime/keylime.toml"
	// GuestShare is where the guest mounts the host share (9p, tag "host").
	GuestShare = "/mnt/host"
	// GuestKeylimeDir is the agent's keylime_dir: a bind mount of keylime/ in the share, so the AK and
	// the agent's keys survive reboots as they would on a disk.
	GuestKeylimeDir = "/var/lib/keylime"
	// AgentPort is the port the agent listens on in the guest.
	AgentPort = 9002
	// HostAddr is the host's loopback as the guest sees it (QEMU user networking).
	HostAddr = "10.0.2.2"
)

// guestInit is /init: IMA policy, modules, network, the host share, the agent, then the command loop.
// Markers on the console ("=== vmtest …") let the host follow the boot. Commands are files
// <share>/ctl/<i>.cmd run in a subshell (sourced, never executed, so they add nothing to the IMA log);
// their output goes to <i>.out and their exit status to <i>.rc.
const guestInit = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
cat /etc/vmtest/ima-policy > /sys/kernel/security/ima/policy || echo "=== vmtest error: IMA policy refused"
mkdir -p /tmp /run /opt/app /var/lib/keylime /mnt/host
for m in $(cat /etc/vmtest/modules); do insmod /lib/modules/$m || echo "=== vmtest error: insmod $m"; done
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 || echo "=== vmtest error: no network"
H=/mnt/host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host $H || echo "=== vmtest error: no host share"
mkdir -p $H/keylime $H/ctl
mount -o bind $H/keylime /var/lib/keylime
n=$(( $(cat $H/boots 2>/dev/null || echo 0) + 1 ))
echo $n > $H/boots
echo "=== vmtest boot $n uptime $(cut -d' ' -f1 /proc/uptime)"
echo "=== vmtest cmdline $(cat /proc/cmdline)"
/bin/keylime --log-level debug --log-format json agent > $H/agent-$n.log 2>&1 &
echo $! > /run/agent.pid
echo "=== vmtest ready uptime $(cut -d' ' -f1 /proc/uptime)"
i=0
while :; do
	if [ -f $H/ctl/$i.cmd ]; then
		( . $H/ctl/$i.cmd ) > $H/ctl/$i.out 2>&1
		echo $? > $H/ctl/$i.rc.tmp
		mv $H/ctl/$i.rc.tmp $H/ctl/$i.rc
		i=$((i+1))
	else
		sleep 0.2
	fi
done
`

// BuildInitramfs assembles the guest: busybox and its applets, the modules in GuestModules, /init, the
// keylime binary at GuestAgent and extra files (guest path → content, e.g. GuestConfig).
func BuildInitramfs(h *Host, keylime string, extra map[string][]byte) (*Initramfs, error) {
	r := NewInitramfs()
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "mnt", "opt", "root", "var/lib/keylime"} {
		r.Dir(d, 0o755)
	}
	if err := r.CopyFile("bin/busybox", h.Busybox, 0o755); err != nil {
		return nil, err
	}
	list, err := exec.Command(h.Busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			r.Symlink("bin/"+a, "busybox")
		}
	}
	mods, err := h.moduleFiles(GuestModules...)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range mods {
		b, err := readModule(m)
		if err != nil {
			return nil, err
		}
		name := moduleName(m) + ".ko"
		r.File("lib/modules/"+name, b, 0o644)
		names = append(names, name)
	}
	r.File("etc/vmtest/modules", []byte(strings.Join(names, "\n")+"\n"), 0o644)
	r.File("etc/vmtest/ima-policy", []byte(GuestIMAPolicy), 0o644)
	r.File("init", []byte(guestInit), 0o755)
	if err := r.CopyFile(GuestAgent, keylime, 0o755); err != nil {
		return nil, err
	}
	for p, b := range extra {
		r.File(filepath.ToSlash(p), b, 0o644)
	}
	return r, nil
}
