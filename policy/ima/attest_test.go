package ima

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// quoteAfter extends lines (PCR 10 ones) onto start (nil: zeros) in bank.
func quoteAfter(t testing.TB, bank crypto.Hash, start []byte, lines ...string) []byte {
	t.Helper()
	pcr := make([]byte, bank.Size())
	copy(pcr, start)
	for _, l := range lines {
		e, err := ParseLine([]byte(l))
		if err != nil || e.PCR != 10 {
			continue
		}
		extend(bank, pcr, e.ExtendValue(bank, nil))
	}
	return pcr
}

// TestIncrementalKeylimeExample follows the research note's worked example (keylime's MEASUREMENTS,
// SHA-1 bank, no policy).
func TestIncrementalKeylimeExample(t *testing.T) {
	m := keylimeMeasurements
	at := func(i int) []byte { return mustHex(t, keylimeMeasurementPCRs[i-1]) }
	sha1 := crypto.SHA1

	type step struct {
		name      string
		lines     []string
		first     int
		quote     []byte
		wantIDs   []string
		wantNext  int
		wantProg  *Progress
		wantMatch int
	}
	run := func(t *testing.T, steps []step) {
		t.Helper()
		var st State
		for _, s := range steps {
			res := Attest(st, Evidence{Log: join(s.lines...), FirstEntry: s.first, Bank: sha1, PCR10: s.quote}, nil, Options{})
			if diff := cmp.Diff(s.wantIDs, eventIDs(res)); diff != "" {
				t.Fatalf("%s: events (-want +got):\n%s", s.name, diff)
			}
			if res.State.NextEntry != s.wantNext || res.Matched != s.wantMatch {
				t.Fatalf("%s: next entry %d matched %d, want %d %d", s.name, res.State.NextEntry, res.Matched, s.wantNext, s.wantMatch)
			}
			if diff := cmp.Diff(s.wantProg, res.State.Progress); diff != "" {
				t.Fatalf("%s: progress (-want +got):\n%s", s.name, diff)
			}
			st = res.State
		}
	}
	t.Run("quote lags then catches up", func(t *testing.T) {
		run(t, []step{
			{"lines 1-3, quote after 2", m, 0, at(2), nil, 2, &Progress{2, 3}, 2},
			{"line 3, quote after 3", m[2:], 2, at(3), nil, 3, &Progress{1, 1}, 1},
			{"no lines, same quote", nil, 3, at(3), nil, 3, &Progress{0, 0}, 0},
			{"no lines, wrong quote", nil, 3, at(1), []string{EventPCRMismatch}, 0, nil, -1},
		})
	})
	t.Run("quote makes no progress", func(t *testing.T) {
		run(t, []step{
			{"lines 1-3, quote after 1", m, 0, at(1), nil, 1, &Progress{1, 3}, 1},
			{"lines 2-3, quote unchanged", m[1:], 1, at(1), []string{EventQuoteProgress}, 0, nil, 0},
		})
	})
	t.Run("quote covers part of the lag", func(t *testing.T) {
		run(t, []step{
			{"lines 1-3, quote after 1", m, 0, at(1), nil, 1, &Progress{1, 3}, 1},
			{"lines 2-3, quote after 2 (lag was 2)", m[1:], 1, at(2), []string{EventQuoteProgress}, 0, nil, 1},
		})
	})
	t.Run("quote catches up fully", func(t *testing.T) {
		run(t, []step{
			{"lines 1-3, quote after 1", m, 0, at(1), nil, 1, &Progress{1, 3}, 1},
			{"lines 2-3, quote after 3", m[1:], 1, at(3), nil, 3, &Progress{2, 2}, 2},
		})
	})
	t.Run("running value", func(t *testing.T) {
		res := Attest(State{}, Evidence{Log: join(m...), Bank: sha1, PCR10: at(3)}, nil, Options{})
		if hex.EncodeToString(res.Replayed) != keylimeMeasurementPCRs[2] || res.State.PCR10 != keylimeMeasurementPCRs[2] {
			t.Fatalf("replayed %x state %s", res.Replayed, res.State.PCR10)
		}
	})
}

