package mb

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/keylime-go/keylime/policy"
)

const (
	sbLog = "testdata/keylime/binary_bios_measurements-secureboot"
	vmLog = "testdata/vm-ovmf-ima-ng/binary_bios_measurements"
	klLog = "testdata/keylime/binary_bios_measurements"
)

// generated returns the parsed log and the reference state generated from it, after a JSON round trip.
func generated(t *testing.T, name string) (*Log, *RefState) {
	t.Helper()
	l := mustParse(t, readFile(t, name))
	ref, _, err := Generate(l, true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseRefState(b)
	if err != nil {
		t.Fatalf("generated reference state does not load: %v\n%s", err, b)
	}
	return l, back
}

// edited returns a copy of ref changed by fn, through JSON so the copy is independent.
func edited(t *testing.T, ref *RefState, fn func(m map[string]any)) *RefState {
	t.Helper()
	b, _ := json.Marshal(ref)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	b, _ = json.Marshal(m)
	r, err := ParseRefState(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func kernel0(m map[string]any) map[string]any { return m["kernels"].([]any)[0].(map[string]any) }

// mustFail checks that the failures include one whose rule and reason contain the given texts, and
// that every failure is a measured_boot.policy_example failure.
func mustFail(t *testing.T, fails []policy.Failure, rule, reason string) {
	t.Helper()
	for _, f := range fails {
		if f.EventID != "measured_boot.policy_example" {
			t.Errorf("unexpected event id %s", f.EventID)
		}
	}
	for _, f := range fails {
		r, _ := f.Context["reason"].(string)
		if f.Context["rule"] == rule && strings.Contains(r, reason) {
			return
		}
	}
	t.Fatalf("no failure with rule %q and reason %q in:\n%s", rule, reason, messages(fails))
}

func messages(fails []policy.Failure) string {
	var s []string
	for _, f := range fails {
		s = append(s, f.Message())
	}
	return strings.Join(s, "\n")
}

// TestGeneratedRefStatePasses generates a reference state from every fixture log and evaluates the
// log against it. Logs without sha256 digests cannot give one; CoreOS's grub reads a file the
// reference state cannot express, which the notes say.
func TestGeneratedRefStatePasses(t *testing.T) {
	for name, raw := range goodLogs(t) {
		t.Run(name, func(t *testing.T) {
			l := mustParse(t, raw)
			ref, notes, err := Generate(l, true)
			if !slices.Contains(l.Banks, tpm2.TPMAlgSHA256) {
				if !errors.Is(err, ErrCannotGenerate) || !strings.Contains(err.Error(), "no sha256") {
					t.Fatalf("sha1-only log: err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			assertRoundTrip(t, ref)
			fails := Evaluate(PolicyExample, ref, l)
			if strings.Contains(name, "coreos") {
				if len(fails) != 1 || !strings.Contains(fails[0].Context["reason"].(string), "/ignition.firstboot") ||
					!slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "/ignition.firstboot") }) {
					t.Fatalf("coreos: fails %s\nnotes %q", messages(fails), notes)
				}
				return
			}
			if len(fails) != 0 {
				t.Fatalf("the log fails its own reference state:\n%s\nnotes: %q", messages(fails), notes)
			}
			if slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "does not pass") }) {
				t.Errorf("notes say it does not pass: %q", notes)
			}
		})
	}
}

