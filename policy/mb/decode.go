package mb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
)

// ErrBadEventData wraps every failure to decode an event's data.
var ErrBadEventData = errors.New("malformed event data")

// Variable is the UEFI_VARIABLE_DATA of an EFI variable event (EV_EFI_VARIABLE_DRIVER_CONFIG, _BOOT,
// _BOOT2, _AUTHORITY).
type Variable struct {
	// GUID is the vendor GUID (VariableName in tpm2_eventlog's output).
	GUID GUID
	// Name is the variable's name (UnicodeName).
	Name string
	// Data is VariableData, VariableDataLength bytes.
	Data []byte
	// Trailing counts bytes after VariableData (shim < 15.3 logs one extra byte in authority events).
	Trailing int
}

// Variable decodes the data of an EFI variable event.
func (e *Event) Variable() (*Variable, error) {
	d := e.Data
	if len(d) < 32 {
		return nil, fmt.Errorf("%w: %s: %d bytes, too short for UEFI_VARIABLE_DATA", ErrBadEventData, e.Describe(), len(d))
	}
	var v Variable
	copy(v.GUID[:], d[:16])
	nameLen := binary.LittleEndian.Uint64(d[16:24])
	dataLen := binary.LittleEndian.Uint64(d[24:32])
	rest := d[32:]
	if nameLen > uint64(len(rest)/2) {
		return nil, fmt.Errorf("%w: %s: name of %d characters, only %d bytes left", ErrBadEventData, e.Describe(), nameLen, len(rest))
	}
	v.Name = utf16String(rest[:2*nameLen])
	rest = rest[2*nameLen:]
	if dataLen > uint64(len(rest)) {
		return nil, fmt.Errorf("%w: %s: variable %s has %d data bytes, only %d left", ErrBadEventData, e.Describe(), v.Name, dataLen, len(rest))
	}
	v.Data = rest[:dataLen]
	v.Trailing = len(rest) - int(dataLen)
	return &v, nil
}

