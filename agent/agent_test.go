package agent

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/tpm"
	"github.com/keylime-go/keylime/tpm/device"
)

// newTestAgent builds an agent on a fresh swtpm (no registrar: these tests only use its API).
func newTestAgent(t testing.TB, ekAlg, akAlg device.KeyAlg) *Agent {
	t.Helper()
	sw := testbed.StartSWTPM(t)
	dev, err := device.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	dir := t.TempDir()
	ima := filepath.Join(dir, "ima")
	if err := os.WriteFile(ima, []byte("10 a ima-ng sha256:00 /one\n10 b ima-ng sha256:00 /two\n10 c ima-ng sha256:00 /three\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "uefi"), []byte{1, 2, 3}, 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{
		TPM: dev, UUID: "generate", DataDir: filepath.Join(dir, "data"),
		PayloadKeyPath: filepath.Join(dir, "nk.pem"), ServerKeyPath: filepath.Join(dir, "k.pem"), ServerCertPath: filepath.Join(dir, "c.pem"),
		EnableMTLS: true, EKAlg: ekAlg, AKAlg: akAlg, HashAlg: "sha256",
		IMALogPath: ima, MBLogPath: filepath.Join(dir, "uefi"),
		ContactIP: "127.0.0.1", ContactPort: 9002, Log: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func get(t testing.TB, h http.Handler, path string) (int, api.Response) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var env api.Response
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
		t.Fatalf("%s: %q", path, rec.Body)
	}
	return rec.Code, env
}

func TestQuoteAPI(t *testing.T) {
	testbed.RequireSWTPM(t)
	for _, tc := range []struct {
		name         string
		ekAlg, akAlg device.KeyAlg
		signAlg      string
	}{{"RSA", device.RSA, device.RSA, "rsassa"}, {"ECC", device.ECC, device.ECC, "ecdsa"}} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestAgent(t, tc.ekAlg, tc.akAlg)
			h := a.Handler()
			ak, err := tpm.ParsePublic(a.ak.PublicBytes)
			if err != nil {
				t.Fatal(err)
			}
			// Integrity quote of PCRs 0 and 15 with the NK, the IMA log from entry 1 and the UEFI log.
			code, env := get(t, h, "/v2.6/quotes/integrity?nonce=abcdefghij0123456789&mask=0x8401&partial=0&ima_ml_entry=1")
			if code != 200 {
				t.Fatalf("%d %s", code, env.Status)
			}
			var q api.QuoteResponse
			if err := env.Decode(&q); err != nil {
				t.Fatal(err)
			}
			quote, err := tpm.ParseQuote(q.Quote)
			if err != nil {
				t.Fatal(err)
			}
			data, err := tpm.VerifyQuote(quote, ak, []byte("abcdefghij0123456789"), "sha256")
			if err != nil {
				t.Fatalf("our own quote does not verify: %v", err)
			}
			if len(data.PCRs) != 4 || data.PCRs[0] == nil || data.PCRs[10] == nil || data.PCRs[15] == nil || data.PCRs[16] == nil {
				t.Errorf("quoted PCRs %v, want 0, 10, 15, 16", data.PCRs)
			}
			want16, _ := tpm.DataPCRValue("sha256", []byte(q.PubKey))
			if string(data.PCRs[16]) != string(want16) || !strings.HasPrefix(q.PubKey, "-----BEGIN PUBLIC KEY-----") {
				t.Errorf("PCR 16 does not bind the returned NK")
			}
			if q.HashAlg != "sha256" || q.SignAlg != tc.signAlg || q.IMAMeasurementListEntry == nil || *q.IMAMeasurementListEntry != 1 ||
				q.IMAMeasurementList == nil || !strings.HasPrefix(*q.IMAMeasurementList, "10 b ") {
				t.Errorf("response = %+v", q)
			}
			if q.MBMeasurementList == nil || *q.MBMeasurementList != base64.StdEncoding.EncodeToString([]byte{1, 2, 3}) {
				t.Errorf("mb_measurement_list = %v", q.MBMeasurementList)
			}
			// Without PCR 10 in the mask: no IMA log.
			_, env = get(t, h, "/v2.6/quotes/integrity?nonce=x0&mask=0x8000&partial=1&ima_ml_entry=0")
			q = api.QuoteResponse{}
			_ = env.Decode(&q)
			if q.IMAMeasurementList != nil || q.IMAMeasurementListEntry != nil {
				t.Errorf("IMA log sent although PCR 10 was not asked for: %+v", q)
			}
			// partial=1: no NK; mask without PCR 0: no UEFI log; entry beyond the log: whole log from 0.
			_, env = get(t, h, "/v2.1/quotes/integrity?nonce=x1&mask=0x400&partial=1&ima_ml_entry=99")
			q = api.QuoteResponse{}
			_ = env.Decode(&q)
			if q.PubKey != "" || q.MBMeasurementList != nil || *q.IMAMeasurementListEntry != 0 || !strings.HasPrefix(*q.IMAMeasurementList, "10 a ") {
				t.Errorf("partial response = %+v", q)
			}
			if tc.ekAlg == device.RSA && q.EncAlg != "rsa" {
				t.Errorf("API 2.1 enc_alg = %q, want rsa", q.EncAlg)
			}
			// Identity quote: PCR 16 only, always with the NK.
			_, env = get(t, h, "/v2.6/quotes/identity?nonce=n0nce")
			q = api.QuoteResponse{}
			_ = env.Decode(&q)
			quote, _ = tpm.ParseQuote(q.Quote)
			if data, err := tpm.VerifyQuote(quote, ak, []byte("n0nce"), "sha256"); err != nil || len(data.PCRs) != 1 || q.PubKey == "" {
				t.Errorf("identity quote: %v %v", err, data)
			}
		})
	}
}

