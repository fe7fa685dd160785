package mb

import (
	"crypto"
	_ "crypto/sha1" // registers SHA-1 for crypto.Hash
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// EventType is the type of an event-log entry (TCG PC Client PFP, "Events").
type EventType uint32

// Event types the package knows by name.
const (
	EvPrebootCert             EventType = 0x00000000
	EvPostCode                EventType = 0x00000001
	EvUnused                  EventType = 0x00000002
	EvNoAction                EventType = 0x00000003
	EvSeparator               EventType = 0x00000004
	EvAction                  EventType = 0x00000005
	EvEventTag                EventType = 0x00000006
	EvSCRTMContents           EventType = 0x00000007
	EvSCRTMVersion            EventType = 0x00000008
	EvCPUMicrocode            EventType = 0x00000009
	EvPlatformConfigFlags     EventType = 0x0000000a
	EvTableOfDevices          EventType = 0x0000000b
	EvCompactHash             EventType = 0x0000000c
	EvIPL                     EventType = 0x0000000d
	EvIPLPartitionData        EventType = 0x0000000e
	EvNonhostCode             EventType = 0x0000000f
	EvNonhostConfig           EventType = 0x00000010
	EvNonhostInfo             EventType = 0x00000011
	EvOmitBootDeviceEvents    EventType = 0x00000012
	EvEFIEventBase            EventType = 0x80000000
	EvEFIVariableDriverConfig EventType = 0x80000001
	EvEFIVariableBoot         EventType = 0x80000002
	EvEFIBootServicesApp      EventType = 0x80000003
	EvEFIBootServicesDriver   EventType = 0x80000004
	EvEFIRuntimeServicesDrv   EventType = 0x80000005
	EvEFIGPTEvent             EventType = 0x80000006
	EvEFIAction               EventType = 0x80000007
	EvEFIPlatformFirmwareBlob EventType = 0x80000008
	EvEFIHandoffTables        EventType = 0x80000009
	EvEFIPlatformFirmwareBlb2 EventType = 0x8000000a
	EvEFIHandoffTables2       EventType = 0x8000000b
	EvEFIVariableBoot2        EventType = 0x8000000c
	EvEFIGPTEvent2            EventType = 0x8000000d
	EvEFIHCRTMEvent           EventType = 0x80000010
	EvEFIVariableAuthority    EventType = 0x800000e0
	EvEFISPDMFirmwareBlob     EventType = 0x800000e1
	EvEFISPDMFirmwareConfig   EventType = 0x800000e2
)

// eventTypeNames are the specification names of the known event types. A slice, not a
// map literal: static data, so the package has no init code to run in every keylime process.
var eventTypeNames = []struct {
	t    EventType
	name string
}{
	{EvPrebootCert, "EV_PREBOOT_CERT"},
	{EvPostCode, "EV_POST_CODE"},
	{EvUnused, "EV_UNUSED"},
	{EvNoAction, "EV_NO_ACTION"},
	{EvSeparator, "EV_SEPARATOR"},
	{EvAction, "EV_ACTION"},
	{EvEventTag, "EV_EVENT_TAG"},
	{EvSCRTMContents, "EV_S_CRTM_CONTENTS"},
	{EvSCRTMVersion, "EV_S_CRTM_VERSION"},
	{EvCPUMicrocode, "EV_CPU_MICROCODE"},
	{EvPlatformConfigFlags, "EV_PLATFORM_CONFIG_FLAGS"},
	{EvTableOfDevices, "EV_TABLE_OF_DEVICES"},
	{EvCompactHash, "EV_COMPACT_HASH"},
	{EvIPL, "EV_IPL"},
	{EvIPLPartitionData, "EV_IPL_PARTITION_DATA"},
	{EvNonhostCode, "EV_NONHOST_CODE"},
	{EvNonhostConfig, "EV_NONHOST_CONFIG"},
	{EvNonhostInfo, "EV_NONHOST_INFO"},
	{EvOmitBootDeviceEvents, "EV_OMIT_BOOT_DEVICE_EVENTS"},
	{EvEFIEventBase, "EV_EFI_EVENT_BASE"},
	{EvEFIVariableDriverConfig, "EV_EFI_VARIABLE_DRIVER_CONFIG"},
	{EvEFIVariableBoot, "EV_EFI_VARIABLE_BOOT"},
	{EvEFIBootServicesApp, "EV_EFI_BOOT_SERVICES_APPLICATION"},
	{EvEFIBootServicesDriver, "EV_EFI_BOOT_SERVICES_DRIVER"},
	{EvEFIRuntimeServicesDrv, "EV_EFI_RUNTIME_SERVICES_DRIVER"},
	{EvEFIGPTEvent, "EV_EFI_GPT_EVENT"},
	{EvEFIAction, "EV_EFI_ACTION"},
	{EvEFIPlatformFirmwareBlob, "EV_EFI_PLATFORM_FIRMWARE_BLOB"},
	{EvEFIHandoffTables, "EV_EFI_HANDOFF_TABLES"},
	{EvEFIPlatformFirmwareBlb2, "EV_EFI_PLATFORM_FIRMWARE_BLOB2"},
	{EvEFIHandoffTables2, "EV_EFI_HANDOFF_TABLES2"},
	{EvEFIVariableBoot2, "EV_EFI_VARIABLE_BOOT2"},
	{EvEFIGPTEvent2, "EV_EFI_GPT_EVENT2"},
	{EvEFIHCRTMEvent, "EV_EFI_HCRTM_EVENT"},
	{EvEFIVariableAuthority, "EV_EFI_VARIABLE_AUTHORITY"},
	{EvEFISPDMFirmwareBlob, "EV_EFI_SPDM_FIRMWARE_BLOB"},
	{EvEFISPDMFirmwareConfig, "EV_EFI_SPDM_FIRMWARE_CONFIG"},
}

// eventTypeName returns the specification name of t.
func eventTypeName(t EventType) (string, bool) {
	for _, e := range eventTypeNames {
		if e.t == t {
			return e.name, true
		}
	}
	return "", false
}

// String returns the specification name (as tpm2_eventlog prints it), or the number in hex.
func (t EventType) String() string {
	if s, ok := eventTypeName(t); ok {
		return s
	}
	return fmt.Sprintf("EV_UNKNOWN_0x%08x", uint32(t))
}

// Known reports whether the type is one the TCG specifications define.
func (t EventType) Known() bool { _, ok := eventTypeName(t); return ok }

// banks are the PCR banks the package replays, in the order it reports them.
var banks = []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512}

