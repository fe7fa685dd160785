package verifier

import (
	"encoding/json"
	"errors"
	"github.com/keylime-go/keylime/policy/mb"
)

// defaultCompilers parse policy texts once when they are stored or loaded.
func defaultCompilers() map[policyKind]func([]byte) (any, error) {
	return map[policyKind]func([]byte) (any, error){
		kindRuntime: compileJSON,
		kindMB:      func(raw []byte) (any, error) { return mb.ParseRefState(raw) },
	}
}

// compileJSON accepts any JSON object (until the runtime policy engine is wired in).
func compileJSON(raw []byte) (any, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}
