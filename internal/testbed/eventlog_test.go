package testbed

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/policy/mb"
	"github.com/keylime-go/keylime/tpm/device"
)

// readPCRsTxt parses testdata/ovmf_pcrs.txt: "<bank> <index> <HEX>" as the capture's TPM reported.
func readPCRsTxt(t *testing.T, name string) map[tpm2.TPMAlgID]map[int][]byte {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[tpm2.TPMAlgID]map[int][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		b, ok := mb.BankByName(f[0])
		idx, err := strconv.Atoi(f[1])
		val, err2 := hex.DecodeString(f[2])
		if !ok || err != nil || err2 != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		if out[b] == nil {
			out[b] = map[int][]byte{}
		}
		out[b][idx] = val
	}
	return out
}

// TestReplayEventLogOnSWTPM replays the captured OVMF boot into a fresh swtpm with the capture's
// three banks, then reads the PCRs back through a second tpm/device connection: every measured-boot
// PCR equals both our replay of the log and what the real boot's TPM reported.
func TestReplayEventLogOnSWTPM(t *testing.T) {
	s := StartSWTPM(t, WithPCRBanks("sha1,sha256,sha384"))
	raw, err := os.ReadFile("testdata/ovmf_binary_bios_measurements")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := device.Open(s.Spec())
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ReplayEventLog(dev, raw, s.ActiveBanks())
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if want := []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384}; !slices.Equal(rep.Banks, want) {
		t.Fatalf("banks %v, want %v", rep.Banks, want)
	}
	if len(rep.NotReproduced) != 0 {
		t.Fatalf("not reproduced: %v", rep.NotReproduced)
	}
	for _, b := range rep.Banks {
		if want := []int{0, 1, 2, 3, 4, 5, 6, 7, 9}; !slices.Equal(rep.Reproduced[b], want) {
			t.Errorf("%s reproduced %v, want %v", mb.BankName(b), rep.Reproduced[b], want)
		}
	}

	reader, err := device.Open(s.Spec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reader.Close() })
	recorded := readPCRsTxt(t, "testdata/ovmf_pcrs.txt")
	pcrs := slices.DeleteFunc(slices.Clone(policy.MeasuredBootPCRs), func(p int) bool { return p == 10 })
	for _, b := range rep.Banks {
		got, err := reader.PCRRead(b, pcrs)
		if err != nil {
			t.Fatal(err)
		}
		if fails := rep.Log.CheckPCRs(b, got, pcrs); len(fails) != 0 {
			t.Errorf("%s: swtpm differs from the log's replay: %v", mb.BankName(b), fails)
		}
		for _, p := range pcrs {
			if !bytes.Equal(got[p], recorded[b][p]) {
				t.Errorf("%s PCR %d: swtpm %x, the captured boot's TPM %x", mb.BankName(b), p, got[p], recorded[b][p])
			}
		}
	}
}

// TestReplayEventLogLocality3 replays Keylime's locality-3 log into swtpm's default banks: PCR 0 is
// reported as not reproducible and really differs, every other PCR matches.
func TestReplayEventLogLocality3(t *testing.T) {
	s := StartSWTPM(t)
	raw, err := os.ReadFile("testdata/locality3_binary_bios_measurements")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := device.Open(s.Spec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	rep, err := ReplayEventLog(dev, raw, s.ActiveBanks())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.NotReproduced) != 1 || !strings.Contains(rep.NotReproduced[0], "locality 3") {
		t.Fatalf("not reproduced: %v", rep.NotReproduced)
	}
	got, err := dev.PCRRead(tpm2.TPMAlgSHA256, []int{0, 4, 7, 14})
	if err != nil {
		t.Fatal(err)
	}
	fails := rep.Log.CheckPCRs(tpm2.TPMAlgSHA256, got, []int{0, 4, 7, 14})
	if len(fails) != 1 || fails[0].EventID != "measured_boot.invalid_pcr_0" {
		t.Fatalf("failures %v, want only PCR 0", fails)
	}
	if want := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 14}; !slices.Equal(rep.Reproduced[tpm2.TPMAlgSHA256], want) {
		t.Errorf("reproduced %v, want %v", rep.Reproduced[tpm2.TPMAlgSHA256], want)
	}
}

// refusingTPM records extends and refuses PCRs 17-22 as a TPM does at locality 0.
type refusingTPM struct{ extends int }

func (f *refusingTPM) PCRExtend(pcr int, bank tpm2.TPMAlgID, digest []byte) error {
	if pcr >= 17 && pcr <= 22 {
		return errors.New("TPM_RC_LOCALITY")
	}
	f.extends++
	return nil
}

func TestReplayEventLogRefusedPCR(t *testing.T) {
	raw, err := os.ReadFile("testdata/ovmf_binary_bios_measurements")
	if err != nil {
		t.Fatal(err)
	}
	l, err := mb.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	// Move every PCR 9 event to PCR 18, as a DRTM log would have it.
	var b bytes.Buffer
	b.Write(raw[:77])
	for _, e := range l.Events {
		if e.PCR == 9 {
			e.PCR = 18
		}
		for _, v := range []uint32{uint32(e.PCR), uint32(e.Type), uint32(len(e.Digests))} {
			b.Write([]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)})
		}
		for _, d := range e.Digests {
			b.Write([]byte{byte(d.Bank), byte(d.Bank >> 8)})
			b.Write(d.Value)
		}
		n := len(e.Data)
		b.Write([]byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)})
		b.Write(e.Data)
	}
	f := &refusingTPM{}
	rep, err := ReplayEventLog(f, b.Bytes(), []tpm2.TPMAlgID{tpm2.TPMAlgSHA256, tpm2.TPMAlgSM3256})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rep.NotReproduced[18], "TPM_RC_LOCALITY") || len(rep.NotReproduced) != 1 {
		t.Errorf("not reproduced %v", rep.NotReproduced)
	}
	if !slices.Equal(rep.Banks, []tpm2.TPMAlgID{tpm2.TPMAlgSHA256}) || slices.Contains(rep.Reproduced[tpm2.TPMAlgSHA256], 18) || f.extends != 23 {
		t.Errorf("banks %v reproduced %v extends %d", rep.Banks, rep.Reproduced, f.extends)
	}
	if _, err := ReplayEventLog(f, raw, []tpm2.TPMAlgID{tpm2.TPMAlgSM3256}); err == nil {
		t.Error("no common bank accepted")
	}
	if _, err := ReplayEventLog(f, raw[:50], nil); !errors.Is(err, mb.ErrInvalidLog) {
		t.Errorf("truncated log: %v", err)
	}
}
