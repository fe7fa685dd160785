package e2e

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/agent"
	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/revocation"
	"github.com/keylime-go/keylime/internal/testbed"
)

// tenantCLI runs the release binary's tenant against the system: its CA directory as tls_dir, the
// verifier and the registrar's HTTPS port, fast retries and no configuration file.
func tenantCLI(t *testing.T, s *System, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	port := func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return u.Port()
	}
	conf := filepath.Join(t.TempDir(), "keylime.toml")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	full := []string{
		"--config", conf,
		"--set", "tenant.keylime_dir=" + t.TempDir(), "--set", "tenant.tls_dir=" + s.CADir,
		"--set", "tenant.max_retries=40", "--set", "tenant.retry_interval=0.1", "--set", "tenant.exponential_backoff=false",
		"--set", "tenant.request_timeout=5",
		"tenant",
	}
	full = append(full, args[0])
	full = append(full, "--cv", "127.0.0.1", "--cvport", port(s.VerifierURL), "-r", "127.0.0.1", "--rp", port(s.RegistrarTLSURL))
	full = append(full, args[1:]...)
	return run(t, nil, full...)
}

// TestCLIAddPayloadVerify: `keylime tenant add` with -f FILE and with --include DIR (autorun.sh writing a
// marker) delivers the payload to an agent that attests, and --verify sees it derive K (exit 0,
// payload_verified); an agent failing its first attestation gets U only, never the payload.
func TestCLIAddPayloadVerify(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	dir := t.TempDir()
	file := filepath.Join(dir, "payload.bin")
	if err := os.WriteFile(file, []byte("just a file, not a zip\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	inc := filepath.Join(dir, "inc")
	if err := os.MkdirAll(inc, 0o700); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(inc, "autorun.sh"), []byte("#!/bin/sh\necho ran > marker\n"), 0o700)
	_ = os.WriteFile(filepath.Join(inc, "data.txt"), []byte("included"), 0o600)

	for _, tc := range []struct {
		name    string
		payload []string
		good    bool
		check   func(t *testing.T, unzipped string)
	}{
		{"-f FILE", []string{"-f", file}, true, func(t *testing.T, unzipped string) {
			if b, err := os.ReadFile(filepath.Join(unzipped, "decrypted_payload")); err != nil || string(b) != "just a file, not a zip\n" {
				t.Errorf("decrypted_payload = %q, %v", b, err)
			}
		}},
		{"--include DIR", []string{"--include", inc}, true, func(t *testing.T, unzipped string) {
			if got := string(waitContent(t, filepath.Join(unzipped, "marker"), 5*time.Second)); got != "ran\n" {
				t.Errorf("marker = %q", got)
			}
			if b, _ := os.ReadFile(filepath.Join(unzipped, "data.txt")); string(b) != "included" {
				t.Errorf("data.txt = %q", b)
			}
		}},
		{"failing first attestation", []string{"--include", inc}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := s.StartAgent(AgentOptions{})
			if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
				t.Fatal(err)
			}
			pol, err := a.PCRPolicy(15)
			if err != nil {
				t.Fatal(err)
			}
			args := []string{"add", "-u", a.UUID(), "--no-ek-check", "--json"}
			if tc.good {
				args = append(args, "--tpm_policy", pol, "--verify")
			} else {
				args = append(args, "--tpm_policy", `{"15": ["`+strings.Repeat("ab", 32)+`"]}`)
			}
			out, errOut, code := tenantCLI(t, s, append(args, tc.payload...)...)
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
			}
			var res struct {
				Payload         bool `json:"payload"`
				PayloadVerified bool `json:"payload_verified"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			unzipped := filepath.Join(a.DataDir, "secure", "unzipped")
			if !tc.good {
				if !res.Payload || res.PayloadVerified {
					t.Errorf("result %+v", res)
				}
				if _, err := s.WaitVerifier(a.UUID(), 5*time.Second, InState(api.StateInvalidQuote)); err != nil {
					t.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond)
				if haveU, vs, haveK := a.BootstrapState(); !haveU || vs != 0 || haveK {
					t.Errorf("failing agent: U=%v V×%d K=%v; want U only", haveU, vs, haveK)
				}
				if _, err := os.Stat(unzipped); err == nil {
					t.Error("the failing agent has the payload")
				}
				return
			}
			if !res.Payload || !res.PayloadVerified {
				t.Fatalf("result %+v", res)
			}
			st, err := s.Verifier.Agent(t.Context(), a.UUID())
			if err != nil || st.AttestationCount < 1 {
				t.Fatalf("verified before any good attestation: %+v %v", st, err)
			}
			tc.check(t, unzipped)
		})
	}
}

// TestCLICertPackageRevocation: `tenant add --cert CA_DIR --include DIR` delivers a certificate package
// (the agent's certificate, key and public key, the CA certificate and RevocationNotifier-cert.crt, named
// as Keylime's tenant names them) plus the included files; the agent verifies revocation messages with
// the packaged RevocationNotifier certificate (revocation_cert = default) and runs the payload's
// action_list with the message when another agent fails.
func TestCLICertPackageRevocation(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{NotifyAgents: true})
	got := filepath.Join(t.TempDir(), "revoked.json")
	inc := t.TempDir()
	_ = os.WriteFile(filepath.Join(inc, "action_list"), []byte("record\n"), 0o600)
	_ = os.WriteFile(filepath.Join(inc, "record"), []byte("#!/bin/sh\ncp \"$1\" "+got+"\n"), 0o600)

	watcher := s.StartAgent(AgentOptions{Revocation: agent.RevocationConfig{AllowPayloadActions: true}})
	if _, err := s.WaitActive(watcher.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	pol, err := watcher.PCRPolicy(15)
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := tenantCLI(t, s, "add", "-u", watcher.UUID(), "--no-ek-check", "--tpm_policy", pol, "--cert", s.CADir, "--include", inc, "--verify")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	unzipped := filepath.Join(watcher.DataDir, "secure", "unzipped")
	id := watcher.UUID()
	for _, name := range []string{id + "-cert.crt", id + "-private.pem", id + "-public.pem", "cacert.crt", "cacrl.der", "cacrl.pem", "RevocationNotifier-cert.crt", "action_list", "record"} {
		if _, err := os.Stat(filepath.Join(unzipped, name)); err != nil {
			t.Errorf("package lacks %s: %v", name, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// The agent's certificate chains to the packaged CA certificate and names the agent.
	caPEM, _ := os.ReadFile(filepath.Join(unzipped, "cacert.crt"))
	certPEM, _ := os.ReadFile(filepath.Join(unzipped, id+"-cert.crt"))
	caCert, err1 := ca.ParseCertPEM(caPEM)
	cert, err2 := ca.ParseCertPEM(certPEM)
	if err1 != nil || err2 != nil {
		t.Fatalf("package certificates: %v %v", err1, err2)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil || cert.Subject.CommonName != id {
		t.Errorf("agent certificate (CN %q) does not chain to the packaged CA: %v", cert.Subject.CommonName, err)
	}

	// The CRL is the CA's; the verifier keeps the certificate's serial and subject as metadata.
	crlDER, _ := os.ReadFile(filepath.Join(unzipped, "cacrl.der"))
	if crl, err := x509.ParseRevocationList(crlDER); err != nil || crl.CheckSignatureFrom(caCert) != nil {
		t.Errorf("packaged CRL: %v", err)
	}
	st, err := s.Verifier.Agent(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Serial  json.Number `json:"cert_serial"`
		Subject string      `json:"subject"`
	}
	if err := json.Unmarshal([]byte(st.MetaData), &meta); err != nil || meta.Serial.String() != cert.SerialNumber.String() || meta.Subject != cert.Subject.String() {
		t.Errorf("meta_data %q (%v), want serial %v and subject %q", st.MetaData, err, cert.SerialNumber, cert.Subject.String())
	}

	victim := startAttested(t, s, AgentOptions{})
	if _, err := s.WaitVerifier(watcher.UUID(), 5*time.Second, Attested(1)); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("tamper"))
	if err := victim.Device.PCRExtend(15, tpm2.TPMAlgSHA256, d[:]); err != nil {
		t.Fatal(err)
	}
	var msg revocation.Message
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(got); err == nil && json.Unmarshal(b, &msg) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the payload's revocation action never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if msg.AgentID != victim.UUID() || msg.Type != "revocation" || msg.EventID != "pcr_validation.invalid_pcr_15" {
		t.Errorf("payload action got %+v", msg)
	}
}

// TestCLIVerifyGivesUp: `tenant add --verify` on an agent that fails its attestation (so never gets V)
// gives up after tenant.max_retries attempts, exits 1 naming the reason, and leaves the agent stopped on
// the verifier.
func TestCLIVerifyGivesUp(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	a := s.StartAgent(AgentOptions{})
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	wrong := `{"15": ["ff00000000000000000000000000000000000000000000000000000000000000"]}`
	f := filepath.Join(t.TempDir(), "payload")
	_ = os.WriteFile(f, []byte("top secret"), 0o600)
	start := time.Now()
	out, errOut, code := tenantCLI(t, s, "add", "-u", a.UUID(), "--no-ek-check", "--tpm_policy", wrong, "-f", f, "--verify")
	if code != 1 || !strings.Contains(errOut, "payload key not verified") {
		t.Fatalf("exit %d, want 1 with the reason\n%s\n%s", code, out, errOut)
	}
	t.Logf("gave up after %v", time.Since(start))
	if _, err := s.WaitVerifier(a.UUID(), 5*time.Second, InState(api.StateTenantFailed)); err != nil {
		t.Fatalf("agent not stopped: %v", err)
	}
}
