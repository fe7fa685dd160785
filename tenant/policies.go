package tenant

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/policy/mb"
)

// Errors of the named-policy operations, testable with errors.Is.
var (
	// ErrBadPolicy means a policy file is not a valid runtime policy, allowlist or reference state
	// (nothing was sent).
	ErrBadPolicy = errors.New("invalid policy")
	// ErrPolicySignature means a signed runtime policy did not verify with the key given, or a signed
	// policy came without a key (nothing was sent).
	ErrPolicySignature = errors.New("runtime policy signature check failed")
	// ErrBadPolicyName means a policy name cannot be sent as one URL path segment (empty, "." or "..",
	// or containing '/'); nothing was sent.
	ErrBadPolicyName = errors.New("invalid policy name")
	// ErrPolicyExists means the verifier already has a policy with that name (use update).
	ErrPolicyExists = errors.New("policy already exists on the verifier")
	// ErrPolicyNotFound means the verifier has no policy with that name.
	ErrPolicyNotFound = errors.New("policy not found on the verifier")
	// ErrPolicyInUse means an agent on the verifier uses the policy (delete or update the agent first).
	ErrPolicyInUse = errors.New("policy is in use by an agent")
)

// RuntimePolicyInput is a runtime policy as the operator gives it: a policy file (Keylime JSON, any
// version, a DSSE envelope or a legacy allowlist), or a legacy allowlist with an exclude list.
type RuntimePolicyInput struct {
	// Policy is the --runtime-policy file.
	Policy []byte
	// Allowlist and Excludes are the legacy --allowlist and --exclude files.
	Allowlist, Excludes []byte
	// SigKey is the --runtime-policy-sig-key file (PEM EC public key or certificate): a signed policy is
	// verified with it here, and the verifier gets it as runtime_policy_key.
	SigKey []byte
	// Checksum is --runtime-policy-checksum: the hex SHA-256 the Policy file must have (Keylime's
	// read_runtime_policy checks it the same way, over the file as given).
	Checksum string
}

// Empty reports whether no policy was given.
func (in RuntimePolicyInput) Empty() bool {
	return in.Policy == nil && in.Allowlist == nil && in.Excludes == nil
}

// preparedRuntimePolicy is what goes on the wire: the policy text and the key, both base64.
type preparedRuntimePolicy struct {
	policy, key string
}

// PrepareRuntimePolicy checks a runtime policy locally, as the verifier will, and returns the text to
// send: a DSSE envelope is verified with SigKey (a signed policy without a key is refused, as Keylime's
// tenant does) and sent as it is; an older policy or a legacy allowlist (plus excludes) is converted to
// Keylime's version 1 format. Excludes and verification keys are compiled here, so a policy the verifier
// would refuse is refused before anything is sent.
func PrepareRuntimePolicy(in RuntimePolicyInput) ([]byte, error) {
	p, err := prepareRuntimePolicy(in)
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(p.policy)
}

