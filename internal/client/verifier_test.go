package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/e2e"
	"github.com/keylime-go/keylime/policy/ima"
)

// TestVerifierNamedPolicies drives the ten named-policy calls against a real verifier over HTTPS
// (mutual TLS with the system CA) and checks the status codes callers map to errors.
func TestVerifierNamedPolicies(t *testing.T) {
	s := e2e.NewSystem(t)
	s.StartVerifier(e2e.VerifierOptions{})
	v := s.Verifier
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)

	pol := ima.EmptyRuntimePolicy()
	pol.Digests["/usr/bin/true"] = []string{strings.Repeat("ab", 32)}
	raw, err := json.Marshal(pol)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	wantCode := func(what string, err error, code int) {
		t.Helper()
		if got := client.StatusCode(err); got != code {
			t.Errorf("%s: status %d (%v), want %d", what, got, err, code)
		}
	}

	// Runtime policies.
	if names, err := v.RuntimePolicies(ctx); err != nil || len(names) != 0 {
		t.Fatalf("empty list: %v %v", names, err)
	}
	if err := v.PutRuntimePolicy(ctx, "web", &api.RuntimePolicyRequest{RuntimePolicy: b64(raw)}, false); err != nil {
		t.Fatalf("POST: %v", err)
	}
	wantCode("second POST", v.PutRuntimePolicy(ctx, "web", &api.RuntimePolicyRequest{RuntimePolicy: b64(raw)}, false), http.StatusConflict)
	wantCode("PUT of a missing name", v.PutRuntimePolicy(ctx, "nope", &api.RuntimePolicyRequest{RuntimePolicy: b64(raw)}, true), http.StatusNotFound)
	wantCode("not base64", v.PutRuntimePolicy(ctx, "bad", &api.RuntimePolicyRequest{RuntimePolicy: "%%%"}, false), http.StatusBadRequest)
	p, err := v.RuntimePolicy(ctx, "web")
	if err != nil || p.Name != "web" || p.RuntimePolicy != string(raw) {
		t.Fatalf("GET: %+v %v", p, err)
	}
	_, err = v.RuntimePolicy(ctx, "nope")
	wantCode("GET missing", err, http.StatusNotFound)

	// A DSSE envelope with its key (base64 of the PEM) is accepted; with another key the verifier says 401.
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	env, err := ima.SignEnvelope(raw, signer)
	if err != nil {
		t.Fatal(err)
	}
	keyOf := func(k *ecdsa.PrivateKey) *string {
		der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		s := b64(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		return &s
	}
	wantCode("envelope, wrong key", v.PutRuntimePolicy(ctx, "signed", &api.RuntimePolicyRequest{RuntimePolicy: b64(env), RuntimePolicyKey: keyOf(other)}, false), http.StatusUnauthorized)
	tpm := `{"mask": "0x400"}`
	if err := v.PutRuntimePolicy(ctx, "signed", &api.RuntimePolicyRequest{RuntimePolicy: b64(env), RuntimePolicyKey: keyOf(signer), TPMPolicy: &tpm}, false); err != nil {
		t.Fatalf("envelope with its key: %v", err)
	}
	pol.Digests["/usr/bin/env"] = []string{strings.Repeat("cd", 32)}
	raw2, _ := json.Marshal(pol)
	if err := v.PutRuntimePolicy(ctx, "web", &api.RuntimePolicyRequest{RuntimePolicy: b64(raw2)}, true); err != nil {
		t.Fatalf("PUT: %v", err)
	}
	if p, err := v.RuntimePolicy(ctx, "web"); err != nil || p.RuntimePolicy != string(raw2) {
		t.Errorf("GET after PUT: %+v %v", p, err)
	}
	names, err := v.RuntimePolicies(ctx)
	slices.Sort(names)
	if err != nil || !slices.Equal(names, []string{"signed", "web"}) {
		t.Errorf("list: %v %v", names, err)
	}
	if err := v.DeleteRuntimePolicy(ctx, "signed"); err != nil {
		t.Fatal(err)
	}
	wantCode("second DELETE", v.DeleteRuntimePolicy(ctx, "signed"), http.StatusNotFound)

	// Measured-boot policies.
	ref := `{"has_secureboot": false, "scrtm_and_bios": [], "mokdig": [], "mokxdig": [], "kernels": [], "pk": [], "kek": [], "db": [], "dbx": []}`
	if err := v.PutMBPolicy(ctx, "vm", &api.MBPolicyRequest{MBPolicy: ref}, false); err != nil {
		t.Fatalf("POST mb: %v", err)
	}
	wantCode("second POST mb", v.PutMBPolicy(ctx, "vm", &api.MBPolicyRequest{MBPolicy: ref}, false), http.StatusConflict)
	wantCode("PUT mb of a missing name", v.PutMBPolicy(ctx, "nope", &api.MBPolicyRequest{MBPolicy: ref}, true), http.StatusNotFound)
	wantCode("empty mb", v.PutMBPolicy(ctx, "empty", &api.MBPolicyRequest{MBPolicy: " "}, false), http.StatusBadRequest)
	if err := v.PutMBPolicy(ctx, "vm", &api.MBPolicyRequest{MBPolicy: "{}"}, true); err != nil {
		t.Fatalf("PUT mb: %v", err)
	}
	if p, err := v.MBPolicy(ctx, "vm"); err != nil || p.Name != "vm" || p.MBPolicy != "{}" {
		t.Errorf("GET mb: %+v %v", p, err)
	}
	if names, err := v.MBPolicies(ctx); err != nil || !slices.Equal(names, []string{"vm"}) {
		t.Errorf("list mb: %v %v", names, err)
	}
	if err := v.DeleteMBPolicy(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	_, err = v.MBPolicy(ctx, "vm")
	wantCode("GET mb after DELETE", err, http.StatusNotFound)
	wantCode("DELETE mb missing", v.DeleteMBPolicy(ctx, "vm"), http.StatusNotFound)
	if names, err := v.MBPolicies(ctx); err != nil || len(names) != 0 {
		t.Errorf("list mb after delete: %v %v", names, err)
	}
}
