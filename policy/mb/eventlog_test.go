package mb

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"
	"github.com/keylime-go/keylime/policy"
)

// TestReplayReproducesRecordedPCRs replays the captured OVMF logs and compares every bank the TPM
// reported with every measured-boot PCR (PCRs the log does not extend must be zero).
func TestReplayReproducesRecordedPCRs(t *testing.T) {
	for _, dir := range []string{"vm-ovmf-ima-ng", "vm-ovmf-ima-sig"} {
		t.Run(dir, func(t *testing.T) {
			l := mustParse(t, readFile(t, "testdata/"+dir+"/binary_bios_measurements"))
			rec := recordedPCRs(t, "testdata/"+dir+"/pcrs.txt")
			compared := 0
			for bank, vals := range rec {
				if _, ok := l.PCRs()[bank]; !ok {
					continue
				}
				compared++
				quoted := map[int][]byte{}
				for _, p := range policy.MeasuredBootPCRs {
					quoted[p] = vals[p]
				}
				if fails := l.CheckPCRs(bank, quoted, policy.MeasuredBootPCRs); len(fails) != 0 {
					t.Errorf("%s: %v", BankName(bank), fails)
				}
			}
			if compared != 3 {
				t.Errorf("compared %d banks, want sha1, sha256 and sha384", compared)
			}
			if want := []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512}; !slices.Equal(l.Banks, want) {
				t.Errorf("banks %v, want %v", l.Banks, want)
			}
		})
	}
}

// TestReplayAgreesWithGoAttestation feeds our replay of every fixture log to go-attestation's
// EventLog.Verify (its own replay, locality and workarounds included), which must accept it, and a
// value with one bit flipped, which it must refuse.
func TestReplayAgreesWithGoAttestation(t *testing.T) {
	for name, raw := range goodLogs(t) {
		t.Run(name, func(t *testing.T) {
			l := mustParse(t, raw)
			el, err := attest.ParseEventLog(raw)
			if err != nil {
				t.Fatal(err)
			}
			// go-attestation accepts a PCR when any bank replays, so verify one bank at a time.
			for bank, vals := range l.PCRs() {
				h, _ := bankHash(bank)
				var pcrs []attest.PCR
				for p, v := range vals {
					pcrs = append(pcrs, attest.PCR{Index: p, Digest: v, DigestAlg: h})
				}
				if len(pcrs) == 0 {
					continue // a log of EV_NO_ACTION only
				}
				if _, err := el.Verify(pcrs); err != nil {
					t.Fatalf("%s: go-attestation refuses our replay: %v", BankName(bank), err)
				}
				pcrs[0].Digest = append([]byte(nil), pcrs[0].Digest...)
				pcrs[0].Digest[0] ^= 1
				if _, err := el.Verify(pcrs); err == nil {
					t.Fatalf("%s: go-attestation accepts a flipped PCR value", BankName(bank))
				}
			}
		})
	}
}

func TestLogShape(t *testing.T) {
	for _, tc := range []struct {
		name     string
		legacy   bool
		banks    []tpm2.TPMAlgID
		events   int
		firstNum int
		locality int
	}{
		{"vm-ovmf-ima-ng/binary_bios_measurements", false, []tpm2.TPMAlgID{4, 11, 12, 13}, 25, 1, 0},
		{"keylime/binary_bios_measurements", false, []tpm2.TPMAlgID{4, 11}, 120, 1, 3},
		{"keylime/binary_bios_measurements-secureboot", false, []tpm2.TPMAlgID{11}, 98, 1, 0},
		{"go-attestation/ebs_event_missing_eventlog", true, []tpm2.TPMAlgID{4}, 38, 0, 0},
		{"go-attestation/short_no_action_eventlog", true, []tpm2.TPMAlgID{4}, 1, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustParse(t, readFile(t, "testdata/"+tc.name))
			got := []any{l.Legacy, l.Banks, len(l.Events), l.Events[0].Num, l.StartupLocality}
			want := []any{tc.legacy, tc.banks, tc.events, tc.firstNum, tc.locality}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("legacy, banks, events, first number, locality (-want +got):\n%s", d)
			}
		})
	}
}

