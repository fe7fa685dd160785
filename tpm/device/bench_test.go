package device_test

import (
	"crypto/rand"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/tpm/device"
)

// reopen opens the swtpm with the timer stopped; the caller closes it the same way.
func reopen(b *testing.B, sw *testbed.SWTPM) *device.TPM {
	b.StopTimer()
	defer b.StartTimer()
	tpm, err := device.Open(sw.Spec())
	if err != nil {
		b.Fatal(err)
	}
	return tpm
}

func closeTPM(b *testing.B, tpm *device.TPM) {
	b.StopTimer()
	defer b.StartTimer()
	if err := tpm.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEK measures finding the EK and reading its certificate from NV on a fresh TPM handle:
// the persistent keys swtpm_setup provisions, and an RSA EK created from its template when the
// persistent one is gone.
func BenchmarkEK(b *testing.B) {
	sw := testbed.StartSWTPM(b)
	for _, bc := range []struct {
		name string
		alg  device.KeyAlg
	}{{"RSA persistent", device.RSA}, {"ECC P-384 persistent", device.ECC}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				tpm := reopen(b, sw)
				if _, err := tpm.EK(bc.alg); err != nil {
					b.Fatal(err)
				}
				closeTPM(b, tpm)
			}
		})
	}
	b.Run("RSA created", func(b *testing.B) {
		tpm := reopen(b, sw)
		if _, err := (tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(0x81010001)}).Execute(tpm.Transport()); err == nil {
			evict(b, tpm.Transport(), 0x81010001)
		}
		closeTPM(b, tpm)
		for b.Loop() {
			tpm := reopen(b, sw)
			if _, err := tpm.EK(device.RSA); err != nil {
				b.Fatal(err)
			}
			closeTPM(b, tpm)
		}
	})
}

// BenchmarkAK measures creating a new AK under the EK (policy session, TPM2_Create, TPM2_Load,
// saving ak.json) and loading a stored one.
func BenchmarkAK(b *testing.B) {
	sw := testbed.StartSWTPM(b)
	for _, alg := range []device.KeyAlg{device.RSA, device.ECC} {
		b.Run("create "+alg.String(), func(b *testing.B) {
			for b.Loop() {
				tpm := reopen(b, sw)
				ek, err := tpm.EK(device.RSA)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := tpm.LoadOrCreateAK(b.TempDir(), ek, alg); err != nil {
					b.Fatal(err)
				}
				closeTPM(b, tpm)
			}
		})
		b.Run("load "+alg.String(), func(b *testing.B) {
			dir := b.TempDir()
			for b.Loop() {
				tpm := reopen(b, sw)
				ek, err := tpm.EK(device.RSA)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := tpm.LoadOrCreateAK(dir, ek, alg); err != nil {
					b.Fatal(err)
				}
				closeTPM(b, tpm)
			}
		})
	}
}

// BenchmarkActivateCredential measures TPM2_ActivateCredential with the RSA-2048 and the P-384 EK.
func BenchmarkActivateCredential(b *testing.B) {
	sw := testbed.StartSWTPM(b)
	for _, alg := range []device.KeyAlg{device.RSA, device.ECC} {
		b.Run("EK "+alg.String(), func(b *testing.B) {
			tpm := reopen(b, sw)
			defer closeTPM(b, tpm)
			ek, err := tpm.EK(alg)
			if err != nil {
				b.Fatal(err)
			}
			ak, _, err := tpm.LoadOrCreateAK(b.TempDir(), ek, device.ECC)
			if err != nil {
				b.Fatal(err)
			}
			secret := make([]byte, 32)
			rand.Read(secret)
			for b.Loop() {
				b.StopTimer()
				idObject, encSecret := challenge(b, ek, ak.Name, secret)
				b.StartTimer()
				if _, err := tpm.ActivateCredential(ek, ak, idObject, encSecret); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQuote measures a quote of PCRs 0-23 (sha256) plus the PCR read that follows it.
func BenchmarkQuote(b *testing.B) {
	sw := testbed.StartSWTPM(b)
	tpm := reopen(b, sw)
	defer closeTPM(b, tpm)
	ek, err := tpm.EK(device.RSA)
	if err != nil {
		b.Fatal(err)
	}
	for _, alg := range []device.KeyAlg{device.RSA, device.ECC} {
		ak, _, err := tpm.LoadOrCreateAK(b.TempDir(), ek, alg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("AK "+alg.String(), func(b *testing.B) {
			for b.Loop() {
				if _, err := tpm.Quote(ak, []byte("nonce"), tpm2.TPMAlgSHA256, allPCRs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
