package verifier

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/httpx"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/store"
)

func (v *Verifier) policyRoutes() []httpx.Route {
	return []httpx.Route{
		{Method: http.MethodGet, Path: "/allowlists", Handler: admin(v.listRuntimePolicies)},
		{Method: http.MethodGet, Path: "/allowlists/{name}", Handler: admin(v.getRuntimePolicy)},
		{Method: http.MethodPost, Path: "/allowlists/{name}", Handler: admin(v.putRuntimePolicy(true))},
		{Method: http.MethodPut, Path: "/allowlists/{name}", Handler: admin(v.putRuntimePolicy(false))},
		{Method: http.MethodDelete, Path: "/allowlists/{name}", Handler: admin(v.deleteNamed(kindRuntime))},
		{Method: http.MethodGet, Path: "/mbpolicies", MinVersion: "2.3", Handler: admin(v.listMBPolicies)},
		{Method: http.MethodGet, Path: "/mbpolicies/{name}", MinVersion: "2.3", Handler: admin(v.getMBPolicy)},
		{Method: http.MethodPost, Path: "/mbpolicies/{name}", MinVersion: "2.3", Handler: admin(v.putMBPolicy(true))},
		{Method: http.MethodPut, Path: "/mbpolicies/{name}", MinVersion: "2.3", Handler: admin(v.putMBPolicy(false))},
		{Method: http.MethodDelete, Path: "/mbpolicies/{name}", MinVersion: "2.3", Handler: admin(v.deleteNamed(kindMB))},
	}
}

// validPolicyName: 1 to 255 letters, digits, '_', '.' and '-'.
func validPolicyName(n string) bool { return api.ValidName(n, 255, false) }

func policyName(req *httpx.Request) (string, error) {
	n := req.Param("name")
	if !validPolicyName(n) {
		return "", httpx.Errorf(http.StatusBadRequest, "invalid policy name %q: use 1-255 characters from [A-Za-z0-9_.-]", n)
	}
	return n, nil
}

// storeNamed creates or replaces a named policy and publishes it.
func (v *Verifier) storeNamed(kind policyKind, name string, raw []byte, create bool) error {
	var cp *compiledPolicy
	err := v.db.Update(func(tx *store.Tx) error {
		var err error
		cp, err = v.putPolicy(tx, kind, name, raw, create)
		return err
	})
	if err != nil {
		return policyHTTPError(err)
	}
	v.publish(kind, name, cp)
	v.log.Info().Str("kind", string(kind)).Str("policy", name).Str("digest", cp.Digest).Bool("new", create).Msg("policy stored")
	return nil
}

func (v *Verifier) putRuntimePolicy(create bool) httpx.Handler {
	return func(req *httpx.Request) (any, error) {
		name, err := policyName(req)
		if err != nil {
			return nil, err
		}
		var body api.RuntimePolicyRequest
		if err := httpx.DecodeJSON(req, &body, v.cfg.MaxBody); err != nil {
			return nil, err
		}
		raw, err := base64.StdEncoding.DecodeString(body.RuntimePolicy)
		if err != nil || len(raw) == 0 {
			return nil, httpx.Errorf(http.StatusBadRequest, "runtime_policy must be the base64 of a runtime policy")
		}
		if err := v.checkPolicySignature(raw, body.RuntimePolicyKey); err != nil {
			return nil, err
		}
		if err := v.storeNamed(kindRuntime, name, raw, create); err != nil {
			return nil, err
		}
		return httpx.Reply{Code: http.StatusCreated, Status: "Created"}, nil
	}
}

// checkPolicySignature verifies a DSSE-signed runtime policy with the key sent along (base64 of a PEM
// EC public key or certificate), and refuses unsigned policies when signatures are required.
func (v *Verifier) checkPolicySignature(raw []byte, keyB64 *string) error {
	var key []byte
	if keyB64 != nil && *keyB64 != "" {
		var err error
		if key, err = base64.StdEncoding.DecodeString(*keyB64); err != nil {
			return httpx.Errorf(http.StatusBadRequest, "runtime_policy_key must be base64")
		}
	}
	if key == nil && !v.cfg.RequirePolicySignatures {
		return nil
	}
	_, err := ima.OpenRuntimePolicy(raw, key, v.cfg.RequirePolicySignatures)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ima.ErrEnvelopeSignature), errors.Is(err, ima.ErrNoKey):
		return &httpx.Error{Code: http.StatusUnauthorized, Msg: err.Error(), Cause: err}
	default:
		return httpx.BadRequest("invalid runtime_policy", err)
	}
}

func (v *Verifier) putMBPolicy(create bool) httpx.Handler {
	return func(req *httpx.Request) (any, error) {
		name, err := policyName(req)
		if err != nil {
			return nil, err
		}
		var body api.MBPolicyRequest
		if err := httpx.DecodeJSON(req, &body, v.cfg.MaxBody); err != nil {
			return nil, err
		}
		if strings.TrimSpace(body.MBPolicy) == "" {
			return nil, httpx.Errorf(http.StatusBadRequest, "mb_policy is required")
		}
		if err := v.storeNamed(kindMB, name, []byte(body.MBPolicy), create); err != nil {
			return nil, err
		}
		return httpx.Reply{Code: http.StatusCreated, Status: "Created"}, nil
	}
}

func (v *Verifier) namedText(kind policyKind, req *httpx.Request) (string, string, error) {
	name, err := policyName(req)
	if err != nil {
		return "", "", err
	}
	cp := v.policies[kind].get(name)
	if cp == nil {
		return "", "", httpx.Errorf(http.StatusNotFound, "%s policy %s not found", kind, name)
	}
	raw, err := v.db.Get(bucketBlobs, []byte(cp.Digest))
	if err != nil {
		return "", "", err
	}
	return name, string(raw), nil
}

func (v *Verifier) getRuntimePolicy(req *httpx.Request) (any, error) {
	name, text, err := v.namedText(kindRuntime, req)
	if err != nil {
		return nil, err
	}
	return api.RuntimePolicy{Name: name, RuntimePolicy: text}, nil
}

func (v *Verifier) getMBPolicy(req *httpx.Request) (any, error) {
	name, text, err := v.namedText(kindMB, req)
	if err != nil {
		return nil, err
	}
	return api.MBPolicy{Name: name, MBPolicy: text}, nil
}

func (v *Verifier) listRuntimePolicies(*httpx.Request) (any, error) {
	return api.RuntimePolicyList{Names: v.policies[kindRuntime].names()}, nil
}

func (v *Verifier) listMBPolicies(*httpx.Request) (any, error) {
	return api.MBPolicyList{Names: v.policies[kindMB].names()}, nil
}

func (v *Verifier) deleteNamed(kind policyKind) httpx.Handler {
	return func(req *httpx.Request) (any, error) {
		name, err := policyName(req)
		if err != nil {
			return nil, err
		}
		err = v.db.Update(func(tx *store.Tx) error { return v.deletePolicy(tx, kind, name) })
		if err != nil {
			return nil, policyHTTPError(err)
		}
		v.unpublish(kind, name)
		v.log.Info().Str("kind", string(kind)).Str("policy", name).Msg("policy deleted")
		return httpx.Reply{Code: http.StatusNoContent}, nil
	}
}
