package api

// The checks below replace package-level regular expressions: compiled at start-up by every role linked
// into the one binary, the host-name pattern alone cost 0.2-0.4 MB of heap in each process.

// ValidHostName reports whether s is a plausible DNS host name: 1 to 253 letters, digits, dots and
// hyphens, starting and ending with a letter or digit.
func ValidHostName(s string) bool {
	if len(s) == 0 || len(s) > 253 || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !alnum(c) && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// ValidName reports whether s is 1 to max letters, digits, '_', '.' and '-' (names of policies and
// certificates), starting with a letter or digit when alnumFirst is set.
func ValidName(s string, max int, alnumFirst bool) bool {
	if len(s) == 0 || len(s) > max || (alnumFirst && !alnum(s[0])) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// IsLowerHex reports whether s is exactly n lowercase hexadecimal digits.
func IsLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
