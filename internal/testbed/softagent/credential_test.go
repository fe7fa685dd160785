package softagent_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/tpm"
)

// newEK returns a software EK of the given type.
func newEK(t testing.TB, alg softagent.KeyAlg) *softagent.EK {
	t.Helper()
	var (
		ek  *softagent.EK
		err error
	)
	if alg == softagent.RSA {
		ek, err = softagent.NewEKWithKey(rsaAKKey(t)) // any cached RSA-2048 key will do
	} else {
		ek, err = softagent.NewEK(alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ek
}

// makeCredential is what the registrar does at registration: a challenge protected for ek and the AK.
func makeCredential(t testing.TB, ek *softagent.EK, akName []byte) (secret, blob []byte) {
	t.Helper()
	pub, err := tpm.ParsePublic(ek.Public())
	if err != nil {
		t.Fatalf("ParsePublic(EK): %v", err)
	}
	if secret, err = tpm.NewChallenge(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if blob, err = tpm.MakeCredential(rand.Reader, pub, akName, secret); err != nil {
		t.Fatalf("MakeCredential: %v", err)
	}
	return secret, blob
}

// The registrar's MakeCredential and the software TPM's ActivateCredential agree for both EK types; a
// credential bound to another Name, made for another EK, or altered does not activate.
func TestActivateCredential(t *testing.T) {
	st := newTPM(t, eccKey(t), crypto.SHA256)
	for _, tc := range []struct {
		name string
		alg  softagent.KeyAlg
	}{
		{"RSA-2048 EK", softagent.RSA},
		{"P-256 EK", softagent.ECC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ek := newEK(t, tc.alg)
			pub, err := tpm.ParsePublic(ek.Public())
			if err != nil {
				t.Fatal(err)
			}
			if err := tpm.CheckEK(pub); err != nil {
				t.Fatalf("CheckEK refuses the software EK: %v", err)
			}
			if !bytes.Equal(pub.Name, ek.Name()) {
				t.Errorf("Name() = %x, registrar computes %x", ek.Name(), pub.Name)
			}
			secret, blob := makeCredential(t, ek, st.AKName())
			got, err := st.ActivateCredential(ek, blob)
			if err != nil {
				t.Fatalf("ActivateCredential: %v", err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("activated %q, want %q", got, secret)
			}
			auth := tpm.AuthTag(got, "agent-1")
			if !tpm.CheckAuthTag(secret, "agent-1", auth) {
				t.Error("auth tag from the activated secret does not check")
			}

			other := st.AKName()
			other[len(other)-1] ^= 1
			flipped := bytes.Clone(blob)
			flipped[len(flipped)-1] ^= 1
			for name, try := range map[string]func() ([]byte, error){
				"another object's Name": func() ([]byte, error) { return ek.ActivateCredential(other, blob) },
				"another EK": func() ([]byte, error) {
					other, err := softagent.NewEK(tc.alg)
					if err != nil {
						t.Fatal(err)
					}
					return st.ActivateCredential(other, blob)
				},
				"altered secret": func() ([]byte, error) { return st.ActivateCredential(ek, flipped) },
				"truncated blob": func() ([]byte, error) { return st.ActivateCredential(ek, blob[:len(blob)-3]) },
			} {
				if got, err := try(); !errors.Is(err, softagent.ErrActivation) {
					t.Errorf("%s: ActivateCredential = %q, %v; want ErrActivation", name, got, err)
				}
			}
		})
	}
}

// The AK can be placed under its EK: quotes then name the EK's hierarchy in qualifiedSigner.
func TestEKQualifiedName(t *testing.T) {
	ek := newEK(t, softagent.ECC)
	qn := ek.QualifiedName()
	if len(qn) != 34 || !bytes.Equal(qn[:2], []byte{0, 0x0b}) {
		t.Fatalf("qualified name %x", qn)
	}
	if _, err := softagent.NewEKWithKey(eccKey(t)); err != nil {
		t.Errorf("ECDSA P-256 key as EK: %v", err)
	}
	if _, err := softagent.NewEKWithKey("not a key"); !errors.Is(err, softagent.ErrBadKey) {
		t.Errorf("NewEKWithKey(string) = %v, want ErrBadKey", err)
	}
}

// FuzzActivateCredential: whatever a registrar sends, activation never panics and only a blob that
// passes the integrity check yields a secret.
func FuzzActivateCredential(f *testing.F) {
	st := newTPM(f, eccKey(f), crypto.SHA256)
	eks := []*softagent.EK{newEK(f, softagent.ECC), newEK(f, softagent.RSA)}
	for _, ek := range eks {
		_, blob := makeCredential(f, ek, st.AKName())
		f.Add(blob, ek == eks[1])
	}
	f.Add([]byte{0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1, 0, 2, 0, 0, 0, 1, 0}, false)
	f.Fuzz(func(t *testing.T, blob []byte, useRSA bool) {
		ek := eks[0]
		if useRSA {
			ek = eks[1]
		}
		secret, err := st.ActivateCredential(ek, blob)
		if err == nil && (len(secret) == 0 || len(secret) > 32) {
			t.Fatalf("activated a secret of %d bytes", len(secret))
		}
		if err != nil && !errors.Is(err, softagent.ErrActivation) {
			t.Fatalf("error %v is not ErrActivation", err)
		}
	})
}
