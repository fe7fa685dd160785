package device_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/tpm/device"
)

// open starts a provisioned swtpm and opens it; both are closed when the test ends.
func open(t testing.TB) (*testbed.SWTPM, *device.TPM) {
	t.Helper()
	sw := testbed.StartSWTPM(t)
	return sw, openSpec(t, sw.Spec())
}

func openSpec(t testing.TB, spec string) *device.TPM {
	t.Helper()
	tpm, err := device.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tpm.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return tpm
}

func TestOpenErrors(t *testing.T) {
	regular := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		spec    string
		is      error
		message string
	}{
		{"missing device", "/dev/tpmrm0-does-not-exist", fs.ErrNotExist, "open /dev/tpmrm0-does-not-exist: no such file or directory"},
		{"regular file", regular, device.ErrNotDevice, "not a device file"},
		{"unknown scheme", "tcp:127.0.0.1:2321", device.ErrBadSpec, "unsupported TPM address"},
		{"swtpm without path", "swtpm:", device.ErrBadSpec, "needs a socket path"},
		{"swtpm socket missing", "swtpm:/nonexistent/sock", fs.ErrNotExist, "dial unix /nonexistent/sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpm, err := device.Open(tc.spec)
			if err == nil {
				tpm.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("error %q does not mention %q", err, tc.message)
			}
		})
	}
	if _, err := os.Stat(device.DefaultDevice); errors.Is(err, fs.ErrNotExist) {
		_, err := device.Open("")
		if err == nil || !strings.Contains(err.Error(), "open /dev/tpmrm0: no such file or directory") {
			t.Errorf("device.Open(\"\") without a TPM: %v", err)
		}
	}
}

func TestOpenFlushesLeakedHandles(t *testing.T) {
	sw := testbed.StartSWTPM(t)
	raw, err := linuxudstpm.Open(sw.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for range 2 {
		if _, err := (tpm2.CreatePrimary{
			PrimaryHandle: tpm2.TPMRHOwner,
			InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
		}).Execute(raw); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := (tpm2.StartAuthSession{
		TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull, SessionType: tpm2.TPMSEHMAC,
		Symmetric: tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull}, AuthHash: tpm2.TPMAlgSHA256,
		NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)},
	}).Execute(raw); err != nil {
		t.Fatal(err)
	}
	count := func(first uint32) int {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: first, PropertyCount: 64}.Execute(raw)
		if err != nil {
			t.Fatal(err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatal(err)
		}
		return len(hs.Handle)
	}
	if n := count(0x80000000); n != 2 {
		t.Fatalf("%d transient objects before Open, want 2", n)
	}
	if n := count(0x02000000); n != 1 {
		t.Fatalf("%d sessions before Open, want 1", n)
	}
	tpm := openSpec(t, sw.Spec())
	if _, err := tpm.PCRRead(tpm2.TPMAlgSHA256, []int{0}); err != nil {
		t.Fatal(err)
	}
	tpm.Close() // swtpm serves one connection at a time
	if n := count(0x80000000); n != 0 {
		t.Errorf("%d transient objects after Open, want 0", n)
	}
	if n := count(0x02000000); n != 0 {
		t.Errorf("%d sessions after Open, want 0", n)
	}
}

func TestClosed(t *testing.T) {
	_, tpm := open(t)
	if err := tpm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tpm.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := tpm.EK(device.RSA); !errors.Is(err, device.ErrClosed) {
		t.Errorf("EK after Close: %v", err)
	}
	if _, err := tpm.PCRRead(tpm2.TPMAlgSHA256, []int{0}); !errors.Is(err, device.ErrClosed) {
		t.Errorf("PCRRead after Close: %v", err)
	}
}

func TestReconnectAfterSWTPMRestart(t *testing.T) {
	sw, tpm := open(t)
	sw.Restart(t)
	// The first command may hit the dead connection; the transport then dials again.
	var err error
	for range 2 {
		if _, err = tpm.PCRRead(tpm2.TPMAlgSHA256, []int{16}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("PCRRead after swtpm restart: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	_, tpm := open(t)
	ek, err := tpm.EK(device.RSA)
	if err != nil {
		t.Fatal(err)
	}
	ak, _, err := tpm.LoadOrCreateAK(t.TempDir(), ek, device.ECC)
	if err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			d := sha256.Sum256([]byte{byte(w)})
			for range rounds {
				if err := tpm.PCRExtend(23, tpm2.TPMAlgSHA256, d[:]); err != nil {
					errs <- err
					return
				}
				q, err := tpm.Quote(ak, []byte("nonce"), tpm2.TPMAlgSHA256, allPCRs)
				if err != nil {
					errs <- err
					return
				}
				if len(q.PCRs) != 24 {
					errs <- errors.New("quote without 24 PCRs")
					return
				}
				if _, err := tpm.EK(device.RSA); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d extend+quote+EK rounds from %d goroutines in %v", workers*rounds, workers, time.Since(start))
	// The extends' order is up to the scheduler, so only check that PCR 23 left its reset value.
	v, err := tpm.PCRRead(tpm2.TPMAlgSHA256, []int{23})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(v[23], make([]byte, 32)) {
		t.Error("PCR 23 unchanged")
	}
}

// TestBusy: the time spent waiting for the TPM grows with each command and stays below the caller's
// wall time.
func TestBusy(t *testing.T) {
	_, tpm := open(t)
	before := tpm.Busy()
	start := time.Now()
	for range 5 {
		if _, err := tpm.PCRRead(tpm2.TPMAlgSHA256, []int{0, 1, 2}); err != nil {
			t.Fatal(err)
		}
	}
	wall, busy := time.Since(start), tpm.Busy()-before
	if busy <= 0 || busy > wall {
		t.Fatalf("busy %v for 5 PCR reads taking %v", busy, wall)
	}
}
