package tenant_test

import (
	"archive/zip"
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keylime-go/keylime/tenant"
)

// TestAddWithPayloadAndVerify: the payload reaches the agent only after it attested, and the agent then
// proves it derived K (keys/verify). A tenant that sent no payload cannot verify one.
func TestAddWithPayloadAndVerify(t *testing.T) {
	b := newBed(t)
	a := b.startAgent(t)
	tn := b.tenant(t)
	ctx := ctxT(t, time.Minute)
	if err := tn.VerifyPayload(ctx, a.UUID(), time.Second); err == nil {
		t.Fatal("verified a payload that was never sent")
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("autorun.sh")
	_, _ = w.Write([]byte("#!/bin/sh\necho ran > marker\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	zipped := buf.Bytes()
	res, err := tn.Add(ctx, tenant.AddOptions{AgentID: a.UUID(), Payload: zipped})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Payload {
		t.Error("result does not report the payload")
	}
	if err := tn.VerifyPayload(ctx, a.UUID(), 20*time.Second); err != nil {
		t.Fatalf("verify: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(a.DataDir, "secure", "unzipped", "decrypted_payload"))
	if err != nil || !bytes.Equal(got, zipped) {
		t.Fatalf("payload on the agent: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m, err := os.ReadFile(filepath.Join(a.DataDir, "secure", "unzipped", "marker")); err == nil && string(m) == "ran\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("autorun.sh from the payload never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
