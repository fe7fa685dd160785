package cli_test

import (
	"bufio"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keylime-go/keylime/policy/ima"
)

// Fixtures captured from a real measured boot (OVMF + swtpm + Debian kernel with IMA).
const (
	imaTestdata = "../../policy/ima/testdata"
	mbTestdata  = "../../policy/mb/testdata"
)

func imaFixture(capture string) string {
	return filepath.Join(imaTestdata, capture, "ascii_runtime_measurements")
}

// polDecode parses stdout as exactly one JSON document.
func polDecode(t *testing.T, r result, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not JSON: %v\nstdout: %s\nstderr: %s", err, r.stdout, r.stderr)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("stdout holds more than one JSON document: %s", r.stdout)
	}
}

// capturedPCRs reads a capture's pcrs.txt ("<bank> <index> <HEX>") into bank → index → lower-case hex.
func capturedPCRs(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			t.Fatalf("pcrs.txt line %q", sc.Text())
		}
		if out[f[0]] == nil {
			out[f[0]] = map[string]string{}
		}
		out[f[0]][f[1]] = strings.ToLower(f[2])
	}
	return out
}

// logDigests reads an ima-ng/ima-sig log the plain way: "<pcr> <hash> <template> <algo>:<hex> <path> …".
func logDigests(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		_, d, _ := strings.Cut(f[3], ":")
		if !slices.Contains(out[f[4]], d) {
			out[f[4]] = append(out[f[4]], d)
		}
	}
	for _, ds := range out {
		slices.Sort(ds)
	}
	return out
}

// readPolicy reads a policy file and checks that the verifier's decoder takes it.
func readPolicy(t *testing.T, path string) *ima.RuntimePolicy {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ima.DecodeRuntimePolicy(b)
	if err != nil {
		t.Fatalf("%s does not decode as a runtime policy: %v\n%s", path, err, b)
	}
	return p
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func writePolicy(t *testing.T, path string, p *ima.RuntimePolicy) string {
	t.Helper()
	b, err := p.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, path, b)
}

// evalResult is the JSON of `policy evaluate`.
type evalResult struct {
	PCRs     map[string]map[string]string `json:"pcrs"`
	Valid    bool                         `json:"valid"`
	Failures []struct {
		EventID string         `json:"event_id"`
		Context map[string]any `json:"context"`
	} `json:"failures"`
}

// evalJSON decodes an evaluate answer and checks its top-level shape is exactly pcrs, valid, failures.
func evalJSON(t *testing.T, r result) evalResult {
	t.Helper()
	var raw map[string]json.RawMessage
	polDecode(t, r, &raw)
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"failures", "pcrs", "valid"}) {
		t.Fatalf("JSON keys %v, want failures, pcrs, valid: %s", keys, r.stdout)
	}
	if string(raw["failures"]) == "null" {
		t.Fatalf("failures is null, want a list: %s", r.stdout)
	}
	var ev evalResult
	polDecode(t, r, &ev)
	return ev
}

