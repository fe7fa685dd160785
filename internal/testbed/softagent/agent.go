package softagent

import (
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
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/httpx"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/tpm"
)

// DataPCR is the PCR the agent binds its NK into before every quote.
const DataPCR = 16

// AKHandle is the ak_handle agent/info reports (a transient handle, as the Rust agent reports).
const AKHandle = 0x80000000

// Config describes one software agent. Only ClientCAs is required.
type Config struct {
	// UUID is the agent id; empty means a random UUID.
	UUID string
	// TPM is the agent's TPM; nil means a new one with a generated RSA AK whose scheme hash is HashAlg's.
	TPM *TPM
	// NK is the payload key whose PEM is bound into PCR 16 and sent as pubkey; nil means a generated
	// RSA-2048 key. A fleet may share one (generating RSA keys is slow).
	NK *rsa.PrivateKey
	// ClientCAs are the CAs whose client certificates (verifier, tenant) the API accepts.
	ClientCAs *x509.CertPool
	// HashAlg is the quoted bank, "sha256" (default) or "sha1"; it must be the hash of the AK's scheme.
	HashAlg string
	// EKAlg is the EK type the agent claims in enc_alg ("rsa2048"/"ecc256", "rsa"/"ecc" before API 2.5).
	EKAlg KeyAlg
	// IMA, when set, gives the agent an IMA log that grows before each quote.
	IMA *IMAConfig
	// Log receives request logs; the zero Logger logs nothing.
	Log zerolog.Logger
}

// Agent is a software agent serving Keylime's agent API over mTLS.
type Agent struct {
	uuid     string
	tpm      *TPM
	hashAlg  string
	bank     tpm2.TPMAlgID
	ekAlg    KeyAlg
	nkPEM    []byte
	nkDigest []byte // H_bank(nkPEM)
	certPEM  []byte
	cert     *x509.Certificate
	ln       net.Listener
	srv      *http.Server
	router   http.Handler
	log      zerolog.Logger

	// mu makes IMA growth, the PCR 16 binding and the quote one step.
	mu     sync.Mutex
	ima    *imaLog
	imaCfg IMAConfig
	quotes atomic.Uint64
	// conns counts TLS connections accepted; resumed those whose handshake resumed a session.
	conns, resumed atomic.Uint64

	serveErr  chan error
	closeOnce sync.Once
}

// New starts an agent serving HTTPS on ln (which it owns and closes on Close). The agent's certificate
// is self-signed (ECDSA P-256, CN = UUID, SANs localhost, 127.0.0.1, ::1 and ln's IP), and clients must
// present a certificate from cfg.ClientCAs.
func New(ln net.Listener, cfg Config) (*Agent, error) {
	a, err := newAgent(cfg)
	if err != nil {
		return nil, err
	}
	tlsCert, err := a.newCert(ln.Addr())
	if err != nil {
		return nil, err
	}
	a.ln = ln
	conf := transport.ServerConfig(tlsCert, cfg.ClientCAs, transport.RequireClientCert)
	conf.VerifyConnection = func(cs tls.ConnectionState) error { // every handshake, full or resumed
		a.conns.Add(1)
		if cs.DidResume {
			a.resumed.Add(1)
		}
		return nil
	}
	a.srv = transport.NewServer(a.Handler(), conf, cfg.Log)
	a.serveErr = make(chan error, 1)
	go func() { a.serveErr <- a.srv.ServeTLS(ln, "", "") }()
	return a, nil
}

