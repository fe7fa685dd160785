package mb

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/keylime-go/keylime/policy"
)

// Measured-boot policy names, as Keylime's [verifier] measured_boot_policy_name takes them.
const (
	PolicyAcceptAll = "accept-all"
	PolicyRejectAll = "reject-all"
	PolicyExample   = "example"
)

// examplePCRs are the PCRs the example policy judges (Keylime's Example.relevant_pcr_indices).
var examplePCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}

// RelevantPCRs returns the PCRs a policy judges and needs quoted; nil for accept-all and reject-all,
// which (as in Keylime) put no restriction on the measured-boot PCRs compared with the log.
func RelevantPCRs(policyName string) ([]int, error) {
	switch policyName {
	case PolicyAcceptAll, PolicyRejectAll:
		return nil, nil
	case PolicyExample:
		return slices.Clone(examplePCRs), nil
	}
	return nil, fmt.Errorf("unknown measured boot policy %q (want %s, %s or %s)", policyName, PolicyAcceptAll, PolicyRejectAll, PolicyExample)
}

// policyFailure is the failure of a measured-boot policy, Keylime's measured_boot.policy_<name>.
func policyFailure(name, reason string, ctx map[string]any) policy.Failure {
	c := map[string]any{"message": "Boot attestation failed", "policy": name, "reason": reason}
	for k, v := range ctx {
		c[k] = v
	}
	return policy.Failure{EventID: "measured_boot.policy_" + name, Context: c, Recoverable: true}
}

// Evaluate judges a parsed log against a reference state under the named policy and returns every
// failing rule (nil when the boot is accepted). An Empty reference state accepts everything. Each
// failure is measured_boot.policy_<name>; its context names the event (number, PCR, type), the rule
// and the reason.
func Evaluate(policyName string, ref *RefState, log *Log) []policy.Failure {
	if ref.Empty() {
		return nil
	}
	switch policyName {
	case PolicyAcceptAll:
		return nil
	case PolicyRejectAll:
		return []policy.Failure{policyFailure(policyName, "reject all", nil)}
	case PolicyExample:
		ev := &exampleEval{ref: ref, log: log, once: map[string]*Event{}}
		ev.run()
		return ev.fails
	}
	return []policy.Failure{policyFailure(policyName, fmt.Sprintf("there is no measured boot policy named %q", policyName), nil)}
}

// exampleEval is one evaluation of the example policy.
type exampleEval struct {
	ref   *RefState
	log   *Log
	fails []policy.Failure
	once  map[string]*Event // rule → first event that used it

	scrtms, firmware, fwApps, apps []*Event
	initrds, vmlinuzs, cmdlines    []*Event
	loadOptions                    []*Event
	secureBoot, dbx                int
}

func (ev *exampleEval) fail(e *Event, rule, format string, args ...any) {
	reason := fmt.Sprintf(format, args...)
	ev.fails = append(ev.fails, policyFailure(PolicyExample, e.Describe()+": "+reason, map[string]any{
		"event": e.Num, "pcr": e.PCR, "event_type": e.Type.String(), "rule": rule, "event_data": e.Summary(),
	}))
}

func (ev *exampleEval) failFinal(rule, format string, args ...any) {
	ev.fails = append(ev.fails, policyFailure(PolicyExample, fmt.Sprintf(format, args...), map[string]any{"rule": rule}))
}

// onceOK records a use of a rule that allows one event and reports a failure for a second one.
func (ev *exampleEval) onceOK(e *Event, rule string) bool {
	if first, ok := ev.once[rule]; ok {
		ev.fail(e, rule, "only one such event is allowed, %s was the first", first.Describe())
		return false
	}
	ev.once[rule] = e
	return true
}

func (ev *exampleEval) run() {
	for i := range ev.log.Events {
		e := &ev.log.Events[i]
		// Not measured, or on a PCR the verifier does not compare: nothing in it can be trusted.
		if !e.Measured() || !slices.Contains(examplePCRs, e.PCR) {
			continue
		}
		ev.event(e)
	}
	ev.final()
}

