package transport

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/ca"
)

// agentServer is an HTTPS agent stand-in that counts connections and resumed handshakes.
type agentServer struct {
	addr    string
	conns   atomic.Int32
	resumed atomic.Int32
	// closeIdle makes the server close every connection as soon as it goes idle, without telling.
	closeIdle atomic.Bool
}

func startAgentServer(t *testing.T, conf *tls.Config, h http.HandlerFunc) *agentServer {
	t.Helper()
	s := &agentServer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	wrapped := func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && r.TLS.DidResume {
			s.resumed.Add(1)
		}
		h(w, r)
	}
	srv := NewServer(http.HandlerFunc(wrapped), conf, zerolog.Nop())
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
		case http.StateIdle:
			if s.closeIdle.Load() {
				_ = c.Close()
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s
}

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func do(t *testing.T, tr *AgentTransport, method, path, body string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, tr.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.Client().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestAgentTransport(t *testing.T) {
	dir := newCA(t)
	agentPair, agentCert := selfSigned(t, "agent-1")
	impostorPair, _ := selfSigned(t, "agent-1")
	client := pair(t, dir, "client")
	base := AgentClientBase(&client)
	big := strings.Repeat("x", 100<<10)
	handler := func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			_, _ = io.WriteString(w, big)
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		case "/slow":
			time.Sleep(time.Second)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}
	serverConf := ServerConfig(agentPair, pool(t, dir), RequireClientCert)
	pinned := certPEM(agentCert.Raw)

	t.Run("one connection for many requests", func(t *testing.T) {
		s := startAgentServer(t, serverConf, handler)
		tr, err := NewAgentTransport(s.addr, base, pinned, true)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			if got, err := do(t, tr, http.MethodGet, "/", ""); err != nil || got != "ok" {
				t.Fatalf("request %d: %q, %v", i, got, err)
			}
		}
		if got, err := do(t, tr, http.MethodPost, "/echo", "payload"); err != nil || got != "payload" {
			t.Fatalf("POST: %q, %v", got, err)
		}
		if n := s.conns.Load(); n != 1 {
			t.Errorf("%d connections for 6 requests, want 1", n)
		}
	})

	t.Run("a large response closes the connection; the next resumes", func(t *testing.T) {
		s := startAgentServer(t, serverConf, handler)
		tr, _ := NewAgentTransport(s.addr, base, pinned, true)
		if got, err := do(t, tr, http.MethodGet, "/big", ""); err != nil || len(got) != len(big) {
			t.Fatalf("big: %d bytes, %v", len(got), err)
		}
		if _, err := do(t, tr, http.MethodGet, "/", ""); err != nil {
			t.Fatal(err)
		}
		if n, r := s.conns.Load(), s.resumed.Load(); n != 2 || r != 1 {
			t.Errorf("connections %d, resumed %d; want 2 and 1", n, r)
		}
	})

	t.Run("per request connections resume the session", func(t *testing.T) {
		s := startAgentServer(t, serverConf, handler)
		tr, _ := NewAgentTransport(s.addr, base, pinned, false)
		for i := 0; i < 4; i++ {
			if _, err := do(t, tr, http.MethodGet, "/", ""); err != nil {
				t.Fatal(err)
			}
		}
		if n, r := s.conns.Load(), s.resumed.Load(); n != 4 || r != 3 {
			t.Errorf("connections %d, resumed %d; want 4 and 3", n, r)
		}
	})

	t.Run("a connection the agent closed while idle is replaced", func(t *testing.T) {
		s := startAgentServer(t, serverConf, handler)
		tr, _ := NewAgentTransport(s.addr, base, pinned, true)
		if _, err := do(t, tr, http.MethodGet, "/", ""); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the connection went idle on the server before the switch
		s.closeIdle.Store(true)
		for i := 0; i < 3; i++ {
			if got, err := do(t, tr, http.MethodGet, "/", ""); err != nil || got != "ok" {
				t.Fatalf("request %d after the agent closed the connection: %q, %v", i, got, err)
			}
		}
		// The first request after the switch still found its connection open; the other two were
		// sent again on new connections.
		if n := s.conns.Load(); n != 3 {
			t.Errorf("%d connections, want 3", n)
		}
	})

	t.Run("a restored session resumes in a new transport", func(t *testing.T) {
		s := startAgentServer(t, serverConf, handler)
		tr, _ := NewAgentTransport(s.addr, base, pinned, true)
		if _, err := do(t, tr, http.MethodGet, "/", ""); err != nil {
			t.Fatal(err)
		}
		if tr.SessionGen() == 0 {
			t.Fatal("no session ticket was received")
		}
		saved, gen := tr.Session()
		if saved == nil || gen != tr.SessionGen() {
			t.Fatalf("Session() = %d bytes, gen %d; want a session of gen %d", len(saved), gen, tr.SessionGen())
		}
		tr.DropSession(gen)
		if b, _ := tr.Session(); b != nil {
			t.Fatal("the session is still in memory after DropSession")
		}
		tr2, _ := NewAgentTransport(s.addr, base, pinned, true)
		tr2.SetSessionSource(func() []byte { return saved })
		if _, err := do(t, tr2, http.MethodGet, "/", ""); err != nil {
			t.Fatal(err)
		}
		if r := s.resumed.Load(); r != 1 {
			t.Errorf("resumed %d, want 1", r)
		}
		// A saved session that does not parse is ignored: the connection makes a full handshake.
		tr3, _ := NewAgentTransport(s.addr, base, pinned, true)
		tr3.SetSessionSource(func() []byte { return saved[:len(saved)-8] })
		if _, err := do(t, tr3, http.MethodGet, "/", ""); err != nil {
			t.Fatalf("request with a corrupt saved session: %v", err)
		}
		if r, n := s.resumed.Load(), s.conns.Load(); r != 1 || n != 3 {
			t.Errorf("resumed %d of %d connections, want 1 of 3", r, n)
		}
	})

	t.Run("an impostor is refused", func(t *testing.T) {
		s := startAgentServer(t, ServerConfig(impostorPair, pool(t, dir), RequireClientCert), handler)
		tr, _ := NewAgentTransport(s.addr, base, pinned, true)
		_, err := do(t, tr, http.MethodGet, "/", "")
		var cve *tls.CertificateVerificationError
		if err == nil || !(errors.Is(err, ErrPinMismatch) || errors.As(err, &cve)) {
			t.Fatalf("impostor: %v, want a certificate error", err)
		}
	})

	t.Run("the agent refuses a verifier without a client certificate", func(t *testing.T) {
		s := startAgentServer(t, serverConf, handler)
		tr, _ := NewAgentTransport(s.addr, AgentClientBase(nil), pinned, true)
		if _, err := do(t, tr, http.MethodGet, "/", ""); err == nil {
			t.Fatal("request without a client certificate succeeded")
		}
	})

	t.Run("the context's deadline ends a request", func(t *testing.T) {
		s := startAgentServer(t, serverConf, handler)
		tr, _ := NewAgentTransport(s.addr, base, pinned, true)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+s.addr+"/slow", nil)
		start := time.Now()
		_, err := tr.Client().Do(req)
		if err == nil || time.Since(start) > time.Second {
			t.Fatalf("err %v after %v, want a timeout within 1 s", err, time.Since(start))
		}
		if got, err := do(t, tr, http.MethodGet, "/", ""); err != nil || got != "ok" {
			t.Fatalf("request after a timeout: %q, %v", got, err)
		}
	})

	t.Run("plain HTTP", func(t *testing.T) {
		s := startAgentServer(t, nil, handler)
		tr, _ := NewAgentTransport(s.addr, nil, "", true)
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got, err := do(t, tr, http.MethodGet, "/", ""); err != nil || got != "ok" {
					t.Errorf("%q, %v", got, err)
				}
			}()
		}
		wg.Wait()
		if got, err := do(t, tr, http.MethodGet, "/", ""); err != nil || got != "ok" {
			t.Fatalf("%q, %v", got, err)
		}
	})

	t.Run("endless response headers are refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
			for i := 0; i < 10000; i++ { // 10 MB of headers unless the client hangs up
				if _, err := io.WriteString(c, line); err != nil {
					return
				}
			}
		}()
		tr, _ := NewAgentTransport(ln.Addr().String(), nil, "", true)
		_, err = do(t, tr, http.MethodGet, "/", "")
		if !errors.Is(err, ErrResponseHead) {
			t.Fatalf("err = %v, want ErrResponseHead", err)
		}
	})

	t.Run("a certificate without a name to verify is refused", func(t *testing.T) {
		if _, err := NewAgentTransport("127.0.0.1:1", base, "not pem", true); err == nil {
			t.Error("accepted a transport without a pinned certificate")
		}
	})
}

