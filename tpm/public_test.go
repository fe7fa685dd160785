package tpm

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// The fixtures were made on swtpm 0.7.1 with tpm2-tools 5.4 (tpm2_readpublic -f tss,
// tpm2_createak -f tss); the .name files are what tpm2-tools computed.
func TestParsePublicFixtures(t *testing.T) {
	tests := []struct {
		pub, name string
		wantType  tpm2.TPMAlgID
		wantAttrs uint32
		wantBits  int // RSA modulus or ECC curve bits
		isEK      bool
	}{
		{"ek-rsa2048.pub", "", tpm2.TPMAlgRSA, 0x000300b2, 2048, true},
		{"ek-ecc384.pub", "", tpm2.TPMAlgECC, 0x000300f2, 384, true},
		{"ak-rsa.pub", "ak-rsa.name", tpm2.TPMAlgRSA, AKAttributes, 2048, false},
		{"ak-ecc.pub", "ak-ecc.name", tpm2.TPMAlgECC, AKAttributes, 256, false},
	}
	for _, tt := range tests {
		t.Run(tt.pub, func(t *testing.T) {
			raw := readFixture(t, tt.pub)
			p, err := ParsePublic(raw)
			if err != nil {
				t.Fatalf("ParsePublic: %v", err)
			}
			if !bytes.Equal(p.Bytes, raw) {
				t.Error("Bytes differ from input")
			}
			if p.Public.Type != tt.wantType {
				t.Errorf("type = %v, want %v", p.Public.Type, tt.wantType)
			}
			if got := p.Attributes(); got != tt.wantAttrs {
				t.Errorf("Attributes() = 0x%08x, want 0x%08x", got, tt.wantAttrs)
			}
			switch k := p.Key.(type) {
			case *rsa.PublicKey:
				if k.N.BitLen() != tt.wantBits || k.E != 65537 {
					t.Errorf("RSA key %d bits e=%d", k.N.BitLen(), k.E)
				}
			case *ecdsa.PublicKey:
				if k.Curve.Params().BitSize != tt.wantBits {
					t.Errorf("curve %s", k.Curve.Params().Name)
				}
			default:
				t.Fatalf("key type %T", p.Key)
			}
			// Name = nameAlg || H(TPMT_PUBLIC) over the received bytes.
			if h, _ := nameHash(p.Public.NameAlg); !bytes.Equal(p.Name[2:], hashOf(h.New(), raw[2:])) {
				t.Error("Name is not H(TPMT_PUBLIC)")
			}
			if tt.name != "" {
				if want := readFixture(t, tt.name); !bytes.Equal(p.Name, want) {
					t.Errorf("Name = %x, tpm2-tools says %x", p.Name, want)
				}
			}
			if err := CheckEK(p); (err == nil) != tt.isEK {
				t.Errorf("CheckEK = %v, want ok=%v", err, tt.isEK)
			}
			if err := CheckAK(p); (err == nil) == tt.isEK {
				t.Errorf("CheckAK = %v, want ok=%v", err, !tt.isEK)
			}
			b64, err := ParsePublicBase64(base64.StdEncoding.EncodeToString(raw))
			if err != nil || !bytes.Equal(b64.Name, p.Name) {
				t.Errorf("ParsePublicBase64: %v", err)
			}
		})
	}
}

func hashOf(h interface {
	Write([]byte) (int, error)
	Sum([]byte) []byte
}, b []byte) []byte {
	h.Write(b)
	return h.Sum(nil)
}

// The PEM text and hash_ek must equal OpenSSL's, which rust-keylime uses
// (keylime/src/hash_ek.rs). Expected values: `openssl x509 -inform der -in
// testdata/ek-rsa2048.der -pubkey -noout` (saved as ek-*.pubkey.pem) and its sha256sum.
func TestPEMAndHashEK(t *testing.T) {
	tests := []struct {
		pub, pem, hash string
	}{
		{"ek-rsa2048.pub", "ek-rsa2048.pubkey.pem", "ef1d92bedc8580af30d6690f6aafb4c0f005824e1b0a6d889ac266915d7a6806"},
		{"ek-ecc384.pub", "ek-ecc384.pubkey.pem", "f8a3d6d599987b9de814428f6bfeb02ce87640f48032fd2b8508bfeaa26cefa7"},
	}
	for _, tt := range tests {
		t.Run(tt.pub, func(t *testing.T) {
			p := mustParse(t, readFixture(t, tt.pub))
			got, err := p.PEM()
			if err != nil {
				t.Fatal(err)
			}
			if want := readFixture(t, tt.pem); !bytes.Equal(got, want) {
				t.Errorf("PEM() =\n%s\nopenssl:\n%s", got, want)
			}
			h, err := HashEK(p)
			if err != nil {
				t.Fatal(err)
			}
			if h != tt.hash {
				t.Errorf("HashEK = %s, want %s", h, tt.hash)
			}
		})
	}
}

