package tpm_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/tpm"
	"github.com/keylime-go/keylime/tpm/device"
)

// goldenNonce is the qualifying data of the tpm2-tools fixtures (testdata/quote/gen.sh).
const goldenNonce = "keylimegoldennonce01"

// goldenQuote loads testdata/quote/<name>.{attest,sig,pcrs} as a Quote.
func goldenQuote(t testing.TB, name string) *tpm.Quote {
	t.Helper()
	return &tpm.Quote{
		Attest:    quoteFixture(t, name+".attest"),
		Signature: quoteFixture(t, name+".sig"),
		PCRBlob:   quoteFixture(t, name+".pcrs"),
	}
}

func goldenAK(t testing.TB, name string) *tpm.Public {
	t.Helper()
	ak, err := tpm.ParsePublic(quoteFixture(t, name))
	if err != nil {
		t.Fatalf("ParsePublic(%s): %v", name, err)
	}
	if err := tpm.CheckAK(ak); err != nil {
		t.Fatalf("CheckAK(%s): %v", name, err)
	}
	return ak
}

func TestParseQuote(t *testing.T) {
	enc := base64.StdEncoding.EncodeToString
	a, s, p := enc([]byte("attest")), enc([]byte("sig")), enc([]byte("pcrs"))
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"good", "r" + a + ":" + s + ":" + p, true},
		{"golden", goldenQuote(t, "rsa-sha256-all").String(), true},
		{"missing r", a + ":" + s + ":" + p, false},
		{"upper-case R", "R" + a + ":" + s + ":" + p, false},
		{"empty", "", false},
		{"only r", "r", false},
		{"two parts", "r" + a + ":" + s, false},
		{"four parts", "r" + a + ":" + s + ":" + p + ":" + p, false},
		{"trailing colon", "r" + a + ":" + s + ":" + p + ":", false},
		{"bad base64 in attest", "r" + "!!!!" + ":" + s + ":" + p, false},
		{"bad base64 in signature", "r" + a + ":" + "a b=" + ":" + p, false},
		{"bad base64 in blob", "r" + a + ":" + s + ":" + "cGNycw", false}, // padding missing
		{"URL-safe alphabet", "r" + a + ":" + s + ":" + "-_-_", false},
		{"empty attest", "r:" + s + ":" + p, false},
		{"empty signature", "r" + a + "::" + p, false},
		{"empty blob", "r" + a + ":" + s + ":", false},
		{"oversize", "r" + a + ":" + s + ":" + strings.Repeat("A", 64<<10), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := tpm.ParseQuote(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParseQuote accepted %.60q", tt.in)
				}
				if !errors.Is(err, tpm.ErrBadQuote) {
					t.Errorf("error %v does not wrap ErrBadQuote", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseQuote: %v", err)
			}
			if got := q.String(); got != tt.in {
				t.Errorf("String() = %.60q, want the input back", got)
			}
		})
	}
	q, err := tpm.ParseQuote("r" + a + ":" + s + ":" + p)
	if err != nil {
		t.Fatal(err)
	}
	if string(q.Attest) != "attest" || string(q.Signature) != "sig" || string(q.PCRBlob) != "pcrs" {
		t.Errorf("parts = %q %q %q", q.Attest, q.Signature, q.PCRBlob)
	}
}

