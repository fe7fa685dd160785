package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keylime-go/keylime/agent"
	"github.com/keylime-go/keylime/internal/payload"
	"github.com/keylime-go/keylime/internal/testbed"
)

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	devID, mountPoint, opts, fsType, superOpts string
}

// mountAt returns the topmost mount on dir, if any.
func mountAt(t *testing.T, dir string) (mountInfo, bool) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found mountInfo
	ok := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 6 || len(fields) < sep+4 {
			continue
		}
		mp := strings.ReplaceAll(fields[4], `\040`, " ")
		if mp == dir {
			found, ok = mountInfo{devID: fields[2], mountPoint: mp, opts: fields[5], fsType: fields[sep+1], superOpts: fields[sep+3]}, true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return found, ok
}

func devID(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	dev := uint64(st.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^uint64(0xfff)
	minor := dev&0xff | (dev>>12)&^uint64(0xff)
	return fmt.Sprintf("%d:%d", major, minor)
}

func hasOpt(list, opt string) bool {
	for _, o := range strings.Split(list, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// TestPayloadSecureDirTmpfs: with mount_secure_tmpfs, the agent decrypts the payload onto a private tmpfs
// (size and mode as configured, nosuid and nodev) mounted on its secure directory, runs autorun.sh there,
// and unmounts it when it stops, so the decrypted files are gone with it. Needs root (CI runs as root).
func TestPayloadSecureDirTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	testbed.RequireSWTPM(t)
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{})
	dataDir := t.TempDir()
	secure := filepath.Join(dataDir, "secure")
	t.Cleanup(func() {
		// Never leave a mount behind, whatever the test saw (runs before the temp dir is removed).
		for i := 0; i < 3 && syscall.Unmount(secure, syscall.MNT_DETACH) == nil; i++ {
		}
	})
	a := s.StartAgent(AgentOptions{DataDir: dataDir, Payload: agent.PayloadConfig{SecureDir: secure, SecureSize: "2m", MountTmpfs: true,
		EncKeyName: "derived_tci_key", DecPayloadFile: "decrypted_payload", ExtractZip: true, Script: "autorun.sh", ScriptTimeout: 10 * time.Second}})
	if _, err := s.WaitActive(a.UUID(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, ok := mountAt(t, secure); ok {
		t.Fatal("a tmpfs is mounted before any payload")
	}
	k, u, v, _ := payload.Split(nil)
	sendU(t, agentClient(t, s, a), a.UUID(), k, u, zipFiles(t, map[string]string{"autorun.sh": "#!/bin/sh\necho ran > marker\n", "secret.txt": "s3cr3t"}))
	pol, err := a.PCRPolicy(15)
	if err != nil {
		t.Fatal(err)
	}
	req, err := s.AddRequest(a.UUID(), pol)
	if err != nil {
		t.Fatal(err)
	}
	vb := base64.StdEncoding.EncodeToString(v)
	req.V = &vb
	if err := s.Verifier.Add(context.Background(), a.UUID(), req); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(secure, "unzipped", "marker")
	if got := string(waitContent(t, marker, 10*time.Second)); got != "ran\n" {
		t.Fatalf("marker = %q", got)
	}

	m, ok := mountAt(t, secure)
	if !ok {
		t.Fatal("no mount on the secure directory: the payload went to disk")
	}
	if m.fsType != "tmpfs" || !hasOpt(m.superOpts, "size=2048k") || !hasOpt(m.superOpts, "mode=700") ||
		!hasOpt(m.opts, "nosuid") || !hasOpt(m.opts, "nodev") {
		t.Errorf("secure mount = %+v, want tmpfs size=2048k mode=700 nosuid nodev", m)
	}
	for _, f := range []string{"marker", "secret.txt", "derived_tci_key", "decrypted_payload"} {
		if id := devID(t, filepath.Join(secure, "unzipped", f)); id != m.devID {
			t.Errorf("%s is on device %s, not on the tmpfs (%s)", f, id, m.devID)
		}
	}
	if fi, err := os.Stat(secure); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("secure directory mode: %v %v", fi.Mode().Perm(), err)
	}

	a.Stop()
	if m, ok := mountAt(t, secure); ok {
		t.Fatalf("tmpfs still mounted after the agent stopped: %+v", m)
	}
	entries, err := os.ReadDir(secure)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("secure directory holds %d entries after the agent stopped", len(entries))
	}
}
