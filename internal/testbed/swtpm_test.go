package testbed

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// swtpmOpen connects to s with go-tpm's per-command unix socket transport.
func swtpmOpen(t *testing.T, s *SWTPM) transport.TPM {
	t.Helper()
	tpm, err := linuxudstpm.Open(s.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tpm.Close() })
	return tpm
}

// swtpmNVRead reads a whole NV index whose data is readable with its own empty password.
func swtpmNVRead(t *testing.T, tpm transport.TPM, index tpm2.TPMHandle) []byte {
	t.Helper()
	rp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(tpm)
	if err != nil {
		t.Fatalf("NVReadPublic 0x%x: %v", index, err)
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for off := uint16(0); off < pub.DataSize; {
		n := min(pub.DataSize-off, 1024)
		r, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: index, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: rp.NVName},
			Size:       n,
			Offset:     off,
		}.Execute(tpm)
		if err != nil {
			t.Fatalf("NVRead 0x%x: %v", index, err)
		}
		out = append(out, r.Data.Buffer...)
		off += n
	}
	return out
}

func swtpmReadPCR16(t *testing.T, tpm transport.TPM) []byte {
	t.Helper()
	r, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(16)},
	}}}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.PCRValues.Digests) != 1 {
		t.Fatalf("PCRRead returned %d digests", len(r.PCRValues.Digests))
	}
	return r.PCRValues.Digests[0].Buffer
}

// swtpmVerifyEKCert checks that der chains to s's CA (root + intermediate) and returns it.
func swtpmVerifyEKCert(t *testing.T, s *SWTPM, der []byte) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	// The SAN holds only a directoryName (TPM manufacturer/model/version), which Go leaves unhandled.
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions,
		func(id asn1.ObjectIdentifier) bool { return id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) })
	pools := make([]*x509.CertPool, 2)
	for i, f := range s.CACerts {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if blk, _ := pem.Decode(b); blk == nil || blk.Type != "CERTIFICATE" {
			t.Fatalf("%s: not a PEM certificate", f)
		}
		pools[i] = x509.NewCertPool()
		pools[i].AppendCertsFromPEM(b)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pools[0], Intermediates: pools[1],
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("EK cert does not chain to the CA: %v", err)
	}
	return cert
}

func TestStartSWTPMParallelUniqueEKs(t *testing.T) {
	const n = 3
	var (
		mu    sync.Mutex
		keys  = map[[32]byte]string{} // SPKI hash -> "tpm i rsa"
		cas   = map[string]bool{}
		start = time.Now()
	)
	t.Run("group", func(t *testing.T) {
		for i := range n {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				s := StartSWTPM(t)
				if len(s.Socket+".ctrl") > swtpmMaxSunPath {
					t.Errorf("socket path too long: %s", s.Socket)
				}
				tpm := swtpmOpen(t, s)
				for _, c := range []struct {
					name  string
					file  string
					index tpm2.TPMHandle
				}{
					{"rsa", s.EKCertRSA, 0x01c00002},
					{"ecc", s.EKCertECC, 0x01c00016},
				} {
					file, err := os.ReadFile(c.file)
					if err != nil {
						t.Fatal(err)
					}
					nv := swtpmNVRead(t, tpm, c.index)
					if !bytes.Equal(nv, file) {
						t.Errorf("%s: NV cert differs from %s", c.name, c.file)
					}
					cert := swtpmVerifyEKCert(t, s, nv)
					key := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
					mu.Lock()
					if other, dup := keys[key]; dup {
						t.Errorf("%s EK equals %s", c.name, other)
					}
					keys[key] = fmt.Sprintf("tpm %d %s", i, c.name)
					cas[strings.Join(s.CACerts, ",")] = true
					mu.Unlock()
				}
			})
		}
	})
	t.Logf("%d swtpms provisioned, started, checked and stopped in parallel in %v", n, time.Since(start))
	if len(keys) != 2*n {
		t.Errorf("%d distinct EKs, want %d", len(keys), 2*n)
	}
	if len(cas) != 1 {
		t.Errorf("CA sets %v, want one shared CA", cas)
	}
}

func TestSWTPMRestartKeepsState(t *testing.T) {
	s := StartSWTPM(t)
	tpm := swtpmOpen(t, s)
	ek, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(0x81010001)}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("before restart"))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: 16, Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}).Execute(tpm); err != nil {
		t.Fatal(err)
	}
	if pcr := swtpmReadPCR16(t, tpm); bytes.Equal(pcr, make([]byte, 32)) {
		t.Fatal("PCR 16 still zero after extend")
	}
	pid := s.PID()

	start := time.Now()
	s.Restart(t)
	t.Logf("restart took %v", time.Since(start))
	if s.PID() == pid || s.PID() == 0 {
		t.Errorf("pid %d after restart, was %d", s.PID(), pid)
	}
	ek2, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(0x81010001)}.Execute(tpm)
	if err != nil {
		t.Fatalf("persistent EK gone after restart: %v", err)
	}
	if !bytes.Equal(ek.Name.Buffer, ek2.Name.Buffer) {
		t.Error("persistent EK changed across restart")
	}
	file, err := os.ReadFile(s.EKCertRSA)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(swtpmNVRead(t, tpm, 0x01c00002), file) {
		t.Error("EK cert in NV changed across restart")
	}
	if pcr := swtpmReadPCR16(t, tpm); !bytes.Equal(pcr, make([]byte, 32)) {
		t.Errorf("PCR 16 = %x after restart, want zeros", pcr)
	}

	s.Stop()
	s.Stop() // idempotent
	if s.PID() != 0 {
		t.Error("PID after Stop")
	}
	if err := swtpmPing(s.Socket); err == nil {
		t.Error("swtpm still answers after Stop")
	}
}

func TestProvisionWithoutStart(t *testing.T) {
	s := ProvisionSWTPM(t, WithPCRBanks("sha256"))
	if s.PID() != 0 {
		t.Fatal("ProvisionSWTPM started swtpm")
	}
	if err := swtpmPing(s.Socket); err == nil {
		t.Fatal("socket answers before start")
	}
	s.Restart(t)
	tpm := swtpmOpen(t, s)
	// Only sha256 is active: a sha1 PCR read selects nothing.
	r, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA1, PCRSelect: tpm2.PCClientCompatible.PCRs(0)},
	}}}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.PCRValues.Digests) != 0 {
		t.Errorf("sha1 bank active though only sha256 was asked for")
	}
	if len(swtpmReadPCR16(t, tpm)) != 32 {
		t.Error("sha256 bank not readable")
	}
}

func TestSpec(t *testing.T) {
	s := &SWTPM{Socket: "/tmp/x/sock"}
	if got := s.Spec(); got != "swtpm:/tmp/x/sock" {
		t.Errorf("Spec() = %q", got)
	}
}
