package tenant

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
)

// Status is an agent's state at the registrar and at the verifier; either side is nil when that side
// does not know the agent.
type Status struct {
	AgentID   string              `json:"agent_id"`
	Registrar *api.RegistrarAgent `json:"registrar"`
	Verifier  *api.VerifierAgent  `json:"verifier"`
}

// Status combines RegStatus and CVStatus. It fails only when neither side knows the agent (or a side
// cannot be asked).
func (t *Tenant) Status(ctx context.Context, id string) (*Status, error) {
	if id == "" {
		return nil, ErrNoAgentID
	}
	s := &Status{AgentID: id}
	reg, err := t.RegStatus(ctx, id)
	switch {
	case err == nil:
		s.Registrar = reg
	case !errors.Is(err, ErrNotRegistered):
		return nil, err
	}
	cv, err := t.CVStatus(ctx, id)
	switch {
	case err == nil:
		s.Verifier = cv
	case !errors.Is(err, ErrNotOnVerifier):
		return nil, err
	}
	if s.Registrar == nil && s.Verifier == nil {
		return nil, fmt.Errorf("agent %s is neither registered at the registrar nor on the verifier: %w", id, ErrNotRegistered)
	}
	return s, nil
}

// CVStatus reads the agent's status from the verifier (ErrNotOnVerifier when unknown).
func (t *Tenant) CVStatus(ctx context.Context, id string) (*api.VerifierAgent, error) {
	if id == "" {
		return nil, ErrNoAgentID
	}
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return nil, err
	}
	st, err := vc.Agent(ctx, id)
	if err != nil {
		return nil, t.verifierError(id, err)
	}
	return st, nil
}

// CVList lists the ids of the agents on the verifier.
func (t *Tenant) CVList(ctx context.Context) ([]string, error) {
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := vc.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("verifier list: %w", err)
	}
	return ids, nil
}

// BulkInfo reads the status of every agent on the verifier.
func (t *Tenant) BulkInfo(ctx context.Context) (map[string]api.VerifierAgent, error) {
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return nil, err
	}
	all, err := vc.Bulk(ctx)
	if err != nil {
		return nil, fmt.Errorf("verifier bulk status: %w", err)
	}
	return all, nil
}

// Reactivate makes the verifier poll a stopped or failed agent again.
func (t *Tenant) Reactivate(ctx context.Context, id string) error {
	if id == "" {
		return ErrNoAgentID
	}
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return err
	}
	if err := vc.Reactivate(ctx, id); err != nil {
		return t.verifierError(id, err)
	}
	return nil
}

// Delete removes the agent from the verifier and waits (up to MaxRetries checks) until it is gone, as
// Keylime's verifier may answer 202 and finish the deletion later. An unknown agent is ErrNotOnVerifier.
func (t *Tenant) Delete(ctx context.Context, id string) error {
	if id == "" {
		return ErrNoAgentID
	}
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return err
	}
	if err := vc.Delete(ctx, id); err != nil {
		return t.verifierError(id, err)
	}
	for n := 1; ; n++ {
		_, err := vc.Agent(ctx, id)
		if client.StatusCode(err) == http.StatusNotFound {
			return nil
		}
		if err != nil {
			return fmt.Errorf("agent %s: checking the deletion: %w", id, err)
		}
		if n >= t.cfg.MaxRetries {
			return fmt.Errorf("agent %s is still on the verifier after %d checks", id, n)
		}
		if err := sleep(ctx, t.retryDelay(n)); err != nil {
			return err
		}
	}
}

// RegStatus reads the agent's registrar record (ErrNotRegistered when unknown or never activated).
func (t *Tenant) RegStatus(ctx context.Context, id string) (*api.RegistrarAgent, error) {
	if id == "" {
		return nil, ErrNoAgentID
	}
	rc, err := t.registrarClient(ctx)
	if err != nil {
		return nil, err
	}
	rec, err := rc.Agent(ctx, id)
	if err != nil {
		return nil, t.registrarError(id, err)
	}
	return rec, nil
}

// RegList lists the ids of the agents at the registrar.
func (t *Tenant) RegList(ctx context.Context) ([]string, error) {
	rc, err := t.registrarClient(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := rc.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("registrar list: %w", err)
	}
	return ids, nil
}

// RegDelete removes the agent from the registrar (ErrNotRegistered when unknown).
func (t *Tenant) RegDelete(ctx context.Context, id string) error {
	if id == "" {
		return ErrNoAgentID
	}
	rc, err := t.registrarClient(ctx)
	if err != nil {
		return err
	}
	if err := rc.Delete(ctx, id); err != nil {
		return t.registrarError(id, err)
	}
	return nil
}

func (t *Tenant) verifierError(id string, err error) error {
	if client.StatusCode(err) == http.StatusNotFound {
		return fmt.Errorf("%w: agent %s (verifier %s)", ErrNotOnVerifier, id, t.cfg.VerifierURL)
	}
	return fmt.Errorf("verifier: agent %s: %w", id, err)
}

func (t *Tenant) registrarError(id string, err error) error {
	if client.StatusCode(err) == http.StatusNotFound {
		return fmt.Errorf("%w: agent %s (registrar %s)", ErrNotRegistered, id, t.cfg.RegistrarURL)
	}
	return fmt.Errorf("registrar: agent %s: %w", id, err)
}