// utf16String decodes little-endian UTF-16 up to the first NUL.
func utf16String(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// Enabled reads a one-byte boolean variable the way tpm2_eventlog does (SecureBoot, MokListTrusted):
// no data is false, one non-zero byte is true, more than one byte is an error.
func (v *Variable) Enabled() (bool, error) {
	switch len(v.Data) {
	case 0:
		return false, nil
	case 1:
		return v.Data[0] != 0, nil
	}
	return false, fmt.Errorf("%w: variable %s has %d bytes, a boolean has 1", ErrBadEventData, v.Name, len(v.Data))
}

// Signature is one EFI_SIGNATURE_DATA: its owner and data (a DER certificate or a digest).
type Signature struct {
	Owner GUID
	Data  []byte
}

// SignatureList is one EFI_SIGNATURE_LIST.
type SignatureList struct {
	// Type is SignatureType, e.g. GUIDCertX509 or GUIDCertSHA256.
	Type       GUID
	Signatures []Signature
}

// SignatureLists decodes the variable data as a sequence of EFI_SIGNATURE_LISTs (PK, KEK, db, dbx).
func (v *Variable) SignatureLists() ([]SignatureList, error) {
	var out []SignatureList
	d := v.Data
	for off := 0; off < len(d); {
		if len(d)-off < 28 {
			return nil, fmt.Errorf("%w: %s: truncated EFI_SIGNATURE_LIST at offset %d", ErrBadEventData, v.Name, off)
		}
		var l SignatureList
		copy(l.Type[:], d[off:off+16])
		listSize := int64(binary.LittleEndian.Uint32(d[off+16:]))
		hdrSize := int64(binary.LittleEndian.Uint32(d[off+20:]))
		sigSize := int64(binary.LittleEndian.Uint32(d[off+24:]))
		switch {
		case listSize > int64(len(d)-off) || listSize < 28:
			return nil, fmt.Errorf("%w: %s: signature list at offset %d claims %d bytes, %d left", ErrBadEventData, v.Name, off, listSize, len(d)-off)
		case sigSize < 16:
			return nil, fmt.Errorf("%w: %s: signature size %d is smaller than an owner GUID", ErrBadEventData, v.Name, sigSize)
		case 28+hdrSize > listSize || (listSize-28-hdrSize)%sigSize != 0:
			return nil, fmt.Errorf("%w: %s: signature list at offset %d is not a whole number of %d-byte signatures", ErrBadEventData, v.Name, off, sigSize)
		}
		for p := int64(off) + 28 + hdrSize; p < int64(off)+listSize; p += sigSize {
			var s Signature
			copy(s.Owner[:], d[p:p+16])
			s.Data = d[p+16 : p+sigSize]
			l.Signatures = append(l.Signatures, s)
		}
		out = append(out, l)
		off += int(listSize)
	}
	return out, nil
}

// AuthoritySignature decodes the data of an EV_EFI_VARIABLE_AUTHORITY event for db, Shim or vendor_db:
// one EFI_SIGNATURE_DATA (owner GUID, then the certificate), as tpm2_eventlog reads it.
func (v *Variable) AuthoritySignature() (Signature, error) {
	if len(v.Data) < 16 {
		return Signature{}, fmt.Errorf("%w: %s: %d bytes, too short for EFI_SIGNATURE_DATA", ErrBadEventData, v.Name, len(v.Data))
	}
	var s Signature
	copy(s.Owner[:], v.Data[:16])
	s.Data = v.Data[16:]
	return s, nil
}

// ImageLoad is the UEFI_IMAGE_LOAD_EVENT of EV_EFI_BOOT_SERVICES_APPLICATION/_DRIVER and
// EV_EFI_RUNTIME_SERVICES_DRIVER events.
type ImageLoad struct {
	Location, Length, LinkTimeAddress uint64
	// DevicePath is the raw EFI device path.
	DevicePath []byte
}

// ImageLoad decodes the data of an image load event.
func (e *Event) ImageLoad() (*ImageLoad, error) {
	d := e.Data
	if len(d) < 32 {
		return nil, fmt.Errorf("%w: %s: %d bytes, too short for UEFI_IMAGE_LOAD_EVENT", ErrBadEventData, e.Describe(), len(d))
	}
	il := &ImageLoad{
		Location:        binary.LittleEndian.Uint64(d[0:]),
		Length:          binary.LittleEndian.Uint64(d[8:]),
		LinkTimeAddress: binary.LittleEndian.Uint64(d[16:]),
	}
	n := binary.LittleEndian.Uint64(d[24:])
	if n > uint64(len(d)-32) {
		return nil, fmt.Errorf("%w: %s: device path of %d bytes, only %d left", ErrBadEventData, e.Describe(), n, len(d)-32)
	}
	il.DevicePath = d[32 : 32+n]
	return il, nil
}

// FromFirmwareVolume reports whether the image was loaded from a firmware volume: its device path
// starts FvVol(…)/FvFile(…) (the firmware's own applications, such as a boot menu).
func (il *ImageLoad) FromFirmwareVolume() bool {
	nodes := devicePathNodes(il.DevicePath)
	return len(nodes) >= 2 && nodes[0].typ == 4 && nodes[0].sub == 7 && nodes[1].typ == 4 && nodes[1].sub == 6
}

// DevicePathText formats the device path roughly as efivar does ("FvVol(…)/FvFile(…)",
// "HD(1,GPT,…)/File(\EFI\BOOT\BOOTX64.EFI)"); unknown nodes print as Path(type,subtype,hex).
func (il *ImageLoad) DevicePathText() string { return devicePathText(il.DevicePath) }

type dpNode struct {
	typ, sub byte
	data     []byte
}

// devicePathNodes splits a device path into nodes up to the end node or the first malformed one.
func devicePathNodes(dp []byte) []dpNode {
	var out []dpNode
	for len(dp) >= 4 {
		n := int(binary.LittleEndian.Uint16(dp[2:4]))
		if n < 4 || n > len(dp) {
			break
		}
		node := dpNode{typ: dp[0], sub: dp[1], data: dp[4:n]}
		if node.typ == 0x7f && node.sub == 0xff {
			break
		}
		out = append(out, node)
		dp = dp[n:]
	}
	return out
}

func devicePathText(dp []byte) string {
	var parts []string
	for _, n := range devicePathNodes(dp) {
		parts = append(parts, n.text())
	}
	return strings.Join(parts, "/")
}

func (n dpNode) guid() string {
	var g GUID
	copy(g[:], n.data)
	return g.String()
}

func (n dpNode) text() string {
	d := n.data
	switch {
	case n.typ == 4 && n.sub == 7 && len(d) >= 16:
		return "FvVol(" + n.guid() + ")"
	case n.typ == 4 && n.sub == 6 && len(d) >= 16:
		return "FvFile(" + n.guid() + ")"
	case n.typ == 4 && n.sub == 4:
		return "File(" + utf16String(d) + ")"
	case n.typ == 4 && n.sub == 3 && len(d) >= 16:
		return "VenMedia(" + n.guid() + ")"
	case n.typ == 4 && n.sub == 1 && len(d) >= 38:
		part := binary.LittleEndian.Uint32(d[0:])
		start, size := binary.LittleEndian.Uint64(d[4:]), binary.LittleEndian.Uint64(d[12:])
		switch d[37] {
		case 2:
			var g GUID
			copy(g[:], d[20:36])
			return fmt.Sprintf("HD(%d,GPT,%s,0x%x,0x%x)", part, g, start, size)
		case 1:
			return fmt.Sprintf("HD(%d,MBR,0x%x,0x%x,0x%x)", part, binary.LittleEndian.Uint32(d[20:]), start, size)
		}
	case n.typ == 2 && n.sub == 1 && len(d) >= 8:
		hid, uid := binary.LittleEndian.Uint32(d[0:]), binary.LittleEndian.Uint32(d[4:])
		if hid == 0x0a0341d0 || hid == 0x0a0841d0 {
			return fmt.Sprintf("PciRoot(0x%x)", uid)
		}
		return fmt.Sprintf("Acpi(0x%08x,0x%x)", hid, uid)
	case n.typ == 1 && n.sub == 1 && len(d) >= 2:
		return fmt.Sprintf("Pci(0x%x,0x%x)", d[1], d[0])
	}
	return fmt.Sprintf("Path(%d,%d,%x)", n.typ, n.sub, d)
}

// Text returns the event data as a string with one trailing NUL removed, which is what Keylime's
// parser makes of EV_IPL, EV_EFI_ACTION and EV_POST_CODE data.
func (e *Event) Text() string {
	return string(bytes.TrimSuffix(e.Data, []byte{0}))
}

// FirmwareBlob is a UEFI_PLATFORM_FIRMWARE_BLOB(2): a firmware region measured by the CRTM.
type FirmwareBlob struct {
	Description string // BLOB2 only
	Base        uint64
	Length      uint64
}

// FirmwareBlob decodes an EV_EFI_PLATFORM_FIRMWARE_BLOB or _BLOB2 event.
func (e *Event) FirmwareBlob() (*FirmwareBlob, error) {
	d := e.Data
	var fb FirmwareBlob
	if e.Type == EvEFIPlatformFirmwareBlb2 {
		if len(d) < 1 || len(d) < 1+int(d[0])+16 {
			return nil, fmt.Errorf("%w: %s: %d bytes, too short for UEFI_PLATFORM_FIRMWARE_BLOB2", ErrBadEventData, e.Describe(), len(d))
		}
		fb.Description = string(bytes.TrimRight(d[1:1+int(d[0])], "\x00"))
		d = d[1+int(d[0]):]
	}
	if len(d) < 16 {
		return nil, fmt.Errorf("%w: %s: %d bytes, too short for UEFI_PLATFORM_FIRMWARE_BLOB", ErrBadEventData, e.Describe(), len(d))
	}
	fb.Base, fb.Length = binary.LittleEndian.Uint64(d), binary.LittleEndian.Uint64(d[8:])
	return &fb, nil
}

// Tagged event ids the Linux EFI stub logs in PCR 9.
const (
	// TagLinuxInitrd is INITRD_EVENT_TAG_ID: the initrd the stub loaded ("Linux initrd").
	TagLinuxInitrd uint32 = 0x8F3B22EC
	// TagLinuxLoadOptions is LOAD_OPTIONS_EVENT_TAG_ID: the kernel command line (LoadOptions).
	TagLinuxLoadOptions uint32 = 0x8F3B22ED
)

// TaggedEvent is a TCG_PCClientTaggedEvent (EV_EVENT_TAG).
type TaggedEvent struct {
	ID   uint32
	Data []byte
}

// Tagged decodes an EV_EVENT_TAG event.
func (e *Event) Tagged() (*TaggedEvent, error) {
	d := e.Data
	if len(d) < 8 {
		return nil, fmt.Errorf("%w: %s: %d bytes, too short for a tagged event", ErrBadEventData, e.Describe(), len(d))
	}
	n := binary.LittleEndian.Uint32(d[4:])
	if uint64(n) > uint64(len(d)-8) {
		return nil, fmt.Errorf("%w: %s: tagged data of %d bytes, only %d left", ErrBadEventData, e.Describe(), n, len(d)-8)
	}
	return &TaggedEvent{ID: binary.LittleEndian.Uint32(d), Data: d[8 : 8+n]}, nil
}

// Summary is a one-line reading of the event data for messages and notes: the variable name, the
// string, the device path or the blob, or the data in hex (first 64 bytes).
func (e *Event) Summary() string {
	switch e.Type {
	case EvEFIVariableDriverConfig, EvEFIVariableBoot, EvEFIVariableBoot2, EvEFIVariableAuthority:
		if v, err := e.Variable(); err == nil {
			return v.GUID.String() + " " + v.Name
		}
	case EvIPL, EvEFIAction, EvAction:
		return fmt.Sprintf("%q", clip(e.Text(), 120))
	case EvEFIBootServicesApp, EvEFIBootServicesDriver, EvEFIRuntimeServicesDrv:
		if il, err := e.ImageLoad(); err == nil {
			return il.DevicePathText()
		}
	case EvEFIPlatformFirmwareBlob, EvEFIPlatformFirmwareBlb2:
		if fb, err := e.FirmwareBlob(); err == nil {
			return fmt.Sprintf("base 0x%x length 0x%x %s", fb.Base, fb.Length, fb.Description)
		}
	case EvEventTag:
		if te, err := e.Tagged(); err == nil {
			return fmt.Sprintf("tag 0x%08x %q", te.ID, clip(string(bytes.TrimRight(te.Data, "\x00")), 80))
		}
	}
	if len(e.Data) > 64 {
		return fmt.Sprintf("%x…", e.Data[:64])
	}
	return fmt.Sprintf("%x", e.Data)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
