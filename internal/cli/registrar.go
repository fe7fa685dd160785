package cli

import (
	"net"
	"strconv"

	ucli "github.com/urfave/cli/v2"

	"github.com/keylime-go/keylime/internal/config"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/registrar"
)

func registrarCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "registrar",
		Usage: "run the registrar: enrol agents (HTTP port 8890) and serve them to the tenant and verifier (HTTPS port 8891)",
		Action: func(c *ucli.Context) error {
			e, err := setup(c)
			if err != nil {
				return err
			}
			rc := e.cfg.Registrar
			if rc.Port < 1 || rc.Port > 65535 || rc.TLSPort < 1 || rc.TLSPort > 65535 {
				return usagef("registrar: port and tls_port must be 1-65535")
			}
			log := e.log.With().Str("role", "registrar").Logger()
			sans := append([]string{rc.IP}, rc.CertSubjectAlternativeNames...)
			mat, err := loadTLSDir(log, e.cfg.CA, rc.KeylimeDir, rc.TLSDir, "server", rc.ServerCert, rc.ServerKey, rc.TrustedClientCA, sans)
			if err != nil {
				return err
			}
			dbPath := config.Path(rc.KeylimeDir, rc.Database)
			log.Info().Str("ip", rc.IP).Int("port", rc.Port).Int("tls_port", rc.TLSPort).Str("database", dbPath).
				Str("tls_dir", mat.Dir).Msg("registrar starting")
			r, err := registrar.New(registrar.Config{
				Addr:    net.JoinHostPort(rc.IP, strconv.Itoa(rc.Port)),
				TLSAddr: net.JoinHostPort(rc.IP, strconv.Itoa(rc.TLSPort)),
				DBPath:  dbPath,
				TLS:     transport.ServerConfig(mat.Cert, mat.Pool, transport.OptionalClientCert),
				MaxBody: rc.MaxUploadSize,
				Log:     log,
			})
			if err != nil {
				return err
			}
			defer r.Close()
			if err := r.Run(c.Context); err != nil {
				return err
			}
			log.Info().Msg("registrar stopped")
			return nil
		},
	}
}
