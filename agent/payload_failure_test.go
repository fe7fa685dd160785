package agent

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/payload"
	"github.com/keylime-go/keylime/internal/revocation"
	"github.com/keylime-go/keylime/internal/testbed"
)

// captureLog sends the agent's log to a buffer the test can read.
func captureLog(a *Agent) *testbed.LogBuffer {
	lb := &testbed.LogBuffer{}
	a.log = zerolog.New(lb).Level(zerolog.DebugLevel)
	return lb
}

// resetBootstrap forgets every key half and payload, as a fresh agent would have.
func resetBootstrap(t *testing.T, a *Agent) {
	t.Helper()
	a.boot.mu.Lock()
	a.boot.u, a.boot.authTag, a.boot.payload, a.boot.vs, a.boot.k = nil, "", "", nil, nil
	a.boot.handled = make(chan struct{})
	a.boot.mu.Unlock()
	if err := os.RemoveAll(a.cfg.Payload.SecureDir); err != nil {
		t.Fatal(err)
	}
}

// TestPayloadFailuresLeaveNothing: a payload that does not decrypt, a wrong auth_tag, a V for another
// agent and a zip that escapes its directory each leave nothing in the secure directory, are logged,
// and leave keys/verify unanswered (or, for a refused zip, no file of it behind).
func TestPayloadFailuresLeaveNothing(t *testing.T) {
	a, dir := payloadAgent(t)
	h := a.Handler()
	wrap := func(half []byte) string {
		t.Helper()
		s, err := payload.WrapKey(nil, &a.nk.PublicKey, half)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	outside := filepath.Join(filepath.Dir(a.cfg.Payload.SecureDir), "escaped")
	type delivery struct {
		tag, payload string
		u, v         []byte
	}
	for _, tc := range []struct {
		name string
		// make returns what the tenant and the verifier send.
		make func(k, u, v []byte) delivery
		// waitHandled: the halves combine, so the payload goroutine runs (and is waited for).
		waitHandled bool
		log         string
	}{
		{
			name: "payload sealed under another key",
			make: func(k, u, v []byte) delivery {
				other, _, _, _ := payload.Split(nil)
				sealed, _ := payload.Encrypt(nil, other, []byte("secret"))
				return delivery{payload.Tag(k, a.uuid), sealed, u, v}
			},
			waitHandled: true, log: "payload refused; nothing written",
		},
		{
			name: "ciphertext altered",
			make: func(k, u, v []byte) delivery {
				sealed, _ := payload.Encrypt(nil, k, []byte("secret"))
				raw, _ := base64.StdEncoding.DecodeString(sealed)
				raw[len(raw)-1] ^= 0x80 // the GCM tag
				return delivery{payload.Tag(k, a.uuid), base64.StdEncoding.EncodeToString(raw), u, v}
			},
			waitHandled: true, log: "payload refused; nothing written",
		},
		{
			name: "payload truncated below IV and tag",
			make: func(k, u, v []byte) delivery {
				return delivery{payload.Tag(k, a.uuid), base64.StdEncoding.EncodeToString(make([]byte, 20)), u, v}
			},
			waitHandled: true, log: "payload refused; nothing written",
		},
		{
			name: "auth_tag for another agent id",
			make: func(k, u, v []byte) delivery {
				sealed, _ := payload.Encrypt(nil, k, []byte("secret"))
				return delivery{payload.Tag(k, "another-agent"), sealed, u, v}
			},
			log: "key halves do not combine",
		},
		{
			name: "auth_tag over a different K",
			make: func(k, u, v []byte) delivery {
				other, _, _, _ := payload.Split(nil)
				sealed, _ := payload.Encrypt(nil, k, []byte("secret"))
				return delivery{payload.Tag(other, a.uuid), sealed, u, v}
			},
			log: "key halves do not combine",
		},
		{
			name: "V for another agent",
			make: func(k, u, v []byte) delivery {
				_, _, otherV, _ := payload.Split(nil)
				sealed, _ := payload.Encrypt(nil, k, []byte("secret"))
				return delivery{payload.Tag(k, a.uuid), sealed, u, otherV}
			},
			log: "key halves do not combine",
		},
		{
			name: "zip entry leaving the payload directory",
			make: func(k, u, v []byte) delivery {
				z := zipOrdered(t, "first.txt", "secret", "autorun.sh", "#!/bin/sh\ntouch ran\n", "../escaped", "x")
				sealed, _ := payload.Encrypt(nil, k, z)
				return delivery{payload.Tag(k, a.uuid), sealed, u, v}
			},
			waitHandled: true, log: "payload zip refused; payload removed",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resetBootstrap(t, a)
			logs := captureLog(a)
			k, u, v, _ := payload.Split(nil)
			d := tc.make(k, u, v)
			if code, msg := post(t, h, "/v2.6/keys/ukey", api.UKeyRequest{AuthTag: d.tag, EncryptedKey: wrap(d.u), Payload: d.payload}); code != 200 {
				t.Fatalf("ukey: %d %s", code, msg)
			}
			if code, msg := post(t, h, "/v2.6/keys/vkey", api.VKeyRequest{EncryptedKey: wrap(d.v)}); code != 200 {
				t.Fatalf("vkey: %d %s", code, msg)
			}
			if tc.waitHandled {
				select {
				case <-a.boot.handled:
				case <-time.After(10 * time.Second):
					t.Fatal("payload never handled")
				}
			} else {
				if code, env := get(t, h, "/v2.6/keys/verify?challenge=abc"); code != 400 || !strings.Contains(env.Status, "not yet available") {
					t.Errorf("keys/verify answered although no K was derived: %d %s", code, env.Status)
				}
				if _, _, haveK := a.BootstrapState(); haveK {
					t.Error("K derived")
				}
			}
			if _, err := os.Stat(dir); err == nil {
				entries, _ := os.ReadDir(dir)
				t.Fatalf("payload directory left behind with %d entries", len(entries))
			}
			if _, err := os.Stat(outside); err == nil {
				t.Fatal("a zip entry was written outside the payload directory")
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log does not say %q:\n%s", tc.log, logs)
			}
		})
	}
}

