package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// run runs the release binary and returns stdout, stderr and the exit code.
func run(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(keylimeBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestCLIBasics(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[registrar]\nprot = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		env     []string
		args    []string
		code    int
		stdout  string
		stderr  string
		oneLine bool
	}{
		{name: "version", args: []string{"version"}, code: 0, stdout: "API 2.1, 2.2, 2.3, 2.4, 2.5, 2.6"},
		{name: "unknown flag", args: []string{"--nope", "version"}, code: 2, stderr: "nope", oneLine: true},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: "frobnicate"},
		{name: "unknown config key named", args: []string{"--config", bad, "registrar"}, code: 2, stderr: "unknown key registrar.prot", oneLine: true},
		{name: "bad env override", env: []string{"KEYLIME_REGISTRAR_PORT=eighty"}, args: []string{"registrar"}, code: 2, stderr: "KEYLIME_REGISTRAR_PORT", oneLine: true},
		{name: "bad --set", args: []string{"--set", "registrar.nope=1", "registrar"}, code: 2, stderr: "registrar.nope", oneLine: true},
		{name: "bad log format", args: []string{"--log-format", "xml", "registrar"}, code: 2, stderr: "log format", oneLine: true},
		{name: "agent without TPM", args: []string{"--set", "agent.keylime_dir=" + dir, "--set", "agent.enable_agent_mtls=false", "agent", "--tpm", "/dev/nonexistent-tpm"}, code: 1, stderr: "nonexistent-tpm", oneLine: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, tc.env, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", code, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("stdout %q / stderr %q, want %q / %q", out, errOut, tc.stdout, tc.stderr)
			}
			if tc.oneLine {
				last := strings.TrimSpace(errOut)
				if i := strings.LastIndex(last, "\n"); i >= 0 {
					last = last[i+1:]
				}
				if !strings.HasPrefix(last, "keylime: ") {
					t.Errorf("last stderr line is not the one-line error: %q", last)
				}
			}
		})
	}
}

// TestJSONLogs: --log-format json makes every log line a JSON object.
func TestJSONLogs(t *testing.T) {
	dir := t.TempDir()
	_, errOut, code := run(t, nil, "--log-format", "json", "--set", "agent.keylime_dir="+dir, "--set", "agent.enable_agent_mtls=false", "agent", "--tpm", "/dev/nonexistent-tpm")
	if code != 1 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) < 2 {
		t.Fatalf("too few lines: %q", errOut)
	}
	for _, l := range lines[:len(lines)-1] {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["level"] == nil || m["message"] == nil {
			t.Errorf("not a JSON log line: %q", l)
		}
	}
}
