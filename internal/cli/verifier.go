package cli

import (
	"crypto/rsa"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"

	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/config"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/verifier"
)

func verifierCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "verifier",
		Usage: "run the verifier: attest every added agent continuously (HTTPS port 8881, mTLS)",
		Action: func(c *ucli.Context) error {
			e, err := setup(c)
			if err != nil {
				return err
			}
			vc := e.cfg.Verifier
			if vc.Port < 1 || vc.Port > 65535 {
				return usagef("verifier: port must be 1-65535")
			}
			if vc.MaxRetries < 0 {
				return usagef("verifier: max_retries must not be negative")
			}
			log := e.log.With().Str("role", "verifier").Logger()
			sans := append([]string{vc.IP}, vc.CertSubjectAlternativeNames...)
			srv, err := loadTLSDir(log, e.cfg.CA, vc.KeylimeDir, vc.TLSDir, "server", vc.ServerCert, vc.ServerKey, vc.TrustedClientCA, sans)
			if err != nil {
				return err
			}
			cl, err := loadTLSDir(log, e.cfg.CA, vc.KeylimeDir, vc.TLSDir, "client", vc.ClientCert, vc.ClientKey, vc.TrustedClientCA, nil)
			if err != nil {
				return err
			}
			revKey, err := loadRevocationKey(srv.Dir)
			if err != nil {
				log.Warn().Err(err).Msg("no revocation signing key; revocation messages will be unsigned and agents will refuse them")
			}
			rv := e.cfg.Revocations
			notifyAgents, webhook := false, false
			for _, n := range rv.EnabledRevocationNotifications {
				switch n {
				case "agent":
					notifyAgents = true
				case "webhook":
					webhook = true
				case "zeromq":
					log.Warn().Msg("revocations: zeromq is not supported; use agent or webhook")
				default:
					return usagef("revocations.enabled_revocation_notifications: unknown notifier %q (agent, webhook)", n)
				}
			}
			if webhook && rv.WebhookURL == "" {
				return usagef("revocations: webhook notifications need webhook_url")
			}
			if !webhook {
				rv.WebhookURL = ""
			}
			var mbAlways bool
			switch vc.MeasuredBootEvaluate {
			case "once", "":
			case "always":
				mbAlways = true
			default:
				return usagef("verifier.measured_boot_evaluate: %q is neither \"once\" nor \"always\"", vc.MeasuredBootEvaluate)
			}
			defaultGCPercent(verifierGCPercent)
			dbPath := config.Path(vc.KeylimeDir, vc.Database)
			log.Info().Str("ip", vc.IP).Int("port", vc.Port).Str("database", dbPath).Str("tls_dir", srv.Dir).
				Dur("quote_interval", vc.QuoteInterval.D()).Dur("retry_interval", vc.RetryInterval.D()).
				Int("max_retries", vc.MaxRetries).Bool("exponential_backoff", vc.ExponentialBackoff).Msg("verifier starting")
			v, err := verifier.New(verifier.Config{
				Addr:                    net.JoinHostPort(vc.IP, strconv.Itoa(vc.Port)),
				DBPath:                  dbPath,
				TLS:                     transport.ServerConfig(srv.Cert, srv.Pool, transport.OptionalClientCert),
				ClientCert:              &cl.Cert,
				ID:                      vc.UUID,
				IP:                      vc.IP,
				Port:                    vc.Port,
				QuoteInterval:           vc.QuoteInterval.D(),
				RetryInterval:           vc.RetryInterval.D(),
				MaxRetries:              vc.MaxRetries,
				ExponentialBackoff:      vc.ExponentialBackoff,
				RequestTimeout:          vc.RequestTimeout.D(),
				MaxBody:                 vc.MaxUploadSize,
				MBPolicyName:            vc.MeasuredBootPolicyName,
				MBEvaluateAlways:        mbAlways,
				RequirePolicySignatures: vc.RequireAllowListSignatures,
				IMAFailViolations:       vc.IMAFailViolations,
				AgentConnections:        vc.AgentConnections,
				RevocationKey:           revKey,
				NotifyAgents:            notifyAgents,
				WebhookURL:              rv.WebhookURL,
				WebhookClient:           transport.NewHTTPClient(transport.ClientConfig(&cl.Cert, cl.Pool), vc.RequestTimeout.D()),
				NotifyQueue:             rv.QueueSize,
				Log:                     log,
			})
			if err != nil {
				return err
			}
			defer v.Close()
			if err := v.Run(c.Context); err != nil {
				return err
			}
			log.Info().Msg("verifier stopped")
			return nil
		},
	}
}

// loadRevocationKey reads the verifier's revocation-signing key from the CA directory.
func loadRevocationKey(dir string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(filepath.Join(dir, ca.RevocationNotifier+"-private.pem"))
	if err != nil {
		return nil, err
	}
	k, err := ca.ParseKeyPEM(b)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("revocation key is %T, want RSA", k)
	}
	return rk, nil
}

// verifierGCPercent is the verifier's GC target unless GOGC is set. Its heap is mostly per-agent state
// that lives as long as the agent (a kept-alive connection, a record); at 5,000 agents GOGC=50 took
// the RSS per agent from 48 to 37 KB for no measurable CPU (230 against 221-246 µs per attestation) and
// no late polls; 25 saved 3 KB more for 16% more CPU.
const verifierGCPercent = 50

// defaultGCPercent sets the garbage collector's target to percent unless the operator set GOGC.
func defaultGCPercent(percent int) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(percent)
	}
}
