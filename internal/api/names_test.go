package api

import (
	"regexp"
	"strings"
	"testing"
)

// The hand-written checks accept exactly what the regular expressions they replace accepted.
func TestNamesMatchTheirPatterns(t *testing.T) {
	host := regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)
	policy := regexp.MustCompile(`^[A-Za-z0-9_.-]{1,255}$`)
	cert := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	tag := regexp.MustCompile(`^[0-9a-f]{96}$`)
	inputs := []string{"", "a", "-", "a-", "-a", "a-b", "a.b.c", "host_name", "10.0.0.1", "::1", "ä", "a b",
		"_x", ".x", "x.", strings.Repeat("a", 253), strings.Repeat("a", 254), strings.Repeat("b", 255),
		strings.Repeat("b", 256), strings.Repeat("c", 64), strings.Repeat("c", 65), strings.Repeat("f0", 48),
		strings.Repeat("F0", 48), strings.Repeat("f0", 47) + "g0", strings.Repeat("0", 95), "a\n", "\x00"}
	check := func(in string) {
		if got, want := ValidHostName(in), host.MatchString(in); got != want {
			t.Errorf("ValidHostName(%q) = %v, pattern says %v", in, got, want)
		}
		if got, want := ValidName(in, 255, false), policy.MatchString(in); got != want {
			t.Errorf("ValidName(%q, 255, false) = %v, pattern says %v", in, got, want)
		}
		if got, want := ValidName(in, 64, true), cert.MatchString(in); got != want {
			t.Errorf("ValidName(%q, 64, true) = %v, pattern says %v", in, got, want)
		}
		if got, want := IsLowerHex(in, 96), tag.MatchString(in); got != want {
			t.Errorf("IsLowerHex(%q, 96) = %v, pattern says %v", in, got, want)
		}
	}
	for _, in := range inputs {
		check(in)
	}
}

// FuzzNames compares the checks with the patterns on any input.
func FuzzNames(f *testing.F) {
	host := regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)
	policy := regexp.MustCompile(`^[A-Za-z0-9_.-]{1,255}$`)
	cert := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	tag := regexp.MustCompile(`^[0-9a-f]{96}$`)
	for _, s := range []string{"a", "a-b.c", "_x", strings.Repeat("f0", 48)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if ValidHostName(in) != host.MatchString(in) || ValidName(in, 255, false) != policy.MatchString(in) ||
			ValidName(in, 64, true) != cert.MatchString(in) || IsLowerHex(in, 96) != tag.MatchString(in) {
			t.Errorf("checks and patterns disagree on %q", in)
		}
	})
}
