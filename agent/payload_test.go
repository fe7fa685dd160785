package agent

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/payload"
	"github.com/keylime-go/keylime/internal/revocation"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/tpm/device"
)

func post(t *testing.T, h http.Handler, path string, body any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(b)))
	var env api.Response
	_ = json.Unmarshal(rec.Body.Bytes(), &env)
	return rec.Code, env.Status
}

func zipOf(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, _ := zw.Create(name)
		_, _ = w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// payloadAgent is an agent on swtpm with payloads enabled in a temp secure directory.
func payloadAgent(t *testing.T) (*Agent, string) {
	t.Helper()
	testbed.RequireSWTPM(t)
	a := newTestAgent(t, device.ECC, device.ECC)
	secure := filepath.Join(t.TempDir(), "secure")
	a.cfg.Payload = PayloadConfig{SecureDir: secure, EncKeyName: "derived_tci_key", DecPayloadFile: "decrypted_payload",
		ExtractZip: true, Script: "autorun.sh", ScriptTimeout: 10 * time.Second}
	return a, filepath.Join(secure, "unzipped")
}

func TestPayloadDelivery(t *testing.T) {
	a, dir := payloadAgent(t)
	logs := captureLog(a)
	h := a.Handler()
	k, u, v, _ := payload.Split(nil)
	zipped := zipOf(t, map[string]string{"autorun.sh": "#!/bin/sh\necho ran > marker\n", "secret.txt": "s3cr3t"})
	sealed, _ := payload.Encrypt(nil, k, zipped)
	wrap := func(half []byte) string { s, _ := payload.WrapKey(nil, &a.nk.PublicKey, half); return s }

	if code, msg := post(t, h, "/v2.6/keys/ukey", api.UKeyRequest{AuthTag: payload.Tag(k, a.uuid), EncryptedKey: wrap(u), Payload: sealed}); code != 200 {
		t.Fatalf("ukey: %d %s", code, msg)
	}
	// Only U: nothing on disk, keys/verify not available.
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("payload directory exists before V arrived")
	}
	if code, env := get(t, h, "/v2.6/keys/verify?challenge=abc"); code != 400 || !strings.Contains(env.Status, "not yet available") {
		t.Fatalf("verify before V: %d %s", code, env.Status)
	}
	// A V for another agent (another K): no match, nothing written.
	_, _, otherV, _ := payload.Split(nil)
	if code, _ := post(t, h, "/v2.6/keys/vkey", api.VKeyRequest{EncryptedKey: wrap(otherV)}); code != 200 {
		t.Fatal("vkey")
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("a foreign V unlocked the payload")
	}
	a.boot.mu.Lock()
	a.boot.handled = make(chan struct{})
	a.boot.mu.Unlock()
	if code, _ := post(t, h, "/v2.6/keys/vkey", api.VKeyRequest{EncryptedKey: wrap(v)}); code != 200 {
		t.Fatal("vkey")
	}
	<-a.boot.handled
	if b, err := os.ReadFile(filepath.Join(dir, "marker")); err != nil || string(b) != "ran\n" {
		t.Fatalf("autorun.sh did not run: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "secret.txt")); string(b) != "s3cr3t" {
		t.Error("zip not extracted")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "derived_tci_key")); !bytes.Equal(b, k) {
		t.Error("K not written")
	}
	if fi, _ := os.Stat(filepath.Dir(dir)); fi.Mode().Perm() != 0o700 {
		t.Errorf("secure dir mode %v", fi.Mode().Perm())
	}
	// No secret reaches the log: neither K, U nor V, in hex or base64.
	for _, secret := range [][]byte{k, u, v} {
		for _, enc := range []string{hex.EncodeToString(secret), base64.StdEncoding.EncodeToString(secret)} {
			if strings.Contains(logs.String(), enc) {
				t.Fatalf("a key half or K appears in the log")
			}
		}
	}
	if !strings.Contains(logs.String(), "bootstrap key derived") {
		t.Fatalf("log capture did not work: %s", logs.String())
	}
	code, env := get(t, h, "/v2.6/keys/verify?challenge=Ch4llenge")
	var vr api.VerifyResponse
	if err := env.Decode(&vr); code != 200 || err != nil || vr.HMAC != payload.Tag(k, "Ch4llenge") {
		t.Fatalf("keys/verify: %d %+v", code, vr)
	}
}

