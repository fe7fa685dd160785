package cli

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/config"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/tenant"
)

// ExitAgentFailed is the exit code of `tenant status`/`cvstatus --fail-on-failed` and of
// `add`/`update`/`reactivate --wait` when the query or the change worked but the verifier reports the
// agent failed attestation (states Failed, Invalid Quote or Tenant Quote Failed).
const ExitAgentFailed = 4

const tenantDescription = `Keylime's tenant as subcommands (Keylime: keylime_tenant -c <command>). Settings come from the
[tenant] section; the options override them. TLS material comes from tenant.tls_dir ("default":
<keylime_dir>/cv_ca with client-cert.crt, client-private.pem and cacert.crt).

Every command takes --json: one JSON document on stdout instead of text.

Exit codes:
  0  success (status and cvstatus: the query worked, whatever the agent's state)
  1  failure: unreachable server, refused request, unknown agent or policy name, a policy name that
     exists already or is in use, failed EK or identity-quote check
  2  usage: bad option or value (e.g. an invalid --tpm_policy, a runtime or measured-boot policy file
     that does not parse, a signed policy that does not verify), missing --uuid, bad configuration
  4  the agent failed attestation: status/cvstatus with --fail-on-failed, add/update/reactivate
     with --wait (the JSON document is still printed)
Errors are one line on stderr, starting with "keylime: ".`

// agentFailed is an error that exits with ExitAgentFailed.
type agentFailed struct{ err error }

func (e agentFailed) Error() string { return e.err.Error() }
func (e agentFailed) Unwrap() error { return e.err }
func (e agentFailed) ExitCode() int { return ExitAgentFailed }

func onUsageError(_ *ucli.Context, err error, _ bool) error { return usageError{err} }

func tenantCommand() *ucli.Command {
	return &ucli.Command{
		Name:         "tenant",
		Usage:        "enrol agents with the verifier and query or change their state (Keylime's keylime_tenant)",
		Description:  tenantDescription,
		OnUsageError: onUsageError,
		Subcommands: append([]*ucli.Command{
			tenantSub("add", "check an agent (registrar record, EK certificate, identity quote) and add it to the verifier", addFlags(), tenantAdd(false)),
			tenantSub("update", "run add's checks, then replace the agent's enrolment on the verifier (delete, then add)", addFlags(), tenantAdd(true)),
			tenantSub("delete", "remove an agent from the verifier", []ucli.Flag{uuidFlag()}, tenantDelete),
			tenantSub("status", "show an agent's state at the registrar and the verifier", []ucli.Flag{uuidFlag(), failOnFailedFlag()}, tenantStatus),
			tenantSub("cvstatus", "show an agent's state on the verifier", []ucli.Flag{uuidFlag(), failOnFailedFlag()}, tenantCVStatus),
			tenantSub("cvlist", "list the agents on the verifier", nil, tenantCVList),
			tenantSub("bulkinfo", "show the state of every agent on the verifier", nil, tenantBulkInfo),
			tenantSub("reactivate", "make the verifier attest a stopped or failed agent again", []ucli.Flag{uuidFlag(), waitFlag()}, tenantReactivate),
			tenantSub("regstatus", "show an agent's registrar record", []ucli.Flag{uuidFlag()}, tenantRegStatus),
			tenantSub("reglist", "list the agents at the registrar", nil, tenantRegList),
			tenantSub("regdelete", "remove an agent from the registrar", []ucli.Flag{uuidFlag()}, tenantRegDelete),
		}, policySubcommands()...),
	}
}

// tenantSub builds one tenant subcommand with the common flags (where the verifier and registrar are,
// --json) and an action that gets a ready tenant.
func tenantSub(name, usage string, flags []ucli.Flag, run func(*ucli.Context, *tenant.Tenant) error) *ucli.Command {
	common := []ucli.Flag{
		&ucli.StringFlag{Name: "cv", Aliases: []string{"v"}, Usage: "verifier address (tenant.verifier_ip)"},
		&ucli.IntFlag{Name: "cvport", Aliases: []string{"vp"}, Usage: "verifier port (tenant.verifier_port)", DefaultText: "from the configuration"},
		&ucli.StringFlag{Name: "registrarhost", Aliases: []string{"r"}, Usage: "registrar address (tenant.registrar_ip)"},
		&ucli.IntFlag{Name: "registrarport", Aliases: []string{"rp"}, Usage: "registrar HTTPS port (tenant.registrar_port)", DefaultText: "from the configuration"},
		&ucli.BoolFlag{Name: "json", Usage: "print one JSON document on stdout instead of text"},
	}
	return &ucli.Command{
		Name:         name,
		Usage:        usage,
		Flags:        append(flags, common...),
		OnUsageError: onUsageError,
		Action: func(c *ucli.Context) error {
			if c.Args().Present() {
				return usagef("tenant %s: unexpected argument %q (options start with -)", name, c.Args().First())
			}
			if err := checkOptions(c); err != nil {
				return err
			}
			tn, err := newTenant(c)
			if err != nil {
				return err
			}
			defer tn.Close()
			return tenantError(run(c, tn))
		},
	}
}

