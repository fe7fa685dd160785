package registrar

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/tpm"
	"github.com/keylime-go/keylime/tpm/device"
)

// server is a registrar serving on loopback with real HTTP and HTTPS listeners.
type server struct {
	reg       *Registrar
	plainURL  string
	tlsURL    string
	caDir     string
	admin     *client.Registrar // HTTPS with the CA's client certificate
	public    *client.Registrar // plain HTTP
	adminHTTP *http.Client
	stop      func()
}

func startRegistrar(t *testing.T, dbPath string) *server {
	t.Helper()
	caDir := filepath.Join(t.TempDir(), "cv_ca")
	if _, err := ca.Ensure(caDir, ca.DefaultSubject, nil); err != nil {
		t.Fatal(err)
	}
	return startRegistrarWithCA(t, dbPath, caDir)
}

func startRegistrarWithCA(t *testing.T, dbPath, caDir string) *server {
	t.Helper()
	serverPair, err := transport.LoadKeyPair(filepath.Join(caDir, "server-cert.crt"), filepath.Join(caDir, "server-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := transport.LoadPool(filepath.Join(caDir, ca.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := New(Config{DBPath: dbPath, TLS: transport.ServerConfig(serverPair, pool, transport.OptionalClientCert), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Serve(ctx, plain, tlsLn) }()
	clientPair, err := transport.LoadKeyPair(filepath.Join(caDir, "client-cert.crt"), filepath.Join(caDir, "client-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	adminHTTP := transport.NewHTTPClient(transport.ClientConfig(&clientPair, pool), 10*time.Second)
	s := &server{
		reg:       reg,
		plainURL:  "http://" + plain.Addr().String(),
		tlsURL:    "https://" + tlsLn.Addr().String(),
		caDir:     caDir,
		adminHTTP: adminHTTP,
	}
	s.admin = client.NewRegistrar(adminHTTP, s.tlsURL, api.CurrentVersion)
	s.public = client.NewRegistrar(transport.NewHTTPClient(nil, 10*time.Second), s.plainURL, api.CurrentVersion)
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registrar serve: %v", err)
		}
		if err := reg.Close(); err != nil {
			t.Errorf("registrar close: %v", err)
		}
	}
	t.Cleanup(s.stop)
	return s
}

// identity is one TPM's registration material, made on a real swtpm.
type identity struct {
	tpm *device.TPM
	ek  *device.EK
	ak  *device.AK
}

func newIdentity(t *testing.T, ekAlg, akAlg device.KeyAlg) *identity {
	t.Helper()
	sw := testbed.StartSWTPM(t)
	dev, err := device.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	ek, err := dev.EK(ekAlg)
	if err != nil {
		t.Fatal(err)
	}
	ak, _, err := dev.LoadOrCreateAK(t.TempDir(), ek, akAlg)
	if err != nil {
		t.Fatal(err)
	}
	return &identity{tpm: dev, ek: ek, ak: ak}
}

func (id *identity) request(t *testing.T) *api.RegisterRequest {
	t.Helper()
	ip := "127.0.0.1"
	port := api.Port(9002)
	mtls := "disabled"
	req := &api.RegisterRequest{
		EKTPM:    base64.StdEncoding.EncodeToString(id.ek.PublicBytes),
		AIKTPM:   base64.StdEncoding.EncodeToString(id.ak.PublicBytes),
		IP:       &ip,
		Port:     &port,
		MTLSCert: &mtls,
	}
	if id.ek.Cert != nil {
		s := base64.StdEncoding.EncodeToString(id.ek.Cert)
		req.EKCert = &s
	}
	return req
}

// activate answers a registration blob with the TPM and returns the auth_tag.
func (id *identity) activate(t *testing.T, agentID, blobB64 string) string {
	t.Helper()
	blob, err := base64.StdEncoding.DecodeString(blobB64)
	if err != nil {
		t.Fatal(err)
	}
	idObj, encSecret, err := tpm.ParseCredentialBlob(blob)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := id.tpm.ActivateCredential(id.ek, id.ak, idObj, encSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	return tpm.AuthTag(secret, agentID)
}

func TestRegisterAndActivate(t *testing.T) {
	testbed.RequireSWTPM(t)
	for _, tc := range []struct {
		name         string
		ekAlg, akAlg device.KeyAlg
	}{
		{"RSA EK, RSA AK", device.RSA, device.RSA},
		{"ECC EK, ECC AK", device.ECC, device.ECC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startRegistrar(t, filepath.Join(t.TempDir(), "registrar.db"))
			id := newIdentity(t, tc.ekAlg, tc.akAlg)
			ctx := context.Background()
			const agentID = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000"
			req := id.request(t)
			blob, err := s.public.Register(ctx, agentID, req)
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			// Not active yet: invisible to the admin API.
			if _, err := s.admin.Agent(ctx, agentID); client.StatusCode(err) != http.StatusNotFound {
				t.Fatalf("inactive agent visible: %v", err)
			}
			if err := s.public.Activate(ctx, agentID, id.activate(t, agentID, blob)); err != nil {
				t.Fatalf("activate: %v", err)
			}
			got, err := s.admin.Agent(ctx, agentID)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if !got.Active || got.RegCount != 1 || got.AIKTPM != req.AIKTPM || got.EKTPM != req.EKTPM {
				t.Errorf("record = %+v", got)
			}
			if id.ek.Cert == nil || got.EKCert == nil || *got.EKCert != base64.StdEncoding.EncodeToString(id.ek.Cert) {
				t.Errorf("EK cert not kept as base64 DER: %v", got.EKCert)
			}
			if got.MTLSCert == nil || *got.MTLSCert != "disabled" || got.IP == nil || *got.IP != "127.0.0.1" || got.Port == nil || *got.Port != 9002 {
				t.Errorf("contact data = %+v", got)
			}
			ids, err := s.admin.List(ctx)
			if err != nil || len(ids) != 1 || ids[0] != agentID {
				t.Errorf("list = %v, %v", ids, err)
			}
		})
	}
}

func TestRestartKeepsAgentsAndReRegistration(t *testing.T) {
	testbed.RequireSWTPM(t)
	db := filepath.Join(t.TempDir(), "registrar.db")
	s := startRegistrar(t, db)
	id := newIdentity(t, device.RSA, device.RSA)
	ctx := context.Background()
	const agentID = "agent-restart"
	blob, err := s.public.Register(ctx, agentID, id.request(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.public.Activate(ctx, agentID, id.activate(t, agentID, blob)); err != nil {
		t.Fatal(err)
	}
	s.stop()
	s = startRegistrarWithCA(t, db, s.caDir)
	got, err := s.admin.Agent(ctx, agentID)
	if err != nil || !got.Active {
		t.Fatalf("after restart: %+v, %v", got, err)
	}
	// The same TPM registers again (agent restart): accepted, still active, new challenge works.
	blob, err = s.public.Register(ctx, agentID, id.request(t))
	if err != nil {
		t.Fatalf("re-registration: %v", err)
	}
	if err := s.public.Activate(ctx, agentID, id.activate(t, agentID, blob)); err != nil {
		t.Fatalf("re-activation: %v", err)
	}
	got, err = s.admin.Agent(ctx, agentID)
	if err != nil || !got.Active || got.RegCount != 1 {
		t.Fatalf("after re-registration: %+v, %v", got, err)
	}
}

func TestTakeoverRefused(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := startRegistrar(t, filepath.Join(t.TempDir(), "registrar.db"))
	victim := newIdentity(t, device.RSA, device.RSA)
	attacker := newIdentity(t, device.RSA, device.RSA)
	ctx := context.Background()
	const agentID = "victim"
	blob, err := s.public.Register(ctx, agentID, victim.request(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.public.Activate(ctx, agentID, victim.activate(t, agentID, blob)); err != nil {
		t.Fatal(err)
	}
	before := dump(t, s.reg)

	// Another TPM under the same UUID: 403, nothing changes.
	_, err = s.public.Register(ctx, agentID, attacker.request(t))
	if client.StatusCode(err) != http.StatusForbidden || !strings.Contains(err.Error(), "different EK") {
		t.Fatalf("takeover: %v", err)
	}
	// Same EK but another AK (e.g. an AK the attacker made elsewhere): also 403.
	mixed := victim.request(t)
	mixed.AIKTPM = attacker.request(t).AIKTPM
	_, err = s.public.Register(ctx, agentID, mixed)
	if client.StatusCode(err) != http.StatusForbidden || !strings.Contains(err.Error(), "different AK") {
		t.Fatalf("AK swap: %v", err)
	}
	// Same keys, EK certificate dropped: 403 too.
	nocert := victim.request(t)
	nocert.EKCert = nil
	if _, err = s.public.Register(ctx, agentID, nocert); client.StatusCode(err) != http.StatusForbidden {
		t.Fatalf("EK cert swap: %v", err)
	}
	if after := dump(t, s.reg); !bytes.Equal(before, after) {
		t.Errorf("store changed by refused registrations:\n%s\n%s", before, after)
	}
}

func TestWrongAuthTag(t *testing.T) {
	testbed.RequireSWTPM(t)
	s := startRegistrar(t, filepath.Join(t.TempDir(), "registrar.db"))
	id := newIdentity(t, device.RSA, device.RSA)
	ctx := context.Background()
	const agentID = "wrong-tag"
	blob, err := s.public.Register(ctx, agentID, id.request(t))
	if err != nil {
		t.Fatal(err)
	}
	good := id.activate(t, agentID, blob)
	bad := tpm.AuthTag([]byte("not the challenge at all, 32 chr"), agentID)
	if err := s.public.Activate(ctx, agentID, bad); client.StatusCode(err) != http.StatusBadRequest {
		t.Fatalf("wrong tag: %v", err)
	}
	// A tag computed for another agent id is wrong too.
	if err := s.public.Activate(ctx, agentID, id.activate(t, "other-agent", blob)); client.StatusCode(err) != http.StatusBadRequest {
		t.Fatalf("tag for another id: %v", err)
	}
	if _, err := s.admin.Agent(ctx, agentID); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("agent active after wrong tags: %v", err)
	}
	// The record is kept (not deleted as upstream does) and the right tag still works.
	if err := s.public.Activate(ctx, agentID, good); err != nil {
		t.Fatalf("right tag after wrong ones: %v", err)
	}
}

func TestAdminNeedsClientCert(t *testing.T) {
	s := startRegistrar(t, filepath.Join(t.TempDir(), "registrar.db"))
	ctx := context.Background()
	// Plain port: admin routes refused.
	if _, err := s.public.List(ctx); client.StatusCode(err) != http.StatusForbidden {
		t.Fatalf("list over plain HTTP: %v", err)
	}
	// TLS port without a client certificate: refused.
	pool, _ := transport.LoadPool(filepath.Join(s.caDir, ca.CACertFile))
	anon := client.NewRegistrar(transport.NewHTTPClient(transport.ClientConfig(nil, pool), 5*time.Second), s.tlsURL, api.CurrentVersion)
	if _, err := anon.List(ctx); client.StatusCode(err) != http.StatusForbidden {
		t.Fatalf("list without client cert: %v", err)
	}
	// A client certificate from another CA fails the handshake.
	other := filepath.Join(t.TempDir(), "other")
	if _, err := ca.Ensure(other, ca.DefaultSubject, nil); err != nil {
		t.Fatal(err)
	}
	foreign, _ := transport.LoadKeyPair(filepath.Join(other, "client-cert.crt"), filepath.Join(other, "client-private.pem"))
	stranger := client.NewRegistrar(transport.NewHTTPClient(transport.ClientConfig(&foreign, pool), 5*time.Second), s.tlsURL, api.CurrentVersion)
	if _, err := stranger.List(ctx); err == nil {
		t.Fatal("client cert from another CA accepted")
	}
	// Version is public on both ports.
	if v, err := s.public.Version(ctx); err != nil || v.CurrentVersion != api.CurrentVersion {
		t.Fatalf("version: %+v, %v", v, err)
	}
	if ids, err := s.admin.List(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("admin list: %v, %v", ids, err)
	}
	if err := s.admin.Delete(ctx, "nobody"); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("delete unknown: %v", err)
	}
}

// dump returns every record of the store, to compare before and after refused requests.
func dump(t *testing.T, r *Registrar) []byte {
	t.Helper()
	kvs, err := r.db.List(bucketAgents)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, kv := range kvs {
		fmt.Fprintf(&buf, "%s=%s\n", kv.Key, kv.Value)
	}
	return buf.Bytes()
}

// rawRequest sends method/path with body over plain HTTP and returns the code and envelope status.
func rawRequest(t *testing.T, hc *http.Client, base, method, path, contentType string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env api.Response
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatalf("%s %s: non-JSON body %q", method, path, raw)
	}
	return resp.StatusCode, env.Status
}

var _ = tls.VersionTLS12