// The quotes tpm2_quote made (testdata/quote/gen.sh) verify, and carry the values tpm2_pcrread reported.
func TestVerifyQuoteGolden(t *testing.T) {
	read := pcrRead(t)
	tests := []struct {
		name, ak string
		want     map[int][]byte
	}{
		{"rsa-sha256-all", "ak-rsa.pub", read[tpm2.TPMAlgSHA256]},
		{"ecc-sha256-16", "ak-ecc.pub", subset(read[tpm2.TPMAlgSHA256], 16)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := goldenQuote(t, tt.name)
			data, err := tpm.VerifyQuote(q, goldenAK(t, tt.ak), []byte(goldenNonce), "sha256")
			if err != nil {
				t.Fatalf("VerifyQuote: %v", err)
			}
			if !reflect.DeepEqual(data.PCRs, tt.want) {
				t.Errorf("PCRs %s, want %s", fmtBanks([]tpm.PCRBank{{Alg: tpm2.TPMAlgSHA256, Values: data.PCRs}}),
					fmtBanks([]tpm.PCRBank{{Alg: tpm2.TPMAlgSHA256, Values: tt.want}}))
			}
			if data.HashAlg != "sha256" || !data.Safe || data.Clock == 0 {
				t.Errorf("QuoteData = %+v", data)
			}
			if _, err := tpm.VerifyQuote(q, goldenAK(t, tt.ak), []byte(goldenNonce[1:]), "sha256"); !errors.Is(err, tpm.ErrBadQuote) {
				t.Errorf("VerifyQuote with another nonce: %v, want ErrBadQuote", err)
			}
		})
	}
	t.Run("two banks", func(t *testing.T) {
		// Genuine, but Keylime quotes exactly one bank: VerifyQuote refuses for either bank.
		q := goldenQuote(t, "rsa-multibank")
		for _, bank := range []string{"sha1", "sha256"} {
			if _, err := tpm.VerifyQuote(q, goldenAK(t, "ak-rsa.pub"), []byte(goldenNonce), bank); !errors.Is(err, tpm.ErrBadQuote) {
				t.Errorf("VerifyQuote(%s) = %v, want ErrBadQuote", bank, err)
			}
		}
	})
	t.Run("data PCR", func(t *testing.T) {
		for alg, bank := range read {
			got, err := tpm.DataPCRValue(tpm.HashName(alg), []byte("nk"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, bank[16]) {
				t.Errorf("DataPCRValue(%s) = %x, the TPM has %x", tpm.HashName(alg), got, bank[16])
			}
		}
		if _, err := tpm.DataPCRValue("md5", []byte("nk")); err == nil {
			t.Error("DataPCRValue accepted md5")
		}
	})
}

// swtpmAK is a real AK on a software TPM opened through tpm/device, as the agent does it.
type swtpmAK struct {
	dev *device.TPM
	ak  *device.AK
	pub *tpm.Public
}

