package mb

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// fixtureLogs are every binary log under testdata, by short name.
func fixtureLogs(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, pat := range []string{"testdata/*/binary_bios_measurements*", "testdata/go-attestation/*_eventlog"} {
		files, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			out[strings.TrimPrefix(f, "testdata/")] = readFile(t, f)
		}
	}
	if len(out) < 10 {
		t.Fatalf("only %d fixture logs", len(out))
	}
	return out
}

// goodLogs are the fixture logs that parse (all but Keylime's bogus one).
func goodLogs(t testing.TB) map[string][]byte {
	t.Helper()
	out := fixtureLogs(t)
	delete(out, "keylime/binary_bios_measurements-bogus")
	return out
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, raw []byte) *Log {
	t.Helper()
	l, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// recordedPCRs parses a pcrs.txt of the shared captures: "<bank> <index> <HEX>" per line.
func recordedPCRs(t testing.TB, name string) PCRValues {
	t.Helper()
	out := PCRValues{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, name)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			t.Fatalf("%s: bad line %q", name, sc.Text())
		}
		bank, ok := BankByName(f[0])
		idx, err := strconv.Atoi(f[1])
		val, err2 := hex.DecodeString(f[2])
		if !ok || err != nil || err2 != nil {
			t.Fatalf("%s: bad line %q", name, sc.Text())
		}
		if out[bank] == nil {
			out[bank] = map[int][]byte{}
		}
		out[bank][idx] = val
	}
	return out
}

// encodeLog writes a crypto-agile log: the original header event of raw, then l's events. It lets
// tests rewrite event data and digests and feed the result back through Parse.
func encodeLog(t testing.TB, raw []byte, events []Event) []byte {
	t.Helper()
	size := binary.LittleEndian.Uint32(raw[28:32])
	out := bytes.NewBuffer(append([]byte(nil), raw[:32+size]...))
	le := func(v any) { _ = binary.Write(out, binary.LittleEndian, v) }
	for _, e := range events {
		le(uint32(e.PCR))
		le(uint32(e.Type))
		le(uint32(len(e.Digests)))
		for _, d := range e.Digests {
			le(uint16(d.Bank))
			out.Write(d.Value)
		}
		le(uint32(len(e.Data)))
		out.Write(e.Data)
	}
	return out.Bytes()
}

// rewrite replaces the data of the event numbered num and recomputes its digests as hash(measured),
// returning the new log bytes.
func rewrite(t testing.TB, raw []byte, num int, data, measured []byte) []byte {
	t.Helper()
	l := mustParse(t, raw)
	events := cloneEvents(l.Events)
	for i := range events {
		if events[i].Num != num {
			continue
		}
		events[i].Data = data
		for j, d := range events[i].Digests {
			events[i].Digests[j].Value = hashOf(d.Bank, measured)
		}
		return encodeLog(t, raw, events)
	}
	t.Fatalf("no event %d", num)
	return nil
}

func cloneEvents(in []Event) []Event {
	out := make([]Event, len(in))
	for i, e := range in {
		out[i] = e
		out[i].Data = append([]byte(nil), e.Data...)
		out[i].Digests = append([]Digest(nil), e.Digests...)
	}
	return out
}

// findEvent returns the first event of pcr and type whose Summary contains substr.
func findEvent(t testing.TB, l *Log, pcr int, typ EventType, substr string) *Event {
	t.Helper()
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR == pcr && e.Type == typ && strings.Contains(e.Summary(), substr) {
			return e
		}
	}
	t.Fatalf("no PCR %d %s event with %q", pcr, typ, substr)
	return nil
}

var sha256Bank = tpm2.TPMAlgSHA256
