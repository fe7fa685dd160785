package agent

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"testing"

	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/tpm/device"
)

// TestWriteQuoteFixture writes a real swtpm quote response, with the AK and nonce, to the file named by
// KEYLIME_QUOTE_FIXTURE (used to refresh verifier/testdata/quote-*.json); it does nothing otherwise.
func TestWriteQuoteFixture(t *testing.T) {
	out := os.Getenv("KEYLIME_QUOTE_FIXTURE")
	if out == "" {
		t.Skip("set KEYLIME_QUOTE_FIXTURE=path to write a quote fixture")
	}
	testbed.RequireSWTPM(t)
	alg := device.RSA
	if os.Getenv("KEYLIME_QUOTE_FIXTURE_ALG") == "ecc" {
		alg = device.ECC
	}
	a := newTestAgent(t, alg, alg)
	a.cfg.IMALogPath = ""
	const nonce = "abcdefghij0123456789"
	q, err := a.quote("2.6", nonce, 0xffff&^(1<<10), false, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(map[string]any{
		"nonce": nonce, "ak_tpm": base64.StdEncoding.EncodeToString(a.ak.PublicBytes), "pubkey": string(a.nkPEM),
		"response": q,
	}, "", "  ")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
