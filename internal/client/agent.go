package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/keylime-go/keylime/internal/api"
)

// Agent is a client of an agent's API (HTTPS with the agent's pinned certificate, or plain HTTP when the
// agent's mTLS is disabled).
type Agent struct{ base }

// NewAgent returns a client for the agent at baseURL speaking API version.
func NewAgent(hc *http.Client, baseURL, version string) *Agent {
	return &Agent{base{http: hc, url: baseURL, version: version}}
}

// APIVersion returns the version the client speaks.
func (c *Agent) APIVersion() string { return c.version }

// SetVersion changes the API version (after renegotiation).
func (c *Agent) SetVersion(v string) { c.version = v }

// Version asks the agent's GET /version.
func (c *Agent) Version(ctx context.Context) (*api.AgentVersion, error) {
	var v api.AgentVersion
	if err := c.do(ctx, http.MethodGet, c.url+"/version", nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// IdentityQuote asks for quotes/identity over nonce.
func (c *Agent) IdentityQuote(ctx context.Context, nonce string) (*api.QuoteResponse, error) {
	var q api.QuoteResponse
	err := c.do(ctx, http.MethodGet, c.path("/quotes/identity?nonce="+url.QueryEscape(nonce)), nil, &q)
	if err != nil {
		return nil, err
	}
	return &q, nil
}

// IntegrityQuote asks for quotes/integrity over nonce for the PCRs in mask ("0x…"); partial=false asks
// for the NK public key too; imaEntry is the first IMA entry wanted.
func (c *Agent) IntegrityQuote(ctx context.Context, nonce, mask string, partial bool, imaEntry int) (*api.QuoteResponse, error) {
	p := "0"
	if partial {
		p = "1"
	}
	q := url.Values{}
	q.Set("nonce", nonce)
	q.Set("mask", mask)
	q.Set("partial", p)
	q.Set("ima_ml_entry", strconv.Itoa(imaEntry))
	var res api.QuoteResponse
	if err := c.do(ctx, http.MethodGet, c.path("/quotes/integrity?"+q.Encode()), nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// PubKey asks for keys/pubkey.
func (c *Agent) PubKey(ctx context.Context) (string, error) {
	var p api.PubKey
	if err := c.do(ctx, http.MethodGet, c.path("/keys/pubkey"), nil, &p); err != nil {
		return "", err
	}
	return p.PubKey, nil
}

// Info asks for agent/info (API 2.2 and later).
func (c *Agent) Info(ctx context.Context) (*api.AgentInfo, error) {
	var i api.AgentInfo
	if err := c.do(ctx, http.MethodGet, c.path("/agent/info"), nil, &i); err != nil {
		return nil, err
	}
	return &i, nil
}

// PostUKey sends U, its auth_tag and the encrypted payload (tenant).
func (c *Agent) PostUKey(ctx context.Context, req *api.UKeyRequest) error {
	return c.do(ctx, http.MethodPost, c.path("/keys/ukey"), req, nil)
}

// PostVKey sends V wrapped for the agent's NK (verifier).
func (c *Agent) PostVKey(ctx context.Context, wrapped string) error {
	return c.do(ctx, http.MethodPost, c.path("/keys/vkey"), api.VKeyRequest{EncryptedKey: wrapped}, nil)
}

// VerifyKey asks keys/verify for HMAC(K, challenge).
func (c *Agent) VerifyKey(ctx context.Context, challenge string) (string, error) {
	var r api.VerifyResponse
	if err := c.do(ctx, http.MethodGet, c.path("/keys/verify?challenge="+url.QueryEscape(challenge)), nil, &r); err != nil {
		return "", err
	}
	return r.HMAC, nil
}

// Revoke posts a signed revocation message to the agent.
func (c *Agent) Revoke(ctx context.Context, msg, signature string) error {
	return c.do(ctx, http.MethodPost, c.path("/notifications/revocation"), api.RevocationRequest{Msg: msg, Signature: signature}, nil)
}
