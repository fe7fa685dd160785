// Package mb is the pure core of measured-boot attestation: it parses a binary UEFI (TCG2 crypto-agile
// or legacy SHA-1) event log, replays it per PCR bank, compares the replay with quoted PCRs, decodes the
// event data a reference state needs, and judges a log against Keylime's measured-boot reference state
// ("mb_refstate") the way Keylime's `example` policy does. It also generates a reference state from a
// known-good log, as `keylime-policy create measured-boot` does. It has no network, store or TPM access.
//
// Parsing goes through go-attestation behind a small internal interface (backend), so the library can be
// swapped for go-eventlog later; a panic inside it is turned into an error.
//
// Where Keylime (4.x, with tpm2-tools) is fragile on real logs this package deliberately differs; each
// difference is listed here and in the report of the change that introduced it:
//
//   - Replay skips every EV_NO_ACTION event and starts PCR 0 at 00…0‖locality when a StartupLocality
//     event precedes the first PCR 0 measurement (tpm2-tools ≤ 5.5 got both wrong). Boot aggregates are
//     computed with PCRs absent from the log taken as zero, as the TPM holds them.
//   - EV_NO_ACTION events are never judged (they are not measured), so StartupLocality or SP800-155
//     events do not fail the policy. Events on PCRs the policy does not cover are not judged either:
//     the verifier does not compare those PCRs, so their events are unverified and meaningless.
//   - Event data that a rule reads is bound to its digest where the specification defines the digest
//     (EFI variables in PCR 7, EFI actions, separators, kernel_cmdline strings), so a log whose
//     descriptions were rewritten while keeping the digests fails; Keylime reads the data unchecked.
//   - PCR 0 measurements other than EV_S_CRTM_VERSION and separators (EV_POST_CODE, EV_S_CRTM_CONTENTS,
//     EV_NONHOST_INFO, …) are platform-firmware measurements in scrtm_and_bios.platform_firmware, in log
//     order; PCR 1 configuration events (variables, EV_PLATFORM_CONFIG_FLAGS in any number, handoff
//     tables, microcode) are accepted as Keylime accepts boot variables.
//   - dbx must contain every refstate dbx entry in the union of all its signature lists (Keylime wants
//     exactly one SHA-256 list). With has_secureboot the SecureBoot variable must be measured, and the dbx
//     variable must be when the refstate lists dbx entries. SignatureOwner GUIDs match in either byte order.
//   - Boot applications loaded from a firmware volume (device path FvVol/FvFile) are judged against the
//     optional scrtm_and_bios[].firmware_apps list instead of the kernel chain; the generator fills it.
//   - A kernel entry's boot chain is the ordered subset of shim/grub/kernel authcode fields it has (the
//     kernel may appear twice); each other kernel field, when present, requires at least one such event
//     and all of them to match, and when absent forbids such events (vmlinuz excepted under Secure Boot).
//     The Linux EFI stub's tagged events in PCR 9 count as initrd ("Linux initrd") and as the optional
//     extension field load_options_plain_sha256 ("LOADED_IMAGE::LoadOptions").
//   - kernel_cmdline is a Python regex in Keylime; it is compiled as Go RE2 with Python's fullmatch
//     semantics, and a pattern RE2 cannot express is refused when the reference state is loaded.
//   - Authority events Keylime accepts unconditionally (db, Shim, SbatLevel, MokListRT) may repeat:
//     older shims log their vendor certificate once per image they verify.
//   - All failing rules are reported, not only the first.
package mb
