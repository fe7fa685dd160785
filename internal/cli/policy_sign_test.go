package cli_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keylime-go/keylime/policy/ima"
)

func writePEM(t *testing.T, path, typ string, der []byte) string {
	t.Helper()
	return writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// envelope reads a DSSE envelope file.
func envelope(t *testing.T, path string) ima.Envelope {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var env ima.Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("%s is not JSON: %v", path, err)
	}
	return env
}

func writeEnvelope(t *testing.T, path string, env ima.Envelope) string {
	t.Helper()
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, path, b)
}

func TestPolicySignVerify(t *testing.T) {
	dir := t.TempDir()
	logFile := imaFixture("vm-ovmf-ima-ng")
	pol := filepath.Join(dir, "policy.json")
	run(t, nil, "policy", "create", "runtime", "--ima-log", logFile, "-o", pol).expect(t, 0, "")
	polBytes, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(polBytes)

	// Sign with a generated key; the key and its public half are written.
	keyFile, pubFile, signed := filepath.Join(dir, "key.pem"), filepath.Join(dir, "key.pub"), filepath.Join(dir, "signed.json")
	r := run(t, nil, "policy", "sign", "--keyfile-out", keyFile, "--pubkey-out", pubFile, "-o", signed, pol)
	r.expect(t, 0, "")
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated key: %v %v", fi, err)
	}
	env := envelope(t, signed)
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil || string(payload) != string(polBytes) || env.PayloadType != ima.PayloadType || len(env.Signatures) != 1 {
		t.Fatalf("envelope %+v (payload decodes: %v)", env, err)
	}
	pubPEM, _ := os.ReadFile(pubFile)
	pub, err := ima.ParseDSSEKey(pubPEM)
	if err != nil || pub.Curve != elliptic.P256() {
		t.Fatalf("public key: %v", err)
	}
	if id, _ := ima.DSSEKeyID(pub); env.Signatures[0].KeyID != id {
		t.Errorf("keyid %s, want %s", env.Signatures[0].KeyID, id)
	}
	// The library (the verifier's code) accepts it independently of the CLI.
	if _, err := ima.VerifyEnvelope(mustRead(t, signed), pubPEM); err != nil {
		t.Fatalf("VerifyEnvelope: %v", err)
	}

	// A second key, for wrong-key cases; a PKCS#8 key file signs too (keylime-policy's -k/-r spelling).
	other, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherDER, _ := x509.MarshalPKCS8PrivateKey(other)
	otherKey := writePEM(t, filepath.Join(dir, "other.pem"), "PRIVATE KEY", otherDER)
	otherPubDER, _ := x509.MarshalPKIXPublicKey(&other.PublicKey)
	otherPub := writePEM(t, filepath.Join(dir, "other.pub"), "PUBLIC KEY", otherPubDER)
	signedOther := filepath.Join(dir, "signed-other.json")
	run(t, nil, "policy", "sign", "runtime", "-k", otherKey, "-r", pol, "-o", signedOther).expect(t, 0, "")

	// Tampered envelopes.
	tamperedPayload := env
	tamperedPayload.Payload = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(polBytes), "/bin/busybox", "/bin/busyb0x", 1)))
	tamperedPayloadFile := writeEnvelope(t, filepath.Join(dir, "tampered-payload.json"), tamperedPayload)
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	sig[len(sig)-1] ^= 1
	tamperedSig := env
	tamperedSig.Signatures = []ima.EnvelopeSignature{{KeyID: env.Signatures[0].KeyID, Sig: base64.StdEncoding.EncodeToString(sig)}}
	tamperedSigFile := writeEnvelope(t, filepath.Join(dir, "tampered-sig.json"), tamperedSig)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	rsaPubFile := writePEM(t, filepath.Join(dir, "rsa.pub"), "PUBLIC KEY", rsaPub)
	rsaPriv, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaKeyFile := writePEM(t, filepath.Join(dir, "rsa.pem"), "PRIVATE KEY", rsaPriv)

	keylime := filepath.Join(imaTestdata, "keylime")
	verify := []struct {
		name, key, file string
		code            int
		want            string
	}{
		{"public key", pubFile, signed, 0, ""},
		{"private key", keyFile, signed, 0, ""},
		{"other key's envelope", otherPub, signedOther, 0, ""},
		{"keylime's signed policy", filepath.Join(keylime, "runtime-policy-pubkey.pub"), filepath.Join(keylime, "runtime-policy-test-signed.json"), 0, ""},
		{"tampered payload", pubFile, tamperedPayloadFile, 1, "signature verification"},
		{"tampered signature", pubFile, tamperedSigFile, 1, "signature verification"},
		{"wrong key", otherPub, signed, 1, "signature verification"},
		{"keylime's bad signature", filepath.Join(keylime, "runtime-policy-pubkey.pub"), filepath.Join(keylime, "runtime-policy-test-signed-bad.json"), 1, "signature verification"},
		{"not an envelope", pubFile, pol, 2, "envelope"},
		{"not a key", pol, signed, 2, "--key"},
		{"RSA key", rsaPubFile, signed, 2, "--key"},
		{"missing envelope", pubFile, filepath.Join(dir, "nope.json"), 2, "no such file"},
	}
	for _, tc := range verify {
		t.Run("verify "+tc.name, func(t *testing.T) {
			r := run(t, nil, "policy", "verify", "--key", tc.key, tc.file)
			r.expect(t, tc.code, tc.want)
			if tc.code == 0 && !strings.HasPrefix(r.stdout, "valid") {
				t.Fatalf("stdout %q", r.stdout)
			}
		})
	}
	t.Run("verify prints the payload digest and writes the payload", func(t *testing.T) {
		out := filepath.Join(dir, "payload.json")
		r := run(t, nil, "policy", "verify", "--key", pubFile, "-o", out, signed)
		r.expect(t, 0, "")
		if !strings.Contains(r.stdout, "sha256:"+hex.EncodeToString(sum[:])) {
			t.Errorf("stdout %q lacks the payload digest", r.stdout)
		}
		if got := mustRead(t, out); string(got) != string(polBytes) {
			t.Errorf("payload written differs from the policy")
		}
	})

	sign := []struct {
		name string
		args []string
		want string
	}{
		{"no key", []string{pol}, "--key"},
		{"both keys", []string{"--key", keyFile, "--keyfile-out", filepath.Join(dir, "k2.pem"), pol}, "exclude"},
		{"existing keyfile-out", []string{"--keyfile-out", keyFile, pol}, "exists"},
		{"RSA key", []string{"--key", rsaKeyFile, pol}, "elliptic"},
		{"public key to sign", []string{"--key", pubFile, pol}, "--key"},
		{"no policy", []string{"--key", keyFile}, "which policy"},
		{"already signed", []string{"--key", keyFile, signed}, "already"},
		{"invalid policy", []string{"--key", keyFile, writeFile(t, filepath.Join(dir, "bad.json"), []byte(`{"digests": {"/a": ["zz"]}}`))}, "invalid runtime policy"},
		{"x509 backend", []string{"--key", keyFile, "--backend", "x509", pol}, "ecdsa"},
	}
	for _, tc := range sign {
		t.Run("sign "+tc.name, func(t *testing.T) {
			run(t, nil, append([]string{"policy", "sign"}, tc.args...)...).expect(t, 2, tc.want)
		})
	}

	// evaluate runtime takes the signed policy: checked with the key, only unwrapped without it.
	eval := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"signed policy and its key", []string{"--runtime-policy", signed, "--runtime-policy-key", pubFile}, 0, ""},
		{"signed policy without a key", []string{"--runtime-policy", signed}, 0, ""},
		{"signed policy, wrong key", []string{"--runtime-policy", signed, "--runtime-policy-key", otherPub}, 2, "signature verification"},
		{"tampered signed policy", []string{"--runtime-policy", tamperedPayloadFile, "--runtime-policy-key", pubFile}, 2, "signature verification"},
		{"plain policy with a key", []string{"--runtime-policy", pol, "--runtime-policy-key", pubFile}, 2, "not signed"},
	}
	for _, tc := range eval {
		t.Run("evaluate "+tc.name, func(t *testing.T) {
			r := run(t, nil, append([]string{"policy", "evaluate", "runtime", "--ima-log", logFile, "--json"}, tc.args...)...)
			r.expect(t, tc.code, tc.want)
			if tc.code == 0 {
				if ev := evalJSON(t, r); !ev.Valid {
					t.Fatalf("rejected: %s", r.stdout)
				}
			}
		})
	}
	t.Run("evaluate a tampered policy without its key", func(t *testing.T) {
		// Unwrapped unchecked, the altered policy no longer lists /bin/busybox.
		r := run(t, nil, "policy", "evaluate", "runtime", "--ima-log", logFile, "--runtime-policy", tamperedPayloadFile)
		r.expect(t, 1, "/bin/busybox")
		if !strings.Contains(r.stderr, "not checked") {
			t.Errorf("no note that the signature was not checked: %q", r.stderr)
		}
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// imaSigLine builds an ima-sig log line for path with content signed by key (template data written
// field by field: d-ng, n-ng, sig with u32 little-endian lengths).
func imaSigLine(t *testing.T, path, content string, key *ecdsa.PrivateKey) string {
	t.Helper()
	digest := sha256.Sum256([]byte(content))
	der, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	id, err := ima.KeyIDv2(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := ima.SignatureV2("sha256", id, der)
	if err != nil {
		t.Fatal(err)
	}
	var td []byte
	field := func(b []byte) {
		td = binary.LittleEndian.AppendUint32(td, uint32(len(b)))
		td = append(td, b...)
	}
	field(append([]byte("sha256:\x00"), digest[:]...))
	field(append([]byte(path), 0))
	field(sig)
	th := sha1.Sum(td)
	return fmt.Sprintf("10 %x ima-sig sha256:%x %s %x\n", th, digest, path, sig)
}

func TestPolicyEvaluateRuntimeKeys(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubFile := writePEM(t, filepath.Join(dir, "ima.pub"), "PUBLIC KEY", pubDER)
	logText := string(mustRead(t, imaFixture("vm-ovmf-ima-sig"))) + imaSigLine(t, "/usr/bin/signed", "signed content", key)
	logFile := writeFile(t, filepath.Join(dir, "log"), []byte(logText))

	// The policy is built from the captured log only: /usr/bin/signed is not in it.
	pol := filepath.Join(dir, "policy.json")
	run(t, nil, "policy", "create", "runtime", "--ima-log", imaFixture("vm-ovmf-ima-sig"), "-o", pol).expect(t, 0, "")
	withKey := filepath.Join(dir, "policy-key.json")
	run(t, nil, "policy", "create", "runtime", "--base-policy", pol, "--verification-key", pubFile, "-o", withKey).expect(t, 0, "")

	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"no key", []string{"--runtime-policy", pol}, 1},
		{"--keys", []string{"--runtime-policy", pol, "--keys", pubFile}, 0},
		{"policy verification-keys", []string{"--runtime-policy", withKey}, 0},
		{"--keys with the policy's keys", []string{"--runtime-policy", withKey, "--keys", filepath.Join(imaTestdata, "keylime", "rsa2048pub.pem")}, 0},
		{"wrong key", []string{"--runtime-policy", pol, "--keys", filepath.Join(imaTestdata, "keylime", "rsa2048pub.pem")}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, nil, append([]string{"policy", "evaluate", "runtime", "--ima-log", logFile, "--json"}, tc.args...)...)
			r.expect(t, tc.code, "/usr/bin/signed")
			ev := evalJSON(t, r)
			if tc.code == 0 {
				if !ev.Valid {
					t.Fatalf("rejected: %s", r.stdout)
				}
				return
			}
			if ev.Valid || len(ev.Failures) != 1 || ev.Failures[0].Context["path"] != "/usr/bin/signed" || ev.Failures[0].EventID != ima.EventNotInPolicy {
				t.Fatalf("failures: %s", r.stdout)
			}
		})
	}
}