// FuzzParseSession feeds saved sessions (read back from verifier.db) to the parser: bad ones are
// errors, never a panic.
func FuzzParseSession(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 'a', 'b', 'c', 1, 2, 3})
	f.Add(append([]byte{4, 1, 2, 3, 4}, make([]byte, 64)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseSession(b)
	})
}

// BenchmarkKeptAliveGET is one GET of a 2.5 KB answer on a kept-alive pinned mTLS connection, through
// AgentTransport and through net/http's transport (client and server both in this process).
func BenchmarkKeptAliveGET(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "cv_ca")
	if _, err := ca.Ensure(dir, ca.DefaultSubject, nil); err != nil {
		b.Fatal(err)
	}
	agentPair, agentCert := selfSigned(b, "agent-1")
	client, err := LoadKeyPair(filepath.Join(dir, "client-cert.crt"), filepath.Join(dir, "client-private.pem"))
	if err != nil {
		b.Fatal(err)
	}
	roots, err := LoadPool(filepath.Join(dir, ca.CACertFile))
	if err != nil {
		b.Fatal(err)
	}
	answer := strings.Repeat("q", 2500)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, answer) }),
		ServerConfig(agentPair, roots, RequireClientCert), zerolog.Nop())
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	b.Cleanup(func() { _ = srv.Close() })
	url := "https://" + ln.Addr().String() + "/"

	run := func(b *testing.B, hc *http.Client) {
		b.ReportAllocs()
		cpu0 := processCPU(b)
		for b.Loop() {
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
		b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	}
	b.Run("AgentTransport", func(b *testing.B) {
		tr, err := NewAgentTransport(ln.Addr().String(), AgentClientBase(&client), certPEM(agentCert.Raw), true)
		if err != nil {
			b.Fatal(err)
		}
		run(b, tr.Client())
	})
	// A connection per request, each resuming the TLS session (what every agent costs a restarted
	// verifier): both ends' CPU, as client and server share this process.
	for _, curve := range []tls.CurveID{tls.CurveP256, tls.X25519} {
		b.Run("AgentTransport/resumed/"+curve.String(), func(b *testing.B) {
			base := AgentClientBase(&client)
			base.CurvePreferences = []tls.CurveID{curve}
			tr, err := NewAgentTransport(ln.Addr().String(), base, certPEM(agentCert.Raw), false)
			if err != nil {
				b.Fatal(err)
			}
			run(b, tr.Client())
		})
	}
	b.Run("net/http", func(b *testing.B) {
		conf := PinnedClientConfig(&client, agentCert)
		run(b, NewHTTPClient(conf, 10*time.Second))
	})
}

// processCPU is the CPU time this process has used (user and system).
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
