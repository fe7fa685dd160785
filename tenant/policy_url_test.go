package tenant_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/tenant"
)

// policyServer serves fixed bodies by path and counts the requests that reached it.
type policyServer struct {
	*httptest.Server
	hits atomic.Int32
}

func newPolicyServer(t *testing.T, tlsOn bool, routes map[string]http.HandlerFunc) *policyServer {
	t.Helper()
	ps := &policyServer{}
	mux := http.NewServeMux()
	for p, h := range routes {
		mux.HandleFunc(p, h)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.hits.Add(1)
		mux.ServeHTTP(w, r)
	})
	ps.Server = httptest.NewUnstartedServer(h)
	ps.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests want
	if tlsOn {
		ps.StartTLS()
	} else {
		ps.Start()
	}
	t.Cleanup(ps.Close)
	return ps
}

// roots trusts the test server's certificate, as the system pool trusts a real server's CA.
func (ps *policyServer) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ps.Certificate())
	return pool
}

func serve(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }
}

// TestPolicyDownloadPrepares: a runtime policy, a signed envelope and an allowlist downloaded over
// real HTTPS become the same input as the files, and PrepareRuntimePolicy gives the same result.
func TestPolicyDownloadPrepares(t *testing.T) {
	fx := newPolicyFixtures(t)
	allowlist := []byte(strings.Repeat("cd", 32) + "  /usr/bin/env\n")
	ps := newPolicyServer(t, true, map[string]http.HandlerFunc{
		"/policy.json":   serve(fx.policy),
		"/signed.json":   serve(fx.envelope),
		"/allowlist.txt": serve(allowlist),
	})
	f := tenant.PolicyFetcher{Timeout: 5 * time.Second, RootCAs: ps.roots()}
	for _, tc := range []struct {
		name     string
		urls     tenant.PolicyURLs
		in, file tenant.RuntimePolicyInput // in gets the download; file is the same input given as files
	}{
		{"policy", tenant.PolicyURLs{Policy: ps.URL + "/policy.json"},
			tenant.RuntimePolicyInput{Checksum: sha256Hex(fx.policy)},
			tenant.RuntimePolicyInput{Policy: fx.policy, Checksum: sha256Hex(fx.policy)}},
		{"signed policy", tenant.PolicyURLs{Policy: ps.URL + "/signed.json"},
			tenant.RuntimePolicyInput{Checksum: sha256Hex(fx.envelope), SigKey: fx.key},
			tenant.RuntimePolicyInput{Policy: fx.envelope, Checksum: sha256Hex(fx.envelope), SigKey: fx.key}},
		{"allowlist with excludes", tenant.PolicyURLs{Allowlist: ps.URL + "/allowlist.txt"},
			tenant.RuntimePolicyInput{Excludes: []byte("/tmp/.*\n")},
			tenant.RuntimePolicyInput{Allowlist: allowlist, Excludes: []byte("/tmp/.*\n")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if err := f.Download(context.Background(), &in, tc.urls); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.file, in); diff != "" {
				t.Fatalf("downloaded input differs from the files (-file +download):\n%s", diff)
			}
			got, err := tenant.PrepareRuntimePolicy(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := tenant.PrepareRuntimePolicy(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("prepared %s, want %s", got, want)
			}
			if _, err := ima.OpenRuntimePolicy(got, in.SigKey, in.SigKey != nil); err != nil {
				t.Errorf("prepared policy does not open: %v", err)
			}
		})
	}

	// The checksum is checked over the downloaded bytes, and a signature with another key fails, as for
	// files.
	in := tenant.RuntimePolicyInput{Checksum: strings.Repeat("0", 64)}
	if err := f.Download(context.Background(), &in, tenant.PolicyURLs{Policy: ps.URL + "/policy.json"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tenant.PrepareRuntimePolicy(in); !errors.Is(err, tenant.ErrBadPolicy) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("wrong checksum: err = %v, want ErrBadPolicy (checksum mismatch)", err)
	}
	in = tenant.RuntimePolicyInput{Checksum: sha256Hex(fx.envelope), SigKey: fx.otherKey}
	if err := f.Download(context.Background(), &in, tenant.PolicyURLs{Policy: ps.URL + "/signed.json"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tenant.PrepareRuntimePolicy(in); !errors.Is(err, tenant.ErrPolicySignature) {
		t.Errorf("other key: err = %v, want ErrPolicySignature", err)
	}
}

// TestPolicyFetchFailures: every way a download can fail is an ErrPolicyDownload naming the URL, and
// nothing larger than the limit is kept.
func TestPolicyFetchFailures(t *testing.T) {
	fx := newPolicyFixtures(t)
	var target atomic.Int32
	ps := newPolicyServer(t, true, map[string]http.HandlerFunc{
		"/policy.json": serve(fx.policy),
		"/moved": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/target.json", http.StatusFound)
		},
		"/target.json": func(w http.ResponseWriter, _ *http.Request) {
			target.Add(1)
			_, _ = w.Write(fx.policy)
		},
		"/big-declared": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(2048))
			_, _ = w.Write(make([]byte, 2048))
		},
		"/big-streamed": func(w http.ResponseWriter, _ *http.Request) {
			for range 4 { // chunked: no Content-Length, the limit is found while reading
				_, _ = w.Write(make([]byte, 512))
				w.(http.Flusher).Flush()
			}
		},
		"/at-limit": serve(make([]byte, 1024)),
		"/slow": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		},
	})
	small := tenant.PolicyFetcher{Timeout: 5 * time.Second, RootCAs: ps.roots(), MaxSize: 1024}

	t.Run("at the limit", func(t *testing.T) {
		b, err := small.Fetch(context.Background(), ps.URL+"/at-limit")
		if err != nil || len(b) != 1024 {
			t.Fatalf("got %d bytes, %v; want 1024", len(b), err)
		}
	})
	for _, tc := range []struct {
		name, path string
		f          tenant.PolicyFetcher
		want       []string // in the error message
	}{
		{"404", "/missing.json", small, []string{"/missing.json", "404 Not Found"}},
		{"redirect not followed", "/moved", small, []string{"/moved", "302", "redirects are not followed", "/target.json"}},
		{"declared body over the limit", "/big-declared", small, []string{"2048 bytes", "1024-byte limit"}},
		{"streamed body over the limit", "/big-streamed", small, []string{"over the 1024-byte limit"}},
		{"timeout", "/slow", tenant.PolicyFetcher{Timeout: 200 * time.Millisecond, RootCAs: ps.roots()}, []string{"/slow", "Timeout"}},
		{"certificate not trusted (system roots)", "/policy.json", tenant.PolicyFetcher{Timeout: 5 * time.Second}, []string{"certificate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.f.Fetch(context.Background(), ps.URL+tc.path)
			if !errors.Is(err, tenant.ErrPolicyDownload) {
				t.Fatalf("err = %v (%d bytes), want ErrPolicyDownload", err, len(b))
			}
			if b != nil {
				t.Errorf("kept %d bytes of a failed download", len(b))
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if n := target.Load(); n != 0 {
		t.Errorf("the redirect target was fetched %d times", n)
	}

	t.Run("default limit is 64 MiB", func(t *testing.T) {
		huge := newPolicyServer(t, false, map[string]http.HandlerFunc{"/": func(w http.ResponseWriter, _ *http.Request) {
			chunk := make([]byte, 1<<20)
			for range 64 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			_, _ = w.Write([]byte{0})
		}})
		_, err := tenant.PolicyFetcher{}.Fetch(context.Background(), huge.URL+"/")
		if !errors.Is(err, tenant.ErrPolicyDownload) || !strings.Contains(err.Error(), "64 MiB limit") {
			t.Errorf("err = %v, want ErrPolicyDownload over the 64 MiB limit", err)
		}
	})

	t.Run("password not shown", func(t *testing.T) {
		u := strings.Replace(ps.URL, "https://", "https://user:s3cret@", 1) + "/missing.json"
		_, err := small.Fetch(context.Background(), u)
		if !errors.Is(err, tenant.ErrPolicyDownload) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("err = %v, want ErrPolicyDownload without the password", err)
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		_, err = small.Fetch(context.Background(), "https://"+addr+"/p.json")
		if !errors.Is(err, tenant.ErrPolicyDownload) || !strings.Contains(err.Error(), addr) {
			t.Errorf("err = %v, want ErrPolicyDownload naming %s", err, addr)
		}
	})
}

// TestPolicyDownloadRefusals: bad URLs and combinations are refused before anything is fetched.
func TestPolicyDownloadRefusals(t *testing.T) {
	fx := newPolicyFixtures(t)
	ps := newPolicyServer(t, true, map[string]http.HandlerFunc{"/": serve(fx.policy)})
	f := tenant.PolicyFetcher{Timeout: 5 * time.Second, RootCAs: ps.roots()}
	for _, tc := range []struct {
		name string
		in   tenant.RuntimePolicyInput
		urls tenant.PolicyURLs
	}{
		{"policy file and URL", tenant.RuntimePolicyInput{Policy: fx.policy, Checksum: sha256Hex(fx.policy)}, tenant.PolicyURLs{Policy: ps.URL + "/"}},
		{"allowlist file and URL", tenant.RuntimePolicyInput{Allowlist: []byte("x")}, tenant.PolicyURLs{Allowlist: ps.URL + "/"}},
		{"policy URL without checksum", tenant.RuntimePolicyInput{}, tenant.PolicyURLs{Policy: ps.URL + "/"}},
		{"not http", tenant.RuntimePolicyInput{Checksum: sha256Hex(fx.policy)}, tenant.PolicyURLs{Policy: "ftp://127.0.0.1/p.json"}},
		{"file URL", tenant.RuntimePolicyInput{}, tenant.PolicyURLs{Allowlist: "file:///etc/passwd"}},
		{"relative", tenant.RuntimePolicyInput{}, tenant.PolicyURLs{Allowlist: "policy.json"}},
		{"no host", tenant.RuntimePolicyInput{}, tenant.PolicyURLs{Allowlist: "https:///p.json"}},
		// The second URL is bad: the first must not have been fetched either.
		{"bad second URL", tenant.RuntimePolicyInput{Checksum: sha256Hex(fx.policy)}, tenant.PolicyURLs{Policy: ps.URL + "/", Allowlist: "gopher://x/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if err := f.Download(context.Background(), &in, tc.urls); !errors.Is(err, tenant.ErrPolicyURL) {
				t.Errorf("err = %v, want ErrPolicyURL", err)
			}
			if diff := cmp.Diff(tc.in, in); diff != "" {
				t.Errorf("input changed:\n%s", diff)
			}
		})
	}
	if n := ps.hits.Load(); n != 0 {
		t.Errorf("the server was asked %d times", n)
	}
}

// TestPolicyDownloadPlainHTTP: http:// works as in Keylime's tenant; an allowlist (which no checksum
// covers) gets a warning, a runtime policy (checksum required) does not.
func TestPolicyDownloadPlainHTTP(t *testing.T) {
	fx := newPolicyFixtures(t)
	allowlist := []byte(strings.Repeat("cd", 32) + "  /usr/bin/env\n")
	ps := newPolicyServer(t, false, map[string]http.HandlerFunc{"/policy.json": serve(fx.policy), "/allowlist.txt": serve(allowlist)})
	for _, tc := range []struct {
		name     string
		in, want tenant.RuntimePolicyInput
		urls     tenant.PolicyURLs
		warn     bool
	}{
		{"allowlist", tenant.RuntimePolicyInput{}, tenant.RuntimePolicyInput{Allowlist: allowlist}, tenant.PolicyURLs{Allowlist: ps.URL + "/allowlist.txt"}, true},
		{"policy with checksum", tenant.RuntimePolicyInput{Checksum: sha256Hex(fx.policy)}, tenant.RuntimePolicyInput{Policy: fx.policy, Checksum: sha256Hex(fx.policy)}, tenant.PolicyURLs{Policy: ps.URL + "/policy.json"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			f := tenant.PolicyFetcher{Timeout: 5 * time.Second, Log: zerolog.New(&logs)}
			in := tc.in
			if err := f.Download(context.Background(), &in, tc.urls); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, in); diff != "" {
				t.Errorf("input (-want +got):\n%s", diff)
			}
			if warned := strings.Contains(logs.String(), `"level":"warn"`) && strings.Contains(logs.String(), "plain http"); warned != tc.warn {
				t.Errorf("warned = %v, want %v; logs:\n%s", warned, tc.warn, logs.String())
			}
			if !strings.Contains(logs.String(), ps.URL) {
				t.Errorf("the download is not logged with its URL:\n%s", logs.String())
			}
		})
	}
}

// TestPolicyFetchCancelled: the caller's context (e.g. Ctrl-C) stops a download.
func TestPolicyFetchCancelled(t *testing.T) {
	release := make(chan struct{})
	ps := newPolicyServer(t, true, map[string]http.HandlerFunc{"/": func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := tenant.PolicyFetcher{Timeout: 10 * time.Second, RootCAs: ps.roots()}.Fetch(ctx, ps.URL+"/")
	if !errors.Is(err, tenant.ErrPolicyDownload) || !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want ErrPolicyDownload wrapping context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
}