func TestPolicyRuntimeFromIMALog(t *testing.T) {
	for _, capture := range []string{"vm-ovmf-ima-ng", "vm-ovmf-ima-sig"} {
		t.Run(capture, func(t *testing.T) {
			dir := t.TempDir()
			logFile := imaFixture(capture)
			pcrs := capturedPCRs(t, filepath.Join(imaTestdata, capture, "pcrs.txt"))
			out := filepath.Join(dir, "policy.json")
			r := run(t, nil, "policy", "create", "runtime", "--ima-log", logFile, "-o", out)
			r.expect(t, 0, "")
			if r.stdout != "" {
				t.Errorf("policy written to stdout as well as -o: %q", r.stdout)
			}
			p := readPolicy(t, out)
			if p.Meta.Timestamp == "" || p.Meta.Version != 1 || p.Meta.Generator != ima.GeneratorLegacyAllowList {
				t.Errorf("meta %+v", p.Meta)
			}
			want := logDigests(t, logFile)
			if len(want["/opt/app/run2.sh"]) != 2 || len(want["boot_aggregate"]) != 1 {
				t.Fatalf("fixture changed: %v", want)
			}
			if d := cmp.Diff(want, p.Digests); d != "" {
				t.Fatalf("digests (-log +policy):\n%s", d)
			}
			if p.IMA.LogHashAlg != "sha1" {
				t.Errorf("log_hash_alg %q", p.IMA.LogHashAlg)
			}

			// The same policy on stdout, through the upstream option name.
			r = run(t, nil, "policy", "create", "runtime", "--ima-measurement-list", logFile)
			r.expect(t, 0, "")
			var fromStdout ima.RuntimePolicy
			polDecode(t, r, &fromStdout)
			if d := cmp.Diff(want, fromStdout.Digests); d != "" {
				t.Fatalf("stdout digests (-log +policy):\n%s", d)
			}

			// Evaluate: valid, and the replayed PCR 10 is what the TPM reported.
			r = run(t, nil, "policy", "evaluate", "runtime", "--ima-log", logFile, "--runtime-policy", out, "--json")
			r.expect(t, 0, "")
			ev := evalJSON(t, r)
			if !ev.Valid || len(ev.Failures) != 0 {
				t.Fatalf("own policy rejected: %s", r.stdout)
			}
			wantPCRs := map[string]map[string]string{"sha1": {"10": pcrs["sha1"]["10"]}, "sha256": {"10": pcrs["sha256"]["10"]}}
			if d := cmp.Diff(wantPCRs, ev.PCRs); d != "" {
				t.Fatalf("PCR 10 (-pcrs.txt +replay):\n%s", d)
			}

			// Text output and no policy at all: parse and replay only.
			r = run(t, nil, "policy", "evaluate", "runtime", "--ima-log", logFile, "--runtime-policy", out)
			r.expect(t, 0, "")
			if !strings.Contains(r.stdout, pcrs["sha256"]["10"]) || !strings.Contains(r.stdout, pcrs["sha1"]["10"]) || !strings.Contains(r.stdout, "valid") {
				t.Errorf("text output %q", r.stdout)
			}
			r = run(t, nil, "policy", "evaluate", "runtime", "--ima-log", logFile, "--json", "--bank", "sha256", "--bank", "sha384")
			r.expect(t, 0, "")
			ev = evalJSON(t, r)
			wantPCRs = map[string]map[string]string{"sha256": {"10": pcrs["sha256"]["10"]}, "sha384": {"10": ev.PCRs["sha384"]["10"]}}
			if d := cmp.Diff(wantPCRs, ev.PCRs); d != "" || !ev.Valid || len(ev.PCRs["sha384"]["10"]) != 96 {
				t.Fatalf("no-policy evaluation %s (-want +got):\n%s", r.stdout, d)
			}
		})
	}
}

