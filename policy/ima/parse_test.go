package ima

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// templateCase is a log line with the template data it must rebuild (nil data: a violation).
type templateCase struct {
	name     string
	line     string
	data     []byte
	kind     Kind
	path     string
	digestAl string
}

// templateCases builds one line per template, each with its template data written by hand.
func templateCases(t *testing.T) []templateCase {
	t.Helper()
	var cases []templateCase
	add := func(c templateCase) { cases = append(cases, c) }

	line, data := ngLine("/usr/bin/bash", "bash")
	add(templateCase{"ima-ng sha256", line, data, KindFile, "/usr/bin/bash", "sha256"})

	// Keylime test/test_ima_ast.py, bytes from the research note.
	add(templateCase{"ima-ng sha1 (keylime)",
		"10 7936eb315fb4e74b99e7d461bc5c96049e1ee092 ima-ng sha1:bc026ae66d81713e4e852465e980784dc96651f8 /usr/lib/systemd/systemd",
		mustHex(t, "1a000000"+"736861313a00"+"bc026ae66d81713e4e852465e980784dc96651f8"+"19000000"+"2f7573722f6c69622f73797374656d642f73797374656d64"+"00"),
		KindFile, "/usr/lib/systemd/systemd", "sha1"})
	add(templateCase{"ima legacy (keylime)",
		"10 d7026dc672344d3ee372217bdbc7395947788671 ima 6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e /usr/bin/kmod",
		tdLegacy(mustHex(t, "6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e"), "/usr/bin/kmod"), KindFile, "/usr/bin/kmod", "sha1"})

	line, data = sigLine("/usr/bin/unsigned", fileDigest("u"), nil)
	add(templateCase{"ima-sig without signature", line, data, KindSignedFile, "/usr/bin/unsigned", "sha256"})
	line, data = sigLine("/usr/bin/signed", fileDigest("s"), []byte{3, 2, 4, 1, 2, 3, 4, 0, 2, 0xaa, 0xbb})
	add(templateCase{"ima-sig with signature", line, data, KindSignedFile, "/usr/bin/signed", "sha256"})
	line, data = sigLine("/usr/bin/broken", fileDigest("b"), []byte{3, 2, 4, 1, 2, 3, 4, 0x48, 0, 0xaa})
	add(templateCase{"ima-sig with malformed signature kept as logged", line, data, KindSignedFile, "/usr/bin/broken", "sha256"})

	line, data = bufLine("kexec-cmdline", []byte("root=/dev/vda1 ro quiet"))
	add(templateCase{"ima-buf", line, data, KindBuffer, "kexec-cmdline", "sha256"})

	// ima-modsig without an appended signature: sig, d-modsig and modsig empty (three spaces).
	d := fileDigest("m")
	var b bytes.Buffer
	tdDigest(&b, "sha256", d)
	tdName(&b, "/lib/modules/m.ko")
	tdBytes(&b, nil)
	tdBytes(&b, nil)
	tdBytes(&b, nil)
	add(templateCase{"ima-modsig empty", logLine(10, b.Bytes(), "ima-modsig", fmt.Sprintf("sha256:%x", d), "/lib/modules/m.ko", "", "", ""),
		bytes.Clone(b.Bytes()), KindSignedFile, "/lib/modules/m.ko", "sha256"})

	// ima-modsig with an appended signature.
	b.Reset()
	md := fileDigest("m without signature")
	tdDigest(&b, "sha256", d)
	tdName(&b, "/lib/modules/s.ko")
	tdBytes(&b, nil)
	tdDigest(&b, "sha256", md)
	tdBytes(&b, []byte("pkcs7"))
	add(templateCase{"ima-modsig", logLine(10, b.Bytes(), "ima-modsig", fmt.Sprintf("sha256:%x", d), "/lib/modules/s.ko", "", fmt.Sprintf("sha256:%x", md), "706b637337"),
		bytes.Clone(b.Bytes()), KindSignedFile, "/lib/modules/s.ko", "sha256"})

	// ima-ngv2: "<type>:<algo>:" prefix.
	b.Reset()
	tdDigest(&b, "ima:sha256", d)
	tdName(&b, "/usr/bin/v2")
	add(templateCase{"ima-ngv2", logLine(10, b.Bytes(), "ima-ngv2", fmt.Sprintf("ima:sha256:%x", d), "/usr/bin/v2"), bytes.Clone(b.Bytes()), KindFile, "/usr/bin/v2", "sha256"})

	// A custom template, logged as its field list.
	b.Reset()
	tdDigest(&b, "sha512", hashOf(crypto.SHA512, []byte("c")))
	tdName(&b, "/usr/bin/custom")
	tdBytes(&b, nil)
	add(templateCase{"custom d-ng|n-ng|sig", logLine(10, b.Bytes(), "d-ng|n-ng|sig", fmt.Sprintf("sha512:%x", hashOf(crypto.SHA512, []byte("c"))), "/usr/bin/custom", ""),
		bytes.Clone(b.Bytes()), KindSignedFile, "/usr/bin/custom", "sha512"})

	// A d-ng digest without "<algo>:", in the kernel's form (":\0") and in Keylime's ("sha1:\0").
	sha1d := hashOf(crypto.SHA1, []byte("bare"))
	b.Reset()
	tdDigest(&b, "", sha1d)
	tdName(&b, "/bare/kernel")
	add(templateCase{"bare digest, kernel form", logLine(10, b.Bytes(), "ima-ng", fmt.Sprintf("%x", sha1d), "/bare/kernel"), bytes.Clone(b.Bytes()), KindFile, "/bare/kernel", "sha1"})
	b.Reset()
	tdDigest(&b, "sha1", sha1d)
	tdName(&b, "/bare/keylime")
	add(templateCase{"bare digest, Keylime form", logLine(10, b.Bytes(), "ima-ng", fmt.Sprintf("%x", sha1d), "/bare/keylime"), bytes.Clone(b.Bytes()), KindFile, "/bare/keylime", "sha1"})

	// Violations: logged template hash all zeros (or all ff), digest zeros.
	zeros := make([]byte, 32)
	add(templateCase{"violation zeros", fmt.Sprintf("10 %s ima-ng sha256:%x /var/log/messages", strings.Repeat("0", 40), zeros), nil, KindFile, "/var/log/messages", "sha256"})
	add(templateCase{"violation ff", fmt.Sprintf("10 %s ima-ng sha256:%x /tmp/x", strings.Repeat("f", 40), zeros), nil, KindFile, "/tmp/x", "sha256"})
	return cases
}

