package verifier

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/httpx"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/store"
	"github.com/keylime-go/keylime/tpm"
)

func (v *Verifier) routes() []httpx.Route {
	return []httpx.Route{
		{Method: http.MethodGet, Path: "/version", Unversioned: true, Handler: v.version},
		{Method: http.MethodGet, Path: "/versions", Unversioned: true, Handler: v.version},
		{Method: http.MethodGet, Path: "/agents", Handler: admin(v.list)},
		{Method: http.MethodGet, Path: "/agents/{id}", Handler: admin(v.get)},
		{Method: http.MethodPost, Path: "/agents/{id}", Handler: admin(v.add)},
		{Method: http.MethodDelete, Path: "/agents/{id}", Handler: admin(v.delete)},
		{Method: http.MethodPut, Path: "/agents/{id}/reactivate", Handler: admin(v.reactivate)},
		{Method: http.MethodPut, Path: "/agents/{id}/stop", Handler: admin(v.stop)},
	}
}

// admin lets a request through only with a client certificate verified against the Keylime CA.
func admin(h httpx.Handler) httpx.Handler {
	return func(req *httpx.Request) (any, error) {
		if req.TLS == nil || len(req.TLS.VerifiedChains) == 0 {
			return nil, httpx.Errorf(http.StatusForbidden, "this action needs an mTLS client certificate from the Keylime CA")
		}
		return h(req)
	}
}

func (v *Verifier) version(*httpx.Request) (any, error) {
	return api.ServerVersion{CurrentVersion: api.CurrentVersion, SupportedVersions: api.SupportedVersions}, nil
}

var agentIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,255}$`)

func agentID(req *httpx.Request) (string, error) {
	id := req.Param("id")
	if !agentIDPattern.MatchString(id) {
		if len(id) > 80 {
			id = id[:80] + "…"
		}
		return "", httpx.Errorf(http.StatusBadRequest, "invalid agent id %q: use 1-255 characters from [A-Za-z0-9_.-]", id)
	}
	return id, nil
}

func (v *Verifier) lookup(req *httpx.Request) (*agentState, error) {
	id, err := agentID(req)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	st := v.agents[id]
	v.mu.Unlock()
	if st == nil {
		return nil, httpx.Errorf(http.StatusNotFound, "agent id not found")
	}
	return st, nil
}

func (v *Verifier) get(req *httpx.Request) (any, error) {
	st, err := v.lookup(req)
	if err != nil {
		return nil, err
	}
	return v.status(st), nil
}

func (v *Verifier) list(req *httpx.Request) (any, error) {
	if f := req.URL.Query().Get("verifier"); f != "" && f != v.cfg.ID {
		if req.URL.Query().Has("bulk") {
			return map[string]api.VerifierAgent{}, nil
		}
		return api.VerifierList{UUIDs: [][]string{}}, nil
	}
	v.mu.Lock()
	ids := make([]string, 0, len(v.agents))
	states := make([]*agentState, 0, len(v.agents))
	for id, st := range v.agents {
		ids = append(ids, id)
		states = append(states, st)
	}
	v.mu.Unlock()
	if req.URL.Query().Has("bulk") {
		out := make(map[string]api.VerifierAgent, len(states))
		for i, st := range states {
			out[ids[i]] = v.status(st)
		}
		return out, nil
	}
	sort.Strings(ids)
	l := api.VerifierList{UUIDs: make([][]string, len(ids))}
	for i, id := range ids {
		l.UUIDs[i] = []string{id}
	}
	return l, nil
}

// Default algorithm lists when a tenant sends none (ours accept ECDSA, unlike Keylime's template).
var (
	defaultHashAlgs = []string{"sha512", "sha384", "sha256"}
	defaultEncAlgs  = []string{"ecc", "rsa"}
	defaultSignAlgs = []string{"ecdsa", "rsassa"}
)

var hostPattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)

// parseAdd validates an add-agent body into a record; nothing is stored.
func (v *Verifier) parseAdd(id string, req *httpx.Request) (*record, error) {
	var body api.AddAgentRequest
	if err := httpx.DecodeJSON(req, &body, v.cfg.MaxBody); err != nil {
		return nil, err
	}
	rec := &record{AgentID: id, State: api.StateStart}
	if body.CloudAgentIP == "" || (net.ParseIP(body.CloudAgentIP) == nil && !hostPattern.MatchString(body.CloudAgentIP)) {
		return nil, httpx.Errorf(http.StatusBadRequest, "cloudagent_ip %q is not an IP address or host name", body.CloudAgentIP)
	}
	if body.CloudAgentPort < 1 {
		return nil, httpx.Errorf(http.StatusBadRequest, "cloudagent_port is required (1-65535)")
	}
	rec.IP, rec.Port = body.CloudAgentIP, int(body.CloudAgentPort)
	if body.AKTPM == "" {
		return nil, httpx.Errorf(http.StatusBadRequest, "ak_tpm is required")
	}
	ak, err := tpm.ParsePublicBase64(body.AKTPM)
	if err != nil {
		return nil, httpx.BadRequest("invalid ak_tpm", err)
	}
	if err := tpm.CheckAK(ak); err != nil {
		return nil, httpx.BadRequest("refused ak_tpm", err)
	}
	rec.AKTPM = ak.Bytes
	pol, err := policy.ParseTPMPolicy(body.TPMPolicy)
	if err != nil {
		return nil, httpx.BadRequest("invalid tpm_policy", err)
	}
	rec.TPMPolicy = pol.JSON()
	if body.MTLSCert == nil || *body.MTLSCert == "" || *body.MTLSCert == "disabled" {
		return nil, httpx.Errorf(http.StatusBadRequest, "mTLS certificate for agent is required!")
	}
	if _, err := transport.ParseCertPEM(*body.MTLSCert); err != nil {
		return nil, httpx.BadRequest("invalid mtls_cert", err)
	}
	rec.MTLSCert = *body.MTLSCert
	if body.V != nil && *body.V != "" {
		vb, err := base64.StdEncoding.DecodeString(*body.V)
		if err != nil || (len(vb) != 16 && len(vb) != 32) {
			return nil, httpx.Errorf(http.StatusBadRequest, "v must be base64 of a 16 or 32 byte key half")
		}
		rec.V = vb
	}
	if body.RuntimePolicy != "" {
		raw, err := base64.StdEncoding.DecodeString(body.RuntimePolicy)
		if err != nil {
			return nil, httpx.BadRequest("runtime_policy must be base64", err)
		}
		if !json.Valid(raw) {
			return nil, httpx.Errorf(http.StatusBadRequest, "runtime_policy is not JSON")
		}
		rec.RuntimePolicy = string(raw)
	}
	if body.MBPolicy != nil && strings.TrimSpace(*body.MBPolicy) != "" {
		if !json.Valid([]byte(*body.MBPolicy)) {
			return nil, httpx.Errorf(http.StatusBadRequest, "mb_policy is not JSON")
		}
		rec.MBPolicy = *body.MBPolicy
	}
	rec.Metadata = body.Metadata
	if rec.Metadata == "" {
		rec.Metadata = "{}"
	} else if !json.Valid([]byte(rec.Metadata)) {
		return nil, httpx.Errorf(http.StatusBadRequest, "metadata must be a JSON text")
	}
	rec.RevocationKey = body.RevocationKey
	rec.AcceptHashAlgs = orDefault(body.AcceptTPMHashAlgs, defaultHashAlgs)
	rec.AcceptEncryptionAlgs = orDefault(body.AcceptTPMEncryptionAlgs, defaultEncAlgs)
	rec.AcceptSigningAlgs = orDefault(body.AcceptTPMSigningAlgs, defaultSignAlgs)
	rec.SupportedVersion = strings.TrimPrefix(body.SupportedVersion, "v")
	if !api.IsSupported(rec.SupportedVersion) {
		rec.SupportedVersion = api.CurrentVersion
	}
	return rec, nil
}

func orDefault(s, def []string) []string {
	if len(s) == 0 {
		return append([]string(nil), def...)
	}
	return s
}

func (v *Verifier) add(req *httpx.Request) (any, error) {
	id, err := agentID(req)
	if err != nil {
		return nil, err
	}
	rec, err := v.parseAdd(id, req)
	if err != nil {
		return nil, err
	}
	st, err := v.newState(rec)
	if err != nil {
		return nil, httpx.BadRequest("cannot use agent data", err)
	}
	raw, err := encodeRecord(rec)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.agents[id] != nil {
		return nil, httpx.Errorf(http.StatusConflict, "agent of uuid %s already exists", id)
	}
	err = v.db.Update(func(tx *store.Tx) error { return tx.CompareAndSwap(bucketAgents, []byte(id), nil, raw) })
	if errors.Is(err, store.ErrConflict) {
		return nil, httpx.Errorf(http.StatusConflict, "agent of uuid %s already exists", id)
	}
	if err != nil {
		return nil, err
	}
	v.agents[id] = st
	v.startPolling(st)
	v.log.Info().Str("agent", id).Str("ip", rec.IP).Int("port", rec.Port).Str("tpm_policy", rec.TPMPolicy).Msg("agent added")
	return nil, nil
}

func (v *Verifier) delete(req *httpx.Request) (any, error) {
	st, err := v.lookup(req)
	if err != nil {
		return nil, err
	}
	stopPolling(st)
	id := st.rec.AgentID
	st.mu.Lock()
	st.deleted = true
	st.mu.Unlock()
	if err := v.db.Delete(bucketAgents, []byte(id)); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	v.mu.Lock()
	delete(v.agents, id)
	v.mu.Unlock()
	v.log.Info().Str("agent", id).Msg("agent deleted")
	return nil, nil
}

func (v *Verifier) reactivate(req *httpx.Request) (any, error) {
	st, err := v.lookup(req)
	if err != nil {
		return nil, err
	}
	stopPolling(st)
	st.mu.Lock()
	st.rec.State = api.StateStart
	st.rec.HaveClock = false
	st.rec.NKPEM = ""
	st.mu.Unlock()
	v.persist(st, true)
	v.mu.Lock()
	v.startPolling(st)
	v.mu.Unlock()
	v.log.Info().Str("agent", st.rec.AgentID).Msg("agent reactivated")
	return nil, nil
}

func (v *Verifier) stop(req *httpx.Request) (any, error) {
	st, err := v.lookup(req)
	if err != nil {
		return nil, err
	}
	stopPolling(st)
	v.setState(st, api.StateTenantFailed)
	v.log.Info().Str("agent", st.rec.AgentID).Msg("agent polling stopped by tenant")
	return nil, nil
}