func TestPolicyEvaluateRuntimeRejects(t *testing.T) {
	dir := t.TempDir()
	logFile := imaFixture("vm-ovmf-ima-ng")
	full := filepath.Join(dir, "full.json")
	run(t, nil, "policy", "create", "runtime", "--ima-log", logFile, "-o", full).expect(t, 0, "")
	base := readPolicy(t, full)

	missing := readPolicy(t, full)
	delete(missing.Digests, "/bin/busybox")
	missingFile := writePolicy(t, filepath.Join(dir, "missing.json"), missing)
	wrong := readPolicy(t, full)
	wrong.Digests["/init"] = []string{strings.Repeat("ab", 32)}
	wrongFile := writePolicy(t, filepath.Join(dir, "wrong.json"), wrong)
	excluded := readPolicy(t, full)
	delete(excluded.Digests, "/bin/busybox")
	excluded.Excludes = []string{"/bin/.*"}
	excludedFile := writePolicy(t, filepath.Join(dir, "excluded.json"), excluded)

	// A log whose digest was changed in place: the template hash no longer matches.
	logText, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	busybox := base.Digests["/bin/busybox"][0]
	tampered := writeFile(t, filepath.Join(dir, "tampered"), []byte(strings.Replace(string(logText), busybox, strings.Repeat("0", 64), 1)))

	tests := []struct {
		name    string
		policy  string
		log     string
		eventID string
		path    string
		entry   float64
	}{
		{"path missing from the policy", missingFile, logFile, ima.EventNotInPolicy, "/bin/busybox", 2},
		{"digest not in the policy", wrongFile, logFile, ima.EventDigestNotAllowed, "/init", 5},
		{"tampered log line", full, tampered, ima.EventTemplateHash, "/bin/busybox", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, nil, "policy", "evaluate", "runtime", "--ima-log", tc.log, "--runtime-policy", tc.policy, "--json")
			r.expect(t, 1, tc.path)
			ev := evalJSON(t, r)
			if ev.Valid || len(ev.Failures) != 1 {
				t.Fatalf("want one failure: %s", r.stdout)
			}
			f := ev.Failures[0]
			if f.EventID != tc.eventID || f.Context["path"] != tc.path || f.Context["entry"] != tc.entry ||
				!strings.HasPrefix(f.Context["digest"].(string), "sha256:") {
				t.Fatalf("failure %+v", f)
			}
			if len(ev.PCRs["sha1"]["10"]) != 40 || len(ev.PCRs["sha256"]["10"]) != 64 {
				t.Errorf("PCRs missing from a failed evaluation: %v", ev.PCRs)
			}

			r = run(t, nil, "policy", "evaluate", "runtime", "--ima-log", tc.log, "--runtime-policy", tc.policy)
			r.expect(t, 1, tc.eventID)
			if !strings.Contains(r.stdout, tc.eventID) || !strings.Contains(r.stdout, tc.path) || !strings.Contains(r.stdout, "invalid") {
				t.Errorf("text output does not name the failure: %q", r.stdout)
			}
		})
	}

	t.Run("excluded path", func(t *testing.T) {
		r := run(t, nil, "policy", "evaluate", "runtime", "--ima-log", logFile, "--runtime-policy", excludedFile, "--json")
		r.expect(t, 0, "")
		if ev := evalJSON(t, r); !ev.Valid {
			t.Fatalf("excluded path rejected: %s", r.stdout)
		}
	})
	t.Run("tampered log without a policy", func(t *testing.T) {
		r := run(t, nil, "policy", "evaluate", "runtime", "--ima-log", tampered)
		r.expect(t, 1, ima.EventTemplateHash)
	})
	t.Run("legacy allowlist as the policy", func(t *testing.T) {
		flat, _ := base.Allowlist()
		allow := writeFile(t, filepath.Join(dir, "allowlist.txt"), flat)
		r := run(t, nil, "policy", "evaluate", "runtime", "--ima-log", logFile, "--runtime-policy", allow, "--json")
		r.expect(t, 0, "")
		if !strings.Contains(r.stderr, "converted") {
			t.Errorf("no note about the conversion: %q", r.stderr)
		}
	})

	lines := strings.SplitAfter(string(logText), "\n")
	unusable := []struct {
		name string
		args []string
		want string
	}{
		{"garbage log", []string{"--ima-log", writeFile(t, filepath.Join(dir, "garbage"), []byte("this is not an IMA log\n"))}, "line 1"},
		{"truncated line", []string{"--ima-log", writeFile(t, filepath.Join(dir, "truncated"), []byte(lines[0]+lines[1][:60]))}, "line 2"},
		{"missing log", []string{"--ima-log", filepath.Join(dir, "nope")}, "no such file"},
		{"no log", nil, "--ima-log"},
		{"policy not JSON", []string{"--ima-log", logFile, "--runtime-policy", writeFile(t, filepath.Join(dir, "bad.json"), []byte("{\"digests\": 3"))}, "runtime-policy"},
		{"policy against the schema", []string{"--ima-log", logFile, "--runtime-policy", writeFile(t, filepath.Join(dir, "schema.json"), []byte(`{"meta": {"version": 1}, "digests": {"/a": ["xyz"]}}`))}, "runtime-policy"},
		{"bad key file", []string{"--ima-log", logFile, "--keys", logFile}, "--keys"},
		{"unknown bank", []string{"--ima-log", logFile, "--bank", "sm3"}, "--bank"},
		{"stray argument", []string{"--ima-log", logFile, "extra"}, "unexpected argument"},
	}
	for _, tc := range unusable {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, nil, append([]string{"policy", "evaluate", "runtime", "--json"}, tc.args...)...)
			r.expect(t, 2, tc.want)
			if r.stdout != "" {
				t.Errorf("output on unusable input: %q", r.stdout)
			}
		})
	}
}

