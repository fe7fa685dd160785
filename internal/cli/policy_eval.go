package cli

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/policy/ima"
)

func evaluateRuntimeCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "runtime",
		Usage: "replay an IMA log, print PCR 10 per bank and judge the log against a runtime policy",
		Description: `The log is parsed and replayed from zeros in each bank (default sha1 and sha256). With
--runtime-policy every entry is judged as the verifier judges it, against a quote whose PCR 10 is the
replayed value (so only the policy decides): template hashes, file digests, excludes, IMA signatures
(the policy's verification-keys and --keys), keyrings, ima-buf. Without a policy the log is only parsed,
its template hashes checked and replayed.
A signed policy (DSSE envelope) is verified with --runtime-policy-key; without the key it is only
unwrapped (a note says so). A legacy allowlist is converted.
With --json: {"pcrs": {"sha1": {"10": "<hex>"}, "sha256": {"10": "<hex>"}}, "valid": true|false,
"failures": [{"event_id": "...", "context": {...}}]}.
Exit 0 valid, 1 the policy rejects the log, 2 unusable input (malformed log line, bad policy or key).`,
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "ima-log", Aliases: []string{"ima-measurement-list", "m"}, Usage: "IMA log (ascii_runtime_measurements)"},
			&ucli.StringFlag{Name: "runtime-policy", Aliases: []string{"r"}, Usage: "runtime policy (JSON, DSSE envelope or legacy allowlist)"},
			&ucli.StringFlag{Name: "runtime-policy-key", Aliases: []string{"runtime-policy-sig-key"}, Usage: "EC public key or certificate (PEM) the signed policy must verify with"},
			newMultiFlag("keys", []string{"ima-sign-verification-keys"}, "IMA signature verification key (certificate, public or private key, DER or PEM, or a keyring JSON) added to the policy's"),
			&ucli.StringSliceFlag{Name: "bank", Value: ucli.NewStringSlice("sha1", "sha256"), Usage: "PCR banks to replay: sha1, sha256, sha384, sha512"},
			&ucli.IntFlag{Name: "max-failures", Usage: "list at most this many failures per bank (0: all)"},
			&ucli.BoolFlag{Name: "fail-violations", Usage: "report violation (ToMToU, open-writers) entries as failures, as the verifier does with ignore_tomtou_errors = True"},
			&ucli.BoolFlag{Name: "json", Usage: "print one JSON document"},
		},
		OnUsageError: onUsageError,
		Action:       evaluateRuntime,
	}
}

func evaluateRuntime(c *ucli.Context) error {
	if err := noExtraArgs(c, 0); err != nil {
		return err
	}
	if c.String("ima-log") == "" {
		return usagef("policy evaluate runtime: --ima-log is required")
	}
	var banks []crypto.Hash
	for _, name := range c.StringSlice("bank") {
		h, err := ima.BankByName(strings.ToLower(name))
		if err != nil {
			return usagef("--bank %q: %w", name, err)
		}
		if !slices.Contains(banks, h) {
			banks = append(banks, h)
		}
	}
	if c.String("runtime-policy-key") != "" && c.String("runtime-policy") == "" {
		return usagef("policy evaluate runtime: --runtime-policy-key without --runtime-policy")
	}
	log, err := readInput(c, "--ima-log", c.String("ima-log"))
	if err != nil {
		return err
	}
	pcrs, err := ima.Replay(bytes.NewReader(log), banks...)
	if err != nil {
		return usagef("--ima-log %s: %w", c.String("ima-log"), err)
	}

	var compiled *ima.Compiled
	if f := c.String("runtime-policy"); f != "" {
		if compiled, err = loadRuntimePolicy(c, f, c.String("runtime-policy-key")); err != nil {
			return err
		}
	}
	opts := ima.Options{FailViolations: c.Bool("fail-violations"), MaxFailures: c.Int("max-failures")}
	if opts.MaxFailures <= 0 {
		opts.MaxFailures = math.MaxInt
	}
	if files := multi(c, "keys"); len(files) > 0 {
		ring := ima.NewKeyring()
		if compiled != nil {
			ring = compiled.Keys().Clone()
		}
		for _, f := range files {
			if err := addKeyFile(c, ring, f); err != nil {
				return err
			}
		}
		opts.Keys = ring
	}

	ev := evaluation{PCRs: map[string]map[string]string{}}
	var failures []policy.Failure
	entries, suppressed := 0, 0
	for _, bank := range banks {
		ev.PCRs[ima.BankName(bank)] = map[string]string{"10": hex.EncodeToString(pcrs[bank])}
		res := ima.Attest(ima.State{}, ima.Evidence{Log: log, Bank: bank, PCR10: pcrs[bank]}, compiled, opts)
		failures = append(failures, res.Failures...)
		entries, suppressed = res.Entries, max(suppressed, res.Suppressed)
	}
	ev.Failures = failureViews(failures)
	ev.Valid = len(ev.Failures) == 0 && suppressed == 0
	if suppressed > 0 {
		notef(c, "%d more failures not listed (--max-failures)", suppressed)
	}
	return printEvaluation(c, ev, func(w io.Writer) {
		for _, bank := range banks {
			name := ima.BankName(bank)
			fmt.Fprintf(w, "PCR 10 %-7s %s\n", name+":", ev.PCRs[name]["10"])
		}
		fmt.Fprintf(w, "entries: %d\n", entries)
		switch {
		case compiled == nil && ev.Valid:
			fmt.Fprintln(w, "parsed and replayed (no --runtime-policy given)")
		case ev.Valid:
			fmt.Fprintln(w, "valid: the policy accepts every entry")
		default:
			fmt.Fprintf(w, "invalid: %d failure(s)\n", len(ev.Failures))
			printFailures(w, ev.Failures)
		}
	})
}