func prepareRuntimePolicy(in RuntimePolicyInput) (*preparedRuntimePolicy, error) {
	var out preparedRuntimePolicy
	if in.Checksum != "" {
		if in.Policy == nil {
			return nil, fmt.Errorf("%w: a checksum needs a runtime policy file", ErrBadPolicy)
		}
		sum := sha256.Sum256(in.Policy)
		if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, strings.TrimSpace(in.Checksum)) {
			return nil, fmt.Errorf("%w: runtime policy checksum mismatch: expected %s, calculated %s", ErrBadPolicy, in.Checksum, got)
		}
	}
	if in.SigKey != nil {
		out.key = base64.StdEncoding.EncodeToString(in.SigKey)
	}
	switch {
	case in.Policy != nil && in.Allowlist != nil:
		return nil, fmt.Errorf("%w: give a runtime policy or an allowlist, not both", ErrBadPolicy)
	case in.Policy != nil && ima.IsEnvelope(in.Policy):
		if in.Excludes != nil {
			return nil, fmt.Errorf("%w: excludes cannot be added to a signed runtime policy", ErrBadPolicy)
		}
		p, err := ima.OpenRuntimePolicy(in.Policy, in.SigKey, true)
		if err != nil {
			return nil, runtimePolicyError(err)
		}
		if _, err := ima.Compile(p); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadPolicy, err)
		}
		out.policy = base64.StdEncoding.EncodeToString(in.Policy)
		return &out, nil
	case in.SigKey != nil:
		return nil, fmt.Errorf("%w: --runtime-policy-sig-key given but the runtime policy is not signed", ErrPolicySignature)
	}
	var p *ima.RuntimePolicy
	var err error
	current := false // in.Policy is a version 1 policy, sent unchanged unless excludes are added
	switch {
	case in.Policy != nil:
		if p, err = ima.DecodeRuntimePolicy(in.Policy); err == nil {
			current = true
		} else {
			// An older policy or an allowlist given as --runtime-policy: convert it as Keylime does.
			if p, err = ima.ConvertPolicy(in.Policy); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBadPolicy, err)
			}
		}
	case in.Allowlist != nil:
		if p, err = ima.ParseAllowlist(in.Allowlist); err != nil {
			return nil, fmt.Errorf("%w: allowlist: %w", ErrBadPolicy, err)
		}
	default:
		// Keylime's tenant ignores a lone --exclude; an empty policy with excludes would refuse every
		// file that is not excluded, so say so instead of guessing.
		return nil, fmt.Errorf("%w: an exclude list needs --allowlist or --runtime-policy", ErrBadPolicy)
	}
	if in.Excludes != nil {
		ex, err := ima.ParseExcludeList(in.Excludes)
		if err != nil {
			return nil, fmt.Errorf("%w: exclude list: %w", ErrBadPolicy, err)
		}
		p.Excludes = append(p.Excludes, ex...)
	}
	if _, err := ima.Compile(p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPolicy, err)
	}
	raw := in.Policy
	if !current || in.Excludes != nil {
		if raw, err = json.Marshal(p); err != nil {
			return nil, err
		}
	}
	out.policy = base64.StdEncoding.EncodeToString(raw)
	return &out, nil
}

func runtimePolicyError(err error) error {
	switch {
	case errors.Is(err, ima.ErrEnvelopeSignature), errors.Is(err, ima.ErrNoKey), errors.Is(err, ima.ErrBadDSSEKey):
		return fmt.Errorf("%w: %w", ErrPolicySignature, err)
	}
	return fmt.Errorf("%w: %w", ErrBadPolicy, err)
}

// PrepareMBPolicy checks a measured-boot reference state (Keylime's mb_refstate JSON) locally.
func PrepareMBPolicy(raw []byte) error {
	if _, err := mb.ParseRefState(raw); err != nil {
		return fmt.Errorf("%w: %w", ErrBadPolicy, err)
	}
	return nil
}

// PutRuntimePolicy checks a runtime policy locally and stores it on the verifier under name (update:
// replace an existing one).
func (t *Tenant) PutRuntimePolicy(ctx context.Context, name string, in RuntimePolicyInput, update bool) error {
	if err := checkPolicyName(name); err != nil {
		return err
	}
	p, err := prepareRuntimePolicy(in)
	if err != nil {
		return err
	}
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return err
	}
	// Keylime's tenant sends its tpm_policy along, the mask with the IMA PCR (the verifier stores it and
	// does not use it).
	tpmPolicy := fmt.Sprintf(`{"mask": "0x%x"}`, 1<<policy.IMAPCR)
	req := &api.RuntimePolicyRequest{RuntimePolicy: p.policy, TPMPolicy: &tpmPolicy}
	if p.key != "" {
		req.RuntimePolicyKey = &p.key
	}
	return policyError("runtime", name, vc.PutRuntimePolicy(ctx, name, req, update))
}

