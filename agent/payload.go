package agent

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/httpx"
	"github.com/keylime-go/keylime/internal/payload"
)

// PayloadConfig is how the agent handles the secure payload (Keylime's [agent] payload keys).
type PayloadConfig struct {
	// SecureDir is the private directory payloads are decrypted into (0700; a tmpfs when the agent can
	// mount one). Payloads land in SecureDir/unzipped.
	SecureDir string
	// SecureSize is the tmpfs size (e.g. "1m").
	SecureSize string
	// EncKeyName and DecPayloadFile are the file names of K and of the decrypted payload.
	EncKeyName, DecPayloadFile string
	// ExtractZip unzips a zip payload; Script is run from the payload when present.
	ExtractZip bool
	Script     string
	// ScriptTimeout bounds the script's run (default 60 s).
	ScriptTimeout time.Duration
	// MountTmpfs mounts a tmpfs on SecureDir before the first payload (needs root; unmounted on exit).
	MountTmpfs bool
}

// bootstrap is the agent's key-exchange state: U with its auth_tag and payload from the tenant, V from
// the verifier, and K once they combine.
type bootstrap struct {
	mu      sync.Mutex
	u       []byte
	authTag string
	payload string
	vs      [][]byte
	k       []byte
	// handled, when a test sets it, is closed once a payload has been handled.
	handled chan struct{}
	// secure guards the secure directory: the payload files, the tmpfs state (Agent.secureMounted,
	// Agent.tmpfs) and stopped, set when the agent stops so no payload is written afterwards.
	secure  sync.Mutex
	stopped bool
}

func (a *Agent) keyRoutes() []httpx.Route {
	return []httpx.Route{
		{Method: http.MethodPost, Path: "/keys/ukey", Handler: a.ukey},
		{Method: http.MethodPost, Path: "/keys/vkey", Handler: a.vkey},
		{Method: http.MethodGet, Path: "/keys/verify", Handler: a.verifyKey},
	}
}

// isAuthTag reports whether s is an auth_tag: 96 lowercase hex characters (HMAC-SHA-384).
func isAuthTag(s string) bool { return api.IsLowerHex(s, 96) }

func (a *Agent) ukey(req *httpx.Request) (any, error) {
	var body api.UKeyRequest
	if err := httpx.DecodeJSON(req, &body, 16<<20); err != nil {
		return nil, err
	}
	if !isAuthTag(body.AuthTag) {
		return nil, httpx.Errorf(http.StatusBadRequest, "auth_tag must be 96 lowercase hex characters")
	}
	u, err := payload.UnwrapKey(a.nk, body.EncryptedKey)
	if err != nil {
		return nil, httpx.BadRequest("cannot use encrypted_key", err)
	}
	a.boot.mu.Lock()
	a.boot.u, a.boot.authTag, a.boot.payload = u, body.AuthTag, body.Payload
	a.boot.k = nil
	a.boot.mu.Unlock()
	a.log.Info().Bool("payload", body.Payload != "").Msg("received U (the tenant's key half)")
	a.tryCombine()
	return nil, nil
}

func (a *Agent) vkey(req *httpx.Request) (any, error) {
	var body api.VKeyRequest
	if err := httpx.DecodeJSON(req, &body, 1<<20); err != nil {
		return nil, err
	}
	v, err := payload.UnwrapKey(a.nk, body.EncryptedKey)
	if err != nil {
		return nil, httpx.BadRequest("cannot use encrypted_key", err)
	}
	a.boot.mu.Lock()
	if len(a.boot.vs) >= 8 {
		a.boot.vs = a.boot.vs[1:]
	}
	a.boot.vs = append(a.boot.vs, v)
	a.boot.mu.Unlock()
	a.log.Info().Msg("received V (the verifier's key half)")
	a.tryCombine()
	return nil, nil
}

func (a *Agent) verifyKey(req *httpx.Request) (any, error) {
	ch := req.URL.Query().Get("challenge")
	if ch == "" || !alnum(ch) {
		return nil, httpx.Errorf(http.StatusBadRequest, "challenge must be alphanumeric")
	}
	a.boot.mu.Lock()
	k := a.boot.k
	a.boot.mu.Unlock()
	if k == nil {
		return nil, httpx.Errorf(http.StatusBadRequest, "Bootstrap key not yet available.")
	}
	return api.VerifyResponse{HMAC: payload.Tag(k, ch)}, nil
}

