package ima

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"
)

// keyringPrefix marks a keyring entry in a flat allowlist ("<digest>  %keyring:.ima").
const keyringPrefix = "%keyring:"

// ConvertPolicy turns any runtime policy input Keylime's converter (keylime_convert_runtime_policy)
// accepts into a version 1 policy: a current policy is decoded as is; an older JSON policy
// (meta.version < 1) is rebuilt on the empty policy (generator 2); a JSON allowlist ("hashes") or a
// flat allowlist becomes a policy with generator 3 (ParseAllowlist). The result passes
// DecodeRuntimePolicy's validation; Meta.Timestamp is left for the caller to set.
func ConvertPolicy(data []byte) (*RuntimePolicy, error) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		if json.Valid(data) {
			return nil, fmt.Errorf("%w: a JSON value that is not an object", ErrBadPolicy)
		}
		return parseFlatAllowlist(data)
	}
	if _, ok := obj["digests"]; ok {
		var meta struct {
			Meta struct {
				Version *float64 `json:"version"`
			} `json:"meta"`
		}
		if json.Unmarshal(data, &meta) == nil && meta.Meta.Version != nil && *meta.Meta.Version >= RuntimePolicyVersion {
			return DecodeRuntimePolicy(data)
		}
		return migrate(obj, "digests", GeneratorCompatibleAllowList)
	}
	if truthy(obj["hashes"]) {
		return migrate(obj, "hashes", GeneratorLegacyAllowList)
	}
	return nil, fmt.Errorf("%w: JSON without \"digests\" or \"hashes\"", ErrBadPolicy)
}

// ParseAllowlist converts a legacy allowlist, JSON ({"hashes": {...}, "keyrings": …}) or flat
// ("<digest> <path>" per line), to a version 1 policy with generator 3.
//
// Flat lines are split at the first run of white space; blank lines and lines starting with '#'
// are skipped; a path "%keyring:<name>" is a keyring entry; spaces in paths become '_' as IMA logs
// them (keylime-policy does this; the older converter did not); a digest may carry an "<algo>:"
// prefix, which is dropped (Keylime copied it and produced a policy its own schema refuses); digests
// are lower-cased. A line without a path or with a digest that is not 40-128 hex digits is an error
// naming the line.
func ParseAllowlist(data []byte) (*RuntimePolicy, error) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) == nil {
		if _, ok := obj["digests"]; ok {
			return nil, fmt.Errorf("%w: this is already a runtime policy, not an allowlist", ErrBadPolicy)
		}
		if !truthy(obj["hashes"]) {
			return nil, fmt.Errorf("%w: JSON allowlist without a \"hashes\" list", ErrBadPolicy)
		}
		return migrate(obj, "hashes", GeneratorLegacyAllowList)
	}
	return parseFlatAllowlist(data)
}

// truthy is Python truthiness of a JSON value.
func truthy(v json.RawMessage) bool {
	switch strings.TrimSpace(string(v)) {
	case "", "null", "false", "0", `""`, "[]", "{}":
		return false
	}
	return true
}

// migrate builds a policy on the empty policy from an older JSON document: digestsKey is copied to
// "digests", every other field of the current format is taken when truthy, and the "ima" object is
// merged over the defaults.
func migrate(obj map[string]json.RawMessage, digestsKey string, generator int64) (*RuntimePolicy, error) {
	out := map[string]json.RawMessage{}
	empty, err := json.Marshal(EmptyRuntimePolicy())
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(empty, &out); err != nil {
		return nil, err
	}
	meta, _ := json.Marshal(PolicyMeta{Version: RuntimePolicyVersion, Generator: generator})
	out["meta"] = meta
	if truthy(obj[digestsKey]) {
		out["digests"] = obj[digestsKey]
	}
	for _, key := range []string{"release", "excludes", "keyrings", "ima-buf", "verification-keys"} {
		if truthy(obj[key]) {
			out[key] = obj[key]
		}
	}
	if truthy(obj["ima"]) {
		var def, have map[string]json.RawMessage
		_ = json.Unmarshal(out["ima"], &def)
		if err := json.Unmarshal(obj["ima"], &have); err != nil {
			return nil, fmt.Errorf("%w: ima: %v", ErrBadPolicy, err)
		}
		for k, v := range have {
			def[k] = v
		}
		out["ima"], _ = json.Marshal(def)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPolicy, err)
	}
	return DecodeRuntimePolicy(b)
}

