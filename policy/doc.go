// Package policy holds the attestation policies the verifier applies and the tenant builds: the static PCR
// policy (Keylime's tpm_policy), and later the runtime (IMA) and measured-boot policies. It is pure: no
// network, no store, no TPM; it only judges the data it is handed and says why something failed, with
// Keylime's event ids.
package policy
