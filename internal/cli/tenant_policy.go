package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/tenant"
)

// Named policies on the verifier (Keylime's tenant commands addruntimepolicy … listmbpolicy).

func policySubcommands() []*ucli.Command {
	rtName := func() ucli.Flag {
		return &ucli.StringFlag{Name: "runtime-policy-name", Aliases: []string{"name", "allowlist-name"}, Usage: "the policy's name on the verifier"}
	}
	mbName := func() ucli.Flag {
		return &ucli.StringFlag{Name: "mb-policy-name", Aliases: []string{"name"}, Usage: "the reference state's name on the verifier"}
	}
	return []*ucli.Command{
		tenantSub("addruntimepolicy", "store a named runtime (IMA) policy on the verifier", append([]ucli.Flag{rtName()}, runtimePolicyFlags()...), putRuntimePolicy(false)),
		tenantSub("updateruntimepolicy", "replace a named runtime policy on the verifier", append([]ucli.Flag{rtName()}, runtimePolicyFlags()...), putRuntimePolicy(true)),
		tenantSub("showruntimepolicy", "print a named runtime policy", []ucli.Flag{rtName()}, showRuntimePolicy),
		tenantSub("deleteruntimepolicy", "delete a named runtime policy (refused while an agent uses it)", []ucli.Flag{rtName()}, deleteNamedPolicy("runtime")),
		tenantSub("listruntimepolicy", "list the runtime policies on the verifier", nil, listNamedPolicies("runtime")),
		tenantSub("addmbpolicy", "store a named measured-boot reference state on the verifier", []ucli.Flag{mbName(), mbPolicyFlag()}, putMBPolicy(false)),
		tenantSub("updatembpolicy", "replace a named measured-boot reference state on the verifier", []ucli.Flag{mbName(), mbPolicyFlag()}, putMBPolicy(true)),
		tenantSub("showmbpolicy", "print a named measured-boot reference state", []ucli.Flag{mbName()}, showMBPolicy),
		tenantSub("deletembpolicy", "delete a named measured-boot reference state (refused while an agent uses it)", []ucli.Flag{mbName()}, deleteNamedPolicy("mb")),
		tenantSub("listmbpolicy", "list the measured-boot reference states on the verifier", nil, listNamedPolicies("mb")),
	}
}

// runtimePolicyFlags are the ways to give a runtime policy (add, update, addruntimepolicy).
func runtimePolicyFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "runtime-policy", Usage: "runtime policy file: Keylime JSON (any version), a DSSE-signed envelope or a legacy allowlist"},
		&ucli.StringFlag{Name: "runtime-policy-url", Usage: "download the runtime policy from this https:// (or http://) URL instead of --runtime-policy; needs --runtime-policy-checksum"},
		&ucli.StringFlag{Name: "runtime-policy-checksum", Usage: "SHA-256 (hex) the --runtime-policy file or --runtime-policy-url download must have"},
		&ucli.StringFlag{Name: "runtime-policy-sig-key", Usage: "PEM EC public key or certificate that verifies a signed runtime policy (also sent to the verifier)"},
		&ucli.StringFlag{Name: "allowlist", Usage: "legacy allowlist file (\"<digest> <path>\" lines or JSON), converted to a runtime policy"},
		&ucli.StringFlag{Name: "allowlist-url", Usage: "download the legacy allowlist from this https:// (or http://, unauthenticated) URL instead of --allowlist"},
		&ucli.StringFlag{Name: "exclude", Usage: "legacy exclude list file (one regular expression per line), added to the policy's excludes"},
	}
}

func mbPolicyFlag() ucli.Flag {
	return &ucli.StringFlag{Name: "mb-policy", Aliases: []string{"mb_refstate", "mb-refstate"}, Usage: "measured-boot reference state file (Keylime's mb_refstate JSON); \"default\": tenant.mb_refstate"}
}

