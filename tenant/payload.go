package tenant

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/payload"
)

// ErrPayloadNotVerified means the agent never proved it derived the payload key.
var ErrPayloadNotVerified = errors.New("payload key not verified")

// sendU splits a fresh key K into U and V, seals the payload under K and posts U (wrapped for the NK the
// identity quote bound into PCR 16), the auth_tag and the payload to the agent. It returns base64(V)
// for the verifier.
func (t *Tenant) sendU(ctx context.Context, ac *client.Agent, id, nkPEM string, plain []byte) (string, error) {
	nk, err := payload.ParseNK(nkPEM)
	if err != nil {
		return "", fmt.Errorf("%w: agent %s: NK: %w", ErrIdentityQuote, id, err)
	}
	k, u, v, err := payload.Split(nil)
	if err != nil {
		return "", err
	}
	sealed, err := payload.Encrypt(nil, k, plain)
	if err != nil {
		return "", err
	}
	wrapped, err := payload.WrapKey(nil, nk, u)
	if err != nil {
		return "", err
	}
	req := &api.UKeyRequest{AuthTag: payload.Tag(k, id), EncryptedKey: wrapped, Payload: sealed}
	if err := t.retry(ctx, "U to agent "+id, func() error { return ac.PostUKey(ctx, req) }); err != nil {
		return "", agentError(id, "keys/ukey", err)
	}
	t.mu.Lock()
	if t.keys == nil {
		t.keys = map[string][]byte{}
	}
	t.keys[id] = k
	t.mu.Unlock()
	return base64.StdEncoding.EncodeToString(v), nil
}

// VerifyPayload polls the agent's keys/verify with fresh challenges until its HMAC proves it derived
// the K this tenant sent in Add. With within > 0 it polls every 200 ms for that long; with within <= 0
// it makes Keylime's tenant --verify attempts: MaxRetries of them, RetryInterval apart (exponentially
// with ExponentialBackoff). When the agent never proves K, it stops the agent on the verifier (as
// Keylime's tenant does) and returns ErrPayloadNotVerified. A cancelled ctx returns ctx.Err() and
// stops nothing.
func (t *Tenant) VerifyPayload(ctx context.Context, id string, within time.Duration) error {
	t.mu.Lock()
	k := t.keys[id]
	t.mu.Unlock()
	if k == nil {
		return fmt.Errorf("agent %s: no payload was sent by this tenant", id)
	}
	reg, err := t.registrarClient(ctx)
	if err != nil {
		return err
	}
	rec, err := reg.Agent(ctx, id)
	if err != nil {
		return t.registrarError(id, err)
	}
	ip, port := "", 0
	if rec.IP != nil {
		ip = *rec.IP
	}
	if rec.Port != nil {
		port = *rec.Port
	}
	ac, hc, err := t.agentClient(id, rec, ip, port)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(within)
	var last error
	for n := 1; ; n++ {
		ch, err := newNonce()
		if err != nil {
			return err
		}
		got, err := ac.VerifyKey(ctx, ch)
		if err == nil && payload.CheckTag(k, ch, got) {
			t.cfg.Log.Info().Str("agent", id).Int("attempt", n).Msg("the agent derived the payload key")
			return nil
		}
		if err == nil {
			last = errors.New("keys/verify answered with a wrong HMAC")
		} else {
			last = err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := 200 * time.Millisecond
		if within <= 0 {
			if n >= t.cfg.MaxRetries {
				break
			}
			wait = t.retryDelay(n)
		} else if !time.Now().Add(wait).Before(deadline) {
			break
		}
		t.cfg.Log.Debug().Err(last).Str("agent", id).Int("attempt", n).Dur("retry_in", wait).Msg("payload key not yet proven")
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
	ver, err := t.verifierClient(ctx)
	if err == nil {
		err = ver.Stop(ctx, id)
	}
	if err != nil {
		t.cfg.Log.Error().Err(err).Str("agent", id).Msg("could not stop the agent on the verifier")
		return fmt.Errorf("%w: agent %s: %v; could not stop it on the verifier: %w", ErrPayloadNotVerified, id, last, err)
	}
	return fmt.Errorf("%w: agent %s: %v; stopped its attestation on the verifier", ErrPayloadNotVerified, id, last)
}
