package ima

import (
	"bytes"
	"crypto"
	"encoding/binary"
)

// fieldKind is one IMA template field, as the kernel's ima_template.c names them.
type fieldKind uint8

const (
	fieldD       fieldKind = iota + 1 // "d": legacy digest (SHA-1 or MD5), hex
	fieldN                            // "n": legacy name, at most 255 bytes
	fieldDNG                          // "d-ng": "<algo>:<hex>"
	fieldDNGv2                        // "d-ngv2": "<type>:<algo>:<hex>"
	fieldNNG                          // "n-ng": name
	fieldSig                          // "sig": security.ima xattr, hex
	fieldBuf                          // "buf": buffer, hex
	fieldDModSig                      // "d-modsig": digest of the file without its appended signature
	fieldModSig                       // "modsig": appended (PKCS#7) signature, hex
)

// maxFields bounds the fields of a template (custom formats included).
const maxFields = 8

// legacyNameField is the size of the name field of the "ima" template (TCG_EVENT_NAME_LEN_MAX + 1).
const legacyNameField = 256

// template describes a template: its name as logged and its fields in order.
type template struct {
	name   string
	legacy bool // the "ima" template: no length prefixes, name padded to 256 bytes
	fields []fieldKind
}

// builtinTemplates are the kernel's built-in templates (security/integrity/ima/ima_template.c).
var builtinTemplates = []template{
	{name: "ima", legacy: true, fields: []fieldKind{fieldD, fieldN}},
	{name: "ima-ng", fields: []fieldKind{fieldDNG, fieldNNG}},
	{name: "ima-sig", fields: []fieldKind{fieldDNG, fieldNNG, fieldSig}},
	{name: "ima-ngv2", fields: []fieldKind{fieldDNGv2, fieldNNG}},
	{name: "ima-sigv2", fields: []fieldKind{fieldDNGv2, fieldNNG, fieldSig}},
	{name: "ima-buf", fields: []fieldKind{fieldDNG, fieldNNG, fieldBuf}},
	{name: "ima-modsig", fields: []fieldKind{fieldDNG, fieldNNG, fieldSig, fieldDModSig, fieldModSig}},
}

// fieldIDs are the template field names this package can rebuild. A slice, not a map: it is static
// data, so the package has no init code to run in every keylime process.
var fieldIDs = []struct {
	name string
	kind fieldKind
}{
	{"d", fieldD}, {"n", fieldN}, {"d-ng", fieldDNG}, {"d-ngv2", fieldDNGv2}, {"n-ng", fieldNNG},
	{"sig", fieldSig}, {"buf", fieldBuf}, {"d-modsig", fieldDModSig}, {"modsig", fieldModSig},
}

// fieldID returns the kind of the template field named f.
func fieldID(f []byte) (fieldKind, bool) {
	for _, id := range fieldIDs {
		if id.name == string(f) {
			return id.kind, true
		}
	}
	return 0, false
}

// lookupTemplate returns the template a log line names: a built-in name, or a custom format
// ("d-ng|n-ng|sig"), which the kernel logs in place of a name. ok is false for unknown names and
// formats with fields this package cannot rebuild (evmsig, xattrs, uid/gid/mode, …).
func lookupTemplate(name []byte) (*template, bool) {
	for i := range builtinTemplates {
		if string(name) == builtinTemplates[i].name {
			return &builtinTemplates[i], true
		}
	}
	if bytes.IndexByte(name, '|') < 0 {
		return nil, false
	}
	t := &template{name: string(name)}
	for _, f := range bytes.Split(name, []byte("|")) {
		k, ok := fieldID(f)
		if !ok || len(t.fields) == maxFields {
			return nil, false
		}
		t.fields = append(t.fields, k)
	}
	return t, true
}

// digestAlgName returns the algorithm name of a d-ng field as a constant string for the names the
// kernel uses, so the hot path does not allocate.
func digestAlgName(b []byte) string {
	switch string(b) {
	case "sha1":
		return "sha1"
	case "sha256":
		return "sha256"
	case "sha384":
		return "sha384"
	case "sha512":
		return "sha512"
	case "sha224":
		return "sha224"
	case "md5":
		return "md5"
	case "sm3":
		return "sm3"
	case "":
		return ""
	}
	return string(b)
}

// hashByName maps a d-ng algorithm name (the kernel's hash_algo_name) to a Go hash; 0 when Go's
// standard library does not provide it (sm3, streebog, …).
func hashByName(name string) crypto.Hash {
	switch name {
	case "sha1":
		return crypto.SHA1
	case "sha256":
		return crypto.SHA256
	case "sha384":
		return crypto.SHA384
	case "sha512":
		return crypto.SHA512
	case "sha224":
		return crypto.SHA224
	case "md5":
		return crypto.MD5
	}
	return 0
}

// appendDigestField appends a d-ng/d-ngv2/d-modsig field: u32le length ‖ prefix ‖ ':' ‖ NUL ‖ digest,
// where prefix is "<algo>" (d-ng) or "<type>:<algo>" (d-ngv2) and may be empty (old kernels).
func appendDigestField(buf []byte, prefix, digest []byte) []byte {
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(prefix)+2+len(digest)))
	buf = append(buf, prefix...)
	buf = append(buf, ':', 0)
	return append(buf, digest...)
}

// appendNameField appends an n-ng (or non-legacy n) field: u32le (len+1) ‖ name ‖ NUL.
func appendNameField(buf []byte, name []byte) []byte {
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(name)+1))
	buf = append(buf, name...)
	return append(buf, 0)
}

// appendBytesField appends a sig/buf/modsig field (or a non-legacy d field): u32le length ‖ bytes.
func appendBytesField(buf []byte, b []byte) []byte {
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(b)))
	return append(buf, b...)
}

// appendLegacyName appends the "ima" template's name field: name ‖ NUL padding to 256 bytes.
func appendLegacyName(buf []byte, name []byte) []byte {
	buf = append(buf, name...)
	for range legacyNameField - len(name) {
		buf = append(buf, 0)
	}
	return buf
}
