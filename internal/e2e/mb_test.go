package e2e

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/policy/mb"
)

// bootLog is a UEFI event log captured from a real measured boot (OVMF, Secure Boot off).
const bootLog = "../../testdata/vm-ovmf-ima-ng/binary_bios_measurements"

// An agent whose TPM holds a replayed real boot is attested with a reference state generated from
// that log; a later extend of PCR 4 (a boot application measured after the fact) fails naming PCR 4.
func TestMeasuredBootScenario(t *testing.T) {
	testbed.RequireSWTPM(t)
	raw, err := os.ReadFile(bootLog)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "binary_bios_measurements")
	if err := os.WriteFile(logPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	a := s.StartAgent(AgentOptions{MBLogPath: logPath})
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	rep, err := testbed.ReplayEventLog(a.Device, raw, a.TPM.ActiveBanks())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.NotReproduced) != 0 {
		t.Fatalf("boot not reproduced on swtpm: %v", rep.NotReproduced)
	}
	ref, notes, err := mb.Generate(rep.Log, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("refstate notes: %v", notes)
	refJSON, err := json.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	req, err := s.AddRequest(a.UUID(), "{}")
	if err != nil {
		t.Fatal(err)
	}
	pol := string(refJSON)
	req.MBPolicy = &pol
	if err := s.Verifier.Add(t.Context(), a.UUID(), req); err != nil {
		t.Fatal(err)
	}
	st, err := s.WaitVerifier(a.UUID(), 15*time.Second, Attested(3))
	if err != nil {
		t.Fatalf("replayed boot not attested: %v %v", err, eventIDs(st))
	}
	if st.HasMBRefstate != 1 {
		t.Errorf("has_mb_refstate = %d", st.HasMBRefstate)
	}

	digest := make([]byte, 32)
	digest[0] = 0x42
	if err := a.Device.PCRExtend(4, tpm2.TPMAlgSHA256, digest); err != nil {
		t.Fatal(err)
	}
	st, err = s.WaitVerifier(a.UUID(), 10*time.Second, InState(api.StateInvalidQuote))
	if err != nil {
		t.Fatalf("PCR 4 extended after boot not caught: %v", err)
	}
	c := failureWith(st, "measured_boot.invalid_pcr_4")
	if c == nil {
		t.Fatalf("failures %v, want measured_boot.invalid_pcr_4", eventIDs(st))
	}
	want := rep.Log.PCRs()[tpm2.TPMAlgSHA256][4]
	if c["pcr"] != float64(4) || !strings.EqualFold(c["expected"].(string), hexOf(want)) || c["got"] == c["expected"] {
		t.Errorf("failure context %v, want PCR 4 with the log's value as expected", c)
	}
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }
