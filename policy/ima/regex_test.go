package ima

import (
	"errors"
	"testing"
)

func TestExcludesMatchLikePython(t *testing.T) {
	// Each case: the exclude list, then paths with Python's re.match verdict on the combined
	// pattern (computed by hand from Python's semantics).
	for _, c := range []struct {
		name     string
		patterns []string
		match    []string
		noMatch  []string
	}{
		{"prefix match", []string{"/usr/bin/dd"}, []string{"/usr/bin/dd", "/usr/bin/ddx"}, []string{"/x/usr/bin/dd", "/usr/bin/d"}},
		{"boot_aggregate also excludes boot_aggregate_late", []string{"boot_aggregate"}, []string{"boot_aggregate", "boot_aggregate_late"}, []string{"xboot_aggregate"}},
		{"dollar anchors", []string{"/usr/bin/dd$"}, []string{"/usr/bin/dd"}, []string{"/usr/bin/ddx"}},
		{"alternation of several", []string{"/var/log/.*", "/tmp/"}, []string{"/var/log/x", "/tmp/y"}, []string{"/var/lib"}},
		{"alternation inside a pattern stays anchored", []string{"a|b"}, []string{"a1", "b1"}, []string{"ca", "cb"}},
		{"empty pattern matches everything", []string{"/x", ""}, []string{"/anything"}, nil},
		{"{,n} is {0,n}", []string{"/ab{,2}c"}, []string{"/ac", "/abc", "/abbc"}, []string{"/abbbc", "/ab{,2}c"}},
		{"{,} is {0,}", []string{"/ab{,}c$"}, []string{"/ac", "/abbbbc"}, nil},
		{"literal brace", []string{"/a{x}"}, []string{"/a{x}"}, []string{"/a"}},
		{"class with ] first", []string{"/[]a]x"}, []string{"/]x", "/ax"}, []string{"/bx"}},
		{"negated class with ] first", []string{"/[^]a]x"}, []string{"/bx"}, []string{"/]x", "/ax"}},
		{"backspace in class", []string{"/[\\b]"}, []string{"/\b"}, []string{"/b"}},
		{"scoped flags", []string{"(?i:/TMP)"}, []string{"/tmp/x"}, []string{"/var"}},
		{"named group", []string{"(?P<d>/opt)/"}, []string{"/opt/x"}, []string{"/op"}},
		{"escapes", []string{`/usr/lib/\w+\.so\.\d`}, []string{"/usr/lib/libc.so.6"}, []string{"/usr/lib/libc.so"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			re, err := CompileExcludes(c.patterns)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range c.match {
				if !re.MatchString(p) {
					t.Errorf("%q does not match %q", c.patterns, p)
				}
			}
			for _, p := range c.noMatch {
				if re.MatchString(p) {
					t.Errorf("%q matches %q", c.patterns, p)
				}
			}
		})
	}
	if re, err := CompileExcludes(nil); re != nil || err != nil {
		t.Fatalf("empty list: %v %v", re, err)
	}
}

func TestExcludesRefused(t *testing.T) {
	for _, p := range []string{
		`/a(?=b)`, `/a(?!b)`, `(?<=/)a`, `(?<!/)a`, `(a)\1`, `(?P<x>a)(?P=x)`, `(a)?(?(1)b|c)`, `(?>a)`, `a*+`,
		`(?#comment)a`, `a\Z`, `\u0041`, `\N{DIGIT ONE}`, `\pL`, `\p{L}`, `\Qa\E`, `a\z`, `\C`, `\x{41}`,
		`[[:alpha:]]`, `(?i)/tmp`, `(?x)/tmp`, `(?U:a*)`, `(?a:\w)`, `(?<name>a)`, `[a`, `a\`, `a{1001}`, `(`, `\e`,
	} {
		t.Run(p, func(t *testing.T) {
			_, err := CompileExcludes([]string{"/ok", p})
			if !errors.Is(err, ErrBadExclude) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}
