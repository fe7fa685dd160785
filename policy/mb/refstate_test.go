package mb

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const (
	d256  = "0x" + "ab" + "00000000000000000000000000000000000000000000000000000000000000"
	owner = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
)

// refJSON builds a valid reference state with one field replaced (or removed, with value nil).
func refJSON(t *testing.T, path string, value any) []byte {
	t.Helper()
	ref := map[string]any{
		"has_secureboot": true,
		"scrtm_and_bios": []any{map[string]any{"scrtm": map[string]any{"sha256": d256}, "platform_firmware": []any{map[string]any{"sha256": d256}}}},
		"pk":             []any{map[string]any{"SignatureOwner": owner, "SignatureData": "0x3082"}},
		"kek":            []any{}, "db": []any{}, "dbx": []any{}, "mokdig": []any{}, "mokxdig": []any{},
		"kernels": []any{map[string]any{"shim_authcode_sha256": d256, "grub_authcode_sha256": d256, "kernel_authcode_sha256": d256,
			"initrd_plain_sha256": d256, "kernel_cmdline": `root=/dev/sda1 ro`}},
	}
	if path != "" {
		parts := strings.Split(path, ".")
		var cur any = ref
		for _, p := range parts[:len(parts)-1] {
			switch c := cur.(type) {
			case map[string]any:
				cur = c[p]
			case []any:
				cur = c[0]
			}
			if l, ok := cur.([]any); ok {
				cur = l[0]
			}
		}
		m := cur.(map[string]any)
		if value == nil {
			delete(m, parts[len(parts)-1])
		} else {
			m[parts[len(parts)-1]] = value
		}
	}
	b, err := json.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRefState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		path  string
		value any
		want  string // error substring; "" = valid
	}{
		{"valid", "", nil, ""},
		{"no has_secureboot defaults to true", "has_secureboot", nil, ""},
		{"vendor_db optional", "vendor_db", nil, ""},
		{"kernel fields optional", "kernels.shim_authcode_sha256", nil, ""},
		{"scrtm optional", "scrtm_and_bios.scrtm", nil, ""},
		{"missing kernels", "kernels", nil, "kernels: missing"},
		{"missing dbx", "dbx", nil, "dbx: missing"},
		{"missing scrtm_and_bios", "scrtm_and_bios", nil, "scrtm_and_bios: missing"},
		{"kernels not a list", "kernels", "x", "kernels: want a list"},
		{"has_secureboot string", "has_secureboot", "yes", "has_secureboot: want true or false"},
		{"upper-case hex", "kernels.initrd_plain_sha256", strings.ToUpper(d256), "kernels[0].initrd_plain_sha256"},
		{"no 0x", "kernels.initrd_plain_sha256", d256[2:], "not 0x followed by lower-case hex"},
		{"short digest", "kernels.grub_authcode_sha256", "0xabcd", "4 hex digits, a sha256 digest has 64"},
		{"odd hex", "kernels.grub_authcode_sha256", "0xabc", "not 0x followed"},
		{"digest not a string", "kernels.grub_authcode_sha256", 5, "want a \"0x…\" string"},
		{"unknown digest algorithm", "scrtm_and_bios.scrtm", map[string]any{"md5": "0x00"}, `unknown digest algorithm "md5"`},
		{"empty digest", "scrtm_and_bios.scrtm", map[string]any{}, "names no algorithm"},
		{"sha1 digest wrong size", "scrtm_and_bios.scrtm", map[string]any{"sha1": d256}, "a sha1 digest has 40"},
		{"platform_firmware missing", "scrtm_and_bios.platform_firmware", nil, "platform_firmware: missing"},
		{"bad owner", "pk.SignatureOwner", "nope", `"nope" is not a GUID`},
		{"bad signature data", "pk.SignatureData", "3082", "pk[0].SignatureData"},
		{"cmdline not string", "kernels.kernel_cmdline", 3, "want a regular expression string"},
		{"lookahead", "kernels.kernel_cmdline", `ro(?=\s)`, "RE2"},
		{"backreference", "kernels.kernel_cmdline", `(a)\1`, "RE2"},
		{"python end anchor", "kernels.kernel_cmdline", `ro\Z`, "RE2"},
		{"python {,n}", "kernels.kernel_cmdline", `a{,3}`, "{,n}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRefState(refJSON(t, tc.path, tc.value))
			if tc.want == "" {
				if err != nil || r.Empty() {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if !errors.Is(err, ErrBadRefState) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	for _, empty := range []string{"", "  ", "{}"} {
		if r, err := ParseRefState([]byte(empty)); err != nil || !r.Empty() {
			t.Errorf("%q: %v %v", empty, r, err)
		}
	}
	for _, bad := range []string{"null", "[]", "{", `"x"`} {
		if _, err := ParseRefState([]byte(bad)); !errors.Is(err, ErrBadRefState) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestKeylimeExampleRefState parses Keylime's own sample reference state and writes it back
// unchanged in meaning.
func TestKeylimeExampleRefState(t *testing.T) {
	raw := readFile(t, "testdata/keylime/example_reference_state.json")
	r, err := ParseRefState(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !r.HasSecureBoot || len(r.Kernels) != 1 || len(r.KEK) != 2 || len(r.DBX) != 1 || r.Kernels[0].Cmdline == nil {
		t.Fatalf("decoded %+v", r)
	}
	assertRoundTrip(t, r)
	var orig, back map[string]any
	out, _ := json.Marshal(r)
	_ = json.Unmarshal(raw, &orig)
	_ = json.Unmarshal(out, &back)
	orig["has_secureboot"], orig["vendor_db"] = true, []any{} // defaults made explicit
	if d := cmp.Diff(orig, back); d != "" {
		t.Errorf("round trip changes the sample (-orig +ours):\n%s", d)
	}
}

func assertRoundTrip(t *testing.T, r *RefState) {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseRefState(b)
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, b)
	}
	if d := cmp.Diff(r, back, cmp.AllowUnexported(RefState{}, KernelRef{}), cmpopts.EquateEmpty(), cmp.Comparer(func(a, b *regexp.Regexp) bool {
		return (a == nil) == (b == nil) && (a == nil || a.String() == b.String())
	})); d != "" {
		t.Errorf("round trip (-first +second):\n%s", d)
	}
}

// TestPythonEscape pins re.escape's output with keylime-policy's own test vector, and checks that the
// escaped text matches itself under RE2.
func TestPythonEscape(t *testing.T) {
	in := "(hd0,gpt2)/vmlinuz-5.14.0-347.el9.x86_64 root=UUID=f0e4ae11-6b98-42f9-ab3b-3b962e8b4253 ro resume=UUID=ba40b3f3-e38d-42f7-8f81-4394e84f41a6 console=ttyS0,115200 ima_appraise=fix ima_canonical_fmt ima_policy=tcb ima_template=ima-ng"
	want := `\(hd0,gpt2\)/vmlinuz\-5\.14\.0\-347\.el9\.x86_64\ root=UUID=f0e4ae11\-6b98\-42f9\-ab3b\-3b962e8b4253\ ro\ resume=UUID=ba40b3f3\-e38d\-42f7\-8f81\-4394e84f41a6\ console=ttyS0,115200\ ima_appraise=fix\ ima_canonical_fmt\ ima_policy=tcb\ ima_template=ima\-ng`
	if got := PythonEscape(in); got != want {
		t.Fatalf("PythonEscape:\n got %s\nwant %s", got, want)
	}
	for _, s := range []string{in, "a.b*c+d?e[f]{g}(h)|i^j$k\\l&m~n#o p\tq\nr\x0bs\x0ct", "ünïcode ✓"} {
		re, err := compileCmdline(PythonEscape(s))
		if err != nil || !re.MatchString(cmdlinePrefix+s) || re.MatchString(cmdlinePrefix+s+"x") {
			t.Errorf("%q: escaped pattern does not match exactly itself (%v)", s, err)
		}
	}
	// Keylime fullmatches "kernel_cmdline: " + pattern: an alternation binds loosely, as in Python.
	re, _ := compileCmdline("a|b")
	if !re.MatchString("kernel_cmdline: a") || !re.MatchString("b") || re.MatchString("kernel_cmdline: b") {
		t.Error("alternation semantics differ from Python's fullmatch")
	}
}
