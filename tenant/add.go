package tenant

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/policy/mb"
	"github.com/keylime-go/keylime/tpm"
)

// AddOptions are the per-agent settings of add and update (Keylime's tenant options).
type AddOptions struct {
	// AgentID is the agent's UUID (-u).
	AgentID string
	// AgentIP and AgentPort override the contact address the agent registered (-t, -tp).
	AgentIP   string
	AgentPort int
	// VerifierAgentIP is the address the verifier should use for the agent when it differs from the one
	// the tenant uses (--cv_targethost).
	VerifierAgentIP string
	// TPMPolicy is the static PCR policy JSON (--tpm_policy); empty means none.
	TPMPolicy string
	// NoEKCheck skips the EK certificate check (ours: --no-ek-check).
	NoEKCheck bool
	// AgentAPIVersion forces the agent API version instead of negotiating it (--agent-api-version).
	AgentAPIVersion string
	// RuntimePolicy is sent with the agent: stored on the verifier under RuntimePolicyName, or owned by
	// the agent (deleted with it) when no name is given. RuntimePolicyName alone names a policy stored
	// before (addruntimepolicy). Either adds PCR 10 to the mask.
	RuntimePolicy     RuntimePolicyInput
	RuntimePolicyName string
	// MBPolicy (a measured-boot reference state) and MBPolicyName likewise; a non-empty reference state
	// or a name adds the measured-boot PCRs to the mask.
	MBPolicy     []byte
	MBPolicyName string
	// RevocationKey (PEM RSA private key) signs this agent's revocation messages on the verifier, and
	// Metadata (a JSON object text, "{}" when empty) is stored with it: what --cert sends.
	RevocationKey string
	Metadata      string
	// Payload, when set, is delivered to the agent: sealed under a fresh key K, U sent to the agent now
	// and V to the verifier, which releases it only after a good attestation (-f, --include).
	Payload []byte
}

// AddResult reports what add or update checked and sent.
type AddResult struct {
	AgentID string `json:"agent_id"`
	// AgentIP and AgentPort are where the tenant reached the agent; VerifierAgentIP is cloudagent_ip.
	AgentIP         string `json:"agent_ip"`
	AgentPort       int    `json:"agent_port"`
	VerifierAgentIP string `json:"cloudagent_ip"`
	// AgentAPIVersion is the negotiated (or forced) agent API version sent as supported_version.
	AgentAPIVersion string `json:"agent_api_version"`
	// TPMPolicy is the tpm_policy sent, with its mask.
	TPMPolicy string `json:"tpm_policy"`
	Mask      string `json:"mask"`
	// EKCheck is how the EK certificate was judged; EKCertIssuer names its issuer when verified.
	EKCheck      EKCheck `json:"ek_check"`
	EKCertIssuer string  `json:"ek_cert_issuer,omitempty"`
	// HashAlg, EncAlg and SignAlg are the identity quote's algorithms.
	HashAlg string `json:"hash_alg"`
	EncAlg  string `json:"enc_alg"`
	SignAlg string `json:"sign_alg"`
	// RegCount is the registrar's registration count (above 1 is suspicious).
	RegCount int `json:"regcount"`
	// State is the agent's operational state name on the verifier right after the add.
	State string `json:"operational_state_name"`
	// Warnings are the conditions worth a human's attention (also logged).
	Warnings []string `json:"warnings,omitempty"`
	// Payload says a payload was sealed and U delivered (V went to the verifier).
	Payload bool `json:"payload"`
}

