package device

import (
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Test-only access to internals for the external tests (package device_test), which cannot live
// in package device because internal/testbed imports it.

// Transport returns the TPM's transport, for commands the package has no method for.
func (t *TPM) Transport() transport.TPM { return t.tpm }

// AuthKind names how the EK's USER role is authorised: "policyA", "policyB" or "password".
func (e *EK) AuthKind() string {
	return map[ekAuthKind]string{authPolicyA: "policyA", authPolicyB: "policyB", authPassword: "password"}[e.auth]
}

// TemplatePublic returns the public template of the TCG EK template with that name ("L-1" …).
func TemplatePublic(name string) tpm2.TPMTPublic {
	for _, t := range ekTemplates {
		if t.name == name {
			return t.public
		}
	}
	panic("no EK template " + name)
}

// SameTemplate reports whether pub was made from tmpl.
func SameTemplate(pub, tmpl *tpm2.TPMTPublic) bool { return sameTemplate(pub, tmpl) }
