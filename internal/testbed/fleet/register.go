package fleet

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/tpm"
)

// Register registers the agent with a registrar as a Keylime agent does: POST /agents/{id} with its EK,
// AK, mTLS certificate and contact address, then ActivateCredential on the blob and PUT the auth_tag.
// reg is a client of the registrar's registration port.
func (a *Agent) Register(ctx context.Context, reg *client.Registrar) error {
	cert := string(a.certPEM)
	ip := a.Addr().IP.String()
	port := api.Port(a.Addr().Port)
	blob64, err := reg.Register(ctx, a.UUID(), &api.RegisterRequest{
		EKTPM:    base64.StdEncoding.EncodeToString(a.ek.Public()),
		AIKTPM:   base64.StdEncoding.EncodeToString(a.soft.AKPublic()),
		MTLSCert: &cert,
		IP:       &ip,
		Port:     &port,
	})
	if err != nil {
		return fmt.Errorf("register %s: %w", a.UUID(), err)
	}
	blob, err := base64.StdEncoding.DecodeString(blob64)
	if err != nil {
		return fmt.Errorf("register %s: blob: %w", a.UUID(), err)
	}
	secret, err := a.soft.TPM().ActivateCredential(a.ek, blob)
	if err != nil {
		return fmt.Errorf("register %s: %w", a.UUID(), err)
	}
	if err := reg.Activate(ctx, a.UUID(), tpm.AuthTag(secret, a.UUID())); err != nil {
		return fmt.Errorf("activate %s: %w", a.UUID(), err)
	}
	return nil
}

// Register registers and activates every agent, workers at a time.
func (f *Fleet) Register(ctx context.Context, reg *client.Registrar, workers int) error {
	return parallel(len(f.agents), workers, func(i int) error { return f.agents[i].Register(ctx, reg) })
}

// AddOptions is what a tenant sends along when it adds an agent to a verifier.
type AddOptions struct {
	// TPMPolicy is the static PCR policy ("{}" when empty).
	TPMPolicy string
	// RuntimePolicyName names a runtime (IMA) policy stored on the verifier ("" for none).
	RuntimePolicyName string
}

// AddRequest builds the verifier's add-agent body from the agent's registrar record, as a tenant does
// (no payload, no measured-boot policy).
func AddRequest(rec *api.RegistrarAgent, opts AddOptions) (*api.AddAgentRequest, error) {
	if rec.IP == nil || rec.Port == nil {
		return nil, fmt.Errorf("fleet: registrar record has no contact address")
	}
	if opts.TPMPolicy == "" {
		opts.TPMPolicy = "{}"
	}
	empty := ""
	req := &api.AddAgentRequest{
		CloudAgentIP:            *rec.IP,
		CloudAgentPort:          api.Port(*rec.Port),
		TPMPolicy:               opts.TPMPolicy,
		MBPolicyName:            &empty,
		Metadata:                "{}",
		AcceptTPMHashAlgs:       []string{"sha512", "sha384", "sha256"},
		AcceptTPMEncryptionAlgs: []string{"ecc", "rsa"},
		AcceptTPMSigningAlgs:    []string{"ecdsa", "rsassa"},
		AKTPM:                   rec.AIKTPM,
		MTLSCert:                rec.MTLSCert,
		SupportedVersion:        api.CurrentVersion,
	}
	if opts.RuntimePolicyName != "" {
		name := opts.RuntimePolicyName
		req.RuntimePolicyName = &name
	}
	return req, nil
}

// AddToVerifier adds every agent to a verifier through the tenant API, workers at a time: it reads each
// agent's record from the registrar (admin, a client of the registrar's TLS port) and posts it to the
// verifier.
func (f *Fleet) AddToVerifier(ctx context.Context, admin *client.Registrar, ver *client.Verifier, opts AddOptions, workers int) error {
	return parallel(len(f.agents), workers, func(i int) error {
		id := f.agents[i].UUID()
		rec, err := admin.Agent(ctx, id)
		if err != nil {
			return fmt.Errorf("registrar record of %s: %w", id, err)
		}
		req, err := AddRequest(rec, opts)
		if err != nil {
			return fmt.Errorf("agent %s: %w", id, err)
		}
		if err := ver.Add(ctx, id, req); err != nil {
			return fmt.Errorf("add %s to the verifier: %w", id, err)
		}
		return nil
	})
}

// RuntimePolicy returns a runtime policy (JSON) that allows every file the agents measure with the IMA
// configuration cfg (softagent.DefaultIMAFiles when cfg names none).
func RuntimePolicy(cfg *softagent.IMAConfig) ([]byte, error) {
	files := softagent.DefaultIMAFiles()
	if cfg != nil && len(cfg.Files) > 0 {
		files = cfg.Files
	}
	p := ima.EmptyRuntimePolicy()
	for _, f := range files {
		p.Digests[f.Path] = append(p.Digests[f.Path], hex.EncodeToString(f.Digest[:]))
	}
	return json.Marshal(p)
}
