package ima

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
)

// ErrBadPolicy wraps every runtime policy decoding or validation error (Keylime answers 400
// "Runtime policy is malformatted").
var ErrBadPolicy = errors.New("invalid runtime policy")

// RuntimePolicyVersion is the runtime policy format version Keylime writes (RUNTIME_POLICY_CURRENT_VERSION).
const RuntimePolicyVersion = 1

// Generators recorded in meta.generator (Keylime's RUNTIME_POLICY_GENERATOR).
const (
	GeneratorUnknown             = 0
	GeneratorEmptyAllowList      = 1
	GeneratorCompatibleAllowList = 2 // converted from an older policy
	GeneratorLegacyAllowList     = 3 // what the policy tools write
)

// RuntimePolicy is Keylime's runtime (IMA) policy, JSON format version 1. Digest lists hold
// lower-case hex; their algorithm is implied by their length.
type RuntimePolicy struct {
	Meta    PolicyMeta `json:"meta"`
	Release int64      `json:"release"`
	// Digests maps a path (spaces written as '_', as IMA logs them) to its accepted digests;
	// "boot_aggregate" is the boot aggregate entry.
	Digests map[string][]string `json:"digests"`
	// Excludes are Python regular expressions; a path they match (re.match) is not judged.
	Excludes []string `json:"excludes"`
	// Keyrings maps a keyring name (".ima", …) to the accepted digests of keys loaded onto it.
	Keyrings map[string][]string `json:"keyrings"`
	IMA      PolicyIMA           `json:"ima"`
	// IMABuf maps an ima-buf name ("kexec-cmdline", "selinux-state", …) to accepted buffer digests.
	IMABuf map[string][]string `json:"ima-buf"`
	// VerificationKeys is empty or a keyring JSON document (see Keyring) as a string.
	VerificationKeys string `json:"verification-keys"`
}

// PolicyMeta is the policy's "meta" object.
type PolicyMeta struct {
	Version   int64  `json:"version"`
	Generator int64  `json:"generator"`
	Timestamp string `json:"timestamp,omitempty"`
}

// PolicyIMA is the policy's "ima" object.
type PolicyIMA struct {
	// IgnoredKeyrings are keyrings whose keys are not judged (and not learned); "*" is all.
	IgnoredKeyrings []string `json:"ignored_keyrings"`
	// LogHashAlg is the algorithm of the log's template-hash column (sha1, sha256, sha384, sha512).
	LogHashAlg string `json:"log_hash_alg"`
	// DMPolicy must be null (Keylime's schema allows nothing else).
	DMPolicy json.RawMessage `json:"dm_policy"`
}

// EmptyRuntimePolicy returns Keylime's EMPTY_RUNTIME_POLICY: nothing is accepted.
func EmptyRuntimePolicy() *RuntimePolicy {
	return &RuntimePolicy{
		Meta:     PolicyMeta{Version: RuntimePolicyVersion, Generator: GeneratorEmptyAllowList},
		Digests:  map[string][]string{},
		Excludes: []string{},
		Keyrings: map[string][]string{},
		IMA:      PolicyIMA{IgnoredKeyrings: []string{}, LogHashAlg: "sha1", DMPolicy: json.RawMessage("null")},
		IMABuf:   map[string][]string{},
	}
}

// MarshalJSON writes the policy with Keylime's key order and empty containers as {} / [].
func (p *RuntimePolicy) MarshalJSON() ([]byte, error) {
	type meta struct {
		Version   int64  `json:"version"`
		Generator int64  `json:"generator"`
		Timestamp string `json:"timestamp,omitempty"`
	}
	type imaCfg struct {
		IgnoredKeyrings []string        `json:"ignored_keyrings"`
		LogHashAlg      string          `json:"log_hash_alg"`
		DMPolicy        json.RawMessage `json:"dm_policy"`
	}
	nz := func(m map[string][]string) map[string][]string {
		if m == nil {
			return map[string][]string{}
		}
		return m
	}
	ns := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	dm := p.IMA.DMPolicy
	if len(dm) == 0 {
		dm = json.RawMessage("null")
	}
	return json.Marshal(struct {
		Meta             meta                `json:"meta"`
		Release          int64               `json:"release"`
		Digests          map[string][]string `json:"digests"`
		Excludes         []string            `json:"excludes"`
		Keyrings         map[string][]string `json:"keyrings"`
		IMA              imaCfg              `json:"ima"`
		IMABuf           map[string][]string `json:"ima-buf"`
		VerificationKeys string              `json:"verification-keys"`
	}{
		Meta:     meta(p.Meta),
		Release:  p.Release,
		Digests:  nz(p.Digests),
		Excludes: ns(p.Excludes),
		Keyrings: nz(p.Keyrings),
		IMA:      imaCfg{IgnoredKeyrings: ns(p.IMA.IgnoredKeyrings), LogHashAlg: p.IMA.LogHashAlg, DMPolicy: dm},
		IMABuf:   nz(p.IMABuf), VerificationKeys: p.VerificationKeys,
	})
}

