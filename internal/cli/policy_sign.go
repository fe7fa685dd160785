package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/policy/ima"
)

func signFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "key", Aliases: []string{"keyfile", "k"}, Usage: "EC private key (PEM, SEC1 or PKCS#8) to sign with"},
		&ucli.StringFlag{Name: "keyfile-out", Aliases: []string{"keypath"}, Usage: "without --key: generate a P-256 key and write it here (PEM, mode 0600; never overwritten)"},
		&ucli.StringFlag{Name: "pubkey-out", Usage: "with --keyfile-out: also write the public key here (PEM), for verify and the tenant"},
		&ucli.StringFlag{Name: "runtime-policy", Aliases: []string{"r"}, Usage: "the runtime policy to sign (or give it as the argument)"},
		&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output file for the DSSE envelope (default stdout)"},
		&ucli.StringFlag{Name: "backend", Aliases: []string{"b"}, Value: "ecdsa", Usage: "DSSE backend: only ecdsa (Keylime's default) is supported"},
	}
}

func signCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "sign",
		Usage:     "sign a runtime policy: a DSSE envelope with an ECDSA signature, as keylime-policy sign runtime writes",
		ArgsUsage: "POLICY",
		Description: `The policy is checked against Keylime's schema, then its bytes are signed as they are
(payload type application/vnd.keylime+json, ECDSA with SHA-256 over DSSE's PAE, keyid = SHA-256 of
the PEM public key). "keylime policy sign runtime …" is accepted too.`,
		Flags:        signFlags(),
		OnUsageError: onUsageError,
		Action:       signPolicy,
		Subcommands: []*ucli.Command{{
			Name: "runtime", Usage: "same as sign (keylime-policy's spelling)", ArgsUsage: "POLICY",
			Flags: signFlags(), OnUsageError: onUsageError, Action: signPolicy,
		}},
	}
}

func signPolicy(c *ucli.Context) error {
	if err := noExtraArgs(c, 1); err != nil {
		return err
	}
	file := c.String("runtime-policy")
	switch {
	case file != "" && c.Args().Present():
		return usagef("policy sign: give the policy either as --runtime-policy or as the argument")
	case file == "":
		file = c.Args().First()
	}
	if file == "" {
		return usagef("policy sign: which policy? (keylime policy sign --key KEY POLICY)")
	}
	if b := c.String("backend"); b != "ecdsa" {
		return usagef("policy sign: --backend %q: only ecdsa is supported", b)
	}
	keyFile, keyOut, pubOut := c.String("key"), c.String("keyfile-out"), c.String("pubkey-out")
	switch {
	case keyFile != "" && keyOut != "":
		return usagef("policy sign: --key and --keyfile-out exclude each other")
	case keyFile == "" && keyOut == "":
		return usagef("policy sign: give --key KEY, or --keyfile-out FILE to generate one")
	case pubOut != "" && keyOut == "":
		return usagef("policy sign: --pubkey-out goes with --keyfile-out")
	}
	data, err := readInput(c, "policy", file)
	if err != nil {
		return err
	}
	if ima.IsEnvelope(data) {
		return usagef("policy sign: %s is already a DSSE envelope", file)
	}
	if _, err := ima.DecodeRuntimePolicy(data); err != nil {
		return usagef("policy sign: %s: %w", file, err)
	}

	var key *ecdsa.PrivateKey
	if keyFile != "" {
		raw, err := readInput(c, "--key", keyFile)
		if err != nil {
			return err
		}
		if key, err = parseECPrivateKey(raw); err != nil {
			return usagef("--key %s: %w", keyFile, err)
		}
	} else {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return fmt.Errorf("policy sign: generate key: %w", err)
		}
		if err := writeNewKey(keyOut, pubOut, key); err != nil {
			return err
		}
	}
	env, err := ima.SignEnvelope(data, key)
	if err != nil {
		return fmt.Errorf("policy sign: %w", err)
	}
	if err := writeOutput(c, c.String("output"), append(env, '\n')); err != nil {
		return err
	}
	id, _ := ima.DSSEKeyID(&key.PublicKey)
	notef(c, "signed %s with key id %s", file, id)
	return nil
}

