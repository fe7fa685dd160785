package cli

import (
	"bytes"
	"crypto"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/policy/ima"
)

func createRuntimeCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "runtime",
		Usage: "build a runtime (IMA) policy from an IMA log, a directory tree and/or an allowlist",
		Description: `Sources (any combination; their digests are merged):
  --ima-log FILE     file digests of the log's ima, ima-ng, ima-sig and ima-modsig entries (and
                     boot_aggregate); with --keyrings the keys loaded onto keyrings, with --ima-buf the
                     other ima-buf entries
  --rootfs DIR       the digest of every regular file under DIR, named by its path relative to DIR;
                     symbolic links are not followed, /proc /sys /dev /run /tmp /var /mnt /media /snap
                     and /lost+found under DIR are not walked (nor --skip-path), excluded paths are not hashed
  --allowlist FILE   a legacy flat ("<digest> <path>") or JSON allowlist
  --base-policy FILE a runtime policy (any version; a DSSE envelope is unwrapped unchecked) to merge into
Spaces in paths become '_' as IMA logs them. Without --algo the IMA log's digests are taken as they are
and --rootfs hashes with the log's boot_aggregate algorithm (sha256 without a log); with --algo, log
entries of other algorithms are left out (counted in a note). The policy is written compact on stdout
or to --output; it is checked against Keylime's schema before it is written.`,
		OnUsageError: onUsageError,
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "ima-log", Aliases: []string{"ima-measurement-list", "m"}, Usage: "IMA log (ascii_runtime_measurements) to take digests from"},
			&ucli.StringFlag{Name: "rootfs", Usage: "directory tree to hash (e.g. / or a mounted image)"},
			&ucli.StringSliceFlag{Name: "skip-path", Aliases: []string{"s"}, Usage: "directory under --rootfs not to walk (comma-separated or repeated)"},
			&ucli.StringFlag{Name: "allowlist", Aliases: []string{"a"}, Usage: "legacy flat or JSON allowlist to take digests from"},
			newMultiFlag("exclude", nil, "exclude regular expression (Python re, matched at the start of the path) added to the policy; matching paths are not hashed or taken from the log"),
			&ucli.StringFlag{Name: "excludelist", Aliases: []string{"e"}, Usage: "exclude list file: one regular expression per line, added like --exclude"},
			&ucli.StringFlag{Name: "algo", Usage: "file digest algorithm: sha1, sha256, sha384 or sha512 (default: the IMA log's, else sha256)"},
			&ucli.BoolFlag{Name: "keyrings", Aliases: []string{"k"}, Usage: "take the digests of keys loaded onto keyrings (ima-buf keyring entries of --ima-log)"},
			&ucli.BoolFlag{Name: "ima-buf", Aliases: []string{"b"}, Usage: "take the digests of the other ima-buf entries of --ima-log (kexec-cmdline, …)"},
			newMultiFlag("ignored-keyrings", nil, "keyring whose keys are not judged (\"*\": all); recorded in the policy"),
			&ucli.StringFlag{Name: "base-policy", Aliases: []string{"p"}, Usage: "runtime policy to merge the new digests into"},
			newMultiFlag("verification-key", []string{"add-ima-signature-verification-key"}, "IMA signature verification key (certificate, public or private key; DER or PEM) for verification-keys"),
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output file (default stdout)"},
			&ucli.BoolFlag{Name: "show-legacy-allowlist", Usage: "write only the digests, as a legacy flat allowlist"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress and no notes on stderr"},
		},
		Action: createRuntime,
	}
}

