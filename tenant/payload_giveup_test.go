package tenant_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/e2e"
	"github.com/keylime-go/keylime/tenant"
)

// TestVerifyGivesUpAndStops: an agent that fails its attestation never gets V, so it never proves the
// payload key; --verify gives up after its retries, stops the agent on the verifier and reports it, and
// the payload never reaches the agent's disk.
func TestVerifyGivesUpAndStops(t *testing.T) {
	b := newBed(t)
	a := b.startAgent(t)
	tn := b.tenant(t, func(c *tenant.Config) { c.MaxRetries = 3; c.RetryInterval = 100 * time.Millisecond })
	ctx := ctxT(t, time.Minute)
	wrong := `{"15": ["` + "ff00000000000000000000000000000000000000000000000000000000000000" + `"]}`
	if _, err := tn.Add(ctx, tenant.AddOptions{AgentID: a.UUID(), TPMPolicy: wrong, Payload: []byte("top secret")}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := tn.VerifyPayload(ctx, a.UUID(), 0)
	if !errors.Is(err, tenant.ErrPayloadNotVerified) {
		t.Fatalf("verify = %v, want ErrPayloadNotVerified", err)
	}
	t.Logf("gave up after %v", time.Since(start))
	st, err := b.s.WaitVerifier(a.UUID(), 5*time.Second, e2e.InState(api.StateTenantFailed))
	if err != nil {
		t.Fatalf("agent not stopped on the verifier: %v", err)
	}
	if st.AttestationCount != 0 {
		t.Errorf("attestation_count %d", st.AttestationCount)
	}
	if _, err := os.Stat(filepath.Join(a.DataDir, "secure", "unzipped")); err == nil {
		t.Fatal("the payload reached the agent's disk")
	}
}