func TestQuoteAPIValidation(t *testing.T) {
	testbed.RequireSWTPM(t)
	a := newTestAgent(t, device.ECC, device.ECC)
	h := a.Handler()
	long := strings.Repeat("a", 65)
	for _, tc := range []struct {
		path string
		code int
		msg  string
	}{
		{"/v2.6/quotes/integrity?mask=0x1&partial=0", 400, "nonce"},
		{"/v2.6/quotes/integrity?nonce=" + long + "&mask=0x1&partial=0", 400, "nonce"},
		{"/v2.6/quotes/integrity?nonce=a-b&mask=0x1&partial=0", 400, "alphanumeric"},
		{"/v2.6/quotes/integrity?nonce=ab&mask=zz&partial=0", 400, "mask"},
		{"/v2.6/quotes/integrity?nonce=ab&mask=0x1000000&partial=0", 400, "mask"},
		{"/v2.6/quotes/integrity?nonce=ab&mask=0x-1&partial=0", 400, "mask"},
		{"/v2.6/quotes/integrity?nonce=ab&mask=0x1&partial=2", 400, "partial"},
		{"/v2.6/quotes/integrity?nonce=ab&mask=0x1", 400, "partial"},
		{"/v2.6/quotes/identity?nonce=", 400, "nonce"},
		{"/v9.0/quotes/identity?nonce=ab", 400, "API version not supported"},
		{"/v2.1/agent/info", 404, "not found"},
		{"/v2.6/nothing", 404, "not found"},
	} {
		code, env := get(t, h, tc.path)
		if code != tc.code || !strings.Contains(env.Status, tc.msg) {
			t.Errorf("%s: %d %q, want %d with %q", tc.path, code, env.Status, tc.code, tc.msg)
		}
	}
	code, env := get(t, h, "/v2.2/agent/info")
	var info api.AgentInfo
	if err := env.Decode(&info); code != 200 || err != nil || info.AgentUUID != a.UUID() || info.TPMSignAlg != "ecdsa" || info.TPMEncAlg != "ecc384" {
		t.Errorf("agent/info: %d %+v", code, info)
	}
	code, env = get(t, h, "/version")
	var v api.AgentVersion
	if err := env.Decode(&v); code != 200 || err != nil || v.SupportedVersion != "2.6" || len(v.SupportedVersions) != 6 {
		t.Errorf("version: %+v", v)
	}
}

// BenchmarkIntegrityQuote measures the agent's quote path on swtpm (reset and extend PCR 16, quote,
// PCR read, PCR blob, JSON), directly ("direct") and through the API handler ("handler": routing,
// parameter checks, the JSON envelope; no TLS). Besides the time per quote it reports the time spent
// waiting for the TPM (tpm-ms/quote) and the agent's own time on top of it (overhead-µs/quote).
func BenchmarkIntegrityQuote(b *testing.B) {
	for _, tc := range []struct {
		name string
		alg  device.KeyAlg
	}{{"RSA", device.RSA}, {"ECC", device.ECC}} {
		b.Run(tc.name, func(b *testing.B) {
			testbed.RequireSWTPM(b)
			a := newTestAgent(b, tc.alg, tc.alg)
			a.cfg.IMALogPath = ""
			h := a.Handler()
			const url = "/v2.6/quotes/integrity?nonce=abcdefghij0123456789&mask=0xfbff&partial=1&ima_ml_entry=0"
			for _, path := range []struct {
				name  string
				quote func() error
			}{
				{"direct", func() error {
					_, err := a.quote("2.6", "abcdefghij0123456789", 0xffff&^(1<<10), false, -1)
					return err
				}},
				{"handler", func() error {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil))
					if rec.Code != http.StatusOK {
						return fmt.Errorf("HTTP %d: %s", rec.Code, rec.Body)
					}
					return nil
				}},
			} {
				b.Run(path.name, func(b *testing.B) {
					busy0, start := a.cfg.TPM.Busy(), time.Now()
					for b.Loop() {
						if err := path.quote(); err != nil {
							b.Fatal(err)
						}
					}
					total, tpmTime := time.Since(start), a.cfg.TPM.Busy()-busy0
					n := float64(b.N)
					b.ReportMetric(float64(total.Microseconds())/n/1000, "ms/quote")
					b.ReportMetric(float64(tpmTime.Microseconds())/n/1000, "tpm-ms/quote")
					b.ReportMetric(float64((total-tpmTime).Microseconds())/n, "overhead-µs/quote")
				})
			}
		})
	}
}

// imaPCR10Values gives every running PCR 10 value of the IMA log, ending with what a full replay
// (policy/ima) gives, so a quote taken in the middle of the kernel's extends can be matched.
func TestIMAPCR10Values(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ascii_runtime_measurements")
	raw, err := os.ReadFile("../testdata/vm-ovmf-ima-ng/ascii_runtime_measurements")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	vals := imaPCR10Values(path, tpm2.TPMAlgSHA256)
	want, err := ima.Replay(bytes.NewReader(raw), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Count(raw, []byte("\n"))
	if len(vals) != lines+1 || !bytes.Equal(vals[0], make([]byte, 32)) || !bytes.Equal(vals[len(vals)-1], want[crypto.SHA256]) {
		t.Fatalf("%d values for %d entries; last %x, replay %x", len(vals), lines, vals[len(vals)-1], want[crypto.SHA256])
	}
	if imaPCR10Values(filepath.Join(t.TempDir(), "missing"), tpm2.TPMAlgSHA256) != nil {
		t.Fatal("values for a missing log")
	}
}
