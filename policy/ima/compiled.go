package ima

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"math"
	"regexp"
	"sort"
)

// Compiled is a runtime policy prepared for judging logs: digests decoded into one shared string
// arena behind a map from path to packed digests, excludes compiled once, verification keys parsed.
// Build it once per policy with Compile and share it read-only between any number of agents and
// goroutines; it never changes after Compile.
type Compiled struct {
	// arena holds, for every name of every table, the name, the u32 length of its packed digests
	// and the packed digests ((len byte ‖ digest)*), so a lookup touches one region of memory.
	arena    string
	seed     maphash.Seed
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
	c := &Compiled{ignored: map[string]bool{}, seed: maphash.MakeSeed()}
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
		table     *table
		nameStart int
		nameLen   int
	}
	var spans []span
	for _, t := range []struct {
		field string
		m     map[string][]string
		dst   *table
	}{{"digests", p.Digests, &c.digests}, {"keyrings", p.Keyrings, &c.keyrings}, {"ima-buf", p.IMABuf, &c.imaBuf}} {
		*t.dst = table{byHash: make(map[uint64]uint64, len(t.m))}
		names := make([]string, 0, len(t.m))
		for n := range t.m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			nameStart := len(arena)
			arena = append(arena, name...)
			arena = append(arena, 0, 0, 0, 0) // length of the packed digests, set below
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
			binary.LittleEndian.PutUint32(arena[start-4:], uint32(len(arena)-start))
			spans = append(spans, span{t.dst, nameStart, len(name)})
		}
	}
	if uint64(len(arena)) > math.MaxUint32 {
		return nil, fmt.Errorf("%w: more than 4 GiB of digests", ErrBadPolicy)
	}
	c.arena = string(arena)
	for _, s := range spans {
		c.index(s.table, s.nameStart, s.nameLen)
	}
	return c, nil
}

// table finds a name's entry in the arena by a 64-bit hash of the name; the rare names whose
// hashes collide are kept in a map by name.
type table struct {
	byHash  map[uint64]uint64 // hash → nameStart<<32 | nameLen, or collided
	collide map[string]uint64
}

// collided marks a hash shared by several names.
const collided = math.MaxUint64

func (c *Compiled) index(t *table, nameStart, nameLen int) {
	c.indexHash(t, nameStart, nameLen, maphash.String(c.seed, c.arena[nameStart:nameStart+nameLen]))
}

// indexHash adds a name with its hash h to t.
func (c *Compiled) indexHash(t *table, nameStart, nameLen int, h uint64) {
	name := c.arena[nameStart : nameStart+nameLen]
	v := uint64(nameStart)<<32 | uint64(nameLen)
	old, taken := t.byHash[h]
	switch {
	case !taken:
		t.byHash[h] = v
		return
	case old != collided:
		ns, nl := int(old>>32), int(uint32(old))
		if t.collide == nil {
			t.collide = map[string]uint64{}
		}
		t.collide[c.arena[ns:ns+nl]] = old
		t.byHash[h] = collided
	}
	if t.collide == nil {
		t.collide = map[string]uint64{}
	}
	t.collide[name] = v
}

// packed returns the packed digests listed for name in t.
func (c *Compiled) packed(t table, name []byte) (string, bool) {
	return c.packedHash(t, name, maphash.Bytes(c.seed, name))
}

// packedHash is packed for a name whose hash is h.
func (c *Compiled) packedHash(t table, name []byte, h uint64) (string, bool) {
	v, ok := t.byHash[h]
	if !ok {
		return "", false
	}
	if v == collided {
		if v, ok = t.collide[string(name)]; !ok {
			return "", false
		}
	}
	ns, nl := int(v>>32), int(uint32(v))
	if nl != len(name) || c.arena[ns:ns+nl] != string(name) {
		return "", false
	}
	start := ns + nl + 4
	n := int(binary.LittleEndian.Uint32([]byte(c.arena[ns+nl : start])))
	return c.arena[start : start+n], true
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