// Add enrols an agent with the verifier, as Keylime's `tenant -c add` does without a payload:
//  1. read the agent's registrar record (it must be active);
//  2. check its EK certificate against the cert store (see checkEK);
//  3. reach the agent at its registered contact address (or the override) over mTLS pinned to the
//     registrar's mtls_cert and negotiate its API version;
//  4. ask for an identity quote over a fresh nonce and check it (see checkIdentityQuote);
//  5. POST the agent to the verifier with tpm_policy (and its mask), the AK, the mTLS certificate and the
//     accepted algorithms, then confirm the verifier has it.
//
// Nothing reaches the verifier unless every check passed.
func (t *Tenant) Add(ctx context.Context, opts AddOptions) (*AddResult, error) {
	body, res, err := t.prepare(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := t.post(ctx, opts.AgentID, body, res); err != nil {
		return nil, err
	}
	return res, nil
}

// Update replaces an agent's enrolment: it runs every check of Add first, then deletes the agent from
// the verifier (if there) and adds it again. Unlike Keylime, which deletes first, a failed check leaves
// the current enrolment in place.
func (t *Tenant) Update(ctx context.Context, opts AddOptions) (*AddResult, error) {
	body, res, err := t.prepare(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := t.Delete(ctx, opts.AgentID); err != nil && !errors.Is(err, ErrNotOnVerifier) {
		return nil, err
	}
	if err := t.post(ctx, opts.AgentID, body, res); err != nil {
		return nil, err
	}
	return res, nil
}

// prepare runs every check of add and builds the verifier request.
func (t *Tenant) prepare(ctx context.Context, opts AddOptions) (*api.AddAgentRequest, *AddResult, error) {
	id := opts.AgentID
	if id == "" {
		return nil, nil, ErrNoAgentID
	}
	pol, err := BuildTPMPolicy(opts.TPMPolicy)
	if err != nil {
		return nil, nil, err
	}
	// Policies are checked before anything is asked of the registrar, the agent or the verifier.
	for _, n := range []string{opts.RuntimePolicyName, opts.MBPolicyName} {
		if n != "" {
			if err := checkPolicyName(n); err != nil {
				return nil, nil, err
			}
		}
	}
	var rp *preparedRuntimePolicy
	if !opts.RuntimePolicy.Empty() {
		if rp, err = prepareRuntimePolicy(opts.RuntimePolicy); err != nil {
			return nil, nil, err
		}
	}
	if rp != nil || opts.RuntimePolicyName != "" {
		pol.Mask |= 1 << policy.IMAPCR
	}
	mbPCRs := opts.MBPolicyName != ""
	if opts.MBPolicy != nil {
		ref, err := mb.ParseRefState(opts.MBPolicy)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: measured-boot policy: %w", ErrBadPolicy, err)
		}
		mbPCRs = mbPCRs || !ref.Empty()
	}
	if mbPCRs {
		for _, p := range policy.MeasuredBootPCRs {
			// Keylime's tenant (enforce_pcrs) refuses a tpm_policy value for a PCR the measured-boot
			// policy judges: the two would disagree about the same register.
			if _, ok := pol.PCRs[p]; ok {
				return nil, nil, fmt.Errorf("%w: PCR %d is judged by the measured-boot policy; remove it from tpm_policy", policy.ErrBadTPMPolicy, p)
			}
			pol.Mask |= 1 << p
		}
	}
	rec, err := t.RegStatus(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if !rec.Active {
		return nil, nil, fmt.Errorf("%w: agent %s", ErrNotActive, id)
	}
	res := &AddResult{AgentID: id, RegCount: rec.RegCount, TPMPolicy: pol.JSON(), Mask: policy.FormatMask(pol.Mask)}
	warn := func(msg string) {
		t.cfg.Log.Warn().Str("agent", id).Msg(msg)
		res.Warnings = append(res.Warnings, msg)
	}
	if rec.RegCount > 1 {
		warn(fmt.Sprintf("agent registered %d times: more than one EK/AK may have claimed this id (misconfiguration or a malicious host); run regdelete and restart the agent if unexpected", rec.RegCount))
	}
	ak, err := tpm.ParsePublicBase64(rec.AIKTPM)
	if err == nil {
		err = tpm.CheckAK(ak)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: agent %s: registrar's aik_tpm: %w", ErrIdentityQuote, id, err)
	}
	ekr, err := t.checkEK(id, rec, opts.NoEKCheck)
	if err != nil {
		return nil, nil, err
	}
	res.EKCheck, res.EKCertIssuer = ekr.check, ekr.issuer
	switch ekr.check {
	case EKSkipped:
		res.Warnings = append(res.Warnings, "EK certificate check skipped (--no-ek-check)")
	case EKAbsent:
		res.Warnings = append(res.Warnings, "agent has no EK certificate (require_ek_cert is off)")
	}

	res.AgentIP, res.AgentPort = opts.AgentIP, opts.AgentPort
	if res.AgentIP == "" && rec.IP != nil {
		res.AgentIP = *rec.IP
	}
	if res.AgentPort == 0 && rec.Port != nil {
		res.AgentPort = *rec.Port
	}
	if res.AgentIP == "" || res.AgentPort < 1 || res.AgentPort > 65535 {
		return nil, nil, fmt.Errorf("%w: agent %s: the registrar has no contact address for it; give --targethost and --targetport", ErrAgentContact, id)
	}
	res.VerifierAgentIP = res.AgentIP
	if opts.VerifierAgentIP != "" {
		res.VerifierAgentIP = opts.VerifierAgentIP
	}
	ac, hc, err := t.agentClient(id, rec, res.AgentIP, res.AgentPort)
	if err != nil {
		return nil, nil, err
	}
	defer hc.CloseIdleConnections()
	res.AgentAPIVersion = opts.AgentAPIVersion
	if res.AgentAPIVersion == "" {
		if res.AgentAPIVersion, err = t.agentVersion(ctx, id, ac); err != nil {
			return nil, nil, err
		}
	}
	ac.SetVersion(res.AgentAPIVersion)

	nonce, err := newNonce()
	if err != nil {
		return nil, nil, err
	}
	var q *api.QuoteResponse
	err = t.retry(ctx, "identity quote from agent "+id, func() error {
		var err error
		q, err = ac.IdentityQuote(ctx, nonce)
		return err
	})
	if err != nil {
		return nil, nil, agentError(id, "identity quote", err)
	}
	acc := accepted{hash: t.cfg.AcceptHashAlgs, enc: t.cfg.AcceptEncAlgs, sign: t.cfg.AcceptSignAlgs}
	if _, err := checkIdentityQuote(q, ak, nonce, acc); err != nil {
		return nil, nil, fmt.Errorf("%w: agent %s: %w", ErrIdentityQuote, id, err)
	}
	res.HashAlg, res.EncAlg, res.SignAlg = q.HashAlg, q.EncAlg, q.SignAlg
	t.cfg.Log.Debug().Str("agent", id).Str("hash_alg", q.HashAlg).Msg("identity quote verified")

	var vB64 *string
	if opts.Payload != nil {
		v, err := t.sendU(ctx, ac, id, q.PubKey, opts.Payload)
		if err != nil {
			return nil, nil, err
		}
		vB64 = &v
		res.Payload = true
	}

	vip, vport := hostPort(t.cfg.VerifierURL)
	vp := api.Port(vport)
	mbName := opts.MBPolicyName
	body := &api.AddAgentRequest{
		V:                       vB64,
		CloudAgentIP:            res.VerifierAgentIP,
		CloudAgentPort:          api.Port(res.AgentPort),
		VerifierIP:              &vip,
		VerifierPort:            &vp,
		TPMPolicy:               res.TPMPolicy,
		MBPolicyName:            &mbName,
		IMASignVerificationKeys: "",
		Metadata:                nonEmpty(opts.Metadata, "{}"),
		RevocationKey:           opts.RevocationKey,
		AcceptTPMHashAlgs:       nonNil(t.cfg.AcceptHashAlgs),
		AcceptTPMEncryptionAlgs: nonNil(t.cfg.AcceptEncAlgs),
		AcceptTPMSigningAlgs:    nonNil(t.cfg.AcceptSignAlgs),
		AKTPM:                   rec.AIKTPM,
		MTLSCert:                rec.MTLSCert,
		SupportedVersion:        res.AgentAPIVersion,
	}
	if rp != nil {
		body.RuntimePolicy = rp.policy
		if rp.key != "" {
			body.RuntimePolicyKey = &rp.key
		}
	}
	if opts.RuntimePolicyName != "" {
		name := opts.RuntimePolicyName
		body.RuntimePolicyName = &name
	}
	if opts.MBPolicy != nil {
		text := string(opts.MBPolicy)
		body.MBPolicy = &text
	}
	return body, res, nil
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// agentClient returns a client of the agent's API: HTTPS with the tenant's client certificate, pinned to
// the mTLS certificate the agent registered; plain HTTP (with a warning) when the agent registered with
// mTLS disabled.
func (t *Tenant) agentClient(id string, rec *api.RegistrarAgent, ip string, port int) (*client.Agent, *http.Client, error) {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	if rec.MTLSCert == nil || *rec.MTLSCert == "" || *rec.MTLSCert == "disabled" {
		t.cfg.Log.Warn().Str("agent", id).Msg("agent registered without an mTLS certificate: contacting it over plain HTTP")
		hc := transport.NewHTTPClient(nil, t.cfg.RequestTimeout)
		return client.NewAgent(hc, "http://"+addr, api.CurrentVersion), hc, nil
	}
	cert, err := transport.ParseCertPEM(*rec.MTLSCert)
	if err != nil {
		return nil, nil, fmt.Errorf("%w %s: registrar's mtls_cert: %w", ErrAgentContact, id, err)
	}
	conf := transport.PinnedClientConfig(&t.cfg.TLS.Cert, cert)
	hc := transport.NewHTTPClient(conf, t.cfg.RequestTimeout)
	return client.NewAgent(hc, "https://"+addr, api.CurrentVersion), hc, nil
}

// agentVersion asks the agent's GET /version and picks the newest version both sides speak; an agent
// without /version (404) is assumed to speak our current version.
func (t *Tenant) agentVersion(ctx context.Context, id string, ac *client.Agent) (string, error) {
	var v *api.AgentVersion
	err := t.retry(ctx, "version of agent "+id, func() error {
		var err error
		v, err = ac.Version(ctx)
		return err
	})
	if client.StatusCode(err) == http.StatusNotFound {
		t.cfg.Log.Warn().Str("agent", id).Str("version", api.CurrentVersion).Msg("agent has no /version; assuming our current API version")
		return api.CurrentVersion, nil
	}
	if err != nil {
		return "", agentError(id, "version", err)
	}
	remote := v.SupportedVersions
	if len(remote) == 0 && v.SupportedVersion != "" {
		remote = []string{v.SupportedVersion}
	}
	best := api.Negotiate(remote, api.SupportedVersions)
	if best == "" {
		return "", fmt.Errorf("%w %s: agent speaks API %v, we speak %v: %w", ErrAgentContact, id, remote, api.SupportedVersions, client.ErrNoCommonVersion)
	}
	t.cfg.Log.Debug().Str("agent", id).Str("api_version", best).Msg("agent API version negotiated")
	return best, nil
}

// agentError wraps a failed agent call in ErrAgentContact, naming a pinned-certificate mismatch plainly.
func agentError(id, what string, err error) error {
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) || errors.Is(err, transport.ErrPinMismatch) {
		return fmt.Errorf("%w %s: %s: the agent's TLS certificate is not the pinned mtls_cert it registered: %w", ErrAgentContact, id, what, err)
	}
	return fmt.Errorf("%w %s: %s: %w", ErrAgentContact, id, what, err)
}

// retry runs f until it succeeds, fails for good, or MaxRetries attempts failed transiently.
func (t *Tenant) retry(ctx context.Context, what string, f func() error) error {
	for n := 1; ; n++ {
		err := f()
		if err == nil || !transient(err) || n >= t.cfg.MaxRetries {
			return err
		}
		d := t.retryDelay(n)
		t.cfg.Log.Info().Err(err).Int("attempt", n).Int("max_retries", t.cfg.MaxRetries).Dur("retry_in", d).Msg(what + " failed; retrying")
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
}

// post sends the add request and waits (up to MaxRetries checks) until the verifier shows the agent.
func (t *Tenant) post(ctx context.Context, id string, body *api.AddAgentRequest, res *AddResult) error {
	vc, err := t.verifierClient(ctx)
	if err != nil {
		return err
	}
	if err := vc.Add(ctx, id, body); err != nil {
		if client.StatusCode(err) == http.StatusConflict {
			return fmt.Errorf("%w: agent %s (run delete or update first)", ErrAlreadyAdded, id)
		}
		return fmt.Errorf("verifier refused agent %s: %w", id, err)
	}
	for n := 1; ; n++ {
		st, err := vc.Agent(ctx, id)
		if err == nil {
			res.State = api.StateName(st.OperationalState)
			return nil
		}
		if client.StatusCode(err) != http.StatusNotFound || n >= t.cfg.MaxRetries {
			return fmt.Errorf("agent %s added but the verifier does not show it: %w", id, err)
		}
		if err := sleep(ctx, t.retryDelay(n)); err != nil {
			return err
		}
	}
}

// pollInterval is how often WaitAttested asks the verifier.
const pollInterval = 50 * time.Millisecond

// WaitAttested polls the verifier until the agent has passed an attestation beyond the first after
// ones (state Get Quote and attestation_count > after), or is in a failed state (ErrAgentFailed, with the
// verifier's failure reason), or ctx ends. It returns the last status seen.
func (t *Tenant) WaitAttested(ctx context.Context, id string, after int) (*api.VerifierAgent, error) {
	var last *api.VerifierAgent
	for {
		st, err := t.CVStatus(ctx, id)
		if err != nil {
			if ctx.Err() != nil && last != nil {
				break
			}
			return last, err
		}
		last = st
		if st.OperationalState == api.StateGetQuote && st.AttestationCount > after {
			return st, nil
		}
		if api.AttestationStatus(st.OperationalState) == "FAIL" {
			reason := st.LastFailure
			if reason == "" {
				reason = "no reason given"
			}
			return st, fmt.Errorf("%w: agent %s is in state %s: %s", ErrAgentFailed, id, api.StateName(st.OperationalState), reason)
		}
		if err := sleep(ctx, pollInterval); err != nil {
			break
		}
	}
	return last, fmt.Errorf("agent %s not attested in time (state %s, %d attestations): %w",
		id, api.StateName(last.OperationalState), last.AttestationCount, ctx.Err())
}