func TestParsePublicRejects(t *testing.T) {
	good := readFixture(t, "ak-rsa.pub")
	rsaPub := mustParse(t, good).Public
	eccPub := mustParse(t, readFixture(t, "ak-ecc.pub")).Public

	withSize := func(b []byte) []byte { return binary.BigEndian.AppendUint16(nil, uint16(len(b))) }
	mutate := func(pub tpm2.TPMTPublic, f func(*tpm2.TPMTPublic)) []byte {
		f(&pub)
		return marshal2B(pub)
	}
	rsaDetail := func(p *tpm2.TPMTPublic) *tpm2.TPMSRSAParms {
		d, err := p.Parameters.RSADetail()
		if err != nil {
			t.Fatal(err)
		}
		c := *d
		p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &c)
		return &c
	}
	eccPoint := func(p *tpm2.TPMTPublic) *tpm2.TPMSECCPoint {
		pt, err := p.Unique.ECC()
		if err != nil {
			t.Fatal(err)
		}
		c := tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: bytes.Clone(pt.X.Buffer)}, Y: tpm2.TPM2BECCParameter{Buffer: bytes.Clone(pt.Y.Buffer)}}
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &c)
		return &c
	}
	keyedHash := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}}),
		Unique:     tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: make([]byte, 32)}),
	}

	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"one byte", []byte{0}},
		{"zero size", []byte{0, 0}},
		{"size too big", append(binary.BigEndian.AppendUint16(nil, uint16(len(good)-1)), good[2:]...)},
		{"size too small", append(binary.BigEndian.AppendUint16(nil, uint16(len(good)-3)), good[2:]...)},
		{"trailing byte outside size", append(bytes.Clone(good), 0)},
		{"trailing byte inside size", func() []byte { in := append(bytes.Clone(good[2:]), 0); return append(withSize(in), in...) }()},
		{"truncated", good[:len(good)-1]},
		{"too large", append([]byte{0xff, 0xff}, make([]byte, 0xffff)...)},
		{"keyedhash type", marshal2B(keyedHash)},
		{"SHA-1 name", mutate(rsaPub, func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 })},
		{"unknown name alg", mutate(rsaPub, func(p *tpm2.TPMTPublic) { p.NameAlg = 0x7777 })},
		{"policy wrong length", mutate(rsaPub, func(p *tpm2.TPMTPublic) { p.AuthPolicy = tpm2.TPM2BDigest{Buffer: make([]byte, 20)} })},
		{"RSA 1024 bits", mutate(rsaPub, func(p *tpm2.TPMTPublic) {
			rsaDetail(p).KeyBits = 1024
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: bytes.Repeat([]byte{0xff}, 128)})
		})},
		{"RSA modulus shorter than keyBits", mutate(rsaPub, func(p *tpm2.TPMTPublic) {
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: bytes.Repeat([]byte{0xff}, 255)})
		})},
		{"RSA modulus top bit clear", mutate(rsaPub, func(p *tpm2.TPMTPublic) {
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: append([]byte{0x7f}, bytes.Repeat([]byte{0xff}, 255)...)})
		})},
		{"RSA even modulus", mutate(rsaPub, func(p *tpm2.TPMTPublic) {
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: append(bytes.Repeat([]byte{0xff}, 255), 0xfe)})
		})},
		{"RSA exponent 1", mutate(rsaPub, func(p *tpm2.TPMTPublic) { rsaDetail(p).Exponent = 1 })},
		{"RSA even exponent", mutate(rsaPub, func(p *tpm2.TPMTPublic) { rsaDetail(p).Exponent = 65536 })},
		{"RSA exponent 2^32-1", mutate(rsaPub, func(p *tpm2.TPMTPublic) { rsaDetail(p).Exponent = 0xffffffff })},
		{"ECC point off curve", mutate(eccPub, func(p *tpm2.TPMTPublic) { eccPoint(p).Y.Buffer[31] ^= 1 })},
		{"ECC short coordinate", mutate(eccPub, func(p *tpm2.TPMTPublic) { pt := eccPoint(p); pt.X.Buffer = pt.X.Buffer[1:] })},
		{"ECC unknown curve", mutate(eccPub, func(p *tpm2.TPMTPublic) {
			d, _ := p.Parameters.ECCDetail()
			c := *d
			c.CurveID = tpm2.TPMECCBNP256
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &c)
		})},
		{"text byte", []byte("x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePublic(tt.in)
			if !errors.Is(err, ErrBadPublic) {
				t.Fatalf("ParsePublic = %v, %v; want ErrBadPublic", p, err)
			}
		})
	}
	if _, err := ParsePublicBase64("not base64!"); !errors.Is(err, ErrBadPublic) {
		t.Errorf("ParsePublicBase64(garbage) = %v", err)
	}
}