func TestIncrementalEntryRules(t *testing.T) {
	l1, _ := ngLine("/a", "a")
	l2, _ := ngLine("/b", "b")
	q1 := quoteAfter(t, crypto.SHA256, nil, l1)
	q2 := quoteAfter(t, crypto.SHA256, nil, l1, l2)
	first := Attest(State{}, Evidence{Log: join(l1), Bank: crypto.SHA256, PCR10: q1, BootTime: 100}, nil, Options{})
	if len(first.Failures) != 0 || first.State.NextEntry != 1 || first.State.BootTime != 100 || first.State.Bank != "sha256" {
		t.Fatalf("first poll: %v %+v", first.Failures, first.State)
	}
	t.Run("continues", func(t *testing.T) {
		res := Attest(first.State, Evidence{Log: join(l2), FirstEntry: 1, Bank: crypto.SHA256, PCR10: q2, BootTime: 100}, nil, Options{})
		if len(res.Failures) != 0 || res.State.NextEntry != 2 || res.State.PCR10 != hex.EncodeToString(q2) {
			t.Fatalf("%v %+v", res.Failures, res.State)
		}
	})
	t.Run("wrong first entry", func(t *testing.T) {
		res := Attest(first.State, Evidence{Log: join(l2), FirstEntry: 5, Bank: crypto.SHA256, PCR10: q2, BootTime: 100}, nil, Options{})
		if len(res.Failures) != 1 || res.Failures[0].EventID != EventInvalidEntryIndex || res.Failures[0].Recoverable ||
			res.Failures[0].Context["got"] != 5 || res.Failures[0].Context["expected"] != 1 || res.State.NextEntry != 0 {
			t.Fatalf("%+v %+v", res.Failures, res.State)
		}
	})
	t.Run("reboot", func(t *testing.T) {
		res := Attest(first.State, Evidence{Log: join(l2), FirstEntry: 1, Bank: crypto.SHA256, PCR10: q2, BootTime: 200}, nil, Options{})
		if !res.Restart || len(res.Failures) != 0 || res.State.NextEntry != 0 {
			t.Fatalf("%+v", res)
		}
	})
	t.Run("bank changed", func(t *testing.T) {
		res := Attest(first.State, Evidence{Log: join(l2), FirstEntry: 1, Bank: crypto.SHA1, PCR10: quoteAfter(t, crypto.SHA1, nil, l1, l2), BootTime: 100}, nil, Options{})
		if !res.Restart || len(res.Failures) != 0 {
			t.Fatalf("%+v", res)
		}
	})
	t.Run("entry 0 starts over", func(t *testing.T) {
		res := Attest(first.State, Evidence{Log: join(l1, l2), Bank: crypto.SHA256, PCR10: q2, BootTime: 300}, nil, Options{})
		if len(res.Failures) != 0 || res.State.NextEntry != 2 || res.State.BootTime != 300 {
			t.Fatalf("%+v", res)
		}
	})
	t.Run("corrupt stored state", func(t *testing.T) {
		bad := first.State
		bad.PCR10 = "zz"
		if res := Attest(bad, Evidence{Log: join(l2), FirstEntry: 1, Bank: crypto.SHA256, PCR10: q2, BootTime: 100}, nil, Options{}); !res.Restart {
			t.Fatalf("%+v", res)
		}
	})
	t.Run("quote of the wrong size", func(t *testing.T) {
		res := Attest(State{}, Evidence{Log: join(l1), Bank: crypto.SHA256, PCR10: q1[:20]}, nil, Options{})
		if diff := cmp.Diff([]string{EventPCRMismatch}, eventIDs(res)); diff != "" {
			t.Fatal(diff)
		}
	})
	t.Run("unsupported bank", func(t *testing.T) {
		res := Attest(State{}, Evidence{Log: join(l1), Bank: crypto.SHA224, PCR10: make([]byte, 28)}, nil, Options{})
		if diff := cmp.Diff([]string{EventPCRMismatch}, eventIDs(res)); diff != "" {
			t.Fatal(diff)
		}
	})
	t.Run("reader", func(t *testing.T) {
		res := Attest(State{}, Evidence{Reader: strings.NewReader(string(join(l1, l2))), Bank: crypto.SHA256, PCR10: q2}, nil, Options{})
		if len(res.Failures) != 0 || res.Entries != 2 {
			t.Fatalf("%+v", res)
		}
	})
}

