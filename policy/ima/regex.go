package ima

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrBadExclude wraps every exclude pattern that cannot be used.
var ErrBadExclude = errors.New("invalid exclude pattern")

// pythonToRE2 checks that a Python `re` pattern means the same under Go's RE2 and returns the form
// to compile. It rewrites Python's `{,n}` (and `{,}`) to `{0,n}` (`{0,}`), which RE2 would read
// literally, and refuses constructs the two engines read differently or RE2 lacks:
//   - look-around ((?=, (?!, (?<=, (?<!), back-references (\1, (?P=name)), conditionals, atomic
//     groups, possessive quantifiers, (?#comments), \Z, \u, \U, \N{…} — RE2 cannot express them
//     (Go's parser rejects most; this scan names them);
//   - escapes Python refuses but RE2 takes (\p, \P, \pN, \C, \Q, \E, \z, \x{…}) and POSIX classes
//     ([[:alpha:]] is a bracket expression of '[', ':', … for Python);
//   - inline flags other than i, m, s, and global flags ((?i) without ':'), which Python ≥ 3.11
//     refuses inside Keylime's combined pattern and older versions apply to the whole list.
func pythonToRE2(p string) (string, error) {
	var b strings.Builder
	inClass := false
	classStart := 0 // position right after '[' (and '^') of the open class
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\':
			if i+1 >= len(p) {
				return "", errors.New("trailing backslash")
			}
			n := p[i+1]
			switch n {
			case 'p', 'P', 'C', 'Q', 'E', 'z', 'Z', 'u', 'U', 'N', 'g', 'G', 'K', 'R', 'X', 'h', 'H', 'V', 'o':
				return "", fmt.Errorf(`escape \%c is not supported (Python and Go's RE2 differ or lack it)`, n)
			case '1', '2', '3', '4', '5', '6', '7', '8', '9':
				return "", fmt.Errorf(`back-reference \%c is not supported by Go's RE2`, n)
			case 'x':
				if i+2 < len(p) && p[i+2] == '{' {
					return "", errors.New(`escape \x{…} is not Python syntax (write \xhh)`)
				}
			case 'b', 'B', 'A':
				if inClass && n != 'b' {
					return "", fmt.Errorf(`escape \%c inside a character class`, n)
				}
				if inClass { // Python: backspace; RE2 refuses \b in a class
					b.WriteString(`\x08`)
					i++
					continue
				}
			}
			b.WriteByte(c)
			b.WriteByte(n)
			i++
		case inClass:
			if c == ']' && i > classStart {
				inClass = false
			} else if c == '[' && i+1 < len(p) && (p[i+1] == ':' || p[i+1] == '=' || p[i+1] == '.') {
				return "", fmt.Errorf("%q inside a character class (a POSIX class for RE2, literal characters for Python)", p[i:i+2])
			}
			b.WriteByte(c)
		case c == '[':
			inClass = true
			b.WriteByte(c)
			j := i + 1
			if j < len(p) && p[j] == '^' {
				b.WriteByte('^')
				j++
			}
			classStart = j // a ']' right here is a literal in both engines
			i = j - 1
		case c == '(' && i+1 < len(p) && p[i+1] == '?':
			rest := p[i+2:]
			switch {
			case strings.HasPrefix(rest, ":"), strings.HasPrefix(rest, "P<"):
			case strings.HasPrefix(rest, "="), strings.HasPrefix(rest, "!"), strings.HasPrefix(rest, "<"):
				return "", errors.New("look-around is not supported by Go's RE2")
			case strings.HasPrefix(rest, "P="), strings.HasPrefix(rest, "("):
				return "", errors.New("back-references and conditionals are not supported by Go's RE2")
			case strings.HasPrefix(rest, "#"):
				return "", errors.New("(?#…) comments are not supported by Go's RE2")
			case strings.HasPrefix(rest, ">"):
				return "", errors.New("atomic groups are not supported by Go's RE2")
			default:
				j := 0
				for j < len(rest) && (rest[j] == '-' || rest[j] >= 'a' && rest[j] <= 'z' || rest[j] >= 'A' && rest[j] <= 'Z') {
					if f := rest[j]; f != '-' && f != 'i' && f != 'm' && f != 's' {
						return "", fmt.Errorf("inline flag %q is not supported (only i, m and s mean the same in Python and Go)", f)
					}
					j++
				}
				if j == len(rest) || rest[j] != ':' {
					return "", errors.New("global inline flags such as (?i) are not supported; scope them: (?i:…)")
				}
			}
			b.WriteByte(c)
		case c == '{' && i+1 < len(p) && p[i+1] == ',':
			// Python reads {,n} as {0,n} and {,} as {0,}; RE2 would take them literally.
			j := i + 2
			for j < len(p) && p[j] >= '0' && p[j] <= '9' {
				j++
			}
			if j < len(p) && p[j] == '}' {
				b.WriteString("{0,")
				b.WriteString(p[i+2 : j])
				b.WriteByte('}')
				i = j
				continue
			}
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	if inClass {
		return "", errors.New("unterminated character class")
	}
	return b.String(), nil
}

// CompileExcludes compiles a runtime policy's excludes as Keylime does: the alternation
// (e1)|(e2)|… of all patterns, matched like Python's re.match (anchored at the start of the path
// only). A pattern Go's RE2 cannot run with Python's meaning is refused with an error naming it
// (Keylime instead ignores the whole list at run time when the combined pattern does not compile).
// It returns nil for an empty list.
func CompileExcludes(patterns []string) (*regexp.Regexp, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	parts := make([]string, len(patterns))
	for i, p := range patterns {
		q, err := pythonToRE2(p)
		if err != nil {
			return nil, fmt.Errorf("%w excludes[%d] %q: %v", ErrBadExclude, i, p, err)
		}
		if _, err := regexp.Compile(q); err != nil {
			return nil, fmt.Errorf("%w excludes[%d] %q: %v", ErrBadExclude, i, p, err)
		}
		parts[i] = q
	}
	re, err := regexp.Compile(`^(?:(` + strings.Join(parts, ")|(") + `))`)
	if err != nil {
		return nil, fmt.Errorf("%w: the combined pattern: %v", ErrBadExclude, err)
	}
	return re, nil
}
