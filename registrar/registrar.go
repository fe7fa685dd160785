// Package registrar is Keylime's registrar: it enrols agents (UUID, EK public key and certificate, AK, mTLS
// certificate, contact address), proves that the AK lives in the same TPM as the EK with a software
// MakeCredential challenge that only that TPM can answer, and serves the records to the tenant and
// verifier. Registration and activation are public on the plain HTTP port; listing, reading and deleting
// agents need an mTLS client certificate from the Keylime CA on the TLS port.
package registrar

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/httpx"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/store"
)

// Config is everything a registrar needs; the caller (internal/cli) builds it from keylime.toml.
type Config struct {
	// Addr and TLSAddr are the listen addresses of the plain (registration) and TLS (admin) ports.
	Addr, TLSAddr string
	// DBPath is the registrar.db file.
	DBPath string
	// TLS is the server configuration of the TLS port; client certificates must be optional at the TLS
	// level (admin routes check them) — see transport.OptionalClientCert.
	TLS *tls.Config
	// MaxBody bounds request bodies (default 1 MiB).
	MaxBody int64
	Log     zerolog.Logger
	// Rand is the randomness for challenges (crypto/rand when nil).
	Rand io.Reader
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Registrar is a running registrar's state.
type Registrar struct {
	cfg Config
	db  *store.DB
	log zerolog.Logger
}

// New opens the registrar database.
func New(cfg Config) (*Registrar, error) {
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = httpx.DefaultMaxBody
	}
	db, err := store.Open(cfg.DBPath, store.Options{Owner: "registrar", Migrations: migrations})
	if err != nil {
		return nil, err
	}
	return &Registrar{cfg: cfg, db: db, log: cfg.Log}, nil
}

// Close closes the database.
func (r *Registrar) Close() error { return r.db.Close() }

// Handler returns the HTTP handler of both ports (admin routes refuse requests without a verified client
// certificate, so the plain port only ever serves the public routes).
func (r *Registrar) Handler() http.Handler {
	return httpx.NewRouter(r.log, api.SupportedVersions, r.routes())
}

// Run listens on both ports and serves until ctx ends.
func (r *Registrar) Run(ctx context.Context) error {
	plain, err := net.Listen("tcp", r.cfg.Addr)
	if err != nil {
		return fmt.Errorf("registrar listen %s: %w", r.cfg.Addr, err)
	}
	var tlsLn net.Listener
	if r.cfg.TLS != nil {
		if tlsLn, err = net.Listen("tcp", r.cfg.TLSAddr); err != nil {
			plain.Close()
			return fmt.Errorf("registrar listen %s: %w", r.cfg.TLSAddr, err)
		}
	}
	return r.Serve(ctx, plain, tlsLn)
}

// Serve serves on already-open listeners (tlsLn may be nil) until ctx ends.
func (r *Registrar) Serve(ctx context.Context, plain, tlsLn net.Listener) error {
	h := r.Handler()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		r.log.Info().Str("addr", plain.Addr().String()).Msg("registrar serving registration (HTTP)")
		return transport.Serve(ctx, transport.NewServer(h, nil, r.log), plain)
	})
	if tlsLn != nil {
		g.Go(func() error {
			r.log.Info().Str("addr", tlsLn.Addr().String()).Msg("registrar serving admin API (HTTPS, mTLS)")
			return transport.Serve(ctx, transport.NewServer(h, r.cfg.TLS, r.log), tlsLn)
		})
	}
	err := g.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
