package verifier

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/tpm"
)

// quoteFixture is a real swtpm quote over PCRs 0-9, 11-16 (written by agent's TestWriteQuoteFixture).
type quoteFixture struct {
	Nonce    string            `json:"nonce"`
	AKTPM    string            `json:"ak_tpm"`
	PubKey   string            `json:"pubkey"`
	Response api.QuoteResponse `json:"response"`
}

func loadQuoteFixture(t testing.TB, name string) (*quoteFixture, *agentState) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var f quoteFixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	akBytes, _ := base64.StdEncoding.DecodeString(f.AKTPM)
	ak, err := tpm.ParsePublic(akBytes)
	if err != nil {
		t.Fatal(err)
	}
	pol, _ := policy.ParseTPMPolicy("{}")
	st := &agentState{ak: ak, policy: pol, rec: record{
		AcceptHashAlgs: defaultHashAlgs, AcceptEncryptionAlgs: defaultEncAlgs, AcceptSigningAlgs: defaultSignAlgs,
		NKPEM: f.PubKey,
	}}
	return &f, st
}

func TestCheckRealQuotes(t *testing.T) {
	v := &Verifier{log: zerolog.Nop()}
	for _, name := range []string{"quote-rsa.json", "quote-ecc.json"} {
		f, st := loadQuoteFixture(t, name)
		if res := v.check(st, &f.Response, f.Nonce, false, agentPolicies{}); len(res.failures) != 0 {
			t.Errorf("%s: genuine quote failed: %+v", name, res.failures)
		}
		if res := v.check(st, &f.Response, "another-nonce", false, agentPolicies{}); len(res.failures) == 0 {
			t.Errorf("%s: quote accepted for another nonce", name)
		}
		st.rec.NKPEM = "-----BEGIN PUBLIC KEY-----\nother\n-----END PUBLIC KEY-----\n"
		if res := v.check(st, &f.Response, f.Nonce, false, agentPolicies{}); len(res.failures) != 1 || res.failures[0].EventID != "pcr_validation.invalid_pcr_16" {
			t.Errorf("%s: PCR 16 bound to another key not caught: %+v", name, res.failures)
		}
	}
}

// BenchmarkCheckQuote is the verifier's CPU cost per attestation without the TPM and the network:
// parse the quote string, verify the AK signature, nonce, PCR digest, PCR 16 and the PCR policy.
func BenchmarkCheckQuote(b *testing.B) {
	v := &Verifier{log: zerolog.Nop()}
	for _, name := range []string{"quote-rsa.json", "quote-ecc.json"} {
		b.Run(name, func(b *testing.B) {
			f, st := loadQuoteFixture(b, name)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if res := v.check(st, &f.Response, f.Nonce, false, agentPolicies{}); len(res.failures) != 0 {
					b.Fatal(res.failures)
				}
			}
		})
	}
}