// loadRuntimePolicy reads, verifies (with key) and compiles a runtime policy for evaluation.
func loadRuntimePolicy(c *ucli.Context, file, keyFile string) (*ima.Compiled, error) {
	data, err := readInput(c, "--runtime-policy", file)
	if err != nil {
		return nil, err
	}
	var key []byte
	if keyFile != "" {
		raw, err := readInput(c, "--runtime-policy-key", keyFile)
		if err != nil {
			return nil, err
		}
		if key, err = dsseKey(raw); err != nil {
			return nil, usagef("--runtime-policy-key %s: %w", keyFile, err)
		}
	}
	var p *ima.RuntimePolicy
	switch {
	case ima.IsEnvelope(data) || key != nil:
		if p, err = ima.OpenRuntimePolicy(data, key, false); err != nil {
			return nil, usagef("--runtime-policy %s: %w", file, err)
		}
		if key == nil {
			notef(c, "--runtime-policy %s is signed; its signature was not checked (give --runtime-policy-key)", file)
		}
	default:
		if p, err = ima.DecodeRuntimePolicy(data); err != nil {
			var obj map[string]json.RawMessage
			if json.Unmarshal(data, &obj) == nil && obj["digests"] != nil {
				return nil, usagef("--runtime-policy %s: %w", file, err)
			}
			// Not a current policy: an allowlist or an older policy format.
			conv, cerr := ima.ConvertPolicy(data)
			if cerr != nil {
				return nil, usagef("--runtime-policy %s: %w", file, errors.Join(err, cerr))
			}
			notef(c, "--runtime-policy %s is not a version %d runtime policy; it was converted", file, ima.RuntimePolicyVersion)
			p = conv
		}
	}
	compiled, err := ima.Compile(p)
	if err != nil {
		return nil, usagef("--runtime-policy %s: %w", file, err)
	}
	for _, w := range compiled.Warnings() {
		notef(c, "--runtime-policy: %s", w)
	}
	return compiled, nil
}

// addKeyFile adds the keys of a --keys file (a key or certificate, or a keyring JSON) to ring.
func addKeyFile(c *ucli.Context, ring *ima.Keyring, file string) error {
	data, err := readInput(c, "--keys", file)
	if err != nil {
		return err
	}
	var ks *ima.Keyring
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		var warnings []string
		if ks, warnings, err = ima.ParseVerificationKeys(string(data)); err != nil {
			return usagef("--keys %s: %w", file, err)
		}
		for _, w := range warnings {
			notef(c, "--keys %s: %s", file, w)
		}
	} else if ks, err = ima.ParseKeys(data); err != nil {
		return usagef("--keys %s: %w", file, err)
	}
	for _, k := range ks.Keys() {
		if err := ring.Add(k.Public, k.ID); err != nil {
			return usagef("--keys %s: %w", file, err)
		}
	}
	return nil
}
