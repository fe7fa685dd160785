package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/keylime-go/keylime/agent"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/tpm"
	"github.com/keylime-go/keylime/tpm/device"
)

func TestAgentRegistersAndActivates(t *testing.T) {
	testbed.RequireSWTPM(t)
	for _, tc := range []struct {
		name         string
		ekAlg, akAlg device.KeyAlg
	}{
		{"RSA EK", device.RSA, device.RSA},
		{"ECC EK", device.ECC, device.ECC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSystem(t)
			start := time.Now()
			a := s.StartAgent(AgentOptions{UUID: "hash_ek", EKAlg: tc.ekAlg, AKAlg: tc.akAlg})
			rec, err := s.WaitActive(a.UUID(), 15*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("agent start → active at the registrar: %v", time.Since(start))
			// hash_ek: the id is the SHA-256 of the EK public key PEM.
			ek, err := tpm.ParsePublicBase64(rec.EKTPM)
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := tpm.HashEK(ek); a.UUID() != want {
				t.Errorf("uuid %s, want hash_ek %s", a.UUID(), want)
			}
			// The record carries the EK certificate from NV, the AK and the agent's mTLS certificate.
			certFile := a.TPM.EKCertRSA
			if tc.ekAlg == device.ECC {
				certFile = a.TPM.EKCertECC
			}
			der, err := os.ReadFile(certFile)
			if err != nil {
				t.Fatal(err)
			}
			if rec.EKCert == nil || *rec.EKCert != base64.StdEncoding.EncodeToString(der) {
				t.Errorf("ekcert is not the TPM's NV certificate")
			}
			ak, err := tpm.ParsePublicBase64(rec.AIKTPM)
			if err != nil || !bytes.Equal(ak.Name, a.AKName()) {
				t.Errorf("aik_tpm does not match the agent's AK: %v", err)
			}
			certPEM, err := os.ReadFile(filepath.Join(a.DataDir, "server-cert.crt"))
			if err != nil {
				t.Fatal(err)
			}
			if rec.MTLSCert == nil || *rec.MTLSCert != string(certPEM) {
				t.Errorf("mtls_cert is not the agent's certificate")
			}
			blk, _ := pem.Decode(certPEM)
			if blk == nil {
				t.Fatal("agent certificate is not PEM")
			}
			if rec.Port == nil || *rec.Port != a.Port || rec.RegCount != 1 {
				t.Errorf("record = %+v", rec)
			}
		})
	}
}

func TestAgentRestartKeepsIdentity(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	a := s.StartAgent(AgentOptions{})
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	name, id, port := a.AKName(), a.UUID(), a.Port
	a.Stop()
	if err := s.Admin.Delete(context.Background(), id); err != nil { // prove it registers again
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	b := s.StartAgent(AgentOptions{TPM: a.TPM, DataDir: a.DataDir, Listener: ln})
	if b.UUID() != id || !bytes.Equal(b.AKName(), name) {
		t.Fatalf("restart changed identity: %s/%x → %s/%x", id, name, b.UUID(), b.AKName())
	}
	if _, err := s.WaitActive(id, 15*time.Second); err != nil {
		t.Fatalf("re-registration after restart: %v", err)
	}
	// A second restart while the record still exists is accepted too (same TPM, same AK).
	b.Stop()
	ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	c := s.StartAgent(AgentOptions{TPM: a.TPM, DataDir: a.DataDir, Listener: ln})
	if err := waitRegistered(c, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Admin.Agent(context.Background(), id)
	if err != nil || !rec.Active || rec.RegCount != 1 {
		t.Fatalf("after second restart: %+v %v", rec, err)
	}
}

// waitRegistered waits until the agent's Serve passed registration (the agent logs, and its API serves).
func waitRegistered(a *Agent, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case err := <-a.Done:
			return err
		default:
		}
		if a.Registered() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("agent did not register in time")
}

func TestTakeoverRefusedAgentStops(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	a := s.StartAgent(AgentOptions{UUID: "shared-id"})
	if _, err := s.WaitActive("shared-id", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	// A different TPM claims the same UUID: refused, and the agent stops instead of retrying for ever.
	b := s.StartAgent(AgentOptions{UUID: "shared-id"})
	select {
	case err := <-b.Done:
		if !errors.Is(err, agent.ErrRefused) {
			t.Fatalf("second agent ended with %v, want ErrRefused", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("second agent neither refused nor stopped")
	}
	rec, err := s.Admin.Agent(context.Background(), "shared-id")
	if err != nil || !bytes.Equal(mustAK(t, rec.AIKTPM), a.AKName()) {
		t.Fatalf("record changed by the takeover attempt: %v", err)
	}
}

func mustAK(t *testing.T, b64 string) []byte {
	t.Helper()
	p, err := tpm.ParsePublicBase64(b64)
	if err != nil {
		t.Fatal(err)
	}
	return p.Name
}

func TestRegistrarUnreachableRetries(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	// Reserve a port nobody listens on yet.
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	a := s.StartAgent(AgentOptions{RegistrarURL: "http://" + addr})
	time.Sleep(500 * time.Millisecond) // several retry rounds (50 ms doubling to 200 ms)
	select {
	case err := <-a.Done:
		t.Fatalf("agent gave up while the registrar was unreachable: %v", err)
	default:
	}
	if a.Registered() {
		t.Fatal("registered without a registrar")
	}
	// The registrar appears at that address: the agent registers without a restart.
	s.StopRegistrar()
	s.StartRegistrarAt(addr)
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatalf("agent did not register once the registrar came up: %v", err)
	}
}
