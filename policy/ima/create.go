package ima

import (
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the pure building blocks of `keylime policy create runtime`: digests from an IMA
// log, digests from a directory tree, and merging policies.

// TimestampLayout is how the policy tools write meta.timestamp: Python's str(datetime.now()).
const TimestampLayout = "2006-01-02 15:04:05.000000"

// NewCreatedPolicy returns the empty policy the policy tools start from: version 1, generator
// GeneratorLegacyAllowList (what keylime-policy writes) and meta.timestamp set to now.
func NewCreatedPolicy(now time.Time) *RuntimePolicy {
	p := EmptyRuntimePolicy()
	p.Meta.Generator = GeneratorLegacyAllowList
	p.Meta.Timestamp = now.Format(TimestampLayout)
	return p
}

// PolicyPath is the name a file has in a runtime policy: spaces become '_', as IMA writes them in
// the ASCII log (keylime-policy does the same).
func PolicyPath(path string) string { return strings.ReplaceAll(path, " ", "_") }

// LogDigestOptions say which entries of an IMA log DigestsFromLog keeps.
type LogDigestOptions struct {
	// Algo keeps only file digests of this algorithm ("sha256"); "" keeps every algorithm. The
	// boot_aggregate entry is kept whatever its algorithm.
	Algo string
	// Keyrings keeps the digests of keys loaded onto keyrings (ima-buf entries whose buffer is a key
	// or certificate), by keyring name.
	Keyrings bool
	// IMABuf keeps the digests of the other ima-buf entries (kexec-cmdline, selinux-state, …).
	IMABuf bool
	// IgnoredKeyrings are keyrings whose keys are not kept ("*" is all).
	IgnoredKeyrings []string
	// Excluded, when set, reports paths to leave out (the policy's excludes).
	Excluded func(path string) bool
}

// LogDigests is what DigestsFromLog found, with counts of what it left out and why.
type LogDigests struct {
	// Digests, Keyrings and IMABuf are the policy tables: name → digests (lower-case hex).
	Digests, Keyrings, IMABuf map[string][]string
	// LogHashAlg is the algorithm of the template-hash column of the first entry ("" for an empty log).
	LogHashAlg string
	// BootAggregateAlg is the digest algorithm of the boot_aggregate entry ("" without one).
	BootAggregateAlg string
	// Entries is the number of entries read.
	Entries int
	// OtherAlgo counts entries left out because their digest algorithm is not Algo, or is one a policy
	// cannot hold (md5), by algorithm.
	OtherAlgo map[string]int
	// Violations counts violation entries (no digest to keep); BadTemplateHash entries whose template
	// hash does not match their data (the line cannot be trusted); Excluded entries matching Excluded.
	Violations, BadTemplateHash, Excluded int
	// IgnoredKeys counts keyring entries of ignored keyrings (or all, without Keyrings); Buffers
	// counts other ima-buf entries left out (without IMABuf); BadKeys counts keys IMA signatures
	// cannot use (Attest reports them as ima.invalid_key).
	IgnoredKeys, Buffers, BadKeys int
}

// DigestsFromLog reads an ASCII IMA log (ascii_runtime_measurements) and collects the digests a
// policy needs to accept it, as `keylime-policy create runtime --ima-measurement-list` does: the
// file digest of every ima, ima-ng, ima-sig and ima-modsig entry under its path (boot_aggregate
// included), and with Keyrings or IMABuf the ima-buf digests, told apart the way Attest tells them
// apart (a buffer that parses as a key or certificate is a keyring entry). Violations and entries
// whose template hash is wrong are left out. A malformed line is an error (a *ParseError naming the
// line): a policy is not built from a log that cannot be read.
func DigestsFromLog(r io.Reader, opts LogDigestOptions) (*LogDigests, error) {
	out := &LogDigests{
		Digests: map[string][]string{}, Keyrings: map[string][]string{}, IMABuf: map[string][]string{},
		OtherAlgo: map[string]int{},
	}
	p := NewParser(r, 0)
	for {
		e, err := p.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		out.Entries++
		if out.LogHashAlg == "" {
			out.LogHashAlg = BankName(e.TemplateHashAlg)
		}
		switch {
		case e.Violation:
			out.Violations++
			continue
		case !e.TemplateHashOK:
			out.BadTemplateHash++
			continue
		}
		name := string(e.Name)
		if len(e.Digest) < minPolicyDigest {
			// MD5 and shorter: a runtime policy cannot hold them (Keylime's schema wants 40-128 hex digits).
			out.OtherAlgo[e.DigestAlg]++
			continue
		}
		digest := hex.EncodeToString(e.Digest)
		if e.Kind != KindBuffer {
			if name == bootAggregate {
				if out.BootAggregateAlg == "" {
					out.BootAggregateAlg = e.DigestAlg
				}
				addDigest(out.Digests, name, digest)
				continue
			}
			if opts.Algo != "" && e.DigestAlg != opts.Algo {
				out.OtherAlgo[e.DigestAlg]++
				continue
			}
			if opts.Excluded != nil && opts.Excluded(name) {
				out.Excluded++
				continue
			}
			addDigest(out.Digests, name, digest)
			continue
		}
		_, _, kerr := ParsePublicKey(e.Buf)
		switch {
		case kerr == nil || errors.Is(kerr, ErrUnsupportedCurve):
			if !opts.Keyrings || slices.Contains(opts.IgnoredKeyrings, name) || slices.Contains(opts.IgnoredKeyrings, "*") {
				out.IgnoredKeys++
				continue
			}
			addDigest(out.Keyrings, name, digest)
		case errors.Is(kerr, ErrUnsupportedKey):
			out.BadKeys++
		case !opts.IMABuf:
			out.Buffers++
		default:
			addDigest(out.IMABuf, name, digest)
		}
	}
	return out, nil
}

// minPolicyDigest is the shortest digest a runtime policy holds (SHA-1, 20 bytes).
const minPolicyDigest = 20

// addDigest adds d to m[name] unless it is there.
func addDigest(m map[string][]string, name, d string) {
	if !slices.Contains(m[name], d) {
		m[name] = append(m[name], d)
	}
}

// DefaultSkipDirs are the directories (relative to the root) DigestsFromRootfs does not descend
// into unless told otherwise: keylime-policy's BASE_EXCLUDE_DIRS, virtual file systems and
// mutable data that a policy of file digests cannot pin.
var DefaultSkipDirs = []string{"/sys", "/run", "/proc", "/lost+found", "/dev", "/media", "/snap", "/mnt", "/var", "/tmp"}

// RootfsOptions configure DigestsFromRootfs.
type RootfsOptions struct {
	// Algo is the digest algorithm (crypto.SHA256 when 0).
	Algo crypto.Hash
	// SkipDirs are directories, as policy paths relative to the root ("/proc"), whose subtrees are
	// not walked. nil means DefaultSkipDirs; pass an empty, non-nil slice to walk everything.
	SkipDirs []string
	// Excluded, when set, reports policy paths of files not to hash (the policy's excludes).
	Excluded func(path string) bool
	// Workers is the number of files hashed at once (GOMAXPROCS when 0).
	Workers int
	// Progress, when set, is called from one goroutine at a time, at most every ProgressEvery
	// (250ms when 0) while hashing, and once more at the end with Done set.
	Progress      func(HashProgress)
	ProgressEvery time.Duration
}

// HashProgress is where a DigestsFromRootfs walk stands.
type HashProgress struct {
	// Files and Bytes count the files hashed so far and their size.
	Files, Bytes int64
	// Excluded counts files left out because Excluded matched them; Unreadable files that could
	// not be opened or read (left out).
	Excluded, Unreadable int64
	// Elapsed is the time since the walk started.
	Elapsed time.Duration
	// Done is set on the last call.
	Done bool
}

// Rate is the hashing rate in bytes per second.
func (p HashProgress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Bytes) / p.Elapsed.Seconds()
}