// TestStartupLocality checks that PCR 0 starts at 00…03 in Keylime's locality-3 log: without the
// locality the replay differs, and go-attestation (see above) agrees with the locality-aware value.
func TestStartupLocality(t *testing.T) {
	l := mustParse(t, readFile(t, "testdata/keylime/binary_bios_measurements"))
	if l.StartupLocality != 3 {
		t.Fatalf("locality %d", l.StartupLocality)
	}
	zeroStart, _ := replayBank(l.Events, sha256Bank, 0)
	if bytes.Equal(zeroStart[0], l.PCRs()[sha256Bank][0]) {
		t.Error("locality 3 did not change PCR 0")
	}
	if !bytes.Equal(zeroStart[4], l.PCRs()[sha256Bank][4]) {
		t.Error("locality changed PCR 4")
	}
}

// TestBootAggregate finds the IMA log's boot_aggregate among the log's aggregates: the capture's
// kernel covered PCRs 0-9 in sha256, with PCR 8 absent from the log (zero in the TPM).
func TestBootAggregate(t *testing.T) {
	l := mustParse(t, readFile(t, "testdata/vm-ovmf-ima-ng/binary_bios_measurements"))
	ima := strings.Fields(strings.SplitN(string(readFile(t, "testdata/vm-ovmf-ima-ng/ascii_runtime_measurements")), "\n", 2)[0])
	if len(ima) < 5 || ima[4] != "boot_aggregate" {
		t.Fatalf("first IMA line %v", ima)
	}
	want := strings.TrimPrefix(ima[3], "sha256:")
	aggs := l.PCRs().BootAggregates()
	if len(aggs[sha256Bank]) != 2 || aggs[sha256Bank][1] != want {
		t.Fatalf("sha256 aggregates %v, want PCR 0-9 aggregate %s", aggs[sha256Bank], want)
	}
	if len(aggs) != 4 {
		t.Errorf("aggregates for %d banks, want 4", len(aggs))
	}
}