// openDevice starts a provisioned swtpm and opens it with tpm/device.
func openDevice(t *testing.T) (*device.TPM, *device.EK) {
	t.Helper()
	s := testbed.StartSWTPM(t)
	dev, err := device.Open(s.Spec())
	if err != nil {
		t.Fatalf("device.Open: %v", err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	ek, err := dev.EK(device.RSA)
	if err != nil {
		t.Fatalf("EK: %v", err)
	}
	return dev, ek
}

func newAK(t *testing.T, dev *device.TPM, ek *device.EK, alg device.KeyAlg) swtpmAK {
	t.Helper()
	ak, _, err := dev.LoadOrCreateAK(t.TempDir(), ek, alg)
	if err != nil {
		t.Fatalf("LoadOrCreateAK: %v", err)
	}
	pub, err := tpm.ParsePublic(ak.PublicBytes)
	if err != nil {
		t.Fatalf("ParsePublic(AK): %v", err)
	}
	if err := tpm.CheckAK(pub); err != nil {
		t.Fatalf("CheckAK: %v", err)
	}
	return swtpmAK{dev: dev, ak: ak, pub: pub}
}

// quote binds data into PCR 16 as the agent does and quotes pcrs of bank over nonce, through the quote
// string. It also returns the PCR values the TPM reported.
func (a swtpmAK) quote(t *testing.T, nonce, data []byte, bank tpm2.TPMAlgID, pcrs []int) (*tpm.Quote, map[int][]byte) {
	t.Helper()
	h, err := bank.Hash()
	if err != nil {
		t.Fatal(err)
	}
	d := h.New()
	d.Write(data)
	if err := a.dev.PCRReset(16); err != nil {
		t.Fatal(err)
	}
	if err := a.dev.PCRExtend(16, bank, d.Sum(nil)); err != nil {
		t.Fatal(err)
	}
	q, err := a.dev.Quote(a.ak, nonce, bank, pcrs)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	blob := mustMarshal(t, tpm.PCRBank{Alg: q.Bank, Values: q.PCRs})
	parsed, err := tpm.ParseQuote((&tpm.Quote{Attest: q.Attest, Signature: q.Signature, PCRBlob: blob}).String())
	if err != nil {
		t.Fatalf("ParseQuote: %v", err)
	}
	return parsed, q.PCRs
}

// editSig unmarshals a TPMT_SIGNATURE, lets f change it and marshals it again.
func editSig(t *testing.T, b []byte, f func(*tpm2.TPMTSignature)) []byte {
	t.Helper()
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](b)
	if err != nil {
		t.Fatal(err)
	}
	f(sig)
	return tpm2.Marshal(*sig)
}

// blobWith returns a PCR blob holding values in bank.
func blobWith(t *testing.T, bank tpm2.TPMAlgID, values map[int][]byte) []byte {
	t.Helper()
	return mustMarshal(t, tpm.PCRBank{Alg: bank, Values: values})
}

func clonePCRs(m map[int][]byte) map[int][]byte {
	out := make(map[int][]byte, len(m))
	for p, v := range m {
		out[p] = bytes.Clone(v)
	}
	return out
}

// Quotes from a real TPM (swtpm through tpm/device) verify for RSA and ECC AKs, and every alteration of
// a genuine quote, or verification against the wrong nonce, AK or bank, is refused.
func TestVerifyQuoteSWTPM(t *testing.T) {
	nk := []byte("-----BEGIN PUBLIC KEY-----\nnot really a key, but bytes to bind\n-----END PUBLIC KEY-----\n")
	nonce := []byte("nonce0123456789abcde")
	pcrs := []int{0, 1, 2, 3, 7, 10, 16, 17, 23}
	for _, alg := range []device.KeyAlg{device.RSA, device.ECC} {
		t.Run(alg.String(), func(t *testing.T) {
			// A TPM per key type: swtpm has three object slots and AKs stay loaded.
			dev, ek := openDevice(t)
			ak := newAK(t, dev, ek, alg)
			other := newAK(t, dev, ek, alg)
			q, vals := ak.quote(t, nonce, nk, tpm2.TPMAlgSHA256, pcrs)

			data, err := tpm.VerifyQuote(q, ak.pub, nonce, "sha256")
			if err != nil {
				t.Fatalf("VerifyQuote of a genuine quote: %v", err)
			}
			if !reflect.DeepEqual(data.PCRs, vals) {
				t.Errorf("QuoteData.PCRs differ from the values the TPM reported")
			}
			want16, _ := tpm.DataPCRValue("sha256", nk)
			if !bytes.Equal(data.PCRs[16], want16) {
				t.Errorf("PCR 16 = %x, DataPCRValue = %x", data.PCRs[16], want16)
			}
			if !data.Safe || data.HashAlg != "sha256" {
				t.Errorf("QuoteData = %+v", data)
			}
			q2, _ := ak.quote(t, nonce, nk, tpm2.TPMAlgSHA256, []int{16})
			data2, err := tpm.VerifyQuote(q2, ak.pub, nonce, "sha256")
			if err != nil {
				t.Fatalf("VerifyQuote of a second quote: %v", err)
			}
			if data2.Clock <= data.Clock || data2.ResetCount != data.ResetCount || data2.RestartCount != data.RestartCount {
				t.Errorf("clock went from %d/%d/%d to %d/%d/%d", data.Clock, data.ResetCount, data.RestartCount,
					data2.Clock, data2.ResetCount, data2.RestartCount)
			}

			sha1Vals, err := dev.PCRRead(tpm2.TPMAlgSHA1, pcrs)
			if err != nil {
				t.Fatal(err)
			}
			pcr4, err := dev.PCRRead(tpm2.TPMAlgSHA256, []int{4})
			if err != nil {
				t.Fatal(err)
			}
			otherScheme := tpm2.TPMAlgRSAPSS
			if alg == device.ECC {
				otherScheme = tpm2.TPMAlgECDAA
			}
			tests := []struct {
				name  string
				q     func() *tpm.Quote
				ak    *tpm.Public
				nonce []byte
				bank  string
			}{
				{name: "wrong nonce", nonce: []byte("nonce0123456789abcdf")},
				{name: "empty nonce", nonce: []byte{}},
				{name: "another AK", ak: other.pub},
				{name: "verified as sha1", bank: "sha1"},
				{name: "verified as sha384", bank: "sha384"},
				{name: "unknown bank", bank: "md5"},
				{name: "altered PCR value", q: func() *tpm.Quote {
					v := clonePCRs(vals)
					v[7][0] ^= 1
					return &tpm.Quote{Attest: q.Attest, Signature: q.Signature, PCRBlob: blobWith(t, tpm2.TPMAlgSHA256, v)}
				}},
				{name: "PCR 16 bound to other data", q: func() *tpm.Quote {
					v := clonePCRs(vals)
					v[16], _ = tpm.DataPCRValue("sha256", []byte("other key"))
					return &tpm.Quote{Attest: q.Attest, Signature: q.Signature, PCRBlob: blobWith(t, tpm2.TPMAlgSHA256, v)}
				}},
				{name: "PCR missing from blob", q: func() *tpm.Quote {
					v := clonePCRs(vals)
					delete(v, 0)
					return &tpm.Quote{Attest: q.Attest, Signature: q.Signature, PCRBlob: blobWith(t, tpm2.TPMAlgSHA256, v)}
				}},
				{name: "extra PCR in blob", q: func() *tpm.Quote {
					v := clonePCRs(vals)
					v[4] = pcr4[4]
					return &tpm.Quote{Attest: q.Attest, Signature: q.Signature, PCRBlob: blobWith(t, tpm2.TPMAlgSHA256, v)}
				}},
				{name: "blob holds the sha1 bank", q: func() *tpm.Quote {
					return &tpm.Quote{Attest: q.Attest, Signature: q.Signature, PCRBlob: blobWith(t, tpm2.TPMAlgSHA1, sha1Vals)}
				}},
				{name: "blob of another quote", q: func() *tpm.Quote {
					return &tpm.Quote{Attest: q.Attest, Signature: q.Signature, PCRBlob: q2.PCRBlob}
				}},
				{name: "malformed blob", q: func() *tpm.Quote {
					return &tpm.Quote{Attest: q.Attest, Signature: q.Signature, PCRBlob: q.PCRBlob[:len(q.PCRBlob)-1]}
				}},
				{name: "other signature scheme", q: func() *tpm.Quote {
					return &tpm.Quote{Attest: q.Attest, PCRBlob: q.PCRBlob, Signature: editSig(t, q.Signature, func(s *tpm2.TPMTSignature) {
						if alg == device.RSA {
							rs, _ := s.Signature.RSASSA()
							s.Signature = tpm2.NewTPMUSignature(otherScheme, rs)
						} else {
							es, _ := s.Signature.ECDSA()
							s.Signature = tpm2.NewTPMUSignature(otherScheme, es)
						}
						s.SigAlg = otherScheme
					})}
				}},
				{name: "signature hash sha384", q: func() *tpm.Quote {
					return &tpm.Quote{Attest: q.Attest, PCRBlob: q.PCRBlob, Signature: editSig(t, q.Signature, func(s *tpm2.TPMTSignature) {
						if alg == device.RSA {
							rs, _ := s.Signature.RSASSA()
							rs.Hash = tpm2.TPMAlgSHA384
						} else {
							es, _ := s.Signature.ECDSA()
							es.Hash = tpm2.TPMAlgSHA384
						}
					})}
				}},
				{name: "signature bit flipped", q: func() *tpm.Quote {
					return &tpm.Quote{Attest: q.Attest, PCRBlob: q.PCRBlob, Signature: editSig(t, q.Signature, func(s *tpm2.TPMTSignature) {
						if alg == device.RSA {
							rs, _ := s.Signature.RSASSA()
							rs.Sig.Buffer[10] ^= 1
						} else {
							es, _ := s.Signature.ECDSA()
							es.SignatureS.Buffer[10] ^= 1
						}
					})}
				}},
				{name: "signature with trailing byte", q: func() *tpm.Quote {
					return &tpm.Quote{Attest: q.Attest, PCRBlob: q.PCRBlob, Signature: append(bytes.Clone(q.Signature), 0)}
				}},
				{name: "signature of the other quote", q: func() *tpm.Quote {
					return &tpm.Quote{Attest: q.Attest, PCRBlob: q.PCRBlob, Signature: q2.Signature}
				}},
				{name: "attest bit flipped", q: func() *tpm.Quote {
					a := bytes.Clone(q.Attest)
					a[len(a)-1] ^= 1
					return &tpm.Quote{Attest: a, Signature: q.Signature, PCRBlob: q.PCRBlob}
				}},
				{name: "attest with trailing byte", q: func() *tpm.Quote {
					return &tpm.Quote{Attest: append(bytes.Clone(q.Attest), 0), Signature: q.Signature, PCRBlob: q.PCRBlob}
				}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					qq, key, n, bank := q, ak.pub, nonce, "sha256"
					if tt.q != nil {
						qq = tt.q()
					}
					if tt.ak != nil {
						key = tt.ak
					}
					if tt.nonce != nil {
						n = tt.nonce
					}
					if tt.bank != "" {
						bank = tt.bank
					}
					data, err := tpm.VerifyQuote(qq, key, n, bank)
					if err == nil {
						t.Fatalf("VerifyQuote accepted it: %+v", data)
					}
					if !errors.Is(err, tpm.ErrBadQuote) && !errors.Is(err, tpm.ErrBadPCRBlob) {
						t.Errorf("error %v wraps neither ErrBadQuote nor ErrBadPCRBlob", err)
					}
					if data != nil {
						t.Errorf("VerifyQuote returned data with an error")
					}
					t.Log(err)
				})
			}
		})
	}
}

