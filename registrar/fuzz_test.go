package registrar

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
)

// FuzzRegisterBody throws arbitrary bodies at the registration endpoint: it must never panic or answer
// 5xx, and a refused body must not change the store.
func FuzzRegisterBody(f *testing.F) {
	ek, _ := os.ReadFile(filepath.Join("..", "tpm", "testdata", "ek-rsa2048.pub"))
	ak, _ := os.ReadFile(filepath.Join("..", "tpm", "testdata", "ak-rsa.pub"))
	cert, _ := os.ReadFile(filepath.Join("..", "tpm", "testdata", "ek-rsa2048.der"))
	good, _ := json.Marshal(map[string]any{
		"ek_tpm": base64.StdEncoding.EncodeToString(ek), "aik_tpm": base64.StdEncoding.EncodeToString(ak),
		"ekcert": base64.StdEncoding.EncodeToString(cert), "mtls_cert": "disabled", "ip": "127.0.0.1", "port": 9002,
	})
	f.Add(good)
	f.Add([]byte(`{"ek_tpm":"AA==","aik_tpm":"AA==","port":"9002"}`))
	f.Add([]byte(`{"port": 1e99}`))
	f.Add([]byte(`[]`))
	r, err := New(Config{DBPath: filepath.Join(f.TempDir(), "registrar.db"), Log: zerolog.Nop()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	h := r.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		before := dump(t, r)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v2.6/agents/fuzz-agent", bytes.NewReader(body)))
		if rec.Code >= 500 {
			t.Fatalf("HTTP %d for %q: %s", rec.Code, body, rec.Body)
		}
		if rec.Code != http.StatusOK && !bytes.Equal(before, dump(t, r)) {
			t.Fatalf("refused body (%d) changed the store", rec.Code)
		}
	})
}
