package device_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/tpm/device"
)

// challenge builds a MakeCredential challenge for ek and name in software, as the registrar does.
func challenge(t testing.TB, ek *device.EK, name, secret []byte) (idObject, encSecret []byte) {
	t.Helper()
	key, err := tpm2.ImportEncapsulationKey(&ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	idObject, encSecret, err = tpm2.CreateCredential(rand.Reader, key, name, secret)
	if err != nil {
		t.Fatal(err)
	}
	return idObject, encSecret
}

// activate checks a credential round trip through the TPM.
func activate(t *testing.T, tpm *device.TPM, ek *device.EK, ak *device.AK) {
	t.Helper()
	secret := make([]byte, 32)
	rand.Read(secret)
	idObject, encSecret := challenge(t, ek, ak.Name, secret)
	got, err := tpm.ActivateCredential(ek, ak, idObject, encSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("ActivateCredential returned %x, want %x", got, secret)
	}
}

func TestAKCreateReloadActivate(t *testing.T) {
	for _, tc := range []struct {
		name         string
		ekAlg, akAlg device.KeyAlg
		akType       tpm2.TPMAlgID
	}{
		{"RSA EK, RSA AK", device.RSA, device.RSA, tpm2.TPMAlgRSA},
		{"RSA EK, ECC AK", device.RSA, device.ECC, tpm2.TPMAlgECC},
		{"ECC EK, ECC AK", device.ECC, device.ECC, tpm2.TPMAlgECC},
		{"ECC EK, RSA AK", device.ECC, device.RSA, tpm2.TPMAlgRSA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sw, tpm := open(t)
			dir := t.TempDir()
			ek, err := tpm.EK(tc.ekAlg)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			ak, created, err := tpm.LoadOrCreateAK(dir, ek, tc.akAlg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("AK create: %v", time.Since(start))
			if !created {
				t.Error("created = false for a new AK")
			}
			if ak.Public.Type != tc.akType || ak.Alg != tc.akAlg {
				t.Errorf("AK type 0x%x alg %v", ak.Public.Type, ak.Alg)
			}
			// Keylime's registrar demands exactly these attributes.
			if attrs := binary.BigEndian.Uint32(tpm2.Marshal(ak.Public.ObjectAttributes)); attrs != 0x00050072 {
				t.Errorf("AK attributes 0x%08x, want 0x00050072", attrs)
			}
			if ak.Name[0] != 0 || ak.Name[1] != byte(tpm2.TPMAlgSHA256) || len(ak.Name) != 34 {
				t.Errorf("AK Name %x is not SHA-256 nameAlg || digest", ak.Name)
			}
			checkPublicBytes(t, ak.PublicBytes, &ak.Public, ak.Name)
			fi, err := os.Stat(filepath.Join(dir, device.AKFile))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, want 0600", device.AKFile, fi.Mode().Perm())
			}
			start = time.Now()
			activate(t, tpm, ek, ak)
			t.Logf("activate: %v", time.Since(start))

			same, created, err := tpm.LoadOrCreateAK(dir, ek, tc.akAlg)
			if err != nil || created || same != ak {
				t.Errorf("second call on the same TPM: %p created=%v %v, want the loaded %p", same, created, err, ak)
			}

			// A new process: reopen the TPM, find the EK, reload the AK from dir.
			if err := tpm.Close(); err != nil {
				t.Fatal(err)
			}
			tpm2nd := openSpec(t, sw.Spec())
			ek2, err := tpm2nd.EK(tc.ekAlg)
			if err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			ak2, created, err := tpm2nd.LoadOrCreateAK(dir, ek2, tc.akAlg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("AK load: %v", time.Since(start))
			if created {
				t.Error("created = true when reloading")
			}
			if !bytes.Equal(ak2.Name, ak.Name) || !bytes.Equal(ak2.PublicBytes, ak.PublicBytes) {
				t.Errorf("reloaded AK Name %x, want %x", ak2.Name, ak.Name)
			}
			activate(t, tpm2nd, ek2, ak2)
		})
	}
}

func TestActivateCredentialRejectsOtherName(t *testing.T) {
	_, tpm := open(t)
	ek, err := tpm.EK(device.RSA)
	if err != nil {
		t.Fatal(err)
	}
	ak, _, err := tpm.LoadOrCreateAK(t.TempDir(), ek, device.ECC)
	if err != nil {
		t.Fatal(err)
	}
	other := append([]byte(nil), ak.Name...)
	other[len(other)-1] ^= 1
	idObject, encSecret := challenge(t, ek, other, []byte("secret"))
	if _, err := tpm.ActivateCredential(ek, ak, idObject, encSecret); err == nil {
		t.Fatal("ActivateCredential released a secret bound to another AK Name")
	}
	// The failure leaves the TPM usable.
	activate(t, tpm, ek, ak)
}

func TestAKUnusable(t *testing.T) {
	_, tpm := open(t)
	ek, err := tpm.EK(device.RSA)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, _, err := tpm.LoadOrCreateAK(dir, ek, device.RSA); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(dir, device.AKFile))
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(good, &rec); err != nil {
		t.Fatal(err)
	}
	// Another TPM: its EK differs, and its seeds cannot load this AK's private blob.
	otherSW := testbed.StartSWTPM(t)
	other := openSpec(t, otherSW.Spec())
	otherEK, err := other.EK(device.RSA)
	if err != nil {
		t.Fatal(err)
	}

	edit := func(field string, value any) []byte {
		r := map[string]any{}
		for k, v := range rec {
			r[k] = v
		}
		r[field] = value
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		file []byte
		tpm  *device.TPM
		ek   *device.EK
		alg  device.KeyAlg
	}{
		{"other algorithm", good, tpm, ek, device.ECC},
		{"not JSON", []byte("{"), tpm, ek, device.RSA},
		{"bad version", edit("version", 2), tpm, ek, device.RSA},
		{"truncated private", edit("private", rec["private"].(string)[:12]), tpm, ek, device.RSA},
		{"public of a non-AK", edit("public", ek.PublicBytes), tpm, ek, device.RSA},
		{"other EK", good, other, otherEK, device.RSA},
		{"other TPM refuses the blob", edit("ek_name", hex.EncodeToString(otherEK.Name)), other, otherEK, device.RSA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			path := filepath.Join(d, device.AKFile)
			if err := os.WriteFile(path, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := tc.tpm.LoadOrCreateAK(d, tc.ek, tc.alg)
			if !errors.Is(err, device.ErrAKUnusable) {
				t.Fatalf("LoadOrCreateAK: %v, want device.ErrAKUnusable", err)
			}
			t.Log(err)
			after, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(after, tc.file) {
				t.Error("the unusable AK file was changed")
			}
		})
	}
}
