package registrar

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/httpx"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/store"
	"github.com/keylime-go/keylime/tpm"
)

func (r *Registrar) routes() []httpx.Route {
	return []httpx.Route{
		{Method: http.MethodGet, Path: "/version", Unversioned: true, Handler: r.version},
		{Method: http.MethodPost, Path: "/agents/{id}", Handler: r.register},
		{Method: http.MethodPost, Path: "/agents", Handler: r.register},
		{Method: http.MethodPut, Path: "/agents/{id}", Handler: r.activate},
		{Method: http.MethodPut, Path: "/agents/{id}/activate", Handler: r.activate},
		{Method: http.MethodPost, Path: "/agents/{id}/activate", Handler: r.activate},
		{Method: http.MethodGet, Path: "/agents", Handler: admin(r.list)},
		{Method: http.MethodGet, Path: "/agents/{id}", Handler: admin(r.get)},
		{Method: http.MethodDelete, Path: "/agents/{id}", Handler: admin(r.delete)},
	}
}

// admin lets a request through only with a client certificate verified against the Keylime CA.
func admin(h httpx.Handler) httpx.Handler {
	return func(req *httpx.Request) (any, error) {
		if req.TLS == nil {
			return nil, httpx.Errorf(http.StatusForbidden, "this action needs HTTPS with an mTLS client certificate from the Keylime CA (the registrar's TLS port)")
		}
		if len(req.TLS.VerifiedChains) == 0 {
			return nil, httpx.Errorf(http.StatusForbidden, "this action needs an mTLS client certificate from the Keylime CA")
		}
		return h(req)
	}
}

func (r *Registrar) version(*httpx.Request) (any, error) {
	return api.ServerVersion{CurrentVersion: api.CurrentVersion, SupportedVersions: api.SupportedVersions}, nil
}