// rootfsTree is a small root file system: path → content.
var rootfsTree = map[string]string{
	"/usr/bin/tool":             "#!/bin/sh\necho tool\n",
	"/usr/lib/libx.so.1":        strings.Repeat("\x7fELF", 5000),
	"/opt/my app/run me.sh":     "#!/bin/sh\n",
	"/opt/cache/data/blob":      "excluded by --exclude",
	"/srv/site/index.html":      "skipped by --skip-path",
	"/proc/1/cmdline":           "virtual",
	"/var/lib/db":               "mutable",
	"/etc/empty.conf":           "",
	"/etc/nested/deeper/f.conf": "x=1\n",
}

func TestPolicyRuntimeFromRootfs(t *testing.T) {
	root := t.TempDir()
	for p, c := range rootfsTree {
		writeFile(t, filepath.Join(root, filepath.FromSlash(p)), []byte(c))
	}
	if err := os.Symlink("tool", filepath.Join(root, "usr/bin/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "etc/passwd-link")); err != nil {
		t.Fatal(err)
	}
	hashed := []string{"/usr/bin/tool", "/usr/lib/libx.so.1", "/opt/my app/run me.sh", "/etc/empty.conf", "/etc/nested/deeper/f.conf"}

	for _, tc := range []struct {
		algo string
		sum  func(string) string
	}{
		{"", func(s string) string { d := sha256.Sum256([]byte(s)); return hex.EncodeToString(d[:]) }},
		{"sha512", func(s string) string { d := sha512.Sum512([]byte(s)); return hex.EncodeToString(d[:]) }},
	} {
		t.Run("algo "+tc.algo, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "policy.json")
			args := []string{"policy", "create", "runtime", "--rootfs", root, "--exclude", "/opt/cache/.*", "--exclude", `/nothing{1,2}`,
				"--skip-path", filepath.Join(root, "srv"), "-o", out}
			if tc.algo != "" {
				args = append(args, "--algo", tc.algo)
			}
			r := run(t, nil, args...)
			r.expect(t, 0, "")
			p := readPolicy(t, out)
			want := map[string][]string{}
			var size int
			for _, f := range hashed {
				want[strings.ReplaceAll(f, " ", "_")] = []string{tc.sum(rootfsTree[f])}
				size += len(rootfsTree[f])
			}
			if d := cmp.Diff(want, p.Digests); d != "" {
				t.Fatalf("digests (-want +got):\n%s", d)
			}
			if !slices.Equal(p.Excludes, []string{"/nothing{1,2}", "/opt/cache/.*"}) {
				t.Errorf("excludes %q", p.Excludes)
			}
			if !strings.Contains(r.stderr, "hashed 5 files") || !strings.Contains(r.stderr, "1 files matching the excludes") {
				t.Errorf("progress/notes on stderr: %q", r.stderr)
			}
			if p.Meta.Timestamp == "" {
				t.Error("no timestamp")
			}
		})
	}

	t.Run("quiet", func(t *testing.T) {
		r := run(t, nil, "policy", "create", "runtime", "--rootfs", root, "-q")
		r.expect(t, 0, "")
		if r.stderr != "" {
			t.Errorf("--quiet printed %q", r.stderr)
		}
		var p ima.RuntimePolicy
		polDecode(t, r, &p)
		if _, ok := p.Digests["/srv/site/index.html"]; !ok || len(p.Digests) != len(hashed)+2 {
			t.Errorf("without --skip-path and --exclude: %v", p.Digests)
		}
	})
}

