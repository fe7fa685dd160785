//go:build linux

package tpm

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// startSwtpm runs a fresh swtpm (manufactured on first start, no EK certificate) on
// a unix socket and returns a go-tpm transport to it. It skips when swtpm is not
// installed, unless CI=true.
func startSwtpm(t *testing.T) transport.TPM {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("swtpm is required in CI: %v", err)
		}
		t.Skipf("swtpm not installed: %v", err)
	}
	// A short directory: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "tpmtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "swtpm.sock")
	cmd := exec.Command(bin, "socket", "--tpm2",
		"--server", "type=unixio,path="+sock, "--ctrl", "type=unixio,path="+sock+".ctrl",
		"--tpmstate", "dir="+dir, "--flags", "not-need-init,startup-clear")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if tpm, err := linuxudstpm.Open(sock); err == nil {
			if _, err := (tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTManufacturer), PropertyCount: 1}).Execute(tpm); err == nil {
				return tpm
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm did not answer within 10s: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func flush(t *testing.T, tpm transport.TPM, h tpm2.TPMHandle) {
	t.Helper()
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tpm); err != nil {
		t.Errorf("flush 0x%x: %v", h, err)
	}
}

// A credential made in software by MakeCredential is recovered by a real TPM's
// ActivateCredential, for the TCG RSA-2048 and P-256 EKs and a P-384 EK with the
// high-range algorithms (SHA-384 names, AES-256). Public areas and Names computed
// here equal the TPM's.
func TestActivateCredentialOnSwtpm(t *testing.T) {
	tpm := startSwtpm(t)

	// P-384 with the high-range algorithms but password authorization, so that no
	// PolicyOR session is needed here (tpm/device covers the real templates).
	p384 := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA384,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
			Restricted: true, Decrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: aesCFB(256), Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID: tpm2.TPMECCNistP384, KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: make([]byte, 48)}, Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 48)},
		}),
	}
	eccAKTemplate := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akObjectAttributes,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, Scheme: ecdsaScheme(tpm2.TPMAlgSHA256),
			CurveID: tpm2.TPMECCNistP256, KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
	rsaAKTemplate := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akObjectAttributes,
		Parameters: rsaParms(tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, rsassa(tpm2.TPMAlgSHA256), 2048),
		Unique:     tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
	}

	tests := []struct {
		name       string
		ek, ak     tpm2.TPMTPublic
		policyAuth bool // EK needs PolicySecret(endorsement), as the TCG templates
	}{
		{"RSA-2048 TCG EK, RSA AK", tpm2.RSAEKTemplate, rsaAKTemplate, true},
		{"P-256 TCG EK, ECC AK", tpm2.ECCEKTemplate, eccAKTemplate, true},
		{"P-384 high-range EK, ECC AK", p384, eccAKTemplate, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tt.ek)}.Execute(tpm)
			if err != nil {
				t.Fatalf("CreatePrimary: %v", err)
			}
			defer flush(t, tpm, cp.ObjectHandle)
			ekAuth := func() tpm2.AuthHandle {
				auth := tpm2.PasswordAuth(nil)
				if tt.policyAuth {
					auth = tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, n tpm2.TPM2BNonce) error {
						_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: h, NonceTPM: n}.Execute(tp)
						return err
					})
				}
				return tpm2.AuthHandle{Handle: cp.ObjectHandle, Name: cp.Name, Auth: auth}
			}

			ek, err := ParsePublic(tpm2.Marshal(cp.OutPublic))
			if err != nil {
				t.Fatalf("ParsePublic(EK): %v", err)
			}
			if err := CheckEK(ek); err != nil {
				t.Errorf("CheckEK: %v", err)
			}
			if !bytes.Equal(ek.Name, cp.Name.Buffer) {
				t.Errorf("EK Name %x, TPM says %x", ek.Name, cp.Name.Buffer)
			}

			cr, err := tpm2.Create{ParentHandle: ekAuth(), InPublic: tpm2.New2B(tt.ak)}.Execute(tpm)
			if err != nil {
				t.Fatalf("Create AK: %v", err)
			}
			ld, err := tpm2.Load{ParentHandle: ekAuth(), InPrivate: cr.OutPrivate, InPublic: cr.OutPublic}.Execute(tpm)
			if err != nil {
				t.Fatalf("Load AK: %v", err)
			}
			defer flush(t, tpm, ld.ObjectHandle)
			ak, err := ParsePublicBase64(base64.StdEncoding.EncodeToString(tpm2.Marshal(cr.OutPublic)))
			if err != nil {
				t.Fatalf("ParsePublic(AK): %v", err)
			}
			if err := CheckAK(ak); err != nil {
				t.Errorf("CheckAK: %v", err)
			}
			if !bytes.Equal(ak.Name, ld.Name.Buffer) {
				t.Errorf("AK Name %x, TPM says %x", ak.Name, ld.Name.Buffer)
			}

			secret, err := NewChallenge(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			blob, err := MakeCredential(rand.Reader, ek, ak.Name, secret)
			if err != nil {
				t.Fatalf("MakeCredential: %v", err)
			}
			idObject, encSecret, err := ParseCredentialBlob(blob)
			if err != nil {
				t.Fatalf("ParseCredentialBlob: %v", err)
			}
			ac, err := tpm2.ActivateCredential{
				ActivateHandle: tpm2.NamedHandle{Handle: ld.ObjectHandle, Name: ld.Name},
				KeyHandle:      ekAuth(),
				CredentialBlob: tpm2.TPM2BIDObject{Buffer: idObject},
				Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encSecret},
			}.Execute(tpm)
			if err != nil {
				t.Fatalf("ActivateCredential: %v", err)
			}
			if !bytes.Equal(ac.CertInfo.Buffer, secret) {
				t.Fatalf("TPM recovered %q, want %q", ac.CertInfo.Buffer, secret)
			}
			if !CheckAuthTag(secret, "agent-1", AuthTag(ac.CertInfo.Buffer, "agent-1")) {
				t.Error("auth_tag from the recovered secret does not check")
			}
		})
	}
}
