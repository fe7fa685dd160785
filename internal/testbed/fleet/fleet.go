package fleet

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/internal/transport"
)

// Config describes a fleet. Only N and ClientCAs are required.
type Config struct {
	// N is the number of agents.
	N int
	// ClientCAs are the CAs whose client certificates (verifier, tenant) the agents accept.
	ClientCAs *x509.CertPool
	// RSAAK gives the agents RSA-2048 RSASSA AKs (Keylime's default; about 1 ms per quote signature)
	// instead of P-256 ECDSA AKs (about 40 µs, so that the fleet costs its machine little CPU).
	RSAAK bool
	// RSAEK gives the agents RSA-2048 EKs instead of P-256 EKs (registration only).
	RSAEK bool
	// NK is the payload key every agent binds into PCR 16; nil means the first key of the RSA key cache.
	NK *rsa.PrivateKey
	// KeyCache is a directory keeping generated RSA keys across runs ("" generates them every time).
	KeyCache string
	// IMA, when set, gives every agent an IMA log growing by IMA.PerQuote entries per quote.
	IMA *softagent.IMAConfig
	// IP is the loopback address the agents listen on (127.0.0.1 when empty).
	IP string
	// Log receives the agents' request logs; the zero Logger logs nothing.
	Log zerolog.Logger
}

// Fleet is N software agents, each serving Keylime's agent API on its own port.
type Fleet struct {
	agents []*Agent
	byID   map[string]*Agent
	rec    recorder
	// epoch (Unix ns) is the moment after which Agent.firstSince records the first quote request.
	epoch atomic.Int64
}

// Agent is one agent of a fleet: a softagent with its EK, its own listener, certificate and HTTPS server.
type Agent struct {
	soft    *softagent.Agent
	handler http.Handler // soft's agent API
	ek      *softagent.EK
	ln      net.Listener
	srv     *http.Server
	served  chan error
	certPEM []byte
	cert    *x509.Certificate
	fleet   *Fleet

	mu   sync.Mutex
	last time.Time // arrival of the last quote request
	// firstSince is the arrival (Unix ns) of the first quote request after the fleet's epoch, 0 before.
	firstSince atomic.Int64
	requests   atomic.Uint64
	atReset    atomic.Uint64 // requests at the fleet's last ResetStats
}

// New creates and starts a fleet. Agents are created on every core; with RSA keys and no key cache this
// takes tens of milliseconds per agent.
func New(cfg Config) (*Fleet, error) {
	if cfg.N < 1 {
		return nil, errors.New("fleet: N must be at least 1")
	}
	if cfg.ClientCAs == nil {
		return nil, errors.New("fleet: no client CAs")
	}
	if cfg.IP == "" {
		cfg.IP = "127.0.0.1"
	}
	// One RSA key is the NK every agent shares; RSA AKs and EKs come from the cache too.
	need := 0
	if cfg.NK == nil {
		need++
	}
	if cfg.RSAAK {
		need += cfg.N
	}
	if cfg.RSAEK {
		need += cfg.N
	}
	keys, err := RSAKeys(cfg.KeyCache, need)
	if err != nil {
		return nil, err
	}
	nk := cfg.NK
	if nk == nil {
		nk, keys = keys[0], keys[1:]
	}
	var akKeys, ekKeys []*rsa.PrivateKey
	if cfg.RSAAK {
		akKeys, keys = keys[:cfg.N], keys[cfg.N:]
	}
	if cfg.RSAEK {
		ekKeys = keys[:cfg.N]
	}
	f := &Fleet{agents: make([]*Agent, cfg.N), byID: make(map[string]*Agent, cfg.N)}
	err = parallel(cfg.N, runtime.GOMAXPROCS(0), func(i int) error {
		var ak, ek *rsa.PrivateKey
		if akKeys != nil {
			ak = akKeys[i]
		}
		if ekKeys != nil {
			ek = ekKeys[i]
		}
		a, err := f.newAgent(cfg, nk, ak, ek)
		f.agents[i] = a
		return err
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	for _, a := range f.agents {
		f.byID[a.UUID()] = a
	}
	return f, nil
}

// newAgent creates one agent; akKey and ekKey are used when not nil (RSA), else P-256 keys are generated.
func (f *Fleet) newAgent(cfg Config, nk, akKey, ekKey *rsa.PrivateKey) (*Agent, error) {
	var (
		tp  *softagent.TPM
		ek  *softagent.EK
		err error
	)
	if akKey != nil {
		tp, err = softagent.NewTPMWithKey(akKey, crypto.SHA256)
	} else {
		tp, err = softagent.NewTPM(softagent.ECC)
	}
	if err != nil {
		return nil, err
	}
	if ekKey != nil {
		ek, err = softagent.NewEKWithKey(ekKey)
	} else {
		ek, err = softagent.NewEK(softagent.ECC)
	}
	if err != nil {
		return nil, err
	}
	tp.SetParentQualifiedName(ek.QualifiedName())
	// The softagent serves its handler here, on our own listener and server (so that requests can be
	// timed), with our own certificate: it is started on a placeholder listener and stopped at once.
	ekAlg := softagent.ECC
	if cfg.RSAEK {
		ekAlg = softagent.RSA
	}
	soft, err := softagent.New(newPlaceholder(), softagent.Config{TPM: tp, NK: nk, ClientCAs: cfg.ClientCAs, EKAlg: ekAlg, IMA: cfg.IMA, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	if err := soft.Close(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.IP, "0"))
	if err != nil {
		return nil, fmt.Errorf("fleet: listen: %w", err)
	}
	a := &Agent{soft: soft, handler: soft.Handler(), ek: ek, ln: ln, fleet: f, served: make(chan error, 1)}
	tlsCert, err := a.newCert()
	if err != nil {
		ln.Close()
		return nil, err
	}
	a.srv = transport.NewServer(a, transport.ServerConfig(tlsCert, cfg.ClientCAs, transport.RequireClientCert), cfg.Log)
	go func() { a.served <- a.srv.ServeTLS(ln, "", "") }()
	return a, nil
}

// newCert creates the agent's self-signed mTLS certificate (ECDSA P-256, CN = UUID, SANs localhost and
// the listener's IP), as a Keylime agent does.
func (a *Agent) newCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: a.soft.UUID()},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{a.ln.Addr().(*net.TCPAddr).IP},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("fleet: certificate: %w", err)
	}
	if a.cert, err = x509.ParseCertificate(der); err != nil {
		return tls.Certificate{}, err
	}
	a.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: a.cert}, nil
}