func TestGenerateNotesAndErrors(t *testing.T) {
	vm := mustParse(t, readFile(t, vmLog))
	if _, _, err := Generate(vm, false); !errors.Is(err, ErrCannotGenerate) || !strings.Contains(err.Error(), "without-secureboot") {
		t.Errorf("Secure Boot off without the flag: %v", err)
	}
	if _, _, err := Generate(nil, true); !errors.Is(err, ErrCannotGenerate) {
		t.Errorf("nil log: %v", err)
	}
	sb := mustParse(t, readFile(t, sbLog))
	ref, notes, err := Generate(sb, true)
	if err != nil || !ref.HasSecureBoot || !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "flag is ignored") }) {
		t.Errorf("Secure Boot on with the flag: %v %q", err, notes)
	}
	k := ref.Kernels[0]
	if k.ShimAuthcode == "" || k.GrubAuthcode == "" || k.KernelAuthcode == "" || k.VmlinuzPlain != "" || k.InitrdPlain == "" || k.Cmdline == nil || len(ref.DBX) != 371 || len(ref.VendorDB) != 1 {
		t.Errorf("secure boot kernel entry %+v, dbx %d, vendor_db %d", k, len(ref.DBX), len(ref.VendorDB))
	}
	ref, notes, _ = Generate(vm, true)
	k = ref.Kernels[0]
	if k.KernelAuthcode == "" || k.ShimAuthcode != "" || k.InitrdPlain == "" || k.LoadOptionsPlain == "" || k.Cmdline != nil {
		t.Errorf("direct boot kernel entry %+v", k)
	}
	if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "taken as the kernel") }) {
		t.Errorf("notes %q", notes)
	}
	kl := mustParse(t, readFile(t, klLog))
	ref, notes, _ = Generate(kl, true)
	if len(ref.SCRTMAndBIOS[0].FirmwareApps) != 1 || !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "firmware_apps") }) {
		t.Errorf("firmware apps %v, notes %q", ref.SCRTMAndBIOS[0].FirmwareApps, notes)
	}
}

// TestAlteredRefStateFails edits one part of a generated reference state at a time; each edit must
// fail with the rule that covers it.
func TestAlteredRefStateFails(t *testing.T) {
	other := "0x" + strings.Repeat("5a", 32)
	for _, tc := range []struct {
		name, log    string
		edit         func(m map[string]any)
		rule, reason string
	}{
		{"kernel", sbLog, func(m map[string]any) { kernel0(m)["kernel_authcode_sha256"] = other }, "kernels", "boot applications in PCR 4"},
		{"shim", sbLog, func(m map[string]any) { kernel0(m)["shim_authcode_sha256"] = other }, "kernels", "the entry allows [shim 5a5a"},
		{"grub missing", sbLog, func(m map[string]any) { delete(kernel0(m), "grub_authcode_sha256") }, "kernels", "boot applications in PCR 4"},
		{"cmdline", sbLog, func(m map[string]any) { kernel0(m)["kernel_cmdline"] = `.*\ init=/bin/sh` }, "kernels", "does not match kernel_cmdline"},
		{"cmdline missing", sbLog, func(m map[string]any) { delete(kernel0(m), "kernel_cmdline") }, "kernels", "has no kernel_cmdline"},
		{"initrd", sbLog, func(m map[string]any) { kernel0(m)["initrd_plain_sha256"] = other }, "kernels", "initrd has sha256"},
		{"vmlinuz pinned", sbLog, func(m map[string]any) { kernel0(m)["vmlinuz_plain_sha256"] = other }, "kernels", "vmlinuz has sha256"},
		{"dbx requires more", sbLog, func(m map[string]any) {
			m["dbx"] = append(m["dbx"].([]any), map[string]any{"SignatureOwner": owner, "SignatureData": other})
		}, "variable.dbx", "dbx lacks 1"},
		{"pk", sbLog, func(m map[string]any) {
			m["pk"].([]any)[0].(map[string]any)["SignatureData"] = "0x3082"
		}, "variable.PK", "a key the reference state does not allow"},
		{"db owner", sbLog, func(m map[string]any) {
			m["db"].([]any)[0].(map[string]any)["SignatureOwner"] = "00000000-0000-0000-0000-000000000000"
		}, "variable.db", "a key the reference state does not allow"},
		{"vendor_db", sbLog, func(m map[string]any) { m["vendor_db"] = []any{} }, "authority.vendor_db", "not in the reference state's vendor_db"},
		{"secure boot off", sbLog, func(m map[string]any) { m["has_secureboot"] = false }, "variable.SecureBoot", "SecureBoot is Yes, the reference state wants No"},
		{"mokdig", sbLog, func(m map[string]any) { m["mokdig"] = []any{map[string]any{"sha256": other}} }, "mokdig", "MokList digest"},
		{"mokxdig", sbLog, func(m map[string]any) { m["mokxdig"] = []any{} }, "mokxdig", "MokListX digest"},
		{"scrtm", sbLog, func(m map[string]any) {
			m["scrtm_and_bios"].([]any)[0].(map[string]any)["scrtm"] = map[string]any{"sha256": other}
		}, "scrtm_and_bios", "S-CRTM version"},
		{"firmware blob", sbLog, func(m map[string]any) {
			fw := m["scrtm_and_bios"].([]any)[0].(map[string]any)
			fw["platform_firmware"] = fw["platform_firmware"].([]any)[1:]
		}, "scrtm_and_bios", "platform firmware measurements in PCR 0"},
		{"no kernels", sbLog, func(m map[string]any) { m["kernels"] = []any{} }, "kernels", "lists no kernel"},
		{"firmware app", klLog, func(m map[string]any) {
			delete(m["scrtm_and_bios"].([]any)[0].(map[string]any), "firmware_apps")
		}, "scrtm_and_bios", "not in the entry's firmware_apps"},
		{"direct-boot kernel", vmLog, func(m map[string]any) { kernel0(m)["kernel_authcode_sha256"] = other }, "kernels", "boot applications in PCR 4"},
		{"direct-boot initrd", vmLog, func(m map[string]any) { kernel0(m)["initrd_plain_sha256"] = other }, "kernels", "initrd has sha256"},
		{"direct-boot load options", vmLog, func(m map[string]any) { kernel0(m)["load_options_plain_sha256"] = other }, "kernels", "LoadOptions (Linux EFI stub) has sha256"},
		{"direct-boot load options unpinned", vmLog, func(m map[string]any) { delete(kernel0(m), "load_options_plain_sha256") }, "kernels", "loads a LoadOptions"},
		{"direct-boot wants secure boot", vmLog, func(m map[string]any) { m["has_secureboot"] = true }, "variable.SecureBoot", "SecureBoot is No"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, ref := generated(t, tc.log)
			mustFail(t, Evaluate(PolicyExample, edited(t, ref, tc.edit), l), tc.rule, tc.reason)
		})
	}
}

