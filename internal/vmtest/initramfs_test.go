package vmtest

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// cpioRecord is one entry read back from a newc archive.
type cpioRecord struct {
	Name string
	Mode uint32
	Data string
}

// readNewc parses a gzip-compressed newc archive independently of the writer (fixed offsets of the
// 110-byte header, 4-byte alignment), up to the trailer.
func readNewc(t *testing.T, gz []byte) []cpioRecord {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	field := func(h []byte, i int) int {
		v, err := strconv.ParseUint(string(h[6+8*i:6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("header field %d %q: %v", i, h[6+8*i:6+8*i+8], err)
		}
		return int(v)
	}
	var out []cpioRecord
	for off := 0; ; {
		if len(raw)-off < 110 || string(raw[off:off+6]) != "070701" {
			t.Fatalf("no newc header at %d", off)
		}
		h := raw[off : off+110]
		mode, size, nameSize := field(h, 1), field(h, 6), field(h, 11)
		name := string(raw[off+110 : off+110+nameSize-1])
		if raw[off+110+nameSize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		off += 110 + nameSize
		off += pad4(off)
		data := string(raw[off : off+size])
		off += size
		off += pad4(off)
		if name == "TRAILER!!!" {
			if rest := raw[off:]; len(bytes.Trim(rest, "\x00")) != 0 {
				t.Fatalf("%d bytes after the trailer", len(rest))
			}
			return out
		}
		out = append(out, cpioRecord{Name: name, Mode: uint32(mode), Data: data})
	}
}

func TestInitramfsNewc(t *testing.T) {
	r := NewInitramfs()
	r.File("/etc/keylime/keylime.toml", []byte("[agent]\n"), 0o600)
	r.Symlink("bin/sh", "busybox")
	r.File("bin/busybox", []byte("odd-sized!"), 0o755)
	r.Dir("/var/lib/keylime/", 0o700)
	r.File("init", nil, 0o755)
	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	got := readNewc(t, buf.Bytes())
	want := []cpioRecord{
		{"bin", modeDir | 0o755, ""},
		{"bin/busybox", modeRegular | 0o755, "odd-sized!"},
		{"bin/sh", modeSymlink | 0o777, "busybox"},
		{"etc", modeDir | 0o755, ""},
		{"etc/keylime", modeDir | 0o755, ""},
		{"etc/keylime/keylime.toml", modeRegular | 0o600, "[agent]\n"},
		{"init", modeRegular | 0o755, ""},
		{"var", modeDir | 0o755, ""},
		{"var/lib", modeDir | 0o755, ""},
		{"var/lib/keylime", modeDir | 0o700, ""},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("archive (-want +got):\n%s", d)
	}
}

// cpio(1), when installed, lists and extracts what the writer produced.
func TestInitramfsReadByCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	r := NewInitramfs()
	r.File("a/b/c.txt", []byte("hello\n"), 0o640)
	r.Symlink("a/link", "b/c.txt")
	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet")
	cmd.Dir, cmd.Stdin = dir, zr
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v: %s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "a", "link"))
	if err != nil || string(b) != "hello\n" {
		t.Fatalf("through the symlink: %q %v", b, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "a", "b", "c.txt"))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("c.txt mode %v %v", fi.Mode(), err)
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b string
		want bool
	}{
		{"numeric abi", "6.1.0-9-amd64", "6.1.0-56-amd64", true},
		{"numeric abi reversed", "6.1.0-56-amd64", "6.1.0-9-amd64", false},
		{"major", "5.10.0-30-amd64", "6.1.0-1-amd64", true},
		{"equal", "6.1.0-56-amd64", "6.1.0-56-amd64", false},
		{"cloud flavour", "6.1.0-56-amd64", "6.1.0-56-cloud-amd64", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionLess(tc.a, tc.b); got != tc.want {
				t.Errorf("versionLess(%q, %q) = %v", tc.a, tc.b, got)
			}
		})
	}
}

// moduleFiles orders dependencies first, loads each once and leaves out built-in modules.
func TestModuleFiles(t *testing.T) {
	dir := t.TempDir()
	dep := strings.Join([]string{
		"kernel/fs/9p/9p.ko.xz: kernel/fs/netfs/netfs.ko.xz kernel/fs/fscache/fscache.ko.xz kernel/net/9p/9pnet.ko.xz",
		"kernel/fs/netfs/netfs.ko.xz:",
		"kernel/fs/fscache/fscache.ko.xz: kernel/fs/netfs/netfs.ko.xz",
		"kernel/net/9p/9pnet.ko.xz:",
		"kernel/net/9p/9pnet_virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/net/9p/9pnet.ko.xz",
		"kernel/drivers/virtio/virtio_ring.ko.xz:",
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/virtio/virtio_ring.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &Host{Modules: dir, KernelVersion: "test"}
	got, err := h.moduleFiles("9pnet_virtio", "9p")
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i] = moduleName(got[i])
	}
	want := []string{"9pnet", "9pnet_virtio", "netfs", "fscache", "9p"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("load order (-want +got):\n%s", d)
	}
	if _, err := h.moduleFiles("virtio_net"); err == nil {
		t.Error("a missing module gave no error")
	}
}
