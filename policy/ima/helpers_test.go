package ima

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"
)

// The helpers below build template data and log lines independently of the package: with
// bytes.Buffer and binary.Write, one field at a time, and hash through hash.Hash.

func le32(b *bytes.Buffer, n int) {
	if err := binary.Write(b, binary.LittleEndian, uint32(n)); err != nil {
		panic(err)
	}
}

// tdDigest writes a d-ng field: length, "algo", ':', NUL, digest.
func tdDigest(b *bytes.Buffer, algo string, digest []byte) {
	le32(b, len(algo)+2+len(digest))
	b.WriteString(algo)
	b.Write([]byte{':', 0})
	b.Write(digest)
}

// tdName writes an n-ng field.
func tdName(b *bytes.Buffer, name string) {
	le32(b, len(name)+1)
	b.WriteString(name)
	b.WriteByte(0)
}

// tdBytes writes a sig/buf/modsig field.
func tdBytes(b *bytes.Buffer, v []byte) {
	le32(b, len(v))
	b.Write(v)
}

// tdLegacy is the "ima" template's data: digest then the name in a zeroed 256-byte field.
func tdLegacy(digest []byte, name string) []byte {
	var field [256]byte
	copy(field[:], name)
	return append(append([]byte{}, digest...), field[:]...)
}

func hashOf(h crypto.Hash, data []byte) []byte {
	w := h.New()
	w.Write(data)
	return w.Sum(nil)
}

// logLine formats a line: "10 <sha1(data)> <template> <fields>".
func logLine(pcr int, data []byte, template string, fields ...string) string {
	return fmt.Sprintf("%d %x %s %s", pcr, hashOf(crypto.SHA1, data), template, strings.Join(fields, " "))
}

// fileDigest is SHA-256 of a file's content.
func fileDigest(content string) []byte {
	s := sha256.Sum256([]byte(content))
	return s[:]
}

// ngLine returns an ima-ng line and its template data for a file.
func ngLine(path, content string) (string, []byte) {
	d := fileDigest(content)
	var b bytes.Buffer
	tdDigest(&b, "sha256", d)
	tdName(&b, path)
	return logLine(10, b.Bytes(), "ima-ng", fmt.Sprintf("sha256:%x", d), path), b.Bytes()
}

// sigLine returns an ima-sig line (sig may be empty) and its template data.
func sigLine(path string, digest, sig []byte) (string, []byte) {
	var b bytes.Buffer
	tdDigest(&b, "sha256", digest)
	tdName(&b, path)
	tdBytes(&b, sig)
	return logLine(10, b.Bytes(), "ima-sig", fmt.Sprintf("sha256:%x", digest), path, hex.EncodeToString(sig)), b.Bytes()
}

// bufLine returns an ima-buf line for a buffer (its digest is SHA-256 of the buffer).
func bufLine(name string, buf []byte) (string, []byte) {
	d := sha256.Sum256(buf)
	var b bytes.Buffer
	tdDigest(&b, "sha256", d[:])
	tdName(&b, name)
	tdBytes(&b, buf)
	return logLine(10, b.Bytes(), "ima-buf", fmt.Sprintf("sha256:%x", d), name, hex.EncodeToString(buf)), b.Bytes()
}

// replayByHand extends each template data (nil = violation) into a PCR of bank h.
func replayByHand(h crypto.Hash, datas [][]byte) []byte {
	pcr := make([]byte, h.Size())
	for _, d := range datas {
		var v []byte
		if d == nil {
			v = bytes.Repeat([]byte{0xff}, h.Size())
		} else {
			v = hashOf(h, d)
		}
		pcr = hashOf(h, append(append([]byte{}, pcr...), v...))
	}
	return pcr
}

// join makes a log text from lines.
func join(lines ...string) []byte {
	if len(lines) == 0 {
		return nil
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readPCRs parses a capture's pcrs.txt: "<bank> <index> <HEX>".
func readPCRs(t testing.TB, name string) map[string]map[string][]byte {
	t.Helper()
	out := map[string]map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, name)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			t.Fatalf("bad line %q", sc.Text())
		}
		if out[f[0]] == nil {
			out[f[0]] = map[string][]byte{}
		}
		out[f[0]][f[1]] = mustHex(t, f[2])
	}
	return out
}

// Keys are generated once per test binary: RSA generation is slow.
var (
	testRSAKey *rsa.PrivateKey
	testECKeys = map[string]*ecdsa.PrivateKey{}
)

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	if testRSAKey == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		testRSAKey = k
	}
	return testRSAKey
}

func ecKey(t testing.TB, c string) *ecdsa.PrivateKey {
	t.Helper()
	if k := testECKeys[c]; k != nil {
		return k
	}
	var k *ecdsa.PrivateKey
	var err error
	switch c {
	case "P-256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "P-384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "P-521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		t.Fatalf("curve %s", c)
	}
	if err != nil {
		t.Fatal(err)
	}
	testECKeys[c] = k
	return k
}

// keyIDByHand computes keyid v2 the long way: SHA-1 over PKCS#1 (RSA) or 04‖X‖Y (EC).
func keyIDByHand(t testing.TB, pub crypto.PublicKey) uint32 {
	t.Helper()
	var b []byte
	switch k := pub.(type) {
	case *rsa.PublicKey:
		b = x509.MarshalPKCS1PublicKey(k)
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		b = append([]byte{4}, k.X.FillBytes(make([]byte, size))...) //nolint:staticcheck // independent of the package's ECDH path
		b = append(b, k.Y.FillBytes(make([]byte, size))...)         //nolint:staticcheck
	default:
		t.Fatalf("key %T", pub)
	}
	s := sha1.Sum(b)
	return uint32(s[16])<<24 | uint32(s[17])<<16 | uint32(s[18])<<8 | uint32(s[19])
}

// imaSign signs a file digest with key and returns the ima-sig field (signature_v2_hdr ‖ sig).
func imaSign(t testing.TB, key crypto.Signer, digest []byte) []byte {
	t.Helper()
	sig, err := key.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.Write([]byte{3, 2, 4}) // EVM_IMA_XATTR_DIGSIG, version 2, HASH_ALGO_SHA256
	if err := binary.Write(&b, binary.BigEndian, keyIDByHand(t, key.Public())); err != nil {
		t.Fatal(err)
	}
	if err := binary.Write(&b, binary.BigEndian, uint16(len(sig))); err != nil {
		t.Fatal(err)
	}
	b.Write(sig)
	return b.Bytes()
}

// selfSignedCert returns a DER certificate for key, with a Subject Key Identifier when skid is set.
func selfSignedCert(t testing.TB, key crypto.Signer, skid []byte) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ima test key"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		SubjectKeyId: skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// policyWith returns a valid policy with the given digests (path → hex digests).
func policyWith(digests map[string][]string) *RuntimePolicy {
	p := EmptyRuntimePolicy()
	p.Meta.Generator = GeneratorLegacyAllowList
	for k, v := range digests {
		p.Digests[k] = v
	}
	return p
}

// eventIDs lists the failures' event ids.
func eventIDs(res Result) []string {
	var out []string
	for _, f := range res.Failures {
		out = append(out, f.EventID)
	}
	return out
}
