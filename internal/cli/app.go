// Package cli is the keylime command line: it builds the urfave/cli application, one file per role, and is
// the only place that loads configuration, installs signal handlers and chooses exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/rs/zerolog"
	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/internal/config"
)

// Exit codes of every keylime command.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // the command ran and failed (unreachable server, refused request, failed check)
	ExitUsage   = 2 // bad flags, bad configuration or unusable input
)

// Version is the release version, set at link time with -ldflags "-X …/internal/cli.Version=v1.2.3".
var Version = "dev"

// usageError marks an error as the caller's mistake (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Main runs the command line in args and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp(stdout, stderr)
	err := app.RunContext(ctx, args)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "keylime: %v\n", oneLine(err))
	var ue usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	var ec ucli.ExitCoder
	if errors.As(err, &ec) {
		if ec.ExitCode() == 3 { // urfave/cli's "No help topic for …": an unknown command
			return ExitUsage
		}
		return ec.ExitCode()
	}
	return ExitFailure
}

func oneLine(err error) string {
	s := err.Error()
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == '\n' || r == '\r' {
			r = ' '
		}
		out = append(out, r)
	}
	return string(out)
}

func newApp(stdout, stderr io.Writer) *ucli.App {
	return &ucli.App{
		Name:      "keylime",
		Usage:     "TPM remote attestation (Keylime-compatible): agent, registrar, verifier and tenant in one binary",
		Version:   Version,
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "configuration file (default $KEYLIME_CONFIG or " + config.DefaultPath + " when present)"},
			&ucli.StringSliceFlag{Name: "set", Usage: "override a configuration key: --set section.key=value (repeatable)"},
			&ucli.StringFlag{Name: "log-level", Value: "info", Usage: "trace, debug, info, warn or error"},
			&ucli.StringFlag{Name: "log-format", Value: "console", Usage: "console (human) or json"},
		},
		HideVersion: true,
		Commands: []*ucli.Command{
			agentCommand(),
			registrarCommand(),
			verifierCommand(),
			tenantCommand(),
			caCommand(),
			policyCommand(),
			versionCommand(),
		},
		OnUsageError: func(_ *ucli.Context, err error, _ bool) error { return usageError{err} },
		ExitErrHandler: func(*ucli.Context, error) {
			// Main prints the error and picks the exit code.
		},
	}
}

// env bundles what every role command needs: its configuration and a logger.
type env struct {
	cfg config.Config
	log zerolog.Logger
}

// setup loads the configuration (file, environment, --set) and builds the logger.
func setup(c *ucli.Context, extra ...string) (*env, error) {
	log, err := newLogger(c.App.ErrWriter, c.String("log-format"), c.String("log-level"))
	if err != nil {
		return nil, usageError{err}
	}
	path := config.Find(c.String("config"))
	cfg, err := config.Load(path, os.Environ(), append(c.StringSlice("set"), extra...))
	if err != nil {
		return nil, usageError{err}
	}
	if path != "" {
		log.Debug().Str("path", path).Msg("configuration loaded")
	}
	return &env{cfg: cfg, log: log}, nil
}

func newLogger(w io.Writer, format, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("unknown log level %q", level)
	}
	var out io.Writer
	switch format {
	case "json":
		out = w
	case "console", "":
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	default:
		return zerolog.Nop(), fmt.Errorf("unknown log format %q (console or json)", format)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

func versionCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "version",
		Usage: "print the version and the API versions this binary speaks",
		Action: func(c *ucli.Context) error {
			goVersion := ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				goVersion = bi.GoVersion
			}
			fmt.Fprintf(c.App.Writer, "keylime %s (%s), API %s\n", Version, goVersion, apiVersions())
			return nil
		},
	}
}