// A real TPM quoting the sha1 bank with Keylime's SHA-256 AK digests the SHA-1 PCR values with SHA-256
// and signs with SHA-256; VerifyQuote refuses such a quote for either bank, as Keylime's checkquote does
// (the signature hash must be the quote's hash_alg). An agent can only serve tpm_hash_alg = sha1 with an
// AK whose scheme hash is SHA-1.
func TestVerifyQuoteSHA1BankWithSHA256AK(t *testing.T) {
	dev, ek := openDevice(t)
	ak := newAK(t, dev, ek, device.RSA)
	nonce := []byte("sha1banknonce")
	q, vals := ak.quote(t, nonce, []byte("nk"), tpm2.TPMAlgSHA1, []int{0, 16})
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
	if err != nil {
		t.Fatal(err)
	}
	info, err := att.Attested.Quote()
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append(bytes.Clone(vals[0]), vals[16]...))
	if !bytes.Equal(info.PCRDigest.Buffer, want[:]) {
		t.Errorf("pcrDigest = %x, want SHA-256 of the SHA-1 values %x", info.PCRDigest.Buffer, want)
	}
	for _, bank := range []string{"sha1", "sha256"} {
		if _, err := tpm.VerifyQuote(q, ak.pub, nonce, bank); !errors.Is(err, tpm.ErrBadQuote) {
			t.Errorf("VerifyQuote(%s) = %v, want ErrBadQuote", bank, err)
		}
	}
}