// TestAlternativeKernels checks Keylime's "one of the kernel entries" semantics.
func TestAlternativeKernels(t *testing.T) {
	l, ref := generated(t, sbLog)
	two := edited(t, ref, func(m map[string]any) {
		bad := map[string]any{}
		for k, v := range kernel0(m) {
			bad[k] = v
		}
		bad["kernel_authcode_sha256"] = "0x" + strings.Repeat("00", 32)
		m["kernels"] = []any{bad, kernel0(m)}
	})
	if fails := Evaluate(PolicyExample, two, l); len(fails) != 0 {
		t.Fatalf("a matching second entry should pass: %s", messages(fails))
	}
	fails := Evaluate(PolicyExample, edited(t, two, func(m map[string]any) { m["kernels"] = m["kernels"].([]any)[:1] }), l)
	mustFail(t, fails, "kernels", "kernels[0]: boot applications")
	if rs, _ := fails[0].Context["kernels"].([]string); len(rs) != 1 {
		t.Errorf("per-entry reasons %v", fails[0].Context["kernels"])
	}
}

// TestRewrittenLogFails rewrites event data (and digests) in a copy of a log, as a compromised boot
// or a forged log would, and checks both the policy and the PCR comparison.
func TestRewrittenLogFails(t *testing.T) {
	sbRaw := readFile(t, sbLog)
	sb := mustParse(t, sbRaw)
	_, ref := generated(t, sbLog)
	cmd := findEvent(t, sb, 8, EvIPL, "kernel_cmdline")
	evilCmd := strings.TrimSuffix(cmd.Text(), " console=ttyS0") + " init=/bin/sh"
	sbVar := findEvent(t, sb, 7, EvEFIVariableDriverConfig, "SecureBoot")
	v, _ := sbVar.Variable()
	sbOff := variableData(v.GUID, v.Name, []byte{0})
	dbAuth := findEvent(t, sb, 7, EvEFIVariableAuthority, " db")
	dbVar, _ := dbAuth.Variable()
	dbAsVendor := variableData(dbVar.GUID, "vendor_db", dbVar.Data)
	dbxVar := findEvent(t, sb, 7, EvEFIVariableDriverConfig, " dbx")
	dbxv, _ := dbxVar.Variable()
	emptyDBX := variableData(dbxv.GUID, "dbx", nil)
	asDBT := variableData(dbxv.GUID, "dbt", dbxv.Data)
	app := sb.Events[slices.IndexFunc(sb.Events, func(e Event) bool { return e.Type == EvEFIBootServicesApp })]
	for _, tc := range []struct {
		name         string
		raw          []byte
		rule, reason string
		pcrUnchanged bool // a forged description that keeps the digests replays to the same PCRs
	}{
		{"kernel command line", rewrite(t, sbRaw, cmd.Num, []byte(evilCmd+"\x00"), []byte(evilCmd[len(cmdlinePrefix):])), "kernels", "does not match kernel_cmdline", false},
		{"command line text only", rewrite(t, sbRaw, cmd.Num, []byte(evilCmd+"\x00"), []byte(cmd.Text()[len(cmdlinePrefix):])), "kernel_cmdline", "digests are not the hash of the logged command line", true},
		{"secure boot off", rewrite(t, sbRaw, sbVar.Num, sbOff, sbOff), "variable.SecureBoot", "SecureBoot is No, the reference state wants Yes", false},
		{"secure boot text only", rewrite(t, sbRaw, sbVar.Num, sbOff, sbVar.Data), "variable.SecureBoot", "not the hash of the logged variable", true},
		{"dbx emptied", rewrite(t, sbRaw, dbxVar.Num, emptyDBX, emptyDBX), "variable.dbx", "dbx lacks 371", false},
		{"dbx renamed dbt", rewrite(t, sbRaw, dbxVar.Num, asDBT, asDBT), "variable.dbt", "not covered by the reference state", false},
		{"shim replaced", rewrite(t, sbRaw, app.Num, app.Data, []byte("evil shim")), "kernels", "boot applications in PCR 4", false},
		{"second vendor_db authority", rewrite(t, sbRaw, dbAuth.Num, dbAsVendor, dbAsVendor), "authority.vendor_db", "only one such event", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustParse(t, tc.raw)
			mustFail(t, Evaluate(PolicyExample, ref, l), tc.rule, tc.reason)
			quoted := sb.PCRs()[sha256Bank] // what the TPM of the original boot holds
			pcrFails := l.CheckPCRs(sha256Bank, quoted, policy.MeasuredBootPCRs)
			if tc.pcrUnchanged != (len(pcrFails) == 0) {
				t.Errorf("PCR comparison: %v", pcrFails)
			}
		})
	}
}

