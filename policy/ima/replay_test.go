package ima

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// TestReplayRealLogs replays the IMA logs captured from a VM (OVMF, swtpm, Debian kernel) and
// compares with the PCR 10 the TPM reported, in every bank the capture recorded.
func TestReplayRealLogs(t *testing.T) {
	for _, dir := range []string{"testdata/vm-ovmf-ima-ng", "testdata/vm-ovmf-ima-sig"} {
		t.Run(dir, func(t *testing.T) {
			pcrs := readPCRs(t, dir+"/pcrs.txt")
			f, err := os.Open(dir + "/ascii_runtime_measurements")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			got, err := Replay(f)
			if err != nil {
				t.Fatal(err)
			}
			raw := readFile(t, dir+"/ascii_runtime_measurements")
			padded, err := ReplayMode(bytes.NewReader(raw), ExtendPaddedSHA1)
			if err != nil {
				t.Fatal(err)
			}
			// This kernel had no SHA-384 driver when IMA started: that bank got the padded SHA-1.
			for _, c := range []struct {
				bank crypto.Hash
				mode ExtendMode
			}{{crypto.SHA1, ExtendTemplateHash}, {crypto.SHA256, ExtendTemplateHash}, {crypto.SHA384, ExtendPaddedSHA1}} {
				want := pcrs[BankName(c.bank)]["10"]
				if want == nil {
					t.Fatalf("no %s PCR 10 in pcrs.txt", BankName(c.bank))
				}
				replayed := got[c.bank]
				if c.mode == ExtendPaddedSHA1 {
					replayed = padded[c.bank]
					if bytes.Equal(got[c.bank], want) {
						t.Errorf("%s: the template-hash replay matches too", BankName(c.bank))
					}
				}
				if !bytes.Equal(replayed, want) {
					t.Errorf("%s PCR 10: replay %x, TPM %x", BankName(c.bank), replayed, want)
				}
				// Attest with the quoted value passes with the log as its own policy and finds the mode.
				res := Attest(State{}, Evidence{Log: raw, Bank: c.bank, PCR10: want}, MustCompile(policyFromLog(t, raw)), Options{})
				if len(res.Failures) != 0 || res.Matched != res.Entries || res.State.NextEntry != res.Entries || res.State.Extend != c.mode.String() {
					t.Fatalf("attest %s: %v, matched %d of %d, state %+v", BankName(c.bank), res.Failures, res.Matched, res.Entries, res.State)
				}
				// Streamed, both modes are replayed in one pass; the result is the same.
				res2 := Attest(State{}, Evidence{Reader: bytes.NewReader(raw), Bank: c.bank, PCR10: want}, MustCompile(policyFromLog(t, raw)), Options{})
				if len(res2.Failures) != 0 || res2.State.Extend != c.mode.String() || !bytes.Equal(res2.Replayed, want) {
					t.Fatalf("attest %s from a reader: %v %+v", BankName(c.bank), res2.Failures, res2.State)
				}
			}
		})
	}
}

// TestPaddedModeIncremental: once a poll found the padded-SHA-1 mode, later polls use it alone.
func TestPaddedModeIncremental(t *testing.T) {
	raw := readFile(t, "testdata/vm-ovmf-ima-ng/ascii_runtime_measurements")
	lines := strings.SplitAfter(string(raw), "\n")
	pol := MustCompile(policyFromLog(t, raw))
	quote := func(n int) []byte {
		m, err := ReplayMode(strings.NewReader(strings.Join(lines[:n], "")), ExtendPaddedSHA1, crypto.SHA384)
		if err != nil {
			t.Fatal(err)
		}
		return m[crypto.SHA384]
	}
	res := Attest(State{}, Evidence{Log: []byte(strings.Join(lines[:4], "")), Bank: crypto.SHA384, PCR10: quote(3)}, pol, Options{})
	if len(res.Failures) != 0 || res.State.Extend != "padded-sha1" || res.State.NextEntry != 3 || res.Matched != 3 {
		t.Fatalf("poll 1: %v %+v", res.Failures, res.State)
	}
	all := readPCRs(t, "testdata/vm-ovmf-ima-ng/pcrs.txt")["sha384"]["10"]
	res = Attest(res.State, Evidence{Log: []byte(strings.Join(lines[3:], "")), FirstEntry: 3, Bank: crypto.SHA384, PCR10: all}, pol, Options{})
	if len(res.Failures) != 0 || res.State.NextEntry != 7 || !bytes.Equal(res.Replayed, all) {
		t.Fatalf("poll 2: %v %+v", res.Failures, res.State)
	}
	// A wrong quote in the known mode: the context names the padded replay.
	bad := Attest(res.State, Evidence{Log: []byte(lines[0]), FirstEntry: 7, Bank: crypto.SHA384, PCR10: quote(1)}, pol, Options{})
	if ids := eventIDs(bad); len(ids) != 1 || ids[0] != EventPCRMismatch || bad.Failures[0].Context["replayed"] == nil {
		t.Fatalf("%v", bad.Failures)
	}
}

// policyFromLog lists every digest of a log under its path.
func policyFromLog(t *testing.T, raw []byte) *RuntimePolicy {
	t.Helper()
	p := policyWith(nil)
	pr := NewBytesParser(raw, 0)
	for {
		e, err := pr.Next()
		if err != nil {
			break
		}
		d := hex.EncodeToString(e.Digest)
		if !contains(p.Digests[e.Path()], d) {
			p.Digests[e.Path()] = append(p.Digests[e.Path()], d)
		}
	}
	return p
}

// TestKeylimeIncrementalValues: the running SHA-1 PCR 10 after each of keylime's three MEASUREMENTS.
func TestKeylimeIncrementalValues(t *testing.T) {
	for i := range keylimeMeasurements {
		got, err := Replay(strings.NewReader(strings.Join(keylimeMeasurements[:i+1], "\n")), crypto.SHA1)
		if err != nil {
			t.Fatal(err)
		}
		if h := hex.EncodeToString(got[crypto.SHA1]); h != keylimeMeasurementPCRs[i] {
			t.Errorf("after line %d: %s, want %s", i+1, h, keylimeMeasurementPCRs[i])
		}
	}
}

func TestBankNames(t *testing.T) {
	for _, h := range Banks {
		got, err := BankByName(BankName(h))
		if err != nil || got != h {
			t.Errorf("%v: %v %v", h, got, err)
		}
	}
	if _, err := BankByName("sm3_256"); err == nil {
		t.Error("sm3_256 accepted")
	}
	if err := CheckBank(crypto.MD5); err == nil {
		t.Error("MD5 bank accepted")
	}
	if _, err := Replay(strings.NewReader(""), crypto.SHA224); err == nil {
		t.Error("Replay with SHA-224 bank")
	}
}
