package tenant

import (
	"fmt"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/tpm"
)

// EKCheck says how an agent's EK certificate was judged.
type EKCheck string

// Outcomes of the EK certificate check.
const (
	// EKVerified: the certificate certifies the EK and chains to the cert store.
	EKVerified EKCheck = "verified"
	// EKSkipped: the operator turned the check off (--no-ek-check).
	EKSkipped EKCheck = "skipped"
	// EKAbsent: the agent has no EK certificate and require_ek_cert is off.
	EKAbsent EKCheck = "absent"
)

// ekResult is the outcome of checkEK with what it learnt.
type ekResult struct {
	check  EKCheck
	issuer string
}

// checkEK judges the registrar's EK certificate of an agent:
//   - skip (--no-ek-check) accepts without looking, with a warning;
//   - no certificate is refused when RequireEKCert, else accepted with a warning;
//   - a certificate must parse, certify exactly ek_tpm, and chain (full chain building, every store
//     certificate a trust anchor) to the certificates in CertStore. Unlike Keylime, a certificate that is
//     present is checked even when require_ek_cert is off: only --no-ek-check skips it.
func (t *Tenant) checkEK(id string, rec *api.RegistrarAgent, skip bool) (ekResult, error) {
	log := t.cfg.Log
	if skip {
		log.Warn().Str("agent", id).Msg("DANGER: EK certificate check disabled (--no-ek-check): the TPM's identity is not established")
		return ekResult{check: EKSkipped}, nil
	}
	if rec.EKCert == nil || *rec.EKCert == "" {
		if t.cfg.RequireEKCert {
			return ekResult{}, fmt.Errorf("%w: agent %s registered without an EK certificate and require_ek_cert is on (--no-ek-check skips the check)", ErrEKCert, id)
		}
		log.Warn().Str("agent", id).Msg("DANGER: agent has no EK certificate and require_ek_cert is off: the TPM's identity is not established")
		return ekResult{check: EKAbsent}, nil
	}
	cert, err := tpm.ParseEKCert([]byte(*rec.EKCert))
	if err != nil {
		return ekResult{}, fmt.Errorf("%w: agent %s: registrar's ekcert: %w", ErrEKCert, id, err)
	}
	ek, err := tpm.ParsePublicBase64(rec.EKTPM)
	if err != nil {
		return ekResult{}, fmt.Errorf("%w: agent %s: registrar's ek_tpm: %w", ErrEKCert, id, err)
	}
	if err := tpm.EKCertMatches(cert, ek); err != nil {
		return ekResult{}, fmt.Errorf("%w: agent %s: %w", ErrEKCert, id, err)
	}
	if t.cfg.CertStore == "" {
		return ekResult{}, fmt.Errorf("%w: agent %s: no tpm_cert_store configured", ErrEKCert, id)
	}
	store, err := tpm.LoadCertPool(t.cfg.CertStore)
	if err != nil {
		if store == nil {
			return ekResult{}, fmt.Errorf("%w: agent %s: %w", ErrEKCert, id, err)
		}
		log.Warn().Err(err).Str("cert_store", t.cfg.CertStore).Msg("some files of the cert store were skipped")
	}
	issuer := cert.Issuer.String()
	if err := tpm.VerifyEKCert(cert, store, store); err != nil {
		return ekResult{}, fmt.Errorf("%w: agent %s: issuer %q does not chain to cert store %s (%d certificates): %w",
			ErrEKCert, id, issuer, t.cfg.CertStore, len(store), err)
	}
	log.Debug().Str("agent", id).Str("issuer", issuer).Msg("EK certificate verified")
	return ekResult{check: EKVerified, issuer: issuer}, nil
}
