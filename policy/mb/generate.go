package mb

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// ErrCannotGenerate wraps the reasons Generate produces no reference state.
var ErrCannotGenerate = errors.New("cannot generate a measured boot reference state")

// Generate builds a reference state for the example policy from a known-good log, as keylime-policy
// create measured-boot does, and returns notes on everything it could not use or had to guess. Like
// Keylime it refuses a log with Secure Boot off unless withoutSecureBoot is set, and ignores
// withoutSecureBoot (with a note) when Secure Boot is on. It finally evaluates the log against the
// result and turns every failure into a note, so the notes say exactly what the reference state
// cannot express. It never panics on odd logs.
func Generate(log *Log, withoutSecureBoot bool) (*RefState, []string, error) {
	if log == nil || len(log.Events) == 0 {
		return nil, nil, fmt.Errorf("%w: the log has no events", ErrCannotGenerate)
	}
	if !slices.Contains(log.Banks, tpm2.TPMAlgSHA256) {
		return nil, nil, fmt.Errorf("%w: the log has no sha256 digests (banks %s) and a reference state pins sha256 digests", ErrCannotGenerate, bankList(log.Banks))
	}
	g := &generator{log: log, ref: &RefState{}}
	g.notes = append(g.notes, log.Notes...)
	sb, found := g.secureBoot()
	switch {
	case !found:
		g.notef("the log has no SecureBoot variable in PCR 7: Secure Boot is taken as off")
	case sb && withoutSecureBoot:
		g.notef("--without-secureboot was given but the log has Secure Boot on: the flag is ignored")
	}
	if !sb && !withoutSecureBoot {
		return nil, g.notes, fmt.Errorf("%w: the log has Secure Boot off; ask for a reference state without Secure Boot (-i/--without-secureboot)", ErrCannotGenerate)
	}
	g.ref.HasSecureBoot = sb
	g.firmware()
	g.keys()
	g.mok()
	g.kernel()
	for _, f := range Evaluate(PolicyExample, g.ref, log) {
		if r, ok := f.Context["reason"].(string); ok {
			g.notef("the reference state does not pass this log: %s", r)
		}
	}
	return g.ref, g.notes, nil
}

type generator struct {
	log   *Log
	ref   *RefState
	notes []string
}

func (g *generator) notef(format string, args ...any) {
	g.notes = append(g.notes, fmt.Sprintf(format, args...))
}

func bankList(bs []tpm2.TPMAlgID) string {
	var names []string
	for _, b := range bs {
		names = append(names, BankName(b))
	}
	return strings.Join(names, ",")
}

// measured calls fn for every measured event of pcr.
func (g *generator) measured(pcr int, fn func(e *Event)) {
	for i := range g.log.Events {
		if e := &g.log.Events[i]; e.Measured() && e.PCR == pcr {
			fn(e)
		}
	}
}

// sha256Digest is the event's sha256 digest as a reference-state Digests, noting when it is missing.
func (g *generator) sha256Digest(e *Event) (Digests, bool) {
	h := e.Digest(tpm2.TPMAlgSHA256)
	if h == nil {
		g.notef("%s has no sha256 digest and is left out", e.Describe())
		return nil, false
	}
	return Digests{"sha256": hex.EncodeToString(h)}, true
}

func (g *generator) secureBoot() (on, found bool) {
	g.measured(7, func(e *Event) {
		if found || e.Type != EvEFIVariableDriverConfig {
			return
		}
		v, err := e.Variable()
		if err != nil || v.GUID != GUIDGlobalVariable || v.Name != "SecureBoot" {
			return
		}
		b, err := v.Enabled()
		if err != nil {
			g.notef("%s: %v; Secure Boot is taken as off", e.Describe(), err)
		}
		on, found = b, true
	})
	return on, found
}

