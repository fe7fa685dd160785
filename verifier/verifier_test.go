package verifier

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/transport"
)

// testVerifier is a verifier on loopback with an admin HTTP client.
type testVerifier struct {
	v     *Verifier
	url   string
	admin *http.Client
	// stop ends Serve, waits for it and closes the verifier (once; also at cleanup).
	stop func()
}

// startVerifier serves a verifier on loopback until the test ends; opts adjust its configuration.
func startVerifier(t *testing.T, opts ...func(*Config)) *testVerifier {
	t.Helper()
	return startPreparedVerifier(t, nil, opts...)
}

// startPreparedVerifier is startVerifier with prep (when not nil) called on the verifier before it
// serves, e.g. to inject a fault.
func startPreparedVerifier(t *testing.T, prep func(*Verifier), opts ...func(*Config)) *testVerifier {
	t.Helper()
	dir := t.TempDir()
	caDir := filepath.Join(dir, "cv_ca")
	if _, err := ca.Ensure(caDir, ca.DefaultSubject, nil); err != nil {
		t.Fatal(err)
	}
	srv, err := transport.LoadMaterial(caDir, "server")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := transport.LoadMaterial(caDir, "client")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		DBPath:        filepath.Join(dir, "verifier.db"),
		TLS:           transport.ServerConfig(srv.Cert, srv.Pool, transport.OptionalClientCert),
		ClientCert:    &cl.Cert,
		QuoteInterval: time.Second, RetryInterval: 50 * time.Millisecond, MaxRetries: 1,
		RequestTimeout: time.Second,
		MaxBody:        1 << 20,
		Log:            zerolog.Nop(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if prep != nil {
		prep(v)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
			v.Close()
		})
	}
	t.Cleanup(stop)
	return &testVerifier{v: v, url: "https://" + ln.Addr().String(), stop: stop,
		admin: transport.NewHTTPClient(transport.ClientConfig(&cl.Cert, cl.Pool), 5*time.Second)}
}

func (tv *testVerifier) do(t *testing.T, method, path, body string) (int, api.Response) {
	t.Helper()
	req, err := http.NewRequest(method, tv.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tv.admin.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env api.Response
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &env); err != nil {
			t.Fatalf("%s %s: non-JSON answer %q", method, path, raw)
		}
	}
	return resp.StatusCode, env
}

func (tv *testVerifier) dump(t *testing.T) []byte {
	t.Helper()
	kvs, err := tv.v.db.List(bucketAgents)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%s=%s\n", kv.Key, kv.Value)
	}
	return b.Bytes()
}