func newAgent(cfg Config) (*Agent, error) {
	if cfg.ClientCAs == nil {
		return nil, errors.New("softagent: no client CAs: the agent API requires client certificates")
	}
	if cfg.HashAlg == "" {
		cfg.HashAlg = "sha256"
	}
	bank, h, err := tpm.HashByName(cfg.HashAlg)
	if err != nil {
		return nil, fmt.Errorf("softagent: %w", err)
	}
	if bank != tpm2.TPMAlgSHA1 && bank != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("softagent: bank %s not simulated (sha1, sha256)", cfg.HashAlg)
	}
	if cfg.TPM == nil {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		if cfg.TPM, err = NewTPMWithKey(key, h); err != nil {
			return nil, err
		}
	}
	if cfg.TPM.AKHash() != h {
		return nil, fmt.Errorf("softagent: the AK signs with %v, so quotes of the %s bank would not verify", cfg.TPM.AKHash(), cfg.HashAlg)
	}
	if cfg.NK == nil {
		if cfg.NK, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, err
		}
	}
	der, err := x509.MarshalPKIXPublicKey(&cfg.NK.PublicKey)
	if err != nil {
		return nil, err
	}
	if cfg.UUID == "" {
		if cfg.UUID, err = newUUID(); err != nil {
			return nil, err
		}
	}
	a := &Agent{
		uuid:    cfg.UUID,
		tpm:     cfg.TPM,
		hashAlg: cfg.HashAlg,
		bank:    bank,
		ekAlg:   cfg.EKAlg,
		nkPEM:   pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		log:     cfg.Log,
	}
	d := h.New()
	d.Write(a.nkPEM)
	a.nkDigest = d.Sum(nil)
	if cfg.IMA != nil {
		a.imaCfg = *cfg.IMA
		if err := a.imaCfg.validate(); err != nil {
			return nil, err
		}
		a.ima = &imaLog{}
		if err := a.growIMA(a.imaCfg.Initial); err != nil {
			return nil, err
		}
	}
	a.router = httpx.NewRouter(cfg.Log, api.SupportedVersions, a.routes())
	return a, nil
}

// newCert creates the agent's self-signed mTLS certificate.
func (a *Agent) newCert(addr net.Addr) (tls.Certificate, error) {
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
		Subject:               pkix.Name{CommonName: a.uuid},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if tcp, ok := addr.(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && !tcp.IP.IsUnspecified() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, tcp.IP)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("softagent: certificate: %w", err)
	}
	if a.cert, err = x509.ParseCertificate(der); err != nil {
		return tls.Certificate{}, err
	}
	a.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: a.cert}, nil
}

func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]), nil
}

// UUID returns the agent's id.
func (a *Agent) UUID() string { return a.uuid }

// TPM returns the agent's TPM.
func (a *Agent) TPM() *TPM { return a.tpm }

// AKPublic returns the AK's TPM2B_PUBLIC (Keylime's aik_tpm).
func (a *Agent) AKPublic() []byte { return a.tpm.AKPublic() }

// CertPEM returns the agent's self-signed certificate in PEM (Keylime's mtls_cert).
func (a *Agent) CertPEM() []byte { return append([]byte(nil), a.certPEM...) }

// Cert returns the agent's certificate, to pin (transport.PinnedClientConfig).
func (a *Agent) Cert() *x509.Certificate { return a.cert }

// NKPEM returns the PEM of the NK public key, exactly the bytes bound into PCR 16.
func (a *Agent) NKPEM() []byte { return append([]byte(nil), a.nkPEM...) }

// HashAlg returns the quoted bank ("sha256").
func (a *Agent) HashAlg() string { return a.hashAlg }

// Addr returns the address the agent listens on.
func (a *Agent) Addr() net.Addr { return a.ln.Addr() }

// URL returns the agent's base URL, https://host:port.
func (a *Agent) URL() string { return "https://" + a.ln.Addr().String() }

// Handshakes returns how many TLS handshakes the agent completed, and how many of them resumed a
// session.
func (a *Agent) Handshakes() (all, resumed uint64) { return a.conns.Load(), a.resumed.Load() }

// Quotes returns the number of quotes the agent has produced.
func (a *Agent) Quotes() uint64 { return a.quotes.Load() }

// SetTamper installs faults for what follows (see Tamper); the zero Tamper restores honest behaviour.
func (a *Agent) SetTamper(f Tamper) { a.tpm.SetTamper(f) }

// Tamper returns the installed faults.
func (a *Agent) Tamper() Tamper { return a.tpm.Tamper() }