// unexpected is Keylime's Dispatcher failure for a (PCR, type) no rule covers.
func (ev *exampleEval) unexpected(e *Event) {
	ev.fail(e, "dispatch", "has unexpected ('PCRIndex', 'EventType') combination (%d, '%s'): the reference state cannot express it", e.PCR, e.Type)
}

func (ev *exampleEval) event(e *Event) {
	if e.Type == EvSeparator {
		if e.PCR > 7 {
			ev.unexpected(e)
			return
		}
		ev.separator(e)
		return
	}
	switch e.PCR {
	case 0:
		if e.Type == EvSCRTMVersion {
			ev.scrtms = append(ev.scrtms, e)
		} else {
			ev.firmware = append(ev.firmware, e)
		}
	case 1:
		switch e.Type {
		case EvCPUMicrocode, EvEFIHandoffTables, EvEFIHandoffTables2:
			ev.onceOK(e, "pcr1."+e.Type.String())
		case EvEFIVariableBoot, EvEFIVariableBoot2:
			ev.bootVariable(e)
		case EvEFIVariableDriverConfig, EvPlatformConfigFlags:
			// Platform configuration; Keylime pins nothing in PCR 1 either.
		case EvEFIAction, EvAction:
			ev.action(e, "Entering ROM Based Setup")
		default:
			ev.unexpected(e)
		}
	case 2:
		switch e.Type {
		case EvEFIBootServicesDriver, EvEFIRuntimeServicesDrv, EvEFIPlatformFirmwareBlob, EvEFIPlatformFirmwareBlb2:
			// Option ROMs and drivers: accepted, as by Keylime.
		default:
			ev.unexpected(e)
		}
	case 4:
		switch e.Type {
		case EvEFIAction:
			ev.action(e, "Calling EFI Application from Boot Option", "Returning from EFI Application from Boot Option")
		case EvEFIBootServicesApp:
			il, err := e.ImageLoad()
			if err != nil {
				ev.fail(e, "boot_application", "%v", err)
				return
			}
			if il.FromFirmwareVolume() {
				ev.fwApps = append(ev.fwApps, e)
			} else {
				ev.apps = append(ev.apps, e)
			}
		default:
			ev.unexpected(e)
		}
	case 5:
		switch e.Type {
		case EvEFIAction:
			ev.action(e, "Exit Boot Services Invocation", "Exit Boot Services Returned with Failure", "Exit Boot Services Returned with Success")
		case EvEFIGPTEvent, EvEFIGPTEvent2:
			ev.onceOK(e, "gpt")
		default:
			ev.unexpected(e)
		}
	case 7:
		switch e.Type {
		case EvEFIVariableDriverConfig:
			ev.driverConfig(e)
		case EvEFIVariableAuthority:
			ev.authority(e)
		default:
			ev.unexpected(e)
		}
	case 8:
		if e.Type != EvIPL {
			ev.unexpected(e)
			return
		}
		ev.pcr8(e)
	case 9:
		switch e.Type {
		case EvIPL:
			ev.pcr9(e)
		case EvEventTag:
			ev.linuxTag(e)
		default:
			ev.unexpected(e)
		}
	case 14:
		if e.Type != EvIPL {
			ev.unexpected(e)
			return
		}
		ev.mok(e)
	default: // PCRs 3 and 6: separators only
		ev.unexpected(e)
	}
}

// boundTo reports whether every digest of the event in a bank the package knows is the hash of data,
// with at least one such digest: the event data is then what was measured.
func boundTo(e *Event, data []byte) bool {
	checked := 0
	for _, d := range e.Digests {
		if _, ok := bankHash(d.Bank); !ok {
			continue
		}
		if !bytes.Equal(d.Value, hashOf(d.Bank, data)) {
			return false
		}
		checked++
	}
	return checked > 0
}

