// Package softagent is a software stand-in for a Keylime agent and its TPM, for tests only (it is never
// linked into the release binary).
//
// A TPM holds a software attestation key with a genuine TPMT_PUBLIC (the attributes and scheme of
// Keylime's tpm2_createak AK, so tpm.CheckAK accepts it), sha1 and sha256 PCR banks and a clock, and
// produces quotes byte for byte as a TPM does (checked against swtpm): a TPMS_ATTEST with the AK's
// qualified name, the nonce, the clock and the PCR digest, signed in software with the AK's scheme.
// Tamper makes it misbehave in ways a real TPM cannot (a clock that runs backwards, a quote signed by
// another key, a replayed nonce, a forged attestation, PCR values that do not match).
//
// An Agent serves Keylime's agent API (GET /version, /v2.x/quotes/identity, /v2.x/quotes/integrity,
// /v2.x/keys/pubkey, /v2.x/agent/info) over mutually authenticated HTTPS on a listener it is given,
// binds its NK into PCR 16 before every quote and can grow an IMA log, extending PCR 10 to match. Many
// agents fit in one process: the simulated fleet for verifier load tests.
package softagent
