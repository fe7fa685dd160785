package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/keylime-go/keylime/internal/api"
)

// Registrar is a client of the registrar API.
type Registrar struct{ base }

// NewRegistrar returns a registrar client for baseURL ("http://127.0.0.1:8890" or the HTTPS admin port)
// speaking API version (e.g. api.CurrentVersion).
func NewRegistrar(hc *http.Client, baseURL, version string) *Registrar {
	return &Registrar{base{http: hc, url: baseURL, version: version}}
}

// Version asks GET /version.
func (c *Registrar) Version(ctx context.Context) (*api.ServerVersion, error) {
	var v api.ServerVersion
	if err := c.do(ctx, http.MethodGet, c.url+"/version", nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Register sends a registration and returns the base64 credential blob.
func (c *Registrar) Register(ctx context.Context, id string, req *api.RegisterRequest) (string, error) {
	var res api.RegisterResponse
	if err := c.do(ctx, http.MethodPost, c.path("/agents/"+url.PathEscape(id)), req, &res); err != nil {
		return "", err
	}
	return res.Blob, nil
}

// Activate sends the auth_tag that proves the agent decrypted the credential.
func (c *Registrar) Activate(ctx context.Context, id, authTag string) error {
	return c.do(ctx, http.MethodPut, c.path("/agents/"+url.PathEscape(id)), api.ActivateRequest{AuthTag: authTag}, nil)
}

// Agent reads one active agent (admin).
func (c *Registrar) Agent(ctx context.Context, id string) (*api.RegistrarAgent, error) {
	var a api.RegistrarAgent
	if err := c.do(ctx, http.MethodGet, c.path("/agents/"+url.PathEscape(id)), nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// List returns every registered agent id (admin).
func (c *Registrar) List(ctx context.Context) ([]string, error) {
	var l api.RegistrarList
	if err := c.do(ctx, http.MethodGet, c.path("/agents/"), nil, &l); err != nil {
		return nil, err
	}
	return l.UUIDs, nil
}

// Delete removes an agent (admin).
func (c *Registrar) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, c.path("/agents/"+url.PathEscape(id)), nil, nil)
}

// Negotiate asks the registrar's GET /version and switches the client to the newest API version both
// sides speak. A registrar without /version (404) keeps the client's version; a registrar that shares no
// version with us is an error.
func (c *Registrar) Negotiate(ctx context.Context) (string, error) {
	return c.negotiate(ctx, "registrar")
}

// ErrNoCommonVersion means the two sides share no API version.
var ErrNoCommonVersion = errors.New("no common API version")

// negotiate implements Negotiate for the registrar and verifier, whose GET /version answers alike.
func (b *base) negotiate(ctx context.Context, who string) (string, error) {
	var v api.ServerVersion
	err := b.do(ctx, http.MethodGet, b.url+"/version", nil, &v)
	if code := StatusCode(err); code == http.StatusNotFound || code == http.StatusGone {
		return b.version, nil
	}
	if err != nil {
		return "", err
	}
	remote := append([]string{v.CurrentVersion}, v.SupportedVersions...)
	best := api.Negotiate(remote, api.SupportedVersions)
	if best == "" {
		return "", fmt.Errorf("%s speaks API %v, we speak %v: %w", who, remote, api.SupportedVersions, ErrNoCommonVersion)
	}
	b.version = best
	return best, nil
}
