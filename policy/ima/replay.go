package ima

import (
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/keylime-go/keylime/policy"
)

// ErrUnsupportedBank is returned for a PCR bank other than SHA-1, SHA-256, SHA-384 and SHA-512
// (Go's standard library has no SM3).
var ErrUnsupportedBank = errors.New("unsupported PCR bank")

// Banks are the PCR banks the replay supports.
var Banks = []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}

// CheckBank returns ErrUnsupportedBank unless h is one of Banks.
func CheckBank(h crypto.Hash) error {
	switch h {
	case crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512:
		return nil
	}
	return fmt.Errorf("%w %v", ErrUnsupportedBank, h)
}

// BankName returns the Keylime/tpm2-tools name of a bank: "sha1", "sha256", "sha384", "sha512".
func BankName(h crypto.Hash) string {
	return strings.ReplaceAll(strings.ToLower(h.String()), "-", "")
}

// BankByName is the inverse of BankName.
func BankByName(name string) (crypto.Hash, error) {
	for _, h := range Banks {
		if BankName(h) == name {
			return h, nil
		}
	}
	return 0, fmt.Errorf("%w %q", ErrUnsupportedBank, name)
}

// hashSum appends H(data) to out without allocating; h must be one of Banks.
func hashSum(h crypto.Hash, data, out []byte) []byte {
	switch h {
	case crypto.SHA1:
		s := sha1.Sum(data)
		return append(out, s[:]...)
	case crypto.SHA256:
		s := sha256.Sum256(data)
		return append(out, s[:]...)
	case crypto.SHA384:
		s := sha512.Sum384(data)
		return append(out, s[:]...)
	case crypto.SHA512:
		s := sha512.Sum512(data)
		return append(out, s[:]...)
	}
	panic("ima: hashSum with unsupported hash " + h.String())
}

// ExtendMode says how the kernel computed the value it extended into a PCR bank.
type ExtendMode uint8

const (
	// ExtendTemplateHash is H_bank(template data): the bank's own hash of the entry, what the kernel
	// does for every bank whose hash algorithm it has a crypto driver for when IMA starts.
	ExtendTemplateHash ExtendMode = iota
	// ExtendPaddedSHA1 is the SHA-1 template hash padded with zeros to the bank size: what the kernel
	// extends into banks whose algorithm it cannot compute at IMA initialisation (e.g. the SHA-384
	// bank of a Debian 6.1 kernel with sha512 built as a module; seen in this package's testdata).
	ExtendPaddedSHA1
)

// String names the mode as the State records it.
func (m ExtendMode) String() string {
	if m == ExtendPaddedSHA1 {
		return "padded-sha1"
	}
	return "template-hash"
}

// ExtendValue returns what the kernel extended into bank for e (ExtendTemplateHash): all 0xff for a
// violation, else H_bank(template data). It is appended to out.
func (e *Entry) ExtendValue(bank crypto.Hash, out []byte) []byte {
	return e.ExtendValueMode(bank, ExtendTemplateHash, out)
}

// ExtendValueMode is ExtendValue for a given extend mode.
func (e *Entry) ExtendValueMode(bank crypto.Hash, mode ExtendMode, out []byte) []byte {
	if e.Violation {
		for range bank.Size() {
			out = append(out, 0xff)
		}
		return out
	}
	if mode == ExtendPaddedSHA1 && bank != crypto.SHA1 {
		start := len(out)
		if e.TemplateHashAlg == crypto.SHA1 {
			out = append(out, e.computed[:crypto.SHA1.Size()]...)
		} else {
			out = hashSum(crypto.SHA1, e.Data, out)
		}
		for len(out)-start < bank.Size() {
			out = append(out, 0)
		}
		return out
	}
	if bank == e.TemplateHashAlg {
		return append(out, e.computed[:bank.Size()]...)
	}
	return hashSum(bank, e.Data, out)
}

// extend sets pcr = H(pcr ‖ value) in place; len(pcr) == len(value) == bank size.
func extend(bank crypto.Hash, pcr, value []byte) {
	var buf [2 * sha512.Size]byte
	n := copy(buf[:], pcr)
	n += copy(buf[n:], value)
	var out [sha512.Size]byte
	copy(pcr, hashSum(bank, buf[:n], out[:0]))
}

// Replay parses a whole ASCII log and returns the PCR 10 value it produces in each bank (all of
// Banks when none are given), starting from zeros, with ExtendTemplateHash. Entries for other PCRs
// are not extended. It stops at the first malformed line.
func Replay(r io.Reader, banks ...crypto.Hash) (map[crypto.Hash][]byte, error) {
	return ReplayMode(r, ExtendTemplateHash, banks...)
}

// ReplayMode is Replay with the given extend mode.
func ReplayMode(r io.Reader, mode ExtendMode, banks ...crypto.Hash) (map[crypto.Hash][]byte, error) {
	if len(banks) == 0 {
		banks = Banks
	}
	out := make(map[crypto.Hash][]byte, len(banks))
	for _, b := range banks {
		if err := CheckBank(b); err != nil {
			return nil, err
		}
		out[b] = make([]byte, b.Size())
	}
	p := NewParser(r, 0)
	var v [sha512.Size]byte
	for {
		e, err := p.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if e.PCR != policy.IMAPCR {
			continue
		}
		for _, b := range banks {
			extend(b, out[b], e.ExtendValueMode(b, mode, v[:0]))
		}
	}
}