func TestCheckPCRs(t *testing.T) {
	l := mustParse(t, readFile(t, "testdata/vm-ovmf-ima-ng/binary_bios_measurements"))
	rec := recordedPCRs(t, "testdata/vm-ovmf-ima-ng/pcrs.txt")[sha256Bank]
	bad := bytes.Repeat([]byte{0xab}, 32)
	for _, tc := range []struct {
		name   string
		bank   tpm2.TPMAlgID
		change map[int][]byte
		pcrs   []int
		want   []string // event ids
	}{
		{"all match", sha256Bank, nil, policy.MeasuredBootPCRs, nil},
		{"PCR 4 differs", sha256Bank, map[int][]byte{4: bad}, policy.MeasuredBootPCRs, []string{"measured_boot.invalid_pcr_4"}},
		{"PCR 8 not in log must be zero", sha256Bank, map[int][]byte{8: bad}, policy.MeasuredBootPCRs, []string{"measured_boot.invalid_pcr_8"}},
		{"unchecked PCR ignored", sha256Bank, map[int][]byte{10: bad}, policy.MeasuredBootPCRs, nil},
		{"two differ", sha256Bank, map[int][]byte{0: bad, 7: bad}, []int{7, 0}, []string{"measured_boot.invalid_pcr_0", "measured_boot.invalid_pcr_7"}},
		{"bank not in log", tpm2.TPMAlgSM3256, nil, policy.MeasuredBootPCRs, []string{"measured_boot.parser.invalid_pcrs_hashes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			quoted := map[int][]byte{}
			for p, v := range rec {
				quoted[p] = v
			}
			for p, v := range tc.change {
				quoted[p] = v
			}
			fails := l.CheckPCRs(tc.bank, quoted, tc.pcrs)
			var ids []string
			for _, f := range fails {
				ids = append(ids, f.EventID)
			}
			if !slices.Equal(ids, tc.want) {
				t.Fatalf("failures %v, want %v", fails, tc.want)
			}
			if len(fails) > 0 && strings.HasPrefix(fails[0].EventID, "measured_boot.invalid_pcr_") {
				c := fails[0].Context
				if c["got"] != fmt.Sprintf("%x", bad) || c["expected"] == c["got"] || c["bank"] != "sha256" {
					t.Errorf("context %v", c)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	good := readFile(t, "testdata/vm-ovmf-ima-ng/binary_bios_measurements")
	legacy := readFile(t, "testdata/go-attestation/ebs_event_missing_eventlog")
	hugeSize := append([]byte(nil), good...)
	hugeSize[28], hugeSize[29], hugeSize[30], hugeSize[31] = 0xff, 0xff, 0xff, 0x7f
	undeclared := append([]byte(nil), good...)
	undeclared[77+12] = 0x99 // first event's first digest algorithm (after the 77-byte header)
	for _, tc := range []struct {
		name string
		raw  []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"shorter than a header", good[:20], "shorter than one event header"},
		{"text", readFile(t, "testdata/vm-ovmf-ima-ng/pcrs.txt"), "looks like text"},
		{"IMA log", readFile(t, "testdata/vm-ovmf-ima-ng/ascii_runtime_measurements"), "looks like text"},
		{"keylime bogus", readFile(t, "testdata/keylime/binary_bios_measurements-bogus"), "looks like text"},
		{"header only", good[:77], "no events"},
		{"cut in event header", good[:77+6], "event 1 at offset 77: truncated header"},
		{"cut in digest", good[:77+20], "event 1 at offset 77: truncated 20-byte digest"},
		{"cut in data", good[:len(good)-3], "event 25 at offset"},
		{"legacy cut", legacy[:len(legacy)-5], "event 37 at offset"},
		{"huge size", hugeSize, "event data of 2147483647 bytes"},
		{"undeclared algorithm", undeclared, "not declared in the Spec ID header"},
		{"garbage", bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 100), "event 0 at offset 0"},
		{"too big", make([]byte, MaxLogSize+1), "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Parse(tc.raw)
			if err == nil || !errors.Is(err, ErrInvalidLog) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, %v; want an ErrInvalidLog error with %q", l != nil, err, tc.want)
			}
		})
	}
}

// TestFlippedBytes flips every byte of a log in turn: Parse never panics, a flipped sha256 digest is
// always caught by the PCR comparison, and any other accepted flip shows in the parsed events.
func TestFlippedBytes(t *testing.T) {
	raw := readFile(t, "testdata/vm-ovmf-ima-ng/binary_bios_measurements")
	rec := recordedPCRs(t, "testdata/vm-ovmf-ima-ng/pcrs.txt")[sha256Bank]
	orig := mustParse(t, raw)
	const headerLen = 77
	sameEvents := func(a, b Event) bool {
		return a.PCR == b.PCR && a.Type == b.Type && bytes.Equal(a.Data, b.Data) &&
			slices.EqualFunc(a.Digests, b.Digests, func(x, y Digest) bool { return x.Bank == y.Bank && bytes.Equal(x.Value, y.Value) })
	}
	accepted, caught := 0, 0
	for i := range raw {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x40
		l, err := Parse(b)
		if err != nil {
			continue
		}
		accepted++
		changedPCR := len(l.CheckPCRs(sha256Bank, rec, policy.MeasuredBootPCRs)) > 0
		if changedPCR {
			caught++
		}
		for j := range l.Events {
			e, o := &l.Events[j], &orig.Events[j]
			if e.Measured() && !bytes.Equal(e.Digest(sha256Bank), o.Digest(sha256Bank)) && !changedPCR {
				t.Errorf("byte %d: flipped sha256 digest of %s not caught", i, e.Describe())
			}
		}
		if i >= headerLen && slices.EqualFunc(l.Events, orig.Events, sameEvents) {
			t.Errorf("byte %d: flip accepted without a trace in the events", i)
		}
	}
	if accepted == 0 || caught == 0 {
		t.Errorf("accepted %d, caught %d", accepted, caught)
	}
	t.Logf("%d flips: %d parsed, %d changed a sha256 PCR", len(raw), accepted, caught)
}

type panicBackend struct{}

func (panicBackend) parse([]byte) (bool, []tpm2.TPMAlgID, []Event, error) { panic("boom") }

func TestParserPanicIsAnError(t *testing.T) {
	_, err := parseWith(panicBackend{}, []byte("x"))
	if !errors.Is(err, ErrInvalidLog) || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
}

func TestEncodeLogRoundTrip(t *testing.T) {
	for _, name := range []string{"vm-ovmf-ima-ng/binary_bios_measurements", "keylime/binary_bios_measurements-secureboot"} {
		raw := readFile(t, "testdata/"+name)
		if got := encodeLog(t, raw, mustParse(t, raw).Events); !bytes.Equal(got, raw) {
			t.Errorf("%s: re-encoding changes the log", name)
		}
	}
}

func TestHexShape(t *testing.T) {
	l := mustParse(t, readFile(t, "testdata/vm-ovmf-ima-ng/binary_bios_measurements"))
	h := l.PCRs().Hex()
	rec := recordedPCRs(t, "testdata/vm-ovmf-ima-ng/pcrs.txt")
	if h["sha256"]["0"] != fmt.Sprintf("%x", rec[sha256Bank][0]) || len(h) != 4 || h["sha1"]["8"] != "" {
		t.Errorf("Hex() = %v", h["sha256"])
	}
}