// ServeHTTP serves the agent API and times integrity quote requests.
func (a *Agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/quotes/integrity") {
		a.handler.ServeHTTP(w, r)
		return
	}
	arrival := time.Now()
	a.mu.Lock()
	prev := a.last
	a.last = arrival
	a.mu.Unlock()
	if ep := a.fleet.epoch.Load(); ep != 0 && arrival.UnixNano() > ep {
		a.firstSince.CompareAndSwap(0, arrival.UnixNano())
	}
	a.requests.Add(1)
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	a.handler.ServeHTTP(sw, r)
	var gap time.Duration
	if !prev.IsZero() {
		gap = arrival.Sub(prev)
	}
	a.fleet.rec.add(gap, time.Since(arrival), sw.code != http.StatusOK)
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// UUID returns the agent's id.
func (a *Agent) UUID() string { return a.soft.UUID() }

// Soft returns the software agent (its TPM, IMA log, tamper controls).
func (a *Agent) Soft() *softagent.Agent { return a.soft }

// EK returns the agent's endorsement key.
func (a *Agent) EK() *softagent.EK { return a.ek }

// Addr returns the address the agent listens on.
func (a *Agent) Addr() *net.TCPAddr { return a.ln.Addr().(*net.TCPAddr) }

// CertPEM returns the agent's mTLS certificate in PEM (Keylime's mtls_cert).
func (a *Agent) CertPEM() []byte { return append([]byte(nil), a.certPEM...) }

// Cert returns the agent's mTLS certificate, to pin.
func (a *Agent) Cert() *x509.Certificate { return a.cert }

// Requests returns the number of integrity quote requests the agent has received.
func (a *Agent) Requests() uint64 { return a.requests.Load() }

// close stops the agent's server.
func (a *Agent) close() error {
	err := a.srv.Close()
	if e := <-a.served; e != nil && !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// Agents returns the fleet's agents.
func (f *Fleet) Agents() []*Agent { return f.agents }

// Agent returns the agent with the given id, or nil.
func (f *Fleet) Agent(id string) *Agent { return f.byID[id] }

// Requests returns the number of integrity quote requests the whole fleet has received.
func (f *Fleet) Requests() uint64 {
	var n uint64
	for _, a := range f.agents {
		n += a.requests.Load()
	}
	return n
}

// Close stops every agent.
func (f *Fleet) Close() error {
	var first error
	for _, a := range f.agents {
		if a == nil {
			continue
		}
		if err := a.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// placeholder is a listener that never accepts a connection, for a softagent whose handler is served
// elsewhere.
type placeholder struct {
	once   sync.Once
	closed chan struct{}
}

func newPlaceholder() *placeholder { return &placeholder{closed: make(chan struct{})} }

func (p *placeholder) Accept() (net.Conn, error) {
	<-p.closed
	return nil, net.ErrClosed
}

func (p *placeholder) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *placeholder) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
