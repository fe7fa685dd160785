package mb

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/google/go-attestation/attest"
)

// TestSecureBootVariables decodes PCR 7 of the go-attestation secure-boot log and checks it against
// go-attestation's own ParseSecurebootState.
func TestSecureBootVariables(t *testing.T) {
	raw := readFile(t, "testdata/go-attestation/sb_cert_eventlog")
	l := mustParse(t, raw)
	el, err := attest.ParseEventLog(raw)
	if err != nil {
		t.Fatal(err)
	}
	sbs, err := attest.ParseSecurebootState(el.Events(attest.HashSHA256))
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]*Variable{}
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR != 7 || e.Type != EvEFIVariableDriverConfig {
			continue
		}
		v, err := e.Variable()
		if err != nil {
			t.Fatal(err)
		}
		vars[v.Name] = v
	}
	on, err := vars["SecureBoot"].Enabled()
	if err != nil || on != sbs.Enabled || !on {
		t.Fatalf("SecureBoot %v %v, go-attestation %v", on, err, sbs.Enabled)
	}
	if vars["SecureBoot"].GUID != GUIDGlobalVariable || vars["db"].GUID != GUIDImageSecurityDatabase {
		t.Errorf("GUIDs %s %s", vars["SecureBoot"].GUID, vars["db"].GUID)
	}
	count := func(name string) (certs, hashes int) {
		lists, err := vars[name].SignatureLists()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, l := range lists {
			for _, s := range l.Signatures {
				switch l.Type {
				case GUIDCertX509:
					if _, err := x509.ParseCertificate(s.Data); err != nil {
						t.Errorf("%s: %v", name, err)
					}
					certs++
				case GUIDCertSHA256:
					hashes++
				}
			}
		}
		return certs, hashes
	}
	for _, tc := range []struct {
		name          string
		certs, hashes int
	}{
		{"PK", len(sbs.PlatformKeys), len(sbs.PlatformKeyHashes)},
		{"KEK", len(sbs.ExchangeKeys), len(sbs.ExchangeKeyHashes)},
		{"db", len(sbs.PermittedKeys), len(sbs.PermittedHashes)},
		{"dbx", len(sbs.ForbiddenKeys), len(sbs.ForbiddenHashes)},
	} {
		if c, h := count(tc.name); c != tc.certs || h != tc.hashes {
			t.Errorf("%s: %d certs %d hashes, go-attestation %d %d", tc.name, c, h, tc.certs, tc.hashes)
		}
	}
	if c, _ := count("db"); c != 4 {
		t.Errorf("db has %d certificates, want 4", c)
	}
}

func TestEventDecoders(t *testing.T) {
	vm := mustParse(t, readFile(t, "testdata/vm-ovmf-ima-ng/binary_bios_measurements"))
	kl := mustParse(t, readFile(t, "testdata/keylime/binary_bios_measurements"))
	sb := mustParse(t, readFile(t, "testdata/keylime/binary_bios_measurements-secureboot"))

	fv := findEvent(t, kl, 4, EvEFIBootServicesApp, "FvVol(")
	il, err := fv.ImageLoad()
	if err != nil || !il.FromFirmwareVolume() || !strings.HasPrefix(il.DevicePathText(), "FvVol(8fc151ae-c96f-4bc9-8c33-107992c7735b)/FvFile(") {
		t.Errorf("firmware volume app: %v %v", il.DevicePathText(), err)
	}
	shim := findEvent(t, sb, 4, EvEFIBootServicesApp, "File(")
	if il, _ := shim.ImageLoad(); il.FromFirmwareVolume() || !strings.Contains(il.DevicePathText(), "HD(") {
		t.Errorf("disk app path %s", il.DevicePathText())
	}

	tag := findEvent(t, vm, 9, EvEventTag, "Linux initrd")
	te, err := tag.Tagged()
	if err != nil || te.ID != TagLinuxInitrd {
		t.Errorf("initrd tag %+v %v", te, err)
	}
	if te, _ := findEvent(t, vm, 9, EvEventTag, "LoadOptions").Tagged(); te.ID != TagLinuxLoadOptions {
		t.Errorf("load options tag %x", te.ID)
	}

	blob := findEvent(t, vm, 0, EvEFIPlatformFirmwareBlob, "")
	fb, err := blob.FirmwareBlob()
	if err != nil || fb.Base != 0x820000 || fb.Length != 0xe0000 {
		t.Errorf("blob %+v %v", fb, err)
	}
	cmd := findEvent(t, sb, 8, EvIPL, "kernel_cmdline")
	if s := cmd.Text(); !strings.HasPrefix(s, "kernel_cmdline: ") || strings.HasSuffix(s, "\x00") {
		t.Errorf("text %q", s)
	}
	mok := findEvent(t, sb, 14, EvIPL, "MokList")
	if mok.Text() != "MokList" {
		t.Errorf("MokList text %q", mok.Text())
	}
	if e := findEvent(t, sb, 7, EvEFIVariableAuthority, " db"); e != nil {
		v, err := e.Variable()
		if err != nil {
			t.Fatal(err)
		}
		if s, err := v.AuthoritySignature(); err != nil {
			t.Error(err)
		} else if _, err := x509.ParseCertificate(s.Data); err != nil {
			t.Errorf("authority %s: %v", v.Name, err)
		}
	}
}

// variableData builds a UEFI_VARIABLE_DATA.
func variableData(g GUID, name string, data []byte) []byte {
	var b bytes.Buffer
	b.Write(g[:])
	u := utf16.Encode([]rune(name))
	_ = binary.Write(&b, binary.LittleEndian, uint64(len(u)))
	_ = binary.Write(&b, binary.LittleEndian, uint64(len(data)))
	_ = binary.Write(&b, binary.LittleEndian, u)
	b.Write(data)
	return b.Bytes()
}