// TestStateJSON: the state survives a JSON round trip, learned keys included.
func TestStateJSON(t *testing.T) {
	ring := NewKeyring()
	if err := ring.Add(&ecKey(t, "P-256").PublicKey, 0); err != nil {
		t.Fatal(err)
	}
	st := State{Bank: "sha256", PCR10: strings.Repeat("ab", 32), NextEntry: 12, BootTime: 1700000000, Extend: "template-hash",
		Keyrings: map[string]*Keyring{".ima": ring}, Progress: &Progress{MatchLine: 3, LogLength: 4}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) || back.Keyrings[".ima"].Len() != 1 || back.Keyrings[".ima"].Keys()[0].ID != ring.Keys()[0].ID {
		t.Fatalf("%s\n%s", b, b2)
	}
	if !strings.Contains(string(b), `"next_entry":12`) || !strings.Contains(string(b), `"quote_progress":{"match_line":3,"log_length":4}`) {
		t.Fatalf("JSON %s", b)
	}
}

// entryCase is one log judged against a policy.
type entryCase struct {
	name   string
	lines  []string
	policy func(*RuntimePolicy)
	opts   Options
	ev     func(*Evidence)
	want   []string
	check  func(t *testing.T, res Result)
}

func runEntryCases(t *testing.T, cases []entryCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := policyWith(nil)
			if c.policy != nil {
				c.policy(p)
			}
			ev := Evidence{Log: join(c.lines...), Bank: crypto.SHA256, PCR10: quoteAfter(t, crypto.SHA256, nil, c.lines...)}
			if c.ev != nil {
				c.ev(&ev)
			}
			res := Attest(State{}, ev, MustCompile(p), c.opts)
			if diff := cmp.Diff(c.want, eventIDs(res)); diff != "" {
				t.Fatalf("events (-want +got):\n%s\n%v", diff, res.Failures)
			}
			if c.check != nil {
				c.check(t, res)
			}
		})
	}
}

