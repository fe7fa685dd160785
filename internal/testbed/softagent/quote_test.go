package softagent

import (
	"bytes"
	"crypto/sha256"
	"math/big"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// The hand encoders equal go-tpm's tpm2.Marshal.
func TestMarshalMatchesGoTPM(t *testing.T) {
	d := sha256.Sum256([]byte("digest"))
	qn := append([]byte{0, 0x0b}, d[:]...)
	tests := []struct {
		name string
		q    quoteFields
	}{
		{"identity quote", quoteFields{qname: qn, nonce: []byte("abc"), clock: ClockInfo{Clock: 12345, ResetCount: 1, RestartCount: 2, Safe: true},
			firmware: DefaultFirmwareVersion, bank: tpm2.TPMAlgSHA256, mask: 1 << 16, digest: d[:]}},
		{"empty nonce, not safe", quoteFields{qname: qn, clock: ClockInfo{Clock: 1<<63 + 5}, bank: tpm2.TPMAlgSHA1, mask: 0xffffff, digest: d[:20]}},
		{"64-byte nonce", quoteFields{qname: qn[:4], nonce: bytes.Repeat([]byte{'n'}, 64), clock: ClockInfo{ResetCount: 0xffffffff, Safe: true},
			bank: tpm2.TPMAlgSHA256, mask: 0x408400, digest: d[:]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := tt.q.marshal(), tpm2.Marshal(tt.q.attest()); !bytes.Equal(got, want) {
				t.Errorf("marshal\n got %x\nwant %x", got, want)
			}
		})
	}
	sig := bytes.Repeat([]byte{7}, 256)
	if got, want := marshalSignature(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA256, sig), tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgRSASSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA, &tpm2.TPMSSignatureRSA{
			Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: sig},
		}),
	}); !bytes.Equal(got, want) {
		t.Errorf("RSASSA signature\n got %x\nwant %x", got, want)
	}
	r, s := big.NewInt(5).FillBytes(make([]byte, 32)), bytes.Repeat([]byte{9}, 32)
	if got, want := marshalSignature(tpm2.TPMAlgECDSA, tpm2.TPMAlgSHA1, r, s), tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash: tpm2.TPMAlgSHA1, SignatureR: tpm2.TPM2BECCParameter{Buffer: r}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s},
		}),
	}); !bytes.Equal(got, want) {
		t.Errorf("ECDSA signature\n got %x\nwant %x", got, want)
	}
}