// rawKey is a primary key created directly with go-tpm on a swtpm.
type rawKey struct {
	handle tpm2.AuthHandle
	pub    *tpm.Public
}

func createPrimary(t *testing.T, tp interface {
	Send([]byte) ([]byte, error)
}, restricted bool) rawKey {
	t.Helper()
	tmpl := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgRSA,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
			Restricted: restricted, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Scheme: tpm2.TPMTRSAScheme{
				Scheme:  tpm2.TPMAlgRSASSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: []byte{}}),
	}
	cp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(tp)
	if err != nil {
		t.Fatalf("CreatePrimary: %v", err)
	}
	t.Cleanup(func() { _, _ = tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(tp) })
	pub, err := tpm.ParsePublic(tpm2.Marshal(cp.OutPublic))
	if err != nil {
		t.Fatalf("ParsePublic: %v", err)
	}
	return rawKey{handle: tpm2.AuthHandle{Handle: cp.ObjectHandle, Name: cp.Name, Auth: tpm2.PasswordAuth(nil)}, pub: pub}
}

// VerifyQuote checks the attestation structure itself, not only its signature: an attestation of
// another type signed by a real AK (TPM2_Certify), and bytes signed by a key that signs anything
// (TPM2_Sign with an unrestricted key: forged magic, another type, trailing bytes) are refused, while
// the same key signing the genuine quote bytes passes — so each refusal is the structure check's.
func TestVerifyQuoteForgedAttest(t *testing.T) {
	s := testbed.StartSWTPM(t)
	tp, err := linuxudstpm.Open(s.Socket)
	if err != nil {
		t.Fatalf("open swtpm: %v", err)
	}
	t.Cleanup(func() { _ = tp.Close() })
	ak := createPrimary(t, tp, true)
	signer := createPrimary(t, tp, false)
	if err := tpm.CheckAK(signer.pub); !errors.Is(err, tpm.ErrBadAK) {
		t.Errorf("CheckAK of an unrestricted key = %v, want ErrBadAK", err)
	}
	nonce := []byte("forgednonce")
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(16)},
	}}
	qr, err := tpm2.Quote{
		SignHandle: ak.handle, QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}, PCRSelect: sel,
	}.Execute(tp)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	rr, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(tp)
	if err != nil {
		t.Fatalf("PCRRead: %v", err)
	}
	blob := blobWith(t, tpm2.TPMAlgSHA256, map[int][]byte{16: rr.PCRValues.Digests[0].Buffer})
	genuine := &tpm.Quote{Attest: qr.Quoted.Bytes(), Signature: tpm2.Marshal(qr.Signature), PCRBlob: blob}
	if _, err := tpm.VerifyQuote(genuine, ak.pub, nonce, "sha256"); err != nil {
		t.Fatalf("VerifyQuote of the genuine quote: %v", err)
	}

	// The restricted AK refuses to sign a digest it did not compute, so only TPM2_Quote/Certify bytes
	// ever carry its signature.
	d := sha256.Sum256(genuine.Attest)
	if _, err := (tpm2.Sign{
		KeyHandle: ak.handle, Digest: tpm2.TPM2BDigest{Buffer: d[:]},
		InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}).Execute(tp); err == nil {
		t.Error("the restricted AK signed an external digest")
	}

	signWith := func(attest []byte) *tpm.Quote {
		t.Helper()
		d := sha256.Sum256(attest)
		sr, err := tpm2.Sign{
			KeyHandle: signer.handle, Digest: tpm2.TPM2BDigest{Buffer: d[:]},
			InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(tp)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		return &tpm.Quote{Attest: attest, Signature: tpm2.Marshal(sr.Signature), PCRBlob: blob}
	}
	if _, err := tpm.VerifyQuote(signWith(genuine.Attest), signer.pub, nonce, "sha256"); err != nil {
		t.Fatalf("control: the genuine attest signed by the unrestricted key: %v", err)
	}

	cr, err := tpm2.Certify{
		ObjectHandle: ak.handle, SignHandle: ak.handle, QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(tp)
	if err != nil {
		t.Fatalf("Certify: %v", err)
	}
	certify := &tpm.Quote{Attest: cr.CertifyInfo.Bytes(), Signature: tpm2.Marshal(cr.Signature), PCRBlob: blob}

	edited := func(f func(a *tpm2.TPMSAttest)) []byte {
		a, err := tpm2.Unmarshal[tpm2.TPMSAttest](genuine.Attest)
		if err != nil {
			t.Fatal(err)
		}
		f(a)
		return tpm2.Marshal(*a)
	}
	tests := []struct {
		name string
		q    *tpm.Quote
		key  *tpm.Public
	}{
		{"certify attestation signed by the AK", certify, ak.pub},
		{"trailing byte", signWith(append(bytes.Clone(genuine.Attest), 0)), signer.pub},
		{"trailing quote", signWith(append(bytes.Clone(genuine.Attest), genuine.Attest...)), signer.pub},
		{"magic not TPM_GENERATED", signWith(edited(func(a *tpm2.TPMSAttest) { a.Magic = 0x54435047 })), signer.pub},
		{"certify type with quote contents", signWith(func() []byte {
			b := bytes.Clone(genuine.Attest)
			b[4], b[5] = 0x80, 0x17 // TPM_ST_ATTEST_CERTIFY
			return b
		}()), signer.pub},
		{"truncated", signWith(genuine.Attest[:len(genuine.Attest)-1]), signer.pub},
		{"pcrDigest of other values", signWith(edited(func(a *tpm2.TPMSAttest) {
			info, _ := a.Attested.Quote()
			info.PCRDigest.Buffer[0] ^= 1
		})), signer.pub},
		{"two banks selected", signWith(edited(func(a *tpm2.TPMSAttest) {
			info, _ := a.Attested.Quote()
			info.PCRSelect.PCRSelections = append(info.PCRSelect.PCRSelections,
				tpm2.TPMSPCRSelection{Hash: tpm2.TPMAlgSHA1, PCRSelect: tpm2.PCClientCompatible.PCRs(16)})
		})), signer.pub},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := tpm.VerifyQuote(tt.q, tt.key, nonce, "sha256")
			if !errors.Is(err, tpm.ErrBadQuote) {
				t.Fatalf("VerifyQuote = %+v, %v; want ErrBadQuote", data, err)
			}
			t.Log(err)
		})
	}
}

