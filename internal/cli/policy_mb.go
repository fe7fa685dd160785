package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"

	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/policy/mb"
)

func eventlogFlag() ucli.Flag {
	return &ucli.StringFlag{Name: "eventlog", Aliases: []string{"eventlog-file", "e"}, Usage: "binary UEFI event log (/sys/kernel/security/tpm0/binary_bios_measurements)"}
}

func createMeasuredBootCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "measured-boot",
		Usage: "build a measured-boot reference state (mb_refstate) from a known-good UEFI event log",
		Description: `The reference state is for Keylime's "example" measured-boot policy. Like keylime-policy, a
log with Secure Boot off is refused unless --without-secureboot is given. Notes on stderr say what the
reference state could not express or had to guess; odd logs give a reason, never a crash.`,
		Flags: []ucli.Flag{
			eventlogFlag(),
			&ucli.BoolFlag{Name: "without-secureboot", Aliases: []string{"i"}, Usage: "allow a log with Secure Boot off (measured boot only)"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output file (default stdout)"},
		},
		OnUsageError: onUsageError,
		Action:       createMeasuredBoot,
	}
}

// readEventLog reads and parses --eventlog; a missing, truncated or garbage log is a usage error.
func readEventLog(c *ucli.Context) ([]byte, *mb.Log, error) {
	f := c.String("eventlog")
	if f == "" {
		return nil, nil, usagef("policy %s: --eventlog is required", c.Command.Name)
	}
	raw, err := readInput(c, "--eventlog", f)
	if err != nil {
		return nil, nil, err
	}
	log, err := mb.Parse(raw)
	if err != nil {
		return nil, nil, usagef("--eventlog %s: %w", f, err)
	}
	return raw, log, nil
}

func createMeasuredBoot(c *ucli.Context) error {
	if err := noExtraArgs(c, 0); err != nil {
		return err
	}
	_, log, err := readEventLog(c)
	if err != nil {
		return err
	}
	ref, notes, err := mb.Generate(log, c.Bool("without-secureboot"))
	for _, n := range notes {
		notef(c, "%s", n)
	}
	if err != nil {
		return usagef("--eventlog %s: %w", c.String("eventlog"), err)
	}
	b, err := ref.MarshalJSON()
	if err != nil {
		return fmt.Errorf("policy create measured-boot: %w", err)
	}
	if _, err := mb.ParseRefState(b); err != nil {
		return fmt.Errorf("policy create measured-boot: the result is not a valid reference state: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "    "); err != nil {
		return fmt.Errorf("policy create measured-boot: %w", err)
	}
	out.WriteByte('\n')
	return writeOutput(c, c.String("output"), out.Bytes())
}

func evaluateMeasuredBootCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "measured-boot",
		Usage: "replay a UEFI event log, print its PCRs per bank and judge it against a reference state",
		Description: `Prints, for every bank the log carries, the value of each PCR the log extends, and with
--mb-policy the verdict of the measured-boot policy (--policy-name, default example) on the log, as the
verifier judges it (nothing is compared with a quote). Without --mb-policy the log is only parsed and
replayed.
With --json: {"pcrs": {"sha256": {"0": "<hex>", …}, "sha1": {…}}, "valid": true|false,
"failures": [{"event_id": "...", "context": {...}}]}.
Exit 0 valid, 1 the policy rejects the log, 2 unusable input (unreadable or malformed log or policy).`,
		Flags: []ucli.Flag{
			eventlogFlag(),
			&ucli.StringFlag{Name: "mb-policy", Aliases: []string{"mb-refstate"}, Usage: "measured-boot reference state (JSON)"},
			&ucli.StringFlag{Name: "policy-name", Value: mb.PolicyExample, Usage: "measured-boot policy: example, accept-all or reject-all"},
			&ucli.BoolFlag{Name: "json", Usage: "print one JSON document"},
		},
		OnUsageError: onUsageError,
		Action:       evaluateMeasuredBoot,
	}
}

func evaluateMeasuredBoot(c *ucli.Context) error {
	if err := noExtraArgs(c, 0); err != nil {
		return err
	}
	name := c.String("policy-name")
	if _, err := mb.RelevantPCRs(name); err != nil {
		return usagef("--policy-name: %w", err)
	}
	raw, _, err := readEventLog(c)
	if err != nil {
		return err
	}
	var ref []byte
	if f := c.String("mb-policy"); f != "" {
		if ref, err = readInput(c, "--mb-policy", f); err != nil {
			return err
		}
		if _, err := mb.ParseRefState(ref); err != nil {
			return usagef("--mb-policy %s: %w", f, err)
		}
	}
	res := mb.EvaluateOffline(raw, ref, name)
	for _, n := range res.Notes {
		notef(c, "%s", n)
	}
	ev := evaluation{PCRs: res.PCRs, Valid: res.Valid, Failures: failureViews(res.Failures)}
	if ev.PCRs == nil {
		ev.PCRs = map[string]map[string]string{}
	}
	return printEvaluation(c, ev, func(w io.Writer) {
		banks := make([]string, 0, len(ev.PCRs))
		for b := range ev.PCRs {
			banks = append(banks, b)
		}
		sort.Strings(banks)
		for _, b := range banks {
			var idx []int
			for k := range ev.PCRs[b] {
				if n, err := strconv.Atoi(k); err == nil {
					idx = append(idx, n)
				}
			}
			sort.Ints(idx)
			for _, n := range idx {
				fmt.Fprintf(w, "PCR %-2d %-7s %s\n", n, b+":", ev.PCRs[b][strconv.Itoa(n)])
			}
		}
		switch {
		case ref == nil && ev.Valid:
			fmt.Fprintln(w, "parsed and replayed (no --mb-policy given)")
		case ev.Valid:
			fmt.Fprintf(w, "valid: the %s policy accepts the log\n", name)
		default:
			fmt.Fprintf(w, "invalid: %d failure(s)\n", len(ev.Failures))
			printFailures(w, ev.Failures)
		}
	})
}
