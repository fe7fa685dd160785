package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keylime-go/keylime/policy/mb"
)

// refState reads a reference state as a generic JSON object, checking that the verifier's decoder
// takes it.
func refState(t *testing.T, path string) map[string]any {
	t.Helper()
	b := mustRead(t, path)
	if _, err := mb.ParseRefState(b); err != nil {
		t.Fatalf("%s is not a valid reference state: %v\n%s", path, err, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func writeJSON(t *testing.T, path string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, path, b)
}

func TestPolicyMeasuredBoot(t *testing.T) {
	dir := t.TempDir()
	ovmf := filepath.Join(mbTestdata, "vm-ovmf-ima-ng", "binary_bios_measurements")
	secureBoot := filepath.Join(mbTestdata, "keylime", "binary_bios_measurements-secureboot")

	// A log with Secure Boot off needs --without-secureboot, as in keylime-policy.
	run(t, nil, "policy", "create", "measured-boot", "--eventlog", ovmf).expect(t, 2, "without-secureboot")

	ovmfRef := filepath.Join(dir, "ovmf.json")
	r := run(t, nil, "policy", "create", "measured-boot", "--eventlog-file", ovmf, "-i", "-o", ovmfRef)
	r.expect(t, 0, "")
	if !strings.Contains(r.stderr, "note: ") {
		t.Errorf("no notes on what the reference state cannot express: %q", r.stderr)
	}
	ref := refState(t, ovmfRef)
	if ref["has_secureboot"] != false || len(ref["kernels"].([]any)) != 1 {
		t.Fatalf("reference state %v", ref)
	}

	// Evaluate: valid, and the replay reproduces what the TPM reported for every PCR the log extends.
	r = run(t, nil, "policy", "evaluate", "measured-boot", "--eventlog", ovmf, "--mb-policy", ovmfRef, "--json")
	r.expect(t, 0, "")
	ev := evalJSON(t, r)
	if !ev.Valid || len(ev.Failures) != 0 {
		t.Fatalf("own reference state rejected: %s", r.stdout)
	}
	captured := capturedPCRs(t, filepath.Join(mbTestdata, "vm-ovmf-ima-ng", "pcrs.txt"))
	// pcrs.txt holds the banks the TPM had (sha1, sha256, sha384); the log also carries sha512.
	want, got := map[string]map[string]string{}, map[string]map[string]string{}
	for bank := range captured {
		want[bank], got[bank] = map[string]string{}, ev.PCRs[bank]
		for _, pcr := range []string{"0", "1", "2", "3", "4", "5", "6", "7", "9"} {
			want[bank][pcr] = captured[bank][pcr]
		}
	}
	if len(want) != 3 || len(ev.PCRs) != 4 || len(ev.PCRs["sha512"]["0"]) != 128 {
		t.Fatalf("banks: captured %d, replayed %v", len(want), ev.PCRs)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("replayed PCRs (-pcrs.txt +replay):\n%s", d)
	}

	// Text output, and no policy: parse and replay only.
	r = run(t, nil, "policy", "evaluate", "measured-boot", "--eventlog", ovmf, "--mb-policy", ovmfRef)
	r.expect(t, 0, "")
	if !strings.Contains(r.stdout, captured["sha256"]["7"]) || !strings.Contains(r.stdout, "valid") {
		t.Errorf("text output %q", r.stdout)
	}
	r = run(t, nil, "policy", "evaluate", "measured-boot", "--eventlog", ovmf, "--json")
	r.expect(t, 0, "")
	if ev := evalJSON(t, r); !ev.Valid || ev.PCRs["sha256"]["4"] != captured["sha256"]["4"] {
		t.Fatalf("no-policy evaluation: %s", r.stdout)
	}

	// A Secure Boot log from Keylime's tests: its own reference state passes; a changed kernel
	// command line fails naming kernel_cmdline.
	sbRef := filepath.Join(dir, "sb.json")
	run(t, nil, "policy", "create", "measured-boot", "--eventlog", secureBoot, "-o", sbRef).expect(t, 0, "")
	sb := refState(t, sbRef)
	if sb["has_secureboot"] != true {
		t.Fatalf("Secure Boot log: %v", sb["has_secureboot"])
	}
	run(t, nil, "policy", "evaluate", "measured-boot", "--eventlog", secureBoot, "--mb-policy", sbRef).expect(t, 0, "")

	alter := func(name string, ref map[string]any, change func(kernel map[string]any)) string {
		t.Helper()
		var c map[string]any
		b, _ := json.Marshal(ref)
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		change(c["kernels"].([]any)[0].(map[string]any))
		return writeJSON(t, filepath.Join(dir, name), c)
	}
	flip := func(s any) string {
		h := s.(string)
		last := "0"
		if strings.HasSuffix(h, "0") {
			last = "1"
		}
		return h[:len(h)-1] + last
	}
	for _, tc := range []struct {
		name, log, refFile, want string
	}{
		{"kernel cmdline", secureBoot, alter("cmdline.json", sb, func(k map[string]any) { k["kernel_cmdline"] = "root=/dev/evil" }), "kernel_cmdline"},
		{"kernel digest", secureBoot, alter("kernel.json", sb, func(k map[string]any) { k["kernel_authcode_sha256"] = flip(k["kernel_authcode_sha256"]) }), "kernel"},
		{"shim digest", secureBoot, alter("shim.json", sb, func(k map[string]any) { k["shim_authcode_sha256"] = flip(k["shim_authcode_sha256"]) }), "shim"},
		{"initrd digest", ovmf, alter("initrd.json", ref, func(k map[string]any) { k["initrd_plain_sha256"] = flip(k["initrd_plain_sha256"]) }), "initrd"},
		{"another log", ovmf, sbRef, "Boot attestation failed"},
	} {
		t.Run("altered "+tc.name, func(t *testing.T) {
			r := run(t, nil, "policy", "evaluate", "measured-boot", "--eventlog", tc.log, "--mb-policy", tc.refFile, "--json")
			r.expect(t, 1, tc.want)
			ev := evalJSON(t, r)
			if ev.Valid || len(ev.Failures) == 0 {
				t.Fatalf("altered reference state accepted: %s", r.stdout)
			}
			found := false
			for _, f := range ev.Failures {
				if strings.HasPrefix(f.EventID, "measured_boot.policy_example") && strings.Contains(fmt.Sprint(f.Context), tc.want) {
					found = true
				}
			}
			if !found {
				t.Fatalf("no failure names %q: %s", tc.want, r.stdout)
			}
			r = run(t, nil, "policy", "evaluate", "measured-boot", "--eventlog", tc.log, "--mb-policy", tc.refFile)
			r.expect(t, 1, tc.want)
			if !strings.Contains(r.stdout, "invalid") || !strings.Contains(r.stdout, tc.want) {
				t.Errorf("text output does not name the failure: %q", r.stdout)
			}
		})
	}

	// accept-all passes the altered state; reject-all rejects the good one.
	run(t, nil, "policy", "evaluate", "measured-boot", "--eventlog", secureBoot, "--mb-policy", filepath.Join(dir, "cmdline.json"), "--policy-name", "accept-all").expect(t, 0, "")
	run(t, nil, "policy", "evaluate", "measured-boot", "--eventlog", secureBoot, "--mb-policy", sbRef, "--policy-name", "reject-all").expect(t, 1, "reject")

	// Odd input: a clear reason and exit 2, never a crash.
	raw := mustRead(t, ovmf)
	garbage := writeFile(t, filepath.Join(dir, "garbage"), []byte("\x00\x01\x02 not an event log \xff\xfe"))
	truncated := writeFile(t, filepath.Join(dir, "truncated"), raw[:len(raw)/2+3])
	empty := writeFile(t, filepath.Join(dir, "empty"), nil)
	text := writeFile(t, filepath.Join(dir, "text"), mustRead(t, imaFixture("vm-ovmf-ima-ng")))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"garbage log", []string{"--eventlog", garbage}, "invalid boot event log"},
		{"truncated log", []string{"--eventlog", truncated}, "invalid boot event log"},
		{"empty log", []string{"--eventlog", empty}, "invalid boot event log"},
		{"IMA log given as the event log", []string{"--eventlog", text}, "invalid boot event log"},
		{"keylime's bogus log", []string{"--eventlog", filepath.Join(mbTestdata, "keylime", "binary_bios_measurements-bogus")}, "invalid boot event log"},
		{"missing log", []string{"--eventlog", filepath.Join(dir, "nope")}, "no such file"},
		{"no log", nil, "--eventlog"},
	} {
		for _, cmd := range [][]string{{"create", "measured-boot", "-i"}, {"evaluate", "measured-boot", "--json"}} {
			t.Run(cmd[0]+" "+tc.name, func(t *testing.T) {
				r := run(t, nil, append(append([]string{"policy"}, cmd...), tc.args...)...)
				r.expect(t, 2, tc.want)
				if r.stdout != "" {
					t.Errorf("output on unusable input: %q", r.stdout)
				}
			})
		}
	}
	badRef := writeFile(t, filepath.Join(dir, "badref.json"), []byte(`{"kernels": "nope"}`))
	run(t, nil, "policy", "evaluate", "measured-boot", "--eventlog", ovmf, "--mb-policy", badRef).expect(t, 2, "--mb-policy")
	run(t, nil, "policy", "evaluate", "measured-boot", "--eventlog", ovmf, "--policy-name", "nope").expect(t, 2, "--policy-name")
	if _, err := os.Stat(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("a missing log was created")
	}
}
