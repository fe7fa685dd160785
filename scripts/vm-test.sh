#!/usr/bin/env bash
# vm-test.sh — attest a real machine: boot a VM with UEFI firmware (OVMF), a TPM 2.0 (swtpm) and a
# Debian kernel with IMA, with the static keylime agent in its initramfs, and attest it with the
# registrar, verifier and tenant running on this host (internal/vmtest, TestMeasuredBootVM).
#
# Installs the Debian packages it needs with apt-get when they are missing (as root, or with sudo), then
# runs the Go test with KEYLIME_VM_TEST=1. Takes 3–5 minutes without KVM.
#
# Usage: scripts/vm-test.sh [go test flags…]
#   VM_TEST_REQUIRE=1   exit 2 instead of 0 when this machine cannot run the VM (CI that must run it)
#   VM_TEST_NO_INSTALL=1  never run apt-get
#   KEYLIME_VM_ACCEL=tcg|kvm  force the accelerator (default: KVM when it works, else TCG)
#   KEYLIME_VM_KEEP=1   keep the work directory (console logs, agent logs, policies) after a pass
#   KEYLIME_VM_KERNEL=/boot/vmlinuz-…  boot another kernel (its modules must be in /lib/modules)
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(qemu-system-x86 ovmf swtpm swtpm-tools linux-image-amd64 busybox-static)

cannot() {
	echo "vm-test: CANNOT RUN on this machine: $*" >&2
	if [ "${VM_TEST_REQUIRE:-0}" = 1 ]; then exit 2; fi
	echo "vm-test: skipped (set VM_TEST_REQUIRE=1 to make this an error)" >&2
	exit 0
}

have_all() {
	local b
	for b in qemu-system-x86_64 swtpm swtpm_setup swtpm_localca; do command -v "$b" >/dev/null || return 1; done
	[ -r /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -r /usr/share/OVMF/OVMF_CODE.fd ] || return 1
	compgen -G '/boot/vmlinuz-*' >/dev/null || return 1
	# busybox-static, not the dynamically linked busybox (the initramfs has no C library)
	[ -x /bin/busybox ] || return 1
	case $(LC_ALL=C ldd /bin/busybox 2>&1 || true) in *"not a dynamic"* | *"statically linked"*) ;; *) return 1 ;; esac
}

[ "$(uname -m)" = x86_64 ] || cannot "needs an x86_64 host (found $(uname -m))"

if ! have_all; then
	if [ "${VM_TEST_NO_INSTALL:-0}" = 1 ]; then cannot "packages missing and VM_TEST_NO_INSTALL=1 (need: ${PKGS[*]})"; fi
	command -v apt-get >/dev/null || cannot "packages missing and no apt-get (need the Debian packages ${PKGS[*]})"
	if [ "$(id -u)" = 0 ]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
		cannot "packages missing and neither root nor password-less sudo (need: ${PKGS[*]})"; fi
	echo "vm-test: installing ${PKGS[*]}"
	"${SUDO[@]}" apt-get update -qq || cannot "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null ||
		cannot "apt-get install ${PKGS[*]} failed"
fi
# The kernel image must be readable by this user (Ubuntu installs /boot/vmlinuz-* mode 0600).
K=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)
[ -n "${KEYLIME_VM_KERNEL:-}" ] && K=$KEYLIME_VM_KERNEL
[ -r "$K" ] || cannot "kernel $K is not readable by $(id -un)"
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || cannot "no Go toolchain"

accel="TCG (software emulation)"
if [ -w /dev/kvm ]; then accel="KVM when it runs OVMF, else TCG"; fi
echo "vm-test: kernel $K; accelerator: ${KEYLIME_VM_ACCEL:-$accel}"
KEYLIME_VM_TEST=1 exec go test -count=1 -timeout 30m -v -run 'TestMeasuredBootVM' "$@" ./internal/vmtest/
