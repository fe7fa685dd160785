package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/rsa"
	"errors"
	"io/fs"
	"math/big"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"
)

// checkFastMatchesReflect checks that ParsePublic (fast path or fallback) and
// parsePublicReflect (go-tpm's decoder and tpm2.Pub) agree on data: both reject it
// with ErrBadPublic, or both accept it with identical TPMTPublic, Bytes, Name and key.
// It reports whether the fast path decoded data.
func checkFastMatchesReflect(t testing.TB, data []byte) (fast bool) {
	t.Helper()
	got, gotErr := ParsePublic(data)
	want, wantErr := parsePublicReflect(data)
	if checkPublicSize(data) == nil {
		_, err := parsePublicFast(data)
		fast = !errors.Is(err, errNotFast)
	}
	switch {
	case gotErr != nil && wantErr != nil:
		if got != nil || !errors.Is(gotErr, ErrBadPublic) || !errors.Is(wantErr, ErrBadPublic) {
			t.Fatalf("ParsePublic = %v, %v; go-tpm path = %v", got, gotErr, wantErr)
		}
		return fast
	case gotErr != nil || wantErr != nil:
		t.Fatalf("ParsePublic error %v, go-tpm path error %v (fast path: %v)", gotErr, wantErr, fast)
	}
	if !reflect.DeepEqual(got.Public, want.Public) {
		t.Fatalf("TPMTPublic differs from go-tpm's (-fast +go-tpm):\n%s",
			cmp.Diff(got.Public, want.Public, cmp.Exporter(func(reflect.Type) bool { return true })))
	}
	if !bytes.Equal(got.Bytes, want.Bytes) || !bytes.Equal(got.Bytes, data) {
		t.Fatalf("Bytes %x, go-tpm path %x, input %x", got.Bytes, want.Bytes, data)
	}
	if !bytes.Equal(got.Name, want.Name) {
		t.Fatalf("Name %x, go-tpm path %x", got.Name, want.Name)
	}
	k, ok := got.Key.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || reflect.TypeOf(got.Key) != reflect.TypeOf(want.Key) || !k.Equal(want.Key) {
		t.Fatalf("key %#v, go-tpm path %#v", got.Key, want.Key)
	}
	if !bytes.Equal(tpm2.Marshal(got.Public), data[2:]) {
		t.Fatal("accepted TPMT_PUBLIC does not marshal to the input")
	}
	return fast
}

