package softagent_test

import (
	"context"
	"crypto"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
)

// BenchmarkTPMQuote is the software TPM's quote (PCRs 10 and 16, sha256): marshalling and signing. Run
// with -cpu 1 for quotes per second per core.
func BenchmarkTPMQuote(b *testing.B) {
	for _, tc := range []struct {
		name string
		key  func(testing.TB) crypto.Signer
	}{
		{"rsa2048", func(t testing.TB) crypto.Signer { return rsaAKKey(t) }},
		{"ecc-p256", func(t testing.TB) crypto.Signer { return eccKey(t) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			st := newTPM(b, tc.key(b), crypto.SHA256)
			nonce := []byte("benchmarknonce012345")
			pcrs := []int{10, 16}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, _, err := st.Quote(nonce, tpm2.TPMAlgSHA256, pcrs); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "quotes/s")
		})
	}
}

// BenchmarkAgentQuote is a whole integrity quote over a kept-alive mTLS connection: HTTP, PCR 16
// binding, quote, PCR blob and JSON, client and server in this process.
func BenchmarkAgentQuote(b *testing.B) {
	m := newPKI(b)
	for _, tc := range []struct {
		name string
		key  func(testing.TB) crypto.Signer
	}{
		{"rsa2048", func(t testing.TB) crypto.Signer { return rsaAKKey(t) }},
		{"ecc-p256", func(t testing.TB) crypto.Signer { return eccKey(t) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			a := startAgent(b, m, softagent.Config{TPM: newTPM(b, tc.key(b), crypto.SHA256)})
			c := dial(b, a, m, api.CurrentVersion)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.IntegrityQuote(ctx, "benchmarknonce012345", "0x400", true, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "quotes/s")
		})
	}
}