func TestPayloadRefusals(t *testing.T) {
	a, dir := payloadAgent(t)
	h := a.Handler()
	k, u, v, _ := payload.Split(nil)
	wrap := func(half []byte) string { s, _ := payload.WrapKey(nil, &a.nk.PublicKey, half); return s }
	sealed, _ := payload.Encrypt(nil, k, []byte("data"))
	otherNK, _ := rsa.GenerateKey(rand.Reader, 2048)
	foreign, _ := payload.WrapKey(nil, &otherNK.PublicKey, u)
	for _, tc := range []struct {
		name string
		body any
		msg  string
	}{
		{"bad auth_tag format", api.UKeyRequest{AuthTag: "xyz", EncryptedKey: wrap(u)}, "auth_tag"},
		{"U for another NK", api.UKeyRequest{AuthTag: payload.Tag(k, a.uuid), EncryptedKey: foreign}, "encrypted_key"},
		{"U not base64", api.UKeyRequest{AuthTag: payload.Tag(k, a.uuid), EncryptedKey: "%%%"}, "encrypted_key"},
	} {
		if code, msg := post(t, h, "/v2.6/keys/ukey", tc.body); code != 400 || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %d %q", tc.name, code, msg)
		}
	}
	// A wrong auth_tag (K of another agent id): the halves never combine, nothing is written.
	post(t, h, "/v2.6/keys/ukey", api.UKeyRequest{AuthTag: payload.Tag(k, "another-agent"), EncryptedKey: wrap(u), Payload: sealed})
	post(t, h, "/v2.6/keys/vkey", api.VKeyRequest{EncryptedKey: wrap(v)})
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("payload written although the auth_tag did not match")
	}
	// The right tag but a payload that does not decrypt: nothing written either.
	a.boot.mu.Lock()
	a.boot.handled = make(chan struct{})
	a.boot.mu.Unlock()
	bad, _ := payload.Encrypt(nil, make([]byte, 32), []byte("data"))
	post(t, h, "/v2.6/keys/ukey", api.UKeyRequest{AuthTag: payload.Tag(k, a.uuid), EncryptedKey: wrap(u), Payload: bad})
	<-a.boot.handled
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("payload directory created for a payload that does not decrypt")
	}
}

func TestRevocationNotification(t *testing.T) {
	a, _ := payloadAgent(t)
	h := a.Handler()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "RevocationNotifier"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	certPath := filepath.Join(t.TempDir(), "rev.crt")
	_ = os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	actions := t.TempDir()
	out := filepath.Join(t.TempDir(), "action-ran")
	_ = os.WriteFile(filepath.Join(actions, "local_action"), []byte("#!/bin/sh\ncp \"$1\" "+out+"\n"), 0o755)
	a.cfg.Revocation = RevocationConfig{CertPath: certPath, Actions: []string{"local_action"}, ActionsDir: actions}

	ip, port := "127.0.0.1", 9002
	msg := (&revocation.Message{Type: "revocation", IP: &ip, AgentID: "other", Port: &port, TPMPolicy: "{}", MetaData: "{}",
		EventTime: revocation.EventTime(time.Now()), EventID: "pcr_validation.invalid_pcr_15", SeverityLabel: "emergency", Context: "{}"}).Encode()
	sig, _ := revocation.Sign(key, msg)
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	forged, _ := revocation.Sign(otherKey, msg)
	raw, _ := base64.StdEncoding.DecodeString(sig)
	raw[len(raw)/2] ^= 1
	flipped := base64.StdEncoding.EncodeToString(raw)
	logs := captureLog(a)
	for _, tc := range []struct {
		name string
		body api.RevocationRequest
	}{
		{"unsigned", api.RevocationRequest{Msg: msg}},
		{"bad signature (one bit flipped)", api.RevocationRequest{Msg: msg, Signature: flipped}},
		{"signature not base64", api.RevocationRequest{Msg: msg, Signature: "%%%"}},
		{"truncated signature", api.RevocationRequest{Msg: msg, Signature: sig[:len(sig)/2]}},
		{"other key", api.RevocationRequest{Msg: msg, Signature: forged}},
		{"altered body", api.RevocationRequest{Msg: strings.Replace(msg, "other", "victim", 1), Signature: sig}},
		{"empty message", api.RevocationRequest{Signature: sig}},
	} {
		before := strings.Count(logs.String(), "revocation message refused")
		if code, m := post(t, h, "/v2.6/notifications/revocation", tc.body); code != 400 {
			t.Errorf("%s accepted: %d %s", tc.name, code, m)
		}
		if strings.Count(logs.String(), "revocation message refused") != before+1 {
			t.Errorf("%s: refusal not logged", tc.name)
		}
	}
	// Without a revocation certificate nothing can be verified, so nothing is accepted.
	a.cfg.Revocation.CertPath = filepath.Join(t.TempDir(), "missing.crt")
	if code, m := post(t, h, "/v2.6/notifications/revocation", api.RevocationRequest{Msg: msg, Signature: sig}); code != 400 {
		t.Errorf("accepted without a revocation certificate: %d %s", code, m)
	}
	a.cfg.Revocation.CertPath = certPath
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(out); err == nil {
		t.Fatal("an action ran for a refused message")
	}
	if strings.Contains(logs.String(), "running revocation actions") {
		t.Fatal("a refused message was treated as verified")
	}
	if code, m := post(t, h, "/v2.6/notifications/revocation", api.RevocationRequest{Msg: msg, Signature: sig}); code != 200 {
		t.Fatalf("genuine message refused: %d %s", code, m)
	}
	waitFor(t, "the revocation action", func() bool { b, _ := os.ReadFile(out); return string(b) == msg })
}

func TestIsAuthTag(t *testing.T) {
	hex96 := strings.Repeat("0123456789abcdef", 6)
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"96 lowercase hex", hex96, true},
		{"uppercase", strings.ToUpper(hex96), false},
		{"95 characters", hex96[:95], false},
		{"97 characters", hex96 + "0", false},
		{"non-hex letter", "g" + hex96[1:], false},
		{"punctuation after 9", ":" + hex96[1:], false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isAuthTag(tt.in); got != tt.want {
				t.Errorf("isAuthTag(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