func TestParseTemplates(t *testing.T) {
	for _, c := range templateCases(t) {
		t.Run(c.name, func(t *testing.T) {
			e, err := ParseLine([]byte(c.line))
			if err != nil {
				t.Fatal(err)
			}
			if c.data == nil {
				if !e.Violation || e.TemplateHashOK {
					t.Fatalf("violation %v, template hash ok %v", e.Violation, e.TemplateHashOK)
				}
			} else {
				if diff := cmp.Diff(c.data, e.Data); diff != "" {
					t.Fatalf("template data (-want +got):\n%s", diff)
				}
				if !e.TemplateHashOK || e.Violation {
					t.Fatalf("template hash ok %v, violation %v", e.TemplateHashOK, e.Violation)
				}
			}
			if e.Kind != c.kind || e.Path() != c.path || e.DigestAlg != c.digestAl || e.PCR != 10 {
				t.Fatalf("kind %d path %q alg %q pcr %d, want %d %q %q 10", e.Kind, e.Path(), e.DigestAlg, e.PCR, c.kind, c.path, c.digestAl)
			}
		})
	}
}

// TestReplayTemplates replays a log of every template in all four banks and compares with a replay
// computed by hand from the hand-built template data.
func TestReplayTemplates(t *testing.T) {
	cases := templateCases(t)
	var lines []string
	var datas [][]byte
	for _, c := range cases {
		lines = append(lines, c.line)
		datas = append(datas, c.data)
	}
	got, err := Replay(bytes.NewReader(join(lines...)))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range Banks {
		if want := replayByHand(h, datas); !bytes.Equal(got[h], want) {
			t.Errorf("%s: replay %x, by hand %x", BankName(h), got[h], want)
		}
	}
	// The SHA-1 and SHA-256 values the kernel would reach with these entries, pinned.
	sha1, sha256 := replayByHand(crypto.SHA1, datas), replayByHand(crypto.SHA256, datas)
	if len(sha1) != 20 || len(sha256) != 32 || bytes.Equal(sha1, sha256[:20]) {
		t.Fatalf("bank values %x %x", sha1, sha256)
	}
}

