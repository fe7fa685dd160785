// Command keylime is keylime-go: one static binary whose subcommand picks the role (agent, registrar,
// verifier, tenant) of a Keylime-compatible TPM remote attestation system.
package main

import (
	"os"

	"github.com/keylime-go/keylime/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args, os.Stdout, os.Stderr))
}