// TestKeylimeFragility pins the places where this package deliberately accepts what Keylime rejects.
func TestKeylimeFragility(t *testing.T) {
	kl := mustParse(t, readFile(t, klLog))
	_, ref := generated(t, klLog)
	if fails := Evaluate(PolicyExample, ref, kl); len(fails) != 0 {
		t.Fatalf("StartupLocality, PCR 1 variables, EV_POST_CODE and a firmware app should pass: %s", messages(fails))
	}
	// Events on PCRs the policy does not judge (option ROM log: PCRs 11-14 EV_EVENT_TAG/EV_COMPACT_HASH
	// and PCR 12, 13 separators) are not judged; a sha1-only reference state is built by hand.
	or := mustParse(t, readFile(t, "testdata/go-attestation/option_rom_eventlog"))
	ev := &exampleEval{ref: &RefState{Kernels: []KernelRef{{}}}, log: or, once: map[string]*Event{}}
	ev.run()
	for _, f := range ev.fails {
		if p, ok := f.Context["pcr"].(int); ok && (p > 9 && p != 14) {
			t.Errorf("judged an event of PCR %d: %s", p, f.Message())
		}
	}
	// Repeated shim authority (go-attestation's sb_cert log) is fine.
	sbc := mustParse(t, readFile(t, "testdata/go-attestation/sb_cert_eventlog"))
	_, ref = generated(t, "testdata/go-attestation/sb_cert_eventlog")
	if fails := Evaluate(PolicyExample, ref, sbc); len(fails) != 0 {
		t.Fatalf("repeated Shim authority: %s", messages(fails))
	}
	// A Keylime-generated reference state (owner GUIDs byte-swapped by tpm2-tools < 5.2) still matches.
	_, ref = generated(t, sbLog)
	swapped := edited(t, ref, func(m map[string]any) {
		for _, s := range m["pk"].([]any) {
			g, _ := ParseGUID(s.(map[string]any)["SignatureOwner"].(string))
			s.(map[string]any)["SignatureOwner"] = g.bytesOrder()
		}
	})
	if fails := Evaluate(PolicyExample, swapped, mustParse(t, readFile(t, sbLog))); len(fails) != 0 {
		t.Fatalf("byte-swapped owners: %s", messages(fails))
	}
}