func (g *generator) firmware() {
	var f FirmwareRef
	f.PlatformFirmware = []Digests{}
	g.measured(0, func(e *Event) {
		switch e.Type {
		case EvSeparator:
		case EvSCRTMVersion:
			if f.SCRTM != nil {
				g.notef("%s is a second S-CRTM version; only the first is kept", e.Describe())
				return
			}
			f.SCRTM, _ = g.sha256Digest(e)
		default:
			if e.Type != EvEFIPlatformFirmwareBlob && e.Type != EvEFIPlatformFirmwareBlb2 {
				g.notef("%s is kept as a platform_firmware measurement (Keylime's example policy only knows firmware blobs there)", e.Describe())
			}
			if d, ok := g.sha256Digest(e); ok {
				f.PlatformFirmware = append(f.PlatformFirmware, d)
			}
		}
	})
	g.measured(4, func(e *Event) {
		if e.Type != EvEFIBootServicesApp {
			return
		}
		il, err := e.ImageLoad()
		if err != nil || !il.FromFirmwareVolume() {
			return
		}
		d, ok := g.sha256Digest(e)
		if ok && !slices.ContainsFunc(f.FirmwareApps, func(x Digests) bool { return x["sha256"] == d["sha256"] }) {
			f.FirmwareApps = append(f.FirmwareApps, d)
			g.notef("%s is an application from the firmware volume (%s); it goes to firmware_apps, which Keylime does not know", e.Describe(), il.DevicePathText())
		}
	})
	g.ref.SCRTMAndBIOS = []FirmwareRef{f}
}

func sigRefs(sigs []Signature) []SigRef {
	out := []SigRef{}
	for _, s := range sigs {
		out = append(out, SigRef{Owner: s.Owner.String(), Data: hex.EncodeToString(s.Data)})
	}
	return out
}

func (g *generator) keys() {
	r := g.ref
	r.PK, r.KEK, r.DB, r.DBX, r.VendorDB = []SigRef{}, []SigRef{}, []SigRef{}, []SigRef{}, []SigRef{}
	addVendor := func(ss []SigRef) {
		for _, s := range ss {
			if !slices.Contains(r.VendorDB, s) {
				r.VendorDB = append(r.VendorDB, s)
			}
		}
	}
	g.measured(7, func(e *Event) {
		if e.Type != EvEFIVariableDriverConfig && e.Type != EvEFIVariableAuthority {
			return
		}
		v, err := e.Variable()
		if err != nil {
			g.notef("%v", err)
			return
		}
		if e.Type == EvEFIVariableAuthority {
			if v.GUID == GUIDImageSecurityDatabase && v.Name == "vendor_db" {
				s, err := v.AuthoritySignature()
				if err != nil {
					g.notef("%s: %v", e.Describe(), err)
					return
				}
				addVendor(sigRefs([]Signature{s}))
			}
			return
		}
		var dst *[]SigRef
		switch {
		case v.GUID == GUIDGlobalVariable && v.Name == "PK":
			dst = &r.PK
		case v.GUID == GUIDGlobalVariable && v.Name == "KEK":
			dst = &r.KEK
		case v.GUID == GUIDImageSecurityDatabase && v.Name == "db":
			dst = &r.DB
		case v.GUID == GUIDImageSecurityDatabase && v.Name == "dbx":
			dst = &r.DBX
		case v.GUID == GUIDImageSecurityDatabase && v.Name == "vendor_db":
		case v.GUID == GUIDGlobalVariable && v.Name == "SecureBoot":
			return
		default:
			g.notef("%s: variable %s (%s) cannot be expressed in a reference state", e.Describe(), v.Name, v.GUID)
			return
		}
		lists, err := v.SignatureLists()
		if err != nil {
			g.notef("%s: %v", e.Describe(), err)
			return
		}
		var sigs []Signature
		for _, l := range lists {
			sigs = append(sigs, l.Signatures...)
		}
		if dst == nil {
			addVendor(sigRefs(sigs))
			return
		}
		*dst = sigRefs(sigs) // the last measurement wins, as in keylime-policy
	})
}