// RootfsDigests is what DigestsFromRootfs found.
type RootfsDigests struct {
	// Digests maps a policy path (relative to the root, leading '/', spaces as '_') to its digest.
	Digests map[string][]string
	// Progress holds the final counts.
	Progress HashProgress
	// UnreadablePaths are the first few files that could not be read, with the reason.
	UnreadablePaths []string
}

// maxUnreadable bounds RootfsDigests.UnreadablePaths.
const maxUnreadable = 10

// DigestsFromRootfs hashes every regular file under root, as `keylime-policy create runtime
// --rootfs` does: paths are relative to root ("/usr/bin/ls" for root/usr/bin/ls), spaces become
// '_', symbolic links are neither followed nor hashed (their targets are hashed where they are),
// sockets, devices and FIFOs are skipped, SkipDirs are not walked, files matching Excluded are not
// hashed. Files that cannot be read are counted and left out. Cancelling ctx stops the walk with
// ctx's error.
func DigestsFromRootfs(ctx context.Context, root string, opts RootfsOptions) (*RootfsDigests, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("rootfs %s: %w", root, err)
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("rootfs %s: not a directory", abs)
	}
	if opts.Algo == 0 {
		opts.Algo = crypto.SHA256
	}
	if err := CheckBank(opts.Algo); err != nil {
		return nil, fmt.Errorf("rootfs: digest algorithm %v: %w", opts.Algo, err)
	}
	if opts.SkipDirs == nil {
		opts.SkipDirs = DefaultSkipDirs
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 250 * time.Millisecond
	}
	skip := make(map[string]bool, len(opts.SkipDirs))
	for _, d := range opts.SkipDirs {
		skip[filepath.ToSlash(filepath.Clean("/"+d))] = true
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := &hasher{start: time.Now(), algo: opts.Algo}
	type job struct{ file, key string }
	type done struct{ key, digest string }
	jobs := make(chan job, 4*opts.Workers)
	results := make(chan done, 4*opts.Workers)

	var workers sync.WaitGroup
	for range opts.Workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			buf := make([]byte, 256<<10)
			for j := range jobs {
				if ctx.Err() != nil {
					continue
				}
				if d, err := h.hashFile(j.file, buf); err != nil {
					h.unreadable(j.key, err)
				} else {
					results <- done{j.key, d}
				}
			}
		}()
	}
	go func() { workers.Wait(); close(results) }()

	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	if opts.Progress != nil {
		progressDone.Add(1)
		go func() {
			defer progressDone.Done()
			t := time.NewTicker(opts.ProgressEvery)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					opts.Progress(h.progress(false))
				}
			}
		}()
	}

	var walkErr error
	go func() {
		defer close(jobs)
		walkErr = filepath.WalkDir(abs, func(path string, d fs.DirEntry, err error) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			key := "/" + filepath.ToSlash(strings.TrimPrefix(strings.TrimPrefix(path, abs), string(filepath.Separator)))
			if err != nil {
				if path == abs {
					return err
				}
				h.unreadable(key, err)
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			switch {
			case d.IsDir():
				if path != abs && skip[key] {
					return fs.SkipDir
				}
			case d.Type().IsRegular():
				pkey := PolicyPath(key)
				if opts.Excluded != nil && opts.Excluded(pkey) {
					h.excluded.Add(1)
					return nil
				}
				select {
				case jobs <- job{path, pkey}:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil // symbolic links, sockets, devices, FIFOs
		})
	}()

	out := &RootfsDigests{Digests: map[string][]string{}}
	for r := range results {
		addDigest(out.Digests, r.key, r.digest)
	}
	close(stopProgress)
	progressDone.Wait()
	if walkErr == nil {
		walkErr = ctx.Err()
	}
	out.Progress = h.progress(true)
	h.mu.Lock()
	out.UnreadablePaths = h.unreadablePaths
	h.mu.Unlock()
	if walkErr != nil {
		return out, fmt.Errorf("rootfs %s: %w", abs, walkErr)
	}
	if opts.Progress != nil {
		opts.Progress(out.Progress)
	}
	return out, nil
}

// hasher holds the shared counters of one DigestsFromRootfs walk.
type hasher struct {
	start                     time.Time
	algo                      crypto.Hash
	files, bytes              atomic.Int64
	excluded, unreadableCount atomic.Int64
	mu                        sync.Mutex
	unreadablePaths           []string
}

func (h *hasher) hashFile(path string, buf []byte) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return "", err
	} else if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: no longer a regular file", path)
	}
	d := h.algo.New()
	n, err := io.CopyBuffer(d, f, buf)
	h.bytes.Add(n)
	if err != nil {
		return "", err
	}
	h.files.Add(1)
	return hex.EncodeToString(d.Sum(nil)), nil
}