// BankName is Keylime's name of a PCR bank ("sha256"), or "alg0x…" for one it does not know.
func BankName(b tpm2.TPMAlgID) string {
	switch b {
	case tpm2.TPMAlgSHA1:
		return "sha1"
	case tpm2.TPMAlgSHA256:
		return "sha256"
	case tpm2.TPMAlgSHA384:
		return "sha384"
	case tpm2.TPMAlgSHA512:
		return "sha512"
	case tpm2.TPMAlgSM3256:
		return "sm3_256"
	}
	return fmt.Sprintf("alg0x%04x", uint16(b))
}

// BankByName maps Keylime's bank name ("sha256") to the TPM algorithm.
func BankByName(name string) (tpm2.TPMAlgID, bool) {
	for _, b := range banks {
		if BankName(b) == name {
			return b, true
		}
	}
	return 0, false
}

// bankHash is the Go hash of a bank the package replays.
func bankHash(b tpm2.TPMAlgID) (crypto.Hash, bool) {
	switch b {
	case tpm2.TPMAlgSHA1:
		return crypto.SHA1, true
	case tpm2.TPMAlgSHA256:
		return crypto.SHA256, true
	case tpm2.TPMAlgSHA384:
		return crypto.SHA384, true
	case tpm2.TPMAlgSHA512:
		return crypto.SHA512, true
	}
	return 0, false
}

// hashOf hashes data with the bank's algorithm (the bank must be one of banks).
func hashOf(b tpm2.TPMAlgID, data ...[]byte) []byte {
	h, _ := bankHash(b)
	w := h.New()
	for _, d := range data {
		w.Write(d)
	}
	return w.Sum(nil)
}

// GUID is an EFI GUID as stored in memory: the first three fields little-endian.
type GUID [16]byte

// String formats the GUID canonically, as efivar and tpm2-tools ≥ 5.2 print it
// ("8be4df61-93ca-11d2-aa0d-00e098032b8c").
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(g[0:4]),
		binary.LittleEndian.Uint16(g[4:6]), binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}

// bytesOrder formats the GUID bytes in storage order, as tpm2-tools < 5.2 printed it
// ("61dfe48b-ca93-d211-aa0d-00e098032b8c"); Keylime accepts both spellings.
func (g GUID) bytesOrder() string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", g[0:4], g[4:6], g[6:8], g[8:10], g[10:16])
}

// ParseGUID parses the canonical text form of a GUID.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("%q is not a GUID", s)
	}
	b, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		return g, fmt.Errorf("%q is not a GUID", s)
	}
	// The first three fields are stored little-endian.
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5], g[6], g[7] = b[5], b[4], b[7], b[6]
	copy(g[8:], b[8:])
	return g, nil
}

// sameGUIDText reports whether two GUID texts name the same GUID, allowing either to be written in
// storage byte order (old tpm2-tools) as Keylime does.
func sameGUIDText(a, b string) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	if a == b {
		return true
	}
	g, err := ParseGUID(a)
	if err != nil {
		return false
	}
	return g.bytesOrder() == b
}

// Well-known GUIDs, in storage byte order: literals rather than ParseGUID calls so that they are static
// data and the package has no init code to run in every keylime process (TestWellKnownGUIDs checks them).
var (
	// GUIDGlobalVariable is EFI_GLOBAL_VARIABLE (SecureBoot, PK, KEK, Boot####, BootOrder).
	// Text form: 8be4df61-93ca-11d2-aa0d-00e098032b8c.
	GUIDGlobalVariable = GUID{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}
	// GUIDImageSecurityDatabase is EFI_IMAGE_SECURITY_DATABASE_GUID (db, dbx, dbt, vendor_db).
	// Text form: d719b2cb-3d3a-4596-a3bc-dad00e67656f.
	GUIDImageSecurityDatabase = GUID{0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f}
	// GUIDShimLock is shim's variable GUID (MokList, SbatLevel, Shim, MokListTrusted).
	// Text form: 605dab50-e046-4300-abb6-3dd810dd8b23.
	GUIDShimLock = GUID{0x50, 0xab, 0x5d, 0x60, 0x46, 0xe0, 0x00, 0x43, 0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23}
	// GUIDCertX509 is EFI_CERT_X509_GUID, a signature list of DER certificates.
	// Text form: a5c059a1-94e4-4aa7-87b5-ab155c2bf072.
	GUIDCertX509 = GUID{0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72}
	// GUIDCertSHA256 is EFI_CERT_SHA256_GUID, a signature list of SHA-256 image digests.
	// Text form: c1c41626-504c-4092-aca9-41f936934328.
	GUIDCertSHA256 = GUID{0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28}
)
