package cli_test

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/e2e"
	"github.com/keylime-go/keylime/internal/testbed"
)

// decode parses stdout as exactly one JSON document.
func decode(t *testing.T, r result, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("stdout holds more than one JSON document: %s", r.stdout)
	}
}

func urlPort(t *testing.T, u string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(u, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// tenantConfig writes a keylime.toml whose [tenant] section points at the system; the verifier port
// is verifierPort (so a test can point it elsewhere).
func tenantConfig(t *testing.T, s *e2e.System, verifierPort, certStore string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keylime.toml")
	conf := fmt.Sprintf(`[tenant]
verifier_ip = "127.0.0.1"
verifier_port = %s
registrar_ip = "127.0.0.1"
registrar_port = %s
keylime_dir = %q
tls_dir = %q
tpm_cert_store = %q
max_retries = 2
retry_interval = 0.1
request_timeout = 5
`, verifierPort, urlPort(t, s.RegistrarTLSURL), t.TempDir(), s.CADir, certStore)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func copyFiles(t *testing.T, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// agentDoc is the part of the tenant's JSON documents the test reads.
type agentDoc struct {
	AgentID          string `json:"agent_id"`
	StateName        string `json:"operational_state_name"`
	OperationalState int    `json:"operational_state"`
	AttestationCount int    `json:"attestation_count"`
	TPMPolicy        string `json:"tpm_policy"`
	LastFailure      string `json:"last_failure"`
	Failures         []struct {
		EventID string `json:"event_id"`
	} `json:"failures"`
}

// TestTenantCLI drives `keylime tenant` through the release binary against a system running in the
// test: every command with --json, exit codes 0/1/2/4, and one-line errors.
func TestTenantCLI(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := e2e.NewSystem(t)
	s.StartVerifier(e2e.VerifierOptions{QuoteInterval: 200 * time.Millisecond})
	a := s.StartAgent(e2e.AgentOptions{})
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	id := a.UUID()
	store := copyFiles(t, a.TPM.CACerts...)
	vport := urlPort(t, s.VerifierURL)
	conf := tenantConfig(t, s, vport, store)
	tenant := func(args ...string) result {
		t.Helper()
		return run(t, nil, append([]string{"--config", conf, "tenant"}, args...)...)
	}
	pol, err := a.PCRPolicy(15)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("usage errors exit 2 before any network", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"missing uuid", []string{"add"}, "--uuid"},
			{"unknown flag", []string{"add", "-u", id, "--nope"}, "nope"},
			{"mask in tpm_policy", []string{"add", "-u", id, "--tpm_policy", `{"mask": "0x1"}`}, "mask"},
			{"PCR 16 in tpm_policy", []string{"add", "-u", id, "--tpm_policy", `{"16": ["00"]}`}, "PCR 16"},
			{"tpm_policy not JSON", []string{"update", "-u", id, "--tpm_policy", `{15`}, "tpm_policy"},
			{"port out of range", []string{"add", "-u", id, "-tp", "70000"}, "70000"},
			{"port not a number", []string{"add", "-u", id, "--targetport", "x"}, "targetport"},
			{"unknown agent API version", []string{"add", "-u", id, "--agent-api-version", "9.9"}, "9.9"},
			{"stray argument", []string{"cvstatus", "-u", id, "extra"}, "extra"},
			{"unknown command", []string{"frobnicate"}, "frobnicate"},
		} {
			t.Run(tc.name, func(t *testing.T) { tenant(tc.args...).expect(t, 2, tc.want) })
		}
		// Nothing reached the verifier.
		r := tenant("cvlist", "--json")
		r.expect(t, 0, "")
		var l struct{ UUIDs []string }
		decode(t, r, &l)
		if len(l.UUIDs) != 0 {
			t.Fatalf("cvlist %v", l.UUIDs)
		}
	})

	t.Run("unknown agent exits 1", func(t *testing.T) {
		tenant("add", "-u", "nobody").expect(t, 1, "not registered")
		tenant("cvstatus", "-u", "nobody", "--json").expect(t, 1, "not on the verifier")
		tenant("delete", "-u", "nobody").expect(t, 1, "not on the verifier")
	})

	t.Run("empty cert store refuses the EK certificate", func(t *testing.T) {
		tenant("add", "-u", id, "--cert_store", t.TempDir()).expect(t, 1, "EK certificate check failed")
	})

	var added struct {
		agentDoc
		EKCheck     string    `json:"ek_check"`
		Mask        string    `json:"mask"`
		AgentPort   int       `json:"agent_port"`
		Version     string    `json:"agent_api_version"`
		Attestation *agentDoc `json:"attestation"`
	}
	t.Run("add with --wait", func(t *testing.T) {
		start := time.Now()
		r := tenant("add", "-u", id, "-t", "127.0.0.1", "-tp", strconv.Itoa(a.Port), "--tpm_policy", pol, "--wait", "10s", "--json")
		r.expect(t, 0, "")
		t.Logf("keylime tenant add --wait (process start to first successful attestation): %v", time.Since(start))
		decode(t, r, &added)
		if added.AgentID != id || added.EKCheck != "verified" || added.Mask != "0x8000" || added.AgentPort != a.Port ||
			added.Version != "2.6" || added.Attestation == nil || added.Attestation.AttestationCount < 1 ||
			added.Attestation.StateName != "Get Quote" {
			t.Fatalf("add output %+v %+v\n%s", added, added.Attestation, r.stdout)
		}
	})

	t.Run("queries", func(t *testing.T) {
		r := tenant("cvstatus", "-u", id, "--json")
		r.expect(t, 0, "")
		var st agentDoc
		decode(t, r, &st)
		if st.AgentID != id || st.OperationalState != 3 || st.StateName != "Get Quote" || !strings.Contains(st.TPMPolicy, "0x8000") {
			t.Errorf("cvstatus %+v", st)
		}
		for _, cmd := range []string{"cvlist", "reglist"} {
			r := tenant(cmd, "--json")
			r.expect(t, 0, "")
			var l struct{ UUIDs []string }
			decode(t, r, &l)
			if !slices.Contains(l.UUIDs, id) {
				t.Errorf("%s %v", cmd, l.UUIDs)
			}
		}
		r = tenant("bulkinfo", "--json")
		r.expect(t, 0, "")
		var bulk map[string]agentDoc
		decode(t, r, &bulk)
		if bulk[id].StateName != "Get Quote" {
			t.Errorf("bulkinfo %+v", bulk)
		}
		r = tenant("status", "-u", id, "--json")
		r.expect(t, 0, "")
		var status struct {
			StateName string `json:"operational_state_name"`
			Registrar *struct {
				Active bool `json:"active"`
			} `json:"registrar"`
			Verifier *agentDoc `json:"verifier"`
		}
		decode(t, r, &status)
		if status.StateName != "Get Quote" || status.Registrar == nil || !status.Registrar.Active || status.Verifier == nil {
			t.Errorf("status %s", r.stdout)
		}
		r = tenant("regstatus", "-u", id, "--json")
		r.expect(t, 0, "")
		var reg struct {
			AgentID string `json:"agent_id"`
			Active  bool   `json:"active"`
		}
		decode(t, r, &reg)
		if reg.AgentID != id || !reg.Active {
			t.Errorf("regstatus %s", r.stdout)
		}
		// Human text names the state, the count and the last success.
		r = tenant("status", "-u", id)
		r.expect(t, 0, "")
		t.Logf("keylime tenant status:\n%s", r.stdout)
		for _, want := range []string{"Get Quote (3)", "attestations:", "last successful:", "active, regcount 1"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("status text lacks %q:\n%s", want, r.stdout)
			}
		}
	})

	t.Run("option aliases override the configuration", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		deadConf := tenantConfig(t, s, dead, store)
		run(t, nil, "--config", deadConf, "tenant", "cvlist").expect(t, 1, dead)
		run(t, nil, "--config", deadConf, "tenant", "cvlist", "-v", "127.0.0.1", "-vp", vport).expect(t, 0, "")
		run(t, []string{"KEYLIME_TENANT_VERIFIER_PORT=" + vport}, "--config", deadConf, "tenant", "cvlist").expect(t, 0, "")
	})

	t.Run("already added exits 1", func(t *testing.T) {
		tenant("add", "-u", id).expect(t, 1, "already on the verifier")
	})

	t.Run("failed agent: exit 4 with the reason", func(t *testing.T) {
		d := sha256.Sum256([]byte("unexpected"))
		if err := a.Device.PCRExtend(15, tpm2.TPMAlgSHA256, d[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := s.WaitVerifier(id, 10*time.Second, e2e.InState(api.StateInvalidQuote)); err != nil {
			t.Fatal(err)
		}
		// Without --fail-on-failed the query worked: 0.
		tenant("cvstatus", "-u", id).expect(t, 0, "")
		r := tenant("cvstatus", "-u", id, "--fail-on-failed", "--json")
		r.expect(t, 4, "invalid_pcr_15")
		var st agentDoc
		decode(t, r, &st)
		if st.StateName != "Invalid Quote" || !strings.Contains(st.LastFailure, "pcr=15") || len(st.Failures) == 0 {
			t.Errorf("cvstatus of a failed agent %+v", st)
		}
		r = tenant("status", "-u", id, "--fail-on-failed")
		r.expect(t, 4, "Invalid Quote")
		t.Logf("keylime tenant status --fail-on-failed:\n%s%s", r.stdout, r.stderr)
		for _, want := range []string{"Invalid Quote (9)", "failure:", "pcr_validation.invalid_pcr_15"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("status text lacks %q:\n%s", want, r.stdout)
			}
		}
		// Reactivating does not help while PCR 15 is wrong.
		tenant("reactivate", "-u", id, "--wait", "5s").expect(t, 4, "invalid_pcr_15")
		// A new policy with the current value: update, and it attests again.
		pol2, err := a.PCRPolicy(15)
		if err != nil {
			t.Fatal(err)
		}
		r = tenant("update", "-u", id, "--tpm_policy", pol2, "--wait", "10s")
		r.expect(t, 0, "")
		t.Logf("keylime tenant update:\n%s", r.stdout)
		if !strings.Contains(r.stdout, "updated agent "+id) || !strings.Contains(r.stdout, "EK certificate:  verified") {
			t.Errorf("update text:\n%s", r.stdout)
		}
	})

	t.Run("delete and regdelete", func(t *testing.T) {
		r := tenant("delete", "-u", id, "--json")
		r.expect(t, 0, "")
		var del struct {
			Deleted bool   `json:"deleted"`
			From    string `json:"from"`
		}
		decode(t, r, &del)
		if !del.Deleted || del.From != "verifier" {
			t.Errorf("delete %s", r.stdout)
		}
		tenant("delete", "-u", id).expect(t, 1, "not on the verifier")
		tenant("cvstatus", "-u", id).expect(t, 1, "not on the verifier")
		tenant("regdelete", "-u", id).expect(t, 0, "")
		tenant("regstatus", "-u", id, "--json").expect(t, 1, "not registered")
		tenant("status", "-u", id).expect(t, 1, "neither registered")
	})
}
