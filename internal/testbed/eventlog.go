package testbed

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/keylime-go/keylime/policy/mb"
)

// PCRExtender extends one PCR bank of a TPM; *device.TPM satisfies it. tpm/device hangs up the
// swtpm socket between command sequences, so a TPM opened here and one opened by an agent can take
// turns on the same swtpm.
type PCRExtender interface {
	PCRExtend(pcr int, bank tpm2.TPMAlgID, digest []byte) error
}

// PCRReader reads PCRs back; when the TPM given to ReplayEventLog also implements it (as
// *device.TPM does), the reproduced PCRs are checked instead of predicted.
type PCRReader interface {
	PCRRead(bank tpm2.TPMAlgID, pcrs []int) (map[int][]byte, error)
}

// EventLogReplay says what ReplayEventLog did to a TPM.
type EventLogReplay struct {
	// Log is the parsed event log; Log.PCRs() holds the values the TPM should now have.
	Log *mb.Log
	// Banks are the banks extended: those the TPM has active and the log carries.
	Banks []tpm2.TPMAlgID
	// Reproduced lists per bank the PCRs the log extends whose TPM value equals the log's replay.
	Reproduced map[tpm2.TPMAlgID][]int
	// NotReproduced says why a PCR (in every bank) could not be reproduced: PCR 0 of a log with a
	// StartupLocality event, PCRs the TPM refused to extend from locality 0 (17-22), a mismatch read
	// back.
	NotReproduced map[int]string
}

// ReplayEventLog makes a fresh software TPM look as if the platform of a real boot event log had
// booted on it: it extends the digest of every measured event (EV_NO_ACTION skipped) into every bank
// the TPM has active (tpmBanks) and the log carries, in log order, so that an agent serving that log
// produces quotes that match it.
//
// swtpm runs TPM2_Startup from locality 0, so PCR 0 starts at zero; a log with a StartupLocality
// event (locality 3 or 4, e.g. Intel TXT platforms and Keylime's own test log) expects PCR 0 to start
// at 00…0‖locality, which no PCR_Extend can produce. Such a PCR 0 is still extended but reported in
// NotReproduced; pick a log without StartupLocality (or leave PCR 0 out of the checks) when the
// verifier must accept the boot. PCRs 17-22 need a higher locality and are reported likewise.
func ReplayEventLog(tpm PCRExtender, raw []byte, tpmBanks []tpm2.TPMAlgID) (*EventLogReplay, error) {
	l, err := mb.Parse(raw)
	if err != nil {
		return nil, err
	}
	r := &EventLogReplay{Log: l, Reproduced: map[tpm2.TPMAlgID][]int{}, NotReproduced: map[int]string{}}
	for _, b := range tpmBanks {
		if _, ok := l.PCRs()[b]; ok && !slices.Contains(r.Banks, b) {
			r.Banks = append(r.Banks, b)
		}
	}
	if len(r.Banks) == 0 {
		return nil, fmt.Errorf("replay event log: the TPM's banks %s and the log's banks %s have none in common", bankNames(tpmBanks), bankNames(l.Banks))
	}
	if l.StartupLocality != 0 {
		r.NotReproduced[0] = fmt.Sprintf("the log starts PCR 0 at locality %d, swtpm started from locality 0", l.StartupLocality)
	}
	for i := range l.Events {
		e := &l.Events[i]
		if !e.Measured() || e.PCR < 0 || e.PCR > 23 {
			continue
		}
		if _, failed := r.NotReproduced[e.PCR]; failed && e.PCR != 0 {
			continue
		}
		for _, b := range r.Banks {
			if err := tpm.PCRExtend(e.PCR, b, e.Digest(b)); err != nil {
				r.NotReproduced[e.PCR] = fmt.Sprintf("%s: %v", e.Describe(), err)
				break
			}
		}
	}
	for _, b := range r.Banks {
		pcrs := l.PCRs().PCRsOf(b)
		var got map[int][]byte
		if rd, ok := tpm.(PCRReader); ok && len(pcrs) > 0 {
			if got, err = rd.PCRRead(b, pcrs); err != nil {
				return r, fmt.Errorf("replay event log: read back %s PCRs: %w", mb.BankName(b), err)
			}
		}
		for _, p := range pcrs {
			if _, failed := r.NotReproduced[p]; failed {
				continue
			}
			if got != nil && !bytes.Equal(got[p], l.PCRs()[b][p]) {
				r.NotReproduced[p] = fmt.Sprintf("%s PCR %d reads %x, the log replays to %x (was the TPM fresh?)", mb.BankName(b), p, got[p], l.PCRs()[b][p])
				continue
			}
			r.Reproduced[b] = append(r.Reproduced[b], p)
		}
	}
	for p := range r.NotReproduced {
		for _, b := range r.Banks {
			r.Reproduced[b] = slices.DeleteFunc(r.Reproduced[b], func(x int) bool { return x == p })
		}
	}
	return r, nil
}

// ActiveBanks returns the PCR banks activated at provisioning (PCRBanks) as TPM algorithms.
func (s *SWTPM) ActiveBanks() []tpm2.TPMAlgID {
	var out []tpm2.TPMAlgID
	for _, name := range strings.Split(s.PCRBanks, ",") {
		if b, ok := mb.BankByName(strings.TrimSpace(name)); ok {
			out = append(out, b)
		}
	}
	return out
}

func bankNames(bs []tpm2.TPMAlgID) string {
	var names []string
	for _, b := range bs {
		names = append(names, mb.BankName(b))
	}
	return strings.Join(names, ",")
}

// RefStateJSON is the measured-boot reference state that `keylime policy create measured-boot
// --without-secureboot` makes from the UEFI event log at path, as JSON.
func RefStateJSON(t testing.TB, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := mb.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	ref, _, err := mb.Generate(l, true)
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
