package ima

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const validPolicy = `{"meta": {"version": 1, "generator": 3, "timestamp": "2024-09-12 13:44:44.797331"}, "release": 0,
 "digests": {"/usr/bin/bash": ["35f6036dcbb4d819a90cc3282659754ab1a225e60f593a209c27b80174ba3180"]},
 "excludes": ["/var/log/.*"], "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
 "ima-buf": {}, "verification-keys": ""}`

// mutate replaces a top-level key of validPolicy (or deletes it when value is "").
func mutate(t *testing.T, key, value string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(validPolicy), &m); err != nil {
		t.Fatal(err)
	}
	if value == "" {
		delete(m, key)
	} else {
		m[key] = json.RawMessage(value)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDecodeRuntimePolicy(t *testing.T) {
	p, err := DecodeRuntimePolicy([]byte(validPolicy))
	if err != nil {
		t.Fatal(err)
	}
	if p.Meta.Generator != 3 || p.Digests["/usr/bin/bash"][0][:8] != "35f6036d" || p.IMA.LogHashAlg != "sha1" || p.Excludes[0] != "/var/log/.*" {
		t.Fatalf("%+v", p)
	}
	// Keylime's own samples decode.
	for _, f := range []string{"policy-sha256", "runtime-policy.json"} {
		if _, err := DecodeRuntimePolicy(readFile(t, "testdata/keylime/"+f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	// Encoding and decoding again gives the same policy.
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := DecodeRuntimePolicy(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, p2); diff != "" {
		t.Fatal(diff)
	}
	// The empty policy is valid and rejects everything.
	eb, _ := json.Marshal(EmptyRuntimePolicy())
	if _, err := DecodeRuntimePolicy(eb); err != nil {
		t.Fatal(err)
	}
	if want := `{"meta":{"version":1,"generator":1},"release":0,"digests":{},"excludes":[],"keyrings":{},"ima":{"ignored_keyrings":[],"log_hash_alg":"sha1","dm_policy":null},"ima-buf":{},"verification-keys":""}`; string(eb) != want {
		t.Fatalf("empty policy %s", eb)
	}
}

func TestDecodeRuntimePolicyErrors(t *testing.T) {
	for _, c := range []struct{ name, doc string }{
		{"not JSON", "{"},
		{"array", "[]"},
		{"envelope", `{"payload": "e30=", "payloadType": "application/vnd.keylime+json", "signatures": []}`},
		{"missing meta", mutate(t, "meta", "")},
		{"missing verification-keys", mutate(t, "verification-keys", "")},
		{"meta without generator", mutate(t, "meta", `{"version": 1}`)},
		{"meta version negative", mutate(t, "meta", `{"version": -1, "generator": 1}`)},
		{"meta version not integer", mutate(t, "meta", `{"version": 1.5, "generator": 1}`)},
		{"meta generator 4", mutate(t, "meta", `{"version": 1, "generator": 4}`)},
		{"meta timestamp number", mutate(t, "meta", `{"version": 1, "generator": 1, "timestamp": 5}`)},
		{"release negative", mutate(t, "release", "-1")},
		{"release string", mutate(t, "release", `"0"`)},
		{"digests array", mutate(t, "digests", "[]")},
		{"digests empty list", mutate(t, "digests", `{"/a": []}`)},
		{"digest upper case", mutate(t, "digests", `{"/a": ["35F6036DCBB4D819A90CC3282659754AB1A225E6"]}`)},
		{"digest md5 length", mutate(t, "digests", `{"/a": ["d41d8cd98f00b204e9800998ecf8427e"]}`)},
		{"digest with algorithm", mutate(t, "digests", `{"/a": ["sha1:35f6036dcbb4d819a90cc3282659754ab1a225e6"]}`)},
		{"keyrings not lists", mutate(t, "keyrings", `{".ima": "35f6036dcbb4d819a90cc3282659754ab1a225e6"}`)},
		{"ima-buf null", mutate(t, "ima-buf", "null")},
		{"excludes not strings", mutate(t, "excludes", "[1]")},
		{"ima missing dm_policy", mutate(t, "ima", `{"ignored_keyrings": [], "log_hash_alg": "sha1"}`)},
		{"ima log_hash_alg md5", mutate(t, "ima", `{"ignored_keyrings": [], "log_hash_alg": "md5", "dm_policy": null}`)},
		{"ima dm_policy object", mutate(t, "ima", `{"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": {"version": 1}}`)},
		{"ima ignored_keyrings string", mutate(t, "ima", `{"ignored_keyrings": "*", "log_hash_alg": "sha1", "dm_policy": null}`)},
		{"verification-keys not a string", mutate(t, "verification-keys", `{"keyids": [], "pubkeys": []}`)},
		{"verification-keys not JSON", mutate(t, "verification-keys", `"nope"`)},
		{"verification-keys without keyids", mutate(t, "verification-keys", `"{\"pubkeys\": []}"`)},
		{"verification-keys doubly encoded", mutate(t, "verification-keys", `"\"{\\\"keyids\\\": [], \\\"pubkeys\\\": []}\""`)},
		{"verification-keys bad base64", mutate(t, "verification-keys", `"{\"keyids\": [], \"pubkeys\": [\"!!\"]}"`)},
		{"verification-keys not a key", mutate(t, "verification-keys", `"{\"keyids\": [], \"pubkeys\": [\"AAAA\"]}"`)},
		{"verification-keys meta version 0", mutate(t, "verification-keys", `"{\"meta\": {\"version\": 0}, \"keyids\": [], \"pubkeys\": []}"`)},
		{"verification-keys keyid too big", mutate(t, "verification-keys", `"{\"keyids\": [4294967296], \"pubkeys\": []}"`)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := DecodeRuntimePolicy([]byte(c.doc)); !errors.Is(err, ErrBadPolicy) {
				t.Fatalf("err = %v, want ErrBadPolicy", err)
			}
		})
	}
	// Unknown top-level keys are accepted, as Keylime's schema does.
	if _, err := DecodeRuntimePolicy([]byte(mutate(t, "x-extra", `{"anything": 1}`))); err != nil {
		t.Fatal(err)
	}
}

func TestCompile(t *testing.T) {
	p, err := DecodeRuntimePolicy([]byte(mutate(t, "verification-keys", mustJSON(t, keylimeKeyringString))))
	if err != nil {
		t.Fatal(err)
	}
	p.Digests["/odd"] = []string{strings.Repeat("a", 41)}
	c, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Keys().Len() != 1 || c.Keys().Keys()[0].ID != 4081397027 {
		t.Fatalf("keys %v", c.Keys().Keys())
	}
	if w := c.Warnings(); len(w) != 2 || !strings.Contains(w[0], "/odd") && !strings.Contains(w[1], "/odd") {
		t.Fatalf("warnings %q", w)
	}
	if !c.Allowed("/usr/bin/bash", mustHex(t, "35f6036dcbb4d819a90cc3282659754ab1a225e60f593a209c27b80174ba3180")) || c.Allowed("/usr/bin/bash", make([]byte, 32)) || c.NumDigests() != 1 {
		t.Fatal("lookup")
	}
	if !c.Excluded([]byte("/var/log/x")) || c.Excluded([]byte("/x/var/log/")) {
		t.Fatal("excludes")
	}
	p.Excludes = []string{"/ok", "(?<=x)y"}
	if _, err := Compile(p); !errors.Is(err, ErrBadPolicy) || !errors.Is(err, ErrBadExclude) || !strings.Contains(err.Error(), "(?<=x)y") {
		t.Fatalf("err = %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseAllowlist(t *testing.T) {
	flat := "sha256:4309217E9709DEF327C3409407F4D52907AEBA46EF1B4F46529FD095F2EF9FB2  boot_aggregate\n\n" +
		"# a comment\n" +
		"856ce73f0736eba033eaa18d1c90efd4b38a4a4f  /boot/loader entries/a.conf\n" +
		"856ce73f0736eba033eaa18d1c90efd4b38a4a4f\t/boot/loader entries/a.conf\r\n" +
		"792852898b1eba91c9ca858595f1566ce56e0fe1  /boot/b.conf\n" +
		"a7d52aaa18c23d2d9bb2abb4308c0eeee67387a42259f4a6b1a42257065f3d5a  %keyring:.ima\n"
	p, err := ParseAllowlist([]byte(flat))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"boot_aggregate":              {"4309217e9709def327c3409407f4d52907aeba46ef1b4f46529fd095f2ef9fb2"},
		"/boot/loader_entries/a.conf": {"856ce73f0736eba033eaa18d1c90efd4b38a4a4f"},
		"/boot/b.conf":                {"792852898b1eba91c9ca858595f1566ce56e0fe1"},
	}
	if diff := cmp.Diff(want, p.Digests); diff != "" {
		t.Fatal(diff)
	}
	if diff := cmp.Diff(map[string][]string{".ima": {"a7d52aaa18c23d2d9bb2abb4308c0eeee67387a42259f4a6b1a42257065f3d5a"}}, p.Keyrings); diff != "" {
		t.Fatal(diff)
	}
	if p.Meta.Generator != GeneratorLegacyAllowList || p.Meta.Version != 1 {
		t.Fatalf("meta %+v", p.Meta)
	}
	// Back to an allowlist and again to a policy: the same policy.
	written, skipped := p.Allowlist()
	if skipped != nil {
		t.Fatalf("left out of the allowlist: %q", skipped)
	}
	back, err := ParseAllowlist(written)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, back); diff != "" {
		t.Fatal(diff)
	}
	if first := strings.SplitN(string(written), "\n", 2)[0]; !strings.HasSuffix(first, "  boot_aggregate") {
		t.Fatalf("first line %q", first)
	}
	// Keylime's own short allowlist converts (its sha256: prefix is dropped) and validates.
	p, err = ParseAllowlist(readFile(t, "testdata/keylime/ima-allowlist-short.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Digests) != 21 || p.Digests["/boot/grub2/i386-pc/testload.mod"][0] != "68e1d012e3f193dcde955e6ffbbc80e22b0f8778" {
		t.Fatalf("%d digests", len(p.Digests))
	}
	if _, err := DecodeRuntimePolicy([]byte(mustJSON(t, p))); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ name, doc string }{
		{"no path", "856ce73f0736eba033eaa18d1c90efd4b38a4a4f\n"},
		{"short digest", "856ce73f  /a\n"},
		{"not hex", strings.Repeat("x", 40) + "  /a\n"},
		{"runtime policy", validPolicy},
		{"JSON without hashes", `{"meta": {"version": 1}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ParseAllowlist([]byte(c.doc)); !errors.Is(err, ErrBadPolicy) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestConvertPolicy(t *testing.T) {
	jsonAllowlist := `{"meta": {"version": 2}, "release": 1, "hashes": {"/usr/bin/a": ["35f6036dcbb4d819a90cc3282659754ab1a225e6"]},
		"keyrings": {".ima": ["35f6036dcbb4d819a90cc3282659754ab1a225e6"]}, "ima": {"ignored_keyrings": ["*"]}}`
	oldPolicy := `{"meta": {"version": 0}, "digests": {"/usr/bin/a": ["35f6036dcbb4d819a90cc3282659754ab1a225e6"]}, "excludes": ["/tmp/.*"]}`
	for _, c := range []struct {
		name, doc string
		check     func(*RuntimePolicy) bool
	}{
		{"current policy", validPolicy, func(p *RuntimePolicy) bool { return p.Meta.Generator == 3 && len(p.Excludes) == 1 }},
		{"JSON allowlist", jsonAllowlist, func(p *RuntimePolicy) bool {
			return p.Meta.Generator == GeneratorLegacyAllowList && p.Release == 1 && len(p.Keyrings[".ima"]) == 1 &&
				p.IMA.IgnoredKeyrings[0] == "*" && p.IMA.LogHashAlg == "sha1"
		}},
		{"old policy", oldPolicy, func(p *RuntimePolicy) bool {
			return p.Meta.Generator == GeneratorCompatibleAllowList && p.Meta.Version == 1 && p.Excludes[0] == "/tmp/.*" && len(p.Digests) == 1
		}},
		{"flat allowlist", "35f6036dcbb4d819a90cc3282659754ab1a225e6  /usr/bin/a\n", func(p *RuntimePolicy) bool { return len(p.Digests) == 1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := ConvertPolicy([]byte(c.doc))
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(p) {
				t.Fatalf("%+v", p)
			}
		})
	}
	if _, err := ConvertPolicy([]byte(`"a string"`)); !errors.Is(err, ErrBadPolicy) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseExcludeList(t *testing.T) {
	got, err := ParseExcludeList([]byte("# comment\n/var/log/.*\n\n  /tmp/  \nboot_aggregate\n"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/var/log/.*", "/tmp/", "boot_aggregate"}, got); diff != "" {
		t.Fatal(diff)
	}
	p := policyWith(nil)
	p.Excludes = got
	if back, err := ParseExcludeList(p.ExcludeList()); err != nil || !cmp.Equal(back, got) {
		t.Fatalf("%v %v", back, err)
	}
	if _, err := ParseExcludeList([]byte("/ok\n(?!x)\n")); !errors.Is(err, ErrBadExclude) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v", err)
	}
}

// TestAllowlistLeavesOutUnwritableNames: spaces are written as '_' (as IMA logs them); names the
// flat form cannot carry are left out and reported instead of written as lines that read back wrong.
func TestAllowlistLeavesOutUnwritableNames(t *testing.T) {
	const d1, d2, d3, d4 = "1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222",
		"3333333333333333333333333333333333333333", "4444444444444444444444444444444444444444"
	p, err := ParseAllowlist([]byte(`{"hashes": {"/ok": ["` + d1 + `"], "/a b": ["` + d2 + `"], "": ["` + d3 +
		`"], "/x\ty": ["` + d4 + `"], "%keyring:.ima": ["` + d4 + `"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	written, skipped := p.Allowlist()
	if want := []string{"", "%keyring:.ima", "/x\ty"}; !slices.Equal(skipped, want) {
		t.Errorf("skipped %q, want %q", skipped, want)
	}
	back, err := ParseAllowlist(written)
	if err != nil {
		t.Fatalf("%v\n%s", err, written)
	}
	if diff := cmp.Diff(map[string][]string{"/ok": {d1}, "/a_b": {d2}}, back.Digests); diff != "" {
		t.Errorf("read back (-want +got):\n%s\nfrom\n%s", diff, written)
	}
}
