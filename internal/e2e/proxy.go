package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/transport"
)

// Proxy is a man in the middle between the verifier and an agent, to inject faults: it terminates TLS
// with a certificate of the test's choice (the agent's own, stolen, or another), forwards each request to
// an upstream agent over mTLS, and lets the test rewrite quote responses.
type Proxy struct {
	Port int

	mu       sync.Mutex
	upstream string
	hc       *http.Client
	mutate   func(*api.QuoteResponse)
}

// StartProxy listens on loopback presenting serverCert and forwards to agent a.
func (s *System) StartProxy(t testing.TB, serverCert tls.Certificate, a *Agent) *Proxy {
	t.Helper()
	p := &Proxy{}
	p.SetUpstream(t, s, a)
	ln := listen(t)
	p.Port = ln.Addr().(*net.TCPAddr).Port
	cl := s.ClientTLS()
	conf := transport.ServerConfig(serverCert, cl.Pool, transport.RequireClientCert)
	srv := transport.NewServer(http.HandlerFunc(p.serve), conf, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- transport.Serve(ctx, srv, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

// SetUpstream points the proxy at agent a (pinned to a's certificate).
func (p *Proxy) SetUpstream(t testing.TB, s *System, a *Agent) {
	t.Helper()
	cert, err := transport.LoadKeyPair(filepath.Join(a.DataDir, "server-cert.crt"), filepath.Join(a.DataDir, "server-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	cl := s.ClientTLS()
	conf := transport.PinnedClientConfig(&cl.Cert, leaf)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.upstream = "https://127.0.0.1:" + strconv.Itoa(a.Port)
	p.hc = transport.NewHTTPClient(conf, 10*time.Second)
}

// Mutate sets a function applied to every quote response passing through (nil: pass unchanged).
func (p *Proxy) Mutate(f func(*api.QuoteResponse)) {
	p.mu.Lock()
	p.mutate = f
	p.mu.Unlock()
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	upstream, hc, mutate := p.upstream, p.hc, p.mutate
	p.mu.Unlock()
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, upstream+r.URL.RequestURI(), r.Body)
	resp, err := hc.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if mutate != nil && resp.StatusCode == http.StatusOK && bytes.Contains([]byte(r.URL.Path), []byte("/quotes/")) {
		var env api.Envelope
		var q api.QuoteResponse
		var raw api.Response
		if json.Unmarshal(body, &raw) == nil && raw.Decode(&q) == nil {
			mutate(&q)
			env = api.Success(q)
			body, _ = json.Marshal(env)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}
