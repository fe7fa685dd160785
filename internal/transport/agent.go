package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// AgentTransport is the verifier's http.RoundTripper for one agent. It keeps at most one idle
// connection and nothing else between requests: no goroutines and no buffers per connection (requests
// and responses go through pooled bufio buffers), and no parsed certificate: the handshake compares the
// pinned certificate's DER, decoded from its PEM per connection, with the one the agent presents.
// Thousands of agents polled every few seconds then cost a socket and a TLS state each, instead of
// net/http's two goroutines and 8 KiB of buffers per kept-alive connection.
//
// A connection that carried a large response is closed after it (its TLS record buffer would stay as
// large as the largest record); the next request resumes the TLS session, which costs no certificate
// or signature check. Sessions can live on disk instead of in memory (Session, DropSession,
// SetSessionSource), where a restarted verifier finds them too, so that it resumes as well.
// verifier resumes too.
type AgentTransport struct {
	addr string      // host:port
	base *tls.Config // shared by every agent: client certificate, versions, curves; nil for plain HTTP
	pem  string      // the pinned certificate (PEM, shared with the agent's record), decoded per handshake
	keep bool        // keep a connection alive between requests

	mu     sync.Mutex
	idle   net.Conn
	idleAt time.Time

	session atomic.Pointer[tls.ClientSessionState]
	// source returns the saved session, read when a connection needs one and none is in memory.
	source func() []byte
	// sessionGen counts new sessions (tickets) since the transport was made, so a caller saving them
	// knows when there is one to save.
	sessionGen atomic.Uint32
}

const (
	// maxKeptResponse is the largest response body after which the connection is kept.
	maxKeptResponse = 16 << 10
	// maxIdle is how long an idle connection is reused; agents close idle connections too (the Rust
	// agent after a few seconds), and a reused connection the agent closed costs a retry.
	maxIdle = 60 * time.Second
	// dialTimeout bounds connecting and the handshake when the request has no earlier deadline.
	dialTimeout = 10 * time.Second
	// maxResponseHead bounds a response's status line and headers (net/http's transport allows 10 MiB;
	// an agent has no reason to send more than a few hundred bytes).
	maxResponseHead = 64 << 10
)

// ErrResponseHead is returned for a response whose head (status line and headers) exceeds 64 KiB.
var ErrResponseHead = errors.New("response headers too large")

// headLimit reads from r, refusing to read more than left bytes while on (the response head).
type headLimit struct {
	r    io.Reader
	left int
	on   bool
}

func (h *headLimit) Read(p []byte) (int, error) {
	if !h.on {
		return h.r.Read(p)
	}
	if h.left <= 0 {
		return 0, ErrResponseHead
	}
	n, err := h.r.Read(p[:min(len(p), h.left)])
	h.left -= n
	return n, err
}

// AgentClientBase returns the TLS configuration shared by the AgentTransports of a verifier: TLS 1.2 or
// newer, cert as the client certificate, and P-256 or X25519 key exchange. A post-quantum hybrid key
// share per connection would cost more than the quote it carries (quotes are signed, not secret, and V
// travels wrapped for the agent's NK). P-256 comes first: Go's P-256 key exchange is about a fifth
// cheaper than its X25519 (85-90 against 100-120 µs per side here), and every handshake of a restarted
// verifier pays it on both ends.
func AgentClientBase(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, CurvePreferences: []tls.CurveID{tls.CurveP256, tls.X25519}}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// NewAgentTransport returns a transport to the agent at addr (host:port). With base nil it speaks plain
// HTTP; otherwise HTTPS with base's client certificate, accepting exactly the certificate pinnedPEM
// (the agent's self-signed certificate as registered), at whatever address it is reached. keepAlive
// false closes every connection after its request (resuming the TLS session on the next).
func NewAgentTransport(addr string, base *tls.Config, pinnedPEM string, keepAlive bool) (*AgentTransport, error) {
	t := &AgentTransport{addr: addr, base: base, keep: keepAlive}
	if base == nil {
		return t, nil
	}
	if _, err := CertPEMDER(pinnedPEM); err != nil {
		return nil, fmt.Errorf("pinned certificate: %w", err)
	}
	t.pem = pinnedPEM
	return t, nil
}

