package agent

import (
	"context"
	"crypto/rsa"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/httpx"
	"github.com/keylime-go/keylime/internal/revocation"
)

// RevocationConfig is how the agent handles revocation notifications.
type RevocationConfig struct {
	// CertPath is the certificate whose key signs revocation messages; "" means the one the tenant's
	// certificate package delivered: <secure>/unzipped/RevocationNotifier-cert.crt.
	CertPath string
	// Actions are action names run for every verified message (revocation_actions); ActionsDir is where
	// they are looked up first (revocation_actions_dir).
	Actions    []string
	ActionsDir string
	// AllowPayloadActions also runs the payload's action_list, found in the payload directory.
	AllowPayloadActions bool
	// Timeout bounds one action (default 60 s).
	Timeout time.Duration
}

func (a *Agent) revocationCert() (*rsa.PublicKey, error) {
	path := a.cfg.Revocation.CertPath
	if path == "" {
		if a.cfg.Payload.SecureDir == "" {
			return nil, fmt.Errorf("no revocation certificate configured")
		}
		path = filepath.Join(a.cfg.Payload.SecureDir, "unzipped", "RevocationNotifier-cert.crt")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("revocation certificate: %w", err)
	}
	cert, err := ca.ParseCertPEM(b)
	if err != nil {
		return nil, fmt.Errorf("revocation certificate %s: %w", path, err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("revocation certificate %s: not an RSA key", path)
	}
	return pub, nil
}

// revocation verifies a revocation message and runs the revocation actions with it. Unsigned, forged
// and altered messages are refused with 400 and run nothing.
func (a *Agent) revocation(req *httpx.Request) (any, error) {
	var body api.RevocationRequest
	if err := httpx.DecodeJSON(req, &body, 1<<20); err != nil {
		return nil, err
	}
	pub, err := a.revocationCert()
	if err != nil {
		a.log.Warn().Err(err).Msg("revocation message refused: cannot verify it")
		return nil, httpx.Errorf(http.StatusBadRequest, "cannot verify revocation messages: %v", err)
	}
	msg, err := revocation.Verify(pub, revocation.Envelope{Msg: body.Msg, Signature: body.Signature})
	if err != nil {
		a.log.Warn().Err(err).Msg("revocation message refused")
		return nil, httpx.BadRequest("revocation message refused", err)
	}
	a.log.Warn().Str("revoked_agent", msg.AgentID).Str("event_id", msg.EventID).Str("type", msg.Type).
		Msg("verified revocation message; running revocation actions")
	go a.runActions(body.Msg)
	return nil, nil
}

// actionList returns the configured actions followed by those named in the payload's action_list, and
// the payload directory when payload actions may run from it. As in Keylime's agent, action_list may name
// pre-installed actions even when payload actions are not allowed.
func (a *Agent) actionList() (names []string, payloadDir string) {
	names = append(names, a.cfg.Revocation.Actions...)
	if a.cfg.Payload.SecureDir == "" {
		return names, ""
	}
	dir := filepath.Join(a.cfg.Payload.SecureDir, "unzipped")
	if b, err := os.ReadFile(filepath.Join(dir, "action_list")); err == nil {
		names = append(names, parseList(string(b))...)
	}
	if a.cfg.Revocation.AllowPayloadActions {
		payloadDir = dir
	}
	return names, payloadDir
}

// runActions runs every action with one argument: a file holding the message JSON.
func (a *Agent) runActions(msg string) {
	names, payloadDir := a.actionList()
	if len(names) == 0 {
		return
	}
	f, err := os.CreateTemp("", "keylime-revocation-*.json")
	if err != nil {
		a.log.Error().Err(err).Msg("cannot write the revocation message for the actions")
		return
	}
	defer os.Remove(f.Name())
	_, _ = f.WriteString(msg)
	f.Close()
	timeout := a.cfg.Revocation.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	for _, name := range names {
		if !plainName(name) {
			a.log.Error().Str("action", name).Msg("revocation action names must be plain file names")
			continue
		}
		path := ""
		for _, dir := range []string{a.cfg.Revocation.ActionsDir, payloadDir} {
			if dir == "" {
				continue
			}
			if p := filepath.Join(dir, name); fileExists(p) {
				path = p
				break
			}
		}
		if path == "" {
			a.log.Error().Str("action", name).Msg("revocation action not found")
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		cmd := boundedCommand(ctx, path, f.Name())
		cmd.Dir = filepath.Dir(path)
		out, err := cmd.CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		ev := a.log.Info()
		if err != nil {
			ev = a.log.Error().Err(err)
		}
		ev.Str("action", name).Bool("timed_out", timedOut).Int("output_bytes", len(out)).Msg("revocation action finished")
	}
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
