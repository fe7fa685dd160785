// Package tpm checks what a TPM produced, without talking to a TPM.
//
// It parses and validates TPM public areas (EK, AK), builds Keylime's
// registration challenge (a software TPM2_MakeCredential in the tpm2-tools
// file format) and its activation auth_tag, and parses and verifies EK
// certificates. It does no device access and no network I/O, so the
// registrar and the verifier can use it freely; code that opens a TPM lives in
// tpm/device.
//
// Every parser here takes untrusted bytes, rejects anything not exactly in
// the expected shape and never panics.
package tpm
