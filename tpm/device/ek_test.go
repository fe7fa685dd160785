package device_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keylime-go/keylime/tpm/device"
)

// nvChunk is the largest NV write the tests do at once (TPM_PT_NV_BUFFER_MAX of swtpm).
const nvChunk = 1024

func ptr[T any](v T) *T { return &v }

// certFile reads a DER certificate written by swtpm_setup.
func certFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEKProvisioned(t *testing.T) {
	sw, tpm := open(t)
	for _, tc := range []struct {
		alg        device.KeyAlg
		certFile   string
		handle     tpm2.TPMHandle
		certIndex  tpm2.TPMHandle
		template   string
		curve      elliptic.Curve
		policyKind string
	}{
		{device.RSA, sw.EKCertRSA, 0x81010001, 0x01c00002, "L-1", nil, "policyA"},
		{device.ECC, sw.EKCertECC, 0x81010016, 0x01c00016, "H-3", elliptic.P384(), "policyB"},
	} {
		t.Run(tc.alg.String(), func(t *testing.T) {
			start := time.Now()
			ek, err := tpm.EK(tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("EK(%v) with certificate: %v", tc.alg, time.Since(start))
			if !bytes.Equal(ek.Cert, certFile(t, tc.certFile)) {
				t.Error("Cert differs from the certificate swtpm_setup wrote")
			}
			if !ek.Persistent || ek.Handle != tc.handle || ek.CertIndex != tc.certIndex || ek.Template != tc.template {
				t.Errorf("EK persistent=%v handle=0x%x index=0x%x template=%s", ek.Persistent, ek.Handle, ek.CertIndex, ek.Template)
			}
			if ek.AuthKind() != tc.policyKind {
				t.Errorf("auth kind %s, want %s", ek.AuthKind(), tc.policyKind)
			}
			cert, err := x509.ParseCertificate(ek.Cert)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := ek.PublicKey()
			if err != nil {
				t.Fatal(err)
			}
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
				t.Error("EK public key differs from the certificate's")
			}
			if tc.curve != nil && pub.(*ecdsa.PublicKey).Curve != tc.curve {
				t.Errorf("curve %v", pub.(*ecdsa.PublicKey).Curve.Params().Name)
			}
			checkPublicBytes(t, ek.PublicBytes, &ek.Public, ek.Name)
			if blk := ek.CertPEM(); !bytes.Contains(blk, []byte("BEGIN CERTIFICATE")) {
				t.Error("CertPEM is not PEM")
			}
			// The template that goes with the certificate index recreates exactly this key.
			cp, err := tpm2.CreatePrimary{
				PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
				InPublic:      tpm2.New2B(device.TemplatePublic(tc.template)),
			}.Execute(tpm.Transport())
			if err != nil {
				t.Fatal(err)
			}
			defer tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(tpm.Transport())
			if !bytes.Equal(cp.Name.Buffer, ek.Name) {
				t.Errorf("template %s gives Name %x, persistent EK has %x", tc.template, cp.Name.Buffer, ek.Name)
			}
			again, err := tpm.EK(tc.alg)
			if err != nil || again != ek {
				t.Errorf("second EK call: %p %v, want the cached %p", again, err, ek)
			}
		})
	}
}

// checkPublicBytes checks that b is the TPM2B_PUBLIC of pub and that name is its Name.
func checkPublicBytes(t *testing.T, b []byte, pub *tpm2.TPMTPublic, name []byte) {
	t.Helper()
	p2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b)
	if err != nil {
		t.Fatal(err)
	}
	if int(b[0])<<8|int(b[1]) != len(b)-2 {
		t.Errorf("PublicBytes size prefix %x for %d bytes", b[:2], len(b))
	}
	got, err := p2b.Contents()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tpm2.Marshal(*got), tpm2.Marshal(*pub)) {
		t.Error("PublicBytes do not hold Public")
	}
	n, err := tpm2.ObjectName(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(n.Buffer, name) {
		t.Errorf("Name %x, want %x", name, n.Buffer)
	}
}

// undefineNV removes an NV index with platform authorisation (empty on swtpm).
func undefineNV(t testing.TB, tpm transport.TPM, index tpm2.TPMHandle) {
	t.Helper()
	rp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.NVUndefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: index, Name: rp.NVName},
	}).Execute(tpm); err != nil {
		t.Fatalf("undefine NV 0x%x: %v", index, err)
	}
}

// evict removes a persistent object (swtpm_setup persists the EKs with platform authorisation).
func evict(t testing.TB, tpm transport.TPM, h tpm2.TPMHandle) {
	t.Helper()
	rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: h, Name: rp.Name},
		PersistentHandle: h,
	}).Execute(tpm); err != nil {
		t.Fatalf("evict 0x%x: %v", h, err)
	}
}

