package registrar

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkRegistrations measures batches of 200 registrations (parse and check EK and AK, EK
// certificate, software MakeCredential, one bbolt transaction each) through the HTTP handler, 8 at a time.
func BenchmarkRegistrations(b *testing.B) {
	ek, _ := os.ReadFile(filepath.Join("..", "tpm", "testdata", "ek-rsa2048.pub"))
	ak, _ := os.ReadFile(filepath.Join("..", "tpm", "testdata", "ak-rsa.pub"))
	cert, _ := os.ReadFile(filepath.Join("..", "tpm", "testdata", "ek-rsa2048.der"))
	body, _ := json.Marshal(map[string]any{
		"ek_tpm": base64.StdEncoding.EncodeToString(ek), "aik_tpm": base64.StdEncoding.EncodeToString(ak),
		"ekcert": base64.StdEncoding.EncodeToString(cert), "mtls_cert": "disabled", "ip": "127.0.0.1", "port": 9002,
	})
	r, err := New(Config{DBPath: filepath.Join(b.TempDir(), "registrar.db"), Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	h := r.Handler()
	const batch = 200
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		ids := make(chan int, batch)
		for j := 0; j < batch; j++ {
			ids <- j
		}
		close(ids)
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range ids {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, fmt.Sprintf("/v2.6/agents/bench-%d-%d", i, j), bytes.NewReader(body)))
					if rec.Code != http.StatusOK {
						b.Errorf("HTTP %d: %s", rec.Code, rec.Body)
					}
				}
			}()
		}
		wg.Wait()
	}
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "registrations/s")
}