func TestEntryValidation(t *testing.T) {
	bash, _ := ngLine("/usr/bin/bash", "bash")
	other, _ := ngLine("/usr/bin/other", "other")
	logf, _ := ngLine("/var/log/syslog", "log")
	legacy := "10 d7026dc672344d3ee372217bdbc7395947788671 ima 6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e /usr/bin/kmod"
	violation := fmt.Sprintf("10 %s ima-ng sha256:%s /var/log/messages", strings.Repeat("0", 40), strings.Repeat("0", 64))
	badHash := "10 " + strings.Repeat("1", 40) + bash[43:]
	pcr11 := "11" + bash[2:]
	bootAgg := mustHex(t, strings.Repeat("ba", 32))
	var bb bytes.Buffer
	tdDigest(&bb, "sha256", bootAgg)
	tdName(&bb, "boot_aggregate")
	bootLine := logLine(10, bb.Bytes(), "ima-ng", "sha256:"+hex.EncodeToString(bootAgg), "boot_aggregate")
	kexec, _ := bufLine("kexec-cmdline", []byte("root=/dev/vda ro"))
	allow := func(path string, d []byte) func(*RuntimePolicy) {
		return func(p *RuntimePolicy) { p.Digests[path] = append(p.Digests[path], hex.EncodeToString(d)) }
	}
	runEntryCases(t, []entryCase{
		{name: "listed", lines: []string{bash}, policy: allow("/usr/bin/bash", fileDigest("bash"))},
		{name: "empty policy rejects", lines: []string{bash}, want: []string{EventNotInPolicy},
			check: func(t *testing.T, res Result) {
				c := res.Failures[0].Context
				if c["entry"] != 0 || c["path"] != "/usr/bin/bash" || c["digest"] != "sha256:"+hex.EncodeToString(fileDigest("bash")) || c["template"] != "ima-ng" {
					t.Fatalf("context %v", c)
				}
				if res.State.NextEntry != 0 || res.State.PCR10 != "" {
					t.Fatalf("state not reset: %+v", res.State)
				}
			}},
		{name: "other digest", lines: []string{bash}, policy: allow("/usr/bin/bash", fileDigest("old bash")), want: []string{EventDigestNotAllowed},
			check: func(t *testing.T, res Result) {
				c := res.Failures[0].Context
				if c["got"] != hex.EncodeToString(fileDigest("bash")) || !cmp.Equal(c["expected"], []string{hex.EncodeToString(fileDigest("old bash"))}) {
					t.Fatalf("context %v", c)
				}
			}},
		{name: "second of two digests", lines: []string{bash}, policy: func(p *RuntimePolicy) {
			allow("/usr/bin/bash", fileDigest("old"))(p)
			allow("/usr/bin/bash", fileDigest("bash"))(p)
		}},
		{name: "excluded", lines: []string{logf, other}, policy: func(p *RuntimePolicy) { p.Excludes = []string{"/var/log/.*", "/usr/bin/oth"} }},
		{name: "exclude is anchored at the start", lines: []string{logf}, policy: func(p *RuntimePolicy) { p.Excludes = []string{"log"} }, want: []string{EventNotInPolicy}},
		{name: "legacy ima template", lines: []string{legacy}, policy: func(p *RuntimePolicy) {
			p.Digests["/usr/bin/kmod"] = []string{"6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e"}
		}, ev: func(ev *Evidence) { ev.Bank, ev.PCR10 = crypto.SHA1, quoteAfter(t, crypto.SHA1, nil, legacy) }},
		{name: "violation accepted", lines: []string{violation}},
		{name: "violation reported", lines: []string{violation}, opts: Options{FailViolations: true}, want: []string{EventToMToU}},
		{name: "template hash mismatch", lines: []string{badHash}, policy: allow("/usr/bin/bash", fileDigest("bash")), want: []string{EventTemplateHash}},
		{name: "other PCR is not extended", lines: []string{pcr11, bash}, policy: allow("/usr/bin/bash", fileDigest("bash")), want: []string{EventPCR},
			check: func(t *testing.T, res Result) {
				if !bytes.Equal(res.Replayed, quoteAfter(t, crypto.SHA256, nil, bash)) {
					t.Fatal("PCR 11 entry extended into PCR 10")
				}
			}},
		{name: "unparsable line", lines: []string{bash, "nonsense", other}, policy: func(p *RuntimePolicy) {
			allow("/usr/bin/bash", fileDigest("bash"))(p)
			allow("/usr/bin/other", fileDigest("other"))(p)
		}, want: []string{EventParse}, check: func(t *testing.T, res Result) {
			if c := res.Failures[0].Context; c["entry"] != 1 || c["line"] != 2 {
				t.Fatalf("context %v", c)
			}
			if res.Entries != 3 {
				t.Fatalf("entries %d", res.Entries)
			}
		}},
		{name: "boot aggregate from the policy", lines: []string{bootLine}, policy: allow("boot_aggregate", bootAgg)},
		{name: "boot aggregate from measured boot", lines: []string{bootLine}, ev: func(ev *Evidence) { ev.BootAggregates = [][]byte{make([]byte, 20), bootAgg} }},
		{name: "boot aggregate matching neither", lines: []string{bootLine}, ev: func(ev *Evidence) { ev.BootAggregates = [][]byte{make([]byte, 32)} },
			want: []string{EventDigestNotAllowed}},
		{name: "ima-buf listed", lines: []string{kexec}, policy: func(p *RuntimePolicy) {
			d := sha256.Sum256([]byte("root=/dev/vda ro"))
			p.IMABuf["kexec-cmdline"] = []string{hex.EncodeToString(d[:])}
		}},
		{name: "ima-buf not listed", lines: []string{kexec}, want: []string{EventNotInPolicy}},
		{name: "ima-buf in digests does not count", lines: []string{kexec}, policy: func(p *RuntimePolicy) {
			d := sha256.Sum256([]byte("root=/dev/vda ro"))
			p.Digests["kexec-cmdline"] = []string{hex.EncodeToString(d[:])}
		}, want: []string{EventNotInPolicy}},
		{name: "failures are capped", lines: manyLines(250), opts: Options{MaxFailures: 10}, want: repeat(EventNotInPolicy, 10),
			check: func(t *testing.T, res Result) {
				if res.Suppressed != 240 {
					t.Fatalf("suppressed %d", res.Suppressed)
				}
			}},
		{name: "no match", lines: []string{bash}, policy: allow("/usr/bin/bash", fileDigest("bash")), ev: func(ev *Evidence) { ev.PCR10 = make([]byte, 32); ev.PCR10[0] = 1 },
			want: []string{EventPCRMismatch}, check: func(t *testing.T, res Result) {
				c := res.Failures[0].Context
				if c["replayed"] != hex.EncodeToString(quoteAfter(t, crypto.SHA256, nil, bash)) || c["replayed_padded_sha1"] == nil || c["entries"] != 1 {
					t.Fatalf("context %v", c)
				}
			}},
	})
}