// DecodeRuntimePolicy decodes a runtime policy (plain JSON, not a DSSE envelope: see
// OpenRuntimePolicy) and validates it like Keylime's RUNTIME_POLICY_SCHEMA, verification-keys
// included. Unknown top-level keys are accepted and dropped, as Keylime's schema allows them.
func DecodeRuntimePolicy(data []byte) (*RuntimePolicy, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", ErrBadPolicy, err)
	}
	if _, ok := raw["payload"]; ok && len(raw["digests"]) == 0 {
		return nil, fmt.Errorf("%w: this is a DSSE envelope; open it with OpenRuntimePolicy", ErrBadPolicy)
	}
	p := &RuntimePolicy{}
	for _, key := range []string{"meta", "release", "digests", "excludes", "keyrings", "ima", "ima-buf", "verification-keys"} {
		v, ok := raw[key]
		if !ok {
			return nil, fmt.Errorf("%w: %q is a required property", ErrBadPolicy, key)
		}
		var err error
		switch key {
		case "meta":
			err = decodeMeta(v, &p.Meta)
		case "release":
			p.Release, err = decodeInt(v, 0, math.MaxInt64)
		case "digests":
			p.Digests, err = decodeDigests(v)
		case "keyrings":
			p.Keyrings, err = decodeDigests(v)
		case "ima-buf":
			p.IMABuf, err = decodeDigests(v)
		case "excludes":
			p.Excludes, err = decodeStrings(v)
		case "ima":
			err = decodeIMA(v, &p.IMA)
		case "verification-keys":
			if err = json.Unmarshal(v, &p.VerificationKeys); err != nil || isNull(v) {
				err = fmt.Errorf("%s is not of type 'string'", v)
			} else if p.VerificationKeys != "" {
				// Keylime's schema check parses it once: a doubly encoded string is refused here.
				var s string
				if json.Unmarshal([]byte(p.VerificationKeys), &s) == nil {
					err = fmt.Errorf("%w: a JSON string is not of type 'object'", ErrBadKeyring)
				} else {
					_, _, err = parseKeyringJSON([]byte(p.VerificationKeys))
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadPolicy, key, err)
		}
	}
	return p, nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func decodeInt(v json.RawMessage, lo, hi float64) (int64, error) {
	var f float64
	if err := json.Unmarshal(v, &f); err != nil || isNull(v) {
		return 0, fmt.Errorf("%s is not of type 'integer'", v)
	}
	if f != math.Trunc(f) {
		return 0, fmt.Errorf("%s is not of type 'integer'", v)
	}
	if f < lo {
		return 0, fmt.Errorf("%s is less than the minimum of %v", v, lo)
	}
	if f > hi {
		return 0, fmt.Errorf("%s is greater than the maximum of %v", v, hi)
	}
	return int64(f), nil
}

func decodeMeta(v json.RawMessage, m *PolicyMeta) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil || isNull(v) {
		return fmt.Errorf("%s is not of type 'object'", v)
	}
	for _, key := range []string{"version", "generator"} {
		if _, ok := raw[key]; !ok {
			return fmt.Errorf("%q is a required property", key)
		}
	}
	var err error
	if m.Version, err = decodeInt(raw["version"], 0, math.MaxInt64); err != nil {
		return fmt.Errorf("version: %w", err)
	}
	if m.Generator, err = decodeInt(raw["generator"], GeneratorUnknown, GeneratorLegacyAllowList); err != nil {
		return fmt.Errorf("generator: %w", err)
	}
	if ts, ok := raw["timestamp"]; ok {
		if err := json.Unmarshal(ts, &m.Timestamp); err != nil || isNull(ts) {
			return fmt.Errorf("timestamp: %s is not of type 'string'", ts)
		}
	}
	return nil
}

func decodeStrings(v json.RawMessage) ([]string, error) {
	var out []string
	if err := json.Unmarshal(v, &out); err != nil || isNull(v) {
		return nil, fmt.Errorf("%s is not an array of strings", abbreviate(v))
	}
	return out, nil
}

func abbreviate(v []byte) string {
	if len(v) > 80 {
		return string(v[:77]) + "..."
	}
	return string(v)
}

// validDigestHex is the schema's ^[0-9a-f]{40,128}$.
func validDigestHex(s string) bool {
	if len(s) < 40 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func decodeDigests(v json.RawMessage) (map[string][]string, error) {
	var m map[string][]string
	if err := json.Unmarshal(v, &m); err != nil || isNull(v) {
		return nil, fmt.Errorf("not an object of string arrays: %v", err)
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		list := m[name]
		if len(list) == 0 {
			return nil, fmt.Errorf("%q: [] should be non-empty", name)
		}
		for i, d := range list {
			if !validDigestHex(d) {
				return nil, fmt.Errorf("%q[%d]: %q does not match '^[0-9a-f]{40,128}$'", name, i, d)
			}
		}
	}
	return m, nil
}

func decodeIMA(v json.RawMessage, c *PolicyIMA) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil || isNull(v) {
		return fmt.Errorf("%s is not of type 'object'", abbreviate(v))
	}
	for _, key := range []string{"ignored_keyrings", "log_hash_alg", "dm_policy"} {
		if _, ok := raw[key]; !ok {
			return fmt.Errorf("%q is a required property", key)
		}
	}
	var err error
	if c.IgnoredKeyrings, err = decodeStrings(raw["ignored_keyrings"]); err != nil {
		return fmt.Errorf("ignored_keyrings: %w", err)
	}
	if err := json.Unmarshal(raw["log_hash_alg"], &c.LogHashAlg); err != nil || isNull(raw["log_hash_alg"]) {
		return fmt.Errorf("log_hash_alg: %s is not of type 'string'", raw["log_hash_alg"])
	}
	switch c.LogHashAlg {
	case "sha1", "sha256", "sha384", "sha512":
	default:
		return fmt.Errorf("log_hash_alg: %q is not one of ['sha1', 'sha256', 'sha384', 'sha512']", c.LogHashAlg)
	}
	if !isNull(raw["dm_policy"]) {
		return fmt.Errorf("dm_policy: %s is not of type 'null' (device-mapper policies are not supported)", abbreviate(raw["dm_policy"]))
	}
	c.DMPolicy = json.RawMessage("null")
	return nil
}