func selfSignedPEM(t *testing.T) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func fixtureB64(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

const zero32 = "0000000000000000000000000000000000000000000000000000000000000000"

// TestMalformedAddRequests: every broken request gets a 4xx naming the problem and changes nothing.
func TestMalformedAddRequests(t *testing.T) {
	tv := startVerifier(t)
	cert := selfSignedPEM(t)
	ak := fixtureB64(t, "ak-rsa.tpm2b")
	ek := fixtureB64(t, "ek-rsa.tpm2b")
	base := func() map[string]any {
		return map[string]any{
			"v": nil, "cloudagent_ip": "127.0.0.1", "cloudagent_port": 1,
			"tpm_policy": `{"15": ["` + zero32 + `"]}`, "runtime_policy": "", "mb_policy": nil, "mb_policy_name": "",
			"ima_sign_verification_keys": "", "metadata": "{}", "revocation_key": "",
			"accept_tpm_hash_algs": []string{"sha256"}, "accept_tpm_encryption_algs": []string{"rsa"},
			"accept_tpm_signing_algs": []string{"rsassa"}, "ak_tpm": ak, "mtls_cert": cert, "supported_version": "2.1",
		}
	}
	with := func(k string, v any) string {
		m := base()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	// One good agent, stopped so that its record stays put while we compare the store.
	if code, env := tv.do(t, "POST", "/v2.1/agents/existing", with("cloudagent_ip", "127.0.0.1")); code != 200 {
		t.Fatalf("good add: %d %s", code, env.Status)
	}
	if code, _ := tv.do(t, "PUT", "/v2.1/agents/existing/stop", ""); code != 200 {
		t.Fatalf("stop: %d", code)
	}
	before := tv.dump(t)
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"not JSON", "POST", "/v2.1/agents/a1", "{", 400, "invalid JSON"},
		{"empty body", "POST", "/v2.1/agents/a1", "", 400, "empty"},
		{"array body", "POST", "/v2.1/agents/a1", "[]", 400, "invalid JSON"},
		{"tpm_policy not a string", "POST", "/v2.1/agents/a1", with("tpm_policy", map[string]any{"15": zero32}), 400, `"tpm_policy"`},
		{"tpm_policy bad JSON", "POST", "/v2.1/agents/a1", with("tpm_policy", "{15:"), 400, "tpm_policy"},
		{"tpm_policy names PCR 16", "POST", "/v2.1/agents/a1", with("tpm_policy", `{"16": ["`+zero32+`"]}`), 400, "PCR 16"},
		{"tpm_policy names PCR 10", "POST", "/v2.1/agents/a1", with("tpm_policy", `{"10": ["`+zero32+`"]}`), 400, "PCR 10"},
		{"tpm_policy bad digest", "POST", "/v2.1/agents/a1", with("tpm_policy", `{"15": ["abc"]}`), 400, "digest"},
		{"ak_tpm missing", "POST", "/v2.1/agents/a1", with("ak_tpm", nil), 400, "ak_tpm is required"},
		{"ak_tpm bad base64", "POST", "/v2.1/agents/a1", with("ak_tpm", "***"), 400, "invalid ak_tpm"},
		{"ak_tpm garbage", "POST", "/v2.1/agents/a1", with("ak_tpm", base64.StdEncoding.EncodeToString([]byte("garbage garbage"))), 400, "invalid ak_tpm"},
		{"ak_tpm is an EK", "POST", "/v2.1/agents/a1", with("ak_tpm", ek), 400, "refused ak_tpm"},
		{"mtls_cert missing", "POST", "/v2.1/agents/a1", with("mtls_cert", nil), 400, "mTLS certificate for agent is required"},
		{"mtls_cert disabled", "POST", "/v2.1/agents/a1", with("mtls_cert", "disabled"), 400, "mTLS certificate for agent is required"},
		{"mtls_cert garbage", "POST", "/v2.1/agents/a1", with("mtls_cert", "not a cert"), 400, "invalid mtls_cert"},
		{"cloudagent_ip missing", "POST", "/v2.1/agents/a1", with("cloudagent_ip", nil), 400, "cloudagent_ip"},
		{"cloudagent_ip invalid", "POST", "/v2.1/agents/a1", with("cloudagent_ip", "no such host!"), 400, "cloudagent_ip"},
		{"cloudagent_port missing", "POST", "/v2.1/agents/a1", with("cloudagent_port", nil), 400, "cloudagent_port"},
		{"cloudagent_port out of range", "POST", "/v2.1/agents/a1", with("cloudagent_port", 99999), 400, "out of range"},
		{"cloudagent_port wrong type", "POST", "/v2.1/agents/a1", with("cloudagent_port", []int{1}), 400, "port"},
		{"v not base64", "POST", "/v2.1/agents/a1", with("v", "%%%"), 400, "v must be base64"},
		{"v wrong length", "POST", "/v2.1/agents/a1", with("v", base64.StdEncoding.EncodeToString([]byte("short"))), 400, "16 or 32"},
		{"runtime_policy not base64", "POST", "/v2.1/agents/a1", with("runtime_policy", "!!"), 400, "runtime_policy"},
		{"runtime_policy not JSON", "POST", "/v2.1/agents/a1", with("runtime_policy", base64.StdEncoding.EncodeToString([]byte("nope"))), 400, "runtime_policy"},
		{"mb_policy not JSON", "POST", "/v2.1/agents/a1", with("mb_policy", "{"), 400, "mb_policy"},
		{"metadata not JSON", "POST", "/v2.1/agents/a1", with("metadata", "{"), 400, "metadata"},
		{"accept list wrong type", "POST", "/v2.1/agents/a1", with("accept_tpm_hash_algs", "sha256"), 400, "accept_tpm_hash_algs"},
		{"oversized body", "POST", "/v2.1/agents/a1", with("metadata", `"`+strings.Repeat("a", 2<<20)+`"`), 413, "too large"},
		{"bad agent id", "POST", "/v2.1/agents/a%20b", with("metadata", "{}"), 400, "invalid agent id"},
		{"duplicate agent", "POST", "/v2.1/agents/existing", with("metadata", "{}"), 409, "already exists"},
		{"unknown version", "POST", "/v3.7/agents/a1", with("metadata", "{}"), 400, "API version not supported"},
		{"get unknown agent", "GET", "/v2.1/agents/nobody", "", 404, "agent id not found"},
		{"delete unknown agent", "DELETE", "/v2.1/agents/nobody", "", 404, "agent id not found"},
		{"reactivate unknown agent", "PUT", "/v2.1/agents/nobody/reactivate", "", 404, "agent id not found"},
		{"wrong method", "PATCH", "/v2.1/agents/existing", "", 405, "not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, env := tv.do(t, tc.method, tc.path, tc.body)
			if code != tc.code || !strings.Contains(env.Status, tc.msg) {
				t.Errorf("got %d %q, want %d with %q", code, env.Status, tc.code, tc.msg)
			}
			if after := tv.dump(t); !bytes.Equal(before, after) {
				t.Errorf("store changed:\n%s\n%s", before, after)
			}
		})
	}
}

