package cli_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCACLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cv_ca")
	ca := func(args ...string) result {
		t.Helper()
		return run(t, nil, append([]string{"--set", "ca.cert_organization=Acme", "ca"}, args...)...)
	}

	r := ca("init", "--dir", dir, "--san", "verifier.example", "--json")
	r.expect(t, 0, "")
	var initOut struct {
		Dir    string   `json:"dir"`
		CACert string   `json:"ca_cert"`
		Files  []string `json:"files"`
	}
	decode(t, r, &initOut)
	for _, f := range []string{"cacert.crt", "ca-private.pem", "server-cert.crt", "server-private.pem", "client-cert.crt", "client-private.pem"} {
		if !slices.Contains(initOut.Files, filepath.Join(dir, f)) {
			t.Errorf("init did not report %s: %v", f, initOut.Files)
		}
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("init did not write %s: %v", f, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "ca-private.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode: %v %v", fi.Mode(), err)
	}
	caCert := readCert(t, initOut.CACert)
	if !caCert.IsCA || !slices.Equal(caCert.Subject.Organization, []string{"Acme"}) {
		t.Errorf("CA certificate %v (subject from [ca] not applied?)", caCert.Subject)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	server := readCert(t, filepath.Join(dir, "server-cert.crt"))
	if _, err := server.Verify(x509.VerifyOptions{Roots: roots, DNSName: "verifier.example"}); err != nil {
		t.Errorf("server certificate: %v", err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca-private.pem"))

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"init over an existing CA", []string{"init", "--dir", dir}, 1, "refusing to overwrite"},
		{"issue without a name", []string{"issue", "--dir", dir}, 2, "--name"},
		{"issue named ca", []string{"issue", "--dir", dir, "--name", "ca"}, 2, "CA's own key"},
		{"issue with a path name", []string{"issue", "--dir", dir, "--name", "../x"}, 2, "--name"},
		{"server and client", []string{"issue", "--dir", dir, "--name", "x", "--server", "--client"}, 2, "exclude"},
		{"unknown flag", []string{"issue", "--dir", dir, "--name", "x", "--nope"}, 2, "nope"},
		{"issue over an existing pair", []string{"issue", "--dir", dir, "--name", "server"}, 1, "already exists"},
		{"issue without a CA", []string{"issue", "--dir", t.TempDir(), "--name", "x"}, 1, "ca init"},
	} {
		t.Run(tc.name, func(t *testing.T) { ca(tc.args...).expect(t, tc.code, tc.want) })
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca-private.pem")); string(after) != string(before) {
		t.Fatal("the CA key changed")
	}

	for _, tc := range []struct {
		name, kind string
		args       []string
		eku        x509.ExtKeyUsage
		sans       []string
	}{
		{"web", "server", []string{"--san", "10.1.2.3", "--san", "web.example"}, x509.ExtKeyUsageServerAuth, []string{"web.example", "10.1.2.3", "127.0.0.1"}},
		{"operator", "client", []string{"--client"}, x509.ExtKeyUsageClientAuth, nil},
	} {
		t.Run("issue "+tc.kind, func(t *testing.T) {
			r := ca(append([]string{"issue", "--dir", dir, "--name", tc.name, "--json"}, tc.args...)...)
			r.expect(t, 0, "")
			var out struct {
				Kind       string   `json:"kind"`
				Cert       string   `json:"cert"`
				PrivateKey string   `json:"private_key"`
				PublicKey  string   `json:"public_key"`
				SANs       []string `json:"sans"`
			}
			decode(t, r, &out)
			if out.Kind != tc.kind || out.Cert != filepath.Join(dir, tc.name+"-cert.crt") ||
				out.PrivateKey != filepath.Join(dir, tc.name+"-private.pem") || out.PublicKey != filepath.Join(dir, tc.name+"-public.pem") {
				t.Fatalf("issue output %+v", out)
			}
			for _, f := range []string{out.Cert, out.PrivateKey, out.PublicKey} {
				if _, err := os.Stat(f); err != nil {
					t.Error(err)
				}
			}
			c := readCert(t, out.Cert)
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{tc.eku}}); err != nil {
				t.Errorf("not a %s certificate of the CA: %v", tc.kind, err)
			}
			if c.Subject.CommonName != tc.name {
				t.Errorf("CN %q", c.Subject.CommonName)
			}
			for _, s := range tc.sans {
				if !slices.Contains(out.SANs, s) {
					t.Errorf("SAN %s missing from %v", s, out.SANs)
				}
			}
		})
	}
}