func (ev *exampleEval) separator(e *Event) {
	if !bytes.Equal(e.Data, []byte{0, 0, 0, 0}) && !bytes.Equal(e.Data, []byte{0xff, 0xff, 0xff, 0xff}) {
		ev.fail(e, "separator", "separator data %x is neither 00000000 nor ffffffff", e.Data)
		return
	}
	if !boundTo(e, e.Data) {
		ev.fail(e, "separator", "separator digests are not the hash of its data %x", e.Data)
	}
}

func (ev *exampleEval) action(e *Event, allowed ...string) {
	if !slices.Contains(allowed, string(e.Data)) {
		ev.fail(e, "efi_action", "action %q is not one of %q", clip(string(e.Data), 80), allowed)
		return
	}
	if !boundTo(e, e.Data) {
		ev.fail(e, "efi_action", "digests are not the hash of the action text %q", e.Data)
	}
}

func (ev *exampleEval) bootVariable(e *Event) {
	v, err := e.Variable()
	if err != nil {
		ev.fail(e, "boot_variable", "%v", err)
		return
	}
	if v.GUID != GUIDGlobalVariable || !isBootVarName(v.Name) {
		ev.fail(e, "boot_variable", "variable %s (%s) is not BootOrder or Boot#### of the EFI global GUID", v.Name, v.GUID)
	}
}

