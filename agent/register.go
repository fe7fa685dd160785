package agent

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/tpm"
)

// ErrRefused is returned when the registrar refuses the agent for good (a 4xx answer such as 403 for a
// UUID registered by another TPM): retrying cannot help.
var ErrRefused = errors.New("registrar refused the agent")

// Register runs one registration: POST the identity, decrypt the credential challenge with
// ActivateCredential, and PUT the auth_tag.
func (a *Agent) Register(ctx context.Context) error {
	if !a.negotiated {
		v, err := a.cfg.Registrar.Negotiate(ctx)
		if err != nil {
			if errors.Is(err, client.ErrNoCommonVersion) {
				return fmt.Errorf("%w: %v", ErrRefused, err)
			}
			return classify("version", err)
		}
		a.negotiated = true
		a.log.Debug().Str("api_version", v).Msg("registrar API version negotiated")
	}
	req := &api.RegisterRequest{
		EKTPM:  base64.StdEncoding.EncodeToString(a.ek.PublicBytes),
		AIKTPM: base64.StdEncoding.EncodeToString(a.ak.PublicBytes),
		IP:     &a.cfg.ContactIP,
	}
	port := api.Port(a.cfg.ContactPort)
	req.Port = &port
	if a.ek.Cert != nil {
		s := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.ek.Cert}))
		req.EKCert = &s
	}
	mtls := "disabled"
	if a.tls != nil {
		mtls = string(a.tls.CertPEM)
	}
	req.MTLSCert = &mtls
	blobB64, err := a.cfg.Registrar.Register(ctx, a.uuid, req)
	if err != nil {
		return classify("register", err)
	}
	blob, err := base64.StdEncoding.DecodeString(blobB64)
	if err != nil {
		return fmt.Errorf("%w: credential blob is not base64: %v", ErrRefused, err)
	}
	idObject, encSecret, err := tpm.ParseCredentialBlob(blob)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	secret, err := a.cfg.TPM.ActivateCredential(a.ek, a.ak, idObject, encSecret)
	if err != nil {
		return fmt.Errorf("%w: ActivateCredential failed (the challenge was not made for this TPM's EK and AK): %v", ErrRefused, err)
	}
	if err := a.cfg.Registrar.Activate(ctx, a.uuid, tpm.AuthTag(secret, a.uuid)); err != nil {
		return classify("activate", err)
	}
	return nil
}

// classify marks 4xx answers as permanent refusals; everything else (network errors, 5xx) is retried.
func classify(step string, err error) error {
	if code := client.StatusCode(err); code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests {
		return fmt.Errorf("%w (%s): %v", ErrRefused, step, err)
	}
	return fmt.Errorf("%s: %w", step, err)
}

// RegisterWithRetry registers, retrying with exponential backoff (RetryInterval doubling up to RetryMax)
// while the registrar is unreachable or failing, until ctx ends. A refusal ends it at once.
func (a *Agent) RegisterWithRetry(ctx context.Context) error {
	start := a.cfg.Now()
	delay := a.cfg.RetryInterval
	for attempt := 1; ; attempt++ {
		err := a.Register(ctx)
		if err == nil {
			a.registered.Store(true)
			a.log.Info().Dur("took", a.cfg.Now().Sub(start)).Int("attempts", attempt).
				Msg("registered and activated with the registrar")
			if a.cfg.OnRegistered != nil {
				a.cfg.OnRegistered()
			}
			return nil
		}
		if errors.Is(err, ErrRefused) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		a.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", delay).Msg("registration failed; registrar unreachable or failing, will retry")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay *= 2
		if delay > a.cfg.RetryMax {
			delay = a.cfg.RetryMax
		}
	}
}
