package ima

import (
	"bufio"
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
)

// MaxLineLength bounds one line of an ASCII log read through a Parser (ima-buf lines carrying
// certificates or device-mapper tables are the long ones); a longer line is a ParseError.
const MaxLineLength = 4 << 20

// ErrMalformedEntry is wrapped by every ParseError.
var ErrMalformedEntry = errors.New("malformed IMA log entry")

// ParseError says which line of a log could not be parsed and why. Parsing can go on with the
// next line.
type ParseError struct {
	// Entry is the entry number (the first entry of the text has the number the parser was given).
	Entry int
	// Line is the 1-based line number in the text.
	Line int
	// Reason says what is wrong.
	Reason string
	// Text is the start of the line (at most 200 bytes).
	Text string
}

// Error names the entry and line and says what is wrong.
func (e *ParseError) Error() string {
	return fmt.Sprintf("IMA log entry %d (line %d): %s", e.Entry, e.Line, e.Reason)
}

// Unwrap returns ErrMalformedEntry.
func (e *ParseError) Unwrap() error { return ErrMalformedEntry }

// Kind is how an entry is judged, from the fields its template has.
type Kind uint8

const (
	// KindFile is a file digest without a signature field (ima, ima-ng, ima-ngv2).
	KindFile Kind = iota + 1
	// KindSignedFile is a file digest with a signature field (ima-sig, ima-sigv2, ima-modsig); the
	// field may be empty.
	KindSignedFile
	// KindBuffer is a measured buffer (ima-buf): keys, kernel command lines, device-mapper tables, …
	KindBuffer
)

// Entry is one parsed measurement. A Parser reuses one Entry: the Entry and every byte slice in it
// are valid until the next call of Next.
type Entry struct {
	// Index is the entry number in the agent's log.
	Index int
	// Line is the 1-based line number in the text parsed.
	Line int
	// PCR is the PCR the entry was extended into (10 unless the IMA policy says otherwise).
	PCR int
	// TemplateName is the template as logged: "ima-ng", … or a custom field list "d-ng|n-ng|sig".
	TemplateName string
	// Kind says which validation rules apply.
	Kind Kind
	// TemplateHash is the logged template hash; its length gives TemplateHashAlg.
	TemplateHash    []byte
	TemplateHashAlg crypto.Hash
	// Violation is set when the logged template hash is all zeros (or all 0xff): a ToMToU or
	// open-writers violation, which the kernel extends as all 0xff.
	Violation bool
	// TemplateHashOK is set when TemplateHash equals the hash of Data (never for violations).
	TemplateHashOK bool
	// DigestAlg is the digest's algorithm name ("sha256"), inferred from the length (sha1 or md5)
	// when the log gives none.
	DigestAlg string
	// Digest is the file (or buffer) digest.
	Digest []byte
	// Name is the path, or the buffer's name for ima-buf entries (a keyring name, "kexec-cmdline", …).
	Name []byte
	// Sig is the signature field (the security.ima xattr: signature_v2_hdr ‖ signature); empty when
	// the file has none.
	Sig []byte
	// Buf is the ima-buf buffer.
	Buf []byte
	// ModSigAlg, ModSigDigest and ModSig are ima-modsig's d-modsig and modsig fields (empty without
	// an appended signature).
	ModSigAlg    string
	ModSigDigest []byte
	ModSig       []byte
	// Data is the template data the kernel hashed, rebuilt from the fields.
	Data []byte

	tmpl      *template
	computed  [64]byte
	bareAlgo  bool   // the d-ng field had no "<algo>:" prefix
	dPrefix   []byte // the d-ng/d-ngv2 field's prefix, as logged
	modPrefix []byte // the d-modsig field's prefix
}

// Path returns Name as a string (it allocates).
func (e *Entry) Path() string { return string(e.Name) }

// ComputedTemplateHash returns the hash of Data with TemplateHashAlg (nil for violations).
func (e *Entry) ComputedTemplateHash() []byte {
	if e.Violation {
		return nil
	}
	return e.computed[:e.TemplateHashAlg.Size()]
}

// Parser reads an ASCII IMA log (ascii_runtime_measurements) one entry at a time, linearly and
// without copying the log: lines are sliced from the input ([]byte) or from a read buffer
// (io.Reader), and the fields are decoded into buffers the parser reuses.
type Parser struct {
	data  []byte        // bytes mode: the rest of the input
	br    *bufio.Reader // reader mode
	long  []byte        // reader mode: a line longer than the read buffer
	line  int
	next  int
	e     Entry
	arena []byte // decoded hex fields
	dbuf  []byte // template data
	done  bool
}