// Concurrent adds are written in batches outside the verifier's lock: of many adds of one id exactly
// one wins, and adds of distinct ids all land.
func TestConcurrentAdds(t *testing.T) {
	tv := startVerifier(t)
	body, _ := json.Marshal(map[string]any{
		"cloudagent_ip": "127.0.0.1", "cloudagent_port": 1, "tpm_policy": "{}", "mb_policy_name": "", "metadata": "{}",
		"accept_tpm_hash_algs": []string{"sha256"}, "accept_tpm_encryption_algs": []string{"rsa"},
		"accept_tpm_signing_algs": []string{"rsassa"}, "ak_tpm": fixtureB64(t, "ak-rsa.tpm2b"), "mtls_cert": selfSignedPEM(t),
		"supported_version": "2.1",
	})
	var wg sync.WaitGroup
	codes := make([]int, 16)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = tv.do(t, "POST", "/v2.1/agents/same", string(body))
		}()
	}
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, env := tv.do(t, "POST", "/v2.1/agents/agent-"+strconv.Itoa(i), string(body)); code != 200 {
				t.Errorf("add agent-%d: %d %s", i, code, env.Status)
			}
		}()
	}
	wg.Wait()
	won := 0
	for _, c := range codes {
		switch c {
		case 200:
			won++
		case 409:
		default:
			t.Errorf("add of a duplicate id answered %d", c)
		}
	}
	if won != 1 {
		t.Fatalf("%d adds of one id succeeded, want 1 (%v)", won, codes)
	}
	n, err := tv.v.db.Count(bucketAgents)
	if err != nil || n != 17 {
		t.Fatalf("%d agents stored (%v), want 17", n, err)
	}
}

// TestNewNonce: 20 characters of Keylime's alphabet, every character drawn about equally often (a
// modulo bias would make the first 8 characters 25% more frequent).
func TestNewNonce(t *testing.T) {
	counts := map[rune]int{}
	const nonces = 20000
	for range nonces {
		n, err := newNonce()
		if err != nil {
			t.Fatal(err)
		}
		if len(n) != 20 {
			t.Fatalf("nonce %q is %d characters", n, len(n))
		}
		for _, c := range n {
			if !strings.ContainsRune(nonceAlphabet, c) {
				t.Fatalf("nonce %q has %q, not in the alphabet", n, c)
			}
			counts[c]++
		}
	}
	want := float64(nonces*20) / float64(len(nonceAlphabet))
	for _, c := range nonceAlphabet {
		if got := float64(counts[c]); got < 0.9*want || got > 1.1*want {
			t.Errorf("%q drawn %v times, want about %v", c, got, want)
		}
	}
}
