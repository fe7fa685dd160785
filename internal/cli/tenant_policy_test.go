package cli_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/e2e"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/policy/mb"
)

// TestTenantPolicyCommands drives the named-policy commands and add --runtime-policy-name against a
// real verifier: every change is checked locally first, bad input exits 2 and stores nothing.
func TestTenantPolicyCommands(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := e2e.NewSystem(t)
	s.StartVerifier(e2e.VerifierOptions{QuoteInterval: 200 * time.Millisecond})
	imaLog := filepath.Join(t.TempDir(), "ascii_runtime_measurements")
	if err := os.WriteFile(imaLog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a := s.StartAgent(e2e.AgentOptions{IMALogPath: imaLog})
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	conf := tenantConfig(t, s, urlPort(t, s.VerifierURL), copyFiles(t, a.TPM.CACerts...))
	tenant := func(args ...string) result {
		t.Helper()
		return run(t, nil, append([]string{"--config", conf, "tenant"}, args...)...)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	list := func(cmd, key string) []string {
		t.Helper()
		r := tenant(cmd, "--json")
		r.expect(t, 0, "")
		var m map[string][]string
		decode(t, r, &m)
		return m[key]
	}

	pol := ima.EmptyRuntimePolicy()
	pol.Digests["/usr/bin/true"] = []string{strings.Repeat("ab", 32)}
	polJSON, _ := json.Marshal(pol)
	polFile := write("policy.json", polJSON)

	t.Run("runtime policies", func(t *testing.T) {
		tenant("addruntimepolicy", "--runtime-policy-name", "web", "--runtime-policy", polFile).expect(t, 0, "")
		if got := list("listruntimepolicy", "runtimepolicy names"); !slices.Equal(got, []string{"web"}) {
			t.Fatalf("list = %v", got)
		}
		r := tenant("showruntimepolicy", "--name", "web", "--json")
		r.expect(t, 0, "")
		var shown struct {
			Name          string `json:"name"`
			RuntimePolicy string `json:"runtime_policy"`
		}
		decode(t, r, &shown)
		if shown.Name != "web" || shown.RuntimePolicy != string(polJSON) {
			t.Fatalf("show = %+v", shown)
		}
		tenant("addruntimepolicy", "--runtime-policy-name", "web", "--runtime-policy", polFile).expect(t, 1, "already exists")

		// Bad input: exit 2, nothing stored.
		for _, tc := range []struct{ name, file, want string }{
			{"not a policy", write("bad.json", []byte(`{"digests": 5}`)), "invalid policy"},
			{"bad exclude", write("bad-ex.json", []byte(`{"meta": {"version": 1, "generator": 0}, "release": 0, "digests": {}, "excludes": ["(?<=x)"], "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null}, "ima-buf": {}, "verification-keys": ""}`)), "exclude"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tenant("addruntimepolicy", "--name", "bad", "--runtime-policy", tc.file).expect(t, 2, tc.want)
			})
		}
		tenant("addruntimepolicy", "--name", "bad").expect(t, 2, "--runtime-policy")

		// A legacy allowlist with an exclude list is converted.
		al := write("allowlist.txt", []byte(strings.Repeat("cd", 32)+"  /usr/bin/env\n"))
		ex := write("exclude.txt", []byte("/tmp/.*\n"))
		tenant("updateruntimepolicy", "--name", "web", "--allowlist", al, "--exclude", ex).expect(t, 0, "")
		r = tenant("showruntimepolicy", "--name", "web", "--json")
		decode(t, r, &shown)
		conv, err := ima.DecodeRuntimePolicy([]byte(shown.RuntimePolicy))
		if err != nil || len(conv.Digests["/usr/bin/env"]) != 1 || !slices.Equal(conv.Excludes, []string{"/tmp/.*"}) {
			t.Fatalf("converted allowlist %q: %v", shown.RuntimePolicy, err)
		}

		// Signed policies: verified with the key, refused with another or without one.
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		env, err := ima.SignEnvelope(polJSON, key)
		if err != nil {
			t.Fatal(err)
		}
		signed := write("signed.json", env)
		pub := func(k *ecdsa.PrivateKey) string {
			der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
			return write("pub-"+strings.Repeat("x", len(dir)%3)+k.X.Text(16)[:8]+".pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		}
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tenant("addruntimepolicy", "--name", "signed", "--runtime-policy", signed, "--runtime-policy-sig-key", pub(other)).expect(t, 2, "signature")
		tenant("addruntimepolicy", "--name", "signed", "--runtime-policy", signed).expect(t, 2, "signature")
		if got := list("listruntimepolicy", "runtimepolicy names"); !slices.Equal(got, []string{"web"}) {
			t.Fatalf("refused policies were stored: %v", got)
		}
		tenant("addruntimepolicy", "--name", "signed", "--runtime-policy", signed, "--runtime-policy-sig-key", pub(key)).expect(t, 0, "")
		tenant("deleteruntimepolicy", "--name", "signed").expect(t, 0, "")
		tenant("deleteruntimepolicy", "--name", "signed").expect(t, 1, "not found")

		// Missing names, Keylime's --runtime-policy-checksum and --allowlist-name, and names that cannot
		// be a URL path segment.
		tenant("updateruntimepolicy", "--name", "nope", "--runtime-policy", polFile).expect(t, 1, "not found")
		tenant("showruntimepolicy", "--name", "nope").expect(t, 1, "not found")
		sum := sha256.Sum256(polJSON)
		tenant("addruntimepolicy", "--name", "sum", "--runtime-policy", polFile, "--runtime-policy-checksum", strings.Repeat("0", 64)).expect(t, 2, "checksum mismatch")
		tenant("addruntimepolicy", "--allowlist-name", "sum", "--runtime-policy", polFile, "--runtime-policy-checksum", hex.EncodeToString(sum[:])).expect(t, 0, "")
		tenant("addruntimepolicy", "--name", "ex", "--exclude", ex).expect(t, 2, "--exclude needs")
		tenant("addruntimepolicy", "--name", "a/b", "--runtime-policy", polFile).expect(t, 2, "invalid policy name")
		if got := list("listruntimepolicy", "runtimepolicy names"); !slices.Equal(got, []string{"sum", "web"}) {
			t.Fatalf("list = %v", got)
		}
		r = tenant("deleteruntimepolicy", "--name", "sum", "--json")
		r.expect(t, 0, "")
		var res struct{ Name, Kind, Action string }
		decode(t, r, &res)
		if res.Name != "sum" || res.Kind != "runtime" || res.Action != "deleted" {
			t.Errorf("delete --json = %+v", res)
		}
	})

	t.Run("runtime policy from a URL", func(t *testing.T) {
		// A real HTTPS server on loopback; the binary trusts its certificate through SSL_CERT_FILE, the
		// standard way to choose a Go program's system roots on Linux (no test-only knob).
		var hits atomic.Int32
		mux := http.NewServeMux()
		mux.HandleFunc("/policy.json", func(w http.ResponseWriter, _ *http.Request) { hits.Add(1); _, _ = w.Write(polJSON) })
		mux.HandleFunc("/allowlist.txt", func(w http.ResponseWriter, _ *http.Request) {
			hits.Add(1)
			_, _ = w.Write([]byte(strings.Repeat("cd", 32) + "  /usr/bin/env\n"))
		})
		ts := httptest.NewUnstartedServer(mux)
		ts.Config.ErrorLog = log.New(io.Discard, "", 0)
		ts.StartTLS()
		t.Cleanup(ts.Close)
		plain := httptest.NewServer(mux)
		t.Cleanup(plain.Close)
		roots := write("server-ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}))
		trusted := []string{"SSL_CERT_FILE=" + roots, "SSL_CERT_DIR=" + t.TempDir()}
		tenantEnv := func(env []string, args ...string) result {
			t.Helper()
			return run(t, env, append([]string{"--config", conf, "tenant"}, args...)...)
		}
		sum := sha256.Sum256(polJSON)
		sumHex := hex.EncodeToString(sum[:])

		tenantEnv(trusted, "addruntimepolicy", "--name", "url", "--runtime-policy-url", ts.URL+"/policy.json", "--runtime-policy-checksum", sumHex).expect(t, 0, "")
		r := tenantEnv(nil, "showruntimepolicy", "--name", "url", "--json")
		r.expect(t, 0, "")
		var shown struct {
			RuntimePolicy string `json:"runtime_policy"`
		}
		decode(t, r, &shown)
		if shown.RuntimePolicy != string(polJSON) {
			t.Fatalf("stored %q, want the downloaded policy %q", shown.RuntimePolicy, polJSON)
		}

		// refused runs addruntimepolicy with each case's flags and expects its exit code and message.
		type refusal struct {
			name string
			env  []string
			args []string
			code int
			want string
		}
		refused := func(cases []refusal) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					tenantEnv(tc.env, append([]string{"addruntimepolicy", "--name", "bad"}, tc.args...)...).expect(t, tc.code, tc.want)
				})
			}
		}
		before := hits.Load()
		refused([]refusal{
			{"both file and URL", trusted, []string{"--runtime-policy", polFile, "--runtime-policy-url", ts.URL + "/policy.json", "--runtime-policy-checksum", sumHex}, 2, "exclude each other"},
			{"both allowlist file and URL", trusted, []string{"--allowlist", polFile, "--allowlist-url", ts.URL + "/allowlist.txt"}, 2, "exclude each other"},
			{"URL without checksum", trusted, []string{"--runtime-policy-url", ts.URL + "/policy.json"}, 2, "--runtime-policy-checksum"},
			{"not an http URL", trusted, []string{"--allowlist-url", "file:///etc/passwd"}, 2, "--allowlist-url"},
		})
		if n := hits.Load() - before; n != 0 {
			t.Errorf("refused flag combinations fetched %d times", n)
		}
		refused([]refusal{
			{"checksum mismatch", trusted, []string{"--runtime-policy-url", ts.URL + "/policy.json", "--runtime-policy-checksum", strings.Repeat("0", 64)}, 2, "checksum mismatch"},
			{"404", trusted, []string{"--runtime-policy-url", ts.URL + "/missing.json", "--runtime-policy-checksum", sumHex}, 1, "404 Not Found"},
			{"certificate not trusted", nil, []string{"--runtime-policy-url", ts.URL + "/policy.json", "--runtime-policy-checksum", sumHex}, 1, "certificate"},
		})

		// Plain http works as in Keylime's tenant; an allowlist (no checksum covers it) gets a warning.
		r = tenantEnv(nil, "addruntimepolicy", "--name", "plain", "--allowlist-url", plain.URL+"/allowlist.txt")
		r.expect(t, 0, "")
		if !strings.Contains(r.stderr, "plain http") {
			t.Errorf("no warning about the unauthenticated download on stderr: %q", r.stderr)
		}
		r = tenantEnv(nil, "addruntimepolicy", "--name", "plainsum", "--runtime-policy-url", plain.URL+"/policy.json", "--runtime-policy-checksum", sumHex)
		r.expect(t, 0, "")
		if strings.Contains(r.stderr, "plain http") {
			t.Errorf("a checksummed download was called unauthenticated: %q", r.stderr)
		}

		// add downloads before it changes anything: a failed download leaves the agent off the verifier.
		tenantEnv(trusted, "add", "-u", a.UUID(), "--runtime-policy-url", ts.URL+"/missing.json", "--runtime-policy-checksum", sumHex).expect(t, 1, "404")
		tenantEnv(nil, "cvstatus", "-u", a.UUID()).expect(t, 1, "not on the verifier")

		if got := list("listruntimepolicy", "runtimepolicy names"); !slices.Equal(got, []string{"plain", "plainsum", "url", "web"}) {
			t.Fatalf("list = %v", got)
		}
		for _, n := range []string{"plain", "plainsum", "url"} {
			tenant("deleteruntimepolicy", "--name", n).expect(t, 0, "")
		}
	})

	t.Run("measured-boot policies", func(t *testing.T) {
		refJSON := testbed.RefStateJSON(t, "../../testdata/vm-ovmf-ima-ng/binary_bios_measurements")
		refFile := write("refstate.json", refJSON)
		tenant("addmbpolicy", "--mb-policy-name", "vm", "--mb-policy", refFile).expect(t, 0, "")
		tenant("addmbpolicy", "--name", "vm", "--mb_refstate", refFile).expect(t, 1, "already exists")
		tenant("addmbpolicy", "--name", "junk", "--mb-policy", write("junk.json", []byte("[1, 2"))).expect(t, 2, "invalid policy")
		if got := list("listmbpolicy", "mbpolicy names"); !slices.Equal(got, []string{"vm"}) {
			t.Fatalf("list = %v", got)
		}
		r := tenant("showmbpolicy", "--name", "vm", "--json")
		r.expect(t, 0, "")
		var shown struct {
			MBPolicy string `json:"mb_policy"`
		}
		decode(t, r, &shown)
		if _, err := mb.ParseRefState([]byte(shown.MBPolicy)); err != nil || shown.MBPolicy != string(refJSON) {
			t.Fatalf("show = %q (%v)", shown.MBPolicy, err)
		}
		tenant("updatembpolicy", "--name", "vm", "--mb-policy", refFile).expect(t, 0, "")
		// "default" names tenant.mb_refstate, as in Keylime; unset, it is a usage error.
		tenant("addmbpolicy", "--name", "dflt", "--mb-policy", "default").expect(t, 2, "tenant.mb_refstate is not set")
		run(t, nil, "--config", conf, "--set", "tenant.mb_refstate="+refFile, "tenant", "addmbpolicy", "--name", "dflt", "--mb-policy", "default").expect(t, 0, "")
		r = tenant("showmbpolicy", "--name", "dflt", "--json")
		r.expect(t, 0, "")
		decode(t, r, &shown)
		if shown.MBPolicy != string(refJSON) {
			t.Fatalf("show of the default refstate = %q", shown.MBPolicy)
		}
		tenant("deletembpolicy", "--name", "dflt").expect(t, 0, "")
		tenant("deletembpolicy", "--name", "vm").expect(t, 0, "")
		tenant("showmbpolicy", "--name", "vm").expect(t, 1, "not found")
	})

	t.Run("add with a named runtime policy", func(t *testing.T) {
		r := tenant("add", "-u", a.UUID(), "--runtime-policy-name", "web", "--wait", "10s", "--json")
		r.expect(t, 0, "")
		var added struct {
			Mask        string `json:"mask"`
			Attestation struct {
				HasRuntimePolicy int `json:"has_runtime_policy"`
				AttestationCount int `json:"attestation_count"`
			} `json:"attestation"`
		}
		decode(t, r, &added)
		if added.Mask != "0x400" || added.Attestation.HasRuntimePolicy != 1 || added.Attestation.AttestationCount < 1 {
			t.Fatalf("add = %+v\n%s", added, r.stdout)
		}
		tenant("deleteruntimepolicy", "--name", "web").expect(t, 1, "in use")
		tenant("add", "-u", a.UUID(), "--runtime-policy", write("junk2.json", []byte("{"))).expect(t, 2, "invalid policy")

		// update adds a measured-boot policy by name: every measured-boot PCR joins the mask and the
		// reference state is in use. A tpm_policy value for one of those PCRs is refused first.
		tenant("addmbpolicy", "--name", "open", "--mb-policy", write("open.json", []byte("{}"))).expect(t, 0, "")
		pol0, err := a.PCRPolicy(0)
		if err != nil {
			t.Fatal(err)
		}
		tenant("update", "-u", a.UUID(), "--runtime-policy-name", "web", "--mb-policy-name", "open", "--tpm_policy", pol0).expect(t, 2, "PCR 0")
		r = tenant("update", "-u", a.UUID(), "--runtime-policy-name", "web", "--mb-policy-name", "open", "--json")
		r.expect(t, 0, "")
		decode(t, r, &added)
		if added.Mask != "0xffff" {
			t.Errorf("mask with both policies = %s, want 0xffff (PCR 10 and the measured-boot PCRs 0-9, 11-15)", added.Mask)
		}
		r = tenant("cvstatus", "-u", a.UUID(), "--json")
		r.expect(t, 0, "")
		var st struct {
			HasRuntimePolicy int `json:"has_runtime_policy"`
			HasMBRefstate    int `json:"has_mb_refstate"`
		}
		decode(t, r, &st)
		if st.HasRuntimePolicy != 1 || st.HasMBRefstate != 1 {
			t.Errorf("cvstatus = %+v", st)
		}
		tenant("deletembpolicy", "--name", "open").expect(t, 1, "in use")
	})
}
