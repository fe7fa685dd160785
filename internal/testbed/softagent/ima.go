package softagent

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// IMAPCR is the PCR IMA extends.
const IMAPCR = 10

// IMAFile is a file measured into the IMA log: its path and the SHA-256 digest of its content.
type IMAFile struct {
	Path   string
	Digest [sha256.Size]byte
}

// DefaultIMAFiles returns the files an agent measures when its IMAConfig names none: 16 paths
// /usr/bin/softagent-N, N = 0…15, whose digests are SHA-256("softagent file N").
func DefaultIMAFiles() []IMAFile {
	out := make([]IMAFile, 16)
	for i := range out {
		out[i] = IMAFile{
			Path:   "/usr/bin/softagent-" + strconv.Itoa(i),
			Digest: sha256.Sum256([]byte("softagent file " + strconv.Itoa(i))),
		}
	}
	return out
}

// IMAConfig makes an agent keep an IMA log (ASCII, ima-ng template) that grows as it is quoted.
type IMAConfig struct {
	// Files are measured in turn, one per new entry (DefaultIMAFiles when empty).
	Files []IMAFile
	// Initial is the number of entries the log has when the agent starts (and after a reboot).
	Initial int
	// PerQuote is the number of entries added before each quote (integrity and identity).
	PerQuote int
	// Max stops the growth at this many entries (0: no limit). Each entry costs about 130 bytes.
	Max int
}

// imaLog is an ASCII IMA log kept as one text with the offset of every line. The caller serialises
// access.
type imaLog struct {
	text  []byte
	lines []uint32 // start offset of each entry
}

// imaTemplateData appends the ima-ng template data of a file to buf: the d-ng field (u32le length,
// algo, ':', NUL, digest) then the n-ng field (u32le length, path, NUL). Its SHA-1 is the log's template hash, and
// each PCR bank is extended with its own hash of these bytes.
func imaTemplateData(buf []byte, algo, path string, digest []byte) []byte {
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(algo)+2+len(digest)))
	buf = append(buf, algo...)
	buf = append(buf, ':', 0)
	buf = append(buf, digest...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(path)+1))
	buf = append(buf, path...)
	return append(buf, 0)
}

// imaLine returns the ASCII log line of an entry: "10 <sha1 template hash> ima-ng sha256:<digest> <path>".
func imaLine(buf []byte, templateHash, digest []byte, path string) []byte {
	buf = append(buf, "10 "...)
	buf = hex.AppendEncode(buf, templateHash)
	buf = append(buf, " ima-ng sha256:"...)
	buf = hex.AppendEncode(buf, digest)
	buf = append(buf, ' ')
	buf = append(buf, path...)
	return append(buf, '\n')
}

// add appends an entry for path and its SHA-256 digest and measures it into PCR 10 of tpm. Spaces in
// the path become '_', as the kernel writes them.
func (l *imaLog) add(tpm *TPM, path string, digest [sha256.Size]byte) error {
	path = strings.ReplaceAll(path, " ", "_")
	var scratch [256]byte
	data := imaTemplateData(scratch[:0], "sha256", path, digest[:])
	if err := tpm.ExtendData(IMAPCR, data); err != nil {
		return err
	}
	th := sha1.Sum(data)
	l.lines = append(l.lines, uint32(len(l.text)))
	l.text = imaLine(l.text, th[:], digest[:], path)
	return nil
}

func (l *imaLog) len() int { return len(l.lines) }

// from returns the log from entry first on, as the agent serves it: the whole log from entry 0 when first
// is beyond the end, nothing new when first is exactly the end.
func (l *imaLog) from(first int) (string, int) {
	switch {
	case first <= 0:
		return string(l.text), 0
	case first > len(l.lines):
		return string(l.text), 0
	case first == len(l.lines):
		return "", first
	}
	return string(l.text[l.lines[first]:]), first
}

func (l *imaLog) reset() {
	l.text = l.text[:0]
	l.lines = l.lines[:0]
}

// IMAEntry returns the log line and template data of an ima-ng entry, for building expectations.
func IMAEntry(path string, digest [sha256.Size]byte) (line string, templateData []byte) {
	path = strings.ReplaceAll(path, " ", "_")
	data := imaTemplateData(nil, "sha256", path, digest[:])
	th := sha1.Sum(data)
	return string(imaLine(nil, th[:], digest[:], path)), data
}

func (c *IMAConfig) file(i int) IMAFile {
	return c.Files[i%len(c.Files)]
}

func (c *IMAConfig) validate() error {
	if c.Initial < 0 || c.PerQuote < 0 || c.Max < 0 {
		return fmt.Errorf("softagent: IMA config: negative count")
	}
	if len(c.Files) == 0 {
		c.Files = DefaultIMAFiles()
	}
	return nil
}