func checkAgentID(id string) error {
	if !api.ValidAgentID(id) {
		return httpx.Errorf(http.StatusBadRequest, "invalid agent id %q: use 1-255 characters from [A-Za-z0-9_.-]", truncate(id, 80))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// registration is a validated registration request.
type registration struct {
	id       string
	ek, ak   *tpm.Public
	ekCert   []byte // DER or nil
	mtlsCert string
	ip       string
	port     int
}

func (r *Registrar) parseRegistration(req *httpx.Request) (*registration, error) {
	var body api.RegisterRequest
	if err := httpx.DecodeJSON(req, &body, r.cfg.MaxBody); err != nil {
		return nil, err
	}
	id := req.Param("id")
	if id == "" {
		id = body.AgentID
	} else if body.AgentID != "" && body.AgentID != id {
		return nil, httpx.Errorf(http.StatusBadRequest, "agent_id %q in the body differs from %q in the path", truncate(body.AgentID, 80), id)
	}
	if err := checkAgentID(id); err != nil {
		return nil, err
	}
	reg := &registration{id: id}
	if body.EKTPM == "" {
		return nil, httpx.Errorf(http.StatusBadRequest, "ek_tpm is required")
	}
	if body.AIKTPM == "" {
		return nil, httpx.Errorf(http.StatusBadRequest, "aik_tpm is required")
	}
	var err error
	if reg.ek, err = tpm.ParsePublicBase64(body.EKTPM); err != nil {
		return nil, httpx.BadRequest("invalid ek_tpm", err)
	}
	if err := tpm.CheckEK(reg.ek); err != nil {
		return nil, httpx.BadRequest("invalid ek_tpm", err)
	}
	if reg.ak, err = tpm.ParsePublicBase64(body.AIKTPM); err != nil {
		return nil, httpx.BadRequest("invalid aik_tpm", err)
	}
	if err := tpm.CheckAK(reg.ak); err != nil {
		return nil, httpx.BadRequest("refused aik_tpm", err)
	}
	if body.EKCert != nil && *body.EKCert != "" {
		cert, err := tpm.ParseEKCert([]byte(*body.EKCert))
		if err != nil {
			return nil, httpx.BadRequest("invalid ekcert", err)
		}
		if err := tpm.EKCertMatches(cert, reg.ek); err != nil {
			return nil, httpx.BadRequest("ekcert does not certify ek_tpm", err)
		}
		reg.ekCert = cert.Raw
	}
	if body.MTLSCert != nil && *body.MTLSCert != "" {
		reg.mtlsCert = *body.MTLSCert
		if reg.mtlsCert != "disabled" {
			if _, err := transport.ParseCertPEM(reg.mtlsCert); err != nil {
				return nil, httpx.BadRequest("invalid mtls_cert", err)
			}
		}
	}
	if body.IP != nil && *body.IP != "" {
		if !validHost(*body.IP) {
			return nil, httpx.Errorf(http.StatusBadRequest, "invalid ip %q: want an IP address or a host name", truncate(*body.IP, 80))
		}
		reg.ip = *body.IP
	}
	if body.Port != nil {
		if *body.Port == 0 {
			return nil, httpx.Errorf(http.StatusBadRequest, "invalid port 0")
		}
		reg.port = int(*body.Port)
	}
	return reg, nil
}

func validHost(s string) bool {
	return net.ParseIP(s) != nil || api.ValidHostName(s)
}

func (r *Registrar) register(req *httpx.Request) (any, error) {
	reg, err := r.parseRegistration(req)
	if err != nil {
		return nil, err
	}
	challenge, err := tpm.NewChallenge(r.cfg.Rand)
	if err != nil {
		return nil, fmt.Errorf("make challenge: %w", err)
	}
	blob, err := tpm.MakeCredential(r.cfg.Rand, reg.ek, reg.ak.Name, challenge)
	if err != nil {
		return nil, httpx.BadRequest("cannot make a credential challenge for this EK", err)
	}
	key := base64.StdEncoding.EncodeToString(challenge)
	var rec *record
	err = r.db.Update(func(tx *store.Tx) error {
		old, err := getRecord(tx, reg.id)
		switch {
		case isNotFound(err):
			rec = &record{AgentID: reg.id, RegCount: 1}
		case err != nil:
			return err
		default:
			if what := identityChange(old, reg); what != "" {
				return httpx.Errorf(http.StatusForbidden,
					"agent %s is already registered with a different %s; delete it first (tenant regdelete) if this is a new TPM", reg.id, what)
			}
			rec = old
			if old.MTLSCert != reg.mtlsCert {
				rec.RegCount++
			}
		}
		rec.EKTPM, rec.AIKTPM, rec.EKCert = reg.ek.Bytes, reg.ak.Bytes, reg.ekCert
		rec.MTLSCert, rec.IP, rec.Port = reg.mtlsCert, reg.ip, reg.port
		rec.Key = key
		rec.RegisteredAt = r.cfg.Now().UTC()
		return putRecord(tx, rec)
	})
	if err != nil {
		return nil, err
	}
	r.log.Info().Str("agent", reg.id).Int("regcount", rec.RegCount).Bool("active", rec.Active).
		Bool("ek_cert", reg.ekCert != nil).Msg("agent registered; credential challenge sent")
	return api.RegisterResponse{Blob: base64.StdEncoding.EncodeToString(blob)}, nil
}

// identityChange names the TPM identity that differs between a stored record and a new registration, or
// returns "" when the same TPM registers again.
func identityChange(old *record, reg *registration) string {
	switch {
	case !bytes.Equal(old.EKTPM, reg.ek.Bytes):
		return "EK"
	case !bytes.Equal(old.EKCert, reg.ekCert):
		return "EK certificate"
	case !bytes.Equal(old.AIKTPM, reg.ak.Bytes):
		return "AK"
	}
	return ""
}

func (r *Registrar) activate(req *httpx.Request) (any, error) {
	id := req.Param("id")
	if err := checkAgentID(id); err != nil {
		return nil, err
	}
	var body api.ActivateRequest
	if err := httpx.DecodeJSON(req, &body, r.cfg.MaxBody); err != nil {
		return nil, err
	}
	if !api.IsLowerHex(body.AuthTag, 96) {
		return nil, httpx.Errorf(http.StatusBadRequest, "auth_tag must be 96 lowercase hex characters (HMAC-SHA384)")
	}
	err := r.db.Update(func(tx *store.Tx) error {
		rec, err := getRecord(tx, id)
		if isNotFound(err) {
			return httpx.Errorf(http.StatusNotFound, "agent %s is not registered", id)
		}
		if err != nil {
			return err
		}
		challenge, err := base64.StdEncoding.DecodeString(rec.Key)
		if err != nil || rec.Key == "" {
			return httpx.Errorf(http.StatusBadRequest, "agent %s has no pending challenge; register first", id)
		}
		if !tpm.CheckAuthTag(challenge, id, body.AuthTag) {
			return httpx.Errorf(http.StatusBadRequest, "auth_tag for agent %s does not match the credential challenge", id)
		}
		if rec.Active {
			return nil
		}
		rec.Active = true
		rec.ActivatedAt = r.cfg.Now().UTC()
		return putRecord(tx, rec)
	})
	if err != nil {
		var he *httpx.Error
		if errors.As(err, &he) && he.Code == http.StatusBadRequest {
			r.log.Warn().Str("agent", id).Msg("activation refused: wrong auth_tag or no pending challenge")
		}
		return nil, err
	}
	r.log.Info().Str("agent", id).Msg("agent activated")
	return nil, nil
}

func (r *Registrar) get(req *httpx.Request) (any, error) {
	id := req.Param("id")
	if err := checkAgentID(id); err != nil {
		return nil, err
	}
	rec, err := getRecord(r.db, id)
	if isNotFound(err) || (err == nil && !rec.Active) {
		return nil, httpx.Errorf(http.StatusNotFound, "agent %s not found (not registered or not activated)", id)
	}
	if err != nil {
		return nil, err
	}
	return rec.toAPI(), nil
}

func (r *Registrar) list(*httpx.Request) (any, error) {
	ids := []string{}
	err := r.db.ForEach(bucketAgents, func(k, _ []byte) error {
		ids = append(ids, string(k))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return api.RegistrarList{UUIDs: ids}, nil
}

func (r *Registrar) delete(req *httpx.Request) (any, error) {
	id := req.Param("id")
	if err := checkAgentID(id); err != nil {
		return nil, err
	}
	err := r.db.Delete(bucketAgents, []byte(id))
	if isNotFound(err) {
		return nil, httpx.Errorf(http.StatusNotFound, "agent %s not found", id)
	}
	if err != nil {
		return nil, err
	}
	r.log.Info().Str("agent", id).Msg("agent deleted")
	return nil, nil
}
