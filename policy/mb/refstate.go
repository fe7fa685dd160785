package mb

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// ErrBadRefState wraps every reason ParseRefState refuses a reference state.
var ErrBadRefState = errors.New("invalid measured boot reference state")

// Digests is a digest in several banks, Keylime's {"sha256": "0x…"}: bank name → lower-case hex
// (stored without the 0x).
type Digests map[string]string

// SigRef is one allowed or required UEFI signature: {"SignatureOwner": "<guid>", "SignatureData": "0x…"}.
type SigRef struct {
	// Owner is the SignatureOwner GUID text (either byte order matches).
	Owner string
	// Data is SignatureData in lower-case hex without 0x: a DER certificate or a digest.
	Data string
}

// FirmwareRef is one allowed platform firmware (an element of scrtm_and_bios).
type FirmwareRef struct {
	// SCRTM is the digest of the EV_S_CRTM_VERSION event; nil (absent) means the log has none.
	SCRTM Digests
	// PlatformFirmware are the digests of PCR 0's firmware measurements, in log order.
	PlatformFirmware []Digests
	// FirmwareApps (extension "firmware_apps") are the authenticode digests of boot applications the
	// firmware loads from its own volumes (FvVol/FvFile device paths), in any order.
	FirmwareApps []Digests
}

// KernelRef is one allowed boot chain (an element of kernels). Hex fields are lower-case without 0x;
// an empty field is absent.
type KernelRef struct {
	// ShimAuthcode, GrubAuthcode and KernelAuthcode are the PCR 4 boot application digests, in that
	// order; the kernel may appear twice.
	ShimAuthcode, GrubAuthcode, KernelAuthcode string
	// VmlinuzPlain is the digest of the kernel file the boot loader measured in PCR 9.
	VmlinuzPlain string
	// InitrdPlain is the digest of the initrd (PCR 9 EV_IPL or the EFI stub's "Linux initrd" event).
	InitrdPlain string
	// Cmdline is the kernel_cmdline pattern (a Python regex Keylime fullmatches after
	// "kernel_cmdline: "); nil when absent.
	Cmdline *string
	// LoadOptionsPlain (extension "load_options_plain_sha256") is the digest of the load options the
	// Linux EFI stub measured in PCR 9.
	LoadOptionsPlain string

	cmdline *regexp.Regexp
}

// RefState is Keylime's measured-boot reference state ("mb_refstate", "mb_policy") for the example
// policy.
type RefState struct {
	// HasSecureBoot is has_secureboot (default true).
	HasSecureBoot bool
	SCRTMAndBIOS  []FirmwareRef
	// PK, KEK, DB: allowed keys. DBX: keys dbx must contain. VendorDB: allowed shim vendor_db keys.
	PK, KEK, DB, DBX, VendorDB []SigRef
	// MokDig and MokXDig are the allowed digests of MokList and MokListX (PCR 14).
	MokDig, MokXDig []Digests
	Kernels         []KernelRef

	empty bool
}

// Empty reports whether the reference state was empty ({} or no text): Keylime then accepts the boot
// without replaying or evaluating the log.
func (r *RefState) Empty() bool { return r == nil || r.empty }

// ParseRefState decodes and validates a reference state. Empty text or {} gives an Empty reference
// state. Unknown keys are ignored, as Keylime ignores them; every other problem is an error wrapping
// ErrBadRefState that names the field, including kernel_cmdline patterns Go's RE2 cannot run.
func ParseRefState(data []byte) (*RefState, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return &RefState{empty: true}, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil || top == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadRefState)
	}
	if len(top) == 0 {
		return &RefState{empty: true}, nil
	}
	d := decoder{top: top}
	r := &RefState{HasSecureBoot: true}
	if raw, ok := top["has_secureboot"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &r.HasSecureBoot); err != nil {
			return nil, d.errf("has_secureboot", "want true or false, got %s", clip(string(raw), 40))
		}
	}
	var err error
	if r.SCRTMAndBIOS, err = d.firmware(); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		key      string
		dst      *[]SigRef
		optional bool
	}{{"pk", &r.PK, false}, {"kek", &r.KEK, false}, {"db", &r.DB, false}, {"dbx", &r.DBX, false}, {"vendor_db", &r.VendorDB, true}} {
		if *f.dst, err = d.sigs(f.key, f.optional); err != nil {
			return nil, err
		}
	}
	if r.MokDig, err = d.digestList("mokdig"); err != nil {
		return nil, err
	}
	if r.MokXDig, err = d.digestList("mokxdig"); err != nil {
		return nil, err
	}
	if r.Kernels, err = d.kernels(); err != nil {
		return nil, err
	}
	return r, nil
}

