package e2e

import (
	"context"
	"errors"
	"github.com/keylime-go/keylime/internal/testbed"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/agent"
	"github.com/keylime-go/keylime/internal/api"
	kca "github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/registrar"
	"github.com/keylime-go/keylime/tpm/device"
)

// System is a whole keylime-go deployment running in the test process: a Keylime CA, a registrar on
// loopback (HTTP and HTTPS ports, real bbolt file) and agents on their own swtpms.
type System struct {
	t   testing.TB
	Dir string
	// CADir holds the Keylime CA layout (cacert.crt, server-*, client-*).
	CADir string
	// RegistrarURL is the plain registration port, RegistrarTLSURL the admin port.
	RegistrarURL, RegistrarTLSURL string
	// Admin is a registrar client with the CA's client certificate.
	Admin *client.Registrar
	Log   zerolog.Logger

	// VerifierURL and Verifier (an admin client) are set by StartVerifier.
	VerifierURL string
	Verifier    *client.Verifier

	registrarDB   string
	stopRegistrar func()
	stopVerifier  func()
}

// NewSystem creates the CA and starts a registrar; everything stops when the test ends.
func NewSystem(t testing.TB) *System {
	t.Helper()
	dir := t.TempDir()
	s := &System{t: t, Dir: dir, CADir: filepath.Join(dir, "cv_ca"), registrarDB: filepath.Join(dir, "registrar.db"), Log: zerolog.Nop()}
	if testing.Verbose() {
		s.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	}
	if _, err := kca.Ensure(s.CADir, kca.DefaultSubject, nil); err != nil {
		t.Fatal(err)
	}
	s.StartRegistrar()
	return s
}

// ClientTLS returns the tenant/verifier client TLS material of the system's CA.
func (s *System) ClientTLS() *transport.Material {
	s.t.Helper()
	m, err := transport.LoadMaterial(s.CADir, "client")
	if err != nil {
		s.t.Fatal(err)
	}
	return m
}

// StartRegistrar (re)starts the registrar on new loopback ports with the same database.
func (s *System) StartRegistrar() { s.StartRegistrarAt("127.0.0.1:0") }

// StartRegistrarAt (re)starts the registrar with its plain port at addr.
func (s *System) StartRegistrarAt(addr string) {
	t := s.t
	t.Helper()
	srv, err := transport.LoadMaterial(s.CADir, "server")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registrar.New(registrar.Config{
		DBPath: s.registrarDB,
		TLS:    transport.ServerConfig(srv.Cert, srv.Pool, transport.OptionalClientCert),
		Log:    s.Log.With().Str("role", "registrar").Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tlsLn := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Serve(ctx, plain, tlsLn) }()
	s.RegistrarURL = "http://" + plain.Addr().String()
	s.RegistrarTLSURL = "https://" + tlsLn.Addr().String()
	cl := s.ClientTLS()
	s.Admin = client.NewRegistrar(transport.NewHTTPClient(transport.ClientConfig(&cl.Cert, cl.Pool), 10*time.Second), s.RegistrarTLSURL, api.CurrentVersion)
	var once sync.Once
	s.stopRegistrar = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("registrar: %v", err)
			}
			if err := reg.Close(); err != nil {
				t.Errorf("registrar close: %v", err)
			}
		})
	}
	t.Cleanup(s.stopRegistrar)
}

// StopRegistrar stops the registrar (its database stays).
func (s *System) StopRegistrar() { s.stopRegistrar() }

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// AgentOptions configures StartAgent.
type AgentOptions struct {
	// UUID is the agent id setting ("" means "generate").
	UUID string
	// EKAlg and AKAlg default to RSA.
	EKAlg, AKAlg device.KeyAlg
	// TPM reuses a running swtpm (another agent's, for takeover tests); nil starts a new one.
	TPM *testbed.SWTPM
	// DataDir reuses an agent data directory (restarts); "" makes a new one.
	DataDir string
	// RegistrarURL overrides the system's registrar address (e.g. an address nobody listens on).
	RegistrarURL string
	// Listener reuses a listening socket (to restart an agent on the same port); nil opens a new one.
	Listener net.Listener
	// IMALogPath and MBLogPath are the agent's IMA and UEFI logs ("" for none).
	IMALogPath, MBLogPath string
	// Payload and Revocation configure payload handling (a SecureDir under DataDir is set when empty)
	// and revocation notifications.
	Payload    agent.PayloadConfig
	Revocation agent.RevocationConfig
}