func TestPolicies(t *testing.T) {
	l, ref := generated(t, vmLog)
	if f := Evaluate(PolicyAcceptAll, ref, l); f != nil {
		t.Errorf("accept-all: %v", f)
	}
	if f := Evaluate(PolicyRejectAll, ref, l); len(f) != 1 || f[0].EventID != "measured_boot.policy_reject-all" {
		t.Errorf("reject-all: %v", f)
	}
	if f := Evaluate("nope", ref, l); len(f) != 1 || f[0].EventID != "measured_boot.policy_nope" {
		t.Errorf("unknown: %v", f)
	}
	if f := Evaluate(PolicyRejectAll, &RefState{empty: true}, l); f != nil {
		t.Errorf("empty reference state: %v", f)
	}
	if p, _ := RelevantPCRs(PolicyExample); !slices.Equal(p, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}) {
		t.Errorf("example PCRs %v", p)
	}
	if p, _ := PCRsToCheck(PolicyExample); !slices.Equal(p, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}) {
		t.Errorf("example PCRs to check %v", p)
	}
	if p, _ := PCRsToCheck(PolicyAcceptAll); !slices.Equal(p, policy.MeasuredBootPCRs) {
		t.Errorf("accept-all PCRs to check %v", p)
	}
	if _, err := RelevantPCRs("x"); err == nil {
		t.Error("unknown policy name accepted")
	}
}

// TestCheck drives the verifier-level entry point with the captured log and the TPM's recorded PCRs.
func TestCheck(t *testing.T) {
	raw := readFile(t, vmLog)
	_, ref := generated(t, vmLog)
	rec := recordedPCRs(t, "testdata/vm-ovmf-ima-ng/pcrs.txt")[sha256Bank]
	quote := func(change map[int][]byte, drop ...int) Quote {
		q := Quote{Bank: sha256Bank, PCRs: map[int][]byte{}}
		for p, v := range rec {
			if !slices.Contains(drop, p) {
				q.PCRs[p] = v
			}
		}
		for p, v := range change {
			q.PCRs[p] = v
		}
		return q
	}
	for _, tc := range []struct {
		name     string
		ref      *RefState
		log      []byte
		q        Quote
		evaluate bool
		want     []string
	}{
		{"good", ref, raw, quote(nil), true, nil},
		{"empty refstate", &RefState{empty: true}, nil, quote(nil), true, nil},
		{"no log", ref, nil, quote(nil, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), true, []string{"pcr_validation.unused_pcr_0", "pcr_validation.unused_pcr_4"}},
		{"bad log", ref, raw[:100], quote(nil), true, []string{"measured_boot.parser.eventlog"}},
		{"PCR 4 differs", ref, raw, quote(map[int][]byte{4: make([]byte, 32)}), false, []string{"measured_boot.invalid_pcr_4"}},
		{"PCR 14 not quoted", ref, raw, quote(nil, 14), true, []string{"measured_boot.missing_pcrs"}},
		{"policy fails", edited(t, ref, func(m map[string]any) { m["has_secureboot"] = true }), raw, quote(nil), true,
			[]string{"measured_boot.policy_example"}},
		{"policy not evaluated", edited(t, ref, func(m map[string]any) { m["has_secureboot"] = true }), raw, quote(nil), false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			for _, f := range Check(PolicyExample, tc.ref, tc.log, tc.q, tc.evaluate) {
				ids = append(ids, f.EventID)
			}
			if !slices.Equal(ids, tc.want) {
				t.Fatalf("failures %v, want %v", ids, tc.want)
			}
		})
	}
}

