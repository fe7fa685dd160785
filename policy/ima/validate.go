package ima

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strconv"

	"github.com/keylime-go/keylime/policy"
)

// bootAggregate is the path of the boot aggregate entry.
const bootAggregate = "boot_aggregate"

// verdict is the outcome of looking a digest up in one of the policy's tables.
type verdict uint8

const (
	allowed  verdict = iota // the name is listed with this digest
	notFound                // the name is not listed
	mismatch                // the name is listed, with other digests
)

// entryContext is the failure context naming the entry.
func entryContext(e *Entry, message string) map[string]any {
	return ctx("message", message, "entry", e.Index, "path", string(e.Name),
		"digest", e.DigestAlg+":"+hex.EncodeToString(e.Digest), "template", e.TemplateName)
}

// check judges one entry (Keylime's Entry.invalid and the template validators).
func (a *attestor) check(e *Entry) {
	if e.PCR != policy.IMAPCR {
		c := entryContext(e, "IMA PCR is not the configured one")
		c["expected"], c["got"] = strconv.Itoa(policy.IMAPCR), strconv.Itoa(e.PCR)
		a.fail(EventPCR, c)
	}
	if e.Violation {
		if a.opts.FailViolations {
			a.fail(EventToMToU, entryContext(e, "hash validation was skipped (violation entry)"))
		}
		return
	}
	if !e.TemplateHashOK {
		c := entryContext(e, "IMA template hash does not match the calculated hash.")
		c["expected"], c["got"] = hex.EncodeToString(e.TemplateHash), hex.EncodeToString(e.ComputedTemplateHash())
		a.fail(EventTemplateHash, c)
		return
	}
	switch e.Kind {
	case KindFile:
		a.checkFile(e, nil)
	case KindSignedFile:
		if a.pol == nil {
			return
		}
		if a.lookup(e, a.pol.digests, true) == allowed || a.pol.Excluded(e.Name) {
			return
		}
		var sigErr error
		if len(e.Sig) > 0 {
			if sigErr = VerifySignature(e.Sig, e.DigestAlg, e.Digest, a.rings...); sigErr == nil {
				return
			}
		}
		a.checkFile(e, sigErr)
	case KindBuffer:
		a.checkBuffer(e)
	}
}

// lookup looks the entry's digest up in a table; in the digests table, boot_aggregate also takes
// the poll's boot aggregates.
func (a *attestor) lookup(e *Entry, t table, digests bool) verdict {
	packed, ok := a.pol.packed(t, e.Name)
	if ok && hasDigest(packed, e.Digest) {
		return allowed
	}
	if digests && len(a.ev.BootAggregates) > 0 && string(e.Name) == bootAggregate {
		for _, d := range a.ev.BootAggregates {
			if bytes.Equal(d, e.Digest) {
				return allowed
			}
		}
		return mismatch
	}
	if !ok {
		return notFound
	}
	return mismatch
}

// checkFile judges a file digest against the digests table (Keylime's _validate_ima_ng), reporting
// sigErr when a signature was tried and failed.
func (a *attestor) checkFile(e *Entry, sigErr error) {
	if a.pol == nil {
		return
	}
	v := a.lookup(e, a.pol.digests, true)
	if v == allowed || a.pol.Excluded(e.Name) {
		return
	}
	a.reportDigest(e, v, a.pol.digests, true, sigErr)
}

// reportDigest records not_in_allowlist or runtime_policy_hash for an entry.
func (a *attestor) reportDigest(e *Entry, v verdict, t table, digests bool, sigErr error) {
	var c map[string]any
	id := EventNotInPolicy
	if v == notFound {
		c = entryContext(e, "File not found in allowlist: "+string(e.Name))
	} else {
		id = EventDigestNotAllowed
		c = entryContext(e, "Hash not found in runtime policy")
		c["got"] = hex.EncodeToString(e.Digest)
		packed, _ := a.pol.packed(t, e.Name)
		expected := hexList(packed)
		if digests && string(e.Name) == bootAggregate {
			for _, d := range a.ev.BootAggregates {
				expected = append(expected, hex.EncodeToString(d))
			}
		}
		c["expected"] = expected
	}
	if sigErr != nil {
		c["signature"] = sigErr.Error()
	}
	a.fail(id, c)
}

// checkBuffer judges an ima-buf entry (Keylime's _validate_ima_buf): a key loaded onto a keyring is
// checked against "keyrings" unless its keyring is ignored, and learned once accepted; any other
// buffer against "ima-buf".
func (a *attestor) checkBuffer(e *Entry) {
	pub, id, err := ParsePublicKey(e.Buf)
	switch {
	case err == nil || errors.Is(err, ErrUnsupportedCurve):
		if a.pol != nil && a.pol.ignoredKeyring(e.Name) {
			return
		}
		if a.pol != nil {
			if v := a.lookup(e, a.pol.keyrings, false); v != allowed && !a.pol.Excluded(e.Name) {
				a.reportDigest(e, v, a.pol.keyrings, false, nil)
				return
			}
		}
		if err != nil {
			return // a key Go cannot use: accepted, not learned
		}
		if k, err := newKey(pub, id); err == nil {
			a.pollKeys.add(k)
			a.learned = append(a.learned, learnedKey{keyring: string(e.Name), key: k, pos: a.pos})
		}
	case errors.Is(err, ErrUnsupportedKey):
		a.fail(EventInvalidKey, entryContext(e, "key from "+string(e.Name)+" does not have a supported key: "+err.Error()))
	default:
		if a.pol == nil {
			return
		}
		if v := a.lookup(e, a.pol.imaBuf, false); v != allowed && !a.pol.Excluded(e.Name) {
			a.reportDigest(e, v, a.pol.imaBuf, false, nil)
		}
	}
}