func (h *hasher) unreadable(key string, err error) {
	h.unreadableCount.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.unreadablePaths) < maxUnreadable {
		h.unreadablePaths = append(h.unreadablePaths, key+": "+err.Error())
	}
}

func (h *hasher) progress(done bool) HashProgress {
	return HashProgress{
		Files: h.files.Load(), Bytes: h.bytes.Load(), Excluded: h.excluded.Load(),
		Unreadable: h.unreadableCount.Load(), Elapsed: time.Since(h.start), Done: done,
	}
}

// MergeDigests adds every digest of src to dst (a policy table: digests, keyrings or ima-buf),
// keeping each list free of duplicates.
func MergeDigests(dst, src map[string][]string) {
	for name, ds := range src {
		for _, d := range ds {
			addDigest(dst, name, strings.ToLower(d))
		}
	}
}

// MergePolicy merges src into dst as `keylime-policy create runtime --base-policy` does: the union
// of digests, keyrings, ima-buf digests, excludes, ignored keyrings and verification keys. dst's
// meta, release and ima.log_hash_alg stay; ima.log_hash_alg is taken from src when dst has none.
// It returns warnings about verification keys that could not be carried over.
func MergePolicy(dst, src *RuntimePolicy) ([]string, error) {
	if dst.Digests == nil {
		dst.Digests = map[string][]string{}
	}
	if dst.Keyrings == nil {
		dst.Keyrings = map[string][]string{}
	}
	if dst.IMABuf == nil {
		dst.IMABuf = map[string][]string{}
	}
	MergeDigests(dst.Digests, src.Digests)
	MergeDigests(dst.Keyrings, src.Keyrings)
	MergeDigests(dst.IMABuf, src.IMABuf)
	dst.Excludes = mergeStrings(dst.Excludes, src.Excludes)
	dst.IMA.IgnoredKeyrings = mergeStrings(dst.IMA.IgnoredKeyrings, src.IMA.IgnoredKeyrings)
	if dst.IMA.LogHashAlg == "" {
		dst.IMA.LogHashAlg = src.IMA.LogHashAlg
	}
	switch {
	case src.VerificationKeys == "":
		return nil, nil
	case dst.VerificationKeys == "":
		dst.VerificationKeys = src.VerificationKeys
		return nil, nil
	}
	srcKeys, warnings, err := ParseVerificationKeys(src.VerificationKeys)
	if err != nil {
		return nil, fmt.Errorf("merge verification-keys: %w", err)
	}
	w, err := AddVerificationKeys(dst, srcKeys)
	return append(warnings, w...), err
}

