package policy

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Failure is one reason an attestation failed, in Keylime's terms: an event id such as
// "pcr_validation.invalid_pcr_15" and a context a person can act on.
type Failure struct {
	// EventID is "<component>.<id>", e.g. "pcr_validation.invalid_pcr_15".
	EventID string `json:"event_id"`
	// Context carries the details (PCR, expected and got values, log entry, …).
	Context map[string]any `json:"context,omitempty"`
	// Recoverable failures let attestation continue with the next quote; irrecoverable ones stop it.
	Recoverable bool `json:"recoverable,omitempty"`
}

// Message returns a one-line human reading of the failure.
func (f Failure) Message() string {
	if m, ok := f.Context["message"].(string); ok && len(f.Context) == 1 {
		return f.EventID + ": " + m
	}
	var parts []string
	if m, ok := f.Context["message"].(string); ok {
		parts = append(parts, m)
	}
	for _, k := range sortedKeys(f.Context) {
		if k == "message" {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%v", k, f.Context[k]))
	}
	if len(parts) == 0 {
		return f.EventID
	}
	return f.EventID + ": " + strings.Join(parts, ", ")
}

// ContextJSON is the context as the JSON string Keylime stores and sends.
func (f Failure) ContextJSON() string {
	if f.Context == nil {
		return "{}"
	}
	b, err := json.Marshal(f.Context)
	if err != nil {
		return fmt.Sprintf(`{"message": %q}`, fmt.Sprint(f.Context))
	}
	return string(b)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