func uuidFlag() ucli.Flag {
	return &ucli.StringFlag{Name: "uuid", Aliases: []string{"u"}, Usage: "the agent's id"}
}

func failOnFailedFlag() ucli.Flag {
	return &ucli.BoolFlag{Name: "fail-on-failed", Usage: "exit 4 when the verifier reports the agent failed attestation"}
}

func waitFlag() ucli.Flag {
	return &ucli.DurationFlag{Name: "wait", Usage: "wait up to this long (e.g. 30s) for a successful attestation; exit 4 if the agent fails", DefaultText: "do not wait"}
}

func addFlags() []ucli.Flag {
	return append([]ucli.Flag{
		uuidFlag(),
		&ucli.StringFlag{Name: "targethost", Aliases: []string{"t"}, Usage: "the agent's address", DefaultText: "as registered"},
		&ucli.IntFlag{Name: "targetport", Aliases: []string{"tp"}, Usage: "the agent's port", DefaultText: "as registered"},
		&ucli.StringFlag{Name: "cv_targethost", Usage: "the agent's address as the verifier should use it, if not --targethost"},
		&ucli.StringFlag{Name: "tpm_policy", Usage: `static PCR policy, e.g. '{"15": ["<sha256 hex>"]}' (the mask is computed)`},
		&ucli.BoolFlag{Name: "no-ek-check", Usage: "do not check the EK certificate (insecure: the TPM's identity is not established)"},
		&ucli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "payload file delivered to the agent once it attested (encrypted; V released by the verifier)"},
		&ucli.StringFlag{Name: "include", Usage: "directory zipped into the payload (an autorun.sh in it runs on the agent)"},
		&ucli.StringFlag{Name: "cert", Usage: "Keylime CA directory: package a fresh certificate and key for the agent, the CA certificate and RevocationNotifier-cert.crt (plus --include files)"},
		&ucli.BoolFlag{Name: "verify", Usage: "wait until the agent proves it derived the payload key (keys/verify); stop it on the verifier if it never does"},
		&ucli.StringFlag{Name: "cert_store", Usage: "directory of EK CA certificates (tenant.tpm_cert_store)"},
		&ucli.StringFlag{Name: "agent-api-version", Aliases: []string{"supported-version"}, Usage: "agent API version to use instead of negotiating it"},
		&ucli.StringFlag{Name: "runtime-policy-name", Aliases: []string{"allowlist-name"}, Usage: "name of a runtime policy on the verifier (with --runtime-policy: store it under this name)"},
		&ucli.StringFlag{Name: "mb-policy-name", Usage: "name of a measured-boot reference state on the verifier (with --mb-policy: store it under this name)"},
		mbPolicyFlag(),
		waitFlag(),
	}, runtimePolicyFlags()...)
}