// readRuntimePolicyInput reads the runtime policy flags; all unset gives an empty input. The flag
// combinations are checked first (Keylime's get_opts_error), then files are read and URLs downloaded
// (tn's request timeout, the system roots, 64 MiB at most); a download error exits 1, a bad
// combination or URL 2, and either way before anything reaches the verifier.
func readRuntimePolicyInput(c *ucli.Context, tn *tenant.Tenant) (tenant.RuntimePolicyInput, error) {
	var in tenant.RuntimePolicyInput
	urls := tenant.PolicyURLs{Policy: c.String("runtime-policy-url"), Allowlist: c.String("allowlist-url")}
	policyGiven := c.String("runtime-policy") != "" || urls.Policy != ""
	for _, pair := range [][2]string{{"runtime-policy", "runtime-policy-url"}, {"allowlist", "allowlist-url"}} {
		if c.String(pair[0]) != "" && c.String(pair[1]) != "" {
			return in, usagef("--%s and --%s exclude each other", pair[0], pair[1])
		}
	}
	in.Checksum = c.String("runtime-policy-checksum")
	switch {
	case urls.Policy != "" && in.Checksum == "":
		return in, usagef("--runtime-policy-url needs --runtime-policy-checksum (the SHA-256 the download must have), as in Keylime's tenant")
	case c.String("runtime-policy-sig-key") != "" && !policyGiven:
		return in, usagef("--runtime-policy-sig-key needs --runtime-policy or --runtime-policy-url")
	case in.Checksum != "" && !policyGiven:
		return in, usagef("--runtime-policy-checksum needs --runtime-policy or --runtime-policy-url")
	case c.String("exclude") != "" && !policyGiven && c.String("allowlist") == "" && urls.Allowlist == "":
		return in, usagef("--exclude needs --allowlist, --allowlist-url, --runtime-policy or --runtime-policy-url")
	}
	for _, u := range [][2]string{{"runtime-policy-url", urls.Policy}, {"allowlist-url", urls.Allowlist}} {
		if u[1] != "" {
			if _, err := tenant.ParsePolicyURL(u[1]); err != nil {
				return in, usagef("--%s: %w", u[0], err)
			}
		}
	}
	for _, f := range []struct {
		flag string
		dst  *[]byte
	}{{"runtime-policy", &in.Policy}, {"runtime-policy-sig-key", &in.SigKey}, {"allowlist", &in.Allowlist}, {"exclude", &in.Excludes}} {
		if p := c.String(f.flag); p != "" {
			b, err := os.ReadFile(p)
			if err != nil {
				return in, usagef("--%s: %v", f.flag, err)
			}
			*f.dst = b
		}
	}
	if urls == (tenant.PolicyURLs{}) {
		return in, nil
	}
	fetch := tn.PolicyFetcher()
	if err := fetch.Download(c.Context, &in, urls); err != nil {
		if errors.Is(err, tenant.ErrPolicyURL) {
			return in, usageError{err}
		}
		return in, err
	}
	return in, nil
}

func readFileFlag(c *ucli.Context, flag string) ([]byte, error) {
	p := c.String(flag)
	if p == "" {
		return nil, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, usagef("--%s: %v", flag, err)
	}
	return b, nil
}

// readMBPolicyFlag reads the --mb-policy file; the value "default" names tenant.mb_refstate, as in
// Keylime.
func readMBPolicyFlag(c *ucli.Context, tn *tenant.Tenant) ([]byte, error) {
	if c.String("mb-policy") != "default" {
		return readFileFlag(c, "mb-policy")
	}
	p := tn.MBRefstate()
	if p == "" {
		return nil, usagef("--mb-policy default: tenant.mb_refstate is not set")
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, usagef("--mb-policy default (tenant.mb_refstate): %v", err)
	}
	return b, nil
}

func policyNameFlag(c *ucli.Context, flag string) (string, error) {
	n := c.String(flag)
	if n == "" {
		return "", usagef("tenant %s: --%s is required", c.Command.Name, flag)
	}
	return n, nil
}

// policyResult is the JSON document of the commands that change a named policy.
type policyResult struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Action string `json:"action"`
}

