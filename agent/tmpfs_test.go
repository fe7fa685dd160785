package agent

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/payload"
)

// mountFSType returns the filesystem type mounted exactly at dir, or "".
func mountFSType(t *testing.T, dir string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsType := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options… - fstype source superoptions
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[4] != dir {
			continue
		}
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) {
				fsType = fields[i+1] // the last mount on dir wins
			}
		}
	}
	return fsType
}

// With mount_secure_tmpfs a root agent decrypts payloads into a tmpfs (never onto a disk) and unmounts
// it when it stops, taking the secrets with it.
func TestSecureTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root: the tmpfs secure directory must be tested")
		}
		t.Skip("mounting a tmpfs needs root")
	}
	a, dir := payloadAgent(t)
	a.cfg.Payload.MountTmpfs = true
	a.cfg.Payload.SecureSize = "2m"
	secure := a.cfg.Payload.SecureDir
	t.Cleanup(a.unmountSecure)
	h := a.Handler()
	k, u, v, _ := payload.Split(nil)
	sealed, _ := payload.Encrypt(nil, k, zipOf(t, map[string]string{"secret.txt": "s3cr3t"}))
	wrap := func(half []byte) string { s, _ := payload.WrapKey(nil, &a.nk.PublicKey, half); return s }
	if code, msg := post(t, h, "/v2.6/keys/ukey", api.UKeyRequest{AuthTag: payload.Tag(k, a.uuid), EncryptedKey: wrap(u), Payload: sealed}); code != 200 {
		t.Fatalf("ukey: %d %s", code, msg)
	}
	a.boot.mu.Lock()
	a.boot.handled = make(chan struct{})
	a.boot.mu.Unlock()
	if code, _ := post(t, h, "/v2.6/keys/vkey", api.VKeyRequest{EncryptedKey: wrap(v)}); code != 200 {
		t.Fatal("vkey")
	}
	<-a.boot.handled
	if b, err := os.ReadFile(filepath.Join(dir, "secret.txt")); err != nil || string(b) != "s3cr3t" {
		t.Fatalf("payload not extracted: %v", err)
	}
	if got := mountFSType(t, secure); got != "tmpfs" {
		t.Fatalf("secure directory %s is on %q, want a tmpfs", secure, got)
	}
	if fi, err := os.Stat(secure); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("secure tmpfs mode: %v %v", fi.Mode(), err)
	}
	a.unmountSecure()
	if got := mountFSType(t, secure); got == "tmpfs" {
		t.Fatal("the secure tmpfs is still mounted after the agent stopped")
	}
	if _, err := os.Stat(filepath.Join(dir, "secret.txt")); err == nil {
		t.Fatal("the decrypted payload outlived the agent")
	}
}
