package verifier

import (
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/policy/mb"
)

// defaultCompilers parse policy texts once when they are stored or loaded.
func defaultCompilers() map[policyKind]func([]byte) (any, error) {
	return map[policyKind]func([]byte) (any, error){
		kindRuntime: compileRuntime,
		kindMB:      func(raw []byte) (any, error) { return mb.ParseRefState(raw) },
	}
}

// compileRuntime reads a runtime policy (plain JSON or a DSSE envelope, unwrapped: a signature was
// checked when the policy was uploaded with a key) and compiles it for Attest.
func compileRuntime(raw []byte) (any, error) {
	p, err := ima.OpenRuntimePolicy(raw, nil, false)
	if err != nil {
		return nil, err
	}
	return ima.Compile(p)
}