// TestEvaluateOffline checks the JSON the CLI prints.
func TestEvaluateOffline(t *testing.T) {
	raw := readFile(t, vmLog)
	l, ref := generated(t, vmLog)
	good, _ := json.Marshal(ref)
	bad, _ := json.Marshal(edited(t, ref, func(m map[string]any) { kernel0(m)["initrd_plain_sha256"] = "0x" + strings.Repeat("00", 32) }))
	for _, tc := range []struct {
		name     string
		log, ref []byte
		valid    bool
		ids      []string
		wantPCRs bool
	}{
		{"log only", raw, nil, true, nil, true},
		{"passing refstate", raw, good, true, nil, true},
		{"failing refstate", raw, bad, false, []string{"measured_boot.policy_example"}, true},
		{"invalid refstate", raw, []byte(`{"kernels": 1}`), false, []string{"measured_boot.policy_example"}, true},
		{"garbage log", []byte("garbage!"), good, false, []string{"measured_boot.parser.eventlog"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := EvaluateOffline(tc.log, tc.ref, "")
			b, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var out struct {
				PCRs     map[string]map[string]string `json:"pcrs"`
				Valid    *bool                        `json:"valid"`
				Failures []struct {
					EventID string         `json:"event_id"`
					Context map[string]any `json:"context"`
				} `json:"failures"`
			}
			if err := json.Unmarshal(b, &out); err != nil || out.Valid == nil || out.Failures == nil || out.PCRs == nil {
				t.Fatalf("JSON %s: %v", b, err)
			}
			var ids []string
			for _, f := range out.Failures {
				ids = append(ids, f.EventID)
				if f.Context["message"] == nil {
					t.Errorf("failure without message: %s", b)
				}
			}
			if *out.Valid != tc.valid || !slices.Equal(ids, tc.ids) {
				t.Fatalf("valid %v failures %v, want %v %v", *out.Valid, ids, tc.valid, tc.ids)
			}
			if tc.wantPCRs {
				want := hex.EncodeToString(l.PCRs()[sha256Bank][4])
				if out.PCRs["sha256"]["4"] != want || len(out.PCRs) != 4 {
					t.Errorf("pcrs %v", out.PCRs["sha256"])
				}
			}
		})
	}
}

// TestFailureContext pins the shape of a policy failure's context.
func TestFailureContext(t *testing.T) {
	l, ref := generated(t, sbLog)
	fails := Evaluate(PolicyExample, edited(t, ref, func(m map[string]any) { m["mokdig"] = []any{} }), l)
	if len(fails) != 1 {
		t.Fatalf("%s", messages(fails))
	}
	c := fails[0].Context
	mok := findEvent(t, l, 14, EvIPL, "MokList")
	want := map[string]any{"message": "Boot attestation failed", "policy": "example", "event": mok.Num, "pcr": 14,
		"event_type": "EV_IPL", "rule": "mokdig", "event_data": `"MokList"`}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("context[%s] = %v, want %v", k, c[k], v)
		}
	}
	if r := c["reason"].(string); !strings.HasPrefix(r, fmt.Sprintf("event %d (PCR 14, EV_IPL): MokList digest sha256:", mok.Num)) {
		t.Errorf("reason %q", r)
	}
	if !fails[0].Recoverable || !bytes.Contains([]byte(fails[0].ContextJSON()), []byte(`"rule":"mokdig"`)) {
		t.Errorf("failure %+v", fails[0])
	}
}

// TestOddLogs checks an unknown event type and an extra boot application: evaluation names them and
// the generator explains what it could not express.
func TestOddLogs(t *testing.T) {
	raw := readFile(t, sbLog)
	l := mustParse(t, raw)
	_, ref := generated(t, sbLog)
	events := cloneEvents(l.Events)
	gpt := slices.IndexFunc(events, func(e Event) bool { return e.Type == EvEFIGPTEvent })
	events[gpt].Type = 0x1234
	mustFail(t, Evaluate(PolicyExample, ref, mustParse(t, encodeLog(t, raw, events))), "dispatch", "(5, 'EV_UNKNOWN_0x00001234')")

	// A fourth, different boot application (e.g. a MokManager or fwupd run) after the kernel.
	events = cloneEvents(l.Events)
	last := slices.IndexFunc(events, func(e Event) bool { return e.Num == 93 }) // the kernel
	extra := events[last]
	extra.Digests = []Digest{{Bank: sha256Bank, Value: hashOf(sha256Bank, []byte("fwupd"))}}
	events = slices.Insert(events, last+1, extra)
	odd := mustParse(t, encodeLog(t, raw, events))
	mustFail(t, Evaluate(PolicyExample, ref, odd), "kernels", "boot applications in PCR 4")
	g, notes, err := Generate(odd, false)
	if err != nil || g.Kernels[0].KernelAuthcode != ref.Kernels[0].KernelAuthcode {
		t.Fatalf("generate: %v", err)
	}
	for _, want := range []string{"beyond shim, grub and kernel", "does not pass this log"} {
		if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, want) }) {
			t.Errorf("no note with %q in %q", want, notes)
		}
	}
}
