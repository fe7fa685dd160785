package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/policy"
)

// The `keylime policy` commands build, sign and check runtime (IMA) and measured-boot policies
// offline, as Keylime's keylime-policy does. They read no configuration and talk to no server.

const policyDescription = `Offline tools for Keylime's policies (Keylime: keylime-policy), plus offline evaluation:

  create runtime         build a runtime (IMA) policy from an IMA log, a directory tree, an allowlist
  create measured-boot   build a measured-boot reference state from a known-good UEFI event log
  sign, verify           sign a runtime policy into a DSSE envelope, check one
  evaluate runtime       replay an IMA log, print PCR 10 per bank and judge it against a policy
  evaluate measured-boot replay a UEFI event log, print its PCRs and judge it against a reference state

Upstream option names are accepted as aliases (--ima-measurement-list, --eventlog-file, --keyfile, …).
Options come before file arguments. Notes (what was left out and why) and progress go to stderr.

Exit codes:
  0  success; evaluate and verify: the policy accepts the log, the signature is valid
  1  evaluate: the policy rejects the log; verify: the signature does not verify
  2  usage or unusable input: bad option, unreadable or malformed file (the reason is on stderr)
Errors are one line on stderr, starting with "keylime: ".`

func policyCommand() *ucli.Command {
	return &ucli.Command{
		Name:         "policy",
		Usage:        "create, sign, verify and evaluate runtime (IMA) and measured-boot policies offline (Keylime's keylime-policy)",
		Description:  policyDescription,
		OnUsageError: onUsageError,
		Subcommands: []*ucli.Command{
			{
				Name:         "create",
				Usage:        "create a runtime or measured-boot policy",
				OnUsageError: onUsageError,
				Subcommands:  []*ucli.Command{createRuntimeCommand(), createMeasuredBootCommand()},
			},
			signCommand(),
			verifyCommand(),
			{
				Name:         "evaluate",
				Usage:        "judge a log against a policy offline, as the verifier would",
				OnUsageError: onUsageError,
				Subcommands:  []*ucli.Command{evaluateRuntimeCommand(), evaluateMeasuredBootCommand()},
			},
		},
	}
}

// multiFlag is a repeatable string option whose values are kept whole (urfave's string slices split
// at commas, which regular expressions and file names may contain).
type multiFlag []string

func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
func (m *multiFlag) String() string {
	if m == nil {
		return ""
	}
	return strings.Join(*m, " ")
}

func newMultiFlag(name string, aliases []string, usage string) *ucli.GenericFlag {
	return &ucli.GenericFlag{Name: name, Aliases: aliases, Usage: usage + " (repeatable)", Value: &multiFlag{}}
}

// multi returns the values of a multiFlag option.
func multi(c *ucli.Context, name string) []string {
	if m, ok := c.Generic(name).(*multiFlag); ok && m != nil {
		return *m
	}
	return nil
}

// maxPolicyInput bounds the files the policy commands read whole (runtime policies of a whole
// distribution reach a few hundred MB).
const maxPolicyInput = 1 << 30

// readInput reads a file named by an option; "-" is stdin. Failures are usage errors (exit 2).
func readInput(c *ucli.Context, what, path string) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, usagef("%s: %v", what, err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			return nil, usagef("%s: %s is a directory", what, path)
		}
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPolicyInput+1))
	if err != nil {
		return nil, usagef("%s: %v", what, err)
	}
	if len(b) > maxPolicyInput {
		return nil, usagef("%s: larger than %d MiB", what, maxPolicyInput>>20)
	}
	return b, nil
}

// writeOutput writes data to path ("" or "-": stdout). A file is written to a temporary name
// first and renamed, so a failed run leaves no half-written policy.
func writeOutput(c *ucli.Context, path string, data []byte) error {
	if path == "" || path == "-" {
		_, err := c.App.Writer.Write(data)
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("output %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("output %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("output %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	return nil
}

// notef prints a note on stderr (not an error: the "keylime: " prefix is kept for the one error
// line a failing command prints).
func notef(c *ucli.Context, format string, args ...any) {
	fmt.Fprintf(c.App.ErrWriter, "note: "+format+"\n", args...)
}

// noExtraArgs refuses positional arguments beyond the first n.
func noExtraArgs(c *ucli.Context, n int) error {
	if c.Args().Len() > n {
		return usagef("policy %s: unexpected argument %q (options come before file arguments)", c.Command.Name, c.Args().Get(n))
	}
	return nil
}

// failureView is one failure as the evaluate commands print it: Keylime's {"event_id", "context"}.
type failureView struct {
	EventID string         `json:"event_id"`
	Context map[string]any `json:"context"`
}

// evaluation is the JSON answer of both evaluate commands.
type evaluation struct {
	PCRs     map[string]map[string]string `json:"pcrs"`
	Valid    bool                         `json:"valid"`
	Failures []failureView                `json:"failures"`
}

func failureViews(fs []policy.Failure) []failureView {
	out := make([]failureView, 0, len(fs))
	seen := map[string]bool{}
	for _, f := range fs {
		key := f.EventID + "\x00" + f.ContextJSON()
		if seen[key] {
			continue
		}
		seen[key] = true
		ctx := f.Context
		if ctx == nil {
			ctx = map[string]any{}
		}
		out = append(out, failureView{EventID: f.EventID, Context: ctx})
	}
	return out
}

// errPolicyRejects is returned (exit 1) when an evaluation finds failures.
var errPolicyRejects = errors.New("the policy rejects the log")

// printEvaluation prints an evaluation as JSON (--json) or text, and returns errPolicyRejects
// (exit 1) when it is not valid.
func printEvaluation(c *ucli.Context, ev evaluation, text func(io.Writer)) error {
	if c.Bool("json") {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(ev); err != nil {
			return err
		}
		if _, err := c.App.Writer.Write(buf.Bytes()); err != nil {
			return err
		}
	} else {
		text(c.App.Writer)
	}
	if ev.Valid {
		return nil
	}
	first := ""
	if len(ev.Failures) > 0 {
		f := policy.Failure{EventID: ev.Failures[0].EventID, Context: ev.Failures[0].Context}
		first = "; first: " + f.Message()
	}
	return fmt.Errorf("%w: %d failure(s)%s", errPolicyRejects, len(ev.Failures), first)
}

// printFailures writes one readable line per failure.
func printFailures(w io.Writer, fs []failureView) {
	for _, f := range fs {
		fmt.Fprintf(w, "  %s\n", policy.Failure{EventID: f.EventID, Context: f.Context}.Message())
	}
}