// Software-built public areas of every accepted shape parse, and keep their key.
func TestParsePublicSoftwareKeys(t *testing.T) {
	k2048 := rsaKey(t, 2048)
	k3072 := rsaKey(t, 3072)
	for _, c := range []ecdh.Curve{ecdh.P256(), ecdh.P384(), ecdh.P521()} {
		k := ecdhKey(t, c)
		p := mustParse(t, marshal2B(eccEK(k)))
		if err := CheckEK(p); err != nil {
			t.Errorf("%v: CheckEK: %v", c, err)
		}
		ek, err := p.Key.(*ecdsa.PublicKey).ECDH()
		if err != nil || !ek.Equal(k.PublicKey()) {
			t.Errorf("%v: key does not round-trip: %v", c, err)
		}
	}
	for _, k := range []*rsa.PrivateKey{k2048, k3072} {
		p := mustParse(t, marshal2B(rsaEK(&k.PublicKey)))
		if err := CheckEK(p); err != nil {
			t.Errorf("RSA-%d: CheckEK: %v", k.N.BitLen(), err)
		}
		if !p.Key.(*rsa.PublicKey).Equal(&k.PublicKey) {
			t.Errorf("RSA-%d: key does not round-trip", k.N.BitLen())
		}
	}
}

func TestCheckAK(t *testing.T) {
	rk := rsaKey(t, 2048)
	ek := ecdhKey(t, ecdh.P256())
	withAttrs := func(pub tpm2.TPMTPublic, f func(*tpm2.TPMAObject)) tpm2.TPMTPublic {
		f(&pub.ObjectAttributes)
		return pub
	}
	withRSAScheme := func(s tpm2.TPMTRSAScheme) tpm2.TPMTPublic {
		pub := rsaAK(&rk.PublicKey)
		pub.Parameters = rsaParms(tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, s, 2048)
		return pub
	}
	withECCScheme := func(s tpm2.TPMTECCScheme) tpm2.TPMTPublic {
		pub := eccAK(ek)
		d, _ := pub.Parameters.ECCDetail()
		c := *d
		c.Scheme = s
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &c)
		return pub
	}
	rsaAKPub := rsaAK(&rk.PublicKey)
	tests := []struct {
		name    string
		pub     tpm2.TPMTPublic
		wantMsg []string // substrings of the error; nil means accepted
	}{
		{"good RSA AK", rsaAKPub, nil},
		{"good ECC AK", eccAK(ek), nil},
		{"good RSA AK SHA-384", withRSAScheme(rsassa(tpm2.TPMAlgSHA384)), nil},
		{"decrypt capable", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.Decrypt = true }), []string{"AK can decrypt"}},
		{"not restricted", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.Restricted = false }), []string{"AK is not restricted"}},
		{"not fixedTPM", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.FixedTPM = false }), []string{"AK is not fixedTPM"}},
		{"not fixedParent", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.FixedParent = false }), []string{"AK is not fixedParent"}},
		{"not sensitiveDataOrigin", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.SensitiveDataOrigin = false }), []string{"AK is not sensitiveDataOrigin"}},
		{"not userWithAuth", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.UserWithAuth = false }), []string{"AK is not userWithAuth"}},
		{"cannot sign", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.SignEncrypt = false }), []string{"AK cannot sign"}},
		{"adminWithPolicy", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.AdminWithPolicy = true }), []string{"AK has adminWithPolicy"}},
		{"noDA", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.NoDA = true }), []string{"AK has noDA"}},
		{"stClear", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.STClear = true }), []string{"AK has stClear"}},
		{"x509sign", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.X509Sign = true }), []string{"AK has x509sign"}},
		{"storage key", withAttrs(rsaAKPub, func(a *tpm2.TPMAObject) { a.SignEncrypt, a.Decrypt = false, true }),
			[]string{"AK cannot sign", "AK can decrypt"}},
		{"RSAPSS scheme", withRSAScheme(tpm2.TPMTRSAScheme{
			Scheme:  tpm2.TPMAlgRSAPSS,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSAPSS, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: tpm2.TPMAlgSHA256}),
		}), []string{"AK scheme is RSAPSS, want RSASSA"}},
		{"RSA NULL scheme", withRSAScheme(tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull}), []string{"AK scheme is NULL"}},
		{"RSASSA SHA-1", withRSAScheme(rsassa(tpm2.TPMAlgSHA1)), []string{"AK scheme hash 0x0004"}},
		{"ECC NULL scheme", withECCScheme(tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}), []string{"AK scheme is NULL, want ECDSA"}},
		{"ECDAA scheme", withECCScheme(tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDAA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDAA, &tpm2.TPMSSchemeECDAA{HashAlg: tpm2.TPMAlgSHA256}),
		}), []string{"AK scheme is ECDAA, want ECDSA"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckAK(mustParse(t, marshal2B(tt.pub)))
			if tt.wantMsg == nil {
				if err != nil {
					t.Fatalf("CheckAK = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrBadAK) {
				t.Fatalf("CheckAK = %v, want ErrBadAK", err)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
		})
	}
	if err := CheckAK(nil); !errors.Is(err, ErrBadAK) {
		t.Errorf("CheckAK(nil) = %v", err)
	}
}

