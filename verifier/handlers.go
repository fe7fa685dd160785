package verifier

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
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

func agentID(req *httpx.Request) (string, error) {
	id := req.Param("id")
	if !api.ValidAgentID(id) {
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

// parseAdd validates an add-agent body into a record; nothing is stored.
// policyAction is what an add request asks of the named policies: store raw under name, or (raw nil)
// use the stored policy name.
type policyAction struct {
	kind  policyKind
	name  string
	raw   []byte
	owned bool
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (v *Verifier) parseAdd(id string, req *httpx.Request) (*record, []policyAction, error) {
	var acts []policyAction
	var body api.AddAgentRequest
	if err := httpx.DecodeJSON(req, &body, v.cfg.MaxBody); err != nil {
		return nil, nil, err
	}
	rec := &record{AgentID: id, State: api.StateStart}
	if body.CloudAgentIP == "" || (net.ParseIP(body.CloudAgentIP) == nil && !api.ValidHostName(body.CloudAgentIP)) {
		return nil, nil, httpx.Errorf(http.StatusBadRequest, "cloudagent_ip %q is not an IP address or host name", body.CloudAgentIP)
	}
	if body.CloudAgentPort < 1 {
		return nil, nil, httpx.Errorf(http.StatusBadRequest, "cloudagent_port is required (1-65535)")
	}
	rec.IP, rec.Port = body.CloudAgentIP, int(body.CloudAgentPort)
	if body.AKTPM == "" {
		return nil, nil, httpx.Errorf(http.StatusBadRequest, "ak_tpm is required")
	}
	ak, err := tpm.ParsePublicBase64(body.AKTPM)
	if err != nil {
		return nil, nil, httpx.BadRequest("invalid ak_tpm", err)
	}
	if err := tpm.CheckAK(ak); err != nil {
		return nil, nil, httpx.BadRequest("refused ak_tpm", err)
	}
	rec.AKTPM = ak.Bytes
	pol, err := policy.ParseTPMPolicy(body.TPMPolicy)
	if err != nil {
		return nil, nil, httpx.BadRequest("invalid tpm_policy", err)
	}
	rec.TPMPolicy = pol.JSON()
	if body.MTLSCert == nil || *body.MTLSCert == "" || *body.MTLSCert == "disabled" {
		return nil, nil, httpx.Errorf(http.StatusBadRequest, "mTLS certificate for agent is required!")
	}
	if _, err := transport.ParseCertPEM(*body.MTLSCert); err != nil {
		return nil, nil, httpx.BadRequest("invalid mtls_cert", err)
	}
	rec.MTLSCert = *body.MTLSCert
	if body.V != nil && *body.V != "" {
		vb, err := base64.StdEncoding.DecodeString(*body.V)
		if err != nil || (len(vb) != 16 && len(vb) != 32) {
			return nil, nil, httpx.Errorf(http.StatusBadRequest, "v must be base64 of a 16 or 32 byte key half")
		}
		rec.V = vb
	}
	if body.RuntimePolicy != "" {
		raw, err := base64.StdEncoding.DecodeString(body.RuntimePolicy)
		if err != nil {
			return nil, nil, httpx.BadRequest("runtime_policy must be base64", err)
		}
		if err := v.checkPolicySignature(raw, body.RuntimePolicyKey); err != nil {
			return nil, nil, err
		}
		acts = append(acts, policyAction{kind: kindRuntime, name: deref(body.RuntimePolicyName), raw: raw})
	} else if n := deref(body.RuntimePolicyName); n != "" {
		acts = append(acts, policyAction{kind: kindRuntime, name: n})
	}
	if body.MBPolicy != nil && strings.TrimSpace(*body.MBPolicy) != "" {
		acts = append(acts, policyAction{kind: kindMB, name: deref(body.MBPolicyName), raw: []byte(*body.MBPolicy)})
	} else if n := deref(body.MBPolicyName); n != "" {
		acts = append(acts, policyAction{kind: kindMB, name: n})
	}
	for i := range acts {
		a := &acts[i]
		if a.name == "" {
			// A policy sent without a name belongs to the agent: stored under its id, deleted with it.
			a.name, a.owned = id, true
		} else if !validPolicyName(a.name) {
			return nil, nil, httpx.Errorf(http.StatusBadRequest, "invalid %s policy name %q", a.kind, a.name)
		}
		if a.kind == kindRuntime {
			rec.RuntimePolicyName, rec.OwnsRuntimePolicy = a.name, a.owned
		} else {
			rec.MBPolicyName, rec.OwnsMBPolicy = a.name, a.owned
		}
	}
	rec.Metadata = body.Metadata
	if rec.Metadata == "" {
		rec.Metadata = "{}"
	} else if !json.Valid([]byte(rec.Metadata)) {
		return nil, nil, httpx.Errorf(http.StatusBadRequest, "metadata must be a JSON text")
	}
	rec.RevocationKey = body.RevocationKey
	rec.AcceptHashAlgs = orDefault(body.AcceptTPMHashAlgs, defaultHashAlgs)
	rec.AcceptEncryptionAlgs = orDefault(body.AcceptTPMEncryptionAlgs, defaultEncAlgs)
	rec.AcceptSigningAlgs = orDefault(body.AcceptTPMSigningAlgs, defaultSignAlgs)
	rec.SupportedVersion = strings.TrimPrefix(body.SupportedVersion, "v")
	if !api.IsSupported(rec.SupportedVersion) {
		rec.SupportedVersion = api.CurrentVersion
	}
	return rec, acts, nil
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
	rec, acts, err := v.parseAdd(id, req)
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
	// The id is reserved under v.mu, but the write (and its fsync) happens outside it, batched with
	// concurrent adds: adding thousands of agents does not serialise on the disk.
	v.mu.Lock()
	if v.agents[id] != nil || v.adding[id] {
		v.mu.Unlock()
		return nil, httpx.Errorf(http.StatusConflict, "agent of uuid %s already exists", id)
	}
	v.adding[id] = true
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		delete(v.adding, id)
		v.mu.Unlock()
	}()
	published := make([]*compiledPolicy, len(acts))
	err = v.db.Batch(func(tx *store.Tx) error {
		if err := tx.CompareAndSwap(bucketAgents, []byte(id), nil, raw); err != nil {
			return err
		}
		for i, a := range acts {
			if a.raw == nil {
				if _, err := tx.Get(a.kind.bucket(), []byte(a.name)); err != nil {
					return fmt.Errorf("%w: %s policy %s", errPolicyMissing, a.kind, a.name)
				}
				continue
			}
			create := true
			if a.owned { // a leftover policy of an earlier agent with this id is replaced
				_, gerr := tx.Get(a.kind.bucket(), []byte(a.name))
				create = gerr != nil
			}
			cp, err := v.putPolicy(tx, a.kind, a.name, a.raw, create)
			if err != nil {
				return err
			}
			published[i] = cp
		}
		return nil
	})
	if errors.Is(err, store.ErrConflict) {
		return nil, httpx.Errorf(http.StatusConflict, "agent of uuid %s already exists", id)
	}
	if err != nil {
		return nil, policyHTTPError(err)
	}
	for i, cp := range published {
		if cp != nil {
			v.publish(acts[i].kind, acts[i].name, cp)
		}
	}
	v.mu.Lock()
	v.agents[id] = st
	v.startPolling(st)
	v.mu.Unlock()
	v.log.Info().Str("agent", id).Str("ip", rec.IP).Int("port", rec.Port).Str("tpm_policy", rec.TPMPolicy).
		Str("runtime_policy", rec.RuntimePolicyName).Str("mb_policy", rec.MBPolicyName).Msg("agent added")
	return nil, nil
}

func (v *Verifier) delete(req *httpx.Request) (any, error) {
	st, err := v.lookup(req)
	if err != nil {
		return nil, err
	}
	v.stopPolling(st)
	id := st.rec.AgentID
	st.mu.Lock()
	st.deleted = true
	st.mu.Unlock()
	st.mu.Lock()
	rec := st.rec
	st.mu.Unlock()
	var dropped []policyAction
	err = v.db.Update(func(tx *store.Tx) error {
		if err := tx.Delete(bucketAgents, []byte(id)); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := tx.Delete(bucketSessions, []byte(id)); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		for _, a := range []policyAction{{kind: kindRuntime, name: rec.RuntimePolicyName, owned: rec.OwnsRuntimePolicy}, {kind: kindMB, name: rec.MBPolicyName, owned: rec.OwnsMBPolicy}} {
			if !a.owned {
				continue
			}
			if err := v.deletePolicy(tx, a.kind, a.name); err != nil && !errors.Is(err, errPolicyMissing) && !errors.Is(err, errPolicyInUse) {
				return err
			}
			dropped = append(dropped, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, a := range dropped {
		v.unpublish(a.kind, a.name)
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
	v.stopPolling(st)
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
	v.stopPolling(st)
	v.setState(st, api.StateTenantFailed)
	v.log.Info().Str("agent", st.rec.AgentID).Msg("agent polling stopped by tenant")
	return nil, nil
}