func (g *generator) mok() {
	g.ref.MokDig, g.ref.MokXDig = []Digests{}, []Digests{}
	g.measured(14, func(e *Event) {
		if e.Type != EvIPL {
			return
		}
		switch e.Text() {
		case "MokList":
			if d, ok := g.sha256Digest(e); ok {
				g.ref.MokDig = append(g.ref.MokDig, d)
			}
		case "MokListX":
			if d, ok := g.sha256Digest(e); ok {
				g.ref.MokXDig = append(g.ref.MokXDig, d)
			}
		}
	})
}

func (g *generator) kernel() {
	var k KernelRef
	var apps []*Event
	g.measured(4, func(e *Event) {
		if e.Type != EvEFIBootServicesApp {
			return
		}
		if il, err := e.ImageLoad(); err == nil && il.FromFirmwareVolume() {
			return
		}
		apps = append(apps, e)
	})
	digest := func(e *Event) string { return hex.EncodeToString(e.Digest(tpm2.TPMAlgSHA256)) }
	if len(apps) == 4 && digest(apps[3]) == digest(apps[2]) {
		apps = apps[:3] // the kernel measured twice, which the policy allows
	}
	switch len(apps) {
	case 0:
		g.notef("the log has no boot application in PCR 4; the kernel entry has no shim, grub or kernel digest")
	case 1:
		k.KernelAuthcode = digest(apps[0])
		g.notef("one boot application in PCR 4 (%s) is taken as the kernel (kernel_authcode_sha256)", apps[0].Summary())
	case 2:
		k.ShimAuthcode, k.GrubAuthcode = digest(apps[0]), digest(apps[1])
		if g.ref.HasSecureBoot {
			g.notef("two boot applications in PCR 4 with Secure Boot on are taken as shim and grub; Keylime expects three")
		}
	default:
		k.ShimAuthcode, k.GrubAuthcode, k.KernelAuthcode = digest(apps[0]), digest(apps[1]), digest(apps[2])
		for _, e := range apps[3:] {
			g.notef("%s is a boot application beyond shim, grub and kernel (%s, sha256 %s) that a reference state cannot express", e.Describe(), e.Summary(), digest(e))
		}
	}
	for _, a := range apps {
		if a.Digest(tpm2.TPMAlgSHA256) == nil {
			g.notef("%s has no sha256 digest", a.Describe())
		}
	}
	var initrd, vmlinuz, cmdline, loadOpts *Event
	g.measured(9, func(e *Event) {
		switch e.Type {
		case EvIPL:
			s := e.Text()
			if initrd == nil && (strings.Contains(s, "initrd") || strings.Contains(s, "initramfs")) {
				initrd = e
			} else if vmlinuz == nil && strings.Contains(s, "vmlinuz") {
				vmlinuz = e
			}
		case EvEventTag:
			t, err := e.Tagged()
			if err != nil {
				return
			}
			if t.ID == TagLinuxInitrd && initrd == nil {
				initrd = e
			} else if t.ID == TagLinuxLoadOptions && loadOpts == nil {
				loadOpts = e
			}
		}
	})
	g.measured(8, func(e *Event) {
		if e.Type == EvIPL && cmdline == nil && strings.HasPrefix(e.Text(), cmdlinePrefix) {
			cmdline = e
		}
	})
	if initrd != nil {
		k.InitrdPlain = digest(initrd)
	}
	if vmlinuz != nil && !g.ref.HasSecureBoot {
		k.VmlinuzPlain = digest(vmlinuz)
	}
	if loadOpts != nil {
		k.LoadOptionsPlain = digest(loadOpts)
		g.notef("%s: the Linux EFI stub's load options go to load_options_plain_sha256, which Keylime does not know", loadOpts.Describe())
	}
	if cmdline != nil {
		pat := PythonEscape(cmdline.Text()[len(cmdlinePrefix):])
		re, err := compileCmdline(pat)
		if err != nil {
			g.notef("%s: %v", cmdline.Describe(), err)
		} else {
			k.Cmdline, k.cmdline = &pat, re
		}
	}
	g.ref.Kernels = []KernelRef{k}
}
