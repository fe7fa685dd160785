package ima

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fixtureDigests reads a captured log's digests the simple way: fields 4 (algo:hex) and 5 (path).
func fixtureDigests(t *testing.T, name string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, name)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		_, d, _ := strings.Cut(f[3], ":")
		if !slicesContains(out[f[4]], d) {
			out[f[4]] = append(out[f[4]], d)
		}
	}
	return out
}

func slicesContains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestDigestsFromLogFixtures(t *testing.T) {
	for _, capture := range []string{"vm-ovmf-ima-ng", "vm-ovmf-ima-sig"} {
		t.Run(capture, func(t *testing.T) {
			name := filepath.Join("testdata", capture, "ascii_runtime_measurements")
			got, err := DigestsFromLog(bytes.NewReader(readFile(t, name)), LogDigestOptions{Algo: "sha256"})
			if err != nil {
				t.Fatal(err)
			}
			want := fixtureDigests(t, name)
			if len(want["/opt/app/run2.sh"]) != 2 {
				t.Fatalf("fixture changed: %v", want)
			}
			if d := cmp.Diff(want, got.Digests); d != "" {
				t.Fatalf("digests (-want +got):\n%s", d)
			}
			if got.LogHashAlg != "sha1" || got.BootAggregateAlg != "sha256" || got.Entries != 7 {
				t.Fatalf("log hash %q, boot aggregate %q, %d entries", got.LogHashAlg, got.BootAggregateAlg, got.Entries)
			}

			// The policy built from the log accepts the log at the captured PCR 10.
			p := NewCreatedPolicy(time.Now())
			MergeDigests(p.Digests, got.Digests)
			p.IMA.LogHashAlg = got.LogHashAlg
			pcrs := readPCRs(t, filepath.Join("testdata", capture, "pcrs.txt"))
			res := Attest(State{}, Evidence{Log: readFile(t, name), Bank: crypto.SHA256, PCR10: pcrs["sha256"]["10"]}, MustCompile(p), Options{})
			if len(res.Failures) != 0 || res.Matched != 7 {
				t.Fatalf("own policy: %v (matched %d)", res.Failures, res.Matched)
			}

			// Asking for SHA-1 file digests keeps only the boot aggregate.
			got, err = DigestsFromLog(bytes.NewReader(readFile(t, name)), LogDigestOptions{Algo: "sha1"})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(map[string][]string{"boot_aggregate": want["boot_aggregate"]}, got.Digests); d != "" {
				t.Fatalf("sha1 digests (-want +got):\n%s", d)
			}
			if got.OtherAlgo["sha256"] != 6 {
				t.Fatalf("other algorithms %v", got.OtherAlgo)
			}
		})
	}
}

