package ima

import (
	"bytes"
	"crypto"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-cmp/cmp"
)

// fixtureLines are log lines from every fixture: hand-built templates, keylime's and the captures'.
func fixtureLines(f *testing.F) []string {
	t := &testing.T{}
	var lines []string
	for _, c := range templateCases(t) {
		lines = append(lines, c.line)
	}
	lines = append(lines, keylimeMeasurements...)
	lines = append(lines, keylimeSigRSA, keylimeSigEC, keylimeBadSig, keylimeKeyring)
	for _, d := range []string{"vm-ovmf-ima-ng", "vm-ovmf-ima-sig"} {
		raw, err := os.ReadFile(filepath.Join("testdata", d, "ascii_runtime_measurements"))
		if err != nil {
			f.Fatal(err)
		}
		lines = append(lines, strings.Split(strings.TrimSpace(string(raw)), "\n")...)
	}
	return lines
}

// FuzzParseLine parses arbitrary lines in both parser modes and judges them: nothing may panic, both
// modes agree, an accepted template hash is the hash of the rebuilt data, and Attest copes.
func FuzzParseLine(f *testing.F) {
	for _, l := range fixtureLines(f) {
		f.Add(l)
	}
	pol := MustCompile(keylimeTestPolicy())
	f.Fuzz(func(t *testing.T, line string) {
		e, err := ParseLine([]byte(line))
		p := NewParser(strings.NewReader(line), 0)
		e2, err2 := p.Next()
		if (err == nil) != (err2 == nil) && !strings.ContainsAny(line, "\n") {
			t.Fatalf("bytes mode %v, reader mode %v", err, err2)
		}
		if err == nil && !strings.Contains(line, "\n") {
			if e.TemplateHashOK && !bytes.Equal(hashOf(e.TemplateHashAlg, e.Data), e.TemplateHash) {
				t.Fatal("template hash accepted for other data")
			}
			if !bytes.Equal(e.Data, e2.Data) || e.Path() != e2.Path() {
				t.Fatal("modes disagree")
			}
			for _, h := range Banks {
				if v := e.ExtendValue(h, nil); len(v) != h.Size() {
					t.Fatalf("%v extend value of %d bytes", h, len(v))
				}
				if v := e.ExtendValueMode(h, ExtendPaddedSHA1, nil); len(v) != h.Size() {
					t.Fatalf("%v padded extend value of %d bytes", h, len(v))
				}
			}
		}
		res := Attest(State{}, Evidence{Log: []byte(line), Bank: crypto.SHA256, PCR10: make([]byte, 32)}, pol, Options{})
		if len(res.Failures) == 0 && res.Matched < 0 {
			t.Fatal("passed without a match")
		}
	})
}

// FuzzRuntimePolicy decodes arbitrary policies: nothing may panic, and an accepted policy encodes and
// decodes back to itself and compiles or fails with an error.
func FuzzRuntimePolicy(f *testing.F) {
	f.Add(validPolicy)
	for _, name := range []string{"policy-sha256", "runtime-policy.json", "runtime-policy-test.json", "runtime-policy-test-signed.json"} {
		raw, err := os.ReadFile(filepath.Join("testdata/keylime", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(raw))
	}
	eb, _ := json.Marshal(EmptyRuntimePolicy())
	f.Add(string(eb))
	f.Fuzz(func(t *testing.T, doc string) {
		_, _ = OpenRuntimePolicy([]byte(doc), nil, false)
		_, _ = ConvertPolicy([]byte(doc))
		p, err := DecodeRuntimePolicy([]byte(doc))
		if err != nil {
			return
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := DecodeRuntimePolicy(b)
		if err != nil {
			t.Fatalf("re-decode: %v\n%s", err, b)
		}
		if diff := cmp.Diff(p, p2); diff != "" {
			t.Fatal(diff)
		}
		if c, err := Compile(p); err == nil {
			_ = c.Excluded([]byte("/usr/bin/x"))
		}
	})
}

// FuzzAllowlist converts arbitrary allowlists and exclude lists: an accepted allowlist is a valid
// policy and writes back to an allowlist that converts to the same digests.
func FuzzAllowlist(f *testing.F) {
	for _, name := range []string{"ima-allowlist-short.txt", "allowlist-sha256"} {
		raw, err := os.ReadFile(filepath.Join("testdata/keylime", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(raw))
	}
	f.Add(`{"hashes": {"/a": ["35f6036dcbb4d819a90cc3282659754ab1a225e6"]}, "keyrings": {}}`)
	f.Add("/var/log/.*\n# comment\n(?i:/tmp)\n")
	f.Fuzz(func(t *testing.T, doc string) {
		_, _ = ParseExcludeList([]byte(doc))
		p, err := ParseAllowlist([]byte(doc))
		if err != nil {
			return
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRuntimePolicy(b); err != nil {
			t.Fatalf("converted policy invalid: %v\n%s", err, b)
		}
		flat, skipped := p.Allowlist()
		back, err := ParseAllowlist(flat)
		if err != nil {
			t.Fatalf("written allowlist: %v\n%s", err, flat)
		}
		// What was written reads back (spaces as '_', so names may merge); only names without a
		// flat form (empty, other whitespace, a digest path that looks like a keyring) are left out,
		// and each of them is reported.
		var left []string
		want := func(m map[string][]string, prefix string) map[string][]string {
			out := map[string][]string{}
			for n, ds := range m {
				if n == "" || strings.ContainsFunc(n, func(r rune) bool { return r != ' ' && unicode.IsSpace(r) }) ||
					(prefix == "" && strings.HasPrefix(n, keyringPrefix)) {
					left = append(left, prefix+n)
					continue
				}
				out[PolicyPath(n)] = append(out[PolicyPath(n)], ds...)
			}
			return digestSets(out)
		}
		if !cmp.Equal(want(p.Digests, ""), digestSets(back.Digests)) || !cmp.Equal(want(p.Keyrings, keyringPrefix), digestSets(back.Keyrings)) {
			t.Fatalf("round trip:\n%v\n%v\nskipped %q", p, back, skipped)
		}
		slices.Sort(left)
		if !slices.Equal(left, skipped) {
			t.Fatalf("left out %q, reported %q", left, skipped)
		}
	})
}

// digestSets sorts and dedupes every digest list of m (nil for an empty m), for comparing as sets.
func digestSets(m map[string][]string) map[string][]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string][]string, len(m))
	for n, ds := range m {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		out[n] = slices.Compact(ds)
	}
	return out
}
