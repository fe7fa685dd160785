// Package e2e runs the whole keylime-go system in the test process — a Keylime CA, the registrar, the
// verifier and agents on their own swtpms — so scenario tests read like what an operator does. It is
// test-only and never linked into the release binary.
package e2e