// writeNV defines index (platform, AUTHREAD with an empty password, like an EK certificate index)
// with size bytes and writes data at its start.
func writeNV(t *testing.T, tpm transport.TPM, index tpm2.TPMHandle, data []byte, size int) {
	t.Helper()
	pub := tpm2.TPMSNVPublic{
		NVIndex: index,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			PPWrite: true, PPRead: true, OwnerRead: true, AuthRead: true, NoDA: true, PlatformCreate: true,
			NT: tpm2.TPMNTOrdinary,
		},
		DataSize: uint16(size),
	}
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(pub),
	}).Execute(tpm); err != nil {
		t.Fatalf("define NV 0x%x: %v", index, err)
	}
	padded := make([]byte, size)
	copy(padded, data)
	nvName, err := tpm2.NVName(&pub)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < size; off += nvChunk {
		end := min(off+nvChunk, size)
		if _, err := (tpm2.NVWrite{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: *nvName},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: padded[off:end]},
			Offset:     uint16(off),
		}).Execute(tpm); err != nil {
			t.Fatalf("write NV 0x%x: %v", index, err)
		}
		// Once written, the index Name changes (TPMA_NV_WRITTEN).
		rp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(tpm)
		if err != nil {
			t.Fatal(err)
		}
		nvName = &rp.NVName
	}
}

// issueCert makes a certificate for key signed by a throwaway CA.
func issueCert(t *testing.T, key crypto.PublicKey) []byte {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "test EK"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// createPrimary creates a transient key from tmpl in the endorsement hierarchy.
func createPrimary(t *testing.T, tpm transport.TPM, tmpl tpm2.TPMTPublic) (*tpm2.CreatePrimaryResponse, crypto.PublicKey) {
	t.Helper()
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cp.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	return cp, k
}

// TestEKOtherProvisioning rewrites the swtpm's EK certificates and persistent keys to exercise
// the other ways a TPM may come: no certificate at all, a high-range certificate (padded index),
// and a certificate that belongs to no key of the TPM.
func TestEKOtherProvisioning(t *testing.T) {
	for _, tc := range []struct {
		name string
		alg  device.KeyAlg
		// prepare changes the TPM and returns the certificate EK should find (nil for none).
		prepare    func(t *testing.T, tpm transport.TPM) []byte
		template   string
		persistent bool
		auth       string
		err        error
	}{
		{"RSA without cert uses the persistent L-1 key", device.RSA, func(t *testing.T, tpm transport.TPM) []byte {
			undefineNV(t, tpm, 0x01c00002)
			return nil
		}, "L-1", true, "policyA", nil},
		{"RSA without cert or persistent key creates L-1", device.RSA, func(t *testing.T, tpm transport.TPM) []byte {
			undefineNV(t, tpm, 0x01c00002)
			evict(t, tpm, 0x81010001)
			return nil
		}, "L-1", false, "policyA", nil},
		{"ECC without certs creates L-2 P-256", device.ECC, func(t *testing.T, tpm transport.TPM) []byte {
			undefineNV(t, tpm, 0x01c00016)
			return nil
		}, "L-2", false, "policyA", nil},
		{"RSA high-range H-1 cert in a padded index", device.RSA, func(t *testing.T, tpm transport.TPM) []byte {
			undefineNV(t, tpm, 0x01c00002)
			cp, key := createPrimary(t, tpm, device.TemplatePublic("H-1"))
			tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(tpm)
			cert := issueCert(t, key)
			writeNV(t, tpm, 0x01c00012, cert, len(cert)+300)
			return cert
		}, "H-1", false, "policyB", nil},
		{"ECC low-range L-2 cert wins over H-3", device.ECC, func(t *testing.T, tpm transport.TPM) []byte {
			cp, key := createPrimary(t, tpm, tpm2.ECCEKTemplate)
			tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(tpm)
			cert := issueCert(t, key)
			writeNV(t, tpm, 0x01c0000a, cert, len(cert))
			return cert
		}, "L-2", false, "policyA", nil},
		{"ECC H-2 P-256 cert", device.ECC, func(t *testing.T, tpm transport.TPM) []byte {
			cp, key := createPrimary(t, tpm, device.TemplatePublic("H-2"))
			tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(tpm)
			cert := issueCert(t, key)
			writeNV(t, tpm, 0x01c00014, cert, len(cert))
			return cert
		}, "H-2", false, "policyB", nil},
		{"RSA cert for a foreign key", device.RSA, func(t *testing.T, tpm transport.TPM) []byte {
			undefineNV(t, tpm, 0x01c00002)
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			cert := issueCert(t, &key.PublicKey)
			writeNV(t, tpm, 0x01c00012, cert, len(cert))
			return cert
		}, "", false, "", device.ErrEKMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, tpm := open(t)
			want := tc.prepare(t, tpm.Transport())
			ek, err := tpm.EK(tc.alg)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("EK: %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ek.Cert, want) {
				t.Errorf("Cert = %d bytes, want %d", len(ek.Cert), len(want))
			}
			if ek.Template != tc.template || ek.Persistent != tc.persistent || ek.AuthKind() != tc.auth {
				t.Errorf("template %s persistent %v auth %s, want %s %v %s", ek.Template, ek.Persistent, ek.AuthKind(),
					tc.template, tc.persistent, tc.auth)
			}
			if !device.SameTemplate(&ek.Public, ptr(device.TemplatePublic(tc.template))) {
				t.Error("EK public area does not come from its template")
			}
			checkPublicBytes(t, ek.PublicBytes, &ek.Public, ek.Name)
			// The EK works as the AK's parent and for activation, whatever its policy.
			ak, _, err := tpm.LoadOrCreateAK(t.TempDir(), ek, device.ECC)
			if err != nil {
				t.Fatal(err)
			}
			activate(t, tpm, ek, ak)
		})
	}
}
