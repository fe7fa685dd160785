package verifier

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/keylime-go/keylime/internal/api"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

const runtimePolicyText = `{"meta":{"version":1,"generator":3},"release":0,"digests":{"/bin/sh":["` + zero32 + `"]},"excludes":[],"keyrings":{},"ima":{"ignored_keyrings":[],"log_hash_alg":"sha1","dm_policy":null},"ima-buf":{},"verification-keys":""}`

func TestNamedPolicies(t *testing.T) {
	tv := startVerifier(t)
	body := func(m map[string]any) string { b, _ := json.Marshal(m); return string(b) }
	rp := body(map[string]any{"runtime_policy": b64(runtimePolicyText)})
	steps := []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"create", "POST", "/v2.1/allowlists/web", rp, 201, "Created"},
		{"create again", "POST", "/v2.1/allowlists/web", rp, 409, "exists"},
		{"same text, other name", "POST", "/v2.1/allowlists/web2", rp, 201, "Created"},
		{"update missing", "PUT", "/v2.1/allowlists/nope", rp, 404, "not found"},
		{"update", "PUT", "/v2.1/allowlists/web", rp, 201, "Created"},
		{"bad base64", "POST", "/v2.1/allowlists/x", body(map[string]any{"runtime_policy": "%%"}), 400, "base64"},
		{"bad name", "POST", "/v2.1/allowlists/a%20b", rp, 400, "invalid policy name"},
		{"mb create", "POST", "/v2.3/mbpolicies/fw", body(map[string]any{"mb_policy": `{}`}), 201, "Created"},
		{"mb refstate incomplete", "POST", "/v2.3/mbpolicies/half", body(map[string]any{"mb_policy": `{"has_secureboot": false}`}), 400, "scrtm_and_bios"},
		{"mb before 2.3", "POST", "/v2.2/mbpolicies/fw", body(map[string]any{"mb_policy": `{}`}), 404, "not found"},
		{"mb not JSON", "POST", "/v2.3/mbpolicies/bad", body(map[string]any{"mb_policy": `{`}), 400, "mb_policy"},
	}
	for _, s := range steps {
		code, env := tv.do(t, s.method, s.path, s.body)
		if code != s.code || !strings.Contains(env.Status, s.msg) {
			t.Fatalf("%s: %d %q, want %d %q", s.name, code, env.Status, s.code, s.msg)
		}
	}
	// Two names with the same text share one compiled policy.
	set := tv.v.policies[kindRuntime]
	if set.get("web") == nil || set.get("web") != set.get("web2") {
		t.Error("identical policies compiled twice")
	}
	code, env := tv.do(t, "GET", "/v2.1/allowlists/web", "")
	var got api.RuntimePolicy
	if err := env.Decode(&got); code != 200 || err != nil || got.RuntimePolicy != runtimePolicyText || got.Name != "web" {
		t.Fatalf("get: %d %+v %v", code, got, err)
	}
	if !strings.Contains(string(env.Results), `"tmp_policy":null`) {
		t.Errorf("upstream's tmp_policy key missing: %s", env.Results)
	}
	code, env = tv.do(t, "GET", "/v2.1/allowlists/", "")
	var names api.RuntimePolicyList
	if err := env.Decode(&names); code != 200 || err != nil || strings.Join(names.Names, ",") != "web,web2" {
		t.Fatalf("list: %+v", names)
	}

	// An agent referencing a named policy; a missing name is a 404; the policy is then in use.
	add := func(id string, extra map[string]any) (int, string) {
		m := map[string]any{"cloudagent_ip": "127.0.0.1", "cloudagent_port": 1, "tpm_policy": "{}", "ak_tpm": fixtureB64(t, "ak-rsa.tpm2b"),
			"mtls_cert": selfSignedPEM(t), "metadata": "{}"}
		for k, v := range extra {
			m[k] = v
		}
		code, env := tv.do(t, "POST", "/v2.1/agents/"+id, body(m))
		return code, env.Status
	}
	if code, msg := add("a1", map[string]any{"runtime_policy_name": "missing"}); code != 404 {
		t.Fatalf("missing named policy: %d %s", code, msg)
	}
	if code, msg := add("a1", map[string]any{"runtime_policy_name": "web", "mb_policy_name": "fw"}); code != 200 {
		t.Fatalf("add with names: %d %s", code, msg)
	}
	if code, env := tv.do(t, "DELETE", "/v2.1/allowlists/web", ""); code != 409 || !strings.Contains(env.Status, "a1") {
		t.Fatalf("delete in use: %d %s", code, env.Status)
	}
	// An inline policy is stored under the agent id and goes with the agent.
	if code, msg := add("a2", map[string]any{"runtime_policy": b64(runtimePolicyText)}); code != 200 {
		t.Fatalf("add inline: %d %s", code, msg)
	}
	if set.get("a2") == nil {
		t.Fatal("inline policy not stored under the agent id")
	}
	code, env = tv.do(t, "GET", "/v2.1/agents/a2", "")
	var st api.VerifierAgent
	if err := env.Decode(&st); code != 200 || err != nil || st.HasRuntimePolicy != 1 {
		t.Fatalf("status %+v", st)
	}
	if code, _ := tv.do(t, "DELETE", "/v2.1/agents/a2", ""); code != 200 {
		t.Fatalf("delete agent: %d", code)
	}
	if set.get("a2") != nil {
		t.Error("the agent's own policy outlived it")
	}
	if code, _ := tv.do(t, "DELETE", "/v2.1/agents/a1", ""); code != 200 {
		t.Fatal("delete a1")
	}
	if code, _ := tv.do(t, "DELETE", "/v2.1/allowlists/web", ""); code != 204 {
		t.Fatalf("delete unused policy: %d", code)
	}
	if code, _ := tv.do(t, "GET", "/v2.1/allowlists/web", ""); code != 404 {
		t.Fatal("deleted policy still served")
	}
	// web2 shares the text: it must survive web's deletion.
	if code, env := tv.do(t, "GET", "/v2.1/allowlists/web2", ""); code != 200 {
		t.Fatalf("shared text lost: %d %s", code, env.Status)
	}
}