// TestKeylimeEntries parses keylime's test/test_ima_ast.py entries: the valid ones rebuild their
// logged template hash, the invalid ones are parse errors.
func TestKeylimeEntries(t *testing.T) {
	valid := map[string]string{
		"ima-sig-rsa":     keylimeSigRSA,
		"ima-sig-ec":      keylimeSigEC,
		"ima-sig-missing": "10 5426cf3031a43f5bfca183d79950698a95a728f6 ima-sig sha256:f1125b940480d20ad841d26d5ea253edc0704b5ec1548c891edf212cb1a9365e /lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko ",
		"ima-buf":         "10 b7862dbbf1383ac6c7cca7f02d981a081aacb1f1 ima-buf sha1:6e0e6fc8a188ef4f059638949adca4d221946906 device_resume 6e616d653d544553543b757569643d43525950542d5645524954592d39656633326535623635623034343234613561386562343436636630653731332d544553543b63617061636974793d303b6d616a6f723d3235333b6d696e6f723d303b6d696e6f725f636f756e743d313b6e756d5f746172676574733d313b6163746976655f7461626c655f686173683d346565383065333365353635643336333430356634303238393436653837623365396563306335383661666639656630656436663561653762656237326431333b",
		"ima":             "10 d7026dc672344d3ee372217bdbc7395947788671 ima 6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e /usr/bin/kmod",
		"ima-ng":          "10 7936eb315fb4e74b99e7d461bc5c96049e1ee092 ima-ng sha1:bc026ae66d81713e4e852465e980784dc96651f8 /usr/lib/systemd/systemd",
		"keyring":         keylimeKeyring,
	}
	for name, line := range valid {
		t.Run(name, func(t *testing.T) {
			e, err := ParseLine([]byte(line))
			if err != nil {
				t.Fatal(err)
			}
			if !e.TemplateHashOK {
				t.Fatalf("template hash %x, computed %x", e.TemplateHash, e.ComputedTemplateHash())
			}
		})
	}
	invalid := map[string]string{
		"invalid-mode":          "10 7936eb315fb4e74b99e7d461bc5c96049e1ee092 not-ima sha1:bc026ae66d81713e4e852465e980784dc96651f8 /usr/lib/systemd/systemd",
		"invalid-template-hash": "10 I936eb315fb4e74b99e7d461bc5c96049e1ee092 ima-ng sha1:bc026ae66d81713e4e852465e980784dc96651f8 /usr/lib/systemd/systemd",
		"invalid-digest":        "10 7936eb315fb4e74b99e7d461bc5c96049e1ee092 ima-ng sha1:Ic026ae66d81713e4e852465e980784dc96651f8 /usr/lib/systemd/systemd",
		"not-ima-string":        "this is text not an ima entry",
	}
	for name, line := range invalid {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseLine([]byte(line)); !errors.Is(err, ErrMalformedEntry) {
				t.Fatalf("err = %v, want ErrMalformedEntry", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	good, _ := ngLine("/ok", "ok")
	for _, tc := range []struct{ name, line string }{
		{"one token", "10"},
		{"pcr not a number", "x " + good[3:]},
		{"template hash odd length", "10 abc ima-ng sha256:00 /x"},
		{"template hash 33 hex digits", "10 " + strings.Repeat("a", 33) + " ima-ng sha256:00 /x"},
		{"no template", "10 " + strings.Repeat("a", 40)},
		{"unknown template", "10 " + strings.Repeat("a", 40) + " evm-sig sha256:00 /x"},
		{"custom template with an unknown field", "10 " + strings.Repeat("a", 40) + " d-ng|n-ng|iuid sha256:00 /x 0"},
		{"template without fields", "10 " + strings.Repeat("a", 40) + " ima-ng"},
		{"ima-sig missing the signature separator", "10 " + strings.Repeat("a", 40) + " ima-sig sha256:00 /x"},
		{"ima-buf buffer not hex", "10 " + strings.Repeat("a", 40) + " ima-buf sha256:00 name zz"},
		{"digest not hex", "10 " + strings.Repeat("a", 40) + " ima-ng sha256:0g /x"},
		{"two colons in d-ng", "10 " + strings.Repeat("a", 40) + " ima-ng a:b:00 /x"},
		{"bare digest of odd size", "10 " + strings.Repeat("a", 40) + " ima-ng 0000 /x"},
		{"legacy digest of 32 bytes", "10 " + strings.Repeat("a", 40) + " ima " + strings.Repeat("0", 64) + " /x"},
		{"legacy name too long", "10 " + strings.Repeat("a", 40) + " ima " + strings.Repeat("0", 40) + " /" + strings.Repeat("n", 255)},
		{"d-ngv2 without a type", "10 " + strings.Repeat("a", 40) + " ima-ngv2 sha256:00 /x"},
		{"d-modsig without algorithm", "10 " + strings.Repeat("a", 40) + " ima-modsig sha256:00 /x  00 00"},
		{"signature not hex", "10 " + strings.Repeat("a", 40) + " ima-sig sha256:00 /x 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLine([]byte(tc.line))
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Reason == "" || pe.Line != 1 || pe.Entry != 0 {
				t.Fatalf("err = %#v", err)
			}
		})
	}
}

// TestParserNumbersAndContinues: a malformed line is reported with its entry and line numbers, and
// parsing goes on; blank lines are not entries.
func TestParserNumbersAndContinues(t *testing.T) {
	l1, _ := ngLine("/a", "a")
	l2, _ := ngLine("/b", "b")
	text := []byte(l1 + "\n\n" + "garbage line\n" + l2) // no final newline
	for _, mode := range []string{"bytes", "reader"} {
		t.Run(mode, func(t *testing.T) {
			p := NewBytesParser(text, 7)
			if mode == "reader" {
				p = NewParser(bytes.NewReader(text), 7)
			}
			e, err := p.Next()
			if err != nil || e.Index != 7 || e.Line != 1 || e.Path() != "/a" {
				t.Fatalf("first: %+v %v", e, err)
			}
			_, err = p.Next()
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Entry != 8 || pe.Line != 3 || pe.Text != "garbage line" {
				t.Fatalf("second: %v", err)
			}
			if e, err = p.Next(); err != nil || e.Index != 9 || e.Line != 4 || e.Path() != "/b" {
				t.Fatalf("third: %+v %v", e, err)
			}
			if _, err = p.Next(); err != io.EOF {
				t.Fatalf("end: %v", err)
			}
			if p.Entries() != 10 {
				t.Fatalf("entries %d", p.Entries())
			}
		})
	}
}

// TestParserLongLines: lines longer than the reader's buffer parse; lines over MaxLineLength are a
// parse error and the next line still parses.
func TestParserLongLines(t *testing.T) {
	big, data := bufLine("dm_table_load", bytes.Repeat([]byte("x"), 100<<10))
	huge := "10 " + strings.Repeat("a", 40) + " ima-buf sha256:00 huge " + strings.Repeat("ab", MaxLineLength/2)
	after, _ := ngLine("/after", "after")
	p := NewParser(strings.NewReader(big+"\n"+huge+"\n"+after+"\n"), 0)
	e, err := p.Next()
	if err != nil || !bytes.Equal(e.Data, data) || !e.TemplateHashOK {
		t.Fatalf("long line: %v", err)
	}
	var pe *ParseError
	if _, err = p.Next(); !errors.As(err, &pe) || pe.Entry != 1 {
		t.Fatalf("huge line: %v", err)
	}
	if e, err = p.Next(); err != nil || e.Path() != "/after" {
		t.Fatalf("after: %v", err)
	}
}

// TestParseQuirks: the kernel's "%2d" PCR column, other PCRs, and a trailing '\r'.
func TestParseQuirks(t *testing.T) {
	l, data := ngLine("/x", "x")
	e, err := ParseLine([]byte(" 9" + l[2:]))
	if err != nil || e.PCR != 9 || !e.TemplateHashOK {
		t.Fatalf("%v %+v", err, e)
	}
	e, err = ParseLine([]byte(l + "\r"))
	if err != nil || e.TemplateHashOK || e.Path() != "/x\r" {
		t.Fatalf("trailing CR: %v, ok=%v", err, e.TemplateHashOK)
	}
	// A SHA-256 template-hash column (ascii_runtime_measurements_sha256).
	e, err = ParseLine([]byte(fmt.Sprintf("10 %x%s", hashOf(crypto.SHA256, data), l[43:])))
	if err != nil || e.TemplateHashAlg != crypto.SHA256 || !e.TemplateHashOK {
		t.Fatalf("sha256 column: %v %+v", err, e)
	}
	var v [64]byte
	if got := e.ExtendValue(crypto.SHA1, v[:0]); !bytes.Equal(got, hashOf(crypto.SHA1, data)) {
		t.Fatalf("sha1 extend value %x", got)
	}
}
