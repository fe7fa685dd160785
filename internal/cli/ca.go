package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
)

func caCommand() *ucli.Command {
	dirFlag := func() ucli.Flag {
		return &ucli.StringFlag{Name: "dir", Aliases: []string{"d"}, Usage: "CA directory (default <verifier.keylime_dir>/cv_ca, where tls_dir = \"generate\" puts it)"}
	}
	sanFlag := func(what string) ucli.Flag {
		return &ucli.StringSliceFlag{Name: "san", Usage: what + " (host name or IP address; repeatable)"}
	}
	jsonFlag := &ucli.BoolFlag{Name: "json", Usage: "print the paths written as one JSON document"}
	return &ucli.Command{
		Name:         "ca",
		Usage:        "create a Keylime CA directory and issue certificates from it (Keylime's keylime_ca)",
		OnUsageError: onUsageError,
		Description: `The directory uses Keylime's layout: cacert.crt and ca-private.pem, and issued pairs
<name>-cert.crt, <name>-private.pem and <name>-public.pem. Subject fields and lifetimes come from the
[ca] section. Exit codes: 0 success, 1 failure (e.g. a CA or certificate already exists: nothing is
overwritten), 2 usage.`,
		Subcommands: []*ucli.Command{
			{
				Name:         "init",
				Usage:        "create a CA with server and client certificates (refuses to overwrite an existing CA)",
				Flags:        []ucli.Flag{dirFlag(), sanFlag("extra name in the server certificate"), jsonFlag},
				OnUsageError: onUsageError,
				Action:       caInit,
			},
			{
				Name:  "issue",
				Usage: "issue <name>-cert.crt, <name>-private.pem and <name>-public.pem from the CA",
				Flags: []ucli.Flag{
					dirFlag(),
					&ucli.StringFlag{Name: "name", Aliases: []string{"n"}, Usage: "certificate name (common name and file prefix)"},
					&ucli.BoolFlag{Name: "server", Usage: "a TLS server certificate (the default; localhost and 127.0.0.1 are always included)"},
					&ucli.BoolFlag{Name: "client", Usage: "a TLS client certificate"},
					sanFlag("subject alternative name"),
					jsonFlag,
				},
				OnUsageError: onUsageError,
				Action:       caIssue,
			},
		},
	}
}

// caDir returns --dir, or the verifier's generated CA directory.
func caDir(c *ucli.Context, e *env) (string, error) {
	dir := c.String("dir")
	if dir == "" {
		dir = filepath.Join(e.cfg.Verifier.KeylimeDir, "cv_ca")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", usagef("--dir: %v", err)
	}
	return abs, nil
}

func noArgs(c *ucli.Context) error {
	if c.Args().Present() {
		return usagef("ca %s: unexpected argument %q (options start with -)", c.Command.Name, c.Args().First())
	}
	return nil
}

func caInit(c *ucli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	e, err := setup(c)
	if err != nil {
		return err
	}
	dir, err := caDir(c, e)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, ca.CACertFile)); err == nil {
		return fmt.Errorf("ca init: %s already holds a CA (%s); refusing to overwrite it: %w", dir, ca.CACertFile, ca.ErrExists)
	}
	if _, err := ca.Ensure(dir, caSubject(e.cfg.CA), c.StringSlice("san")); err != nil {
		return fmt.Errorf("ca init: %w", err)
	}
	files, err := caFiles(dir)
	if err != nil {
		return err
	}
	out := struct {
		Dir    string   `json:"dir"`
		CACert string   `json:"ca_cert"`
		Files  []string `json:"files"`
	}{Dir: dir, CACert: filepath.Join(dir, ca.CACertFile), Files: files}
	return emit(c, out, func(w io.Writer) {
		fmt.Fprintf(w, "created a Keylime CA in %s:\n", dir)
		for _, f := range files {
			fmt.Fprintf(w, "  %s\n", f)
		}
	})
}

// caFiles lists the certificate and key files of a CA directory.
func caFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, en := range entries {
		if en.Type().IsRegular() && !strings.HasPrefix(en.Name(), ".") {
			out = append(out, filepath.Join(dir, en.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

func caIssue(c *ucli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	name := c.String("name")
	switch {
	case name == "":
		return usagef("ca issue: --name is required")
	case !api.ValidName(name, 64, true):
		return usagef("ca issue: --name %q: use 1-64 characters from [A-Za-z0-9_.-]", name)
	case name == "ca":
		return usagef("ca issue: --name ca would overwrite the CA's own key (ca-private.pem)")
	case c.Bool("server") && c.Bool("client"):
		return usagef("ca issue: --server and --client exclude each other")
	}
	kind, kindName := ca.Server, "server"
	if c.Bool("client") {
		kind, kindName = ca.Client, "client"
	}
	e, err := setup(c)
	if err != nil {
		return err
	}
	dir, err := caDir(c, e)
	if err != nil {
		return err
	}
	certFile := filepath.Join(dir, name+"-cert.crt")
	keyFile := filepath.Join(dir, name+"-private.pem")
	pubFile := filepath.Join(dir, name+"-public.pem")
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Stat(f); err == nil {
			return fmt.Errorf("ca issue: %s already exists; refusing to overwrite it", f)
		}
	}
	authority, err := ca.Load(dir, caSubject(e.cfg.CA))
	if errors.Is(err, ca.ErrNoCA) {
		return fmt.Errorf("ca issue: %w (run keylime ca init --dir %s first)", err, dir)
	}
	if err != nil {
		return fmt.Errorf("ca issue: %w", err)
	}
	cert, err := authority.Issue(name, kind, c.StringSlice("san"))
	if err != nil {
		return fmt.Errorf("ca issue: %w", err)
	}
	sans := append([]string(nil), cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		sans = append(sans, ip.String())
	}
	out := struct {
		Dir        string   `json:"dir"`
		Name       string   `json:"name"`
		Kind       string   `json:"kind"`
		Cert       string   `json:"cert"`
		PrivateKey string   `json:"private_key"`
		PublicKey  string   `json:"public_key"`
		Serial     string   `json:"serial"`
		NotAfter   string   `json:"not_after"`
		SANs       []string `json:"sans"`
	}{dir, name, kindName, certFile, keyFile, pubFile, cert.SerialNumber.Text(16), cert.NotAfter.UTC().Format(time.RFC3339), sans}
	return emit(c, out, func(w io.Writer) {
		fmt.Fprintf(w, "issued %s certificate %q (valid until %s, names %s):\n  %s\n  %s\n  %s\n",
			kindName, name, out.NotAfter, strings.Join(sans, ", "), certFile, keyFile, pubFile)
	})
}