func TestDigestsFromLogEntries(t *testing.T) {
	cert := selfSignedCert(t, ecKey(t, "P-256"), nil)
	if _, err := x509.ParseCertificate(cert); err != nil {
		t.Fatal(err)
	}
	cert2 := selfSignedCert(t, rsaKey(t), nil)
	hexSHA := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

	fileA, _ := ngLine("/usr/bin/a", "a")
	fileB, _ := sigLine("/usr/bin/b", fileDigest("b"), nil)
	imaKey, _ := bufLine(".ima", cert)
	builtinKey, _ := bufLine(".builtin_trusted_keys", cert2)
	cmdline, _ := bufLine("kexec-cmdline", []byte("root=/dev/sda1"))
	violation := fmt.Sprintf("10 %s ima-ng sha256:%s /var/log/messages", strings.Repeat("0", 40), strings.Repeat("0", 64))
	badHash := strings.Replace(fileA, fileA[3:7], "ffff", 1)
	badHash = strings.Replace(badHash, "/usr/bin/a", "/usr/bin/evil", 1)
	// An ima-ng entry with a SHA-1 file digest.
	d1 := sha1.Sum([]byte("c"))
	var td bytes.Buffer
	tdDigest(&td, "sha1", d1[:])
	tdName(&td, "/usr/bin/c")
	fileC := logLine(10, td.Bytes(), "ima-ng", fmt.Sprintf("sha1:%x", d1), "/usr/bin/c")
	// An ima-ng entry with an MD5 digest, which no runtime policy can hold.
	dm := md5.Sum([]byte("m"))
	td.Reset()
	tdDigest(&td, "md5", dm[:])
	tdName(&td, "/usr/bin/m")
	fileM := logLine(10, td.Bytes(), "ima-ng", fmt.Sprintf("md5:%x", dm), "/usr/bin/m")
	log := join(fileA, fileB, imaKey, builtinKey, cmdline, violation, badHash, fileC, fileM)

	files := map[string][]string{"/usr/bin/a": {hexSHA([]byte("a"))}, "/usr/bin/b": {hexSHA([]byte("b"))}}
	tests := []struct {
		name                                      string
		opts                                      LogDigestOptions
		digests, keyrings, imaBuf                 map[string][]string
		ignoredKeys, buffers, otherAlgo, excluded int
	}{
		{"defaults", LogDigestOptions{Algo: "sha256"}, files, map[string][]string{}, map[string][]string{}, 2, 1, 1, 0},
		{"every algorithm", LogDigestOptions{},
			map[string][]string{"/usr/bin/a": files["/usr/bin/a"], "/usr/bin/b": files["/usr/bin/b"], "/usr/bin/c": {hex.EncodeToString(d1[:])}},
			map[string][]string{}, map[string][]string{}, 2, 1, 0, 0},
		{"keyrings", LogDigestOptions{Algo: "sha256", Keyrings: true}, files,
			map[string][]string{".ima": {hexSHA(cert)}, ".builtin_trusted_keys": {hexSHA(cert2)}}, map[string][]string{}, 0, 1, 1, 0},
		{"ignored keyring", LogDigestOptions{Algo: "sha256", Keyrings: true, IgnoredKeyrings: []string{".builtin_trusted_keys"}}, files,
			map[string][]string{".ima": {hexSHA(cert)}}, map[string][]string{}, 1, 1, 1, 0},
		{"all keyrings ignored", LogDigestOptions{Algo: "sha256", Keyrings: true, IgnoredKeyrings: []string{"*"}}, files,
			map[string][]string{}, map[string][]string{}, 2, 1, 1, 0},
		{"ima-buf", LogDigestOptions{Algo: "sha256", IMABuf: true}, files, map[string][]string{},
			map[string][]string{"kexec-cmdline": {hexSHA([]byte("root=/dev/sda1"))}}, 2, 0, 1, 0},
		{"excluded", LogDigestOptions{Algo: "sha256", Excluded: func(p string) bool { return p == "/usr/bin/b" }},
			map[string][]string{"/usr/bin/a": files["/usr/bin/a"]}, map[string][]string{}, map[string][]string{}, 2, 1, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DigestsFromLog(bytes.NewReader(log), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				what      string
				want, got map[string][]string
			}{{"digests", tc.digests, got.Digests}, {"keyrings", tc.keyrings, got.Keyrings}, {"ima-buf", tc.imaBuf, got.IMABuf}} {
				if d := cmp.Diff(c.want, c.got); d != "" {
					t.Errorf("%s (-want +got):\n%s", c.what, d)
				}
			}
			if got.Violations != 1 || got.BadTemplateHash != 1 || got.IgnoredKeys != tc.ignoredKeys || got.Buffers != tc.buffers ||
				got.OtherAlgo["sha1"] != tc.otherAlgo || got.OtherAlgo["md5"] != 1 || got.Excluded != tc.excluded || got.Entries != 9 {
				t.Errorf("counts %+v", got)
			}
		})
	}
}

func TestDigestsFromLogMalformed(t *testing.T) {
	fileA, _ := ngLine("/usr/bin/a", "a")
	_, err := DigestsFromLog(bytes.NewReader(join(fileA, "10 abc ima-ng sha256:00 /x")), LogDigestOptions{})
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 2 || !errors.Is(err, ErrMalformedEntry) {
		t.Fatalf("error %v", err)
	}
}

