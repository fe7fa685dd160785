package registrar

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/tpm/device"
)

// withAttributes re-marshals a TPM2B_PUBLIC with other object attributes.
func withAttributes(t *testing.T, pub tpm2.TPMTPublic, set func(*tpm2.TPMAObject)) string {
	t.Helper()
	set(&pub.ObjectAttributes)
	return base64.StdEncoding.EncodeToString(tpm2.Marshal(tpm2.New2B(pub)))
}

func jsonBody(t *testing.T, m map[string]any) string {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMalformedRequests sends broken registrations and activations: each gets a 4xx with a message that
// names the problem, and the store does not change.
func TestMalformedRequests(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := startRegistrar(t, filepath.Join(t.TempDir(), "registrar.db"))
	id := newIdentity(t, device.RSA, device.RSA)
	other := newIdentity(t, device.ECC, device.ECC)
	ctx := context.Background()
	const agentID = "agent-1"
	good := id.request(t)
	blob, err := s.public.Register(ctx, agentID, good)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.public.Activate(ctx, agentID, id.activate(t, agentID, blob)); err != nil {
		t.Fatal(err)
	}
	before := dump(t, s.reg)

	base := func() map[string]any {
		return map[string]any{
			"ek_tpm": good.EKTPM, "aik_tpm": good.AIKTPM, "ekcert": *good.EKCert,
			"mtls_cert": "disabled", "ip": "127.0.0.1", "port": 9002,
		}
	}
	with := func(k string, v any) string {
		m := base()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return jsonBody(t, m)
	}
	akPub := id.ak.Public
	ekPub := id.ek.Public
	garbage := base64.StdEncoding.EncodeToString([]byte("this is not a TPM2B_PUBLIC structure at all"))
	truncated := base64.StdEncoding.EncodeToString(id.ak.PublicBytes[:len(id.ak.PublicBytes)-10])
	trailing := base64.StdEncoding.EncodeToString(append(append([]byte{}, id.ak.PublicBytes...), 0, 0))
	otherCert := base64.StdEncoding.EncodeToString(other.ek.Cert)
	const newID = "agent-2" // a fresh id, so refusals are not the takeover check

	for _, tc := range []struct {
		name, method, path, ctype, body string
		code                            int
		msg                             string
	}{
		{"not JSON", "POST", "/v2.6/agents/" + newID, "application/json", "{ek_tpm:", 400, "invalid JSON"},
		{"empty body", "POST", "/v2.6/agents/" + newID, "application/json", "", 400, "empty"},
		{"JSON array", "POST", "/v2.6/agents/" + newID, "application/json", "[1,2]", 400, "invalid JSON"},
		{"trailing JSON", "POST", "/v2.6/agents/" + newID, "application/json", with("ip", "127.0.0.1") + "{}", 400, "trailing"},
		{"ek_tpm wrong type", "POST", "/v2.6/agents/" + newID, "", with("ek_tpm", 12), 400, `"ek_tpm"`},
		{"aik_tpm missing", "POST", "/v2.6/agents/" + newID, "", with("aik_tpm", nil), 400, "aik_tpm is required"},
		{"ek_tpm missing", "POST", "/v2.6/agents/" + newID, "", with("ek_tpm", nil), 400, "ek_tpm is required"},
		{"ek_tpm bad base64", "POST", "/v2.6/agents/" + newID, "", with("ek_tpm", "!!!notbase64"), 400, "ek_tpm"},
		{"aik_tpm bad base64", "POST", "/v2.6/agents/" + newID, "", with("aik_tpm", "%%%"), 400, "aik_tpm"},
		{"ek_tpm garbage structure", "POST", "/v2.6/agents/" + newID, "", with("ek_tpm", garbage), 400, "invalid ek_tpm"},
		{"aik_tpm truncated", "POST", "/v2.6/agents/" + newID, "", with("aik_tpm", truncated), 400, "invalid aik_tpm"},
		{"aik_tpm trailing bytes", "POST", "/v2.6/agents/" + newID, "", with("aik_tpm", trailing), 400, "invalid aik_tpm"},
		{"EK used as AK", "POST", "/v2.6/agents/" + newID, "", with("aik_tpm", good.EKTPM), 400, "refused aik_tpm"},
		{"AK not restricted", "POST", "/v2.6/agents/" + newID, "", with("aik_tpm", withAttributes(t, akPub, func(a *tpm2.TPMAObject) { a.Restricted = false })), 400, "not restricted"},
		{"AK can decrypt", "POST", "/v2.6/agents/" + newID, "", with("aik_tpm", withAttributes(t, akPub, func(a *tpm2.TPMAObject) { a.Decrypt = true })), 400, "decrypt"},
		{"AK not fixedTPM", "POST", "/v2.6/agents/" + newID, "", with("aik_tpm", withAttributes(t, akPub, func(a *tpm2.TPMAObject) { a.FixedTPM = false })), 400, "fixedTPM"},
		{"EK that can sign", "POST", "/v2.6/agents/" + newID, "", with("ek_tpm", withAttributes(t, ekPub, func(a *tpm2.TPMAObject) { a.SignEncrypt = true })), 400, "invalid ek_tpm"},
		{"ekcert garbage", "POST", "/v2.6/agents/" + newID, "", with("ekcert", "bm90IGEgY2VydA=="), 400, "invalid ekcert"},
		{"ekcert of another EK", "POST", "/v2.6/agents/" + newID, "", with("ekcert", otherCert), 400, "does not certify"},
		{"mtls_cert garbage", "POST", "/v2.6/agents/" + newID, "", with("mtls_cert", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 400, "invalid mtls_cert"},
		{"port out of range", "POST", "/v2.6/agents/" + newID, "", with("port", 70000), 400, "out of range"},
		{"port wrong type", "POST", "/v2.6/agents/" + newID, "", with("port", true), 400, "port"},
		{"port not numeric", "POST", "/v2.6/agents/" + newID, "", with("port", "nine"), 400, "not a number"},
		{"ip invalid", "POST", "/v2.6/agents/" + newID, "", with("ip", "bad host!"), 400, "invalid ip"},
		{"oversized body", "POST", "/v2.6/agents/" + newID, "", with("ip", strings.Repeat("a", 2<<20)), 413, "too large"},
		{"bad agent id", "POST", "/v2.6/agents/bad%20id", "", with("ip", "127.0.0.1"), 400, "invalid agent id"},
		{"agent id too long", "POST", "/v2.6/agents/" + strings.Repeat("a", 300), "", with("ip", "127.0.0.1"), 400, "invalid agent id"},
		{"agent_id differs from path", "POST", "/v2.6/agents/" + newID, "", with("agent_id", "someone-else"), 400, "differs"},
		{"unknown API version", "POST", "/v9.9/agents/" + newID, "", with("ip", "127.0.0.1"), 400, "API version not supported: v9.9 (supported: 2.1, 2.2, 2.3, 2.4, 2.5, 2.6)"},
		{"takeover of a known id", "POST", "/v2.6/agents/" + agentID, "", with("ekcert", nil), 403, "different EK certificate"},
		{"activate: auth_tag not hex", "PUT", "/v2.6/agents/" + agentID, "", `{"auth_tag": "zz"}`, 400, "auth_tag"},
		{"activate: auth_tag upper case", "PUT", "/v2.6/agents/" + agentID, "", `{"auth_tag": "` + strings.Repeat("A", 96) + `"}`, 400, "lowercase"},
		{"activate: wrong auth_tag", "PUT", "/v2.6/agents/" + agentID, "", `{"auth_tag": "` + strings.Repeat("a", 96) + `"}`, 400, "does not match"},
		{"activate: unknown agent", "PUT", "/v2.6/agents/nobody", "", `{"auth_tag": "` + strings.Repeat("a", 96) + `"}`, 404, "not registered"},
		{"activate: bad JSON", "PUT", "/v2.6/agents/" + agentID + "/activate", "", `{"auth_tag": 5}`, 400, `"auth_tag"`},
		{"wrong method", "PATCH", "/v2.6/agents/" + agentID, "", `{}`, 405, "not allowed"},
		{"unknown route", "POST", "/v2.6/nothing", "", `{}`, 404, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc := transport.NewHTTPClient(nil, 10*time.Second)
			code, status := rawRequest(t, hc, s.plainURL, tc.method, tc.path, tc.ctype, strings.NewReader(tc.body))
			if code != tc.code || !strings.Contains(status, tc.msg) {
				t.Errorf("got %d %q, want %d with %q", code, status, tc.code, tc.msg)
			}
			if after := dump(t, s.reg); !bytes.Equal(before, after) {
				t.Errorf("store changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}
