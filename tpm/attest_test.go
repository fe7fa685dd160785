package tpm

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// realQuotes returns the attest and signature bytes of the real swtpm quotes in verifier/testdata.
func realQuotes(t testing.TB) []*Quote {
	t.Helper()
	var out []*Quote
	for _, name := range []string{"quote-rsa.json", "quote-ecc.json"} {
		b, err := os.ReadFile(filepath.Join("..", "verifier", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Response struct {
				Quote string `json:"quote"`
			} `json:"response"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		q, err := ParseQuote(f.Response.Quote)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, q)
	}
	return out
}

// TestHandParsersAgreeWithGoTPM decodes real quotes with our parsers and with go-tpm's.
func TestHandParsersAgreeWithGoTPM(t *testing.T) {
	for _, q := range realQuotes(t) {
		ours, err := parseAttestQuote(q.Attest)
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
		if err != nil {
			t.Fatal(err)
		}
		info, err := theirs.Attested.Quote()
		if err != nil {
			t.Fatal(err)
		}
		if ours.magic != uint32(theirs.Magic) || ours.typ != uint16(theirs.Type) || !bytes.Equal(ours.extraData, theirs.ExtraData.Buffer) ||
			ours.clock != theirs.ClockInfo.Clock || ours.resetCount != theirs.ClockInfo.ResetCount ||
			ours.restartCount != theirs.ClockInfo.RestartCount || ours.safe != bool(theirs.ClockInfo.Safe) ||
			ours.firmwareVersion != theirs.FirmwareVersion || !bytes.Equal(ours.pcrDigest, info.PCRDigest.Buffer) ||
			len(ours.selections) != len(info.PCRSelect.PCRSelections) ||
			ours.selections[0].hash != info.PCRSelect.PCRSelections[0].Hash ||
			!bytes.Equal(ours.selections[0].sel, info.PCRSelect.PCRSelections[0].PCRSelect) {
			t.Errorf("attest differs: ours %+v, go-tpm %+v", ours, theirs)
		}
		sig, err := parseSignature(q.Signature)
		if err != nil {
			t.Fatal(err)
		}
		gs, err := tpm2.Unmarshal[tpm2.TPMTSignature](q.Signature)
		if err != nil {
			t.Fatal(err)
		}
		if sig.alg != gs.SigAlg {
			t.Errorf("sig alg %v vs %v", sig.alg, gs.SigAlg)
		}
		switch sig.alg {
		case tpm2.TPMAlgRSASSA:
			r, _ := gs.Signature.RSASSA()
			if sig.hash != r.Hash || !bytes.Equal(sig.rsa, r.Sig.Buffer) {
				t.Error("RSASSA signature differs")
			}
		case tpm2.TPMAlgECDSA:
			e, _ := gs.Signature.ECDSA()
			if sig.hash != e.Hash || !bytes.Equal(sig.r, e.SignatureR.Buffer) || !bytes.Equal(sig.s, e.SignatureS.Buffer) {
				t.Error("ECDSA signature differs")
			}
		}
		// Every truncation and any trailing byte is refused.
		for n := 0; n < len(q.Attest); n++ {
			if _, err := parseAttestQuote(q.Attest[:n]); err == nil && n >= 6 {
				t.Fatalf("attest truncated to %d bytes accepted", n)
			}
		}
		if _, err := parseAttestQuote(append(append([]byte{}, q.Attest...), 0)); err == nil {
			t.Error("attest with a trailing byte accepted")
		}
		for n := 0; n < len(q.Signature); n++ {
			if _, err := parseSignature(q.Signature[:n]); err == nil {
				t.Fatalf("signature truncated to %d bytes accepted", n)
			}
		}
		if _, err := parseSignature(append(append([]byte{}, q.Signature...), 0)); err == nil {
			t.Error("signature with a trailing byte accepted")
		}
	}
}

// FuzzAttestParsers: our decoders never panic, and whatever they accept go-tpm decodes to the same
// fields.
func FuzzAttestParsers(f *testing.F) {
	for _, q := range realQuotes(f) {
		f.Add(q.Attest, q.Signature)
	}
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		if a, err := parseAttestQuote(attest); err == nil && a.typ == uint16(tpm2.TPMSTAttestQuote) {
			theirs, gerr := unmarshalGoTPM[tpm2.TPMSAttest](attest)
			if gerr == nil && (theirs.ClockInfo.Clock != a.clock || !bytes.Equal(theirs.ExtraData.Buffer, a.extraData)) {
				t.Fatalf("decoders disagree on %x", attest)
			}
		}
		if s, err := parseSignature(sig); err == nil && s.alg == tpm2.TPMAlgRSASSA {
			gs, gerr := unmarshalGoTPM[tpm2.TPMTSignature](sig)
			if gerr == nil {
				if r, err := gs.Signature.RSASSA(); err == nil && !bytes.Equal(r.Sig.Buffer, s.rsa) {
					t.Fatalf("decoders disagree on %x", sig)
				}
			}
		}
	})
}

func unmarshalGoTPM[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte) (v *T, err error) {
	defer func() {
		if recover() != nil {
			v, err = nil, errShort
		}
	}()
	return tpm2.Unmarshal[T, P](b)
}
