// Package agent is the Keylime agent: it runs on the machine to attest, talks to its TPM (EK, EK
// certificate, AK, quotes, PCRs, ActivateCredential), registers with the registrar and proves that its AK
// belongs to its EK, and answers the verifier and tenant.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/tpm"
	"github.com/keylime-go/keylime/tpm/device"
)

// Config is everything an agent needs; internal/cli builds it from keylime.toml.
type Config struct {
	// TPM is the open TPM; the caller owns it and closes it after Run.
	TPM *device.TPM
	// UUID is an explicit agent id, "generate" or "hash_ek".
	UUID string
	// DataDir holds the AK blobs and a generated UUID (agent_data_path).
	DataDir string
	// PayloadKeyPath is the NK (RSA-2048 PEM); ServerKeyPath and ServerCertPath the mTLS identity.
	PayloadKeyPath, ServerKeyPath, ServerCertPath string
	// EnableMTLS: when false the agent registers mtls_cert "disabled".
	EnableMTLS bool
	// EKAlg picks the EK ("rsa" or "ecc"), AKAlg the AK ("rsa" for RSASSA, "ecc" for ECDSA).
	EKAlg, AKAlg device.KeyAlg
	// ContactIP and ContactPort are what the registrar records for the verifier and tenant to reach us.
	ContactIP   string
	ContactPort int
	// ListenAddr is where the agent API listens (host:port).
	ListenAddr string
	// ClientCAs are the CAs whose client certificates (verifier, tenant) the API accepts.
	ClientCAs *x509.CertPool
	// HashAlg is the PCR bank quoted ("sha256").
	HashAlg string
	// IMALogPath and MBLogPath are the IMA ASCII log and the UEFI event log ("" or missing: none).
	IMALogPath, MBLogPath string
	// Payload configures the secure payload (SecureDir "" disables writing payloads).
	Payload PayloadConfig
	// Revocation configures revocation notifications.
	Revocation RevocationConfig
	// Registrar is the registrar client (plain HTTP port).
	Registrar *client.Registrar
	// RetryInterval is the first delay after a failed registration attempt; delays double up to RetryMax.
	RetryInterval, RetryMax time.Duration
	// OnRegistered, when set, is called once after the agent has registered and activated: start-up is
	// over (the CLI hands the start-up memory back to the OS there).
	OnRegistered func()
	Log          zerolog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Agent is a started agent with its identity loaded.
type Agent struct {
	cfg   Config
	log   zerolog.Logger
	uuid  string
	ek    *device.EK
	ak    *device.AK
	nk    *rsa.PrivateKey
	nkPEM []byte
	tls   *mtlsIdentity

	// quoteMu makes reset PCR 16, extend, quote one step: concurrent quotes must not interleave.
	quoteMu sync.Mutex

	boot          bootstrap
	secureMounted bool // the tmpfs mount was attempted
	tmpfs         bool // a tmpfs is mounted on the secure directory

	negotiated bool
	registered atomic.Bool
}

// New loads or creates the agent's identity: EK, UUID, AK (persisted in DataDir), NK and mTLS certificate.
func New(cfg Config) (*Agent, error) {
	if cfg.TPM == nil {
		return nil, errors.New("agent: no TPM")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.RetryMax < cfg.RetryInterval {
		cfg.RetryMax = cfg.RetryInterval
	}
	a := &Agent{cfg: cfg, log: cfg.Log}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent data dir: %w", err)
	}
	var err error
	if a.ek, err = cfg.TPM.EK(cfg.EKAlg); err != nil {
		return nil, fmt.Errorf("load EK: %w", err)
	}
	if a.uuid, err = resolveUUID(cfg.UUID, cfg.DataDir, a.ek); err != nil {
		return nil, err
	}
	a.log = a.log.With().Str("agent", a.uuid).Logger()
	if a.ek.Cert == nil {
		a.log.Warn().Msg("the TPM has no EK certificate in NV; tenants that require one will refuse this agent")
	}
	var created bool
	if a.ak, created, err = cfg.TPM.LoadOrCreateAK(cfg.DataDir, a.ek, cfg.AKAlg); err != nil {
		return nil, fmt.Errorf("load AK: %w", err)
	}
	a.log.Info().Bool("created", created).Str("ak_name", hex.EncodeToString(a.ak.Name)).Msg("AK ready")
	if a.nk, created, err = loadOrCreateNK(cfg.PayloadKeyPath); err != nil {
		return nil, err
	}
	if created {
		a.log.Info().Str("path", cfg.PayloadKeyPath).Msg("created payload key (NK)")
	}
	if a.nkPEM, err = publicKeyPEM(&a.nk.PublicKey); err != nil {
		return nil, err
	}
	if cfg.HashAlg == "" {
		a.cfg.HashAlg = "sha256"
	}
	if _, _, err := tpm.HashByName(a.cfg.HashAlg); err != nil {
		return nil, fmt.Errorf("tpm_hash_alg: %w", err)
	}
	// A TPM signs a quote with the AK's own hash, and verifiers (ours and Keylime's) require it to equal
	// the quoted bank's hash: the AK is SHA-256, so only the sha256 bank can be quoted.
	if a.cfg.HashAlg != "sha256" {
		return nil, fmt.Errorf("tpm_hash_alg %q: the AK signs with sha256, so only the sha256 bank can be quoted", a.cfg.HashAlg)
	}
	if cfg.EnableMTLS {
		if a.tls, created, err = loadOrCreateMTLS(cfg.ServerKeyPath, cfg.ServerCertPath, a.uuid, []string{cfg.ContactIP}, cfg.Now()); err != nil {
			return nil, err
		}
		if created {
			a.log.Info().Str("path", cfg.ServerCertPath).Msg("created self-signed mTLS certificate")
		}
	}
	return a, nil
}

// Registered reports whether the agent has registered and activated with the registrar since it started.
func (a *Agent) Registered() bool { return a.registered.Load() }

// UUID returns the agent's id.
func (a *Agent) UUID() string { return a.uuid }

// AKName returns the TPM Name of the agent's AK.
func (a *Agent) AKName() []byte { return append([]byte(nil), a.ak.Name...) }

// Run listens on ListenAddr, registers with the registrar (retrying while it is unreachable) and then
// serves the agent API until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("agent listen %s: %w", a.cfg.ListenAddr, err)
	}
	return a.Serve(ctx, ln)
}