// Agent is an agent process-in-a-goroutine with its swtpm.
type Agent struct {
	*agent.Agent
	TPM     *testbed.SWTPM
	Device  *device.TPM
	DataDir string
	// Port is the agent API's loopback port.
	Port int
	ln   net.Listener
	// Done receives Run's result when the agent stops.
	Done   chan error
	exited chan struct{}
	cancel context.CancelFunc
	once   sync.Once
}

// NewAgent builds an agent (identity loaded, nothing sent yet) without running it.
func (s *System) NewAgent(opts AgentOptions) (*Agent, error) {
	t := s.t
	t.Helper()
	if opts.TPM == nil {
		opts.TPM = testbed.StartSWTPM(t)
	}
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.UUID == "" {
		opts.UUID = "generate"
	}
	if opts.RegistrarURL == "" {
		opts.RegistrarURL = s.RegistrarURL
	}
	if opts.Payload.SecureDir == "" {
		opts.Payload = agent.PayloadConfig{SecureDir: filepath.Join(opts.DataDir, "secure"), EncKeyName: "derived_tci_key",
			DecPayloadFile: "decrypted_payload", ExtractZip: true, Script: "autorun.sh", ScriptTimeout: 10 * time.Second}
	}
	dev, err := device.Open(opts.TPM.Spec())
	if err != nil {
		return nil, err
	}
	ln := opts.Listener
	if ln == nil {
		ln = listen(t)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	a, err := agent.New(agent.Config{
		TPM:            dev,
		UUID:           opts.UUID,
		DataDir:        filepath.Join(opts.DataDir, "agent_data"),
		PayloadKeyPath: filepath.Join(opts.DataDir, "payload-private.pem"),
		ServerKeyPath:  filepath.Join(opts.DataDir, "server-private.pem"),
		ServerCertPath: filepath.Join(opts.DataDir, "server-cert.crt"),
		EnableMTLS:     true,
		EKAlg:          opts.EKAlg,
		AKAlg:          opts.AKAlg,
		ClientCAs:      s.ClientTLS().Pool,
		HashAlg:        "sha256",
		IMALogPath:     opts.IMALogPath,
		MBLogPath:      opts.MBLogPath,
		Payload:        opts.Payload,
		Revocation:     opts.Revocation,
		ContactIP:      "127.0.0.1",
		ContactPort:    port,
		Registrar:      client.NewRegistrar(transport.NewHTTPClient(nil, 10*time.Second), opts.RegistrarURL, api.CurrentVersion),
		RetryInterval:  50 * time.Millisecond,
		RetryMax:       200 * time.Millisecond,
		Log:            s.Log.With().Str("role", "agent").Logger(),
	})
	if err != nil {
		dev.Close()
		ln.Close()
		return nil, err
	}
	return &Agent{Agent: a, TPM: opts.TPM, Device: dev, DataDir: opts.DataDir, Done: make(chan error, 1), ln: ln, Port: port}, nil
}

// StartAgent builds an agent and runs it in a goroutine; it is stopped when the test ends.
func (s *System) StartAgent(opts AgentOptions) *Agent {
	s.t.Helper()
	a, err := s.NewAgent(opts)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.exited = make(chan struct{})
	go func() {
		a.Done <- a.Serve(ctx, a.ln)
		close(a.exited)
	}()
	s.t.Cleanup(a.Stop)
	return a
}

// Stop stops the agent and closes its TPM connection (the swtpm keeps running).
func (a *Agent) Stop() {
	a.once.Do(func() {
		if a.cancel != nil {
			a.cancel()
			<-a.exited
		} else {
			a.ln.Close()
		}
		a.Device.Close()
	})
}

// WaitActive polls the registrar until the agent is active or the deadline passes.
func (s *System) WaitActive(id string, within time.Duration) (*api.RegistrarAgent, error) {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		rec, err := s.Admin.Agent(ctx, id)
		cancel()
		if err == nil && rec.Active {
			return rec, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("agent not active")
			}
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
