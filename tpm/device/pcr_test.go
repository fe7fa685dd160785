package device_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/tpm/device"
)

var allPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}

func TestPCRReadExtendReset(t *testing.T) {
	_, tpm := open(t)
	vals, err := tpm.PCRRead(tpm2.TPMAlgSHA256, allPCRs)
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 24 {
		t.Fatalf("%d PCRs read, want 24", len(vals))
	}
	// After Startup(CLEAR): PCRs 0-16 and 23 are zeros, 17-22 all ones (locality-reset PCRs).
	for p, v := range vals {
		want := make([]byte, 32)
		if p >= 17 && p <= 22 {
			want = bytes.Repeat([]byte{0xff}, 32)
		}
		if !bytes.Equal(v, want) {
			t.Errorf("PCR %d = %x after startup", p, v)
		}
	}

	d := sha256.Sum256([]byte("event"))
	if err := tpm.PCRExtend(16, tpm2.TPMAlgSHA256, d[:]); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append(make([]byte, 32), d[:]...))
	got, err := tpm.PCRRead(tpm2.TPMAlgSHA256, []int{16})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[16], want[:]) {
		t.Errorf("PCR 16 = %x after extend, want %x", got[16], want)
	}
	d1 := sha1.Sum([]byte("event"))
	if err := tpm.PCRExtend(16, tpm2.TPMAlgSHA1, d1[:]); err != nil {
		t.Fatal(err)
	}
	if err := tpm.PCRReset(16); err != nil {
		t.Fatal(err)
	}
	for _, bank := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256} {
		got, err := tpm.PCRRead(bank, []int{16, 16})
		if err != nil {
			t.Fatal(err)
		}
		h, _ := bank.Hash()
		if len(got) != 1 || !bytes.Equal(got[16], make([]byte, h.Size())) {
			t.Errorf("bank 0x%x PCR 16 = %x after reset", bank, got[16])
		}
	}

	for _, tc := range []struct {
		name string
		err  error
		is   error
	}{
		{"reset a non-resettable PCR", tpm.PCRReset(0), nil},
		{"reset out of range", tpm.PCRReset(24), nil},
		{"extend with a short digest", tpm.PCRExtend(16, tpm2.TPMAlgSHA256, d1[:]), nil},
		{"extend out of range", tpm.PCRExtend(-1, tpm2.TPMAlgSHA256, d[:]), nil},
		{"read an inactive bank", second(tpm.PCRRead(tpm2.TPMAlgSHA384, []int{0})), device.ErrPCRUnavailable},
		{"read PCR 24", second(tpm.PCRRead(tpm2.TPMAlgSHA256, []int{24})), nil},
		{"read nothing", second(tpm.PCRRead(tpm2.TPMAlgSHA256, nil)), nil},
	} {
		if tc.err == nil {
			t.Errorf("%s: no error", tc.name)
		} else if tc.is != nil && !errors.Is(tc.err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.is)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// verifyQuote checks q the way a verifier does, with Go crypto only.
func verifyQuote(t *testing.T, ak *device.AK, nonce []byte, q *device.Quote) {
	t.Helper()
	attest, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
	if err != nil {
		t.Fatal(err)
	}
	if attest.Magic != tpm2.TPMGeneratedValue || attest.Type != tpm2.TPMSTAttestQuote {
		t.Fatalf("attest magic 0x%x type 0x%x", attest.Magic, attest.Type)
	}
	if !bytes.Equal(attest.ExtraData.Buffer, nonce) {
		t.Errorf("extraData %x, want nonce %x", attest.ExtraData.Buffer, nonce)
	}
	info, err := attest.Attested.Quote()
	if err != nil {
		t.Fatal(err)
	}
	want := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: q.Bank, PCRSelect: tpm2.PCClientCompatible.PCRs(sortedPCRs(q.PCRs)...)},
	}}
	if !bytes.Equal(tpm2.Marshal(info.PCRSelect), tpm2.Marshal(want)) {
		t.Errorf("quote selects %x, the returned PCRs are %v", tpm2.Marshal(info.PCRSelect), sortedPCRs(q.PCRs))
	}
	h := sha256.New()
	for _, p := range sortedPCRs(q.PCRs) {
		h.Write(q.PCRs[int(p)])
	}
	if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
		t.Error("pcrDigest does not match the returned PCR values")
	}
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](q.Signature)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(q.Attest)
	pub, err := ak.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		s, err := sig.Signature.RSASSA()
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], s.Sig.Buffer); err != nil {
			t.Errorf("RSA signature: %v", err)
		}
	case *ecdsa.PublicKey:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			t.Fatal(err)
		}
		r, ss := new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)
		if !ecdsa.Verify(k, digest[:], r, ss) {
			t.Error("ECDSA signature does not verify")
		}
	default:
		t.Fatalf("AK key %T", pub)
	}
}

func TestQuote(t *testing.T) {
	_, tpm := open(t)
	ek, err := tpm.EK(device.RSA)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("measured"))
	if err := tpm.PCRExtend(10, tpm2.TPMAlgSHA256, d[:]); err != nil {
		t.Fatal(err)
	}
	// swtpm has three object slots: keep one AK per type loaded at most.
	var ak *device.AK
	for _, akAlg := range []device.KeyAlg{device.RSA, device.ECC} {
		ak, _, err = tpm.LoadOrCreateAK(t.TempDir(), ek, akAlg)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			bank tpm2.TPMAlgID
			pcrs []int
		}{
			{"sha256 all", tpm2.TPMAlgSHA256, allPCRs},
			{"sha1 some", tpm2.TPMAlgSHA1, []int{10, 0, 16}},
		} {
			t.Run(akAlg.String()+" "+tc.name, func(t *testing.T) {
				nonce := []byte("1234567890abcdefghij")
				start := time.Now()
				q, err := tpm.Quote(ak, nonce, tc.bank, tc.pcrs)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("quote: %v", time.Since(start))
				if len(q.PCRs) != len(slices.Compact(slices.Sorted(slices.Values(tc.pcrs)))) || q.Bank != tc.bank {
					t.Errorf("quote has %d PCRs of bank 0x%x", len(q.PCRs), q.Bank)
				}
				verifyQuote(t, ak, nonce, q)
				if tc.bank == tpm2.TPMAlgSHA256 {
					want := sha256.Sum256(append(make([]byte, 32), d[:]...))
					if !bytes.Equal(q.PCRs[10], want[:]) {
						t.Errorf("quoted PCR 10 = %x, want %x", q.PCRs[10], want)
					}
				}
			})
		}
	}
	if _, err := tpm.Quote(ak, nil, tpm2.TPMAlgSHA384, []int{0}); err == nil {
		t.Error("quote of an inactive bank succeeded")
	}
	if _, err := tpm.Quote(ak, make([]byte, 200), tpm2.TPMAlgSHA256, []int{0}); err == nil {
		t.Error("quote with a 200-byte nonce succeeded")
	}
}

// sortedPCRs returns the PCR indexes of vals in ascending order, the order a quote digests them.
func sortedPCRs(vals map[int][]byte) []uint {
	var out []uint
	for p := range vals {
		out = append(out, uint(p))
	}
	slices.Sort(out)
	return out
}