// AddVerificationKeys adds keys to the policy's verification-keys keyring. Keys the existing keyring
// holds on curves Go lacks cannot be carried over; the warnings name them.
func AddVerificationKeys(p *RuntimePolicy, keys ...*Keyring) ([]string, error) {
	ring, warnings, err := ParseVerificationKeys(p.VerificationKeys)
	if err != nil {
		return nil, fmt.Errorf("verification-keys: %w", err)
	}
	for _, k := range keys {
		for _, key := range k.Keys() {
			if err := ring.Add(key.Public, key.ID); err != nil {
				return warnings, fmt.Errorf("verification-keys: %w", err)
			}
		}
	}
	p.VerificationKeys = ring.String()
	return warnings, nil
}

// Normalize sorts every digest list, the excludes and the ignored keyrings and removes duplicates,
// as keylime-policy does before writing a policy.
func (p *RuntimePolicy) Normalize() {
	for _, m := range []map[string][]string{p.Digests, p.Keyrings, p.IMABuf} {
		for k, v := range m {
			slices.Sort(v)
			m[k] = slices.Compact(v)
		}
	}
	p.Excludes = mergeStrings(nil, p.Excludes)
	p.IMA.IgnoredKeyrings = mergeStrings(nil, p.IMA.IgnoredKeyrings)
}

// mergeStrings returns the sorted union of a and b without duplicates (never nil).
func mergeStrings(a, b []string) []string {
	out := append(append(make([]string, 0, len(a)+len(b)), a...), b...)
	slices.Sort(out)
	return slices.Compact(out)
}
