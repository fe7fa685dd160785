package softagent_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/tpm"
)

// A reboot resets the TPM (resetCount + 1, restartCount 0, PCRs back to power-on values) and restarts
// the IMA log; the verifier's next request from its old position gets the whole new log, which replays
// from zero to the quoted PCR 10.
func TestReboot(t *testing.T) {
	m := newPKI(t)
	a := startAgent(t, m, softagent.Config{TPM: newTPM(t, eccKey(t), crypto.SHA256), IMA: &softagent.IMAConfig{Initial: 3, PerQuote: 2}})
	c := dial(t, a, m, api.CurrentVersion)
	ctx := context.Background()
	var prev *tpm.QuoteData
	next := 0
	for i := range 2 {
		nonce := fmt.Sprintf("before%d", i)
		res, err := c.IntegrityQuote(ctx, nonce, "0x400", true, next)
		if err != nil {
			t.Fatal(err)
		}
		if prev, err = check(t, a, res, nonce, prev); err != nil {
			t.Fatal(err)
		}
		next = *res.IMAMeasurementListEntry + strings.Count(*res.IMAMeasurementList, "\n")
	}
	if next != 7 {
		t.Fatalf("log has %d entries before the reboot, want 7", next)
	}
	if err := a.Reboot(); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.TPM().Read(17, tpm2.TPMAlgSHA256); !bytes.Equal(v, bytes.Repeat([]byte{0xff}, 32)) {
		t.Errorf("PCR 17 after reboot = %x", v)
	}
	res, err := c.IntegrityQuote(ctx, "after", "0x400", true, next)
	if err != nil {
		t.Fatal(err)
	}
	data, err := check(t, a, res, "after", prev)
	if err != nil {
		t.Fatalf("quote after reboot: %v", err)
	}
	if data.ResetCount != prev.ResetCount+1 || data.RestartCount != 0 {
		t.Errorf("counts after reboot: reset %d (was %d), restart %d", data.ResetCount, prev.ResetCount, data.RestartCount)
	}
	if *res.IMAMeasurementListEntry != 0 {
		t.Errorf("ima_measurement_list_entry = %d after reboot, want 0", *res.IMAMeasurementListEntry)
	}
	pcr10, n := replayIMA(t, "sha256", make([]byte, 32), *res.IMAMeasurementList)
	if n != 5 || !bytes.Equal(pcr10, data.PCRs[10]) {
		t.Errorf("%v: %d entries after reboot, replay %x, quoted %x", errIMA, n, pcr10, data.PCRs[10])
	}
}

// AddIMAEntry measures a chosen file; Max stops the growth.
func TestIMAEntries(t *testing.T) {
	m := newPKI(t)
	a := startAgent(t, m, softagent.Config{TPM: newTPM(t, eccKey(t), crypto.SHA256), IMA: &softagent.IMAConfig{Initial: 2, PerQuote: 5, Max: 4}})
	c := dial(t, a, m, api.CurrentVersion)
	digest := sha256.Sum256([]byte("evil"))
	if err := a.AddIMAEntry("/tmp/evil script", digest); err != nil {
		t.Fatal(err)
	}
	res, err := c.IntegrityQuote(context.Background(), "n", "0x400", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := check(t, a, res, "n", nil)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(*res.IMAMeasurementList, "\n"), "\n")
	if len(lines) != 4 { // 2 initial + the added one + 1 more until Max
		t.Errorf("%d entries, want 4:\n%s", len(lines), *res.IMAMeasurementList)
	}
	want, _ := softagent.IMAEntry("/tmp/evil script", digest)
	if lines[2]+"\n" != want {
		t.Errorf("entry 2 = %q, want %q", lines[2], want)
	}
	if pcr10, _ := replayIMA(t, "sha256", make([]byte, 32), *res.IMAMeasurementList); !bytes.Equal(pcr10, data.PCRs[10]) {
		t.Error(errIMA)
	}
	text, n := a.IMALog()
	if n != 4 || text != *res.IMAMeasurementList {
		t.Errorf("IMALog() = %d entries", n)
	}
	noIMA := startAgent(t, m, softagent.Config{TPM: newTPM(t, eccKey(t), crypto.SHA256)})
	if err := noIMA.AddIMAEntry("/x", digest); err == nil {
		t.Error("AddIMAEntry without an IMA log succeeded")
	}
	res, err = dial(t, noIMA, m, api.CurrentVersion).IntegrityQuote(context.Background(), "n", "0x400", false, 0)
	if err != nil || res.IMAMeasurementList != nil || res.IMAMeasurementListEntry != nil {
		t.Errorf("agent without IMA: %v, log sent %t", err, res != nil && res.IMAMeasurementList != nil)
	}
}

// Concurrent requests to one agent each get a quote that verifies, and the IMA log stays consistent
// with PCR 10 (the log growth, PCR 16 binding and quote are one step).
func TestConcurrentQuotes(t *testing.T) {
	m := newPKI(t)
	a := startAgent(t, m, softagent.Config{TPM: newTPM(t, eccKey(t), crypto.SHA256), IMA: &softagent.IMAConfig{PerQuote: 1}})
	const workers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, a, m, api.CurrentVersion)
			for i := range each {
				nonce := fmt.Sprintf("w%dq%d", w, i)
				res, err := c.IntegrityQuote(context.Background(), nonce, "0x400", true, 0)
				if err == nil {
					var data *tpm.QuoteData
					if data, err = check(t, a, res, nonce, nil); err == nil {
						pcr10, _ := replayIMA(t, "sha256", make([]byte, 32), *res.IMAMeasurementList)
						if !bytes.Equal(pcr10, data.PCRs[10]) {
							err = errIMA
						}
					}
				}
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if _, n := a.IMALog(); n != workers*each || a.Quotes() != workers*each {
		t.Errorf("%d IMA entries and %d quotes, want %d", n, a.Quotes(), workers*each)
	}
}

// heapInUse returns the live heap plus goroutine stacks after a full GC.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

// A fleet fits in one process: the memory of an idle agent (ECC AK, shared NK, no IMA log) and of an
// agent with one kept-alive mTLS connection from a client in the same process (both ends counted).
func TestFleetMemory(t *testing.T) {
	n := 500
	if testing.Short() {
		n = 100
	}
	m := newPKI(t)
	nk := sharedNK(t)
	before := heapInUse()
	agents := make([]*softagent.Agent, n)
	for i := range agents {
		st, err := softagent.NewTPM(softagent.ECC)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if agents[i], err = softagent.New(ln, softagent.Config{TPM: st, NK: nk, ClientCAs: m.Pool}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, a := range agents {
			_ = a.Close()
		}
	})
	idle := (heapInUse() - before) / uint64(n)

	ctx := context.Background()
	mid := heapInUse()
	for _, a := range agents {
		c := dial(t, a, m, api.CurrentVersion)
		if _, err := c.IdentityQuote(ctx, "mem"); err != nil {
			t.Fatal(err)
		}
	}
	connected := (heapInUse() - mid) / uint64(n)
	t.Logf("%d agents: %d bytes per idle agent, %d more per kept-alive mTLS connection (client and server side)", n, idle, connected)
	if idle > 64<<10 {
		t.Errorf("an idle agent takes %d bytes, more than 64 KiB", idle)
	}
}
