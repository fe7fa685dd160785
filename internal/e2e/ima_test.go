package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/policy/ima"
)

// imaAgent is an agent on swtpm whose IMA log a FakeIMA writes, extending PCR 10 to match.
type imaAgent struct {
	*Agent
	IMA *testbed.FakeIMA
	Log string
}

// startIMAAgent starts an agent with a fake IMA log holding a boot aggregate and files.
func startIMAAgent(t *testing.T, s *System, files map[string]string) *imaAgent {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "ascii_runtime_measurements")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a := s.StartAgent(AgentOptions{IMALogPath: logPath})
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatalf("agent never active: %v", err)
	}
	f, err := testbed.NewFakeIMA(a.Device, logPath, a.TPM.ActiveBanks())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.MeasureBootAggregate(sha256.Sum256([]byte("boot"))); err != nil {
		t.Fatal(err)
	}
	for _, p := range sortedKeys(files) {
		if _, err := f.Measure(p, []byte(files[p])); err != nil {
			t.Fatal(err)
		}
	}
	return &imaAgent{Agent: a, IMA: f, Log: logPath}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	return keys
}

// policyFromLog builds a runtime policy that allows every entry of an IMA log (what `keylime policy
// create runtime --ima-log` does), plus extra.
func policyFromLog(t *testing.T, logPath string, extra func(*ima.RuntimePolicy)) []byte {
	t.Helper()
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := ima.EmptyRuntimePolicy()
	p.IMA.LogHashAlg = "sha1"
	pr := ima.NewBytesParser(raw, 0)
	for {
		e, err := pr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := string(e.Name)
		p.Digests[name] = append(p.Digests[name], hex.EncodeToString(e.Digest))
	}
	if extra != nil {
		extra(p)
	}
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ima.DecodeRuntimePolicy(out); err != nil {
		t.Fatalf("test policy invalid: %v", err)
	}
	return out
}

// addWithRuntimePolicy adds the agent with a runtime policy (and no static PCRs).
func addWithRuntimePolicy(t *testing.T, s *System, id string, pol []byte) {
	t.Helper()
	req, err := s.AddRequest(id, "{}")
	if err != nil {
		t.Fatal(err)
	}
	req.RuntimePolicy = base64.StdEncoding.EncodeToString(pol)
	if err := s.Verifier.Add(t.Context(), id, req); err != nil {
		t.Fatalf("add: %v", err)
	}
}

// failureWith returns the first failure with event id, or nil.
func failureWith(st *api.VerifierAgent, id string) map[string]any {
	for _, f := range st.Failures {
		if f.EventID == id {
			var c map[string]any
			_ = json.Unmarshal(f.Context, &c)
			if c == nil {
				c = map[string]any{}
			}
			return c
		}
	}
	return nil
}

func eventIDs(st *api.VerifierAgent) []string {
	var ids []string
	for _, f := range st.Failures {
		ids = append(ids, f.EventID)
	}
	return ids
}

var baseFiles = map[string]string{
	"/usr/bin/bash":       "bash v5",
	"/usr/lib/libc.so.6":  "libc",
	"/etc/my config.conf": "conf with a space in its name",
}

