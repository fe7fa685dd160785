package softagent_test

import (
	"context"
	"crypto"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/tpm"
)

// Every fault the softagent can inject produces a quote the verifier's checks (tpm.VerifyQuote, the PCR
// 16 binding, the clock rule) refuse, or an HTTP failure; with the fault removed, the next quote passes.
func TestTamper(t *testing.T) {
	m := newPKI(t)
	for _, alg := range []softagent.KeyAlg{softagent.RSA, softagent.ECC} {
		t.Run(alg.String(), func(t *testing.T) {
			var key, otherKey crypto.Signer = rsaAKKey(t), eccKey(t)
			if alg == softagent.ECC {
				key = eccKey(t)
			}
			other, err := softagent.NewTPM(alg)
			if err != nil {
				t.Fatal(err)
			}
			a := startAgent(t, m, softagent.Config{TPM: newTPM(t, key, crypto.SHA256), IMA: &softagent.IMAConfig{PerQuote: 1}})
			c := dial(t, a, m, api.CurrentVersion)
			ctx := context.Background()
			// A machine that has rebooted and restarted before, so that the counts can go down.
			a.TPM().SetClock(softagent.ClockInfo{Clock: 1_000_000, ResetCount: 5, RestartCount: 2, Safe: true})

			// prev is the last quote the verifier accepted.
			var prev *tpm.QuoteData
			honest := func(t *testing.T) {
				t.Helper()
				res, err := c.IntegrityQuote(ctx, "honest", "0x400", false, 0)
				if err != nil {
					t.Fatalf("honest quote: %v", err)
				}
				data, err := check(t, a, res, "honest", prev)
				if err != nil {
					t.Fatalf("honest quote refused: %v", err)
				}
				prev = data
			}
			honest(t)

			clockNow := func() softagent.ClockInfo { return a.TPM().Clock() }
			tests := []struct {
				name   string
				tamper func() softagent.Tamper
				// direct changes the TPM instead of installing a fault; undo reverts it.
				direct, undo func()
				want         error // sentinel the check must return
				status       int   // HTTP status instead of a quote
			}{
				{name: "clock runs backwards", tamper: func() softagent.Tamper {
					c := clockNow()
					c.Clock = prev.Clock - 1000
					return softagent.Tamper{Clock: &c}
				}, want: errClock},
				{name: "clock stands still", tamper: func() softagent.Tamper {
					c := clockNow()
					c.Clock = prev.Clock
					return softagent.Tamper{Clock: &c}
				}, want: errClock},
				{name: "reset count decreases", tamper: func() softagent.Tamper {
					c := clockNow()
					c.ResetCount = prev.ResetCount - 1
					return softagent.Tamper{Clock: &c}
				}, want: errClock},
				{name: "restart count decreases", tamper: func() softagent.Tamper {
					c := clockNow()
					c.RestartCount = prev.RestartCount - 1
					return softagent.Tamper{Clock: &c}
				}, want: errClock},
				{name: "clock not safe", tamper: func() softagent.Tamper {
					c := clockNow()
					c.Safe = false
					return softagent.Tamper{Clock: &c}
				}, want: errClock},
				{name: "TPM clock set back", direct: func() {
					c := clockNow()
					c.Clock = prev.Clock - 5000
					a.TPM().SetClock(c)
				}, undo: func() {
					c := clockNow()
					c.Clock = prev.Clock + 10000
					a.TPM().SetClock(c)
				}, want: errClock},
				{name: "signed by another AK", tamper: func() softagent.Tamper {
					return softagent.Tamper{SignWith: other.Signer()}
				}, want: tpm.ErrBadQuote},
				{name: "signed by a key of the other type", tamper: func() softagent.Tamper {
					return softagent.Tamper{SignWith: otherKey}
				}, want: tpm.ErrBadQuote},
				{name: "replayed nonce", tamper: func() softagent.Tamper {
					return softagent.Tamper{Nonce: []byte("honest")}
				}, want: tpm.ErrBadQuote},
				{name: "forged pcrDigest", tamper: func() softagent.Tamper {
					return softagent.Tamper{EditAttest: func(a *tpm2.TPMSAttest) {
						info, _ := a.Attested.Quote()
						info.PCRDigest.Buffer[0] ^= 1
					}}
				}, want: tpm.ErrBadQuote},
				{name: "forged magic", tamper: func() softagent.Tamper {
					return softagent.Tamper{EditAttest: func(a *tpm2.TPMSAttest) { a.Magic = 0x12345678 }}
				}, want: tpm.ErrBadQuote},
				{name: "forged selection of another bank", tamper: func() softagent.Tamper {
					return softagent.Tamper{EditAttest: func(a *tpm2.TPMSAttest) {
						info, _ := a.Attested.Quote()
						info.PCRSelect.PCRSelections[0].Hash = tpm2.TPMAlgSHA1
					}}
				}, want: tpm.ErrBadQuote},
				{name: "corrupt PCR blob", tamper: func() softagent.Tamper {
					return softagent.Tamper{CorruptPCRs: true}
				}, want: tpm.ErrBadQuote},
				{name: "PCR 16 bound to another key", tamper: func() softagent.Tamper {
					return softagent.Tamper{DataPCRData: []byte("-----BEGIN PUBLIC KEY-----\nother\n-----END PUBLIC KEY-----\n")}
				}, want: errDataPCR},
				{name: "pubkey replaced in the response", tamper: func() softagent.Tamper {
					return softagent.Tamper{Response: func(r *api.QuoteResponse) { r.PubKey = "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----\n" }}
				}, want: errDataPCR},
				{name: "hash_alg lie", tamper: func() softagent.Tamper {
					return softagent.Tamper{Response: func(r *api.QuoteResponse) { r.HashAlg = "sha1" }}
				}, want: tpm.ErrBadQuote},
				{name: "HTTP 503", tamper: func() softagent.Tamper {
					return softagent.Tamper{FailStatus: http.StatusServiceUnavailable}
				}, status: http.StatusServiceUnavailable},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if tt.direct != nil {
						tt.direct()
					} else {
						a.SetTamper(tt.tamper())
					}
					res, err := c.IntegrityQuote(ctx, "tampered", "0x400", false, 0)
					if tt.undo != nil {
						tt.undo()
					}
					a.SetTamper(softagent.Tamper{})
					if tt.status != 0 {
						if got := client.StatusCode(err); got != tt.status {
							t.Fatalf("status %d (%v), want %d", got, err, tt.status)
						}
					} else {
						if err != nil {
							t.Fatalf("IntegrityQuote: %v", err)
						}
						_, err = check(t, a, res, "tampered", prev)
						if !errors.Is(err, tt.want) {
							t.Fatalf("check = %v, want %v", err, tt.want)
						}
						t.Log(err)
					}
					honest(t)
				})
			}
		})
	}
}

// Tamper.Delay holds answers (a slow agent): a client with a shorter deadline gives up, a patient one
// gets the quote.
func TestTamperDelay(t *testing.T) {
	m := newPKI(t)
	a := startAgent(t, m, softagent.Config{TPM: newTPM(t, eccKey(t), crypto.SHA256)})
	c := dial(t, a, m, api.CurrentVersion)
	a.SetTamper(softagent.Tamper{Delay: 300 * time.Millisecond})
	if got := a.Tamper().Delay; got != 300*time.Millisecond {
		t.Errorf("Tamper() = %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.IdentityQuote(ctx, "slow"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("short deadline: %v", err)
	}
	start := time.Now()
	res, err := c.IdentityQuote(context.Background(), "slow")
	if err != nil {
		t.Fatalf("patient client: %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("answered after %v", d)
	}
	if _, err := check(t, a, res, "slow", nil); err != nil {
		t.Error(err)
	}
}