// RuntimePolicy reads a named runtime policy from the verifier.
func (t *Tenant) RuntimePolicy(ctx context.Context, name string) (*api.RuntimePolicy, error) {
	if err := checkPolicyName(name); err != nil {
		return nil, err
	}
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return nil, err
	}
	p, err := vc.RuntimePolicy(ctx, name)
	return p, policyError("runtime", name, err)
}

// DeleteRuntimePolicy removes a named runtime policy from the verifier.
func (t *Tenant) DeleteRuntimePolicy(ctx context.Context, name string) error {
	if err := checkPolicyName(name); err != nil {
		return err
	}
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return err
	}
	return namedPolicyError("runtime", name, true, vc.DeleteRuntimePolicy(ctx, name))
}

// RuntimePolicies lists the verifier's runtime policies.
func (t *Tenant) RuntimePolicies(ctx context.Context) ([]string, error) {
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return nil, err
	}
	names, err := vc.RuntimePolicies(ctx)
	return nonNil(names), policyError("runtime", "", err)
}

// PutMBPolicy checks a measured-boot reference state locally and stores it on the verifier under name.
func (t *Tenant) PutMBPolicy(ctx context.Context, name string, refstate []byte, update bool) error {
	if err := checkPolicyName(name); err != nil {
		return err
	}
	if err := PrepareMBPolicy(refstate); err != nil {
		return err
	}
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return err
	}
	return policyError("measured-boot", name, vc.PutMBPolicy(ctx, name, &api.MBPolicyRequest{MBPolicy: string(refstate)}, update))
}

// MBPolicy reads a named measured-boot reference state from the verifier.
func (t *Tenant) MBPolicy(ctx context.Context, name string) (*api.MBPolicy, error) {
	if err := checkPolicyName(name); err != nil {
		return nil, err
	}
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return nil, err
	}
	p, err := vc.MBPolicy(ctx, name)
	return p, policyError("measured-boot", name, err)
}

// DeleteMBPolicy removes a named measured-boot reference state from the verifier.
func (t *Tenant) DeleteMBPolicy(ctx context.Context, name string) error {
	if err := checkPolicyName(name); err != nil {
		return err
	}
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return err
	}
	return namedPolicyError("measured-boot", name, true, vc.DeleteMBPolicy(ctx, name))
}

// MBPolicies lists the verifier's measured-boot reference states.
func (t *Tenant) MBPolicies(ctx context.Context) ([]string, error) {
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return nil, err
	}
	names, err := vc.MBPolicies(ctx)
	return nonNil(names), policyError("measured-boot", "", err)
}

// checkPolicyName refuses names that cannot travel as one path segment of /allowlists/{name}. Anything
// else is left to the verifier (ours allows [A-Za-z0-9_.-]{1,255}; Keylime's any string).
func checkPolicyName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\") {
		return fmt.Errorf("%w: %q", ErrBadPolicyName, name)
	}
	return nil
}

// policyError maps the verifier's answers about named policies to the tenant's errors.
func policyError(kind, name string, err error) error { return namedPolicyError(kind, name, false, err) }

// namedPolicyError is policyError for a delete when deleting is set (409 then means in use).
func namedPolicyError(kind, name string, deleting bool, err error) error {
	if err == nil {
		return nil
	}
	switch client.StatusCode(err) {
	case http.StatusNotFound:
		return fmt.Errorf("%w: %s policy %q", ErrPolicyNotFound, kind, name)
	case http.StatusConflict:
		if deleting {
			return fmt.Errorf("%w: %s policy %q: %v", ErrPolicyInUse, kind, name, err)
		}
		return fmt.Errorf("%w: %s policy %q", ErrPolicyExists, kind, name)
	case http.StatusBadRequest:
		return fmt.Errorf("%w: the verifier refused %s policy %q: %v", ErrBadPolicy, kind, name, err)
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: the verifier refused %s policy %q: %v", ErrPolicySignature, kind, name, err)
	}
	return fmt.Errorf("verifier: %s policy %q: %w", kind, name, err)
}
