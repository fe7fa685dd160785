package device

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

func TestPolicyDigests(t *testing.T) {
	a256, err := policyA(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a256, tpm2.RSAEKTemplate.AuthPolicy.Buffer) {
		t.Errorf("PolicyA SHA-256 = %x, want the RSAEKTemplate policy", a256)
	}
	for _, tc := range []struct {
		alg       tpm2.TPMAlgID
		policyB   string
		indexName string // Name of policy index I-1 / I-2, EK profile "Computing Policy Index Names"
	}{
		{tpm2.TPMAlgSHA256,
			"ca3d0a99a2b93906f7a3342414efcfb3a385d44cd1fd459089d19b5071c0b7a0",
			"000b0c9d717e9c3fe69fda41769450bb145957f8b3610e084dbf65591a5d11ecd83f"},
		{tpm2.TPMAlgSHA384,
			"b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12",
			"000cdb62fca346612c976732ff4e8621fb4e858be82586486504f7d02e621f8d7d61ae32cfc60c4d120609ed6768afcf090c"},
	} {
		b, _, err := policyB(tc.alg)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != tc.policyB {
			t.Errorf("PolicyB(0x%x) = %s, want %s", uint16(tc.alg), got, tc.policyB)
		}
		// PolicyC = PolicyAuthorizeNV(policy index): H(zeros || TPM_CC_PolicyAuthorizeNV || index Name).
		h, _ := tc.alg.Hash()
		d := h.New()
		d.Write(make([]byte, h.Size()))
		d.Write([]byte{0, 0, 0x01, 0x92})
		d.Write(mustHex(tc.indexName))
		if !bytes.Equal(d.Sum(nil), policyC[tc.alg]) {
			t.Errorf("PolicyC(0x%x) constant does not match the policy index Name", uint16(tc.alg))
		}
	}
}

func TestKeyAlgString(t *testing.T) {
	for _, tc := range []struct {
		alg  KeyAlg
		want string
	}{{RSA, "rsa"}, {ECC, "ecc"}, {KeyAlg(7), "KeyAlg(7)"}} {
		if got := tc.alg.String(); got != tc.want {
			t.Errorf("%d.String() = %q, want %q", int(tc.alg), got, tc.want)
		}
	}
}

func TestSelected(t *testing.T) {
	sel, err := selection(tpm2.TPMAlgSHA256, []int{23, 0, 9, 8, 16})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := selected(sel, tpm2.TPMAlgSHA256), []int{0, 8, 9, 16, 23}; !slices.Equal(got, want) {
		t.Errorf("selected = %v, want %v", got, want)
	}
	if got := selected(sel, tpm2.TPMAlgSHA1); len(got) != 0 {
		t.Errorf("selected other bank = %v", got)
	}
	for _, tc := range []struct {
		name string
		bank tpm2.TPMAlgID
		pcrs []int
	}{
		{"none", tpm2.TPMAlgSHA256, nil},
		{"negative", tpm2.TPMAlgSHA256, []int{-1}},
		{"too high", tpm2.TPMAlgSHA256, []int{24}},
		{"not a hash", tpm2.TPMAlgRSA, []int{0}},
	} {
		if _, err := selection(tc.bank, tc.pcrs); err == nil {
			t.Errorf("%s: selection accepted", tc.name)
		}
	}
}