func TestMalformedEventData(t *testing.T) {
	good := variableData(GUIDGlobalVariable, "SecureBoot", []byte{1})
	list := func(listSize, hdr, sig uint32, body int) []byte {
		var b bytes.Buffer
		b.Write(GUIDCertSHA256[:])
		_ = binary.Write(&b, binary.LittleEndian, []uint32{listSize, hdr, sig})
		b.Write(make([]byte, body))
		return b.Bytes()
	}
	for _, tc := range []struct {
		name string
		try  func() error
		want string
	}{
		{"short variable", func() error { _, err := (&Event{Data: good[:20]}).Variable(); return err }, "too short"},
		{"name beyond data", func() error { _, err := (&Event{Data: good[:33]}).Variable(); return err }, "name of 10 characters"},
		{"data beyond event", func() error { _, err := (&Event{Data: good[:len(good)-1]}).Variable(); return err }, "has 1 data bytes, only 0 left"},
		{"boolean of two bytes", func() error {
			_, err := (&Variable{Name: "SecureBoot", Data: []byte{1, 1}}).Enabled()
			return err
		}, "a boolean has 1"},
		{"list size beyond data", func() error {
			_, err := (&Variable{Name: "db", Data: list(100, 0, 48, 48)}).SignatureLists()
			return err
		}, "claims 100 bytes"},
		{"list not whole signatures", func() error {
			_, err := (&Variable{Name: "db", Data: list(28+50, 0, 48, 50)}).SignatureLists()
			return err
		}, "whole number"},
		{"tiny signature size", func() error {
			_, err := (&Variable{Name: "db", Data: list(28+8, 0, 8, 8)}).SignatureLists()
			return err
		}, "smaller than an owner GUID"},
		{"truncated list header", func() error {
			_, err := (&Variable{Name: "db", Data: make([]byte, 10)}).SignatureLists()
			return err
		}, "truncated"},
		{"image load short", func() error { _, err := (&Event{Data: make([]byte, 31)}).ImageLoad(); return err }, "too short"},
		{"device path beyond data", func() error {
			d := make([]byte, 40)
			d[24] = 200
			_, err := (&Event{Data: d}).ImageLoad()
			return err
		}, "device path of 200 bytes"},
		{"tagged short", func() error { _, err := (&Event{Data: make([]byte, 7)}).Tagged(); return err }, "too short"},
		{"tagged beyond data", func() error { _, err := (&Event{Data: []byte{1, 0, 0, 0, 9, 0, 0, 0}}).Tagged(); return err }, "tagged data of 9 bytes"},
		{"blob2 short", func() error {
			_, err := (&Event{Type: EvEFIPlatformFirmwareBlb2, Data: []byte{5, 1, 2}}).FirmwareBlob()
			return err
		}, "BLOB2"},
		{"authority short", func() error {
			_, err := (&Variable{Name: "db", Data: make([]byte, 8)}).AuthoritySignature()
			return err
		}, "too short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.try()
			if !errors.Is(err, ErrBadEventData) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// A well-formed variable round-trips, and a trailing byte (old shim) is counted, not refused.
	v, err := (&Event{Data: append(good, 0)}).Variable()
	if err != nil || v.Name != "SecureBoot" || v.Trailing != 1 || !bytes.Equal(v.Data, []byte{1}) {
		t.Errorf("variable %+v %v", v, err)
	}
}

func TestGUID(t *testing.T) {
	g := GUIDGlobalVariable
	if g.String() != "8be4df61-93ca-11d2-aa0d-00e098032b8c" || g.bytesOrder() != "61dfe48b-ca93-d211-aa0d-00e098032b8c" {
		t.Errorf("%s %s", g, g.bytesOrder())
	}
	if !sameGUIDText("8BE4DF61-93ca-11d2-aa0d-00e098032b8c", "61dfe48b-ca93-d211-aa0d-00e098032b8c") || sameGUIDText(g.String(), GUIDShimLock.String()) || len(ownerReadings(g.bytesOrder())) != 2 || ownerReadings(g.bytesOrder())[1] != g {
		t.Error("sameGUIDText")
	}
	for _, bad := range []string{"", "8be4df61", "8be4df61-93ca-11d2-aa0d-00e098032b8g", "8be4df61x93ca-11d2-aa0d-00e098032b8c"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) accepted", bad)
		}
	}
}

func TestEventTypeNames(t *testing.T) {
	if EvEFIBootServicesApp.String() != "EV_EFI_BOOT_SERVICES_APPLICATION" || EventType(0x1234).String() != "EV_UNKNOWN_0x00001234" || EventType(0x1234).Known() {
		t.Error("names")
	}
}

func TestWellKnownGUIDs(t *testing.T) {
	tests := []struct {
		name string
		got  GUID
		text string
	}{
		{"EFI_GLOBAL_VARIABLE", GUIDGlobalVariable, "8be4df61-93ca-11d2-aa0d-00e098032b8c"},
		{"EFI_IMAGE_SECURITY_DATABASE_GUID", GUIDImageSecurityDatabase, "d719b2cb-3d3a-4596-a3bc-dad00e67656f"},
		{"shim lock", GUIDShimLock, "605dab50-e046-4300-abb6-3dd810dd8b23"},
		{"EFI_CERT_X509_GUID", GUIDCertX509, "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"},
		{"EFI_CERT_SHA256_GUID", GUIDCertSHA256, "c1c41626-504c-4092-aca9-41f936934328"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := ParseGUID(tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if tt.got != want || tt.got.String() != tt.text {
				t.Errorf("literal %x (%s), ParseGUID(%s) = %x", tt.got[:], tt.got, tt.text, want[:])
			}
		})
	}
}