// isBootVarName is Keylime's fullmatch of BootOrder|Boot[0-9a-fA-F]+.
func isBootVarName(s string) bool {
	if s == "BootOrder" {
		return true
	}
	h, ok := strings.CutPrefix(s, "Boot")
	if !ok || h == "" {
		return false
	}
	for _, c := range h {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// sigSet indexes signatures by "owner|hex data", owner in canonical GUID form.
type sigSet map[string]bool

func sigKey(owner GUID, data string) string { return owner.String() + "|" + data }

// refSigSet indexes reference-state signatures under both readings of their owner GUID text
// (canonical, and storage byte order as tpm2-tools < 5.2 printed it), as Keylime accepts both.
func refSigSet(refs []SigRef) sigSet {
	set := sigSet{}
	for _, r := range refs {
		for _, g := range ownerReadings(r.Owner) {
			set[sigKey(g, r.Data)] = true
		}
	}
	return set
}

// ownerReadings returns the GUIDs a SignatureOwner text may stand for.
func ownerReadings(text string) []GUID {
	g, err := ParseGUID(text)
	if err != nil {
		return nil
	}
	var swapped GUID // the text read as bytes in storage order
	b, _ := hex.DecodeString(strings.ReplaceAll(text, "-", ""))
	copy(swapped[:], b)
	return []GUID{g, swapped}
}

func (s sigSet) has(sig Signature) bool { return s[sigKey(sig.Owner, hex.EncodeToString(sig.Data))] }

func (ev *exampleEval) driverConfig(e *Event) {
	v, err := e.Variable()
	if err != nil {
		ev.fail(e, "variable", "%v", err)
		return
	}
	rule := "variable." + v.Name
	if !boundTo(e, e.Data) {
		ev.fail(e, rule, "the digests are not the hash of the logged variable %s: its data cannot be trusted", v.Name)
		return
	}
	sb := ev.ref.HasSecureBoot
	switch {
	case v.GUID == GUIDGlobalVariable && v.Name == "SecureBoot":
		ev.secureBoot++
		if ev.secureBoot > 1 {
			ev.fail(e, rule, "SecureBoot is measured more than once")
			return
		}
		on, err := v.Enabled()
		if err != nil {
			ev.fail(e, rule, "%v", err)
			return
		}
		if on != sb {
			ev.fail(e, rule, "SecureBoot is %s, the reference state wants %s", yesNo(on), yesNo(sb))
		}
	case v.GUID == GUIDGlobalVariable && (v.Name == "PK" || v.Name == "KEK"):
		refs := ev.ref.PK
		if v.Name == "KEK" {
			refs = ev.ref.KEK
		}
		ev.keySubset(e, v, rule, refs, GUIDCertX509)
	case v.GUID == GUIDImageSecurityDatabase && (v.Name == "db" || v.Name == "vendor_db"):
		refs := ev.ref.DB
		if v.Name == "vendor_db" {
			refs = ev.ref.VendorDB
		}
		ev.keySubset(e, v, rule, refs, GUIDCertX509, GUIDCertSHA256)
	case v.GUID == GUIDImageSecurityDatabase && v.Name == "dbx":
		ev.dbx++
		if !ev.onceOK(e, rule) || (!sb && len(ev.ref.DBX) == 0) {
			return
		}
		lists, err := v.SignatureLists()
		if err != nil {
			ev.fail(e, rule, "%v", err)
			return
		}
		have := sigSet{}
		for _, l := range lists {
			for _, sig := range l.Signatures {
				have[sigKey(sig.Owner, hex.EncodeToString(sig.Data))] = true
			}
		}
		var missing []string
		for _, r := range ev.ref.DBX {
			if !slices.ContainsFunc(ownerReadings(r.Owner), func(g GUID) bool { return have[sigKey(g, r.Data)] }) {
				missing = append(missing, r.Owner+":"+clip(r.Data, 64))
			}
		}
		if len(missing) > 0 {
			ev.fail(e, rule, "dbx lacks %d entr(ies) the reference state requires: %s", len(missing), strings.Join(missing, ", "))
		}
	default:
		ev.fail(e, rule, "variable %s (%s) is not covered by the reference state (only SecureBoot, PK, KEK, db, dbx, vendor_db)", v.Name, v.GUID)
	}
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// keySubset is Keylime's KeySubset: once; every signature list of an allowed type, every key allowed.
// Without Secure Boot and with no keys in the reference state, anything is accepted.
func (ev *exampleEval) keySubset(e *Event, v *Variable, rule string, refs []SigRef, types ...GUID) {
	if !ev.onceOK(e, rule) || (!ev.ref.HasSecureBoot && len(refs) == 0) {
		return
	}
	lists, err := v.SignatureLists()
	if err != nil {
		ev.fail(e, rule, "%v", err)
		return
	}
	allowed := refSigSet(refs)
	for _, l := range lists {
		if !slices.Contains(types, l.Type) {
			ev.fail(e, rule, "%s has a signature list of type %s, allowed are %v", v.Name, l.Type, types)
			continue
		}
		for _, s := range l.Signatures {
			if !allowed.has(s) {
				ev.fail(e, rule, "%s has a key the reference state does not allow: owner %s data %s", v.Name, s.Owner, clip(hex.EncodeToString(s.Data), 64))
			}
		}
	}
}

func (ev *exampleEval) authority(e *Event) {
	v, err := e.Variable()
	if err != nil {
		ev.fail(e, "authority", "%v", err)
		return
	}
	rule := "authority." + v.Name
	switch {
	case v.GUID == GUIDImageSecurityDatabase && v.Name == "db",
		v.GUID == GUIDShimLock && (v.Name == "SbatLevel" || v.Name == "Shim" || v.Name == "MokListRT"):
		// Accepted as by Keylime, but in any number: Keylime's once-limit on these accept-all rules
		// only fails shims that log their certificate once per image they verify.
	case v.GUID == GUIDShimLock && v.Name == "MokListTrusted":
		if !ev.onceOK(e, rule) {
			return
		}
		if !authorityBound(e) {
			ev.fail(e, rule, "the digests are not the hash of the logged variable")
		} else if _, err := v.Enabled(); err != nil {
			ev.fail(e, rule, "%v", err)
		}
	case v.GUID == GUIDImageSecurityDatabase && v.Name == "vendor_db":
		if !ev.onceOK(e, rule) || (!ev.ref.HasSecureBoot && len(ev.ref.VendorDB) == 0) {
			return
		}
		s, err := v.AuthoritySignature()
		switch {
		case err != nil:
			ev.fail(e, rule, "%v", err)
		case !authorityBound(e):
			ev.fail(e, rule, "the digests are not the hash of the logged variable")
		case !refSigSet(ev.ref.VendorDB).has(s):
			ev.fail(e, rule, "vendor_db key owner %s data %s is not in the reference state's vendor_db", s.Owner, clip(hex.EncodeToString(s.Data), 64))
		}
	default:
		ev.fail(e, rule, "authority %s (%s) is not covered by the reference state", v.Name, v.GUID)
	}
}

// authorityBound is boundTo for authority events, tolerating the extra byte shim < 15.3 logs
// (go-attestation issue 157).
func authorityBound(e *Event) bool {
	return boundTo(e, e.Data) || (len(e.Data) > 0 && boundTo(e, e.Data[:len(e.Data)-1]))
}

// noNewline is what Python's ".*" (without re.DOTALL) accepts: any text without a newline.
func noNewline(s string) bool { return !strings.Contains(s, "\n") }

func (ev *exampleEval) pcr8(e *Event) {
	s := e.Text()
	switch {
	case strings.HasPrefix(s, "grub_cmd: "):
	case strings.HasPrefix(s, cmdlinePrefix) && noNewline(s):
		if !boundTo(e, []byte(s[len(cmdlinePrefix):])) {
			ev.fail(e, "kernel_cmdline", "the digests are not the hash of the logged command line: its text cannot be trusted")
			return
		}
		ev.cmdlines = append(ev.cmdlines, e)
	default:
		ev.fail(e, "pcr8_string", "string %q is neither grub_cmd: nor kernel_cmdline:", clip(s, 80))
	}
}

func (ev *exampleEval) pcr9(e *Event) {
	s := e.Text()
	switch {
	case noNewline(s) && strings.Contains(s, "/loader/entries"), noNewline(s) && strings.Contains(s, "/grub"):
	case noNewline(s) && strings.Contains(s, "/vmlinuz"):
		ev.vmlinuzs = append(ev.vmlinuzs, e)
	case noNewline(s) && (strings.Contains(s, "/initrd") || strings.Contains(s, "/initramfs")):
		ev.initrds = append(ev.initrds, e)
	default:
		ev.fail(e, "pcr9_file", "file %q is not a boot loader entry, grub file, vmlinuz or initrd", clip(s, 80))
	}
}

func (ev *exampleEval) linuxTag(e *Event) {
	t, err := e.Tagged()
	if err != nil {
		ev.fail(e, "tagged_event", "%v", err)
		return
	}
	switch t.ID {
	case TagLinuxInitrd:
		ev.initrds = append(ev.initrds, e)
	case TagLinuxLoadOptions:
		ev.loadOptions = append(ev.loadOptions, e)
	default:
		ev.fail(e, "tagged_event", "tagged event 0x%08x is not one of the Linux EFI stub's", t.ID)
	}
}

func (ev *exampleEval) mok(e *Event) {
	switch s := e.Text(); s {
	case "MokList", "MokListX":
		refs, key := ev.ref.MokDig, "mokdig"
		if s == "MokListX" {
			refs, key = ev.ref.MokXDig, "mokxdig"
		}
		if !slices.ContainsFunc(refs, func(d Digests) bool { return digestMatches(e, d) }) {
			ev.fail(e, key, "%s digest %s is not in the reference state's %s", s, eventDigests(e), key)
		}
	case "MokListTrusted":
		ev.onceOK(e, "pcr14.MokListTrusted")
	default:
		ev.fail(e, "pcr14_string", "string %q is not MokList, MokListX or MokListTrusted", clip(s, 80))
	}
}

// digestMatches reports whether the event's digests agree with want: at least one bank in common and
// equal in every common bank.
func digestMatches(e *Event, want Digests) bool {
	common := 0
	for alg, h := range want {
		b, ok := BankByName(alg)
		if !ok {
			continue
		}
		got := e.Digest(b)
		if got == nil {
			continue
		}
		if hex.EncodeToString(got) != h {
			return false
		}
		common++
	}
	return common > 0
}

// eventDigests is the event's digests for messages ("sha256:ab12…").
func eventDigests(e *Event) string {
	var parts []string
	for _, d := range e.Digests {
		parts = append(parts, BankName(d.Bank)+":"+hex.EncodeToString(d.Value))
	}
	return strings.Join(parts, ",")
}

func sha256Of(e *Event) string { return hex.EncodeToString(e.Digest(tpm2.TPMAlgSHA256)) }

func (ev *exampleEval) final() {
	if ev.ref.HasSecureBoot && ev.secureBoot == 0 {
		ev.failFinal("variable.SecureBoot", "the log has no SecureBoot variable in PCR 7, the reference state wants Secure Boot on")
	}
	if len(ev.ref.DBX) > 0 && ev.dbx == 0 {
		ev.failFinal("variable.dbx", "the log has no dbx variable in PCR 7, the reference state requires %d dbx entries", len(ev.ref.DBX))
	}
	ev.finalKernels()
	ev.finalFirmware()
}

func (ev *exampleEval) finalKernels() {
	if len(ev.ref.Kernels) == 0 {
		ev.failFinal("kernels", "the reference state lists no kernel, so no boot chain can pass")
		return
	}
	var reasons []string
	for i := range ev.ref.Kernels {
		why := ev.kernelWhyNot(&ev.ref.Kernels[i])
		if why == "" {
			return
		}
		reasons = append(reasons, fmt.Sprintf("kernels[%d]: %s", i, why))
	}
	ev.fails = append(ev.fails, policyFailure(PolicyExample, "no kernel entry matches the boot: "+strings.Join(reasons, "; "),
		map[string]any{"rule": "kernels", "kernels": reasons}))
}

// kernelWhyNot says why a kernel entry does not match the collected events ("" when it does).
func (ev *exampleEval) kernelWhyNot(k *KernelRef) string {
	var chain []string
	for _, h := range []string{k.ShimAuthcode, k.GrubAuthcode, k.KernelAuthcode} {
		if h != "" {
			chain = append(chain, h)
		}
	}
	got := make([]string, len(ev.apps))
	for i, e := range ev.apps {
		got[i] = sha256Of(e)
	}
	if !slices.Equal(got, chain) && !(k.KernelAuthcode != "" && slices.Equal(got, append(slices.Clone(chain), k.KernelAuthcode))) {
		return fmt.Sprintf("boot applications in PCR 4 are %s, the entry allows %s", describeApps(ev.apps), describeChain(k))
	}
	if why := pinned("initrd", ev.initrds, k.InitrdPlain, false); why != "" {
		return why
	}
	if why := pinned("vmlinuz", ev.vmlinuzs, k.VmlinuzPlain, ev.ref.HasSecureBoot); why != "" {
		return why
	}
	if why := pinned("LoadOptions (Linux EFI stub)", ev.loadOptions, k.LoadOptionsPlain, false); why != "" {
		return why
	}
	switch {
	case k.cmdline == nil && len(ev.cmdlines) > 0:
		return fmt.Sprintf("%s logs a kernel command line but the entry has no kernel_cmdline", ev.cmdlines[0].Describe())
	case k.cmdline != nil && len(ev.cmdlines) == 0:
		return "the entry has a kernel_cmdline but the log has no kernel_cmdline event in PCR 8"
	case k.cmdline != nil:
		for _, e := range ev.cmdlines {
			if !k.cmdline.MatchString(e.Text()) {
				return fmt.Sprintf("%s %q does not match kernel_cmdline %q", e.Describe(), clip(e.Text(), 200), clip(*k.Cmdline, 200))
			}
		}
	}
	return ""
}

// pinned checks the events of one kind against an entry's digest: with a digest there must be at
// least one event and all must match; without one there must be none (unless anyDigest).
func pinned(what string, events []*Event, want string, anyDigest bool) string {
	switch {
	case want == "" && len(events) > 0 && !anyDigest:
		return fmt.Sprintf("%s loads a %s the entry does not pin (%s)", events[0].Describe(), what, events[0].Summary())
	case want != "" && len(events) == 0:
		return fmt.Sprintf("the entry pins a %s but the log has no such event", what)
	}
	for _, e := range events {
		if want != "" && sha256Of(e) != want {
			return fmt.Sprintf("%s %s has sha256 %s, the entry wants %s", e.Describe(), what, sha256Of(e), want)
		}
	}
	return ""
}

func describeApps(apps []*Event) string {
	if len(apps) == 0 {
		return "none"
	}
	var parts []string
	for _, e := range apps {
		parts = append(parts, fmt.Sprintf("[event %d %s %s]", e.Num, clip(sha256Of(e), 16), e.Summary()))
	}
	return strings.Join(parts, " ")
}

func describeChain(k *KernelRef) string {
	var parts []string
	for _, f := range []struct{ name, h string }{{"shim", k.ShimAuthcode}, {"grub", k.GrubAuthcode}, {"kernel", k.KernelAuthcode}} {
		if f.h != "" {
			parts = append(parts, f.name+" "+clip(f.h, 16))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (ev *exampleEval) finalFirmware() {
	if len(ev.ref.SCRTMAndBIOS) == 0 {
		ev.failFinal("scrtm_and_bios", "the reference state lists no firmware, so no boot can pass")
		return
	}
	var reasons []string
	for i := range ev.ref.SCRTMAndBIOS {
		why := ev.firmwareWhyNot(&ev.ref.SCRTMAndBIOS[i])
		if why == "" {
			return
		}
		reasons = append(reasons, fmt.Sprintf("scrtm_and_bios[%d]: %s", i, why))
	}
	ev.fails = append(ev.fails, policyFailure(PolicyExample, "no scrtm_and_bios entry matches the firmware: "+strings.Join(reasons, "; "),
		map[string]any{"rule": "scrtm_and_bios", "scrtm_and_bios": reasons}))
}

func (ev *exampleEval) firmwareWhyNot(f *FirmwareRef) string {
	switch {
	case f.SCRTM == nil && len(ev.scrtms) > 0:
		return fmt.Sprintf("%s is an S-CRTM version the entry has no scrtm for", ev.scrtms[0].Describe())
	case f.SCRTM != nil && len(ev.scrtms) != 1:
		return fmt.Sprintf("the log has %d EV_S_CRTM_VERSION events, the entry wants exactly 1", len(ev.scrtms))
	case f.SCRTM != nil && !digestMatches(ev.scrtms[0], f.SCRTM):
		return fmt.Sprintf("S-CRTM version %s is not %s", eventDigests(ev.scrtms[0]), f.SCRTM)
	}
	if len(ev.firmware) != len(f.PlatformFirmware) {
		var types []string
		for _, e := range ev.firmware {
			types = append(types, fmt.Sprintf("%d:%s", e.Num, e.Type))
		}
		return fmt.Sprintf("the log has %d platform firmware measurements in PCR 0 (%s), the entry lists %d",
			len(ev.firmware), strings.Join(types, " "), len(f.PlatformFirmware))
	}
	for i, e := range ev.firmware {
		if !digestMatches(e, f.PlatformFirmware[i]) {
			return fmt.Sprintf("platform_firmware[%d]: %s has %s, the entry wants %s", i, e.Describe(), eventDigests(e), f.PlatformFirmware[i])
		}
	}
	for _, e := range ev.fwApps {
		if !slices.ContainsFunc(f.FirmwareApps, func(d Digests) bool { return digestMatches(e, d) }) {
			return fmt.Sprintf("%s is a firmware application (%s, sha256 %s) not in the entry's firmware_apps", e.Describe(), e.Summary(), sha256Of(e))
		}
	}
	return ""
}
