package softagent_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/tpm/device"
)

// The software TPM produces what a real TPM (swtpm) produces: the AK public area equals the swtpm AK's
// but for the key itself; the quote's TPMS_ATTEST, given the same PCR values, clock, firmware version
// and signer, is byte for byte the swtpm's; the qualifiedSigner is the qualified name computed as
// QualifiedName does; and the signatures have the same shape.
func TestFidelityWithSWTPM(t *testing.T) {
	s := testbed.StartSWTPM(t)
	dev, err := device.Open(s.Spec())
	if err != nil {
		t.Fatalf("device.Open: %v", err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	ek, err := dev.EK(device.RSA)
	if err != nil {
		t.Fatal(err)
	}
	hierarchy := binary.BigEndian.AppendUint32(nil, uint32(tpm2.TPMRHEndorsement))
	ekQN := softagent.QualifiedName(hierarchy, ek.Name)
	nonce := []byte("fidelitynonce0123456")
	pcrs := []int{0, 10, 16, 17, 23}

	for _, alg := range []device.KeyAlg{device.RSA, device.ECC} {
		t.Run(alg.String(), func(t *testing.T) {
			ak, _, err := dev.LoadOrCreateAK(t.TempDir(), ek, alg)
			if err != nil {
				t.Fatal(err)
			}
			var key crypto.Signer = rsaAKKey(t)
			if alg == device.ECC {
				key = eccKey(t)
			}
			soft := newTPM(t, key, crypto.SHA256)

			// Public areas: equal once the key material is blanked.
			blank := func(b []byte) []byte {
				t.Helper()
				pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b)
				if err != nil {
					t.Fatal(err)
				}
				p, err := pub.Contents()
				if err != nil {
					t.Fatal(err)
				}
				if alg == device.RSA {
					p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
				} else {
					p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
				}
				return tpm2.Marshal(*p)
			}
			if a, b := blank(ak.PublicBytes), blank(soft.AKPublic()); !bytes.Equal(a, b) {
				t.Errorf("AK public areas differ beyond the key:\nswtpm %x\nsoft  %x", a, b)
			}
			if len(ak.PublicBytes) != len(soft.AKPublic()) {
				t.Errorf("TPM2B_PUBLIC is %d bytes on swtpm, %d soft", len(ak.PublicBytes), len(soft.AKPublic()))
			}

			// The same PCR state on both.
			d := sha256.Sum256([]byte("nk pem"))
			if err := dev.PCRReset(16); err != nil {
				t.Fatal(err)
			}
			if err := dev.PCRExtend(16, tpm2.TPMAlgSHA256, d[:]); err != nil {
				t.Fatal(err)
			}
			if err := dev.PCRExtend(10, tpm2.TPMAlgSHA256, d[:]); err != nil {
				t.Fatal(err)
			}
			if err := soft.Reset(16); err != nil {
				t.Fatal(err)
			}
			if err := soft.Extend(16, tpm2.TPMAlgSHA256, d[:]); err != nil {
				t.Fatal(err)
			}
			vals, err := dev.PCRRead(tpm2.TPMAlgSHA256, pcrs)
			if err != nil {
				t.Fatal(err)
			}
			if err := soft.Set(10, tpm2.TPMAlgSHA256, vals[10]); err != nil {
				t.Fatal(err)
			}
			for _, p := range pcrs {
				if v, _ := soft.Read(p, tpm2.TPMAlgSHA256); !bytes.Equal(v, vals[p]) {
					t.Errorf("PCR %d: swtpm %x, soft %x", p, vals[p], v)
				}
			}

			q, err := dev.Quote(ak, nonce, tpm2.TPMAlgSHA256, pcrs)
			if err != nil {
				t.Fatal(err)
			}
			att, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
			if err != nil {
				t.Fatal(err)
			}
			if want := softagent.QualifiedName(ekQN, ak.Name); !bytes.Equal(att.QualifiedSigner.Buffer, want) {
				t.Errorf("qualifiedSigner %x, QualifiedName gives %x", att.QualifiedSigner.Buffer, want)
			}
			soft.SetFirmwareVersion(att.FirmwareVersion)
			clock := softagent.ClockInfo{
				Clock: att.ClockInfo.Clock, ResetCount: att.ClockInfo.ResetCount,
				RestartCount: att.ClockInfo.RestartCount, Safe: bool(att.ClockInfo.Safe),
			}
			soft.SetTamper(softagent.Tamper{
				Clock:      &clock,
				EditAttest: func(a *tpm2.TPMSAttest) { a.QualifiedSigner = att.QualifiedSigner },
			})
			attest, sig, values, err := soft.Quote(nonce, tpm2.TPMAlgSHA256, pcrs)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(attest, q.Attest) {
				t.Errorf("TPMS_ATTEST differs:\nswtpm %x\nsoft  %x", q.Attest, attest)
			}
			for p, v := range q.PCRs {
				if !bytes.Equal(values[p], v) {
					t.Errorf("reported PCR %d differs", p)
				}
			}
			hw, err := tpm2.Unmarshal[tpm2.TPMTSignature](q.Signature)
			if err != nil {
				t.Fatal(err)
			}
			sw, err := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
			if err != nil {
				t.Fatal(err)
			}
			if hw.SigAlg != sw.SigAlg || len(q.Signature) > len(sig) {
				t.Errorf("signatures: swtpm %#x (%d bytes), soft %#x (%d bytes)", hw.SigAlg, len(q.Signature), sw.SigAlg, len(sig))
			}

			// Without the fault the soft TPM names itself under its parent.
			soft.SetTamper(softagent.Tamper{})
			soft.SetParentQualifiedName(ekQN)
			attest, _, _, err = soft.Quote(nonce, tpm2.TPMAlgSHA256, pcrs)
			if err != nil {
				t.Fatal(err)
			}
			sa, err := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
			if err != nil {
				t.Fatal(err)
			}
			if want := softagent.QualifiedName(ekQN, soft.AKName()); !bytes.Equal(sa.QualifiedSigner.Buffer, want) {
				t.Errorf("soft qualifiedSigner %x, want %x", sa.QualifiedSigner.Buffer, want)
			}
		})
	}
}