func TestPolicyRuntimeAllowlistAndMerge(t *testing.T) {
	dir := t.TempDir()
	d := func(c string) string { return strings.Repeat(c, 64) }
	flat := writeFile(t, filepath.Join(dir, "allowlist.txt"), []byte("# comment\n"+
		d("a")+"  /usr/bin/a\n"+
		"sha256:"+strings.ToUpper(d("b"))+"  /opt/with space/b\n"+
		d("c")+"  %keyring:.ima\n"))
	jsonList := writeFile(t, filepath.Join(dir, "allowlist.json"), []byte(`{"hashes": {"/usr/bin/j": ["`+d("d")+`"]}}`))
	excludeList := writeFile(t, filepath.Join(dir, "excludes.txt"), []byte("# none\n/tmp/.*\n\n/var/log/.*\n"))

	t.Run("flat allowlist", func(t *testing.T) {
		out := filepath.Join(dir, "flat.json")
		run(t, nil, "policy", "create", "runtime", "--allowlist", flat, "--excludelist", excludeList, "-o", out).expect(t, 0, "")
		p := readPolicy(t, out)
		if d := cmp.Diff(map[string][]string{"/usr/bin/a": {d("a")}, "/opt/with_space/b": {d("b")}}, p.Digests); d != "" {
			t.Fatalf("digests (-want +got):\n%s", d)
		}
		if !cmp.Equal(p.Keyrings, map[string][]string{".ima": {d("c")}}) || !slices.Equal(p.Excludes, []string{"/tmp/.*", "/var/log/.*"}) {
			t.Fatalf("keyrings %v, excludes %v", p.Keyrings, p.Excludes)
		}
	})
	t.Run("JSON allowlist", func(t *testing.T) {
		out := filepath.Join(dir, "json.json")
		run(t, nil, "policy", "create", "runtime", "-a", jsonList, "-o", out).expect(t, 0, "")
		if p := readPolicy(t, out); !cmp.Equal(p.Digests, map[string][]string{"/usr/bin/j": {d("d")}}) {
			t.Fatalf("digests %v", p.Digests)
		}
	})
	t.Run("keylime's allowlist", func(t *testing.T) {
		r := run(t, nil, "policy", "create", "runtime", "--allowlist", filepath.Join(imaTestdata, "keylime", "ima-allowlist-short.txt"))
		r.expect(t, 0, "")
		var p ima.RuntimePolicy
		polDecode(t, r, &p)
		if len(p.Digests) < 5 {
			t.Fatalf("digests %v", p.Digests)
		}
	})
	t.Run("legacy allowlist output", func(t *testing.T) {
		r := run(t, nil, "policy", "create", "runtime", "--allowlist", flat, "--show-legacy-allowlist")
		r.expect(t, 0, "")
		if !strings.Contains(r.stdout, d("a")+" /usr/bin/a") && !strings.Contains(r.stdout, d("a")+"  /usr/bin/a") {
			t.Fatalf("allowlist output %q", r.stdout)
		}
	})
	t.Run("legacy allowlist output leaves out names it cannot write", func(t *testing.T) {
		odd := writeFile(t, filepath.Join(dir, "odd.json"), []byte(`{"hashes": {"/usr/bin/k": ["`+d("b")+`"], "/a b": ["`+d("c")+`"], "/tab\tx": ["`+d("e")+`"]}}`))
		r := run(t, nil, "policy", "create", "runtime", "--allowlist", odd, "--show-legacy-allowlist")
		r.expect(t, 0, "")
		if want := d("c") + "  /a_b\n" + d("b") + "  /usr/bin/k\n"; r.stdout != want {
			t.Errorf("allowlist output %q, want %q", r.stdout, want)
		}
		if !strings.Contains(r.stderr, "left out, having no allowlist form") || !strings.Contains(r.stderr, `"/tab\tx"`) {
			t.Errorf("no note of the path left out: %q", r.stderr)
		}
	})

	t.Run("base policy merge", func(t *testing.T) {
		certFile := filepath.Join(imaTestdata, "keylime", "rsa2048pub.pem")
		basePol := ima.EmptyRuntimePolicy()
		basePol.Digests["/usr/bin/a"] = []string{d("e")}
		basePol.Digests["/init"] = []string{d("f")}
		basePol.Excludes = []string{"/home/.*"}
		basePol.Keyrings[".builtin_trusted_keys"] = []string{d("1")}
		basePol.IMABuf["kexec-cmdline"] = []string{d("2")}
		basePol.IMA.IgnoredKeyrings = []string{".platform"}
		baseFile := writePolicy(t, filepath.Join(dir, "base.json"), basePol)

		out := filepath.Join(dir, "merged.json")
		logFile := imaFixture("vm-ovmf-ima-ng")
		run(t, nil, "policy", "create", "runtime", "--base-policy", baseFile, "--allowlist", flat, "--ima-log", logFile,
			"--exclude", "/tmp/.*", "--ignored-keyrings", ".ima", "--add-ima-signature-verification-key", certFile, "-o", out).expect(t, 0, "")
		p := readPolicy(t, out)
		want := logDigests(t, logFile)
		want["/usr/bin/a"] = []string{d("a"), d("e")}
		want["/init"] = append(want["/init"], d("f"))
		slices.Sort(want["/init"])
		want["/opt/with_space/b"] = []string{d("b")}
		if diff := cmp.Diff(want, p.Digests); diff != "" {
			t.Fatalf("digests (-want +got):\n%s", diff)
		}
		if !slices.Equal(p.Excludes, []string{"/home/.*", "/tmp/.*"}) || !slices.Equal(p.IMA.IgnoredKeyrings, []string{".ima", ".platform"}) ||
			!cmp.Equal(p.Keyrings, map[string][]string{".builtin_trusted_keys": {d("1")}, ".ima": {d("c")}}) ||
			!cmp.Equal(p.IMABuf, map[string][]string{"kexec-cmdline": {d("2")}}) {
			t.Fatalf("merged policy %+v", p)
		}
		ring, _, err := ima.ParseVerificationKeys(p.VerificationKeys)
		if err != nil || ring.Len() != 1 {
			t.Fatalf("verification-keys %q: %v", p.VerificationKeys, err)
		}
		keyData, _ := os.ReadFile(certFile)
		want1, err := ima.ParseKeys(keyData)
		if err != nil || ring.Keys()[0].ID != want1.Keys()[0].ID {
			t.Fatalf("verification key id %v, want %v (%v)", ring.Keys()[0].ID, want1.Keys()[0].ID, err)
		}

		// Merging the result into itself changes nothing but the timestamp.
		again := filepath.Join(dir, "again.json")
		run(t, nil, "policy", "create", "runtime", "--base-policy", out, "--base-policy", out, "-o", again).expect(t, 0, "")
		p2 := readPolicy(t, again)
		p2.Meta.Timestamp = p.Meta.Timestamp
		if diff := cmp.Diff(p, p2); diff != "" {
			t.Fatalf("self-merge changed the policy:\n%s", diff)
		}
	})

	t.Run("algo filter on the IMA log", func(t *testing.T) {
		r := run(t, nil, "policy", "create", "runtime", "--ima-log", imaFixture("vm-ovmf-ima-ng"), "--algo", "sha1")
		r.expect(t, 0, "")
		var p ima.RuntimePolicy
		polDecode(t, r, &p)
		if len(p.Digests) != 1 || len(p.Digests["boot_aggregate"]) != 1 {
			t.Fatalf("digests %v", p.Digests)
		}
		if !strings.Contains(r.stderr, "6 sha256") {
			t.Fatalf("no note about the skipped entries: %q", r.stderr)
		}
	})

	usage := []struct {
		name string
		args []string
		want string
	}{
		{"nothing to build from", nil, "nothing to build"},
		{"unknown algorithm", []string{"--allowlist", flat, "--algo", "md5"}, "--algo"},
		{"keyrings without a log", []string{"--rootfs", dir, "--keyrings"}, "--ima-log"},
		{"exclude Go cannot run as Python does", []string{"--allowlist", flat, "--exclude", "/a(?=b)"}, "exclude"},
		{"bad exclude list", []string{"--allowlist", flat, "--excludelist", writeFile(t, filepath.Join(dir, "badex"), []byte("/ok\n(unclosed\n"))}, "line 2"},
		{"missing rootfs", []string{"--rootfs", filepath.Join(dir, "nope")}, "--rootfs"},
		{"skip path outside the rootfs", []string{"--rootfs", dir, "--skip-path", "/elsewhere"}, "--skip-path"},
		{"malformed allowlist", []string{"--allowlist", writeFile(t, filepath.Join(dir, "bad.txt"), []byte("nothex /a\n"))}, "line 1"},
		{"malformed log", []string{"--ima-log", writeFile(t, filepath.Join(dir, "badlog"), []byte("10 zz ima-ng\n"))}, "line 1"},
		{"base policy not JSON", []string{"--base-policy", writeFile(t, filepath.Join(dir, "base.bin"), []byte("{"))}, "--base-policy"},
		{"key that is not a key", []string{"--allowlist", flat, "--verification-key", flat}, "--verification-key"},
		{"unknown option", []string{"--allowlist", flat, "--nope"}, "nope"},
	}
	for _, tc := range usage {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, nil, append([]string{"policy", "create", "runtime"}, tc.args...)...)
			r.expect(t, 2, tc.want)
		})
	}
}
