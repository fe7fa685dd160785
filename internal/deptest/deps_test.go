package deptest

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/keylime-go/keylime"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if name == "" {
			name = "."
		}
		pkgs[name] = p
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	return pkgs
}

func local(paths []string) []string {
	var out []string
	for _, p := range paths {
		if p == module {
			out = append(out, ".")
		} else if strings.HasPrefix(p, module+"/") {
			out = append(out, strings.TrimPrefix(p, module+"/"))
		}
	}
	return out
}

func under(p, prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }

var roles = []string{"agent", "registrar", "verifier", "tenant"}

func roleOf(p string) string {
	for _, r := range roles {
		if under(p, r) {
			return r
		}
	}
	return ""
}

// TestLayout checks the import rules of DESIGN.md §2 on the non-test imports of every package.
func TestLayout(t *testing.T) {
	pkgs := listPackages(t)
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	for name, p := range pkgs {
		deps := local(p.Deps)
		imports := local(p.Imports)
		role := roleOf(name)
		for _, d := range deps {
			if r := roleOf(d); r != "" && role != "" && r != role {
				t.Errorf("role %s depends on role %s (%s): roles meet only through the HTTP API", name, r, d)
			}
			if (under(d, "internal/testbed") || under(d, "internal/e2e")) && !under(name, "internal/testbed") && !under(name, "internal/e2e") {
				t.Errorf("%s depends on the test-only %s", name, d)
			}
			if under(d, "tpm/device") && !under(name, "agent") && name != "internal/cli" && name != "." && !under(name, "tpm/device") && !under(name, "internal/testbed") && !under(name, "internal/e2e") {
				t.Errorf("%s depends on tpm/device: only the agent talks to a TPM", name)
			}
		}
		switch {
		case name == ".":
			if !slices.Equal(imports, []string{"internal/cli"}) {
				t.Errorf("main imports %v, want only internal/cli", imports)
			}
		case name == "internal/api":
			for _, d := range p.Deps {
				if strings.Contains(strings.Split(d, "/")[0], ".") {
					t.Errorf("internal/api must use the standard library only, depends on %s", d)
				}
			}
		case name == "tpm" || under(name, "policy") || name == "store":
			for _, d := range deps {
				if d != name && !under(d, "internal/api") && !(under(name, "policy") && under(d, "policy")) {
					t.Errorf("%s is a pure lower-layer package but depends on %s", name, d)
				}
			}
			for _, d := range p.Deps {
				if d == "net/http" && name != "store" {
					t.Errorf("%s is pure and must not use net/http", name)
				}
			}
		case name == "tenant":
			for _, d := range p.Deps {
				if strings.HasPrefix(d, "go.etcd.io/bbolt") {
					t.Errorf("the tenant must not link bbolt")
				}
			}
		}
		if name != "internal/cli" && name != "." {
			for _, d := range p.Imports {
				if strings.HasPrefix(d, "github.com/urfave/cli") {
					t.Errorf("%s imports urfave/cli: only internal/cli owns the command line", name)
				}
			}
		}
	}
}

// TestReleaseBinaryHasNoTestCode checks that the binary's dependency closure holds no test-only package.
func TestReleaseBinaryHasNoTestCode(t *testing.T) {
	pkgs := listPackages(t)
	main, ok := pkgs["."]
	if !ok {
		t.Fatal("no main package")
	}
	for _, d := range main.Deps {
		if strings.Contains(d, "internal/testbed") || strings.Contains(d, "internal/e2e") || strings.HasSuffix(d, "/simulator") || d == "testing" {
			t.Errorf("the release binary depends on %s", d)
		}
	}
}