// newTenant loads the configuration with the command's overrides and builds a tenant.
func newTenant(c *ucli.Context) (*tenant.Tenant, error) {
	var extra []string
	for flag, key := range map[string]string{"cv": "tenant.verifier_ip", "registrarhost": "tenant.registrar_ip"} {
		if c.IsSet(flag) {
			extra = append(extra, key+"="+c.String(flag))
		}
	}
	for flag, key := range map[string]string{"cvport": "tenant.verifier_port", "registrarport": "tenant.registrar_port"} {
		if c.IsSet(flag) {
			extra = append(extra, key+"="+strconv.Itoa(c.Int(flag)))
		}
	}
	if c.IsSet("cert_store") {
		p, err := filepath.Abs(c.String("cert_store"))
		if err != nil {
			return nil, usagef("--cert_store: %v", err)
		}
		extra = append(extra, "tenant.tpm_cert_store="+p)
	}
	e, err := setup(c, extra...)
	if err != nil {
		return nil, err
	}
	tc := e.cfg.Tenant
	for _, p := range []struct {
		name string
		v    int
	}{{"verifier_port", tc.VerifierPort}, {"registrar_port", tc.RegistrarPort}} {
		if p.v < 1 || p.v > 65535 {
			return nil, usagef("tenant.%s %d is not a port (1-65535)", p.name, p.v)
		}
	}
	if tc.MaxRetries < 0 {
		return nil, usagef("tenant.max_retries must not be negative")
	}
	log := e.log.With().Str("role", "tenant").Logger()
	mat, err := loadTLSDir(log, e.cfg.CA, tc.KeylimeDir, tc.TLSDir, "client", tc.ClientCert, tc.ClientKey, tc.TrustedServerCA, nil)
	if err != nil {
		return nil, fmt.Errorf("tenant TLS (tenant.tls_dir): %w", err)
	}
	tn, err := tenant.New(tenant.Config{
		VerifierURL:        "https://" + net.JoinHostPort(tc.VerifierIP, strconv.Itoa(tc.VerifierPort)),
		RegistrarURL:       "https://" + net.JoinHostPort(tc.RegistrarIP, strconv.Itoa(tc.RegistrarPort)),
		TLS:                mat.Material,
		CertStore:          config.Path(tc.KeylimeDir, tc.TPMCertStore),
		RequireEKCert:      tc.RequireEKCert,
		AcceptHashAlgs:     tc.AcceptTPMHashAlgs,
		AcceptEncAlgs:      tc.AcceptTPMEncryptionAlgs,
		AcceptSignAlgs:     tc.AcceptTPMSigningAlgs,
		MaxRetries:         tc.MaxRetries,
		RetryInterval:      tc.RetryInterval.D(),
		ExponentialBackoff: tc.ExponentialBackoff,
		RequestTimeout:     tc.RequestTimeout.D(),
		MBRefstate:         config.Path(tc.KeylimeDir, tc.MBRefstate),
		Log:                log,
	})
	if err != nil {
		return nil, usageError{err}
	}
	return tn, nil
}

// tenantError marks the caller's mistakes as usage errors; everything else exits 1 (or 4, already typed).
func tenantError(err error) error {
	if errors.Is(err, policy.ErrBadTPMPolicy) || errors.Is(err, tenant.ErrNoAgentID) || isPolicyInputError(err) {
		return usageError{err}
	}
	return err
}

// checkOptions catches the caller's mistakes before any configuration or network is touched: a missing
// --uuid, a port out of range, an invalid --tpm_policy or an unknown --agent-api-version.
func checkOptions(c *ucli.Context) error {
	flags := map[string]bool{}
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			flags[n] = true
		}
	}
	if flags["uuid"] {
		if _, err := agentID(c); err != nil {
			return err
		}
	}
	for _, name := range []string{"targetport", "cvport", "registrarport"} {
		if p := c.Int(name); flags[name] && c.IsSet(name) && (p < 1 || p > 65535) {
			return usagef("--%s %d is not a port (1-65535)", name, p)
		}
	}
	if flags["tpm_policy"] {
		if _, err := tenant.BuildTPMPolicy(c.String("tpm_policy")); err != nil {
			return usagef("--tpm_policy: %w", err)
		}
	}
	if v := c.String("agent-api-version"); flags["agent-api-version"] && v != "" && !api.IsSupported(strings.TrimPrefix(v, "v")) {
		return usagef("--agent-api-version %q: we speak %s", v, apiVersions())
	}
	if flags["wait"] && c.IsSet("wait") && c.Duration("wait") <= 0 {
		return usagef("--wait must be a positive duration such as 30s")
	}
	return nil
}

// agentID returns --uuid or a usage error.
func agentID(c *ucli.Context) (string, error) {
	id := c.String("uuid")
	if id == "" {
		return "", usagef("tenant %s: --uuid (-u) is required", c.Command.Name)
	}
	return id, nil
}

func yesNo(b int) string {
	if b == 1 {
		return "yes"
	}
	return "no"
}

// emit prints v as JSON with --json, else calls human.
func emit(c *ucli.Context, v any, human func(io.Writer)) error {
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(c.App.Writer)
	return nil
}

