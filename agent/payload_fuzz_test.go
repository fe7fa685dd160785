package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzUnzip: whatever the (decrypted) zip, unzip writes nothing outside its directory and never panics.
func FuzzUnzip(f *testing.F) {
	f.Add(zipOrdered(f, "autorun.sh", "#!/bin/sh\necho ran\n", "sub/dir/file", "x"))
	f.Add(zipOrdered(f, "../escape", "x"))
	f.Add(zipOrdered(f, "/abs", "x"))
	f.Add(zipOrdered(f, "dir/", "", "dir/../../up", "x"))
	f.Add([]byte("PK\x03\x04garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		root := t.TempDir()
		dir := filepath.Join(root, "in", "unzipped")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		_ = unzip(b, dir)
		err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if p != root && p != filepath.Join(root, "in") && p != dir && !strings.HasPrefix(p, dir+string(filepath.Separator)) {
				t.Errorf("unzip wrote %s outside %s", p, dir)
			}
			if fi.Mode()&os.ModeSymlink != 0 {
				t.Errorf("unzip created a symlink %s", p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzParseList: action names never contain separators or brackets at their ends, and are never empty.
func FuzzParseList(f *testing.F) {
	for _, s := range []string{"a,b", "[a, 'b', \"c\"]", "a\nb\n", "", " , ,", "'", "[]", "a/b,../c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, n := range parseList(s) {
			if n == "" || strings.ContainsAny(n, ", \t\n\r") {
				t.Fatalf("parseList(%q) gave %q", s, n)
			}
		}
	})
}
