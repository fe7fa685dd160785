package cli

import (
	"archive/zip"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/keylime-go/keylime/internal/ca"
)

func zipNames(t *testing.T, b []byte) []string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	sort.Strings(names)
	return names
}

func TestReadPayload(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "inc")
	if err := os.MkdirAll(filepath.Join(inc, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(inc, "autorun.sh"), []byte("#!/bin/sh\n"), 0o700)
	_ = os.WriteFile(filepath.Join(inc, "sub", "x"), []byte("x"), 0o600)
	file := filepath.Join(dir, "f")
	_ = os.WriteFile(file, []byte("data"), 0o600)
	caDir := filepath.Join(dir, "cv_ca")
	if _, err := ca.Ensure(caDir, ca.DefaultSubject, nil); err != nil {
		t.Fatal(err)
	}

	if b, err := readPayload(file, "", "", "a"); err != nil || string(b) != "data" {
		t.Fatalf("-f: %q %v", b, err)
	}
	b, err := readPayload("", inc, "", "a")
	if err != nil || strings.Join(zipNames(t, b), ",") != "autorun.sh,sub/x" {
		t.Fatalf("--include: %v %v", zipNames(t, b), err)
	}
	b, err = readPayload("", inc, caDir, "agent-1")
	if err != nil {
		t.Fatal(err)
	}
	want := "RevocationNotifier-cert.crt,agent-1-cert.crt,agent-1-private.pem,agent-1-public.pem,autorun.sh,cacert.crt,cacrl.der,cacrl.pem,sub/x"
	if got := strings.Join(zipNames(t, b), ","); got != want {
		t.Fatalf("--cert package: %s", got)
	}
	for _, bad := range [][3]string{{file, inc, ""}, {file, "", caDir}, {"", "", filepath.Join(dir, "nope")}, {filepath.Join(dir, "missing"), "", ""}} {
		if _, err := readPayload(bad[0], bad[1], bad[2], "a"); err == nil {
			t.Errorf("readPayload(%q, %q, %q) accepted", bad[0], bad[1], bad[2])
		}
	}
}