// knownDigestPrefixes are the "<algo>:" prefixes a flat allowlist digest may carry.
var knownDigestPrefixes = []string{"sha1:", "sha256:", "sha384:", "sha512:", "sm3_256:", "sm3:", "md5:"}

func parseFlatAllowlist(data []byte) (*RuntimePolicy, error) {
	p := EmptyRuntimePolicy()
	p.Meta.Generator = GeneratorLegacyAllowList
	for n, raw := range bytes.Split(data, []byte("\n")) {
		line := strings.TrimSpace(string(raw))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.IndexFunc(line, isSpace)
		if i < 0 {
			return nil, fmt.Errorf("%w: allowlist line %d: no path after the digest", ErrBadPolicy, n+1)
		}
		digest, path := strings.ToLower(line[:i]), strings.TrimLeftFunc(line[i:], isSpace)
		for _, pre := range knownDigestPrefixes {
			digest = strings.TrimPrefix(digest, pre)
		}
		if !validDigestHex(digest) {
			return nil, fmt.Errorf("%w: allowlist line %d: %q is not a digest of 40-128 hex digits", ErrBadPolicy, n+1, line[:i])
		}
		table := p.Digests
		if name, ok := strings.CutPrefix(path, keyringPrefix); ok {
			table, path = p.Keyrings, name
		}
		path = strings.ReplaceAll(path, " ", "_")
		if !contains(table[path], digest) {
			table[path] = append(table[path], digest)
		}
	}
	return p, nil
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\v' || r == '\f' || r == '\r' }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ParseExcludeList reads a legacy exclude list: one Python regular expression per line, blank lines
// and lines starting with '#' skipped. Every pattern must compile with Python's meaning under RE2
// (see CompileExcludes); the error names the line.
func ParseExcludeList(data []byte) ([]string, error) {
	var out []string
	for n, raw := range bytes.Split(data, []byte("\n")) {
		line := strings.TrimSpace(string(raw))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		q, err := pythonToRE2(line)
		if err == nil {
			_, err = regexp.Compile(q)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: exclude list line %d %q: %v", ErrBadExclude, n+1, line, err)
		}
		out = append(out, line)
	}
	return out, nil
}

// Allowlist writes the policy's digests as a flat allowlist (`keylime-policy
// --show-legacy-allowlist`): "<digest>  <path>" lines, boot_aggregate first and then paths in
// order, followed by "%keyring:<name>" lines for keyrings. Excludes, ima-buf entries, ignored
// keyrings and verification keys have no allowlist form (see ExcludeList for the first). Spaces in
// paths and keyring names are written as '_', which is how IMA's ASCII log and every allowlist reader
// spell them (PolicyPath). Names that are empty or hold other whitespace (a newline, a tab), and
// paths that start with "%keyring:", have no flat form: they are left out and returned in skipped,
// so that what is written reads back as the digests it shows.
func (p *RuntimePolicy) Allowlist() (out []byte, skipped []string) {
	var b bytes.Buffer
	write := func(m map[string][]string, prefix string, first string) {
		names := make([]string, 0, len(m))
		for n := range m {
			if n == first {
				continue
			}
			if !flatName(n) || (prefix == "" && strings.HasPrefix(n, keyringPrefix)) {
				skipped = append(skipped, prefix+n)
				continue
			}
			names = append(names, n)
		}
		sort.Strings(names)
		if _, ok := m[first]; ok && first != "" {
			names = append([]string{first}, names...)
		}
		for _, n := range names {
			for _, d := range m[n] {
				fmt.Fprintf(&b, "%s  %s%s\n", d, prefix, PolicyPath(n))
			}
		}
	}
	write(p.Digests, "", "boot_aggregate")
	write(p.Keyrings, keyringPrefix, "")
	sort.Strings(skipped)
	return b.Bytes(), skipped
}

// flatName reports whether a path or keyring name has a flat allowlist form: not empty, and no
// whitespace but spaces.
func flatName(n string) bool {
	return n != "" && strings.IndexFunc(n, func(r rune) bool { return r != ' ' && unicode.IsSpace(r) }) < 0
}

// ExcludeList writes the policy's excludes one per line.
func (p *RuntimePolicy) ExcludeList() []byte {
	var b bytes.Buffer
	for _, e := range p.Excludes {
		b.WriteString(e)
		b.WriteByte('\n')
	}
	return b.Bytes()
}