// testCert returns a DER certificate for a fresh P-256 key, with a negative serial when negative.
func testCert(t testing.TB, negative bool) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial := big.NewInt(42)
	if negative {
		serial.Neg(serial)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "ek"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func TestCertParsing(t *testing.T) {
	der, key := testCert(t, false)
	// Go's x509 refuses negative serial numbers, which some TPM vendors' EK certificates have: build
	// one by flipping the serial INTEGER's sign byte in place (the signature no longer matters).
	neg := bytes.Clone(der)
	i := bytes.Index(neg, []byte{0x02, 0x01, 42})
	if i < 0 {
		t.Fatal("serial not found")
	}
	neg[i+2] = 0xd6 // -42
	if _, err := x509.ParseCertificate(neg); err == nil {
		t.Fatal("crypto/x509 accepts negative serials now; the fallback test proves nothing")
	}
	for _, tc := range []struct {
		name string
		nv   []byte
		err  error
	}{
		{"exact", der, nil},
		{"zero padded", append(bytes.Clone(der), make([]byte, 100)...), nil},
		{"0xff padded", append(bytes.Clone(der), bytes.Repeat([]byte{0xff}, 100)...), nil},
		{"negative serial", neg, nil},
		{"empty", nil, errBadCert},
		{"erased NV", bytes.Repeat([]byte{0xff}, 64), errBadCert},
		{"truncated", der[:len(der)/2], errBadCert},
		{"not a sequence", []byte{0x02, 0x01, 0x05}, errBadCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := trimDER(tc.nv)
			if err == nil {
				var pub any
				if pub, err = certPublicKey(cert); err == nil && !key.PublicKey.Equal(pub) {
					t.Fatal("wrong public key")
				}
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
		})
	}
}

func FuzzCertPublicKey(f *testing.F) {
	der, _ := testCert(f, false)
	f.Add(der)
	f.Add(append(bytes.Clone(der), 0, 0, 0))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		cert, err := trimDER(b)
		if err != nil {
			return
		}
		if len(cert) > len(b) || !bytes.Equal(cert, b[:len(cert)]) {
			t.Fatal("trimDER returned bytes that are not a prefix")
		}
		_, _ = certPublicKey(cert)
		_, _ = certSPKI(cert)
	})
}

func TestReadResponse(t *testing.T) {
	ok := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xaa, 0xbb}
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
		err  error
	}{
		{"whole", ok, ok, nil},
		{"followed by the next response", append(bytes.Clone(ok), ok...), ok, nil},
		{"size below header", []byte{0x80, 0x01, 0, 0, 0, 9, 0, 0, 0, 0}, nil, errBadResponse},
		{"size too big", []byte{0x80, 0x01, 0x10, 0, 0, 0, 0, 0, 0, 0}, nil, errBadResponse},
		{"short body", ok[:11], nil, errShort},
		{"short header", ok[:4], nil, errShort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readResponse(bytes.NewReader(tc.in))
			if tc.err == errShort {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if !errors.Is(err, tc.err) || !bytes.Equal(got, tc.want) {
				t.Fatalf("readResponse = %x, %v; want %x, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// errShort marks cases that must fail with an I/O error (io.ErrUnexpectedEOF or io.EOF).
var errShort = errors.New("short read")

func FuzzReadResponse(f *testing.F) {
	f.Add([]byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xaa, 0xbb})
	f.Add([]byte{0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rsp, err := readResponse(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(rsp) < headerSize || int(binary.BigEndian.Uint32(rsp[2:6])) != len(rsp) || !bytes.Equal(rsp, b[:len(rsp)]) {
			t.Fatalf("readResponse returned %x for %x", rsp, b)
		}
	})
}

func FuzzParseAKRecord(f *testing.F) {
	pub := tpm2.Marshal(tpm2.New2B(mustAKTemplate(RSA)))
	priv := tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: []byte{1, 2, 3}})
	seed, _ := json.Marshal(akRecord{Version: 1, Alg: "rsa", EKName: "000b", Public: pub, Private: priv})
	f.Add(seed)
	f.Add([]byte(`{"version":1,"alg":"ecc","public":"AAA=","private":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, alg := range []KeyAlg{RSA, ECC} {
			rec, p, err := parseAKRecord(b, alg)
			if err != nil {
				continue
			}
			if rec.Alg != alg.String() || p.Type == 0 {
				t.Fatalf("accepted %+v for %v", rec, alg)
			}
		}
	})
}

func mustAKTemplate(alg KeyAlg) tpm2.TPMTPublic {
	t, err := akTemplate(alg)
	if err != nil {
		panic(err)
	}
	return t
}
