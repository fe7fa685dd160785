package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/keylime-go/keylime/internal/api"
)

// Verifier is a client of the verifier API (HTTPS with a client certificate from the Keylime CA).
type Verifier struct{ base }

// NewVerifier returns a verifier client for baseURL ("https://127.0.0.1:8881") speaking API version.
func NewVerifier(hc *http.Client, baseURL, version string) *Verifier {
	return &Verifier{base{http: hc, url: baseURL, version: version}}
}

// Version asks GET /version.
func (c *Verifier) Version(ctx context.Context) (*api.ServerVersion, error) {
	var v api.ServerVersion
	if err := c.do(ctx, http.MethodGet, c.url+"/version", nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Negotiate switches the client to the newest API version both sides speak (a verifier without
// /version keeps the client's version).
func (c *Verifier) Negotiate(ctx context.Context) (string, error) {
	return c.negotiate(ctx, "verifier")
}

// Add adds an agent (POST /agents/{id}).
func (c *Verifier) Add(ctx context.Context, id string, req *api.AddAgentRequest) error {
	return c.do(ctx, http.MethodPost, c.path("/agents/"+url.PathEscape(id)), req, nil)
}

// Agent reads an agent's status.
func (c *Verifier) Agent(ctx context.Context, id string) (*api.VerifierAgent, error) {
	var a api.VerifierAgent
	if err := c.do(ctx, http.MethodGet, c.path("/agents/"+url.PathEscape(id)), nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// List returns the ids of every agent on the verifier (flattening Keylime's list of one-element lists).
func (c *Verifier) List(ctx context.Context) ([]string, error) {
	var l api.VerifierList
	if err := c.do(ctx, http.MethodGet, c.path("/agents/"), nil, &l); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(l.UUIDs))
	for _, row := range l.UUIDs {
		if len(row) > 0 {
			ids = append(ids, row[0])
		}
	}
	return ids, nil
}

// Bulk returns the status of every agent (GET /agents/?bulk=true).
func (c *Verifier) Bulk(ctx context.Context) (map[string]api.VerifierAgent, error) {
	out := map[string]api.VerifierAgent{}
	if err := c.do(ctx, http.MethodGet, c.path("/agents/?bulk=true"), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Delete removes an agent.
func (c *Verifier) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, c.path("/agents/"+url.PathEscape(id)), nil, nil)
}

// Reactivate restarts polling of an agent.
func (c *Verifier) Reactivate(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPut, c.path("/agents/"+url.PathEscape(id)+"/reactivate"), nil, nil)
}

// Stop stops polling an agent (state Tenant Quote Failed).
func (c *Verifier) Stop(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPut, c.path("/agents/"+url.PathEscape(id)+"/stop"), nil, nil)
}

// PutRuntimePolicy stores a named runtime policy: POST /allowlists/{name} (create) or PUT (update).
func (c *Verifier) PutRuntimePolicy(ctx context.Context, name string, req *api.RuntimePolicyRequest, update bool) error {
	return c.do(ctx, putMethod(update), c.path("/allowlists/"+url.PathEscape(name)), req, nil)
}

// RuntimePolicy reads a named runtime policy.
func (c *Verifier) RuntimePolicy(ctx context.Context, name string) (*api.RuntimePolicy, error) {
	var p api.RuntimePolicy
	if err := c.do(ctx, http.MethodGet, c.path("/allowlists/"+url.PathEscape(name)), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// DeleteRuntimePolicy removes a named runtime policy (409 while an agent uses it).
func (c *Verifier) DeleteRuntimePolicy(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, c.path("/allowlists/"+url.PathEscape(name)), nil, nil)
}

// RuntimePolicies lists the names of the runtime policies.
func (c *Verifier) RuntimePolicies(ctx context.Context) ([]string, error) {
	var l api.RuntimePolicyList
	if err := c.do(ctx, http.MethodGet, c.path("/allowlists/"), nil, &l); err != nil {
		return nil, err
	}
	return l.Names, nil
}

// PutMBPolicy stores a named measured-boot reference state: POST /mbpolicies/{name} or PUT (update).
func (c *Verifier) PutMBPolicy(ctx context.Context, name string, req *api.MBPolicyRequest, update bool) error {
	return c.do(ctx, putMethod(update), c.path("/mbpolicies/"+url.PathEscape(name)), req, nil)
}

// MBPolicy reads a named measured-boot reference state.
func (c *Verifier) MBPolicy(ctx context.Context, name string) (*api.MBPolicy, error) {
	var p api.MBPolicy
	if err := c.do(ctx, http.MethodGet, c.path("/mbpolicies/"+url.PathEscape(name)), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// DeleteMBPolicy removes a named measured-boot reference state (409 while an agent uses it).
func (c *Verifier) DeleteMBPolicy(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, c.path("/mbpolicies/"+url.PathEscape(name)), nil, nil)
}

// MBPolicies lists the names of the measured-boot reference states.
func (c *Verifier) MBPolicies(ctx context.Context) ([]string, error) {
	var l api.MBPolicyList
	if err := c.do(ctx, http.MethodGet, c.path("/mbpolicies/"), nil, &l); err != nil {
		return nil, err
	}
	return l.Names, nil
}

func putMethod(update bool) string {
	if update {
		return http.MethodPut
	}
	return http.MethodPost
}
