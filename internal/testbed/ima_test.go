package testbed

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/tpm/device"
)

// TestFakeIMAOnSWTPM writes IMA entries of every kind through FakeIMA into a fresh swtpm, reads
// PCR 10 back through a second tpm/device connection, and checks that policy/ima replays the log
// file to the same value in both banks and attests it against a policy (learned key included).
func TestFakeIMAOnSWTPM(t *testing.T) {
	s := StartSWTPM(t)
	writer, err := device.Open(s.Spec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Close() })
	banks := s.ActiveBanks()
	if len(banks) != 2 {
		t.Fatalf("banks %v", banks)
	}
	f, err := NewFakeIMA(writer, filepath.Join(t.TempDir(), "ascii_runtime_measurements"), banks)
	if err != nil {
		t.Fatal(err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "ima"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	app := []byte("#!/bin/sh\necho signed\n")
	sig, err := SignIMA(key, app)
	if err != nil {
		t.Fatal(err)
	}

	pol := ima.EmptyRuntimePolicy()
	pol.Meta.Generator = ima.GeneratorLegacyAllowList
	allow := func(path string, content []byte) {
		d := sha256.Sum256(content)
		pol.Digests[path] = append(pol.Digests[path], hex.EncodeToString(d[:]))
	}
	steps := []func() (string, error){
		func() (string, error) { return f.MeasureBootAggregate(sha256.Sum256([]byte("boot"))) },
		func() (string, error) {
			allow("/usr/bin/true", []byte("true"))
			return f.Measure("/usr/bin/true", []byte("true"))
		},
		func() (string, error) {
			allow("/opt/my_app/run.sh", []byte("run"))
			return f.Measure("/opt/my app/run.sh", []byte("run"))
		},
		func() (string, error) {
			d := sha256.Sum256(cert)
			pol.Keyrings[".ima"] = []string{hex.EncodeToString(d[:])}
			return f.MeasureBuffer(".ima", cert)
		},
		func() (string, error) { return f.MeasureSigned("/usr/bin/signed", app, sig) },
		func() (string, error) {
			allow("/usr/bin/plain", []byte("plain"))
			return f.MeasureSigned("/usr/bin/plain", []byte("plain"), nil)
		},
		func() (string, error) { return f.Violation("/var/log/messages") },
	}
	allow("boot_aggregate", []byte("boot"))
	for i, step := range steps {
		if _, err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if f.Entries() != len(steps) {
		t.Fatalf("%d entries", f.Entries())
	}

	reader, err := device.Open(s.Spec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	raw, err := os.ReadFile(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	replayed, err := ima.Replay(bytes.NewReader(raw), crypto.SHA1, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	quoted := map[crypto.Hash][]byte{}
	for _, b := range banks {
		h, _ := b.Hash()
		got, err := reader.PCRRead(b, []int{10})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[10], replayed[h]) {
			t.Errorf("%v PCR 10: TPM %x, replay of the log %x", h, got[10], replayed[h])
		}
		if bytes.Equal(got[10], make([]byte, h.Size())) {
			t.Errorf("%v PCR 10 was never extended", h)
		}
		quoted[h] = got[10]
	}

	c, err := ima.Compile(pol)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		res := ima.Attest(ima.State{}, ima.Evidence{Log: raw, Bank: h, PCR10: quoted[h]}, c, ima.Options{})
		if len(res.Failures) != 0 || res.Matched != len(steps) {
			t.Fatalf("%v: %v (matched %d)", h, res.Failures, res.Matched)
		}
		if res.State.Keyrings[".ima"].Len() != 1 {
			t.Fatalf("%v: key not learned", h)
		}
	}
	// Without the key on the keyring list the signed file is judged by digest, and fails.
	pol.Keyrings = map[string][]string{}
	c2, err := ima.Compile(pol)
	if err != nil {
		t.Fatal(err)
	}
	res := ima.Attest(ima.State{}, ima.Evidence{Log: raw, Bank: crypto.SHA256, PCR10: quoted[crypto.SHA256]}, c2, ima.Options{})
	if len(res.Failures) != 2 {
		t.Fatalf("want the key and the signed file to fail: %v", res.Failures)
	}
}

// failingExtender injects a TPM fault.
type failingExtender struct{}

func (failingExtender) PCRExtend(int, tpm2.TPMAlgID, []byte) error { return errors.New("TPM fault") }

// TestFakeIMAErrors: bad banks are refused and a TPM fault is reported (the line, as with the kernel,
// is already logged).
func TestFakeIMAErrors(t *testing.T) {
	if _, err := NewFakeIMA(nil, filepath.Join(t.TempDir(), "log"), nil); err == nil {
		t.Fatal("no banks accepted")
	}
	if _, err := NewFakeIMA(nil, filepath.Join(t.TempDir(), "log"), []tpm2.TPMAlgID{tpm2.TPMAlgRSA}); err == nil {
		t.Fatal("RSA bank accepted")
	}
	f, err := NewFakeIMA(failingExtender{}, filepath.Join(t.TempDir(), "log"), []tpm2.TPMAlgID{tpm2.TPMAlgSHA256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Measure("/x", []byte("x")); err == nil {
		t.Fatal("TPM fault not reported")
	}
	if raw, _ := os.ReadFile(f.Path); f.Entries() != 1 || !bytes.HasSuffix(raw, []byte(" /x\n")) {
		t.Fatalf("log %q", raw)
	}
}