// NewParser returns a parser reading r; firstEntry is the number of the log's first entry (the
// agent's ima_measurement_list_entry).
func NewParser(r io.Reader, firstEntry int) *Parser {
	return &Parser{br: bufio.NewReaderSize(r, 64<<10), next: firstEntry}
}

// NewBytesParser returns a parser over text; firstEntry is the number of its first entry.
func NewBytesParser(text []byte, firstEntry int) *Parser {
	return &Parser{data: text, next: firstEntry}
}

// ParseLine parses a single log line (without its newline). The Entry is freshly allocated.
func ParseLine(line []byte) (*Entry, error) {
	p := NewBytesParser(line, 0)
	e, err := p.Next()
	if err == io.EOF {
		return nil, &ParseError{Line: 1, Reason: "empty line"}
	}
	return e, err
}

// Entries returns the number of entries (lines that were not blank) read so far.
func (p *Parser) Entries() int { return p.next }

// Next returns the next entry, skipping blank lines, and io.EOF at the end of the log. A
// *ParseError reports one malformed line; Next can be called again to go on. Any other error comes
// from the reader and ends parsing.
func (p *Parser) Next() (*Entry, error) {
	for {
		line, err := p.nextLine()
		if err != nil {
			return nil, err
		}
		p.line++
		if line == nil || len(line) > MaxLineLength {
			idx := p.next
			p.next++
			return nil, &ParseError{Entry: idx, Line: p.line, Reason: fmt.Sprintf("line longer than %d bytes", MaxLineLength)}
		}
		if len(line) == 0 {
			continue
		}
		idx := p.next
		p.next++
		if reason := p.parse(line, idx); reason != "" {
			return nil, &ParseError{Entry: idx, Line: p.line, Reason: reason, Text: lineStart(line)}
		}
		return &p.e, nil
	}
}

func lineStart(line []byte) string {
	if len(line) > 200 {
		line = line[:200]
	}
	return string(line)
}

// nextLine returns the next line without its '\n', and io.EOF at the end. In reader mode a line
// longer than MaxLineLength is consumed and returned as nil with a nil error (Next reports it).
func (p *Parser) nextLine() ([]byte, error) {
	if p.done {
		return nil, io.EOF
	}
	if p.br == nil {
		if len(p.data) == 0 {
			p.done = true
			return nil, io.EOF
		}
		var line []byte
		if i := bytes.IndexByte(p.data, '\n'); i >= 0 {
			line, p.data = p.data[:i], p.data[i+1:]
		} else {
			line, p.data = p.data, nil
		}
		return line, nil
	}
	line, err := p.br.ReadSlice('\n')
	tooLong := false
	if err == bufio.ErrBufferFull {
		p.long = append(p.long[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = p.br.ReadSlice('\n')
			if len(p.long) <= MaxLineLength {
				p.long = append(p.long, line...)
			}
		}
		line = p.long
		tooLong = len(p.long) > MaxLineLength
	}
	switch {
	case err == io.EOF:
		p.done = true
		if len(line) == 0 {
			return nil, io.EOF
		}
	case err != nil:
		p.done = true
		return nil, fmt.Errorf("read IMA log: %w", err)
	}
	if tooLong {
		return nil, nil
	}
	if n := len(line); line[n-1] == '\n' {
		line = line[:n-1]
	}
	return line, nil
}

// cut splits b at the first space.
func cut(b []byte) (before, after []byte, found bool) {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:], true
	}
	return b, nil, false
}

// decodeHex decodes tok into the arena (which has room for it) and returns the decoded bytes.
func (p *Parser) decodeHex(tok []byte) ([]byte, bool) {
	if len(tok)%2 != 0 {
		return nil, false
	}
	start := len(p.arena)
	p.arena = p.arena[:start+len(tok)/2]
	out := p.arena[start:]
	tok = tok[:2*len(out)]
	for i := range out {
		hi, lo := hexValue[tok[2*i]]-1, hexValue[tok[2*i+1]]-1
		if hi|lo > 0x0f {
			return nil, false
		}
		out[i] = hi<<4 | lo
	}
	return out, true
}