func TestCheckEK(t *testing.T) {
	rk := rsaKey(t, 2048)
	good := rsaEK(&rk.PublicKey)
	tests := []struct {
		name    string
		pub     tpm2.TPMTPublic
		wantMsg string // "" means accepted
	}{
		{"TCG RSA EK", good, ""},
		{"AK", rsaAK(&rk.PublicKey), "EK cannot decrypt"},
		{"not restricted", func() tpm2.TPMTPublic { p := good; p.ObjectAttributes.Restricted = false; return p }(), "EK is not restricted"},
		{"not fixedTPM", func() tpm2.TPMTPublic { p := good; p.ObjectAttributes.FixedTPM = false; return p }(), "EK is not fixedTPM"},
		{"sign and decrypt", func() tpm2.TPMTPublic { p := good; p.ObjectAttributes.SignEncrypt = true; return p }(), "EK can sign"},
		{"AES-CTR", func() tpm2.TPMTPublic {
			p := good
			sym := aesCFB(128)
			sym.Mode = tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCTR)
			p.Parameters = rsaParms(sym, tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull}, 2048)
			return p
		}(), "EK symmetric mode is not CFB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckEK(mustParse(t, marshal2B(tt.pub)))
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("CheckEK = %v", err)
				}
				return
			}
			if !errors.Is(err, ErrBadEK) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("CheckEK = %v, want ErrBadEK saying %q", err, tt.wantMsg)
			}
		})
	}
}

func FuzzParsePublic(f *testing.F) {
	for _, name := range []string{"ek-rsa2048.pub", "ek-ecc384.pub", "ak-rsa.pub", "ak-ecc.pub"} {
		f.Add(readFixture(f, name))
	}
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePublic(data)
		if err != nil {
			if p != nil || !errors.Is(err, ErrBadPublic) {
				t.Fatalf("ParsePublic = %v, %v", p, err)
			}
			return
		}
		// Anything accepted is canonical and self-consistent.
		if !bytes.Equal(marshal2B(p.Public), data) {
			t.Fatal("accepted input does not re-marshal to itself")
		}
		if sum := sha256.Sum256(data[2:]); p.Public.NameAlg == tpm2.TPMAlgSHA256 && !bytes.Equal(p.Name[2:], sum[:]) {
			t.Fatal("name mismatch")
		}
		if _, err := p.PEM(); err != nil {
			t.Fatalf("PEM: %v", err)
		}
		_ = CheckAK(p)
		_ = CheckEK(p)
	})
}
