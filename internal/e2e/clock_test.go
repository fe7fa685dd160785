package e2e

import (
	"context"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
)

// addSoftAgent starts a software agent (ECC AK) trusting the system's CA and adds it to the verifier
// with an empty tpm_policy; edit changes the add request first (nil: none).
func addSoftAgent(t *testing.T, s *System, cfg softagent.Config, edit func(*api.AddAgentRequest)) *softagent.Agent {
	t.Helper()
	if cfg.TPM == nil {
		tp, err := softagent.NewTPM(softagent.ECC)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TPM = tp
	}
	cfg.ClientCAs = s.ClientTLS().Pool
	ln := listen(t)
	sa, err := softagent.New(ln, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sa.Close() })
	cert := string(sa.CertPEM())
	empty := ""
	req := &api.AddAgentRequest{
		CloudAgentIP: "127.0.0.1", CloudAgentPort: api.Port(ln.Addr().(*net.TCPAddr).Port), TPMPolicy: "{}", MBPolicyName: &empty,
		Metadata: "{}", AKTPM: base64.StdEncoding.EncodeToString(sa.AKPublic()), MTLSCert: &cert, SupportedVersion: api.CurrentVersion,
	}
	if edit != nil {
		edit(req)
	}
	if err := s.Verifier.Add(context.Background(), sa.UUID(), req); err != nil {
		t.Fatal(err)
	}
	return sa
}

// TestClockGoingBackwardsRefused: a software TPM (the only way to make a TPM's clock run backwards)
// is attested, then reports an older clock: the verifier fails it with the clock check.
func TestClockGoingBackwardsRefused(t *testing.T) {
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{QuoteInterval: 100 * time.Millisecond})
	tp, err := softagent.NewTPM(softagent.ECC)
	if err != nil {
		t.Fatal(err)
	}
	sa := addSoftAgent(t, s, softagent.Config{TPM: tp}, nil)
	if _, err := s.WaitVerifier(sa.UUID(), 10*time.Second, Attested(2)); err != nil {
		t.Fatal(err)
	}
	now := tp.Clock()
	old := now
	old.Clock = now.Clock / 2
	sa.SetTamper(softagent.Tamper{Clock: &old})
	st, err := s.WaitVerifier(sa.UUID(), 10*time.Second, InState(api.StateInvalidQuote))
	if err != nil {
		t.Fatal(err)
	}
	if st.LastEventID == nil || *st.LastEventID != "qoute_validation.clock_check" || !strings.Contains(st.LastFailure, "clock went backwards") {
		t.Fatalf("failure = %v %q", st.LastEventID, st.LastFailure)
	}
}
