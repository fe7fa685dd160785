package cli

import (
	"net"
	"strconv"

	ucli "github.com/urfave/cli/v2"

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
			dbPath := config.Path(vc.KeylimeDir, vc.Database)
			log.Info().Str("ip", vc.IP).Int("port", vc.Port).Str("database", dbPath).Str("tls_dir", srv.Dir).
				Dur("quote_interval", vc.QuoteInterval.D()).Dur("retry_interval", vc.RetryInterval.D()).
				Int("max_retries", vc.MaxRetries).Bool("exponential_backoff", vc.ExponentialBackoff).Msg("verifier starting")
			v, err := verifier.New(verifier.Config{
				Addr:               net.JoinHostPort(vc.IP, strconv.Itoa(vc.Port)),
				DBPath:             dbPath,
				TLS:                transport.ServerConfig(srv.Cert, srv.Pool, transport.OptionalClientCert),
				ClientCert:         &cl.Cert,
				ID:                 vc.UUID,
				IP:                 vc.IP,
				Port:               vc.Port,
				QuoteInterval:      vc.QuoteInterval.D(),
				RetryInterval:      vc.RetryInterval.D(),
				MaxRetries:         vc.MaxRetries,
				ExponentialBackoff: vc.ExponentialBackoff,
				RequestTimeout:     vc.RequestTimeout.D(),
				MaxBody:            vc.MaxUploadSize,
				Log:                log,
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