// publicFixtures returns every *.pub file under testdata.
func publicFixtures(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".pub") {
			return err
		}
		out[path] = readFixture(t, strings.TrimPrefix(path, "testdata/"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 6 {
		t.Fatalf("found only %d public-area fixtures", len(out))
	}
	return out
}

// builtPublics returns public areas built in software, covering the templates the
// tests use and every union member the fast path decodes, plus shapes it leaves to
// go-tpm. fast says whether the fast path is expected to decode it.
func builtPublics(t testing.TB) []struct {
	name string
	data []byte
	fast bool
} {
	t.Helper()
	rk := &rsaKey(t, 2048).PublicKey
	ek := ecdhKey(t, ecdh.P256())
	withRSAScheme := func(s tpm2.TPMTRSAScheme) tpm2.TPMTPublic {
		p := rsaAK(rk)
		p.Parameters = rsaParms(tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, s, 2048)
		return p
	}
	withECC := func(f func(*tpm2.TPMSECCParms)) tpm2.TPMTPublic {
		p := eccAK(ek)
		parms, err := p.Parameters.ECCDetail()
		if err != nil {
			t.Fatal(err)
		}
		c := *parms
		f(&c)
		p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &c)
		return p
	}
	asym := func(alg tpm2.TPMAlgID, h tpm2.TPMIAlgHash) tpm2.TPMUAsymScheme {
		switch alg {
		case tpm2.TPMAlgRSAPSS:
			return tpm2.NewTPMUAsymScheme(alg, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: h})
		case tpm2.TPMAlgOAEP:
			return tpm2.NewTPMUAsymScheme(alg, &tpm2.TPMSEncSchemeOAEP{HashAlg: h})
		case tpm2.TPMAlgRSAES:
			return tpm2.NewTPMUAsymScheme(alg, &tpm2.TPMSEncSchemeRSAES{})
		case tpm2.TPMAlgECDH:
			return tpm2.NewTPMUAsymScheme(alg, &tpm2.TPMSKeySchemeECDH{HashAlg: h})
		case tpm2.TPMAlgECMQV:
			return tpm2.NewTPMUAsymScheme(alg, &tpm2.TPMSKeySchemeECMQV{HashAlg: h})
		case tpm2.TPMAlgECDAA:
			return tpm2.NewTPMUAsymScheme(alg, &tpm2.TPMSSchemeECDAA{HashAlg: h, Count: 7})
		}
		t.Fatalf("no scheme %v", alg)
		return tpm2.TPMUAsymScheme{}
	}
	kdf := func(alg tpm2.TPMAlgID) tpm2.TPMUKDFScheme {
		switch alg {
		case tpm2.TPMAlgMGF1:
			return tpm2.NewTPMUKDFScheme(alg, &tpm2.TPMSKDFSchemeMGF1{HashAlg: tpm2.TPMAlgSHA256})
		case tpm2.TPMAlgECDH:
			return tpm2.NewTPMUKDFScheme(alg, &tpm2.TPMSKDFSchemeECDH{HashAlg: tpm2.TPMAlgSHA384})
		case tpm2.TPMAlgKDF1SP80056A:
			return tpm2.NewTPMUKDFScheme(alg, &tpm2.TPMSKDFSchemeKDF1SP80056A{HashAlg: tpm2.TPMAlgSHA256})
		case tpm2.TPMAlgKDF2:
			return tpm2.NewTPMUKDFScheme(alg, &tpm2.TPMSKDFSchemeKDF2{HashAlg: tpm2.TPMAlgSHA512})
		case tpm2.TPMAlgKDF1SP800108:
			return tpm2.NewTPMUKDFScheme(alg, &tpm2.TPMSKDFSchemeKDF1SP800108{HashAlg: tpm2.TPMAlgSHA256})
		}
		t.Fatalf("no KDF %v", alg)
		return tpm2.TPMUKDFScheme{}
	}
	type built struct {
		name string
		pub  tpm2.TPMTPublic
		fast bool
	}
	list := []built{
		{"RSA-2048 EK", rsaEK(rk), true},
		{"RSA-3072 EK", rsaEK(&rsaKey(t, 3072).PublicKey), true},
		{"RSA-4096 EK", rsaEK(&rsa.PublicKey{N: new(big.Int).SetBytes(bytes.Repeat([]byte{0xff}, 512)), E: 65537}), true},
		{"P-256 EK", eccEK(ek), true},
		{"P-384 EK", eccEK(ecdhKey(t, ecdh.P384())), true},
		{"P-521 EK", eccEK(ecdhKey(t, ecdh.P521())), true},
		{"RSA AK", rsaAK(rk), true},
		{"ECC AK", eccAK(ek), true},
		{"RSA AK exponent 3", func() tpm2.TPMTPublic {
			p := rsaAK(rk)
			parms, _ := p.Parameters.RSADetail()
			c := *parms
			c.Exponent = 3
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &c)
			return p
		}(), true},
		{"reserved attribute bits", func() tpm2.TPMTPublic {
			p := eccAK(ek)
			p.ObjectAttributes.SetReservedBit(0, true)
			p.ObjectAttributes.SetReservedBit(31, true)
			p.ObjectAttributes.STClear, p.ObjectAttributes.NoDA, p.ObjectAttributes.X509Sign = true, true, true
			return p
		}(), true},
		{"SHA-384 name and policy", func() tpm2.TPMTPublic {
			p := eccAK(ek)
			p.NameAlg = tpm2.TPMAlgSHA384
			p.AuthPolicy = tpm2.TPM2BDigest{Buffer: bytes.Repeat([]byte{7}, 48)}
			return p
		}(), true},
		{"SHA-1 name", func() tpm2.TPMTPublic { p := eccAK(ek); p.NameAlg = tpm2.TPMAlgSHA1; return p }(), true},
		{"bad policy size", func() tpm2.TPMTPublic {
			p := eccAK(ek)
			p.AuthPolicy = tpm2.TPM2BDigest{Buffer: []byte{1, 2, 3}}
			return p
		}(), true},
		{"ECC point off the curve", func() tpm2.TPMTPublic {
			p := eccAK(ek)
			pt, _ := p.Unique.ECC()
			y := bytes.Clone(pt.Y.Buffer)
			y[31] ^= 1
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: pt.X, Y: tpm2.TPM2BECCParameter{Buffer: y}})
			return p
		}(), true},
		{"RSAPSS", withRSAScheme(tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSAPSS, Details: asym(tpm2.TPMAlgRSAPSS, tpm2.TPMAlgSHA384)}), true},
		{"OAEP", withRSAScheme(tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgOAEP, Details: asym(tpm2.TPMAlgOAEP, tpm2.TPMAlgSHA256)}), true},
		{"RSAES", withRSAScheme(tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSAES, Details: asym(tpm2.TPMAlgRSAES, 0)}), true},
		{"RSA key with ECDSA scheme", withRSAScheme(tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})}), true},
		{"ECDH scheme", withECC(func(c *tpm2.TPMSECCParms) {
			c.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDH, Details: asym(tpm2.TPMAlgECDH, tpm2.TPMAlgSHA256)}
		}), true},
		{"ECMQV scheme", withECC(func(c *tpm2.TPMSECCParms) {
			c.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECMQV, Details: asym(tpm2.TPMAlgECMQV, tpm2.TPMAlgSHA256)}
		}), true},
		{"ECDAA scheme", withECC(func(c *tpm2.TPMSECCParms) {
			c.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDAA, Details: asym(tpm2.TPMAlgECDAA, tpm2.TPMAlgSHA256)}
		}), true},
		{"AES-256-CTR", withECC(func(c *tpm2.TPMSECCParms) {
			c.Symmetric = aesCFB(256)
			c.Symmetric.Mode = tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCTR)
		}), true},
		{"XOR symmetric", withECC(func(c *tpm2.TPMSECCParms) {
			c.Symmetric = tpm2.TPMTSymDefObject{
				Algorithm: tpm2.TPMAlgXOR,
				KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgXOR, tpm2.TPMAlgSHA256),
				Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgXOR, tpm2.TPMSEmpty{}),
			}
		}), false},
	}
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgMGF1, tpm2.TPMAlgECDH, tpm2.TPMAlgKDF1SP80056A, tpm2.TPMAlgKDF2, tpm2.TPMAlgKDF1SP800108} {
		list = append(list, built{"KDF " + algName(alg), withECC(func(c *tpm2.TPMSECCParms) {
			c.KDF = tpm2.TPMTKDFScheme{Scheme: alg, Details: kdf(alg)}
		}), true})
	}
	var out []struct {
		name string
		data []byte
		fast bool
	}
	add := func(name string, data []byte, fast bool) {
		out = append(out, struct {
			name string
			data []byte
			fast bool
		}{name, data, fast})
	}
	for _, b := range list {
		add(b.name, marshal2B(b.pub), b.fast)
	}
	// Algorithms go-tpm cannot marshal, patched into marshalled keys: the scheme of
	// an ECC AK (offset 2+12, after type, nameAlg, attributes, empty authPolicy and a
	// NULL symmetric algorithm) and the symmetric algorithm of a P-256 EK (offset
	// 2+8+2+32).
	patch := func(b []byte, off int, alg tpm2.TPMAlgID) []byte {
		b = bytes.Clone(b)
		b[off], b[off+1] = byte(alg>>8), byte(alg)
		return b
	}
	add("ECSCHNORR scheme", patch(marshal2B(eccAK(ek)), 14, tpm2.TPMAlgECSchnorr), false)
	add("SM2 scheme", patch(marshal2B(eccAK(ek)), 14, tpm2.TPMAlgSM2), false)
	add("Camellia symmetric", patch(marshal2B(eccEK(ek)), 44, tpm2.TPMAlgCamellia), false)
	add("TDES symmetric", patch(marshal2B(eccEK(ek)), 44, tpm2.TPMAlgTDES), false)
	add("keyedHash type", patch(marshal2B(eccAK(ek)), 2, tpm2.TPMAlgKeyedHash), false)
	return out
}

