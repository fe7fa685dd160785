package vmtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/tpm/device"
)

// baseCmdline is the kernel command line of the known-good boots.
const baseCmdline = "console=ttyS0 quiet ima_template=ima-ng ima_hash=sha256 panic=-1"

// laterScripts are run by the guest after the agent was added: allowed by the runtime policy (their
// digests were added from a directory tree), so attestation goes on incrementally.
const laterScripts = 300

// requireVM skips unless KEYLIME_VM_TEST=1; when it is set, a host that cannot boot the VM fails.
func requireVM(t *testing.T) *Host {
	t.Helper()
	if os.Getenv("KEYLIME_VM_TEST") != "1" {
		t.Skip("boots a measured-boot VM: set KEYLIME_VM_TEST=1 or run scripts/vm-test.sh")
	}
	h, err := FindHost()
	if err != nil {
		t.Fatalf("%v (scripts/vm-test.sh installs: %s)", err, strings.Join(Packages, " "))
	}
	testbed.RequireSWTPM(t)
	return h
}

// workDir is a short directory (unix socket paths are limited) removed at the end unless
// KEYLIME_VM_KEEP=1 or the test failed.
func workDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vmtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("KEYLIME_VM_KEEP") == "1" {
			t.Logf("kept %s (console-*.log, share/agent-*.log, registrar.log, verifier.log)", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

// TestMeasuredBootVM attests a real machine: the agent in a VM booted by OVMF with a swtpm TPM and a
// Debian kernel with IMA, the registrar, verifier and tenant on the host, all from the release binary.
//
//  1. The agent registers (its EK and EK certificate from swtpm_setup's NV, ActivateCredential).
//  2. The VM's own event log and IMA log, fetched from the agent like the verifier gets them, become a
//     measured-boot reference state and a runtime policy (keylime policy create); the tenant adds the
//     agent with both and the verifier attests it, going on while the guest runs allowed programs.
//  3. The machine reboots with the same command line: the agent comes back with the same AK and is
//     attested again from IMA entry 0.
//  4. The guest runs a program outside the policy: the verifier fails the agent naming the file.
//  5. A boot with another kernel command line: measured boot fails naming the command line.
func TestMeasuredBootVM(t *testing.T) {
	h := requireVM(t)
	dir := workDir(t)
	bin := buildKeylime(t, dir)

	// The TPM: EKs and EK certificates in NV from swtpm_setup with a local CA, the tenant's cert store.
	sw := testbed.ProvisionSWTPM(t)
	certStore := filepath.Join(dir, "certstore")
	if err := os.MkdirAll(certStore, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range sw.CACerts {
		b, err := os.ReadFile(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(certStore, filepath.Base(c)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	host := startHost(t, bin, dir, certStore)
	agentPort := testbed.FreePort(t)
	agentURL := "https://127.0.0.1:" + strconv.Itoa(agentPort)

	// The guest: the agent's configuration and the Keylime CA certificate in the initramfs.
	caCert, err := os.ReadFile(filepath.Join(dir, "cv_ca", "cacert.crt"))
	if err != nil {
		t.Fatal(err)
	}
	agentConf := fmt.Sprintf(`[agent]
uuid = "hash_ek"
ip = "0.0.0.0"
port = %d
contact_ip = "127.0.0.1"
contact_port = %d
registrar_ip = %q
registrar_port = %d
keylime_dir = %q
trusted_client_ca = "/etc/keylime/cacert.crt"
tpm = "/dev/tpmrm0"
ima_ml_path = "/sys/kernel/security/ima/ascii_runtime_measurements"
measuredboot_ml_path = "/sys/kernel/security/tpm0/binary_bios_measurements"
registration_retry_interval = "1s"
registration_retry_max = "5s"
`, AgentPort, agentPort, HostAddr, host.regPort, GuestKeylimeDir)
	rd, err := BuildInitramfs(h, bin, map[string][]byte{
		GuestConfig:               []byte(agentConf),
		"/etc/keylime/cacert.crt": caCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initramfs.gz")
	if err := rd.WriteFile(initrd); err != nil {
		t.Fatal(err)
	}
	share := filepath.Join(dir, "share")
	mdir := filepath.Join(dir, "m")
	for _, d := range []string{share, mdir, filepath.Join(share, "files")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := NewMachine(MachineConfig{
		Host: h, Dir: mdir, TPMState: filepath.Join(sw.Dir, "tpm"), Share: share, Initrd: initrd,
		Forward: map[int]int{agentPort: AgentPort}, Accel: os.Getenv("KEYLIME_VM_ACCEL"), Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Kill)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console of the last boot:\n%s", lastLines(m.Console(), 40))
			for _, p := range []string{filepath.Join(share, "agent-*.log"), filepath.Join(dir, "verifier.log")} {
				files, _ := filepath.Glob(p)
				for _, f := range files {
					b, _ := os.ReadFile(f)
					var keep []string
					for _, l := range strings.Split(string(b), "\n") {
						if !strings.Contains(l, "DBG") {
							keep = append(keep, l)
						}
					}
					t.Logf("%s:\n%s", f, lastLines(strings.Join(keep, "\n"), 25))
				}
			}
		}
	})

	// 1. Boot and register.
	boot, err := m.Boot(t.Context(), baseCmdline)
	if err != nil {
		t.Fatal(err)
	}
	id, ag := host.waitRegistered(3*time.Minute, 1)
	registered := time.Now()
	t.Logf("boot 1 (%s): guest ready %v after QEMU start (guest uptime %.1fs), agent %s registered after %v",
		boot.Accel, boot.Ready.Sub(boot.Started).Round(time.Millisecond), boot.GuestUptime, id, registered.Sub(boot.Started).Round(time.Millisecond))
	if ag.EKCert == nil || *ag.EKCert == "" {
		t.Error("the agent registered without the EK certificate from NV")
	}

	// 2. Policies from the machine's own logs, as the agent serves them.
	agent := host.agentClient(ag, agentURL)
	imaLog, bootLog := fetchLogs(t, agent)
	imaPath, bootPath := filepath.Join(dir, "ima-boot1.log"), filepath.Join(dir, "bios-boot1.bin")
	if err := os.WriteFile(imaPath, []byte(imaLog), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bootPath, bootLog, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("boot 1 logs: %d IMA entries, UEFI event log %d bytes", countLines(imaLog), len(bootLog))
	for _, want := range []string{"boot_aggregate", GuestAgent, "/bin/busybox", "/lib/modules/virtio_net.ko"} {
		if !strings.Contains(imaLog, " "+want+"\n") {
			t.Errorf("the IMA log has no entry for %s:\n%s", want, imaLog)
		}
	}
	// The programs the guest runs later are allowed from a directory tree (--rootfs).
	later := filepath.Join(dir, "later")
	for i := 1; i <= laterScripts; i++ {
		p := filepath.Join(later, "opt", "app", fmt.Sprintf("later-%d.sh", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("#!/bin/sh\necho later %d\n", i)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(share, "files", filepath.Base(p)), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	runtimePolicy, mbPolicy := filepath.Join(dir, "runtime-policy.json"), filepath.Join(dir, "mb-refstate.json")
	host.mustRun("policy", "create", "runtime", "--ima-log", imaPath, "--rootfs", later, "-o", runtimePolicy)
	out := host.mustRun("policy", "create", "measured-boot", "--without-secureboot", "--eventlog", bootPath, "-o", mbPolicy)
	t.Logf("keylime policy create measured-boot: %s", strings.TrimSpace(out))

	added := time.Now()
	host.mustRun("tenant", "add", "-u", id, "--runtime-policy", runtimePolicy, "--mb-policy", mbPolicy)
	st := host.waitVerifier(id, 3*time.Minute, "the first attestation", func(st *api.VerifierAgent) bool {
		if failed(st) {
			t.Fatalf("the machine failed its first attestation: %s %v", st.LastFailure, failureIDs(st))
		}
		return st.AttestationCount >= 1
	})
	attested := time.Now()
	t.Logf("FIGURE boot→attested %v (QEMU start → registered %v, tenant add → attested %v); %d IMA entries at the first attestation",
		attested.Sub(boot.Started).Round(time.Millisecond), registered.Sub(boot.Started).Round(time.Millisecond),
		attested.Sub(added).Round(time.Millisecond), countLines(imaLog))
	if st.HasMBRefstate != 1 || st.HasRuntimePolicy != 1 {
		t.Errorf("has_mb_refstate %d, has_runtime_policy %d", st.HasMBRefstate, st.HasRuntimePolicy)
	}
	st = host.waitVerifier(id, time.Minute, "three attestations", func(st *api.VerifierAgent) bool { return st.AttestationCount >= 3 })

	// The guest runs allowed programs while the verifier polls: the IMA log grows between quotes and
	// while the agent reads it, the kernel extends PCR 10 while the agent quotes; every poll attests
	// only what is new.
	burstStart := st.AttestationCount
	script := fmt.Sprintf("for i in $(seq 1 %d); do cp /mnt/host/files/later-$i.sh /opt/app/ && /opt/app/later-$i.sh >/dev/null || exit 1; done; echo ran %d", laterScripts, laterScripts)
	burst := time.Now()
	if out, err := m.Exec(t.Context(), script); err != nil || !strings.Contains(out, fmt.Sprintf("ran %d", laterScripts)) {
		t.Fatalf("running the allowed programs: %v %q", err, out)
	}
	burstTook := time.Since(burst)
	if st, err = host.Verifier.Agent(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	t.Logf("the guest ran %d new programs in %v while the verifier attested it %d times", laterScripts, burstTook.Round(time.Millisecond), st.AttestationCount-burstStart)
	before := st.AttestationCount
	st = host.waitVerifier(id, 2*time.Minute, "attestations after the allowed programs ran", func(st *api.VerifierAgent) bool {
		// Get Quote (retry) is allowed: see the quote failures counted below.
		if failed(st) {
			t.Fatalf("allowed programs failed the machine: %s %s %v", api.StateName(st.OperationalState), st.LastFailure, failureIDs(st))
		}
		return st.AttestationCount >= before+3
	})
	imaLog, _ = fetchLogs(t, agent)
	for i := 1; i <= laterScripts; i++ {
		if !strings.Contains(imaLog, fmt.Sprintf(" /opt/app/later-%d.sh\n", i)) {
			t.Errorf("later-%d.sh is not in the IMA log", i)
		}
	}
	qs := quoteStats(t, filepath.Join(share, fmt.Sprintf("agent-%d.log", boot.N)))
	t.Logf("FIGURE boot 1: %d attestations, %d IMA entries attested; the agent's quotes (TPM via /dev/tpmrm0 + logs): %d, median %v, slowest %v",
		st.AttestationCount, countLines(imaLog), qs.ok, qs.median, qs.slowest)
	if qs.changing > 0 {
		// The kernel extends PCR 10 while the agent quotes; the verifier retries, but a machine that keeps
		// running new programs can exhaust its retries.
		t.Logf("FINDING: %d quote requests failed with %q while IMA was extending PCR 10", qs.changing, device.ErrPCRsChanging)
	}

	// 3. Reboot with the same command line: same TPM, same firmware variables, same agent data.
	if err := m.PowerOff(t.Context()); err != nil {
		t.Fatal(err)
	}
	down := st.AttestationCount
	boot, err = m.Boot(t.Context(), baseCmdline)
	if err != nil {
		t.Fatal(err)
	}
	waitAgentUp(t, agent, share, boot.N)
	if _, ag2 := host.waitRegistered(time.Minute, 1); ag2.AIKTPM != ag.AIKTPM {
		t.Errorf("the agent came back with another AK after the reboot")
	}
	st = host.waitVerifier(id, 3*time.Minute, "attestation after the reboot", func(st *api.VerifierAgent) bool {
		if failed(st) {
			t.Fatalf("the same boot again failed: %s %v", st.LastFailure, failureIDs(st))
		}
		return st.AttestationCount >= down+3 && st.LastSuccessfulAttestation*int64(time.Second) > boot.Ready.UnixNano()
	})
	t.Logf("FIGURE reboot: attested again %v after QEMU start", time.Since(boot.Started).Round(time.Millisecond))

	// 4. A program outside the policy.
	evilAt := time.Now()
	if _, err := m.Exec(t.Context(), `printf '#!/bin/sh\necho mining\n' > /tmp/miner.sh && chmod 755 /tmp/miner.sh && /tmp/miner.sh`); err != nil {
		t.Fatal(err)
	}
	st = host.waitVerifier(id, 2*time.Minute, "the unknown program caught", func(st *api.VerifierAgent) bool {
		return failed(st)
	})
	c := failureWith(st, ima.EventNotInPolicy)
	if c == nil || c["path"] != "/tmp/miner.sh" {
		t.Fatalf("failures %v (context %v), want %s naming /tmp/miner.sh", failureIDs(st), c, ima.EventNotInPolicy)
	}
	if !strings.Contains(st.LastFailure, "/tmp/miner.sh") {
		t.Errorf("last_failure %q does not name the file", st.LastFailure)
	}
	t.Logf("FIGURE unknown program caught %v after it ran: %s", time.Since(evilAt).Round(time.Millisecond), st.LastFailure)

	// 5. Another kernel command line.
	host.mustRun("tenant", "delete", "-u", id)
	if err := m.PowerOff(t.Context()); err != nil {
		t.Fatal(err)
	}
	boot, err = m.Boot(t.Context(), baseCmdline+" vmtest_tampered=1")
	if err != nil {
		t.Fatal(err)
	}
	waitAgentUp(t, agent, share, boot.N)
	// The offline tool agrees with what the verifier will say.
	_, bootLog3 := fetchLogs(t, agent)
	bootPath3 := filepath.Join(dir, "bios-boot3.bin")
	if err := os.WriteFile(bootPath3, bootLog3, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := host.run("policy", "evaluate", "measured-boot", "--eventlog", bootPath3, "--mb-policy", mbPolicy); code != 1 || !strings.Contains(out, "LoadOptions") {
		t.Errorf("keylime policy evaluate measured-boot on the tampered boot: exit %d, want 1 naming LoadOptions:\n%s", code, out)
	}
	if out, code := host.run("tenant", "add", "-u", id, "--runtime-policy", runtimePolicy, "--mb-policy", mbPolicy); code != 0 {
		t.Logf("tenant add on the tampered boot: exit %d: %s", code, out)
	}
	st = host.waitVerifier(id, 3*time.Minute, "the changed command line caught", func(st *api.VerifierAgent) bool {
		return failed(st)
	})
	t.Logf("tampered boot: failures %v: %s", failureIDs(st), st.LastFailure)
	var mbFailure string
	for _, f := range st.Failures {
		if strings.HasPrefix(f.EventID, "measured_boot") {
			mbFailure = f.EventID + " " + string(f.Context)
		}
	}
	if mbFailure == "" {
		t.Fatalf("no measured-boot failure on a boot with another command line: %v", failureIDs(st))
	}
	if !strings.Contains(mbFailure, "LoadOptions") && !strings.Contains(mbFailure, "cmdline") {
		t.Errorf("the measured-boot failure does not name the command line: %s", mbFailure)
	}
}

// waitAgentUp waits until the agent of boot n answers through the port forward and has registered
// again (the registrar keeps regcount for a re-registration with the same EK, so its own log says so).
func waitAgentUp(t *testing.T, agent *client.Agent, share string, n int) {
	t.Helper()
	waitFor(t, 3*time.Minute, fmt.Sprintf("the agent of boot %d", n), func() error {
		b, err := os.ReadFile(filepath.Join(share, fmt.Sprintf("agent-%d.log", n)))
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "registered and activated") {
			return errors.New("not registered yet")
		}
		_, err = agent.Version(t.Context())
		return err
	})
}

// agentQuotes sums up the agent's quotes from its JSON log.
type agentQuotes struct {
	ok              int           // quotes made
	changing        int           // quote requests that failed because PCRs kept changing
	median, slowest time.Duration // of the quotes made
}

// quoteStats reads the agent's JSON log.
func quoteStats(t *testing.T, logPath string) agentQuotes {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var q agentQuotes
	var took []time.Duration
	for _, l := range strings.Split(string(b), "\n") {
		var e struct {
			Message string  `json:"message"`
			Error   string  `json:"error"`
			Took    float64 `json:"took"`
		}
		if json.Unmarshal([]byte(l), &e) != nil {
			continue
		}
		switch {
		case e.Message == "quote":
			took = append(took, time.Duration(e.Took*float64(time.Millisecond)))
		case strings.Contains(e.Error, device.ErrPCRsChanging.Error()):
			q.changing++
		}
	}
	q.ok = len(took)
	if len(took) > 0 {
		slices.Sort(took)
		q.median, q.slowest = took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond)
	}
	return q
}

// failed reports whether the verifier gave up on the agent (retrying is not failing).
func failed(st *api.VerifierAgent) bool {
	switch st.OperationalState {
	case api.StateInvalidQuote, api.StateFailed, api.StateTenantFailed:
		return true
	}
	return false
}

func countLines(s string) int {
	return strings.Count(s, "\n")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
