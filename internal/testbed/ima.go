package testbed

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// imaPCR is the PCR the kernel's IMA extends.
const imaPCR = 10

// FakeIMA plays the kernel's IMA for tests: each measurement appends a line to an ASCII log file
// (the format of /sys/kernel/security/ima/ascii_runtime_measurements) and extends PCR 10 of a TPM in
// every given bank with that bank's hash of the entry's template data, as the kernel does (all 0xff
// for violations). Like the kernel it appends the line before extending, so a quote taken in
// between lags the log. It builds the template data itself, independently of policy/ima, so
// replaying its log with that package is a real cross-check. Safe for concurrent use.
type FakeIMA struct {
	// Path is the log file an agent serves.
	Path string

	tpm   PCRExtender
	banks []tpm2.TPMAlgID
	mu    sync.Mutex
	n     int
}

// NewFakeIMA creates (or truncates) the log at path and returns a FakeIMA extending PCR 10 of tpm in
// banks (typically SWTPM.ActiveBanks()). Pass the agent's own *device.TPM, or a second one: tpm/device
// hangs up the swtpm socket between command sequences, so two can take turns.
func NewFakeIMA(tpm PCRExtender, path string, banks []tpm2.TPMAlgID) (*FakeIMA, error) {
	if len(banks) == 0 {
		return nil, errors.New("fake IMA: no PCR banks")
	}
	for _, b := range banks {
		if _, err := b.Hash(); err != nil {
			return nil, fmt.Errorf("fake IMA: bank %v: %w", b, err)
		}
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		return nil, fmt.Errorf("fake IMA: %w", err)
	}
	return &FakeIMA{Path: path, tpm: tpm, banks: append([]tpm2.TPMAlgID(nil), banks...)}, nil
}

// Entries returns the number of entries logged.
func (f *FakeIMA) Entries() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// MeasureBootAggregate logs the first entry, "boot_aggregate", with a SHA-256 digest (ima-ng).
func (f *FakeIMA) MeasureBootAggregate(digest [sha256.Size]byte) (string, error) {
	return f.add("ima-ng", "boot_aggregate", digest[:], nil, false)
}

// Measure logs an ima-ng entry for a file: its path (spaces become '_', as the kernel writes them)
// and the SHA-256 digest of its content. It returns the line.
func (f *FakeIMA) Measure(path string, content []byte) (string, error) {
	d := sha256.Sum256(content)
	return f.add("ima-ng", path, d[:], nil, false)
}

// MeasureSigned logs an ima-sig entry: sig is the security.ima xattr (see SignIMA), or nil for a file
// without one (the line then ends with a space, as the kernel writes it).
func (f *FakeIMA) MeasureSigned(path string, content, sig []byte) (string, error) {
	d := sha256.Sum256(content)
	if sig == nil {
		sig = []byte{}
	}
	return f.add("ima-sig", path, d[:], sig, false)
}

// MeasureBuffer logs an ima-buf entry: a key loaded onto a keyring (name ".ima", buf the DER
// certificate), a kernel command line ("kexec-cmdline"), … The digest is SHA-256 of buf.
func (f *FakeIMA) MeasureBuffer(name string, buf []byte) (string, error) {
	d := sha256.Sum256(buf)
	if buf == nil {
		buf = []byte{}
	}
	return f.add("ima-buf", name, d[:], buf, false)
}

// Violation logs a ToMToU/open-writers violation for path: a zero template hash and digest in the
// log, all 0xff extended into every bank.
func (f *FakeIMA) Violation(path string) (string, error) {
	return f.add("ima-ng", path, make([]byte, sha256.Size), nil, true)
}

// templateData builds an entry's template data: d-ng (u32le length, "sha256", ':', NUL, digest),
// n-ng (u32le length, name, NUL) and, for ima-sig and ima-buf, the extra field (u32le length, bytes).
func templateData(name string, digest, extra []byte) []byte {
	var b bytes.Buffer
	le := func(n int) { _ = binary.Write(&b, binary.LittleEndian, uint32(n)) }
	le(len("sha256") + 2 + len(digest))
	b.WriteString("sha256:")
	b.WriteByte(0)
	b.Write(digest)
	le(len(name) + 1)
	b.WriteString(name)
	b.WriteByte(0)
	if extra != nil {
		le(len(extra))
		b.Write(extra)
	}
	return b.Bytes()
}

func (f *FakeIMA) add(template, name string, digest, extra []byte, violation bool) (string, error) {
	name = strings.ReplaceAll(name, " ", "_")
	data := templateData(name, digest, extra)
	th := sha1.Sum(data)
	if violation {
		th = [sha1.Size]byte{}
	}
	line := fmt.Sprintf("%d %x %s sha256:%x %s", imaPCR, th, template, digest, name)
	if extra != nil {
		line += " " + hex.EncodeToString(extra)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	file, err := os.OpenFile(f.Path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return "", fmt.Errorf("fake IMA: %w", err)
	}
	_, err = file.Write([]byte(line + "\n"))
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("fake IMA: %w", err)
	}
	f.n++
	for _, b := range f.banks {
		h, _ := b.Hash()
		v := bytes.Repeat([]byte{0xff}, h.Size())
		if !violation {
			w := h.New()
			w.Write(data)
			v = w.Sum(nil)
		}
		if err := f.tpm.PCRExtend(imaPCR, b, v); err != nil {
			return "", fmt.Errorf("fake IMA: extend PCR %d: %w", imaPCR, err)
		}
	}
	return line, nil
}

// SignIMA signs a file's content as evmctl does and returns the security.ima xattr value for
// MeasureSigned: signature_v2_hdr (type 3, version 2, SHA-256, keyid v2 of the key, size) followed by
// the RSA PKCS#1 v1.5 or DER ECDSA signature over the SHA-256 digest of content.
func SignIMA(key crypto.Signer, content []byte) ([]byte, error) {
	d := sha256.Sum256(content)
	sig, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign IMA: %w", err)
	}
	var raw []byte
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		raw = x509.MarshalPKCS1PublicKey(k)
	case *ecdsa.PublicKey:
		e, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("sign IMA: %w", err)
		}
		raw = e.Bytes()
	default:
		return nil, fmt.Errorf("sign IMA: unsupported key %T", key.Public())
	}
	id := sha1.Sum(raw)
	out := []byte{3, 2, 4} // EVM_IMA_XATTR_DIGSIG, version 2, HASH_ALGO_SHA256
	out = append(out, id[16:]...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(sig)))
	return append(out, sig...), nil
}