// agentView is a verifier status with the agent id and the state's name, as printed by the tenant.
type agentView struct {
	AgentID   string `json:"agent_id"`
	StateName string `json:"operational_state_name"`
	*api.VerifierAgent
}

func viewOf(id string, st *api.VerifierAgent) *agentView {
	if st == nil {
		return nil
	}
	return &agentView{AgentID: id, StateName: api.StateName(st.OperationalState), VerifierAgent: st}
}

// failedErr is the ExitAgentFailed error for an agent in a failed state, or nil.
func failedErr(id string, st *api.VerifierAgent) error {
	if st == nil || api.AttestationStatus(st.OperationalState) != "FAIL" {
		return nil
	}
	reason := st.LastFailure
	if reason == "" {
		reason = "no reason given"
	}
	return agentFailed{fmt.Errorf("%w: agent %s is in state %s: %s", tenant.ErrAgentFailed, id, api.StateName(st.OperationalState), reason)}
}

// wait runs WaitAttested for --wait; it returns the status seen and an ExitAgentFailed error when the
// agent failed.
func wait(c *ucli.Context, tn *tenant.Tenant, id string, after int) (*api.VerifierAgent, error) {
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("wait"))
	defer cancel()
	st, err := tn.WaitAttested(ctx, id, after)
	if errors.Is(err, tenant.ErrAgentFailed) {
		return st, agentFailed{err}
	}
	return st, err
}

// addOutput is add's and update's JSON document.
type addOutput struct {
	*tenant.AddResult
	// Attestation is the verifier status after --wait.
	Attestation *agentView `json:"attestation,omitempty"`
	// PayloadVerified is set when --verify saw the agent prove the payload key.
	PayloadVerified bool `json:"payload_verified,omitempty"`
}

// readPayload reads -f FILE, or zips --include DIR (files at the top of the zip, as Keylime does) and,
// with --cert CA_DIR, a certificate package for the agent.
func readPayload(file, dir, caDir, id string) ([]byte, error) {
	switch {
	case file != "" && (dir != "" || caDir != ""):
		return nil, usagef("-f excludes --include and --cert")
	case caDir != "":
		return certPackage(caDir, dir, id)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, usagef("-f: %v", err)
		}
		if len(b) > 1<<20 {
			return nil, usagef("-f: payload of %d bytes exceeds 1 MiB", len(b))
		}
		return b, nil
	case dir != "":
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		err := zipDir(zw, dir)
		if err == nil {
			err = zw.Close()
		}
		if err != nil {
			return nil, usagef("--include %s: %v", dir, err)
		}
		if buf.Len() > 1<<20 {
			return nil, usagef("--include: zipped payload of %d bytes exceeds 1 MiB", buf.Len())
		}
		return buf.Bytes(), nil
	}
	return nil, nil
}

