package agent

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/registrar"
	"github.com/keylime-go/keylime/tpm/device"
)

// TestOnRegisteredCalledOnceAfterActivation runs the agent against a real registrar (plain port only) and
// checks that OnRegistered runs exactly once, after the registrar holds the agent as active.
func TestOnRegisteredCalledOnceAfterActivation(t *testing.T) {
	testbed.RequireSWTPM(t)
	dir := t.TempDir()
	reg, err := registrar.New(registrar.Config{DBPath: filepath.Join(dir, "registrar.db"), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	regLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	regDone := make(chan error, 1)
	go func() { regDone <- reg.Serve(ctx, regLn, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-regDone; err != nil {
			t.Errorf("registrar: %v", err)
		}
	})

	a := newTestAgent(t, device.RSA, device.RSA)
	var calls atomic.Int32
	var activeAtCall atomic.Bool
	a.cfg.Registrar = client.NewRegistrar(transport.NewHTTPClient(nil, 10*time.Second), "http://"+regLn.Addr().String(), api.CurrentVersion)
	a.cfg.OnRegistered = func() {
		calls.Add(1)
		activeAtCall.Store(a.Registered())
	}
	agentLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Serve(agentCtx, agentLn) }()
	deadline := time.Now().Add(15 * time.Second)
	for calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a second call, if any, would land here
	stopAgent()
	if err := <-agentDone; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("agent: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("OnRegistered called %d times, want 1", n)
	}
	if !activeAtCall.Load() {
		t.Error("OnRegistered ran before the agent counted as registered")
	}
}