// URL is the agent's base URL: https://host:port, or http:// without TLS.
func (t *AgentTransport) URL() string {
	if t.base == nil {
		return "http://" + t.addr
	}
	return "https://" + t.addr
}

// Client returns an http.Client using t; deadlines come from the requests' contexts.
func (t *AgentTransport) Client() *http.Client { return &http.Client{Transport: t} }

// CloseIdle closes the idle connection, if any.
func (t *AgentTransport) CloseIdle() {
	t.mu.Lock()
	c := t.idle
	t.idle = nil
	t.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 2<<10) }}
)

// RoundTrip sends req on the idle connection or a new one. A request that fails on a reused connection
// before any answer came (the agent closed it while idle) is sent again once on a new connection, if it
// is a GET or nothing of it was written.
func (t *AgentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	conn, reused := t.take()
	for {
		if conn == nil {
			var err error
			if conn, err = t.dial(req.Context()); err != nil {
				closeBody(req)
				return nil, err
			}
		}
		resp, retry, err := t.exchange(conn, req, reused)
		if err == nil {
			return resp, nil
		}
		_ = conn.Close()
		rewindable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
		if !retry || !reused || !rewindable {
			closeBody(req)
			return nil, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, gerr
			}
			r2 := *req // a RoundTripper leaves the caller's request as it was
			r2.Body = body
			req = &r2
		}
		conn, reused = nil, false
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// take returns the idle connection if it is fresh enough.
func (t *AgentTransport) take() (net.Conn, bool) {
	t.mu.Lock()
	c, at := t.idle, t.idleAt
	t.idle = nil
	t.mu.Unlock()
	if c == nil {
		return nil, false
	}
	if time.Since(at) > maxIdle {
		_ = c.Close()
		return nil, false
	}
	return c, true
}

// put makes c the idle connection (closing any other).
func (t *AgentTransport) put(c net.Conn) {
	_ = c.SetDeadline(time.Time{})
	t.mu.Lock()
	old := t.idle
	t.idle, t.idleAt = c, time.Now()
	t.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
}

// exchange writes req on conn and reads the response head. retry reports a failure that a new
// connection may cure (nothing was answered; for requests other than GET, nothing was written).
func (t *AgentTransport) exchange(conn net.Conn, req *http.Request, reused bool) (resp *http.Response, retry bool, err error) {
	ctx := req.Context()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	} else {
		_ = conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(e error, r bool) (*http.Response, bool, error) {
		stop()
		if ctx.Err() != nil {
			e = ctx.Err()
			r = false
		}
		return nil, r, fmt.Errorf("%s %s: %w", req.Method, t.addr, e)
	}

	cw := &countWriter{w: conn}
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(cw)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writerPool.Put(bw)
	if err != nil {
		return fail(err, cw.n == 0 || req.Method == http.MethodGet)
	}

	br := readerPool.Get().(*bufio.Reader)
	lim := &headLimit{r: conn, left: maxResponseHead, on: true}
	br.Reset(lim)
	resp, err = http.ReadResponse(br, req)
	lim.on = false
	if err != nil {
		nothing := br.Buffered() == 0
		br.Reset(nil)
		readerPool.Put(br)
		return fail(err, reused && nothing && req.Method == http.MethodGet)
	}
	resp.Body = &agentBody{t: t, rc: resp.Body, conn: conn, br: br, stop: stop,
		keep: t.keep && !resp.Close && !req.Close}
	return resp, false, nil
}

type countWriter struct {
	w io.Writer
	n int
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

// agentBody hands the connection back when the body was read to its end, or closes it.
type agentBody struct {
	t    *AgentTransport
	rc   io.ReadCloser
	conn net.Conn
	br   *bufio.Reader
	stop func() bool
	n    int
	eof  bool
	keep bool
	done bool
}

func (b *agentBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.rc.Read(p)
	b.n += n
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *agentBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	b.stop()
	// The connection is reused only when the response ended cleanly with nothing after it.
	reuse := b.keep && b.eof && b.br.Buffered() == 0 && b.n <= maxKeptResponse
	b.br.Reset(nil)
	readerPool.Put(b.br)
	if reuse {
		b.t.put(b.conn)
	} else {
		_ = b.conn.Close()
	}
	return nil
}

// dial connects to the agent and, for HTTPS, completes a handshake that accepts only the pinned
// certificate, resuming the TLS session when there is one.
func (t *AgentTransport) dial(ctx context.Context) (net.Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dialTimeout)
		defer cancel()
	}
	var d net.Dialer
	if t.base == nil {
		return d.DialContext(ctx, "tcp", t.addr)
	}
	pinned, err := CertPEMDER(t.pem)
	if err != nil {
		return nil, fmt.Errorf("pinned certificate: %w", err)
	}
	conf := t.base.Clone()
	pin(conf, pinned)
	raw, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	conf.ClientSessionCache = (*agentSessionCache)(t)
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	// Only the handshake needs the pinned certificate; the connection keeps its configuration.
	conf.VerifyConnection = nil
	return tc, nil
}

