package cli

import (
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/agent"
	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/config"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/tpm/device"
)

func agentCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "agent",
		Usage: "run the agent on the machine to attest: register its TPM with the registrar and answer the verifier",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "tpm", Usage: "TPM to use: /dev/tpmrm0 or swtpm:<unix socket> (agent.tpm)"},
			&ucli.StringFlag{Name: "uuid", Usage: "agent id, \"generate\" or \"hash_ek\" (agent.uuid)"},
			&ucli.StringFlag{Name: "registrar", Usage: "registrar address host:port (agent.registrar_ip, agent.registrar_port)"},
			&ucli.StringFlag{Name: "keylime-dir", Usage: "work directory (agent.keylime_dir)"},
		},
		Action: func(c *ucli.Context) error {
			var extra []string
			for flag, key := range map[string]string{"tpm": "agent.tpm", "uuid": "agent.uuid", "keylime-dir": "agent.keylime_dir"} {
				if c.IsSet(flag) {
					extra = append(extra, key+"="+c.String(flag))
				}
			}
			if c.IsSet("registrar") {
				host, port, err := net.SplitHostPort(c.String("registrar"))
				if err != nil {
					return usagef("--registrar: %v", err)
				}
				extra = append(extra, "agent.registrar_ip="+host, "agent.registrar_port="+port)
			}
			e, err := setup(c, extra...)
			if err != nil {
				return err
			}
			return runAgent(c, e)
		},
	}
}

func keyAlg(setting, what string) (device.KeyAlg, error) {
	switch setting {
	case "rsa", "rsassa":
		return device.RSA, nil
	case "ecc", "ecdsa":
		return device.ECC, nil
	}
	return 0, usagef("agent.%s: unsupported algorithm %q (rsa or ecc)", what, setting)
}

func runAgent(c *ucli.Context, e *env) error {
	ac := e.cfg.Agent
	log := e.log.With().Str("role", "agent").Logger()
	ekAlg, err := keyAlg(ac.TPMEncryptionAlg, "tpm_encryption_alg")
	if err != nil {
		return err
	}
	akAlg, err := keyAlg(ac.TPMSigningAlg, "tpm_signing_alg")
	if err != nil {
		return err
	}
	if ac.ContactPort < 1 || ac.ContactPort > 65535 || ac.RegistrarPort < 1 || ac.RegistrarPort > 65535 {
		return usagef("agent: contact_port and registrar_port must be 1-65535")
	}
	log.Info().Str("tpm", ac.TPM).Str("uuid", ac.UUID).Str("keylime_dir", ac.KeylimeDir).
		Str("registrar", net.JoinHostPort(ac.RegistrarIP, strconv.Itoa(ac.RegistrarPort))).
		Str("contact", net.JoinHostPort(ac.ContactIP, strconv.Itoa(ac.ContactPort))).
		Str("ek_alg", ac.TPMEncryptionAlg).Str("ak_alg", ac.TPMSigningAlg).Msg("agent starting")
	var clientCAs *x509.CertPool
	if ac.EnableAgentMTLS {
		caFile := config.Path(ac.KeylimeDir, ac.TrustedClientCA)
		if clientCAs, err = transport.LoadPool(caFile); err != nil {
			return fmt.Errorf("agent.trusted_client_ca: %w (the agent accepts only clients with certificates from this CA; copy the Keylime CA's cacert.crt there)", err)
		}
	}
	t, err := device.Open(ac.TPM)
	if err != nil {
		return fmt.Errorf("open TPM: %w", err)
	}
	defer t.Close()
	reg := client.NewRegistrar(transport.NewHTTPClient(nil, 30*time.Second),
		"http://"+net.JoinHostPort(ac.RegistrarIP, strconv.Itoa(ac.RegistrarPort)), api.CurrentVersion)
	a, err := agent.New(agent.Config{
		TPM:            t,
		UUID:           ac.UUID,
		DataDir:        config.Path(ac.KeylimeDir, ac.AgentDataPath),
		PayloadKeyPath: config.Path(ac.KeylimeDir, ac.PayloadKey),
		ServerKeyPath:  config.Path(ac.KeylimeDir, ac.ServerKey),
		ServerCertPath: config.Path(ac.KeylimeDir, ac.ServerCert),
		EnableMTLS:     ac.EnableAgentMTLS,
		EKAlg:          ekAlg,
		AKAlg:          akAlg,
		ListenAddr:     net.JoinHostPort(ac.IP, strconv.Itoa(ac.Port)),
		ClientCAs:      clientCAs,
		HashAlg:        ac.TPMHashAlg,
		IMALogPath:     ac.IMAMLPath,
		MBLogPath:      ac.MeasuredBootMLPath,
		Payload:        payloadConfig(ac),
		Revocation: agent.RevocationConfig{
			CertPath:            revocationCert(ac),
			Actions:             ac.RevocationActions,
			ActionsDir:          ac.RevocationActionsDir,
			AllowPayloadActions: ac.AllowPayloadRevocationActions,
		},
		ContactIP:     ac.ContactIP,
		ContactPort:   ac.ContactPort,
		Registrar:     reg,
		RetryInterval: ac.RegistrationRetryInterval.D(),
		RetryMax:      ac.RegistrationRetryMax.D(),
		OnRegistered:  func() { releaseStartupMemory(log) },
		Log:           log,
	})
	if err != nil {
		return err
	}
	if err := a.Run(c.Context); err != nil && c.Context.Err() == nil {
		return err
	}
	log.Info().Msg("agent stopped")
	return nil
}

// agentGCPercent is the agent's GC target once it runs (GOGC=50): its live heap is under 1 MiB, so the
// runtime's floor of 4 MiB × GOGC/100 sets the heap size; at the default 100, 200 quotes grew RssAnon to
// 7.3 MB against 4.9 MB at 50, for a GC cycle of well under a millisecond every ~50 quotes.
const agentGCPercent = 50

// releaseStartupMemory runs once the agent has registered and activated. Start-up (every role's package
// initialisation, configuration, TPM keys, registration) is over: from now on keep the heap small (unless
// the operator set GOGC), and hand the start-up garbage and the pages of start-up-only code back to the
// OS (agent.ReleaseStartupMemory).
func releaseStartupMemory(log zerolog.Logger) {
	defaultGCPercent(agentGCPercent)
	advised, err := agent.ReleaseStartupMemory()
	if err != nil {
		log.Debug().Err(err).Msg("start-up memory not released")
		return
	}
	log.Debug().Int("advised_kb", advised/1024).Msg("start-up memory handed back to the OS")
}

// payloadConfig maps the [agent] payload keys; without mTLS, payloads are refused unless
// enable_insecure_payload.
func payloadConfig(ac config.Agent) agent.PayloadConfig {
	if !ac.EnableAgentMTLS && !ac.EnableInsecurePayload {
		return agent.PayloadConfig{}
	}
	return agent.PayloadConfig{
		SecureDir:      filepath.Join(ac.KeylimeDir, "secure"),
		SecureSize:     ac.SecureSize,
		MountTmpfs:     ac.MountSecureTmpfs,
		EncKeyName:     ac.EncKeyname,
		DecPayloadFile: ac.DecPayloadFile,
		ExtractZip:     ac.ExtractPayloadZip,
		Script:         ac.PayloadScript,
		ScriptTimeout:  ac.PayloadScriptTimeout.D(),
	}
}

func revocationCert(ac config.Agent) string {
	if ac.RevocationCert == "default" || ac.RevocationCert == "" {
		return ""
	}
	return config.Path(ac.KeylimeDir, ac.RevocationCert)
}