func manyLines(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i], _ = ngLine(fmt.Sprintf("/bin/f%d", i), fmt.Sprint(i))
	}
	return out
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestSignatures: ima-sig entries signed by trusted keys pass whatever the digest lists say.
func TestSignatures(t *testing.T) {
	type signer struct {
		name string
		key  crypto.Signer
	}
	signers := []signer{{"RSA", rsaKey(t)}, {"P-256", ecKey(t, "P-256")}, {"P-384", ecKey(t, "P-384")}, {"P-521", ecKey(t, "P-521")}}
	verificationKeys := func(ss ...signer) string {
		ring := NewKeyring()
		for _, s := range ss {
			if err := ring.Add(s.key.Public(), 0); err != nil {
				t.Fatal(err)
			}
		}
		return ring.String()
	}
	var cases []entryCase
	for _, s := range signers {
		d := fileDigest("signed by " + s.name)
		line, _ := sigLine("/usr/bin/"+s.name, d, imaSign(t, s.key, d))
		if k, err := KeyIDv2(s.key.Public()); err != nil || k != keyIDByHand(t, s.key.Public()) {
			t.Fatalf("%s keyid %08x, by hand %08x (%v)", s.name, k, keyIDByHand(t, s.key.Public()), err)
		}
		keys := verificationKeys(s)
		cases = append(cases,
			entryCase{name: s.name + " trusted", lines: []string{line}, policy: func(p *RuntimePolicy) { p.VerificationKeys = keys }},
			entryCase{name: s.name + " trusted, other digest listed", lines: []string{line}, policy: func(p *RuntimePolicy) {
				p.VerificationKeys = keys
				p.Digests["/usr/bin/"+s.name] = []string{hex.EncodeToString(fileDigest("x"))}
			}},
			entryCase{name: s.name + " per-agent keys", lines: []string{line}, opts: Options{Keys: mustKeyring(t, keys)}},
			entryCase{name: s.name + " untrusted", lines: []string{line}, want: []string{EventNotInPolicy},
				check: func(t *testing.T, res Result) {
					if sig, _ := res.Failures[0].Context["signature"].(string); !strings.Contains(sig, "keyid") {
						t.Fatalf("context %v", res.Failures[0].Context)
					}
				}},
		)
	}
	d := fileDigest("tampered")
	good := imaSign(t, signers[1].key, d)
	tampered := append(bytes.Clone(good[:len(good)-1]), good[len(good)-1]^1)
	tamperedLine, _ := sigLine("/usr/bin/t", d, tampered)
	otherDigest, _ := sigLine("/usr/bin/t", fileDigest("other"), good)
	sha1Header := bytes.Clone(good)
	sha1Header[2] = 2 // HASH_ALGO_SHA1 while the digest is sha256
	sha1Line, _ := sigLine("/usr/bin/t", d, sha1Header)
	malformed, _ := sigLine("/usr/bin/t", d, good[:len(good)-3])
	unsigned, _ := sigLine("/usr/bin/t", d, nil)
	keys := verificationKeys(signers[1])
	withKeys := func(p *RuntimePolicy) { p.VerificationKeys = keys }
	cases = append(cases,
		entryCase{name: "tampered signature", lines: []string{tamperedLine}, policy: withKeys, want: []string{EventNotInPolicy}},
		entryCase{name: "signature over another digest", lines: []string{otherDigest}, policy: withKeys, want: []string{EventNotInPolicy}},
		entryCase{name: "header hash differs from digest", lines: []string{sha1Line}, policy: withKeys, want: []string{EventNotInPolicy}},
		entryCase{name: "malformed signature, digest listed", lines: []string{malformed}, policy: func(p *RuntimePolicy) {
			withKeys(p)
			p.Digests["/usr/bin/t"] = []string{hex.EncodeToString(d)}
		}},
		entryCase{name: "malformed signature, excluded", lines: []string{malformed}, policy: func(p *RuntimePolicy) { p.Excludes = []string{"/usr/bin/t$"} }},
		entryCase{name: "unsigned, listed", lines: []string{unsigned}, policy: func(p *RuntimePolicy) {
			withKeys(p)
			p.Digests["/usr/bin/t"] = []string{hex.EncodeToString(d)}
		}},
		entryCase{name: "unsigned, not listed", lines: []string{unsigned}, policy: withKeys, want: []string{EventNotInPolicy}},
	)
	runEntryCases(t, cases)
}