// A policy made from the running log attests; a file the policy does not know fails, naming it.
func TestIMAUnknownFileFails(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	a := startIMAAgent(t, s, baseFiles)
	addWithRuntimePolicy(t, s, a.UUID(), policyFromLog(t, a.Log, nil))
	if _, err := s.WaitVerifier(a.UUID(), 15*time.Second, Attested(3)); err != nil {
		t.Fatalf("policy from the running log not attested: %v", err)
	}
	// More known files keep it attested (incrementally).
	if _, err := a.IMA.Measure("/usr/bin/bash", []byte("bash v5")); err != nil {
		t.Fatal(err)
	}
	st, err := s.WaitVerifier(a.UUID(), 10*time.Second, Attested(6))
	if err != nil {
		t.Fatalf("re-measured known file: %v", err)
	}
	digest := sha256.Sum256([]byte("evil"))
	if _, err := a.IMA.Measure("/tmp/evil", []byte("evil")); err != nil {
		t.Fatal(err)
	}
	st, err = s.WaitVerifier(a.UUID(), 10*time.Second, InState(api.StateInvalidQuote))
	if err != nil {
		t.Fatalf("unknown file not caught: %v", err)
	}
	c := failureWith(st, ima.EventNotInPolicy)
	if c == nil {
		t.Fatalf("failures %v, want %s", eventIDs(st), ima.EventNotInPolicy)
	}
	if c["path"] != "/tmp/evil" || c["digest"] != "sha256:"+hex.EncodeToString(digest[:]) || c["entry"] != float64(5) {
		t.Errorf("failure context %v, want path /tmp/evil, its digest, entry 5", c)
	}
	if !strings.Contains(st.LastFailure, "/tmp/evil") {
		t.Errorf("last_failure %q does not name the file", st.LastFailure)
	}
}

// Excluded paths and files signed by a trusted key pass without being listed; a file signed by an
// unknown key does not.
func TestIMAExcludesAndSignatures(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	a := startIMAAgent(t, s, baseFiles)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ring := ima.NewKeyring()
	if err := ring.Add(&key.PublicKey, 0); err != nil {
		t.Fatal(err)
	}
	pol := policyFromLog(t, a.Log, func(p *ima.RuntimePolicy) {
		p.Excludes = []string{"/var/log/.*", "/home/[^/]+/scratch/"}
		p.VerificationKeys = ring.String()
	})
	addWithRuntimePolicy(t, s, a.UUID(), pol)
	if _, err := s.WaitVerifier(a.UUID(), 15*time.Second, Attested(2)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/var/log/syslog", "/home/alice/scratch/build.sh"} {
		if _, err := a.IMA.Measure(p, []byte("anything "+p)); err != nil {
			t.Fatal(err)
		}
	}
	content := []byte("#!/bin/sh\necho signed\n")
	sig, err := testbed.SignIMA(key, content)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.IMA.MeasureSigned("/usr/local/bin/signed-tool", content, sig); err != nil {
		t.Fatal(err)
	}
	n := a.IMA.Entries()
	st, err := s.WaitVerifier(a.UUID(), 10*time.Second, func(st *api.VerifierAgent) bool {
		return st.OperationalState != api.StateGetQuote || st.AttestationCount >= 5
	})
	if err != nil || st.OperationalState != api.StateGetQuote {
		t.Fatalf("excluded and signed files failed (%d entries): %v %v", n, err, eventIDs(st))
	}
	// A signature by a key the policy does not trust, on an unlisted file, fails.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sig, err = testbed.SignIMA(other, []byte("rogue"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.IMA.MeasureSigned("/usr/local/bin/rogue", []byte("rogue"), sig); err != nil {
		t.Fatal(err)
	}
	st, err = s.WaitVerifier(a.UUID(), 10*time.Second, InState(api.StateInvalidQuote))
	if err != nil {
		t.Fatalf("file signed by an untrusted key not caught: %v", err)
	}
	found := false
	for _, f := range st.Failures {
		found = found || strings.Contains(string(f.Context), "/usr/local/bin/rogue")
	}
	if !found {
		t.Errorf("no failure names /usr/local/bin/rogue: %v", st.Failures)
	}
}