// algoNames are the --algo values and the digest algorithm names IMA logs use for them.
var algoNames = map[string]crypto.Hash{"sha1": crypto.SHA1, "sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}

func createRuntime(c *ucli.Context) error {
	if err := noExtraArgs(c, 0); err != nil {
		return err
	}
	quiet := c.Bool("quiet")
	note := func(format string, args ...any) {
		if !quiet {
			notef(c, format, args...)
		}
	}
	logFile, rootfs, allowlist, base := c.String("ima-log"), c.String("rootfs"), c.String("allowlist"), c.String("base-policy")
	if logFile == "" && (c.Bool("keyrings") || c.Bool("ima-buf")) {
		return usagef("policy create runtime: --keyrings and --ima-buf read --ima-log, which is missing")
	}
	if logFile == "" && rootfs == "" && allowlist == "" && base == "" && len(multi(c, "verification-key")) == 0 &&
		len(multi(c, "exclude")) == 0 && c.String("excludelist") == "" {
		return usagef("policy create runtime: nothing to build a policy from (give --ima-log, --rootfs, --allowlist or --base-policy)")
	}
	algoName := strings.ToLower(c.String("algo"))
	if _, ok := algoNames[algoName]; algoName != "" && !ok {
		return usagef("policy create runtime: --algo %q: use sha1, sha256, sha384 or sha512", c.String("algo"))
	}
	if rootfs != "" {
		if fi, err := os.Stat(rootfs); err != nil {
			return usagef("--rootfs: %v", err)
		} else if !fi.IsDir() {
			return usagef("--rootfs: %s is not a directory", rootfs)
		}
	}

	p := ima.NewCreatedPolicy(time.Now())
	if base != "" {
		data, err := readInput(c, "--base-policy", base)
		if err != nil {
			return err
		}
		bp, err := convertInput(c, "--base-policy", data, note)
		if err != nil {
			return err
		}
		warnings, err := ima.MergePolicy(p, bp)
		if err != nil {
			return usagef("--base-policy: %w", err)
		}
		for _, w := range warnings {
			note("--base-policy: %s", w)
		}
		p.IMA.LogHashAlg = bp.IMA.LogHashAlg
	}
	if allowlist != "" {
		data, err := readInput(c, "--allowlist", allowlist)
		if err != nil {
			return err
		}
		ap, err := convertInput(c, "--allowlist", data, note)
		if err != nil {
			return err
		}
		if _, err := ima.MergePolicy(p, ap); err != nil {
			return usagef("--allowlist: %w", err)
		}
	}

	// Excludes: the base policy's, --exclude and --excludelist; all must compile before anything is hashed.
	p.Excludes = append(p.Excludes, multi(c, "exclude")...)
	if f := c.String("excludelist"); f != "" {
		data, err := readInput(c, "--excludelist", f)
		if err != nil {
			return err
		}
		list, err := ima.ParseExcludeList(data)
		if err != nil {
			return usagef("--excludelist %s: %w", f, err)
		}
		p.Excludes = append(p.Excludes, list...)
	}
	excludes, err := ima.CompileExcludes(p.Excludes)
	if err != nil {
		return usagef("excludes: %w", err)
	}
	var excluded func(string) bool
	if excludes != nil {
		excluded = excludes.MatchString
	}
	p.IMA.IgnoredKeyrings = append(p.IMA.IgnoredKeyrings, multi(c, "ignored-keyrings")...)

	var keys []*ima.Keyring
	for _, f := range multi(c, "verification-key") {
		data, err := readInput(c, "--verification-key", f)
		if err != nil {
			return err
		}
		k, err := ima.ParseKeys(data)
		if err != nil {
			return usagef("--verification-key %s: %w", f, err)
		}
		keys = append(keys, k)
	}

	rootAlgo := algoNames[algoName]
	if logFile != "" {
		data, err := readInput(c, "--ima-log", logFile)
		if err != nil {
			return err
		}
		got, err := ima.DigestsFromLog(bytes.NewReader(data), ima.LogDigestOptions{
			Algo: algoName, Keyrings: c.Bool("keyrings"), IMABuf: c.Bool("ima-buf"),
			IgnoredKeyrings: p.IMA.IgnoredKeyrings, Excluded: excluded,
		})
		if err != nil {
			return usagef("--ima-log %s: %w", logFile, err)
		}
		if got.Entries == 0 {
			note("--ima-log %s has no entries", logFile)
		}
		ima.MergeDigests(p.Digests, got.Digests)
		ima.MergeDigests(p.Keyrings, got.Keyrings)
		ima.MergeDigests(p.IMABuf, got.IMABuf)
		if got.LogHashAlg != "" {
			p.IMA.LogHashAlg = got.LogHashAlg
		}
		if h, ok := algoNames[got.BootAggregateAlg]; ok && rootAlgo == 0 {
			rootAlgo = h
		}
		logNotes(note, got, algoName, c.Bool("keyrings"))
	}
	if rootAlgo == 0 {
		rootAlgo = crypto.SHA256
	}

	if rootfs != "" {
		skip := append([]string(nil), ima.DefaultSkipDirs...)
		for _, s := range c.StringSlice("skip-path") {
			rel, err := skipPath(rootfs, s)
			if err != nil {
				return err
			}
			skip = append(skip, rel)
		}
		pr := newProgressPrinter(c.App.ErrWriter, quiet)
		got, err := ima.DigestsFromRootfs(c.Context, rootfs, ima.RootfsOptions{
			Algo: rootAlgo, SkipDirs: skip, Excluded: excluded, Progress: pr.print, ProgressEvery: 500 * time.Millisecond,
		})
		if err != nil {
			return fmt.Errorf("--rootfs: %w", err)
		}
		ima.MergeDigests(p.Digests, got.Digests)
		if got.Progress.Excluded > 0 {
			note("--rootfs: %d files matching the excludes were not hashed", got.Progress.Excluded)
		}
		if got.Progress.Unreadable > 0 {
			note("--rootfs: %d files could not be read and are not in the policy: %s", got.Progress.Unreadable, strings.Join(got.UnreadablePaths, "; "))
		}
	}

	if len(keys) > 0 {
		warnings, err := ima.AddVerificationKeys(p, keys...)
		if err != nil {
			return usagef("--verification-key: %w", err)
		}
		for _, w := range warnings {
			note("verification-keys: %s", w)
		}
	}
	p.Normalize()
	mixedAlgoNote(note, p.Digests)

	out, err := p.MarshalJSON()
	if err != nil {
		return fmt.Errorf("policy create runtime: %w", err)
	}
	// The policy must be one the verifier takes.
	checked, err := ima.DecodeRuntimePolicy(out)
	if err != nil {
		return fmt.Errorf("policy create runtime: the result is not a valid runtime policy: %w", err)
	}
	compiled, err := ima.Compile(checked)
	if err != nil {
		return fmt.Errorf("policy create runtime: the result does not compile: %w", err)
	}
	for _, w := range compiled.Warnings() {
		note("%s", w)
	}
	if c.Bool("show-legacy-allowlist") {
		var skipped []string
		out, skipped = p.Allowlist()
		if len(skipped) > 0 {
			note("--show-legacy-allowlist: left out, having no allowlist form (empty, whitespace other than spaces, a path starting with %%keyring:): %q", skipped)
		}
	} else {
		out = append(out, '\n')
	}
	if err := writeOutput(c, c.String("output"), out); err != nil {
		return err
	}
	n := 0
	for _, ds := range p.Digests {
		n += len(ds)
	}
	dest := c.String("output")
	if dest == "" || dest == "-" {
		dest = "stdout"
	}
	note("runtime policy: %d paths, %d digests, %d excludes, %d keyrings, %d ima-buf names, %d verification keys → %s",
		len(p.Digests), n, len(p.Excludes), len(p.Keyrings), len(p.IMABuf), compiled.Keys().Len(), dest)
	return nil
}

// convertInput reads a base policy or allowlist in any form keylime-policy takes: a DSSE envelope
// is unwrapped without checking its signature (a note says so).
func convertInput(c *ucli.Context, what string, data []byte, note func(string, ...any)) (*ima.RuntimePolicy, error) {
	if ima.IsEnvelope(data) {
		payload, err := ima.UnwrapEnvelope(data)
		if err != nil {
			return nil, usagef("%s: %w", what, err)
		}
		note("%s is a signed policy; its signature was not checked (use keylime policy verify)", what)
		data = payload
	}
	p, err := ima.ConvertPolicy(data)
	if err != nil {
		return nil, usagef("%s: %w", what, err)
	}
	return p, nil
}

// skipPath turns a --skip-path (a directory under the rootfs, as keylime-policy takes it) into a path
// relative to the rootfs.
func skipPath(rootfs, dir string) (string, error) {
	absRoot, err := filepath.Abs(rootfs)
	if err != nil {
		return "", usagef("--rootfs: %v", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", usagef("--skip-path: %v", err)
	}
	rel, err := filepath.Rel(absRoot, abs)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", usagef("--skip-path %s is not a directory under --rootfs %s", dir, rootfs)
	}
	return "/" + filepath.ToSlash(rel), nil
}

// logNotes says what DigestsFromLog left out.
func logNotes(note func(string, ...any), got *ima.LogDigests, algo string, keyrings bool) {
	var other []string
	for a, n := range got.OtherAlgo {
		other = append(other, fmt.Sprintf("%d %s", n, a))
	}
	sort.Strings(other)
	if len(other) > 0 {
		note("--ima-log: file entries with digests other than --algo %s left out: %s", algo, strings.Join(other, ", "))
	}
	if got.Violations > 0 {
		note("--ima-log: %d violation entries (no file digest) left out", got.Violations)
	}
	if got.BadTemplateHash > 0 {
		note("--ima-log: %d entries whose template hash does not match their data left out (the log is corrupt or was edited)", got.BadTemplateHash)
	}
	if got.Excluded > 0 {
		note("--ima-log: %d entries matching the excludes left out", got.Excluded)
	}
	switch {
	case got.IgnoredKeys > 0 && !keyrings:
		note("--ima-log: %d keyring entries left out (add --keyrings to take them)", got.IgnoredKeys)
	case got.IgnoredKeys > 0:
		note("--ima-log: %d keyring entries of ignored keyrings left out", got.IgnoredKeys)
	}
	if got.Buffers > 0 {
		note("--ima-log: %d ima-buf entries left out (add --ima-buf to take them)", got.Buffers)
	}
	if got.BadKeys > 0 {
		note("--ima-log: %d keyring entries with keys IMA cannot use left out (the verifier reports them as ima.invalid_key)", got.BadKeys)
	}
}

// mixedAlgoNote warns when the digests have more than one length (several algorithms): legal, but
// usually a sign that sources were mixed by mistake.
func mixedAlgoNote(note func(string, ...any), digests map[string][]string) {
	lengths := map[int]int{}
	for path, ds := range digests {
		if path == "boot_aggregate" {
			continue
		}
		for _, d := range ds {
			lengths[len(d)*4]++
		}
	}
	if len(lengths) > 1 {
		var parts []string
		for bits, n := range lengths {
			parts = append(parts, fmt.Sprintf("%d of %d bits", n, bits))
		}
		slices.Sort(parts)
		note("the policy mixes digest algorithms (%s); a file only matches digests of the algorithm IMA uses", strings.Join(parts, ", "))
	}
}

// progressPrinter prints DigestsFromRootfs progress on stderr: rewritten in place on a terminal,
// one line every few seconds otherwise.
type progressPrinter struct {
	mu       sync.Mutex
	w        io.Writer
	quiet    bool
	terminal bool
	last     time.Time
}

func newProgressPrinter(w io.Writer, quiet bool) *progressPrinter {
	pp := &progressPrinter{w: w, quiet: quiet}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			pp.terminal = true
		}
	}
	return pp
}

func (pp *progressPrinter) print(p ima.HashProgress) {
	if pp.quiet {
		return
	}
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if !pp.terminal && !p.Done && time.Since(pp.last) < 5*time.Second {
		return
	}
	pp.last = time.Now()
	line := fmt.Sprintf("hashed %d files, %s, %s/s", p.Files, byteCount(float64(p.Bytes)), byteCount(p.Rate()))
	if p.Done {
		line += fmt.Sprintf(" in %.2fs", p.Elapsed.Seconds())
	}
	switch {
	case pp.terminal && p.Done:
		fmt.Fprintf(pp.w, "\r\033[K%s\n", line)
	case pp.terminal:
		fmt.Fprintf(pp.w, "\r\033[K%s", line)
	default:
		fmt.Fprintln(pp.w, line)
	}
}

// byteCount formats a size in binary units.
func byteCount(b float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for b >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", b, units[i])
	}
	return fmt.Sprintf("%.1f %s", b, units[i])
}
