package cli

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/config"
	"github.com/keylime-go/keylime/internal/transport"
)

// tlsMaterial is a role's certificate, key and trusted CA pool, loaded from its tls_dir.
type tlsMaterial struct {
	Dir string
	*transport.Material
}

// loadTLSDir resolves a role's tls_dir ("generate": create <keylime_dir>/cv_ca when missing; "default":
// <keylime_dir>/cv_ca; anything else: a directory) and loads the named pair ("server" or "client") and the
// trusted CA. certFile, keyFile and caFile may be "default" or a path relative to the directory.
func loadTLSDir(log zerolog.Logger, cfg config.CA, keylimeDir, tlsDir, pair, certFile, keyFile, caFile string, sans []string) (*tlsMaterial, error) {
	dir := tlsDir
	switch tlsDir {
	case "generate", "default", "":
		dir = filepath.Join(keylimeDir, "cv_ca")
	}
	dir = config.Path(keylimeDir, dir)
	if tlsDir == "generate" {
		created, err := ca.Ensure(dir, caSubject(cfg), sans)
		if err != nil {
			return nil, fmt.Errorf("tls_dir %s: %w", dir, err)
		}
		if created {
			log.Info().Str("dir", dir).Msg("created Keylime CA and certificates (tls_dir = generate)")
		}
	}
	pick := func(v, def string) string {
		if v == "" || v == "default" {
			return filepath.Join(dir, def)
		}
		return config.Path(dir, v)
	}
	m, err := transport.LoadMaterialFiles(pick(certFile, pair+"-cert.crt"), pick(keyFile, pair+"-private.pem"), pick(caFile, ca.CACertFile))
	if err != nil {
		return nil, err
	}
	return &tlsMaterial{Dir: dir, Material: m}, nil
}

func caSubject(c config.CA) ca.Subject {
	return ca.Subject{
		Country: c.CertCountry, State: c.CertState, Locality: c.CertLocality,
		Organization: c.CertOrganization, OrgUnit: c.CertOrgUnit, CAName: c.CertCAName,
		CALifetime: time.Duration(c.CertCALifetime) * 24 * time.Hour,
		Lifetime:   time.Duration(c.CertLifetime) * 24 * time.Hour,
	}
}