// tree writes files (path → content) under a new directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestDigestsFromRootfs(t *testing.T) {
	files := map[string]string{
		"/usr/bin/a":           "alpha",
		"/usr/lib/x/b.so":      strings.Repeat("b", 300000),
		"/opt/my app/run.sh":   "#!/bin/sh\n",
		"/etc/skip/me":         "excluded by pattern",
		"/proc/1/status":       "virtual",
		"/var/lib/state":       "mutable",
		"/usr/share/empty.txt": "",
	}
	root := tree(t, files)
	if err := os.Symlink("a", filepath.Join(root, "usr/bin/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "usr/bin/outside")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "usr/bin/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	excludes, err := CompileExcludes([]string{"/etc/skip/.*"})
	if err != nil {
		t.Fatal(err)
	}
	digest := func(h crypto.Hash, s string) string {
		w := h.New()
		w.Write([]byte(s))
		return hex.EncodeToString(w.Sum(nil))
	}

	tests := []struct {
		name     string
		opts     RootfsOptions
		want     []string // paths (as in files) expected, with their policy names
		excluded int64
	}{
		{"defaults", RootfsOptions{Excluded: func(p string) bool { return excludes.MatchString(p) }},
			[]string{"/usr/bin/a", "/usr/lib/x/b.so", "/opt/my app/run.sh", "/usr/share/empty.txt"}, 1},
		{"sha1 and nothing skipped", RootfsOptions{Algo: crypto.SHA1, SkipDirs: []string{}, Workers: 1},
			[]string{"/usr/bin/a", "/usr/lib/x/b.so", "/opt/my app/run.sh", "/usr/share/empty.txt", "/etc/skip/me", "/proc/1/status", "/var/lib/state"}, 0},
		{"own skip list", RootfsOptions{Algo: crypto.SHA512, SkipDirs: []string{"usr/lib", "/etc/", "/proc", "/var"}},
			[]string{"/usr/bin/a", "/opt/my app/run.sh", "/usr/share/empty.txt"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var calls []HashProgress
			tc.opts.Progress = func(p HashProgress) { mu.Lock(); calls = append(calls, p); mu.Unlock() }
			tc.opts.ProgressEvery = time.Millisecond
			got, err := DigestsFromRootfs(context.Background(), root, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			algo := tc.opts.Algo
			if algo == 0 {
				algo = crypto.SHA256
			}
			want := map[string][]string{}
			var bytes int64
			for _, p := range tc.want {
				want[strings.ReplaceAll(p, " ", "_")] = []string{digest(algo, files[p])}
				bytes += int64(len(files[p]))
			}
			if d := cmp.Diff(want, got.Digests); d != "" {
				t.Fatalf("digests (-want +got):\n%s", d)
			}
			if got.Progress.Files != int64(len(tc.want)) || got.Progress.Bytes != bytes || got.Progress.Excluded != tc.excluded ||
				got.Progress.Unreadable != 0 || !got.Progress.Done {
				t.Fatalf("progress %+v (want %d files, %d bytes)", got.Progress, len(tc.want), bytes)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(calls) == 0 || calls[len(calls)-1] != got.Progress {
				t.Fatalf("progress calls %+v, final %+v", calls, got.Progress)
			}
			for i := 1; i < len(calls); i++ {
				if calls[i].Files < calls[i-1].Files || calls[i].Bytes < calls[i-1].Bytes || calls[i-1].Done {
					t.Fatalf("progress not monotonic or Done early: %+v", calls)
				}
			}
		})
	}
}

func TestDigestsFromRootfsErrors(t *testing.T) {
	root := tree(t, map[string]string{"/a": "a"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := DigestsFromRootfs(ctx, root, RootfsOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled walk: %v", err)
	}
	if _, err := DigestsFromRootfs(context.Background(), filepath.Join(root, "a"), RootfsOptions{}); err == nil {
		t.Error("a file as rootfs was accepted")
	}
	if _, err := DigestsFromRootfs(context.Background(), filepath.Join(root, "missing"), RootfsOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing rootfs: %v", err)
	}
	if _, err := DigestsFromRootfs(context.Background(), root, RootfsOptions{Algo: crypto.MD5}); !errors.Is(err, ErrUnsupportedBank) {
		t.Errorf("md5: %v", err)
	}
	if os.Geteuid() != 0 {
		if err := os.WriteFile(filepath.Join(root, "secret"), []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
		got, err := DigestsFromRootfs(context.Background(), root, RootfsOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Progress.Unreadable != 1 || len(got.UnreadablePaths) != 1 || !strings.HasPrefix(got.UnreadablePaths[0], "/secret: ") {
			t.Fatalf("unreadable: %+v %v", got.Progress, got.UnreadablePaths)
		}
		if _, ok := got.Digests["/a"]; !ok {
			t.Fatal("readable file missing")
		}
	}
}

func TestMergePolicy(t *testing.T) {
	rsaRing := NewKeyring()
	if err := rsaRing.Add(&rsaKey(t).PublicKey, 0); err != nil {
		t.Fatal(err)
	}
	ecRing := NewKeyring()
	if err := ecRing.Add(&ecKey(t, "P-256").PublicKey, 0); err != nil {
		t.Fatal(err)
	}
	d := func(c byte) string { return strings.Repeat(string(c), 64) }

	dst := NewCreatedPolicy(time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC))
	if dst.Meta.Timestamp != "2024-05-06 07:08:09.123456" {
		t.Fatalf("timestamp %q", dst.Meta.Timestamp)
	}
	dst.Digests["/a"] = []string{d('b')}
	dst.Excludes = []string{"/tmp/.*"}
	dst.VerificationKeys = rsaRing.String()

	src := EmptyRuntimePolicy()
	src.Digests["/a"] = []string{strings.ToUpper(d('a')), d('b')}
	src.Digests["/b"] = []string{d('c')}
	src.Keyrings[".ima"] = []string{d('d')}
	src.IMABuf["kexec-cmdline"] = []string{d('e')}
	src.Excludes = []string{"/var/.*", "/tmp/.*"}
	src.IMA.IgnoredKeyrings = []string{".builtin_trusted_keys"}
	src.VerificationKeys = ecRing.String()

	warnings, err := MergePolicy(dst, src)
	if err != nil || len(warnings) != 0 {
		t.Fatal(err, warnings)
	}
	dst.Normalize()
	want := map[string][]string{"/a": {d('a'), d('b')}, "/b": {d('c')}}
	if diff := cmp.Diff(want, dst.Digests); diff != "" {
		t.Fatalf("digests (-want +got):\n%s", diff)
	}
	if !cmp.Equal(dst.Excludes, []string{"/tmp/.*", "/var/.*"}) || !cmp.Equal(dst.IMA.IgnoredKeyrings, []string{".builtin_trusted_keys"}) ||
		!cmp.Equal(dst.Keyrings, map[string][]string{".ima": {d('d')}}) || !cmp.Equal(dst.IMABuf, map[string][]string{"kexec-cmdline": {d('e')}}) {
		t.Fatalf("merged %+v", dst)
	}
	ring, _, err := ParseVerificationKeys(dst.VerificationKeys)
	if err != nil || ring.Len() != 2 {
		t.Fatalf("verification keys %v: %v", dst.VerificationKeys, err)
	}
	b, err := dst.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeRuntimePolicy(b); err != nil {
		t.Fatalf("merged policy does not decode: %v", err)
	}

	// Keys already present are not added twice; a broken keyring is an error.
	if _, err := AddVerificationKeys(dst, rsaRing, ecRing); err != nil {
		t.Fatal(err)
	}
	if ring, _, _ := ParseVerificationKeys(dst.VerificationKeys); ring.Len() != 2 {
		t.Fatalf("keys added twice: %d", ring.Len())
	}
	bad := EmptyRuntimePolicy()
	bad.VerificationKeys = `{"pubkeys": 1}`
	if _, err := MergePolicy(dst, bad); !errors.Is(err, ErrBadKeyring) {
		t.Fatalf("bad keyring: %v", err)
	}
}

func TestPolicyPath(t *testing.T) {
	if got := PolicyPath("/opt/my app/a b"); got != "/opt/my_app/a_b" {
		t.Fatal(got)
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$`).MatchString(NewCreatedPolicy(time.Now()).Meta.Timestamp) {
		t.Fatal("timestamp layout")
	}
}

// FuzzDigestsFromLog feeds arbitrary logs to DigestsFromLog: it must not panic, and whatever it
// keeps must make a policy the decoder takes and that accepts those entries.
func FuzzDigestsFromLog(f *testing.F) {
	for _, c := range []string{"vm-ovmf-ima-ng", "vm-ovmf-ima-sig"} {
		f.Add(readFile(f, filepath.Join("testdata", c, "ascii_runtime_measurements")))
	}
	f.Add(readFile(f, filepath.Join("testdata", "keylime", "ima-log-sha256")))
	line, _ := bufLine("kexec-cmdline", []byte("root=/dev/sda"))
	f.Add(join(line, fmt.Sprintf("10 %s ima-ng sha256:%s /x", strings.Repeat("0", 40), strings.Repeat("0", 64))))
	f.Fuzz(func(t *testing.T, log []byte) {
		got, err := DigestsFromLog(bytes.NewReader(log), LogDigestOptions{Keyrings: true, IMABuf: true})
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error is not a ParseError: %v", err)
			}
			return
		}
		p := NewCreatedPolicy(time.Now())
		MergeDigests(p.Digests, got.Digests)
		MergeDigests(p.Keyrings, got.Keyrings)
		MergeDigests(p.IMABuf, got.IMABuf)
		p.Normalize()
		b, err := p.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRuntimePolicy(b); err != nil {
			t.Fatalf("policy from a log does not decode: %v\n%s", err, b)
		}
	})
}