// hexValue maps a hex digit (either case) to its value plus one, anything else to 0, so that
// hexValue[c]-1 is the digit's value or 0xff. A keyed array literal is static data: no init code.
var hexValue = [256]byte{
	'0': 1, '1': 2, '2': 3, '3': 4, '4': 5, '5': 6, '6': 7, '7': 8, '8': 9, '9': 10,
	'a': 11, 'b': 12, 'c': 13, 'd': 14, 'e': 15, 'f': 16,
	'A': 11, 'B': 12, 'C': 13, 'D': 14, 'E': 15, 'F': 16,
}

func parsePCR(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// parse fills p.e from line; it returns a non-empty reason when the line is malformed.
func (p *Parser) parse(line []byte, idx int) string {
	e := &p.e
	*e = Entry{Index: idx, Line: p.line}
	if need := len(line)/2 + 8; cap(p.arena) < need {
		p.arena = make([]byte, 0, need+need/4)
	}
	p.arena = p.arena[:0]

	rest := line
	for len(rest) > 0 && rest[0] == ' ' { // the kernel prints the PCR as "%2d "
		rest = rest[1:]
	}
	pcrTok, rest, ok := cut(rest)
	if !ok {
		return "expected '<pcr> <template hash> <template> <fields>'"
	}
	if e.PCR, ok = parsePCR(pcrTok); !ok {
		return fmt.Sprintf("PCR %q is not a number", pcrTok)
	}
	thTok, rest, ok := cut(rest)
	if !ok {
		return "no template name after the template hash"
	}
	switch len(thTok) {
	case 2 * crypto.SHA1.Size():
		e.TemplateHashAlg = crypto.SHA1
	case 2 * crypto.SHA256.Size():
		e.TemplateHashAlg = crypto.SHA256
	case 2 * crypto.SHA384.Size():
		e.TemplateHashAlg = crypto.SHA384
	case 2 * crypto.SHA512.Size():
		e.TemplateHashAlg = crypto.SHA512
	default:
		return fmt.Sprintf("template hash of %d hex digits (want 40, 64, 96 or 128)", len(thTok))
	}
	if e.TemplateHash, ok = p.decodeHex(thTok); !ok {
		return "template hash is not hex"
	}
	nameTok, rest, ok := cut(rest)
	t, known := lookupTemplate(nameTok)
	if !known {
		return fmt.Sprintf("unsupported template %q", nameTok)
	}
	if !ok {
		return fmt.Sprintf("template %s without fields", t.name)
	}
	e.tmpl = t
	e.TemplateName = t.name
	e.Kind = KindFile
	for i, f := range t.fields {
		var tok []byte
		if i == len(t.fields)-1 {
			tok = rest // the last field takes the rest of the line (spaces included, as Keylime does)
		} else if tok, rest, ok = cut(rest); !ok {
			return fmt.Sprintf("template %s: %d fields, want %d", t.name, i+1, len(t.fields))
		}
		if reason := p.parseField(f, tok, t.legacy); reason != "" {
			return fmt.Sprintf("template %s field %d: %s", t.name, i+1, reason)
		}
	}
	e.Violation = allBytes(e.TemplateHash, 0) || allBytes(e.TemplateHash, 0xff)
	p.build(false)
	if !e.Violation {
		e.TemplateHashOK = bytes.Equal(hashSum(e.TemplateHashAlg, e.Data, e.computed[:0]), e.TemplateHash)
		if !e.TemplateHashOK && e.bareAlgo {
			// A digest without "<algo>:" is ":\0<digest>" for the kernel; Keylime rebuilds it as
			// "sha1:\0<digest>". Accept whichever the logged hash confirms.
			p.build(true)
			if e.TemplateHashOK = bytes.Equal(hashSum(e.TemplateHashAlg, e.Data, e.computed[:0]), e.TemplateHash); !e.TemplateHashOK {
				p.build(false)
				hashSum(e.TemplateHashAlg, e.Data, e.computed[:0])
			}
		}
	}
	return ""
}

func allBytes(b []byte, v byte) bool {
	for _, c := range b {
		if c != v {
			return false
		}
	}
	return true
}

// splitDigest splits "<prefix>:<hex>" at the last colon; bare is set when there is no colon.
func splitDigest(tok []byte) (prefix, hexDigits []byte, bare bool) {
	if i := bytes.LastIndexByte(tok, ':'); i >= 0 {
		return tok[:i], tok[i+1:], false
	}
	return nil, tok, true
}

// algByLength names the algorithm of a digest logged without one (Keylime: sha1 or md5).
func algByLength(d []byte) string {
	switch len(d) {
	case 20:
		return "sha1"
	case 16:
		return "md5"
	}
	return ""
}

func (p *Parser) parseField(f fieldKind, tok []byte, legacy bool) string {
	e := &p.e
	var ok bool
	switch f {
	case fieldD:
		prefix, h, bare := splitDigest(tok)
		if e.Digest, ok = p.decodeHex(h); !ok {
			return "digest is not hex"
		}
		e.DigestAlg = digestAlgName(prefix)
		if bare {
			if e.DigestAlg = algByLength(e.Digest); e.DigestAlg == "" {
				return fmt.Sprintf("%d-byte digest without an algorithm (want SHA-1 or MD5)", len(e.Digest))
			}
		}
	case fieldN, fieldNNG:
		if f == fieldN && len(tok) >= legacyNameField {
			return fmt.Sprintf("name of %d bytes in a legacy name field (at most %d)", len(tok), legacyNameField-1)
		}
		e.Name = tok
	case fieldDNG, fieldDNGv2:
		prefix, h, bare := splitDigest(tok)
		if e.Digest, ok = p.decodeHex(h); !ok {
			return "digest is not hex"
		}
		e.dPrefix, e.bareAlgo = prefix, bare
		switch {
		case bare:
			if e.DigestAlg = algByLength(e.Digest); e.DigestAlg == "" {
				return fmt.Sprintf("%d-byte digest without an algorithm (want SHA-1 or MD5)", len(e.Digest))
			}
		case f == fieldDNG:
			if bytes.IndexByte(prefix, ':') >= 0 {
				return "digest has more than one ':'"
			}
			e.DigestAlg = digestAlgName(prefix)
		default: // d-ngv2: "<type>:<algo>"
			typ, alg, found := bytes.Cut(prefix, []byte(":"))
			if !found || len(typ) == 0 || bytes.IndexByte(alg, ':') >= 0 {
				return "d-ngv2 digest is not '<type>:<algo>:<hex>'"
			}
			e.DigestAlg = digestAlgName(alg)
		}
	case fieldDModSig:
		if len(tok) == 0 {
			return ""
		}
		prefix, h, bare := splitDigest(tok)
		if bare {
			return "d-modsig digest without an algorithm"
		}
		if e.ModSigDigest, ok = p.decodeHex(h); !ok {
			return "d-modsig digest is not hex"
		}
		e.modPrefix = prefix
		e.ModSigAlg = digestAlgName(prefix)
	case fieldSig:
		if e.Sig, ok = p.decodeHex(tok); !ok {
			return "signature is not hex"
		}
		if e.Kind == KindFile {
			e.Kind = KindSignedFile
		}
	case fieldBuf:
		if e.Buf, ok = p.decodeHex(tok); !ok {
			return "buffer is not hex"
		}
		e.Kind = KindBuffer
	case fieldModSig:
		if e.ModSig, ok = p.decodeHex(tok); !ok {
			return "modsig is not hex"
		}
	}
	return ""
}

// build rebuilds the template data from the parsed fields. keylimeForm writes a bare digest's
// algorithm as Keylime does ("sha1:\0…") instead of the kernel's ":\0…".
func (p *Parser) build(keylimeForm bool) {
	e := &p.e
	d := p.dbuf[:0]
	for _, f := range e.tmpl.fields {
		switch f {
		case fieldD:
			if e.tmpl.legacy {
				d = append(d, e.Digest...)
			} else {
				d = appendBytesField(d, e.Digest)
			}
		case fieldN:
			if e.tmpl.legacy {
				d = appendLegacyName(d, e.Name)
			} else {
				d = appendNameField(d, e.Name)
			}
		case fieldNNG:
			d = appendNameField(d, e.Name)
		case fieldDNG, fieldDNGv2:
			prefix := e.dPrefix
			if e.bareAlgo && keylimeForm {
				prefix = []byte(e.DigestAlg)
			}
			d = appendDigestField(d, prefix, e.Digest)
		case fieldDModSig:
			if e.ModSigDigest == nil && e.modPrefix == nil {
				d = appendBytesField(d, nil)
			} else {
				d = appendDigestField(d, e.modPrefix, e.ModSigDigest)
			}
		case fieldSig:
			d = appendBytesField(d, e.Sig)
		case fieldBuf:
			d = appendBytesField(d, e.Buf)
		case fieldModSig:
			d = appendBytesField(d, e.ModSig)
		}
	}
	e.Data = d
	p.dbuf = d
}
