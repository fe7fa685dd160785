package ima

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

func pemPublic(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestPAE(t *testing.T) {
	// The DSSE specification's example.
	if got := string(PAE("http://example.com/HelloWorld", []byte("hello world"))); got != "DSSEv1 29 http://example.com/HelloWorld 11 hello world" {
		t.Fatal(got)
	}
}

// TestKeylimeEnvelope verifies the envelope keylime signed for its tests with its P-256 key.
func TestKeylimeEnvelope(t *testing.T) {
	env := readFile(t, "testdata/keylime/runtime-policy-test-signed.json")
	key := readFile(t, "testdata/keylime/runtime-policy-pubkey.pub")
	payload, err := VerifyEnvelope(env, key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(payload), "/boot/grub2/i386-pc/testload.mod") || !IsEnvelope(env) {
		t.Fatalf("payload %.80s", payload)
	}
	if _, err := VerifyEnvelope(readFile(t, "testdata/keylime/runtime-policy-test-signed-bad.json"), key); !errors.Is(err, ErrEnvelopeSignature) {
		t.Fatalf("bad envelope: %v", err)
	}
	// The keyid is keylime's: the hex SHA-256 of the PEM public key file.
	pub, err := ParseDSSEKey(key)
	if err != nil {
		t.Fatal(err)
	}
	id, err := DSSEKeyID(pub)
	sum := sha256.Sum256(key)
	var e Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	if err != nil || id != hex.EncodeToString(sum[:]) || e.Signatures[0].KeyID != id {
		t.Fatalf("keyid %s, file hash %x, envelope %s", id, sum, e.Signatures[0].KeyID)
	}
	// keylime's payload has a "sha256:" digest, which its own schema refuses (so do we).
	if _, err := OpenRuntimePolicy(env, key, true); !errors.Is(err, ErrBadPolicy) {
		t.Fatalf("open: %v", err)
	}
}

func TestSignVerifyEnvelope(t *testing.T) {
	policy := []byte(validPolicy)
	for _, curve := range []string{"P-256", "P-384", "P-521"} {
		t.Run(curve, func(t *testing.T) {
			k := ecKey(t, curve)
			env, err := SignEnvelope(policy, k)
			if err != nil {
				t.Fatal(err)
			}
			got, err := VerifyEnvelope(env, pemPublic(t, k))
			if err != nil || string(got) != string(policy) {
				t.Fatalf("%v", err)
			}
			// A certificate carrying the key works too (keylime's x509 backend).
			cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: selfSignedCert(t, k, nil)})
			if _, err := VerifyEnvelope(env, cert); err != nil {
				t.Fatal(err)
			}
			p, err := OpenRuntimePolicy(env, pemPublic(t, k), true)
			if err != nil || p.Digests["/usr/bin/bash"] == nil {
				t.Fatalf("open: %v", err)
			}
		})
	}
}

func TestEnvelopeErrors(t *testing.T) {
	k := ecKey(t, "P-256")
	other := ecKey(t, "P-384")
	payload := []byte(validPolicy)
	env, err := SignEnvelope(payload, k)
	if err != nil {
		t.Fatal(err)
	}
	var e Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	remarshal := func(f func(*Envelope)) []byte {
		c := e
		c.Signatures = append([]EnvelopeSignature(nil), e.Signatures...)
		f(&c)
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sigDER, _ := base64.StdEncoding.DecodeString(e.Signatures[0].Sig)
	rawPayload := []byte(strings.Replace(validPolicy, `"release": 0`, `"release": 1`, 1))
	for _, c := range []struct {
		name string
		env  []byte
		key  []byte
		want error
	}{
		{"other key", env, pemPublic(t, other), ErrEnvelopeSignature},
		{"tampered payload", remarshal(func(c *Envelope) { c.Payload = base64.StdEncoding.EncodeToString(rawPayload) }), pemPublic(t, k), ErrEnvelopeSignature},
		{"no signatures", remarshal(func(c *Envelope) { c.Signatures = nil }), pemPublic(t, k), ErrEnvelopeSignature},
		{"other payload type", remarshal(func(c *Envelope) { c.PayloadType = "application/json" }), pemPublic(t, k), ErrBadEnvelope},
		{"payload not base64", remarshal(func(c *Envelope) { c.Payload = "%%%" }), pemPublic(t, k), ErrBadEnvelope},
		{"not JSON", []byte("{"), pemPublic(t, k), ErrBadEnvelope},
		{"RSA key", env, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustMarshalPKIX(t, rsaKey(t).Public())}), ErrBadDSSEKey},
		{"no PEM", env, []byte("key"), ErrBadDSSEKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := VerifyEnvelope(c.env, c.key); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	t.Run("keylime decoding quirks", func(t *testing.T) {
		// Signatures in hex and URL-safe base64, a second bad signature before the good one.
		hexSig := remarshal(func(c *Envelope) {
			c.Signatures = []EnvelopeSignature{{Sig: "00"}, {Sig: hex.EncodeToString(sigDER)}}
		})
		if _, err := VerifyEnvelope(hexSig, pemPublic(t, k)); err != nil {
			t.Fatal(err)
		}
		urlSig := remarshal(func(c *Envelope) { c.Signatures[0].Sig = base64.URLEncoding.EncodeToString(sigDER) })
		if _, err := VerifyEnvelope(urlSig, pemPublic(t, k)); err != nil {
			t.Fatal(err)
		}
		hexPayload := remarshal(func(c *Envelope) { c.Payload = hex.EncodeToString(payload) })
		if got, err := UnwrapEnvelope(hexPayload); err != nil || string(got) != validPolicy {
			t.Fatalf("%v", err)
		}
	})
	t.Run("open", func(t *testing.T) {
		plain := []byte(validPolicy)
		key := pemPublic(t, k)
		for _, c := range []struct {
			name    string
			data    []byte
			key     []byte
			require bool
			want    error
		}{
			{"plain, nothing required", plain, nil, false, nil},
			{"plain, signature required", plain, key, true, ErrNotSigned},
			{"plain, key given", plain, key, false, ErrNotSigned},
			{"envelope, unwrapped unverified", remarshal(func(c *Envelope) { c.Signatures = nil }), nil, false, nil},
			{"envelope, required without key", env, nil, true, ErrNoKey},
			{"envelope, verified", env, key, true, nil},
			{"envelope, key given, bad signature", env, pemPublic(t, other), false, ErrEnvelopeSignature},
			{"envelope of an invalid policy", remarshal(func(c *Envelope) { c.Payload = base64.StdEncoding.EncodeToString([]byte("{}")) }), nil, false, ErrBadPolicy},
		} {
			t.Run(c.name, func(t *testing.T) {
				_, err := OpenRuntimePolicy(c.data, c.key, c.require)
				if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
					t.Fatalf("err = %v, want %v", err, c.want)
				}
			})
		}
	})
	if IsEnvelope([]byte(`{"payload": ""}`)) || IsEnvelope([]byte(validPolicy)) || IsEnvelope([]byte("[]")) {
		t.Fatal("IsEnvelope")
	}
}

func mustMarshalPKIX(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignEnvelopeRandomised(t *testing.T) {
	k := ecKey(t, "P-256")
	a, _ := SignEnvelope([]byte("x"), k)
	b, _ := SignEnvelope([]byte("x"), k)
	if string(a) == string(b) {
		t.Fatal("two ECDSA signatures are equal")
	}
}