// Close stops serving, closes the listener and open connections, and waits for the server to end.
func (a *Agent) Close() error {
	var err error
	a.closeOnce.Do(func() {
		err = a.srv.Close()
		if e := <-a.serveErr; e != nil && !errors.Is(e, http.ErrServerClosed) && err == nil {
			err = e
		}
	})
	return err
}

// Reboot reboots the simulated machine: the TPM is reset (PCRs back to power-on values, resetCount + 1)
// and the IMA log starts again with its initial entries.
func (a *Agent) Reboot() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tpm.Reboot()
	if a.ima == nil {
		return nil
	}
	a.ima.reset()
	return a.growIMALocked(a.imaCfg.Initial)
}

// AddIMAEntry appends an ima-ng entry for a file with the given SHA-256 digest to the IMA log and
// measures it into PCR 10. It fails when the agent has no IMA log.
func (a *Agent) AddIMAEntry(path string, digest [32]byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ima == nil {
		return errors.New("softagent: the agent has no IMA log")
	}
	return a.ima.add(a.tpm, path, digest)
}

// IMALog returns the whole ASCII IMA log and its number of entries ("" and 0 without a log).
func (a *Agent) IMALog() (string, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ima == nil {
		return "", 0
	}
	s, _ := a.ima.from(0)
	return s, a.ima.len()
}

func (a *Agent) growIMA(n int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.growIMALocked(n)
}

// growIMALocked adds n entries, cycling through the configured files, up to IMAConfig.Max.
func (a *Agent) growIMALocked(n int) error {
	for range n {
		i := a.ima.len()
		if a.imaCfg.Max > 0 && i >= a.imaCfg.Max {
			return nil
		}
		f := a.imaCfg.file(i)
		if err := a.ima.add(a.tpm, f.Path, f.Digest); err != nil {
			return err
		}
	}
	return nil
}

// Handler returns the agent API without TLS, for in-process use.
func (a *Agent) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := a.tpm.faults()
		if f.Delay > 0 {
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if f.FailStatus != 0 {
			httpx.WriteEnvelope(w, api.Failure(f.FailStatus, http.StatusText(f.FailStatus)))
			return
		}
		a.router.ServeHTTP(w, r)
	})
}

func (a *Agent) routes() []httpx.Route {
	return []httpx.Route{
		{Method: http.MethodGet, Path: "/version", Unversioned: true, Handler: a.version},
		{Method: http.MethodGet, Path: "/quotes/identity", Handler: a.identityQuote},
		{Method: http.MethodGet, Path: "/quotes/integrity", Handler: a.integrityQuote},
		{Method: http.MethodGet, Path: "/keys/pubkey", Handler: a.pubkey},
		{Method: http.MethodGet, Path: "/agent/info", MinVersion: "2.2", Handler: a.info},
	}
}

func (a *Agent) version(*httpx.Request) (any, error) {
	return api.AgentVersion{SupportedVersion: api.CurrentVersion, SupportedVersions: api.SupportedVersions}, nil
}

func (a *Agent) pubkey(*httpx.Request) (any, error) {
	return api.PubKey{PubKey: string(a.nkPEM)}, nil
}

func (a *Agent) info(req *httpx.Request) (any, error) {
	return api.AgentInfo{
		AgentUUID:  a.uuid,
		TPMHashAlg: a.hashAlg,
		TPMEncAlg:  a.encAlg(req.Version),
		TPMSignAlg: a.signAlg(),
		AKHandle:   AKHandle,
	}, nil
}

// encAlg spells the EK type as Keylime does: "rsa2048"/"ecc256" from API 2.5 on, "rsa"/"ecc" before.
func (a *Agent) encAlg(version string) string {
	old := api.CompareVersions(version, "2.5") < 0
	switch {
	case a.ekAlg == ECC && old:
		return "ecc"
	case a.ekAlg == ECC:
		return "ecc256"
	case old:
		return "rsa"
	}
	return "rsa2048"
}

func (a *Agent) signAlg() string {
	if a.tpm.sigAlg == tpm2.TPMAlgECDSA {
		return "ecdsa"
	}
	return "rsassa"
}