// The fast path decodes the fixtures and software-built keys of every shape it knows
// to exactly what go-tpm decodes, and leaves the others to go-tpm.
func TestParsePublicFastMatchesGoTPM(t *testing.T) {
	for path, data := range publicFixtures(t) {
		t.Run(path, func(t *testing.T) {
			if !checkFastMatchesReflect(t, data) {
				t.Error("fast path did not decode a fixture")
			}
		})
	}
	for _, b := range builtPublics(t) {
		t.Run(b.name, func(t *testing.T) {
			if fast := checkFastMatchesReflect(t, b.data); fast != b.fast {
				t.Errorf("fast path decoded: %v, want %v", fast, b.fast)
			}
		})
	}
}

// Truncated, extended and altered fixtures are judged alike by both paths.
func TestParsePublicFastMutations(t *testing.T) {
	for path, data := range publicFixtures(t) {
		t.Run(path, func(t *testing.T) {
			for n := range len(data) {
				checkFastMatchesReflect(t, fixSize(data[:n]))
			}
			checkFastMatchesReflect(t, fixSize(append(bytes.Clone(data), 0)))
			for i := 2; i < len(data) && i < 80; i++ {
				for _, x := range []byte{0x01, 0x80, 0xff} {
					m := bytes.Clone(data)
					m[i] ^= x
					checkFastMatchesReflect(t, m)
				}
			}
		})
	}
}