// zipOrdered zips name, body pairs in the order given.
func zipOrdered(t testing.TB, pairs ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := 0; i+1 < len(pairs); i += 2 {
		w, err := zw.Create(pairs[i])
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(pairs[i+1]))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestParseList: action_list and revocation_actions are read as Keylime's agent reads them.
func TestParseList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{"local_action_a,local_action_b", []string{"local_action_a", "local_action_b"}},
		{"a, b ,c\n", []string{"a", "b", "c"}},
		{"a\nb\n\nc", []string{"a", "b", "c"}},
		{"[a, 'b', \"c\"]", []string{"a", "b", "c"}},
		{" a  b\tc ", []string{"a", "b", "c"}},
	} {
		if got := parseList(tc.in); !cmp.Equal(got, tc.want) {
			t.Errorf("parseList(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for name, ok := range map[string]bool{"a": true, "a.sh": true, "": false, ".": false, "..": false, "a/b": false, "/a": false, `a\b`: false} {
		if plainName(name) != ok {
			t.Errorf("plainName(%q) = %v", name, !ok)
		}
	}
}

// revocationPair returns a RevocationNotifier key and its self-signed certificate in PEM.
func revocationPair(t *testing.T) (*rsa.PrivateKey, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "RevocationNotifier"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func revocationMsg(agentID string) string {
	ip, port := "127.0.0.1", 9002
	return (&revocation.Message{Type: "revocation", IP: &ip, AgentID: agentID, Port: &port, TPMPolicy: "{}", MetaData: "{}",
		EventTime: revocation.EventTime(time.Now()), EventID: "pcr_validation.invalid_pcr_15", SeverityLabel: "emergency", Context: "{}"}).Encode()
}

// TestPayloadActionsRunOnRevocation: the payload's action_list (newline separated, as Keylime's agent
// accepts) names scripts that run from the payload with the verified message as their argument; the
// revocation certificate comes from the payload (RevocationNotifier-cert.crt, the default). Without
// allow_payload_revocation_actions only pre-installed actions named there run.
func TestPayloadActionsRunOnRevocation(t *testing.T) {
	key, certPEM := revocationPair(t)
	record := func(out string) string { return "#!/bin/sh\ncp \"$1\" " + out + "\n" }
	for _, tc := range []struct {
		name       string
		allow      bool
		wantRun    []string // of payload_a, payload_b, installed
		wantAbsent []string
	}{
		{"payload actions allowed", true, []string{"payload_a", "payload_b", "installed"}, nil},
		{"payload actions not allowed", false, []string{"installed"}, []string{"payload_a", "payload_b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, dir := payloadAgent(t)
			logs := captureLog(a)
			h := a.Handler()
			outDir := t.TempDir()
			installed := t.TempDir()
			if err := os.WriteFile(filepath.Join(installed, "installed"), []byte(record(filepath.Join(outDir, "installed"))), 0o755); err != nil {
				t.Fatal(err)
			}
			a.cfg.Revocation = RevocationConfig{ActionsDir: installed, AllowPayloadActions: tc.allow}
			zipped := zipOf(t, map[string]string{
				"RevocationNotifier-cert.crt": string(certPEM),
				"action_list":                 "payload_a\npayload_b\ninstalled\n",
				"payload_a":                   record(filepath.Join(outDir, "payload_a")),
				"payload_b":                   record(filepath.Join(outDir, "payload_b")),
			})
			k, u, v, _ := payload.Split(nil)
			sealed, _ := payload.Encrypt(nil, k, zipped)
			wu, _ := payload.WrapKey(nil, &a.nk.PublicKey, u)
			wv, _ := payload.WrapKey(nil, &a.nk.PublicKey, v)
			a.boot.mu.Lock()
			a.boot.handled = make(chan struct{})
			a.boot.mu.Unlock()
			post(t, h, "/v2.6/keys/ukey", api.UKeyRequest{AuthTag: payload.Tag(k, a.uuid), EncryptedKey: wu, Payload: sealed})
			post(t, h, "/v2.6/keys/vkey", api.VKeyRequest{EncryptedKey: wv})
			<-a.boot.handled
			if fi, err := os.Stat(filepath.Join(dir, "payload_a")); err != nil || fi.Mode().Perm()&0o100 == 0 {
				t.Fatalf("action_list script not made executable: %v", err)
			}
			msg := revocationMsg("victim")
			sig, _ := revocation.Sign(key, msg)
			if code, m := post(t, h, "/v2.6/notifications/revocation", api.RevocationRequest{Msg: msg, Signature: sig}); code != 200 {
				t.Fatalf("revocation refused: %d %s", code, m)
			}
			for _, n := range tc.wantRun {
				waitFor(t, "action "+n, func() bool { b, _ := os.ReadFile(filepath.Join(outDir, n)); return string(b) == msg })
			}
			waitFor(t, "the actions to finish", func() bool {
				l := logs.String()
				return strings.Count(l, "revocation action finished")+strings.Count(l, "revocation action not found") == 3
			})
			for _, n := range tc.wantAbsent {
				if _, err := os.Stat(filepath.Join(outDir, n)); err == nil {
					t.Errorf("payload action %s ran although payload actions are not allowed", n)
				}
			}
		})
	}
}

// processGone reports whether pid has exited (no longer in /proc, or a zombie nobody reaped yet).
func processGone(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// TestPayloadScriptExitAndTimeout: autorun.sh's exit status is logged, and a script that outlives
// script_timeout is killed together with the children it started.
func TestPayloadScriptExitAndTimeout(t *testing.T) {
	a, dir := payloadAgent(t)
	a.cfg.Payload.ScriptTimeout = 300 * time.Millisecond
	h := a.Handler()
	for _, tc := range []struct {
		name, script string
		log          []string
		within       time.Duration
	}{
		{"exit status", "#!/bin/sh\necho partial > marker\nexit 3\n", []string{`"exit":3`, `"timed_out":false`}, 5 * time.Second},
		{"timeout kills the script and its children", "#!/bin/sh\nsleep 30 &\necho $! > child.pid\nwait\n", []string{`"timed_out":true`}, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resetBootstrap(t, a)
			logs := captureLog(a)
			k, u, v, _ := payload.Split(nil)
			sealed, _ := payload.Encrypt(nil, k, zipOf(t, map[string]string{"autorun.sh": tc.script}))
			wu, _ := payload.WrapKey(nil, &a.nk.PublicKey, u)
			wv, _ := payload.WrapKey(nil, &a.nk.PublicKey, v)
			start := time.Now()
			post(t, h, "/v2.6/keys/ukey", api.UKeyRequest{AuthTag: payload.Tag(k, a.uuid), EncryptedKey: wu, Payload: sealed})
			post(t, h, "/v2.6/keys/vkey", api.VKeyRequest{EncryptedKey: wv})
			select {
			case <-a.boot.handled:
			case <-time.After(tc.within):
				t.Fatalf("script still running after %v", tc.within)
			}
			if took := time.Since(start); took > 4*time.Second {
				t.Errorf("script handling took %v", took)
			}
			for _, want := range tc.log {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %s:\n%s", want, logs)
				}
			}
			if b, err := os.ReadFile(filepath.Join(dir, "child.pid")); err == nil {
				pid := strings.TrimSpace(string(b))
				waitFor(t, "the script's child to die", func() bool { return processGone(pid) })
			}
		})
	}
}
