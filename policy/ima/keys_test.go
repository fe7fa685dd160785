package ima

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"testing"
)

func TestKeyIDs(t *testing.T) {
	// keylime's test keys: rsa2048pub.pem is 0xf3452d23; the secp256k1 key 0x531f4025 (a curve Go lacks).
	pub, id, err := ParsePublicKey(readFile(t, "testdata/keylime/rsa2048pub.pem"))
	if err != nil || id != 0 {
		t.Fatal(err, id)
	}
	if k, err := KeyIDv2(pub); err != nil || k != 0xf3452d23 {
		t.Fatalf("%08x %v", k, err)
	}
	if _, _, err := ParsePublicKey(readFile(t, "testdata/keylime/secp256k1.pem")); !errors.Is(err, ErrUnsupportedCurve) {
		t.Fatalf("secp256k1: %v", err)
	}
	ring, warnings, err := ParseVerificationKeys(keylimeKeyringString)
	if err != nil || ring.Len() != 1 || len(warnings) != 1 {
		t.Fatalf("%v %d %q", err, ring.Len(), warnings)
	}
	// The stored form is keylime's, also when JSON-encoded twice.
	var doc map[string]any
	if err := json.Unmarshal([]byte(ring.String()), &doc); err != nil || len(doc["pubkeys"].([]any)) != 1 || doc["keyids"].([]any)[0].(float64) != 4081397027 {
		t.Fatalf("%s", ring)
	}
	twice, _ := json.Marshal(ring.String())
	if r2, _, err := ParseVerificationKeys(string(twice)); err != nil || r2.String() != ring.String() {
		t.Fatalf("%v %s", err, r2)
	}
	if r, _, err := ParseVerificationKeys(""); err != nil || r.Len() != 0 {
		t.Fatal(err)
	}
	// keyids given as 0 (or missing) are computed.
	k := ecKey(t, "P-256")
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	doc2, _ := json.Marshal(map[string]any{"pubkeys": [][]byte{der}, "keyids": []int{}})
	r, _, err := ParseVerificationKeys(string(doc2))
	if err != nil || r.Keys()[0].ID != keyIDByHand(t, &k.PublicKey) {
		t.Fatalf("%v %v", err, r.Keys())
	}
}

func TestParsePublicKeyForms(t *testing.T) {
	ec := ecKey(t, "P-256")
	rsa := rsaKey(t)
	spki, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(ec)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	cert := selfSignedCert(t, ec, []byte{9, 9, 0xca, 0xfe, 0xba, 0xbe})
	p := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	for _, c := range []struct {
		name string
		data []byte
		rsa  bool
		id   uint32
	}{
		{"DER certificate with SKID", cert, false, 0xcafebabe},
		{"PEM certificate", p("CERTIFICATE", cert), false, 0xcafebabe},
		{"DER SPKI", spki, false, 0},
		{"PEM SPKI", p("PUBLIC KEY", spki), false, 0},
		{"DER PKCS#1 RSA public key", x509.MarshalPKCS1PublicKey(&rsa.PublicKey), true, 0},
		{"PEM PKCS#1 RSA public key", p("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsa.PublicKey)), true, 0},
		{"DER PKCS#8 private key", pkcs8, false, 0},
		{"PEM SEC1 private key", p("EC PRIVATE KEY", sec1), false, 0},
		{"PEM PKCS#1 private key", p("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa)), true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			pub, id, err := ParsePublicKey(c.data)
			if err != nil || id != c.id {
				t.Fatalf("%v, id %08x", err, id)
			}
			if _, isEC := pub.(*ecdsa.PublicKey); isEC == c.rsa {
				t.Fatalf("got %T", pub)
			}
		})
	}
	for _, data := range [][]byte{nil, []byte("root=/dev/sda"), []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")} {
		if _, _, err := ParsePublicKey(data); !errors.Is(err, ErrNotAKey) {
			t.Fatalf("%q: %v", data, err)
		}
	}
	// A certificate for a secp256k1 key is a key Go cannot use (not "not a key").
	var c certASN1
	if _, err := asn1.Unmarshal(cert, &c); err != nil {
		t.Fatal(err)
	}
	// keylime's secp256k1 public key (the second key of IMA_KEYRING_STRING).
	k1spki := mustB64(t, "MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEnNH3Y/xOTwRRd8D6hpodRLnVx71qDTLvJHouno7nU7JSzcXWN1PxK+HQEh1V7sMdwBER4KFKE635JTv6C+BRBg==")
	if _, _, err := ParsePublicKey(k1spki); !errors.Is(err, ErrUnsupportedCurve) {
		t.Fatalf("secp256k1 SPKI: %v", err)
	}
	if _, err := asn1.Unmarshal(k1spki, &c.TBS.PublicKey); err != nil {
		t.Fatal(err)
	}
	k1cert, err := asn1.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ParsePublicKey(k1cert); !errors.Is(err, ErrUnsupportedCurve) {
		t.Fatalf("secp256k1 certificate: %v", err)
	}
	// Such a key on a keyring is judged by the keyrings list and not learned.
	line, _ := bufLine(".ima", k1cert)
	runEntryCases(t, []entryCase{
		{name: "secp256k1 key listed", lines: []string{line}, policy: func(p *RuntimePolicy) {
			e, _ := ParseLine([]byte(line))
			p.Keyrings[".ima"] = []string{hexOf(e.Digest)}
		}, check: func(t *testing.T, res Result) {
			if len(res.State.Keyrings) != 0 {
				t.Fatal("learned")
			}
		}},
		{name: "secp256k1 key not listed", lines: []string{line}, want: []string{EventNotInPolicy}},
	})
}

func hexOf(b []byte) string { return hexList(string(append([]byte{byte(len(b))}, b...)))[0] }

func TestSignatureHeader(t *testing.T) {
	sig, err := SignatureV2("sha256", 0x01020304, []byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	h, s, err := ParseSignature(sig)
	if err != nil || h != (SignatureHeader{Type: 3, Version: 2, HashAlgo: 4, KeyID: 0x01020304, Size: 3}) || string(s) != "\x01\x02\x03" {
		t.Fatalf("%+v %v", h, err)
	}
	for name, bad := range map[string][]byte{
		"short":     sig[:8],
		"type 4":    append([]byte{4}, sig[1:]...),
		"version 1": append([]byte{3, 1}, sig[2:]...),
		"size":      sig[:len(sig)-1],
	} {
		if _, _, err := ParseSignature(bad); !errors.Is(err, ErrMalformedSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := VerifySignature(append([]byte{3, 2, 99}, sig[3:]...), "sha256", make([]byte, 32)); !errors.Is(err, ErrSignatureHash) {
		t.Errorf("unknown hash: %v", err)
	}
	if err := VerifySignature(sig, "sha256", make([]byte, 32), NewKeyring()); !errors.Is(err, ErrUnknownSignatureKey) {
		t.Errorf("no key: %v", err)
	}
	if _, err := SignatureV2("streebog", 1, nil); err == nil {
		t.Error("unknown algorithm accepted")
	}
	// keylime's RSA-signed /usr/bin/dd verifies with rsa2048pub.pem.
	e, err := ParseLine([]byte(keylimeSigRSA))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := ParseKeys(readFile(t, "testdata/keylime/rsa2048pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(e.Sig, e.DigestAlg, e.Digest, ring); err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(e.Sig, e.DigestAlg, make([]byte, 32), ring); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other digest: %v", err)
	}
}