func mustKeyring(t *testing.T, s string) *Keyring {
	t.Helper()
	k, _, err := ParseVerificationKeys(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKeylimeMixedVerification ports keylime's test_mixed_verification where Go can follow it (the
// secp256k1-signed zmore entry cannot be verified here, so its cases rely on the digest lists).
func TestKeylimeMixedVerification(t *testing.T) {
	rsaPEM := readFile(t, "testdata/keylime/rsa2048pub.pem")
	rsaRing, err := ParseKeys(rsaPEM)
	if err != nil {
		t.Fatal(err)
	}
	if ids := rsaRing.Keys(); len(ids) != 1 || ids[0].ID != 0xf3452d23 {
		t.Fatalf("rsa2048pub.pem keyid %v", ids)
	}
	if _, err := ParseKeys(readFile(t, "testdata/keylime/secp256k1.pem")); err == nil {
		t.Fatal("secp256k1 key parsed")
	}
	combined := append(append([]string{}, keylimeMeasurements...), keylimeSigRSA, keylimeSigEC)
	withExcludes := func(p *RuntimePolicy) *RuntimePolicy { p.Excludes = keylimeExcludes; return p }
	for _, c := range []struct {
		name  string
		lines []string
		pol   *RuntimePolicy
		keys  *Keyring
		fail  bool
	}{
		{"all listed, no keys", combined, keylimeTestPolicy(), nil, false},
		{"all listed or signed", combined, keylimeTestPolicy(), rsaRing, false},
		{"RSA signature valid, digest wrong", []string{keylimeSigRSA}, keylimeWrongPolicy(), rsaRing, false},
		{"RSA signature valid, not listed", []string{keylimeSigRSA}, EmptyRuntimePolicy(), rsaRing, false},
		{"secp256k1 signature, not listed", []string{keylimeSigEC}, EmptyRuntimePolicy(), rsaRing, true},
		{"signatures unverifiable, digests listed", []string{keylimeSigRSA, keylimeSigEC}, keylimeTestPolicy(), NewKeyring(), false},
		{"unsigned, listed", keylimeMeasurements, keylimeTestPolicy(), nil, false},
		{"wrong digests, excluded", keylimeMeasurements, withExcludes(keylimeWrongPolicy()), nil, false},
		{"signatures, excluded", []string{keylimeSigRSA, keylimeSigEC}, withExcludes(keylimeTestPolicy()), rsaRing, false},
		{"malformed signature, excluded", []string{keylimeBadSig}, withExcludes(keylimeTestPolicy()), NewKeyring(), true},
		{"malformed signature, listed", []string{keylimeBadSig}, keylimeTestPolicy(), NewKeyring(), true},
		{"nothing listed", keylimeMeasurements, EmptyRuntimePolicy(), nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev := Evidence{Log: join(c.lines...), Bank: crypto.SHA1, PCR10: quoteAfter(t, crypto.SHA1, nil, c.lines...)}
			res := Attest(State{}, ev, MustCompile(c.pol), Options{Keys: c.keys})
			if failed := len(res.Failures) > 0; failed != c.fail {
				t.Fatalf("failed %v, want %v: %v", failed, c.fail, res.Failures)
			}
		})
	}
}

// TestKeyrings: keys loaded onto keyrings are judged, learned, kept in the State and used to verify
// later signatures, unless their keyring is ignored.
func TestKeyrings(t *testing.T) {
	key := ecKey(t, "P-384")
	cert := selfSignedCert(t, key, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	certDigest := sha256.Sum256(cert)
	keyLine, _ := bufLine(".ima", cert)
	d := fileDigest("app")
	sig := imaSign(t, key, d)
	// The certificate's SKID names the key: re-sign with keyid 05060708 in the header.
	sig[3], sig[4], sig[5], sig[6] = 5, 6, 7, 8
	signed, _ := sigLine("/usr/bin/app", d, sig)
	ng, _ := ngLine("/usr/bin/listed", "listed")
	base := func(p *RuntimePolicy) {
		p.Keyrings[".ima"] = []string{hex.EncodeToString(certDigest[:])}
		p.Digests["/usr/bin/listed"] = []string{hex.EncodeToString(fileDigest("listed"))}
	}
	runEntryCases(t, []entryCase{
		{name: "key listed, signature verifies in the same poll", lines: []string{keyLine, signed}, policy: base,
			check: func(t *testing.T, res Result) {
				ks := res.State.Keyrings[".ima"].Keys()
				if len(ks) != 1 || ks[0].ID != 0x05060708 {
					t.Fatalf("learned %v", ks)
				}
			}},
		{name: "key not listed", lines: []string{keyLine, signed}, want: []string{EventNotInPolicy, EventNotInPolicy},
			check: func(t *testing.T, res Result) {
				if res.Failures[0].Context["path"] != ".ima" {
					t.Fatalf("context %v", res.Failures[0].Context)
				}
			}},
		{name: "key digest differs", lines: []string{keyLine}, policy: func(p *RuntimePolicy) { p.Keyrings[".ima"] = []string{strings.Repeat("00", 32)} },
			want: []string{EventDigestNotAllowed}},
		{name: "keyring ignored: not judged, not learned", lines: []string{keyLine, signed},
			policy: func(p *RuntimePolicy) { p.IMA.IgnoredKeyrings = []string{".ima"} }, want: []string{EventNotInPolicy}},
		{name: "all keyrings ignored", lines: []string{keyLine}, policy: func(p *RuntimePolicy) { p.IMA.IgnoredKeyrings = []string{"*"} },
			check: func(t *testing.T, res Result) {
				if len(res.State.Keyrings) != 0 {
					t.Fatal("key learned from an ignored keyring")
				}
			}},
		{name: "keyring excluded: accepted and learned", lines: []string{keyLine, signed}, policy: func(p *RuntimePolicy) { p.Excludes = []string{`\.ima`} }},
		{name: "signature before the key", lines: []string{signed, keyLine}, policy: base, want: []string{EventNotInPolicy}},
	})

	t.Run("learned keys persist, but only up to the quote", func(t *testing.T) {
		pol := policyWith(nil)
		base(pol)
		c := MustCompile(pol)
		// Poll 1: the quote covers the key line: the key is kept.
		res := Attest(State{}, Evidence{Log: join(ng, keyLine), Bank: crypto.SHA256, PCR10: quoteAfter(t, crypto.SHA256, nil, ng, keyLine)}, c, Options{})
		if len(res.Failures) != 0 || res.State.Keyrings[".ima"].Len() != 1 {
			t.Fatalf("poll 1: %v %+v", res.Failures, res.State)
		}
		b, err := json.Marshal(res.State)
		if err != nil {
			t.Fatal(err)
		}
		var st State
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		// Poll 2: a signed entry whose digest is not listed passes with the stored key.
		q := quoteAfter(t, crypto.SHA256, res.Replayed, signed)
		res2 := Attest(st, Evidence{Log: join(signed), FirstEntry: 2, Bank: crypto.SHA256, PCR10: q}, c, Options{})
		if len(res2.Failures) != 0 || res2.State.NextEntry != 3 {
			t.Fatalf("poll 2: %v %+v", res2.Failures, res2.State)
		}
		// A fresh poll whose quote lags behind the key line does not keep the key.
		res3 := Attest(State{}, Evidence{Log: join(ng, keyLine), Bank: crypto.SHA256, PCR10: quoteAfter(t, crypto.SHA256, nil, ng)}, c, Options{})
		if len(res3.Failures) != 0 || res3.State.Keyrings[".ima"] != nil || res3.State.NextEntry != 1 {
			t.Fatalf("poll 3: %v %+v", res3.Failures, res3.State)
		}
	})
}

// TestKeylimeKeyringEntry: keylime's KEYRINGS ima-buf entry against RUNTIME_POLICY_TEST: accepted and
// its key (SKID b6fb…058c) learned.
func TestKeylimeKeyringEntry(t *testing.T) {
	lines := []string{keylimeKeyring}
	res := Attest(State{}, Evidence{Log: join(lines...), Bank: crypto.SHA256, PCR10: quoteAfter(t, crypto.SHA256, nil, lines...)}, MustCompile(keylimeTestPolicy()), Options{})
	if len(res.Failures) != 0 {
		t.Fatal(res.Failures)
	}
	if ks := res.State.Keyrings[".ima"].Keys(); len(ks) != 1 || ks[0].ID != 0x2cb6058c {
		t.Fatalf("learned %v", ks)
	}
}

func TestInvalidKeyBuffer(t *testing.T) {
	// An Ed25519 SubjectPublicKeyInfo: a key, but not one IMA signatures can use.
	ed := mustB64(t, "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=")
	line, _ := bufLine(".ima", ed)
	runEntryCases(t, []entryCase{{name: "ed25519", lines: []string{line}, want: []string{EventInvalidKey}}})
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
