package testbed

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildKeylime builds the release binary as it ships (CGO_ENABLED=0) into dir and returns its path.
func BuildKeylime(dir string) (string, error) {
	bin := filepath.Join(dir, "keylime")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/keylime-go/keylime")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

// FreePort returns a TCP port that was free on loopback when asked (another process may take it
// before the caller listens: good enough for tests).
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
