package cli_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// keylime is the release binary, built once by TestMain.
var keylime string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keylime-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	keylime = filepath.Join(dir, "keylime")
	cmd := exec.Command("go", "build", "-o", keylime, "github.com/keylime-go/keylime")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

// run runs the binary with args; KEYLIME_* variables of the test environment are dropped, env is added.
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(keylime, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYLIME_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// expect checks the exit code; for failures it checks that the error is one line on stderr (the last,
// starting with "keylime: ", and the only such line) mentioning want.
func (r result) expect(t *testing.T, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	if code == 0 || code == 4 && want == "" {
		return
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "keylime: ") || strings.Count(r.stderr, "keylime: ") != 1 {
		t.Errorf("error is not one line on stderr: %q", r.stderr)
	}
	if !strings.Contains(last, want) {
		t.Errorf("error %q does not mention %q", last, want)
	}
}
