// Package deptest holds the test that enforces the package layout of DESIGN.md §2: roles never import each
// other, pure packages stay pure, the TPM device code is used only by the agent, and test-only code never
// reaches the release binary.
package deptest