// decoder validates the parts of a reference state with messages that name the field.
type decoder struct{ top map[string]json.RawMessage }

func (decoder) errf(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrBadRefState, field, fmt.Sprintf(format, args...))
}

// list decodes key as a JSON list (null counts as empty); a missing key is an error unless optional.
func (d decoder) list(key string, optional bool) ([]json.RawMessage, error) {
	raw, ok := d.top[key]
	if !ok {
		if optional {
			return nil, nil
		}
		return nil, d.errf(key, "missing (Keylime requires it, possibly as [])")
	}
	var out []json.RawMessage
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, d.errf(key, "want a list, got %s", clip(string(raw), 40))
	}
	return out, nil
}

// hexValue checks Keylime's "0x followed by lower-case hex digits" (an even number of them).
func hexValue(field string, raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %s: want a \"0x…\" string, got %s", ErrBadRefState, field, clip(string(raw), 40))
	}
	h, ok := strings.CutPrefix(s, "0x")
	if !ok || h == "" || strings.ToLower(h) != h || len(h)%2 != 0 {
		return "", fmt.Errorf("%w: %s: %q is not 0x followed by lower-case hex digits", ErrBadRefState, field, clip(s, 80))
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("%w: %s: %q is not 0x followed by lower-case hex digits", ErrBadRefState, field, clip(s, 80))
	}
	return h, nil
}

// digestSize returns the digest length of a bank name a reference state may use. A switch, not a map
// literal, so that the package has no init code to run in every keylime process.
func digestSize(alg string) (int, bool) {
	switch alg {
	case "sha1":
		return 20, true
	case "sha256":
		return 32, true
	case "sha384":
		return 48, true
	case "sha512":
		return 64, true
	}
	return 0, false
}

func digestsValue(field string, raw json.RawMessage) (Digests, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, fmt.Errorf("%w: %s: want a digest object such as {\"sha256\": \"0x…\"}, got %s", ErrBadRefState, field, clip(string(raw), 40))
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("%w: %s: the digest names no algorithm", ErrBadRefState, field)
	}
	out := Digests{}
	for alg, v := range m {
		size, ok := digestSize(alg)
		if !ok {
			return nil, fmt.Errorf("%w: %s: unknown digest algorithm %q (want sha1, sha256, sha384 or sha512)", ErrBadRefState, field, alg)
		}
		h, err := hexValue(field+"."+alg, v)
		if err != nil {
			return nil, err
		}
		if len(h) != 2*size {
			return nil, fmt.Errorf("%w: %s.%s: %d hex digits, a %s digest has %d", ErrBadRefState, field, alg, len(h), alg, 2*size)
		}
		out[alg] = h
	}
	return out, nil
}