// A log edited after the fact no longer replays to the quoted PCR 10.
func TestIMATamperedLog(t *testing.T) {
	testbed.RequireSWTPM(t)
	cases := []struct {
		name   string
		tamper func(t *testing.T, lines []string) []string
	}{
		{"digest changed, template hash fixed", func(t *testing.T, lines []string) []string {
			// Swap /usr/bin/bash's digest for another one the policy also allows, with a consistent
			// template hash: only the PCR replay can tell.
			i := lineOf(t, lines, "/usr/bin/bash")
			lines[i] = rewriteDigest(t, lines[i], sha256.Sum256([]byte("bash v4")))
			return lines
		}},
		{"line removed", func(t *testing.T, lines []string) []string {
			i := lineOf(t, lines, "/usr/lib/libc.so.6")
			return append(lines[:i:i], lines[i+1:]...)
		}},
		{"lines reordered", func(t *testing.T, lines []string) []string {
			i, j := lineOf(t, lines, "/usr/bin/bash"), lineOf(t, lines, "/usr/lib/libc.so.6")
			lines[i], lines[j] = lines[j], lines[i]
			return lines
		}},
		{"line inserted without extend", func(t *testing.T, lines []string) []string {
			i := lineOf(t, lines, "/usr/lib/libc.so.6")
			e, err := ima.ParseLine([]byte(lines[i]))
			if err != nil {
				t.Fatal(err)
			}
			extra := strings.Replace(lines[i], string(e.Name), "/usr/lib/libc2.so", 1)
			extra = rewriteDigest(t, extra, sha256.Sum256([]byte("libc")))
			return append(lines[:i:i], append([]string{extra}, lines[i:]...)...)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSystem(t)
			s.StartVerifier(VerifierOptions{})
			a := startIMAAgent(t, s, baseFiles)
			pol := policyFromLog(t, a.Log, func(p *ima.RuntimePolicy) {
				d := sha256.Sum256([]byte("bash v4"))
				p.Digests["/usr/bin/bash"] = append(p.Digests["/usr/bin/bash"], hex.EncodeToString(d[:]))
				p.Digests["/usr/lib/libc2.so"] = p.Digests["/usr/lib/libc.so.6"]
			})
			raw, err := os.ReadFile(a.Log)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
			lines = tc.tamper(t, lines)
			if err := os.WriteFile(a.Log, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			addWithRuntimePolicy(t, s, a.UUID(), pol)
			st, err := s.WaitVerifier(a.UUID(), 15*time.Second, InState(api.StateInvalidQuote))
			if err != nil {
				t.Fatalf("tampered log not caught: %v", err)
			}
			if failureWith(st, ima.EventPCRMismatch) == nil {
				t.Errorf("failures %v, want %s", eventIDs(st), ima.EventPCRMismatch)
			}
			if st.AttestationCount != 0 {
				t.Errorf("attestation_count %d, want 0", st.AttestationCount)
			}
		})
	}
}

func lineOf(t *testing.T, lines []string, path string) int {
	t.Helper()
	for i, l := range lines {
		if strings.Contains(l, " "+path) {
			return i
		}
	}
	t.Fatalf("no line for %s", path)
	return -1
}

// rewriteDigest replaces an ima-ng line's digest and recomputes its template hash.
func rewriteDigest(t *testing.T, line string, d [32]byte) string {
	t.Helper()
	f := strings.Fields(line)
	f[3] = "sha256:" + hex.EncodeToString(d[:])
	e, err := ima.ParseLine([]byte(strings.Join(f, " ")))
	if err != nil {
		t.Fatal(err)
	}
	f[1] = hex.EncodeToString(e.ComputedTemplateHash())
	return strings.Join(f, " ")
}

// A restarted verifier continues from the stored entry index: it neither asks for nor re-checks
// entries it attested before (proved by editing an old entry, which a full re-check would catch).
func TestIMAVerifierRestartContinues(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	a := startIMAAgent(t, s, baseFiles)
	addWithRuntimePolicy(t, s, a.UUID(), policyFromLog(t, a.Log, nil))
	if _, err := s.WaitVerifier(a.UUID(), 15*time.Second, Attested(2)); err != nil {
		t.Fatal(err)
	}
	before, err := s.Verifier.Agent(t.Context(), a.UUID())
	if err != nil {
		t.Fatal(err)
	}
	s.StopVerifier()
	// Rewrite an already attested line: a verifier that started over would see a PCR mismatch.
	raw, err := os.ReadFile(a.Log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	i := lineOf(t, lines, "/usr/lib/libc.so.6")
	lines[i] = rewriteDigest(t, lines[i], sha256.Sum256([]byte("libc")))
	e, _ := ima.ParseLine([]byte(lines[i]))
	if orig, _ := ima.ParseLine([]byte(strings.Split(string(raw), "\n")[i])); bytes.Equal(orig.TemplateHash, e.TemplateHash) {
		// Same digest: make it differ in the name instead, which changes the template hash.
		lines[i] = strings.Replace(lines[i], "libc.so.6", "libc.so.7", 1)
		e, _ = ima.ParseLine([]byte(lines[i]))
		f := strings.Fields(lines[i])
		f[1] = hex.EncodeToString(e.ComputedTemplateHash())
		lines[i] = strings.Join(f, " ")
	}
	if err := os.WriteFile(a.Log, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.StartVerifier(VerifierOptions{})
	if _, err := a.IMA.Measure("/usr/bin/bash", []byte("bash v5")); err != nil {
		t.Fatal(err)
	}
	st, err := s.WaitVerifier(a.UUID(), 15*time.Second, Attested(before.AttestationCount+3))
	if err != nil {
		t.Fatalf("restarted verifier did not continue from the stored index: %v %v", err, eventIDs(st))
	}
}

// A rebooted machine (TPM reset, new IMA log) is attested again from entry 0, also when its new log
// is already longer than the entry the verifier asks for: the quote's TPM reset count tells.
func TestIMAReboot(t *testing.T) {
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{QuoteInterval: 100 * time.Millisecond})
	extra := func(i int) (string, [32]byte) {
		return "/opt/extra-" + strconv.Itoa(i), sha256.Sum256([]byte("extra " + strconv.Itoa(i)))
	}
	p := ima.EmptyRuntimePolicy()
	for _, f := range softagent.DefaultIMAFiles() {
		p.Digests[f.Path] = []string{hex.EncodeToString(f.Digest[:])}
	}
	for i := range 5 {
		path, d := extra(i)
		p.Digests[path] = []string{hex.EncodeToString(d[:])}
	}
	pol, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	sa := addSoftAgent(t, s, softagent.Config{IMA: &softagent.IMAConfig{Initial: 10}}, func(r *api.AddAgentRequest) {
		r.RuntimePolicy = base64.StdEncoding.EncodeToString(pol)
	})
	for i := range 2 { // entries 10 and 11 of the first boot
		path, d := extra(i)
		if err := sa.AddIMAEntry(path, d); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.WaitVerifier(sa.UUID(), 10*time.Second, Attested(3))
	if err != nil {
		t.Fatal(err)
	}
	if err := sa.Reboot(); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 5; i++ { // the new boot's entries 10-12 differ from the old boot's
		path, d := extra(i)
		if err := sa.AddIMAEntry(path, d); err != nil {
			t.Fatal(err)
		}
	}
	st, err = s.WaitVerifier(sa.UUID(), 10*time.Second, func(a *api.VerifierAgent) bool {
		return a.OperationalState != api.StateGetQuote || a.AttestationCount >= st.AttestationCount+3
	})
	if err != nil || st.OperationalState != api.StateGetQuote {
		t.Fatalf("rebooted agent not attested again: %v %v %q", err, eventIDs(st), st.LastFailure)
	}
	// And it goes on incrementally: an unknown file in the new boot is still caught.
	if err := sa.AddIMAEntry("/tmp/unknown", sha256.Sum256([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	st, err = s.WaitVerifier(sa.UUID(), 10*time.Second, InState(api.StateInvalidQuote))
	if err != nil || failureWith(st, ima.EventNotInPolicy) == nil {
		t.Fatalf("unknown file after reboot: %v %v", err, eventIDs(st))
	}
}
