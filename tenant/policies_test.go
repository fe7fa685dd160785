package tenant_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/tenant"
)

// policyFixtures are a version 1 runtime policy, a DSSE envelope of it, the signer's public key (PEM)
// and another key's.
type policyFixtures struct {
	policy, envelope, key, otherKey []byte
}

func newPolicyFixtures(t testing.TB) policyFixtures {
	t.Helper()
	p := ima.EmptyRuntimePolicy()
	p.Digests["/usr/bin/true"] = []string{strings.Repeat("ab", 32)}
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	env, err := ima.SignEnvelope(raw, signer)
	if err != nil {
		t.Fatal(err)
	}
	return policyFixtures{policy: raw, envelope: env, key: pubPEM(t, &signer.PublicKey), otherKey: pubPEM(t, &other.PublicKey)}
}

func pubPEM(t testing.TB, k *ecdsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestPrepareRuntimePolicy: every way of giving a runtime policy is checked locally, with the
// sentinel a caller can act on, and what would be sent is a valid policy.
func TestPrepareRuntimePolicy(t *testing.T) {
	fx := newPolicyFixtures(t)
	allowlist := []byte(strings.Repeat("cd", 32) + "  /usr/bin/env\n" + strings.Repeat("ef", 20) + " %keyring:.ima\n")
	for _, tc := range []struct {
		name    string
		in      tenant.RuntimePolicyInput
		wantErr error
		// check inspects the policy that would be sent.
		check func(t *testing.T, sent []byte)
	}{
		{name: "current policy sent unchanged", in: tenant.RuntimePolicyInput{Policy: fx.policy},
			check: func(t *testing.T, sent []byte) {
				if string(sent) != string(fx.policy) {
					t.Errorf("sent %s, want the file unchanged", sent)
				}
			}},
		{name: "flat allowlist given as a policy is converted", in: tenant.RuntimePolicyInput{Policy: allowlist},
			check: wantDigest("/usr/bin/env", strings.Repeat("cd", 32))},
		{name: "allowlist and excludes", in: tenant.RuntimePolicyInput{Allowlist: allowlist, Excludes: []byte("# tmp\n/tmp/.*\n\n/var/log/.*\n")},
			check: func(t *testing.T, sent []byte) {
				wantDigest("/usr/bin/env", strings.Repeat("cd", 32))(t, sent)
				p, _ := ima.DecodeRuntimePolicy(sent)
				if !slices.Equal(p.Excludes, []string{"/tmp/.*", "/var/log/.*"}) {
					t.Errorf("excludes %q", p.Excludes)
				}
				if p.Meta.Generator != ima.GeneratorLegacyAllowList {
					t.Errorf("generator %d", p.Meta.Generator)
				}
			}},
		{name: "policy plus excludes", in: tenant.RuntimePolicyInput{Policy: fx.policy, Excludes: []byte("/opt/.*\n")},
			check: func(t *testing.T, sent []byte) {
				p, err := ima.DecodeRuntimePolicy(sent)
				if err != nil || !slices.Equal(p.Excludes, []string{"/opt/.*"}) || len(p.Digests["/usr/bin/true"]) != 1 {
					t.Errorf("sent %s (%v)", sent, err)
				}
			}},
		{name: "signed with its key: the envelope is sent", in: tenant.RuntimePolicyInput{Policy: fx.envelope, SigKey: fx.key},
			check: func(t *testing.T, sent []byte) {
				if string(sent) != string(fx.envelope) {
					t.Errorf("sent %s, want the envelope", sent)
				}
			}},
		{name: "checksum matches", in: tenant.RuntimePolicyInput{Policy: fx.policy, Checksum: strings.ToUpper(sha256Hex(fx.policy))},
			check: wantDigest("/usr/bin/true", strings.Repeat("ab", 32))},
		{name: "checksum of a signed policy is over the envelope", in: tenant.RuntimePolicyInput{Policy: fx.envelope, SigKey: fx.key, Checksum: sha256Hex(fx.envelope)}},

		{name: "signed with another key", in: tenant.RuntimePolicyInput{Policy: fx.envelope, SigKey: fx.otherKey}, wantErr: tenant.ErrPolicySignature},
		{name: "signed without a key", in: tenant.RuntimePolicyInput{Policy: fx.envelope}, wantErr: tenant.ErrPolicySignature},
		{name: "key for an unsigned policy", in: tenant.RuntimePolicyInput{Policy: fx.policy, SigKey: fx.key}, wantErr: tenant.ErrPolicySignature},
		{name: "key that is not a key", in: tenant.RuntimePolicyInput{Policy: fx.envelope, SigKey: []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")}, wantErr: tenant.ErrPolicySignature},
		{name: "tampered envelope", in: tenant.RuntimePolicyInput{Policy: tamper(t, fx.envelope), SigKey: fx.key}, wantErr: tenant.ErrPolicySignature},
		{name: "checksum mismatch", in: tenant.RuntimePolicyInput{Policy: fx.policy, Checksum: sha256Hex([]byte("other"))}, wantErr: tenant.ErrBadPolicy},
		{name: "checksum without a policy", in: tenant.RuntimePolicyInput{Allowlist: allowlist, Checksum: sha256Hex(allowlist)}, wantErr: tenant.ErrBadPolicy},
		{name: "excludes on a signed policy", in: tenant.RuntimePolicyInput{Policy: fx.envelope, SigKey: fx.key, Excludes: []byte("/x\n")}, wantErr: tenant.ErrBadPolicy},
		{name: "policy and allowlist", in: tenant.RuntimePolicyInput{Policy: fx.policy, Allowlist: allowlist}, wantErr: tenant.ErrBadPolicy},
		{name: "excludes alone", in: tenant.RuntimePolicyInput{Excludes: []byte("/tmp/.*\n")}, wantErr: tenant.ErrBadPolicy},
		{name: "exclude Go cannot compile", in: tenant.RuntimePolicyInput{Allowlist: allowlist, Excludes: []byte("(?<=x)\n")}, wantErr: tenant.ErrBadPolicy},
		{name: "not JSON and not an allowlist", in: tenant.RuntimePolicyInput{Policy: []byte("{\"digests\": ")}, wantErr: tenant.ErrBadPolicy},
		{name: "digests of the wrong type", in: tenant.RuntimePolicyInput{Policy: []byte(`{"digests": 5}`)}, wantErr: tenant.ErrBadPolicy},
		{name: "allowlist line without a path", in: tenant.RuntimePolicyInput{Allowlist: []byte(strings.Repeat("cd", 32) + "\n")}, wantErr: tenant.ErrBadPolicy},
		{name: "a runtime policy given as an allowlist", in: tenant.RuntimePolicyInput{Allowlist: fx.policy}, wantErr: tenant.ErrBadPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent, err := tenant.PrepareRuntimePolicy(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if sent != nil {
					t.Errorf("a refused policy came back with text %q", sent)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Whatever is sent opens as the verifier will open it.
			if _, err := ima.OpenRuntimePolicy(sent, tc.in.SigKey, tc.in.SigKey != nil); err != nil {
				t.Fatalf("the verifier would refuse %s: %v", sent, err)
			}
			if tc.check != nil {
				tc.check(t, sent)
			}
		})
	}
}

func wantDigest(path, digest string) func(*testing.T, []byte) {
	return func(t *testing.T, sent []byte) {
		t.Helper()
		p, err := ima.DecodeRuntimePolicy(sent)
		if err != nil || !slices.Contains(p.Digests[path], digest) {
			t.Errorf("sent %s (%v): want %s for %s", sent, err, digest, path)
		}
	}
}

// tamper changes one character of the envelope's payload.
func tamper(t *testing.T, env []byte) []byte {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	p := []byte(e["payload"].(string))
	if p[10] == 'A' {
		p[10] = 'B'
	} else {
		p[10] = 'A'
	}
	e["payload"] = string(p)
	out, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// minimalRefState is a reference state with every list Keylime requires, all empty.
const minimalRefState = `{"has_secureboot": false, "scrtm_and_bios": [], "mokdig": [], "mokxdig": [], "kernels": [], "pk": [], "kek": [], "db": [], "dbx": [], "vendor_db": []}`

func TestPrepareMBPolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		ok   bool
	}{
		{"empty object", `{}`, true},
		{"secure boot off", minimalRefState, true},
		{"kernels missing", `{"has_secureboot": false}`, false},
		{"truncated", `{"has_secureboot": `, false},
		{"array", `[1, 2]`, false},
		{"wrong type", `{"has_secureboot": "yes"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tenant.PrepareMBPolicy([]byte(tc.raw))
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, tenant.ErrBadPolicy)) {
				t.Fatalf("PrepareMBPolicy(%s) = %v", tc.raw, err)
			}
		})
	}
}

// TestNamedPolicies drives the named-policy calls against a real verifier over HTTPS and adds an agent
// that uses both kinds by name.
func TestNamedPolicies(t *testing.T) {
	b := newBed(t)
	a := b.startAgent(t)
	tn := b.tenant(t)
	ctx := ctxT(t, time.Minute)
	fx := newPolicyFixtures(t)
	listRT := func() []string {
		t.Helper()
		names, err := tn.RuntimePolicies(ctx)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		return names
	}
	listMB := func() []string {
		t.Helper()
		names, err := tn.MBPolicies(ctx)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		return names
	}
	if got := listRT(); got == nil || len(got) != 0 {
		t.Fatalf("fresh verifier lists %#v, want an empty list", got)
	}

	// Runtime policies.
	if err := tn.PutRuntimePolicy(ctx, "web", tenant.RuntimePolicyInput{Policy: fx.policy}, false); err != nil {
		t.Fatalf("add: %v", err)
	}
	if err := tn.PutRuntimePolicy(ctx, "web", tenant.RuntimePolicyInput{Policy: fx.policy}, false); !errors.Is(err, tenant.ErrPolicyExists) {
		t.Errorf("second add: %v", err)
	}
	if err := tn.PutRuntimePolicy(ctx, "nope", tenant.RuntimePolicyInput{Policy: fx.policy}, true); !errors.Is(err, tenant.ErrPolicyNotFound) {
		t.Errorf("update of a missing policy: %v", err)
	}
	if p, err := tn.RuntimePolicy(ctx, "web"); err != nil || p.Name != "web" || p.RuntimePolicy != string(fx.policy) {
		t.Errorf("show: %+v %v", p, err)
	}
	if _, err := tn.RuntimePolicy(ctx, "nope"); !errors.Is(err, tenant.ErrPolicyNotFound) {
		t.Errorf("show missing: %v", err)
	}
	for name, in := range map[string]tenant.RuntimePolicyInput{
		"garbage":   {Policy: []byte("{")},
		"wrong key": {Policy: fx.envelope, SigKey: fx.otherKey},
		"no key":    {Policy: fx.envelope},
	} {
		if err := tn.PutRuntimePolicy(ctx, "bad", in, false); !errors.Is(err, tenant.ErrBadPolicy) && !errors.Is(err, tenant.ErrPolicySignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A name that cannot be one path segment is refused here; the verifier refuses names outside
	// [A-Za-z0-9_.-] (the name is path-escaped, so it arrives as given).
	for _, name := range []string{"", "..", "a/b", "../agents"} {
		if err := tn.PutRuntimePolicy(ctx, name, tenant.RuntimePolicyInput{Policy: fx.policy}, false); !errors.Is(err, tenant.ErrBadPolicyName) {
			t.Errorf("name %q: %v", name, err)
		}
	}
	if err := tn.PutRuntimePolicy(ctx, "a b?c", tenant.RuntimePolicyInput{Policy: fx.policy}, false); !errors.Is(err, tenant.ErrBadPolicy) {
		t.Errorf("name the verifier refuses: %v", err)
	}
	if got := listRT(); !slices.Equal(got, []string{"web"}) {
		t.Fatalf("refused policies were stored: %v", got)
	}
	if err := tn.PutRuntimePolicy(ctx, "signed", tenant.RuntimePolicyInput{Policy: fx.envelope, SigKey: fx.key}, false); err != nil {
		t.Fatalf("signed policy with its key: %v", err)
	}
	if p, err := tn.RuntimePolicy(ctx, "signed"); err != nil || p.RuntimePolicy != string(fx.envelope) {
		t.Errorf("signed policy stored as %+v (%v), want the envelope", p, err)
	}
	if err := tn.PutRuntimePolicy(ctx, "web", tenant.RuntimePolicyInput{Allowlist: []byte(strings.Repeat("cd", 32) + " /usr/bin/env\n")}, true); err != nil {
		t.Fatalf("update: %v", err)
	}
	if p, err := tn.RuntimePolicy(ctx, "web"); err != nil || !strings.Contains(p.RuntimePolicy, "/usr/bin/env") {
		t.Errorf("after update: %+v %v", p, err)
	}
	if got := listRT(); !slices.Equal(got, []string{"signed", "web"}) {
		t.Errorf("list: %v", got)
	}
	if err := tn.DeleteRuntimePolicy(ctx, "signed"); err != nil {
		t.Fatal(err)
	}
	if err := tn.DeleteRuntimePolicy(ctx, "signed"); !errors.Is(err, tenant.ErrPolicyNotFound) {
		t.Errorf("second delete: %v", err)
	}

	// Measured-boot policies.
	ref := ovmfRefState(t)
	if err := tn.PutMBPolicy(ctx, "vm", ref, false); err != nil {
		t.Fatalf("add mb: %v", err)
	}
	if err := tn.PutMBPolicy(ctx, "vm", ref, false); !errors.Is(err, tenant.ErrPolicyExists) {
		t.Errorf("second add mb: %v", err)
	}
	if err := tn.PutMBPolicy(ctx, "junk", []byte(`{"kernels": 3}`), false); !errors.Is(err, tenant.ErrBadPolicy) {
		t.Errorf("junk mb: %v", err)
	}
	if err := tn.PutMBPolicy(ctx, "nope", ref, true); !errors.Is(err, tenant.ErrPolicyNotFound) {
		t.Errorf("update of a missing mb policy: %v", err)
	}
	if err := tn.PutMBPolicy(ctx, "vm", []byte(minimalRefState), true); err != nil {
		t.Fatalf("update mb: %v", err)
	}
	if p, err := tn.MBPolicy(ctx, "vm"); err != nil || p.MBPolicy != minimalRefState {
		t.Errorf("show mb: %+v %v", p, err)
	}
	if err := tn.PutMBPolicy(ctx, "vm", ref, true); err != nil {
		t.Fatal(err)
	}
	if got := listMB(); !slices.Equal(got, []string{"vm"}) {
		t.Errorf("list mb: %v", got)
	}

	// A tpm_policy value for a measured-boot PCR conflicts with a measured-boot policy (Keylime's
	// enforce_pcrs); nothing reaches the verifier.
	pol0, err := a.PCRPolicy(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tn.Add(ctx, tenant.AddOptions{AgentID: a.UUID(), TPMPolicy: pol0, MBPolicyName: "vm"}); !errors.Is(err, policy.ErrBadTPMPolicy) {
		t.Errorf("tpm_policy PCR 0 with a measured-boot policy: %v", err)
	}
	if _, err := tn.CVStatus(ctx, a.UUID()); !errors.Is(err, tenant.ErrNotOnVerifier) {
		t.Errorf("a refused add reached the verifier: %v", err)
	}

	// An agent using both by name: PCR 10 and the measured-boot PCRs are quoted, and the policies are in use.
	res, err := tn.Add(ctx, tenant.AddOptions{AgentID: a.UUID(), RuntimePolicyName: "web", MBPolicyName: "vm"})
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	want := uint32(1 << policy.IMAPCR)
	for _, p := range policy.MeasuredBootPCRs {
		want |= 1 << p
	}
	if mask, err := policy.ParseMask(res.Mask); err != nil || mask != want {
		t.Errorf("mask %s, want %#x", res.Mask, want)
	}
	st, err := tn.CVStatus(ctx, a.UUID())
	if err != nil || st.HasRuntimePolicy != 1 || st.HasMBRefstate != 1 {
		t.Errorf("verifier status %+v (%v)", st, err)
	}
	if err := tn.DeleteRuntimePolicy(ctx, "web"); !errors.Is(err, tenant.ErrPolicyInUse) {
		t.Errorf("delete of a runtime policy in use: %v", err)
	}
	if err := tn.DeleteMBPolicy(ctx, "vm"); !errors.Is(err, tenant.ErrPolicyInUse) {
		t.Errorf("delete of an mb policy in use: %v", err)
	}
	if err := tn.Delete(ctx, a.UUID()); err != nil {
		t.Fatal(err)
	}
	// Once the agent is gone, so is the conflict.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := tn.DeleteRuntimePolicy(ctx, "web")
		if err == nil {
			break
		}
		if !errors.Is(err, tenant.ErrPolicyInUse) || time.Now().After(deadline) {
			t.Fatalf("delete after the agent left: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := tn.DeleteMBPolicy(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	if rt, mbs := listRT(), listMB(); len(rt) != 0 || len(mbs) != 0 {
		t.Errorf("left over: %v %v", rt, mbs)
	}
}

// ovmfRefState is the reference state generated from the captured OVMF boot log.
func ovmfRefState(t *testing.T) []byte {
	return testbed.RefStateJSON(t, "../testdata/vm-ovmf-ima-ng/binary_bios_measurements")
}

// FuzzPrepareRuntimePolicy: arbitrary policy, allowlist and exclude bytes never crash the local check,
// and whatever it accepts the verifier's reader accepts too.
func FuzzPrepareRuntimePolicy(f *testing.F) {
	fx := newPolicyFixtures(f)
	f.Add(fx.policy, []byte(nil), []byte(nil))
	f.Add(fx.envelope, []byte(nil), []byte(nil))
	f.Add([]byte(nil), []byte(strings.Repeat("cd", 32)+"  /usr/bin/env\n"), []byte("/tmp/.*\n"))
	f.Add([]byte(`{"hashes": {"/a": ["`+strings.Repeat("0", 40)+`"]}}`), []byte(nil), []byte("(x\n"))
	f.Add([]byte(`{"meta": {"version": 0}, "digests": {}}`), []byte(nil), []byte(nil))
	f.Fuzz(func(t *testing.T, pol, allow, excl []byte) {
		// The fuzzer never passes nil; an empty argument stands for a flag not given.
		orNil := func(b []byte) []byte {
			if len(b) == 0 {
				return nil
			}
			return b
		}
		in := tenant.RuntimePolicyInput{Policy: orNil(pol), Allowlist: orNil(allow), Excludes: orNil(excl)}
		if in.Empty() {
			return
		}
		sent, err := tenant.PrepareRuntimePolicy(in)
		if err != nil {
			if !errors.Is(err, tenant.ErrBadPolicy) && !errors.Is(err, tenant.ErrPolicySignature) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		p, err := ima.OpenRuntimePolicy(sent, nil, false)
		if err != nil {
			t.Fatalf("accepted %q but the verifier would refuse it: %v", sent, err)
		}
		if _, err := ima.Compile(p); err != nil {
			t.Fatalf("accepted a policy that does not compile: %v", err)
		}
	})
}