func (d decoder) digestList(key string) ([]Digests, error) {
	items, err := d.list(key, false)
	if err != nil {
		return nil, err
	}
	out := make([]Digests, len(items))
	for i, it := range items {
		if out[i], err = digestsValue(fmt.Sprintf("%s[%d]", key, i), it); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (d decoder) sigs(key string, optional bool) ([]SigRef, error) {
	items, err := d.list(key, optional)
	if err != nil {
		return nil, err
	}
	out := make([]SigRef, len(items))
	for i, it := range items {
		field := fmt.Sprintf("%s[%d]", key, i)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(it, &m); err != nil || m == nil {
			return nil, d.errf(field, "want {\"SignatureOwner\": …, \"SignatureData\": …}")
		}
		var owner string
		if err := json.Unmarshal(m["SignatureOwner"], &owner); err != nil {
			return nil, d.errf(field+".SignatureOwner", "missing or not a string")
		}
		if _, err := ParseGUID(owner); err != nil {
			return nil, d.errf(field+".SignatureOwner", "%v", err)
		}
		if _, ok := m["SignatureData"]; !ok {
			return nil, d.errf(field+".SignatureData", "missing")
		}
		data, err := hexValue(field+".SignatureData", m["SignatureData"])
		if err != nil {
			return nil, err
		}
		out[i] = SigRef{Owner: strings.ToLower(owner), Data: data}
	}
	return out, nil
}

func (d decoder) firmware() ([]FirmwareRef, error) {
	items, err := d.list("scrtm_and_bios", false)
	if err != nil {
		return nil, err
	}
	out := make([]FirmwareRef, len(items))
	for i, it := range items {
		field := fmt.Sprintf("scrtm_and_bios[%d]", i)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(it, &m); err != nil || m == nil {
			return nil, d.errf(field, "want an object with scrtm and platform_firmware")
		}
		if raw, ok := m["scrtm"]; ok {
			if out[i].SCRTM, err = digestsValue(field+".scrtm", raw); err != nil {
				return nil, err
			}
		}
		sub := decoder{top: m}
		for _, f := range []struct {
			key      string
			dst      *[]Digests
			optional bool
		}{{"platform_firmware", &out[i].PlatformFirmware, false}, {"firmware_apps", &out[i].FirmwareApps, true}} {
			list, err := sub.list(f.key, f.optional)
			if err != nil {
				return nil, fmt.Errorf("%w (in %s)", err, field)
			}
			for j, it := range list {
				dg, err := digestsValue(fmt.Sprintf("%s.%s[%d]", field, f.key, j), it)
				if err != nil {
					return nil, err
				}
				*f.dst = append(*f.dst, dg)
			}
		}
	}
	return out, nil
}

// kernelHexFields maps the hex keys of a kernels entry to their KernelRef fields.
func kernelHexFields(k *KernelRef) []struct {
	key string
	dst *string
} {
	return []struct {
		key string
		dst *string
	}{
		{"shim_authcode_sha256", &k.ShimAuthcode}, {"grub_authcode_sha256", &k.GrubAuthcode},
		{"kernel_authcode_sha256", &k.KernelAuthcode}, {"vmlinuz_plain_sha256", &k.VmlinuzPlain},
		{"initrd_plain_sha256", &k.InitrdPlain}, {"load_options_plain_sha256", &k.LoadOptionsPlain},
	}
}

func (d decoder) kernels() ([]KernelRef, error) {
	items, err := d.list("kernels", false)
	if err != nil {
		return nil, err
	}
	out := make([]KernelRef, len(items))
	for i, it := range items {
		field := fmt.Sprintf("kernels[%d]", i)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(it, &m); err != nil || m == nil {
			return nil, d.errf(field, "want an object")
		}
		k := &out[i]
		for _, f := range kernelHexFields(k) {
			raw, ok := m[f.key]
			if !ok {
				continue
			}
			h, err := hexValue(field+"."+f.key, raw)
			if err != nil {
				return nil, err
			}
			if len(h) != 64 {
				return nil, d.errf(field+"."+f.key, "%d hex digits, a sha256 digest has 64", len(h))
			}
			*f.dst = h
		}
		if raw, ok := m["kernel_cmdline"]; ok {
			var pat string
			if err := json.Unmarshal(raw, &pat); err != nil {
				return nil, d.errf(field+".kernel_cmdline", "want a regular expression string")
			}
			re, err := compileCmdline(pat)
			if err != nil {
				return nil, d.errf(field+".kernel_cmdline", "%v", err)
			}
			k.Cmdline, k.cmdline = &pat, re
		}
	}
	return out, nil
}

// cmdlinePrefix is what Keylime puts before kernel_cmdline before fullmatching the PCR 8 string.
const cmdlinePrefix = "kernel_cmdline: "

// compileCmdline compiles a Keylime kernel_cmdline pattern with Python's re.fullmatch semantics on
// "kernel_cmdline: " + pattern. Patterns RE2 cannot run (lookaround, backreferences, \Z, …) and the
// one construct both accept with different meanings ({,n}) are refused.
func compileCmdline(pat string) (*regexp.Regexp, error) {
	if i := strings.Index(pat, "{,"); i >= 0 && (i == 0 || pat[i-1] != '\\') {
		return nil, fmt.Errorf("pattern %q uses {,n}, which Python reads as {0,n} and Go as literal text; write {0,n}", clip(pat, 80))
	}
	re, err := regexp.Compile(`\A(?:` + cmdlinePrefix + pat + `)\z`)
	if err != nil {
		return nil, fmt.Errorf("pattern %q is not a regular expression Go's RE2 engine can run (%v); rewrite it without lookaround, backreferences or \\Z", clip(pat, 80), err)
	}
	return re, nil
}

// PythonEscape escapes s as Python 3.7+'s re.escape does, which is how keylime-policy writes
// kernel_cmdline; the result means the same literal text to Go's RE2.
func PythonEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("()[]{}?*+-|^$\\.&~# \t\n\r\v\f", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// MarshalJSON writes the reference state in Keylime's format (keys in keylime-policy's order;
// extension fields only when set). An Empty reference state is {}.
func (r *RefState) MarshalJSON() ([]byte, error) {
	if r.Empty() {
		return []byte("{}"), nil
	}
	type fw struct {
		SCRTM            map[string]string   `json:"scrtm,omitempty"`
		PlatformFirmware []map[string]string `json:"platform_firmware"`
		FirmwareApps     []map[string]string `json:"firmware_apps,omitempty"`
	}
	type sig struct {
		Owner string `json:"SignatureOwner"`
		Data  string `json:"SignatureData"`
	}
	type kernel struct {
		Shim        string  `json:"shim_authcode_sha256,omitempty"`
		Grub        string  `json:"grub_authcode_sha256,omitempty"`
		Kernel      string  `json:"kernel_authcode_sha256,omitempty"`
		Vmlinuz     string  `json:"vmlinuz_plain_sha256,omitempty"`
		Initrd      string  `json:"initrd_plain_sha256,omitempty"`
		Cmdline     *string `json:"kernel_cmdline,omitempty"`
		LoadOptions string  `json:"load_options_plain_sha256,omitempty"`
	}
	out := struct {
		HasSecureBoot bool                `json:"has_secureboot"`
		SCRTMAndBIOS  []fw                `json:"scrtm_and_bios"`
		PK            []sig               `json:"pk"`
		KEK           []sig               `json:"kek"`
		DB            []sig               `json:"db"`
		DBX           []sig               `json:"dbx"`
		VendorDB      []sig               `json:"vendor_db"`
		MokDig        []map[string]string `json:"mokdig"`
		MokXDig       []map[string]string `json:"mokxdig"`
		Kernels       []kernel            `json:"kernels"`
	}{HasSecureBoot: r.HasSecureBoot}
	x := func(h string) string {
		if h == "" {
			return ""
		}
		return "0x" + h
	}
	dg := func(d Digests) map[string]string {
		if d == nil {
			return nil
		}
		m := map[string]string{}
		for k, v := range d {
			m[k] = x(v)
		}
		return m
	}
	dgs := func(ds []Digests) []map[string]string {
		out := make([]map[string]string, 0, len(ds))
		for _, d := range ds {
			out = append(out, dg(d))
		}
		return out
	}
	sigs := func(ss []SigRef) []sig {
		out := make([]sig, 0, len(ss))
		for _, s := range ss {
			out = append(out, sig{s.Owner, x(s.Data)})
		}
		return out
	}
	out.SCRTMAndBIOS = make([]fw, 0, len(r.SCRTMAndBIOS))
	for _, f := range r.SCRTMAndBIOS {
		out.SCRTMAndBIOS = append(out.SCRTMAndBIOS, fw{dg(f.SCRTM), dgs(f.PlatformFirmware), dgs(f.FirmwareApps)})
	}
	out.PK, out.KEK, out.DB, out.DBX, out.VendorDB = sigs(r.PK), sigs(r.KEK), sigs(r.DB), sigs(r.DBX), sigs(r.VendorDB)
	out.MokDig, out.MokXDig = dgs(r.MokDig), dgs(r.MokXDig)
	out.Kernels = make([]kernel, 0, len(r.Kernels))
	for _, k := range r.Kernels {
		out.Kernels = append(out.Kernels, kernel{x(k.ShimAuthcode), x(k.GrubAuthcode), x(k.KernelAuthcode),
			x(k.VmlinuzPlain), x(k.InitrdPlain), k.Cmdline, x(k.LoadOptionsPlain)})
	}
	return json.Marshal(out)
}

// String is a short description of a Digests for messages: "sha256:ab12…".
func (d Digests) String() string {
	algs := make([]string, 0, len(d))
	for a := range d {
		algs = append(algs, a)
	}
	sort.Strings(algs)
	var parts []string
	for _, a := range algs {
		parts = append(parts, a+":"+d[a])
	}
	return strings.Join(parts, ",")
}
