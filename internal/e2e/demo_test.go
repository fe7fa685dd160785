package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/testbed"
)

// demoTools are the programs scripts/demo.sh runs besides the keylime binary (swtpm itself is
// checked by testbed.RequireSWTPM).
var demoTools = []string{"bash", "tpm2_eventlog", "tpm2_pcrextend", "tpm2_pcrread", "curl", "sha256sum", "sha1sum"}

// ansi matches the terminal escapes of the demo's step headers.
var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// The README's first command, scripts/demo.sh, runs green: the agent on a swtpm with a replayed real
// boot is attested with a measured-boot reference state and a runtime policy, and the final status
// names the unknown program /tmp/cryptominer. Runs with the test's binary, a private work directory
// and free ports, so it neither builds into the source tree nor collides with other tests.
func TestDemoScript(t *testing.T) {
	testbed.RequireSWTPM(t)
	testbed.RequireTools(t, "tpm2-tools curl", demoTools...)
	bin := keylimeBinary(t)
	dir := t.TempDir()

	env := demoEnv(os.Environ(),
		"KEYLIME_BIN="+bin,
		"DEMO_DIR="+dir,
		"KEEP=1", // the logs stay for the failure report; t.TempDir removes them
		"DEMO_REGISTRAR_PORT="+strconv.Itoa(testbed.FreePort(t)),
		"DEMO_REGISTRAR_TLS_PORT="+strconv.Itoa(testbed.FreePort(t)),
		"DEMO_VERIFIER_PORT="+strconv.Itoa(testbed.FreePort(t)),
		"DEMO_AGENT_PORT="+strconv.Itoa(testbed.FreePort(t)),
	)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../scripts/demo.sh")
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// On timeout the script gets SIGTERM so that its cleanup trap stops what it started; its process
	// group is killed if it does not exit (or when the test ends early).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	t.Cleanup(func() { stopDemo(cmd, dir) })

	start := time.Now()
	err := cmd.Run()
	text := ansi.ReplaceAllString(out.String(), "")
	t.Logf("demo ran %v", time.Since(start).Round(100*time.Millisecond))
	if err != nil {
		t.Fatalf("scripts/demo.sh: %v (ctx: %v)\n%s%s", err, ctx.Err(), text, demoLogs(dir))
	}

	attested, caught, ok := strings.Cut(text, "== the verifier caught it")
	if !ok {
		t.Fatalf("no final status step in the demo's output:\n%s", text)
	}
	for _, tc := range []struct {
		name, in string
		re       *regexp.Regexp
	}{
		{"boot replayed", attested, regexp.MustCompile(`PCRs 0-9 equal the real machine's in both banks`)},
		{"boot aggregate", attested, regexp.MustCompile(`ima-ng sha256:6f219a5cf80a54a82b16a3a85ea19d9c13f3c66362875aecafe7f6e009435372 boot_aggregate`)},
		{"refstate created", attested, regexp.MustCompile(`(?m)^reference state: .*kernel_authcode [0-9a-f]+`)},
		{"added and attested", attested, regexp.MustCompile(`after --wait:\s+Get Quote`)},
		{"state Get Quote", attested, regexp.MustCompile(`operational state:\s+Get Quote`)},
		{"status PASS", attested, regexp.MustCompile(`attestation status:\s+PASS`)},
		{"measured boot checked", attested, regexp.MustCompile(`measured boot:\s+yes`)},
		{"state Invalid Quote", caught, regexp.MustCompile(`operational state:\s+Invalid Quote`)},
		{"failure names the file", caught, regexp.MustCompile(`failure:\s+ima\.validation\.ima-ng\.not_in_allowlist: File not found in allowlist: /tmp/cryptominer\b`)},
		{"demo finished", caught, regexp.MustCompile(`(?m)^demo: done\.`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.re.MatchString(tc.in) {
				t.Errorf("demo output lacks %q:\n%s", tc.re, tc.in)
			}
		})
	}
	if strings.Contains(caught, "measured_boot.") {
		t.Errorf("the unknown program also failed measured boot:\n%s", caught)
	}
}

// demoEnv is base without the settings that would change what the demo does (KEYLIME_*, DEMO_*, KEEP),
// plus set.
func demoEnv(base []string, set ...string) []string {
	var env []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "KEYLIME_") || strings.HasPrefix(k, "DEMO_") || k == "KEEP" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, set...)
}

// stopDemo kills what a demo that did not finish (killed after the timeout, or never waited for) may
// have left running: its process group (registrar, verifier, agent) and the swtpm daemon it started
// in dir. A demo that exited by itself ran its cleanup trap.
func stopDemo(cmd *exec.Cmd, dir string) {
	if cmd.Process == nil {
		return
	}
	if cmd.ProcessState == nil || !cmd.ProcessState.Exited() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	b, err := os.ReadFile(filepath.Join(dir, "tpm", "swtpm.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "swtpm" {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// demoLogs returns the tails of the demo's server logs for a failure report.
func demoLogs(dir string) string {
	var b strings.Builder
	for _, name := range []string{"registrar.log", "verifier.log", "agent.log"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(ansi.ReplaceAllString(string(data), ""), "\n"), "\n")
		fmt.Fprintf(&b, "\n--- %s (last %d lines)\n%s\n", name, min(len(lines), 20), strings.Join(lines[max(0, len(lines)-20):], "\n"))
	}
	return b.String()
}