// agentSessionCache is the transport as the one-entry TLS session cache of its agent (the cache key,
// the server name, may be shared by many agents).
type agentSessionCache AgentTransport

func (c *agentSessionCache) Get(string) (*tls.ClientSessionState, bool) {
	if s := c.session.Load(); s != nil {
		return s, true
	}
	if c.source == nil {
		return nil, false
	}
	b := c.source()
	if b == nil {
		return nil, false
	}
	s, err := parseSession(b)
	return s, err == nil
}

func (c *agentSessionCache) Put(_ string, cs *tls.ClientSessionState) {
	c.session.Store(cs)
	c.sessionGen.Add(1)
}

// SessionGen counts the TLS sessions the agent gave this transport (each new one is worth saving).
func (t *AgentTransport) SessionGen() uint32 { return t.sessionGen.Load() }

// Session returns the TLS session held in memory, in the form the session source gives back, with
// its SessionGen (nil when there is none). It holds the session's secret: store it like the
// verifier's private key.
func (t *AgentTransport) Session() ([]byte, uint32) {
	gen := t.sessionGen.Load()
	cs := t.session.Load()
	if cs == nil {
		return nil, gen
	}
	ticket, state, err := cs.ResumptionState()
	if err != nil || state == nil {
		return nil, gen
	}
	sb, err := state.Bytes()
	if err != nil {
		return nil, gen
	}
	out := binary.AppendUvarint(make([]byte, 0, 4+len(ticket)+len(sb)), uint64(len(ticket)))
	out = append(out, ticket...)
	return append(out, sb...), gen
}

// DropSession forgets the session held in memory once it was saved, unless a newer one (a later
// SessionGen) arrived since; the next connection that needs it reads it from the session source.
func (t *AgentTransport) DropSession(gen uint32) {
	if cs := t.session.Load(); cs != nil && t.sessionGen.Load() == gen {
		t.session.CompareAndSwap(cs, nil)
	}
}

// SetSessionSource sets where a saved session comes from when none is in memory (nil: nowhere). The
// function is called when a connection is made, and returns nil when there is no session.
func (t *AgentTransport) SetSessionSource(source func() []byte) { t.source = source }

func parseSession(b []byte) (*tls.ClientSessionState, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, errors.New("saved TLS session: bad length")
	}
	ticket := b[k : k+int(n)]
	state, err := tls.ParseSessionState(b[k+int(n):])
	if err != nil {
		return nil, fmt.Errorf("saved TLS session: %w", err)
	}
	cs, err := tls.NewResumptionState(ticket, state)
	if err != nil {
		return nil, fmt.Errorf("saved TLS session: %w", err)
	}
	return cs, nil
}