func alnum(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// tryCombine looks for a V that, with U, gives the K the tenant's auth_tag proves; then it handles the
// payload. A V for another agent or a wrong U simply never matches.
func (a *Agent) tryCombine() {
	a.boot.mu.Lock()
	if a.boot.u == nil || a.boot.k != nil {
		a.boot.mu.Unlock()
		return
	}
	var k []byte
	for i := len(a.boot.vs) - 1; i >= 0; i-- {
		cand, err := payload.Combine(a.boot.u, a.boot.vs[i])
		if err == nil && payload.CheckTag(cand, a.uuid, a.boot.authTag) {
			k = cand
			break
		}
	}
	if k == nil {
		if len(a.boot.vs) > 0 {
			a.log.Warn().Msg("key halves do not combine to the key the tenant's auth_tag proves; waiting for a matching pair")
		}
		a.boot.mu.Unlock()
		return
	}
	a.boot.k = k
	sealed := a.boot.payload
	a.boot.mu.Unlock()
	a.log.Info().Msg("bootstrap key derived (U ⊕ V matches the auth_tag)")
	go a.handlePayload(k, sealed)
}

// handlePayload decrypts the payload into the secure directory, unzips it and runs its script. Nothing is
// written unless the payload decrypts.
func (a *Agent) handlePayload(k []byte, sealed string) {
	defer func() {
		a.boot.mu.Lock()
		if a.boot.handled != nil {
			select {
			case <-a.boot.handled:
			default:
				close(a.boot.handled)
			}
		}
		a.boot.mu.Unlock()
	}()
	pc := a.cfg.Payload
	if pc.SecureDir == "" {
		return
	}
	var plain []byte
	if sealed != "" {
		var err error
		if plain, err = payload.Decrypt(k, sealed); err != nil {
			a.log.Error().Err(err).Msg("payload refused; nothing written")
			return
		}
	}
	dir := filepath.Join(pc.SecureDir, "unzipped")
	if a.writePayload(dir, k, plain) {
		a.runScript(dir)
	}
}

// writePayload writes K and the payload into dir (unzipped when it is a zip) and reports whether the
// payload's script may run. It holds the secure directory's lock, so payloads never interleave and the
// agent's stop waits for the files to be written before releasing the directory.
func (a *Agent) writePayload(dir string, k, plain []byte) bool {
	pc := a.cfg.Payload
	a.boot.secure.Lock()
	defer a.boot.secure.Unlock()
	if err := a.prepareSecureDir(dir); err != nil {
		a.log.Error().Err(err).Msg("cannot prepare the secure directory")
		return false
	}
	if err := os.WriteFile(filepath.Join(dir, pc.EncKeyName), k, 0o600); err != nil {
		a.log.Error().Err(err).Msg("cannot write the key")
		return false
	}
	if plain == nil {
		return false
	}
	if err := os.WriteFile(filepath.Join(dir, pc.DecPayloadFile), plain, 0o600); err != nil {
		a.log.Error().Err(err).Msg("cannot write the payload")
		return false
	}
	if pc.ExtractZip && isZip(plain) {
		if err := unzip(plain, dir); err != nil {
			// Nothing of a refused payload stays behind, not even the files extracted before the bad one.
			if rerr := os.RemoveAll(dir); rerr != nil {
				a.log.Error().Err(rerr).Msg("cannot remove a refused payload")
			}
			a.log.Error().Err(err).Msg("payload zip refused; payload removed")
			return false
		}
		a.log.Info().Str("dir", dir).Msg("payload unzipped")
		// Scripts named in action_list run as revocation actions later.
		if b, err := os.ReadFile(filepath.Join(dir, "action_list")); err == nil {
			for _, n := range parseList(string(b)) {
				if plainName(n) {
					_ = os.Chmod(filepath.Join(dir, n), 0o700)
				}
			}
		}
	}
	return true
}

// prepareSecureDir empties dir below a private (0700) secure directory, mounting a tmpfs there first when
// configured and possible, so secrets never reach a disk. It fails once the agent stopped. The caller
// holds boot.secure.
func (a *Agent) prepareSecureDir(dir string) error {
	pc := a.cfg.Payload
	if a.boot.stopped {
		return errors.New("the agent is stopping")
	}
	if err := os.MkdirAll(pc.SecureDir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(pc.SecureDir, 0o700); err != nil {
		return err
	}
	if !a.secureMounted {
		a.secureMounted = true // one attempt only
		if pc.MountTmpfs {
			size := pc.SecureSize
			if size == "" {
				size = "1m"
			}
			err := syscall.Mount("tmpfs", pc.SecureDir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size+",mode=0700")
			if err == nil {
				a.tmpfs = true
				a.log.Info().Str("dir", pc.SecureDir).Str("size", size).Msg("mounted a tmpfs on the secure directory")
			} else {
				a.log.Warn().Err(err).Str("dir", pc.SecureDir).Msg("cannot mount a tmpfs; using a private directory on disk")
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o700)
}

func isZip(b []byte) bool { return bytes.HasPrefix(b, []byte("PK\x03\x04")) }

// unzip extracts a zip into dir, refusing paths that leave it and bounding the total size.
func unzip(b []byte, dir string) error {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return err
	}
	const maxTotal = 256 << 20
	var total int64
	for _, f := range zr.File {
		name := filepath.Clean(f.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("zip entry %q leaves the payload directory", f.Name)
		}
		dst := filepath.Join(dir, name)
		if f.FileInfo().IsDir() {
			if err := os.MkdirAll(dst, 0o700); err != nil {
				return err
			}
			continue
		}
		if !f.Mode().IsRegular() {
			return fmt.Errorf("zip entry %q is not a regular file", f.Name)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		rc, err := f.Open()
		if err != nil {
			return err
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			rc.Close()
			return err
		}
		n, err := io.Copy(out, io.LimitReader(rc, maxTotal-total+1))
		rc.Close()
		out.Close()
		if err != nil {
			return err
		}
		if total += n; total > maxTotal {
			return errors.New("zip payload too large")
		}
	}
	return nil
}

// runScript runs the payload's script (autorun.sh) in dir with a timeout and logs its exit status.
func (a *Agent) runScript(dir string) {
	pc := a.cfg.Payload
	if pc.Script == "" {
		return
	}
	path := filepath.Join(dir, pc.Script)
	if _, err := os.Stat(path); err != nil {
		return
	}
	if err := os.Chmod(path, 0o700); err != nil {
		a.log.Error().Err(err).Msg("cannot make the payload script executable")
		return
	}
	timeout := pc.ScriptTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := boundedCommand(ctx, "/bin/sh", "-c", path)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	ev := a.log.Info()
	if err != nil {
		ev = a.log.Error().Err(err)
	}
	exit := -1
	if cmd.ProcessState != nil {
		exit = cmd.ProcessState.ExitCode()
	}
	ev.Str("script", pc.Script).Int("exit", exit).Bool("timed_out", ctx.Err() != nil).Int("output_bytes", len(out)).
		Msg("payload script finished")
}

// boundedCommand is exec.CommandContext for scripts the agent runs: in a process group of its own, all
// of which is killed when ctx ends, so a script that left children behind cannot outlive its timeout.
func boundedCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// unmountSecure removes the tmpfs the agent mounted, so decrypted secrets go with the agent; a payload
// script still running there only delays the release (lazy unmount). No payload is written afterwards.
func (a *Agent) unmountSecure() {
	a.boot.secure.Lock()
	defer a.boot.secure.Unlock()
	a.boot.stopped = true
	if !a.tmpfs {
		return
	}
	dir := a.cfg.Payload.SecureDir
	err := syscall.Unmount(dir, 0)
	if errors.Is(err, syscall.EBUSY) {
		err = syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	if err != nil {
		a.log.Warn().Err(err).Str("dir", dir).Msg("cannot unmount the secure tmpfs")
		return
	}
	a.tmpfs = false
	a.log.Info().Str("dir", dir).Msg("unmounted the secure tmpfs")
}

// parseList splits a list the way Keylime's agent reads a payload's action_list: names
// separated by commas, spaces or newlines, optionally in [brackets] and quoted.
func parseList(s string) []string {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
		if len(f) >= 2 && (f[0] == '"' || f[0] == '\'') && f[len(f)-1] == f[0] {
			f = f[1 : len(f)-1]
		}
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// plainName reports whether n names a file inside a directory (no separators, not . or ..).
func plainName(n string) bool {
	return n != "" && n != "." && n != ".." && !strings.ContainsAny(n, "/\\\x00")
}

// BootstrapState reports what the key exchange has received: U from the tenant, how many V halves from
// the verifier, and whether K was derived.
func (a *Agent) BootstrapState() (haveU bool, vs int, haveK bool) {
	a.boot.mu.Lock()
	defer a.boot.mu.Unlock()
	return a.boot.u != nil, len(a.boot.vs), a.boot.k != nil
}
