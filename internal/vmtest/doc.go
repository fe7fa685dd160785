// Package vmtest attests a real machine: a QEMU VM booted by UEFI firmware (OVMF) with a TPM 2.0
// (swtpm) and a Debian kernel with IMA, running the static keylime agent from its initramfs, attested by
// the registrar and verifier running on the host from the same binary.
//
// The package holds the harness (host requirements, an initramfs writer, the guest init, one Machine
// that boots, reboots and powers off) and the scenario test. The scenario runs only when
// KEYLIME_VM_TEST=1, so the default `go test ./...` stays fast and needs no QEMU; scripts/vm-test.sh
// installs the Debian packages it needs and runs it. It is test-only and never linked into the release
// binary.
package vmtest