// FuzzParseQuote: ParseQuote never panics; what it accepts re-encodes to a string that parses to the
// same parts; VerifyQuote of any parsed quote returns an error or data, never panics.
func FuzzParseQuote(f *testing.F) {
	for _, name := range []string{"rsa-sha256-all", "ecc-sha256-16", "rsa-multibank"} {
		f.Add(goldenQuote(f, name).String())
	}
	f.Add("rAAAA:AAAA:AAAA")
	f.Add("r:::")
	ak := goldenAK(f, "ak-ecc.pub")
	f.Fuzz(func(t *testing.T, s string) {
		q, err := tpm.ParseQuote(s)
		if err != nil {
			if !errors.Is(err, tpm.ErrBadQuote) {
				t.Fatalf("error %v does not wrap ErrBadQuote", err)
			}
			return
		}
		back, err := tpm.ParseQuote(q.String())
		if err != nil {
			t.Fatalf("ParseQuote(String()): %v", err)
		}
		if !reflect.DeepEqual(back, q) {
			t.Fatalf("round trip changed the quote")
		}
		if data, err := tpm.VerifyQuote(q, ak, []byte(goldenNonce), "sha256"); err == nil && data == nil {
			t.Fatal("VerifyQuote returned neither data nor an error")
		}
	})
}
