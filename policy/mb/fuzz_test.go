package mb

import (
	"encoding/json"
	"testing"
)

// FuzzParseEventLog (run with -fuzzminimizetime 1s) feeds arbitrary bytes through Parse (go-attestation behind our wrapper), then
// through every decoder, the generator and the example policy: nothing may panic, and an accepted
// log's replay only has banks its header declares.
func FuzzParseEventLog(f *testing.F) {
	for _, raw := range fixtureLogs(f) {
		f.Add(raw)
		if len(raw) > 200 {
			f.Add(raw[:len(raw)/2])
		}
	}
	_, ref := generated(&testing.T{}, sbLog)
	f.Fuzz(func(t *testing.T, raw []byte) {
		l, err := Parse(raw)
		if err != nil {
			return
		}
		for b := range l.PCRs() {
			found := false
			for _, hb := range l.Banks {
				found = found || hb == b
			}
			if !found {
				t.Fatalf("replayed bank %s not in the header %v", BankName(b), l.Banks)
			}
		}
		for i := range l.Events {
			e := &l.Events[i]
			_ = e.Summary()
			if v, err := e.Variable(); err == nil {
				_, _ = v.SignatureLists()
				_, _ = v.AuthoritySignature()
				_, _ = v.Enabled()
			}
			if il, err := e.ImageLoad(); err == nil {
				_ = il.DevicePathText()
				_ = il.FromFirmwareVolume()
			}
			_, _ = e.Tagged()
			_, _ = e.FirmwareBlob()
		}
		_ = l.PCRs().BootAggregates()
		_ = Evaluate(PolicyExample, ref, l)
		if g, _, err := Generate(l, true); err == nil {
			_ = Evaluate(PolicyExample, g, l)
		}
	})
}

// FuzzRefState feeds arbitrary text to ParseRefState: nothing may panic, and an accepted reference
// state writes JSON that loads again to the same JSON.
func FuzzRefState(f *testing.F) {
	f.Add(readFile(f, "testdata/keylime/example_reference_state.json"))
	// Small seeds only: the Secure Boot reference states are ~80 KB (371 dbx entries) and slow every
	// run. Run with -fuzzminimizetime 1s: minimizing a large interesting input otherwise takes a minute.
	for _, name := range []string{vmLog, "testdata/go-attestation/crypto_agile_eventlog"} {
		l := mustParse(f, readFile(f, name))
		ref, _, err := Generate(l, true)
		if err != nil {
			f.Fatal(err)
		}
		b, _ := json.Marshal(ref)
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"kernels": [{"kernel_cmdline": "(?=x)"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRefState(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRefState(b)
		if err != nil {
			t.Fatalf("written reference state does not load: %v\n%s", err, b)
		}
		b2, _ := json.Marshal(r2)
		if string(b) != string(b2) {
			t.Fatalf("not stable:\n%s\n%s", b, b2)
		}
	})
}
