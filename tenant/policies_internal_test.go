package tenant

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"testing"

	"github.com/keylime-go/keylime/policy/ima"
)

// TestRuntimePolicyWireEncoding: runtime_policy is the base64 of the policy text and runtime_policy_key
// the base64 of the key file as given (PEM), as Keylime's read_runtime_policy/process_policy send them.
func TestRuntimePolicyWireEncoding(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	raw, err := json.Marshal(ima.EmptyRuntimePolicy())
	if err != nil {
		t.Fatal(err)
	}
	env, err := ima.SignEnvelope(raw, k)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name              string
		in                RuntimePolicyInput
		wantPolicy, wantK string
	}{
		{"signed", RuntimePolicyInput{Policy: env, SigKey: keyPEM}, base64.StdEncoding.EncodeToString(env), base64.StdEncoding.EncodeToString(keyPEM)},
		{"unsigned", RuntimePolicyInput{Policy: raw}, base64.StdEncoding.EncodeToString(raw), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := prepareRuntimePolicy(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if p.policy != tc.wantPolicy || p.key != tc.wantK {
				t.Errorf("policy %q key %q, want %q %q", p.policy, p.key, tc.wantPolicy, tc.wantK)
			}
		})
	}
}