// fixSize sets the u16 size prefix of b (if it has one) to the length that follows.
func fixSize(b []byte) []byte {
	b = bytes.Clone(b)
	if len(b) >= 2 {
		b[0], b[1] = byte((len(b)-2)>>8), byte(len(b)-2)
	}
	return b
}

// Keys a real TPM creates, for each template Keylime meets, take the fast path and
// decode as go-tpm decodes them. (swtpm refuses RSA-4096; builtPublics has one.)
func TestParsePublicFastOnSwtpm(t *testing.T) {
	tpm := startSwtpm(t)
	rsaSign := func(bits int, scheme tpm2.TPMTRSAScheme, nameAlg tpm2.TPMIAlgHash) tpm2.TPMTPublic {
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: nameAlg, ObjectAttributes: akObjectAttributes,
			Parameters: rsaParms(tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, scheme, bits),
			Unique:     tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}
	}
	eccSign := func(curve tpm2.TPMECCCurve, h tpm2.TPMIAlgHash) tpm2.TPMTPublic {
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: h, ObjectAttributes: akObjectAttributes,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, Scheme: ecdsaScheme(h),
				CurveID: curve, KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}
	}
	rsapss := tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSAPSS,
		Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSAPSS, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: tpm2.TPMAlgSHA256})}
	tests := []struct {
		name string
		pub  tpm2.TPMTPublic
	}{
		{"TCG RSA EK", tpm2.RSAEKTemplate},
		{"TCG ECC EK", tpm2.ECCEKTemplate},
		{"RSA-2048 RSASSA AK", rsaSign(2048, rsassa(tpm2.TPMAlgSHA256), tpm2.TPMAlgSHA256)},
		{"RSA-3072 RSASSA-SHA384 AK", rsaSign(3072, rsassa(tpm2.TPMAlgSHA384), tpm2.TPMAlgSHA384)},
		{"RSA-2048 RSAPSS AK", rsaSign(2048, rsapss, tpm2.TPMAlgSHA256)},
		{"P-256 ECDSA AK", eccSign(tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256)},
		{"P-384 ECDSA AK", eccSign(tpm2.TPMECCNistP384, tpm2.TPMAlgSHA384)},
		{"P-521 ECDSA AK", eccSign(tpm2.TPMECCNistP521, tpm2.TPMAlgSHA512)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tt.pub)}.Execute(tpm)
			if err != nil {
				t.Fatalf("CreatePrimary: %v", err)
			}
			defer flush(t, tpm, cp.ObjectHandle)
			data := tpm2.Marshal(cp.OutPublic)
			if !checkFastMatchesReflect(t, data) {
				t.Error("fast path did not decode the TPM's public area")
			}
			p := mustParse(t, data)
			if !bytes.Equal(p.Name, cp.Name.Buffer) {
				t.Errorf("Name %x, TPM says %x", p.Name, cp.Name.Buffer)
			}
		})
	}
}

// FuzzParsePublicFast: for any input, ParsePublic (hand decoder, or go-tpm for shapes
// it does not know) and the go-tpm path both reject it, or accept it alike.
func FuzzParsePublicFast(f *testing.F) {
	for _, data := range publicFixtures(f) {
		f.Add(data)
	}
	for _, b := range builtPublics(f) {
		f.Add(b.data)
	}
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFastMatchesReflect(t, data)
	})
}