// Serve serves the agent API on ln and registers with the registrar at the same time, until ctx ends.
// The API serves while the registrar is unreachable (a verifier that knows the agent keeps attesting it);
// a refusal by the registrar stops the agent.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	defer ln.Close()
	defer a.unmountSecure()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := a.RegisterWithRetry(ctx)
		if ctx.Err() != nil {
			return nil
		}
		return err
	})
	g.Go(func() error { return a.serveAPI(ctx, ln) })
	return g.Wait()
}

func (a *Agent) serveAPI(ctx context.Context, ln net.Listener) error {
	var tlsConf *tls.Config
	scheme := "http"
	if a.tls != nil {
		cert := tls.Certificate{Certificate: [][]byte{a.tls.Cert.Raw}, PrivateKey: a.tls.Key, Leaf: a.tls.Cert}
		tlsConf = transport.ServerConfig(cert, a.cfg.ClientCAs, transport.RequireClientCert)
		scheme = "https"
	}
	a.log.Info().Str("addr", scheme+"://"+ln.Addr().String()).Msg("agent API serving")
	err := transport.Serve(ctx, transport.NewServer(a.Handler(), tlsConf, a.log), ln)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// resolveUUID turns the uuid setting into the agent id: explicit, "generate" (random v4, remembered in
// dataDir/uuid so restarts keep it) or "hash_ek".
func resolveUUID(setting, dataDir string, ek *device.EK) (string, error) {
	switch setting {
	case "hash_ek":
		pub, err := tpm.ParsePublic(ek.PublicBytes)
		if err != nil {
			return "", fmt.Errorf("hash_ek: %w", err)
		}
		return tpm.HashEK(pub)
	case "generate", "":
		path := filepath.Join(dataDir, "uuid")
		if b, err := os.ReadFile(path); err == nil {
			if id := strings.TrimSpace(string(b)); api.ValidAgentID(id) {
				return id, nil
			}
		}
		id, err := randomUUID()
		if err != nil {
			return "", err
		}
		return id, ca.WriteFileAtomic(path, []byte(id+"\n"), 0o600)
	default:
		if !api.ValidAgentID(setting) {
			return "", fmt.Errorf("invalid agent uuid %q: use a UUID, \"generate\" or \"hash_ek\"", setting)
		}
		return setting, nil
	}
}

func randomUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}