// maxNonce is the longest nonce the agent API accepts (Keylime's MAX_NONCE_SIZE).
const maxNonce = 64

func checkNonce(nonce string) error {
	if nonce == "" || len(nonce) > maxNonce {
		return httpx.Errorf(http.StatusBadRequest, "nonce must be 1-%d alphanumeric characters", maxNonce)
	}
	if !alnum(nonce) {
		return httpx.Errorf(http.StatusBadRequest, "nonce must be alphanumeric")
	}
	return nil
}

func alnum(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func (a *Agent) identityQuote(req *httpx.Request) (any, error) {
	nonce := req.URL.Query().Get("nonce")
	if err := checkNonce(nonce); err != nil {
		return nil, err
	}
	return a.quote(req.Version, nonce, 0, true, -1)
}

func (a *Agent) integrityQuote(req *httpx.Request) (any, error) {
	q := req.URL.Query()
	nonce := q.Get("nonce")
	if err := checkNonce(nonce); err != nil {
		return nil, err
	}
	maskText := q.Get("mask")
	if !alnum(maskText) {
		return nil, httpx.Errorf(http.StatusBadRequest, "mask must be a hex PCR mask such as 0x408400")
	}
	mask, err := policy.ParseMask(maskText)
	if err != nil {
		return nil, httpx.BadRequest("invalid mask", err)
	}
	partial := q.Get("partial")
	if partial != "0" && partial != "1" {
		return nil, httpx.Errorf(http.StatusBadRequest, "partial must be 0 or 1")
	}
	entry, err := strconv.Atoi(q.Get("ima_ml_entry"))
	if err != nil || entry < 0 {
		entry = 0
	}
	return a.quote(req.Version, nonce, mask, partial == "0", entry)
}

// quote grows the IMA log, resets PCR 16 and extends it with H(NK PEM), quotes the PCRs in mask plus
// 16 over nonce and adds the IMA log from imaEntry on (imaEntry < 0: none).
func (a *Agent) quote(version, nonce string, mask uint32, withPubkey bool, imaEntry int) (*api.QuoteResponse, error) {
	f := a.tpm.faults()
	var pcrs [NumPCRs]int
	n := 0
	for p, m := 0, mask|1<<DataPCR; p < NumPCRs; p++ {
		if m&(1<<p) != 0 {
			pcrs[n] = p
			n++
		}
	}
	bind := a.nkDigest
	if f.DataPCRData != nil {
		h, _ := a.bank.Hash()
		d := h.New()
		d.Write(f.DataPCRData)
		bind = d.Sum(nil)
	}

	a.mu.Lock()
	var err error
	if a.ima != nil {
		err = a.growIMALocked(a.imaCfg.PerQuote)
	}
	if err == nil {
		err = a.tpm.Reset(DataPCR)
	}
	if err == nil {
		err = a.tpm.Extend(DataPCR, a.bank, bind)
	}
	var (
		attest, sig []byte
		values      map[int][]byte
	)
	if err == nil {
		attest, sig, values, err = a.tpm.Quote([]byte(nonce), a.bank, pcrs[:n])
	}
	var imaText string
	var imaFirst int
	if err == nil && a.ima != nil && imaEntry >= 0 {
		imaText, imaFirst = a.ima.from(imaEntry)
	}
	a.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	a.quotes.Add(1)

	blob, err := tpm.MarshalPCRBlob([]tpm.PCRBank{{Alg: a.bank, Values: values}})
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	res := &api.QuoteResponse{
		Quote:   (&tpm.Quote{Attest: attest, Signature: sig, PCRBlob: blob}).String(),
		HashAlg: a.hashAlg,
		EncAlg:  a.encAlg(version),
		SignAlg: a.signAlg(),
	}
	if withPubkey {
		res.PubKey = string(a.nkPEM)
	}
	if a.ima != nil && imaEntry >= 0 {
		res.IMAMeasurementList, res.IMAMeasurementListEntry = &imaText, &imaFirst
	}
	if f.Response != nil {
		f.Response(res)
	}
	return res, nil
}
