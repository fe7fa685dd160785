// Package ima is the pure core of runtime-integrity (IMA) attestation, compatible with Keylime's
// formats: it parses the kernel's ASCII measurement list, rebuilds every entry's template data and
// checks its template hash, replays PCR 10 in the SHA-1, SHA-256, SHA-384 and SHA-512 banks, keeps
// Keylime's incremental attestation state, decodes and validates runtime policies (JSON version 1,
// legacy allowlists and exclude lists, DSSE-signed envelopes), and judges each entry against a
// policy: file digests, IMA signatures (RSA and ECDSA keys, keyid v2), keys loaded onto keyrings and
// other ima-buf entries, with Keylime's failure event ids. It has no network, store or TPM access.
//
// Use: decode a policy once (OpenRuntimePolicy or DecodeRuntimePolicy, or ConvertPolicy for legacy
// inputs), Compile it once and share the *Compiled between all agents that use it, then call Attest
// per poll with the agent's State, and keep the State it returns.
//
// Templates: ima (d|n: 20-byte digest, name NUL-padded to 256 bytes, no length prefixes), ima-ng
// (d-ng|n-ng), ima-sig (d-ng|n-ng|sig), ima-buf (d-ng|n-ng|buf), ima-modsig
// (d-ng|n-ng|sig|d-modsig|modsig), ima-ngv2 and ima-sigv2 (d-ngv2), and custom formats the kernel
// logs as a field list ("d-ng|n-ng|sig") made of those fields. Length prefixes are u32
// little-endian, as x86 and arm64 kernels write them (big-endian kernels without ima_canonical_fmt
// differ). Entries of templates with other fields (evm-sig, …) are parse failures, as in Keylime.
//
// Where Keylime is fragile or wrong this package deliberately differs; each difference:
//
//   - A bank whose hash the kernel cannot compute when IMA starts (no built-in driver: the SHA-384
//     bank of the captured Debian 6.1 kernel in testdata) is extended with the SHA-1 template hash
//     padded with zeros, not with H_bank(template data). Attest tries both (ExtendMode), keeps the
//     one the quote matched in State.Extend and uses only that one afterwards; an in-memory log is
//     replayed a second time in the padded mode only when the first replay matched nowhere. Keylime
//     knows only H_bank and cannot attest such a bank.
//   - The template-hash column's algorithm is taken from its length (40, 64, 96 or 128 hex digits),
//     so the per-bank lists of newer kernels (ascii_runtime_measurements_sha256) work; Keylime uses
//     the policy's ima.log_hash_alg and fails every line of a log whose column differs. The column
//     is only a cross-check: the replay always extends H_bank(template data).
//   - Only entries whose PCR column is 10 are extended into PCR 10 (Keylime extends all); other PCRs
//     are still reported as ima.validation.ima_pcr. A PCR printed as " 9" (the kernel's "%2d") parses.
//   - An ima-sig signature field whose signature_v2_hdr is malformed is kept as logged in the template
//     data, as the kernel hashed it, so the replay stays right; the signature then simply does not
//     verify and the digest rules decide. Keylime drops it, which breaks the template hash and the
//     PCR replay of such a log.
//   - A d-ng digest logged without "<algo>:" is rebuilt as the kernel stores it (":\0<digest>");
//     Keylime writes "sha1:\0…". Whichever form the logged template hash confirms is used.
//   - Excludes are Python regular expressions; they are compiled as Go RE2 with Python's re.match
//     semantics over the alternation of all patterns. A pattern RE2 cannot run with the same meaning
//     (look-around, back-references, global inline flags, possessive or atomic groups, Go-only
//     escapes and POSIX classes) is refused when the policy is compiled, naming the pattern; Keylime
//     accepts the upload and ignores the whole exclude list at run time. Python's {,n} is rewritten
//     to {0,n}. \d, \w, \s and \b are ASCII in RE2 and Unicode in Python: paths with non-ASCII
//     characters may match differently.
//   - Keys learned from ima-buf entries after the quote's match are not kept in the State (those
//     entries are sent again and judged again); Keylime keeps them although the quote does not cover
//     them yet. Keys on curves Go lacks (secp256k1, brainpool) count as keys for the keyrings rules
//     but cannot verify signatures; in verification-keys they are left out with a warning
//     (Compiled.Warnings). All keys with a signature's keyid are tried, not only the first.
//   - A changed boot time (or PCR bank) on an incremental poll resets the state and sets
//     Result.Restart instead of passing the poll without looking at the quote.
//   - Boot aggregates from the measured-boot log (Evidence.BootAggregates) are accepted for
//     boot_aggregate per poll; Keylime appends them to its cached policy, shared by all agents.
//   - Only the first MaxFailures per-entry failures are listed; the rest are counted.
//   - A nil policy accepts every well-formed entry (Keylime's library behaviour without a policy);
//     the verifier should compile EmptyRuntimePolicy when an agent has no policy, as Keylime does.
//   - Allowlist conversion drops "<algo>:" digest prefixes, lower-cases digests, replaces spaces in
//     paths with '_', skips '#' comment lines and refuses malformed lines (Keylime skips them).
//   - DSSE envelopes must have payloadType application/vnd.keylime+json; Keylime's verifier does not
//     look. OpenRuntimePolicy verifies whenever a key is given (Keylime's verifier unwraps without
//     verifying unless require_allow_list_signatures is set, even with a key). Without a key an
//     envelope is only unwrapped: there is no trust in the certificate carried in a keyid, which
//     Keylime's library would verify against without any chain.
//   - Device-mapper policies (ima.dm_policy) are refused unless null, as Keylime's schema does.
//
// Not supported: SM3 PCR banks and Streebog/SM3 file signatures (not in Go's standard library),
// signature_v3 (fs-verity) signatures, verification of ima-modsig appended PKCS#7 signatures (such
// entries are judged by their digest and any xattr signature).
package ima