// certPackage issues a certificate and key for the agent from the CA in caDir and zips them with the CA
// certificate, the RevocationNotifier certificate (so the agent can verify revocation messages) and the
// files of includeDir, as Keylime's tenant --cert does.
func certPackage(caDir, includeDir, id string) ([]byte, error) {
	c, err := ca.Load(caDir, ca.DefaultSubject)
	if err != nil {
		return nil, usagef("--cert: %v", err)
	}
	if _, err := c.Issue(id, ca.Client, nil); err != nil {
		return nil, err
	}
	if _, err := c.CRL(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{id + "-cert.crt", id + "-private.pem", id + "-public.pem", ca.CACertFile, "cacrl.der", "cacrl.pem", ca.RevocationNotifier + "-cert.crt"} {
		b, err := os.ReadFile(filepath.Join(caDir, name))
		if err != nil {
			if name == ca.RevocationNotifier+"-cert.crt" && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		w, err := zw.Create(name)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(b); err != nil {
			return nil, err
		}
	}
	if includeDir != "" {
		if err := zipDir(zw, includeDir); err != nil {
			return nil, usagef("--include %s: %v", includeDir, err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// certRevocation returns, for --cert, what Keylime's tenant sends with the agent: the CA directory's
// RevocationNotifier private key (the verifier signs this agent's revocations with it, so they verify
// with the RevocationNotifier-cert.crt in the package) and metadata naming the agent's new certificate.
func certRevocation(caDir, id string) (string, string, error) {
	certPEM, err := os.ReadFile(filepath.Join(caDir, id+"-cert.crt"))
	if err != nil {
		return "", "", err
	}
	cert, err := ca.ParseCertPEM(certPEM)
	if err != nil {
		return "", "", err
	}
	meta, err := json.Marshal(map[string]any{"cert_serial": cert.SerialNumber, "subject": cert.Subject.String()})
	if err != nil {
		return "", "", err
	}
	key, err := os.ReadFile(filepath.Join(caDir, ca.RevocationNotifier+"-private.pem"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", string(meta), nil
	}
	if err != nil {
		return "", "", err
	}
	return string(key), string(meta), nil
}

func zipDir(zw *zip.Writer, dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		w, err := zw.Create(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	})
}

func tenantAdd(update bool) func(*ucli.Context, *tenant.Tenant) error {
	return func(c *ucli.Context, tn *tenant.Tenant) error {
		id, err := agentID(c)
		if err != nil {
			return err
		}
		opts := tenant.AddOptions{
			AgentID:         id,
			AgentIP:         c.String("targethost"),
			AgentPort:       c.Int("targetport"),
			VerifierAgentIP: c.String("cv_targethost"),
			TPMPolicy:       c.String("tpm_policy"),
			NoEKCheck:       c.Bool("no-ek-check"),
			AgentAPIVersion: strings.TrimPrefix(c.String("agent-api-version"), "v"),
		}
		if opts.Payload, err = readPayload(c.String("file"), c.String("include"), c.String("cert"), id); err != nil {
			return err
		}
		if caDir := c.String("cert"); caDir != "" {
			if opts.RevocationKey, opts.Metadata, err = certRevocation(caDir, id); err != nil {
				return err
			}
		}
		if opts.RuntimePolicy, err = readRuntimePolicyInput(c, tn); err != nil {
			return err
		}
		opts.RuntimePolicyName = c.String("runtime-policy-name")
		if opts.MBPolicy, err = readMBPolicyFlag(c, tn); err != nil {
			return err
		}
		opts.MBPolicyName = c.String("mb-policy-name")
		if c.Bool("verify") && opts.Payload == nil {
			return usagef("--verify needs a payload (-f or --include)")
		}
		op, verb := tn.Add, "added"
		if update {
			op, verb = tn.Update, "updated"
		}
		res, err := op(c.Context, opts)
		if err != nil {
			return err
		}
		out := addOutput{AddResult: res}
		var waitErr error
		if c.Bool("verify") {
			if err := tn.VerifyPayload(c.Context, id, 0); err != nil {
				return err
			}
			out.PayloadVerified = true
		}
		if c.IsSet("wait") {
			var st *api.VerifierAgent
			st, waitErr = wait(c, tn, id, 0)
			out.Attestation = viewOf(id, st)
		}
		if err := emit(c, out, func(w io.Writer) {
			fmt.Fprintf(w, "%s agent %s on the verifier (state %s)\n", verb, id, res.State)
			fmt.Fprintf(w, "  contact:         %s (API %s)\n", net.JoinHostPort(res.AgentIP, strconv.Itoa(res.AgentPort)), res.AgentAPIVersion)
			if res.VerifierAgentIP != res.AgentIP {
				fmt.Fprintf(w, "  verifier uses:   %s\n", res.VerifierAgentIP)
			}
			ek := string(res.EKCheck)
			if res.EKCertIssuer != "" {
				ek += " (issuer " + res.EKCertIssuer + ")"
			}
			fmt.Fprintf(w, "  EK certificate:  %s\n", ek)
			fmt.Fprintf(w, "  identity quote:  valid (%s, %s, %s)\n", res.HashAlg, res.EncAlg, res.SignAlg)
			fmt.Fprintf(w, "  tpm_policy:      %s\n", res.TPMPolicy)
			for _, warn := range res.Warnings {
				fmt.Fprintf(w, "  warning:         %s\n", warn)
			}
			if out.Attestation != nil {
				fmt.Fprintf(w, "  after --wait:    %s, %d attestation(s)\n", out.Attestation.StateName, out.Attestation.AttestationCount)
			}
		}); err != nil {
			return err
		}
		return waitErr
	}
}

func tenantDelete(c *ucli.Context, tn *tenant.Tenant) error {
	id, err := agentID(c)
	if err != nil {
		return err
	}
	if err := tn.Delete(c.Context, id); err != nil {
		return err
	}
	return emit(c, map[string]any{"agent_id": id, "deleted": true, "from": "verifier"}, func(w io.Writer) {
		fmt.Fprintf(w, "deleted agent %s from the verifier\n", id)
	})
}

// statusOutput is status's JSON document.
type statusOutput struct {
	AgentID   string              `json:"agent_id"`
	StateName string              `json:"operational_state_name"`
	Registrar *api.RegistrarAgent `json:"registrar"`
	Verifier  *agentView          `json:"verifier"`
}

func tenantStatus(c *ucli.Context, tn *tenant.Tenant) error {
	id, err := agentID(c)
	if err != nil {
		return err
	}
	s, err := tn.Status(c.Context, id)
	if err != nil {
		return err
	}
	out := statusOutput{AgentID: id, StateName: api.StateName(api.StateRegistered), Registrar: s.Registrar, Verifier: viewOf(id, s.Verifier)}
	if s.Verifier != nil {
		out.StateName = api.StateName(s.Verifier.OperationalState)
	}
	if err := emit(c, out, func(w io.Writer) {
		fmt.Fprintf(w, "agent %s\n", id)
		if s.Registrar != nil {
			fmt.Fprintf(w, "  registrar:          %s\n", regSummary(s.Registrar))
		} else {
			fmt.Fprintf(w, "  registrar:          not registered\n")
		}
		if s.Verifier == nil {
			fmt.Fprintf(w, "  verifier:           not added (state %s)\n", out.StateName)
			return
		}
		printVerifierStatus(w, s.Verifier)
	}); err != nil {
		return err
	}
	if c.Bool("fail-on-failed") {
		return failedErr(id, s.Verifier)
	}
	return nil
}

func tenantCVStatus(c *ucli.Context, tn *tenant.Tenant) error {
	id, err := agentID(c)
	if err != nil {
		return err
	}
	st, err := tn.CVStatus(c.Context, id)
	if err != nil {
		return err
	}
	if err := emit(c, viewOf(id, st), func(w io.Writer) {
		fmt.Fprintf(w, "agent %s\n", id)
		printVerifierStatus(w, st)
	}); err != nil {
		return err
	}
	if c.Bool("fail-on-failed") {
		return failedErr(id, st)
	}
	return nil
}

func regSummary(r *api.RegistrarAgent) string {
	state := "active"
	if !r.Active {
		state = "not active"
	}
	contact := "no contact address"
	if r.IP != nil && r.Port != nil {
		contact = "contact " + net.JoinHostPort(*r.IP, strconv.Itoa(*r.Port))
	}
	return fmt.Sprintf("%s, regcount %d, %s", state, r.RegCount, contact)
}

func printVerifierStatus(w io.Writer, st *api.VerifierAgent) {
	fmt.Fprintf(w, "  operational state:  %s (%d)\n", api.StateName(st.OperationalState), st.OperationalState)
	fmt.Fprintf(w, "  attestation status: %s\n", st.AttestationStatus)
	fmt.Fprintf(w, "  attestations:       %d\n", st.AttestationCount)
	fmt.Fprintf(w, "  last successful:    %s\n", unixTime(st.LastSuccessfulAttestation))
	fmt.Fprintf(w, "  last quote:         %s\n", unixTime(st.LastReceivedQuote))
	fmt.Fprintf(w, "  contact:            %s\n", net.JoinHostPort(st.IP, strconv.Itoa(st.Port)))
	fmt.Fprintf(w, "  tpm_policy:         %s\n", st.TPMPolicy)
	if st.HasRuntimePolicy == 1 || st.HasMBRefstate == 1 {
		fmt.Fprintf(w, "  runtime policy:     %s\n  measured boot:      %s\n", yesNo(st.HasRuntimePolicy), yesNo(st.HasMBRefstate))
	}
	if st.LastFailure != "" {
		fmt.Fprintf(w, "  failure:            %s\n", st.LastFailure)
	}
	if len(st.Failures) > 0 {
		fmt.Fprintf(w, "  failures (oldest first):\n")
		for _, f := range st.Failures {
			fmt.Fprintf(w, "    %s  %s  %s\n", unixTime(f.Time), f.EventID, string(f.Context))
		}
	}
}

// unixTime formats Keylime's UNIX-seconds timestamps (0 = never).
func unixTime(s int64) string {
	if s <= 0 {
		return "never"
	}
	t := time.Unix(s, 0).UTC()
	return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), time.Since(t).Round(time.Second))
}

func tenantCVList(c *ucli.Context, tn *tenant.Tenant) error {
	ids, err := tn.CVList(c.Context)
	if err != nil {
		return err
	}
	return printIDs(c, ids)
}

func tenantRegList(c *ucli.Context, tn *tenant.Tenant) error {
	ids, err := tn.RegList(c.Context)
	if err != nil {
		return err
	}
	return printIDs(c, ids)
}

func printIDs(c *ucli.Context, ids []string) error {
	if ids == nil {
		ids = []string{}
	}
	sort.Strings(ids)
	return emit(c, map[string][]string{"uuids": ids}, func(w io.Writer) {
		for _, id := range ids {
			fmt.Fprintln(w, id)
		}
	})
}

func tenantBulkInfo(c *ucli.Context, tn *tenant.Tenant) error {
	all, err := tn.BulkInfo(c.Context)
	if err != nil {
		return err
	}
	out := make(map[string]*agentView, len(all))
	ids := make([]string, 0, len(all))
	for id, st := range all {
		out[id] = viewOf(id, &st)
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return emit(c, out, func(w io.Writer) {
		if len(ids) == 0 {
			return
		}
		fmt.Fprintf(w, "%-36s  %-20s  %-7s  %12s  %s\n", "AGENT", "STATE", "STATUS", "ATTESTATIONS", "LAST SUCCESS")
		for _, id := range ids {
			st := out[id]
			fmt.Fprintf(w, "%-36s  %-20s  %-7s  %12d  %s\n", id, st.StateName, st.AttestationStatus, st.AttestationCount, unixTime(st.LastSuccessfulAttestation))
		}
	})
}

func tenantReactivate(c *ucli.Context, tn *tenant.Tenant) error {
	id, err := agentID(c)
	if err != nil {
		return err
	}
	before := 0
	if c.IsSet("wait") {
		st, err := tn.CVStatus(c.Context, id)
		if err != nil {
			return err
		}
		before = st.AttestationCount
	}
	if err := tn.Reactivate(c.Context, id); err != nil {
		return err
	}
	out := struct {
		AgentID     string     `json:"agent_id"`
		Reactivated bool       `json:"reactivated"`
		Attestation *agentView `json:"attestation,omitempty"`
	}{AgentID: id, Reactivated: true}
	var waitErr error
	if c.IsSet("wait") {
		var st *api.VerifierAgent
		st, waitErr = wait(c, tn, id, before)
		out.Attestation = viewOf(id, st)
	}
	if err := emit(c, out, func(w io.Writer) {
		fmt.Fprintf(w, "reactivated agent %s\n", id)
		if out.Attestation != nil {
			fmt.Fprintf(w, "  after --wait: %s, %d attestation(s)\n", out.Attestation.StateName, out.Attestation.AttestationCount)
		}
	}); err != nil {
		return err
	}
	return waitErr
}

func tenantRegStatus(c *ucli.Context, tn *tenant.Tenant) error {
	id, err := agentID(c)
	if err != nil {
		return err
	}
	rec, err := tn.RegStatus(c.Context, id)
	if err != nil {
		return err
	}
	return emit(c, rec, func(w io.Writer) {
		fmt.Fprintf(w, "agent %s\n", id)
		fmt.Fprintf(w, "  registrar:  %s\n", regSummary(rec))
		ek := "none"
		if rec.EKCert != nil && *rec.EKCert != "" {
			ek = "present"
		}
		mtls := "none"
		if rec.MTLSCert != nil {
			mtls = "present"
			if *rec.MTLSCert == "disabled" {
				mtls = "disabled"
			}
		}
		fmt.Fprintf(w, "  EK cert:    %s\n", ek)
		fmt.Fprintf(w, "  mTLS cert:  %s\n", mtls)
	})
}

func tenantRegDelete(c *ucli.Context, tn *tenant.Tenant) error {
	id, err := agentID(c)
	if err != nil {
		return err
	}
	if err := tn.RegDelete(c.Context, id); err != nil {
		return err
	}
	return emit(c, map[string]any{"agent_id": id, "deleted": true, "from": "registrar"}, func(w io.Writer) {
		fmt.Fprintf(w, "deleted agent %s from the registrar\n", id)
	})
}