// parseECPrivateKey reads a PEM EC private key (SEC1 "EC PRIVATE KEY" or PKCS#8 "PRIVATE KEY").
func parseECPrivateKey(raw []byte) (*ecdsa.PrivateKey, error) {
	for rest := raw; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		switch b.Type {
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(b.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			ec, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("a %T: only elliptic-curve keys can sign runtime policies", k)
			}
			return ec, nil
		}
	}
	return nil, errors.New("no PEM EC private key (EC PRIVATE KEY or PRIVATE KEY)")
}

// writeNewKey writes a generated key (0600) and optionally its public key, refusing to overwrite.
func writeNewKey(keyOut, pubOut string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeNew(keyOut, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return usagef("--keyfile-out: %w", err)
	}
	if pubOut == "" {
		return nil
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := writeNew(pubOut, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return usagef("--pubkey-out: %w", err)
	}
	return nil
}

// writeNew creates a file that must not exist yet.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func verifyCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "verify",
		Usage:     "verify a DSSE-signed runtime policy with an EC public key or certificate",
		ArgsUsage: "ENVELOPE",
		Description: `Prints "valid" and the payload's SHA-256 when a signature of the envelope verifies with the key
(as Keylime's verifier checks it: payload type application/vnd.keylime+json, ECDSA over DSSE's PAE).
Exit 0 valid, 1 no signature verifies, 2 unusable input (not an envelope, not a key).`,
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "key", Aliases: []string{"k", "runtime-policy-key", "runtime-policy-sig-key"}, Usage: "EC public key or X.509 certificate (PEM); an EC private key is accepted too"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the verified payload (the policy) to this file"},
		},
		OnUsageError: onUsageError,
		Action:       verifyPolicy,
	}
}

func verifyPolicy(c *ucli.Context) error {
	if err := noExtraArgs(c, 1); err != nil {
		return err
	}
	file := c.Args().First()
	if file == "" {
		return usagef("policy verify: which envelope? (keylime policy verify --key KEY FILE)")
	}
	if c.String("key") == "" {
		return usagef("policy verify: --key is required")
	}
	keyRaw, err := readInput(c, "--key", c.String("key"))
	if err != nil {
		return err
	}
	key, err := dsseKey(keyRaw)
	if err != nil {
		return usagef("--key %s: %w", c.String("key"), err)
	}
	data, err := readInput(c, "envelope", file)
	if err != nil {
		return err
	}
	payload, err := ima.VerifyEnvelope(data, key)
	switch {
	case errors.Is(err, ima.ErrEnvelopeSignature):
		return fmt.Errorf("policy verify: %s: %w", file, err)
	case err != nil:
		return usagef("policy verify: %s: %w", file, err)
	}
	if _, err := ima.DecodeRuntimePolicy(payload); err != nil {
		notef(c, "the signed payload is not a valid runtime policy: %v", err)
	}
	if out := c.String("output"); out != "" {
		if err := writeOutput(c, out, payload); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(payload)
	fmt.Fprintf(c.App.Writer, "valid: payload sha256:%s (%d bytes)\n", hex.EncodeToString(sum[:]), len(payload))
	return nil
}

// dsseKey returns a DSSE verification key in the form ima.VerifyEnvelope takes (PEM public key or
// certificate); an EC private key is turned into its public key.
func dsseKey(raw []byte) ([]byte, error) {
	_, err := ima.ParseDSSEKey(raw)
	if err == nil {
		return raw, nil
	}
	priv, perr := parseECPrivateKey(raw)
	if perr != nil {
		return nil, err
	}
	der, merr := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if merr != nil {
		return nil, merr
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
