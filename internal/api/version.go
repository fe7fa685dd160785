package api

import (
	"strconv"
	"strings"
)

// SupportedVersions lists the v2 API versions every role serves, oldest first (Keylime 2.1 through 2.6).
var SupportedVersions = []string{"2.1", "2.2", "2.3", "2.4", "2.5", "2.6"}

// CurrentVersion is the newest API version we speak.
const CurrentVersion = "2.6"

// VersionNotSupported is the status prefix of a 400 for an unknown API version; upstream verifiers look for
// this exact text to trigger version renegotiation.
const VersionNotSupported = "API version not supported"

// AgentVersion is the agent's GET /version results.
type AgentVersion struct {
	SupportedVersion  string   `json:"supported_version"`
	SupportedVersions []string `json:"supported_versions,omitempty"`
}

// ServerVersion is the registrar's and verifier's GET /version results.
type ServerVersion struct {
	CurrentVersion    string   `json:"current_version"`
	SupportedVersions []string `json:"supported_versions"`
}

// IsSupported reports whether v (without the leading "v") is a version we serve.
func IsSupported(v string) bool {
	for _, s := range SupportedVersions {
		if s == v {
			return true
		}
	}
	return false
}

// CompareVersions compares two "major.minor" versions numerically: -1, 0 or 1. Unparsable parts count as 0.
func CompareVersions(a, b string) int {
	am, an := splitVersion(a)
	bm, bn := splitVersion(b)
	switch {
	case am != bm:
		return cmpInt(am, bm)
	default:
		return cmpInt(an, bn)
	}
}

// Negotiate returns the highest version present in both lists, or "" when they share none.
func Negotiate(remote, local []string) string {
	best := ""
	for _, r := range remote {
		for _, l := range local {
			if r == l && (best == "" || CompareVersions(r, best) > 0) {
				best = r
			}
		}
	}
	return best
}

func splitVersion(v string) (int, int) {
	major, minor, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	ma, _ := strconv.Atoi(major)
	mi, _ := strconv.Atoi(minor)
	return ma, mi
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ValidAgentID reports whether id is an agent id Keylime accepts ([\w.-]+, ASCII), at most 255 characters.
func ValidAgentID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