func putRuntimePolicy(update bool) func(*ucli.Context, *tenant.Tenant) error {
	return func(c *ucli.Context, tn *tenant.Tenant) error {
		name, err := policyNameFlag(c, "runtime-policy-name")
		if err != nil {
			return err
		}
		in, err := readRuntimePolicyInput(c, tn)
		if err != nil {
			return err
		}
		if in.Empty() {
			return usagef("tenant %s: give --runtime-policy, --runtime-policy-url, --allowlist or --allowlist-url", c.Command.Name)
		}
		if err := tn.PutRuntimePolicy(c.Context, name, in, update); err != nil {
			return err
		}
		return emitPolicyResult(c, policyResult{Name: name, Kind: "runtime", Action: action(update)})
	}
}

func putMBPolicy(update bool) func(*ucli.Context, *tenant.Tenant) error {
	return func(c *ucli.Context, tn *tenant.Tenant) error {
		name, err := policyNameFlag(c, "mb-policy-name")
		if err != nil {
			return err
		}
		raw, err := readMBPolicyFlag(c, tn)
		if err != nil {
			return err
		}
		if raw == nil {
			return usagef("tenant %s: --mb-policy is required", c.Command.Name)
		}
		if err := tn.PutMBPolicy(c.Context, name, raw, update); err != nil {
			return err
		}
		return emitPolicyResult(c, policyResult{Name: name, Kind: "mb", Action: action(update)})
	}
}

func action(update bool) string {
	if update {
		return "updated"
	}
	return "added"
}

func emitPolicyResult(c *ucli.Context, r policyResult) error {
	return emit(c, r, func(w io.Writer) {
		kind := "runtime policy"
		if r.Kind == "mb" {
			kind = "measured-boot policy"
		}
		fmt.Fprintf(w, "%s %s %s on the verifier\n", r.Action, kind, r.Name)
	})
}

func showRuntimePolicy(c *ucli.Context, tn *tenant.Tenant) error {
	name, err := policyNameFlag(c, "runtime-policy-name")
	if err != nil {
		return err
	}
	p, err := tn.RuntimePolicy(c.Context, name)
	if err != nil {
		return err
	}
	return emit(c, p, func(w io.Writer) { fmt.Fprintln(w, p.RuntimePolicy) })
}

func showMBPolicy(c *ucli.Context, tn *tenant.Tenant) error {
	name, err := policyNameFlag(c, "mb-policy-name")
	if err != nil {
		return err
	}
	p, err := tn.MBPolicy(c.Context, name)
	if err != nil {
		return err
	}
	return emit(c, p, func(w io.Writer) { fmt.Fprintln(w, p.MBPolicy) })
}

func deleteNamedPolicy(kind string) func(*ucli.Context, *tenant.Tenant) error {
	return func(c *ucli.Context, tn *tenant.Tenant) error {
		flag, del := "runtime-policy-name", tn.DeleteRuntimePolicy
		if kind == "mb" {
			flag, del = "mb-policy-name", tn.DeleteMBPolicy
		}
		name, err := policyNameFlag(c, flag)
		if err != nil {
			return err
		}
		if err := del(c.Context, name); err != nil {
			return err
		}
		return emitPolicyResult(c, policyResult{Name: name, Kind: kind, Action: "deleted"})
	}
}

func listNamedPolicies(kind string) func(*ucli.Context, *tenant.Tenant) error {
	return func(c *ucli.Context, tn *tenant.Tenant) error {
		list, key := tn.RuntimePolicies, "runtimepolicy names"
		if kind == "mb" {
			list, key = tn.MBPolicies, "mbpolicy names"
		}
		names, err := list(c.Context)
		if err != nil {
			return err
		}
		sort.Strings(names)
		return emit(c, map[string][]string{key: names}, func(w io.Writer) {
			for _, n := range names {
				fmt.Fprintln(w, n)
			}
		})
	}
}

// isPolicyInputError reports the caller's mistakes in policy files: exit 2.
func isPolicyInputError(err error) bool {
	return errors.Is(err, tenant.ErrBadPolicy) || errors.Is(err, tenant.ErrPolicySignature) || errors.Is(err, tenant.ErrBadPolicyName)
}
