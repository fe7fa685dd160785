package ima

import (
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
)

// Compiled is a runtime policy prepared for judging logs: digests decoded into one shared string
// arena behind a map from path to packed digests, excludes compiled once, verification keys parsed.
// Build it once per policy with Compile and share it read-only between any number of agents and
// goroutines; it never changes after Compile.
type Compiled struct {
	// arena holds, for every name of every table, the name followed by its packed digests
	// ((len byte ‖ digest)*), so a lookup touches one region of memory; the tables' keys are
	// substrings of arena and their values the digests' span (start<<32 | end).
	arena    string
	digests  table
	keyrings table
	imaBuf   table
	exclude  *regexp.Regexp
	// ignoreAll is set by "*" in ignored_keyrings.
	ignoreAll bool
	ignored   map[string]bool
	keys      *Keyring
	warnings  []string
	nDigests  int
}

// Compile validates the parts of a decoded policy that need more than its schema (excludes under
// RE2, verification keys) and builds the Compiled form. Digests of odd length, which Keylime's schema
// allows but which never match, are left out with a warning.
func Compile(p *RuntimePolicy) (*Compiled, error) {
	c := &Compiled{ignored: map[string]bool{}}
	var err error
	if c.exclude, err = CompileExcludes(p.Excludes); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPolicy, err)
	}
	var warn []string
	if c.keys, warn, err = ParseVerificationKeys(p.VerificationKeys); err != nil {
		return nil, fmt.Errorf("%w: verification-keys: %w", ErrBadPolicy, err)
	}
	for _, w := range warn {
		c.warnings = append(c.warnings, "verification-keys: "+w)
	}
	for _, k := range p.IMA.IgnoredKeyrings {
		if k == "*" {
			c.ignoreAll = true
		}
		c.ignored[k] = true
	}
	var arena []byte
	type span struct {
		table                 table
		nameStart, start, end int
	}
	var spans []span
	for _, t := range []struct {
		field string
		m     map[string][]string
		dst   *table
	}{{"digests", p.Digests, &c.digests}, {"keyrings", p.Keyrings, &c.keyrings}, {"ima-buf", p.IMABuf, &c.imaBuf}} {
		*t.dst = make(table, len(t.m))
		names := make([]string, 0, len(t.m))
		for n := range t.m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			nameStart := len(arena)
			arena = append(arena, name...)
			start := len(arena)
			for _, h := range t.m[name] {
				if len(h)%2 != 0 || len(h) > 2*255 {
					c.warnings = append(c.warnings, fmt.Sprintf("%s[%q]: digest %q has an odd number of hex digits and can never match", t.field, name, h))
					continue
				}
				arena = append(arena, byte(len(h)/2))
				var err error
				if arena, err = hex.AppendDecode(arena, []byte(h)); err != nil {
					return nil, fmt.Errorf("%w: %s[%q]: %v", ErrBadPolicy, t.field, name, err)
				}
				c.nDigests++
			}
			spans = append(spans, span{*t.dst, nameStart, start, len(arena)})
		}
	}
	c.arena = string(arena)
	for _, s := range spans {
		s.table[c.arena[s.nameStart:s.start]] = uint64(s.start)<<32 | uint64(s.end)
	}
	return c, nil
}

// table maps a name to the span of its packed digests in the arena.
type table map[string]uint64

// packed returns the packed digests listed for name in t.
func (c *Compiled) packed(t table, name []byte) (string, bool) {
	span, ok := t[string(name)]
	if !ok {
		return "", false
	}
	return c.arena[span>>32 : uint32(span)], true
}

// MustCompile is Compile for policies known to be valid (tests, built-in policies); it panics on error.
func MustCompile(p *RuntimePolicy) *Compiled {
	c, err := Compile(p)
	if err != nil {
		panic(err)
	}
	return c
}

// Warnings lists what Compile left out (keys on unsupported curves, odd-length digests).
func (c *Compiled) Warnings() []string { return append([]string(nil), c.warnings...) }

// Keys returns the policy's verification keys (do not modify them).
func (c *Compiled) Keys() *Keyring { return c.keys }

// NumDigests returns the number of digests held (digests, keyrings and ima-buf together).
func (c *Compiled) NumDigests() int { return c.nDigests }

// Excluded reports whether name matches the excludes (Python re.match semantics).
func (c *Compiled) Excluded(name []byte) bool {
	return c != nil && c.exclude != nil && c.exclude.Match(name)
}

// ignoredKeyring reports whether keys loaded onto the named keyring are not judged.
func (c *Compiled) ignoredKeyring(name []byte) bool {
	return c.ignoreAll || c.ignored[string(name)]
}

// hasDigest reports whether the packed list holds d.
func hasDigest(packed string, d []byte) bool {
	for i := 0; i < len(packed); {
		n := int(packed[i])
		if n == len(d) && packed[i+1:i+1+n] == string(d) {
			return true
		}
		i += 1 + n
	}
	return false
}

// hexList unpacks a packed list into hex strings (for failure contexts).
func hexList(packed string) []string {
	out := []string{}
	for i := 0; i < len(packed); {
		n := int(packed[i])
		out = append(out, hex.EncodeToString([]byte(packed[i+1:i+1+n])))
		i += 1 + n
	}
	return out
}

// Allowed reports whether the policy lists digest d for path (the "digests" table).
func (c *Compiled) Allowed(path string, d []byte) bool {
	packed, ok := c.packed(c.digests, []byte(path))
	return ok && hasDigest(packed, d)
}
