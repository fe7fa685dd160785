package mb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// MaxLogSize bounds the event logs Parse accepts (real logs are 5–100 KiB).
const MaxLogSize = 16 << 20

// ErrInvalidLog wraps every reason Parse refuses an event log.
var ErrInvalidLog = errors.New("invalid boot event log")

// Digest is one digest of an event in one PCR bank.
type Digest struct {
	Bank  tpm2.TPMAlgID
	Value []byte
}

// Event is one entry of a boot event log.
type Event struct {
	// Num numbers events as tpm2_eventlog does: in a crypto-agile log the Spec ID header is event 0
	// and the first real event is 1; in a legacy SHA-1 log the first event is 0.
	Num int
	// PCR is the PCR the event extends (or would, for EV_NO_ACTION).
	PCR int
	// Type is the event type as logged (untrusted, like everything in the log).
	Type EventType
	// Digests are the event's digests in log order, one per bank.
	Digests []Digest
	// Data is the event data.
	Data []byte
}

// Digest returns the event's digest in bank, or nil.
func (e *Event) Digest(bank tpm2.TPMAlgID) []byte {
	for _, d := range e.Digests {
		if d.Bank == bank {
			return d.Value
		}
	}
	return nil
}

// Measured reports whether the event extends its PCR (every type except EV_NO_ACTION).
func (e *Event) Measured() bool { return e.Type != EvNoAction }

// Describe names the event for messages: "event 12 (PCR 7, EV_EFI_VARIABLE_DRIVER_CONFIG)".
func (e *Event) Describe() string {
	return fmt.Sprintf("event %d (PCR %d, %s)", e.Num, e.PCR, e.Type)
}

// Log is a parsed boot event log with its replayed PCR values.
type Log struct {
	// Legacy is true for a TCG 1.2 SHA-1 log without a Spec ID header.
	Legacy bool
	// Banks are the PCR banks the log's header declares, in header order (sha1 for a legacy log).
	Banks []tpm2.TPMAlgID
	// Events are all entries after the Spec ID header, EV_NO_ACTION included, in log order.
	Events []Event
	// StartupLocality is the locality TPM2_Startup came from (StartupLocality event), 0 without one.
	StartupLocality int
	// Notes say what replay had to leave out (banks with missing digests, PCR indexes out of range, …).
	Notes []string

	pcrs PCRValues
}

// PCRValues maps a PCR bank to PCR index → value.
type PCRValues map[tpm2.TPMAlgID]map[int][]byte

// PCRs returns the values the log's measurements give, per bank, for every PCR the log extends. A bank
// some measured event has no digest for is left out (and named in Notes).
func (l *Log) PCRs() PCRValues { return l.pcrs }

// Replayed returns a copy of l without its events: the banks and the replayed PCR values, enough for
// CheckPCRs, PCRs and CheckParsed without evaluation. A verifier keeps it per agent instead of parsing
// the same boot log again on every quote.
func (l *Log) Replayed() *Log {
	return &Log{Legacy: l.Legacy, Banks: l.Banks, StartupLocality: l.StartupLocality, pcrs: l.pcrs}
}

// backend turns raw log bytes into events: the go-attestation parser today, go-eventlog later.
type backend interface {
	parse(raw []byte) (legacy bool, banks []tpm2.TPMAlgID, events []Event, err error)
}

// defaultBackend is the parser Parse uses.
var defaultBackend backend = attestBackend{}

// Parse parses a binary boot event log (/sys/kernel/security/tpm0/binary_bios_measurements) and
// replays it. A truncated, garbage or oversized log gives an error wrapping ErrInvalidLog; Parse never
// panics.
func Parse(raw []byte) (*Log, error) {
	return parseWith(defaultBackend, raw)
}

func parseWith(be backend, raw []byte) (l *Log, err error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: the log is empty", ErrInvalidLog)
	}
	if len(raw) > MaxLogSize {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d accepted", ErrInvalidLog, len(raw), MaxLogSize)
	}
	defer func() {
		if r := recover(); r != nil {
			l, err = nil, fmt.Errorf("%w: parser panic: %v", ErrInvalidLog, r)
		}
	}()
	legacy, hdrBanks, events, err := be.parse(raw)
	if err != nil {
		if looksLikeText(raw) {
			return nil, fmt.Errorf("%w: the data looks like text, not a binary event log (binary_bios_measurements)", ErrInvalidLog)
		}
		if where := frameError(raw); where != "" {
			return nil, fmt.Errorf("%w: %s (%v)", ErrInvalidLog, where, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidLog, err)
	}
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: the log has no events after its header", ErrInvalidLog)
	}
	l = &Log{Legacy: legacy, Banks: hdrBanks, Events: events}
	l.replay()
	return l, nil
}

// replay computes l.pcrs: PCR 0 starts at 00…0‖locality after a StartupLocality event, EV_NO_ACTION
// events are skipped, and a bank lacking a digest in any measured event is dropped.
func (l *Log) replay() {
	l.pcrs = PCRValues{}
	seenPCR0 := false
	for i := range l.Events {
		e := &l.Events[i]
		if e.Type == EvNoAction {
			if loc, ok := startupLocality(e); ok {
				if seenPCR0 {
					l.Notes = append(l.Notes, fmt.Sprintf("%s: StartupLocality after a PCR 0 measurement is ignored", e.Describe()))
				} else {
					l.StartupLocality = loc
				}
			}
			continue
		}
		if e.PCR == 0 {
			seenPCR0 = true
		}
	}
	for _, bank := range l.Banks {
		if _, ok := bankHash(bank); !ok {
			l.Notes = append(l.Notes, fmt.Sprintf("bank %s is not replayed (unsupported hash)", BankName(bank)))
			continue
		}
		vals, missing := replayBank(l.Events, bank, byte(l.StartupLocality))
		if missing != nil {
			l.Notes = append(l.Notes, fmt.Sprintf("bank %s is not replayed: %s has no %s digest", BankName(bank), missing.Describe(), BankName(bank)))
			continue
		}
		l.pcrs[bank] = vals
	}
	for i := range l.Events {
		if e := &l.Events[i]; e.Measured() && (e.PCR < 0 || e.PCR >= numPCRs) {
			l.Notes = append(l.Notes, fmt.Sprintf("%s: PCR index out of range 0-%d, not replayed", e.Describe(), numPCRs-1))
		}
	}
}

// looksLikeText reports whether the first bytes are printable ASCII, which no event header is.
func looksLikeText(raw []byte) bool {
	n := min(len(raw), 32)
	for _, c := range raw[:n] {
		if (c < 0x20 || c > 0x7e) && c != '\n' && c != '\r' && c != '\t' {
			return false
		}
	}
	return n >= 8
}

// numPCRs is the number of PCRs of a PC Client TPM.
const numPCRs = 24

func replayBank(events []Event, bank tpm2.TPMAlgID, locality byte) (map[int][]byte, *Event) {
	vals := map[int][]byte{}
	size := len(hashOf(bank))
	for i := range events {
		e := &events[i]
		if !e.Measured() || e.PCR < 0 || e.PCR >= numPCRs {
			continue
		}
		d := e.Digest(bank)
		if len(d) != size {
			return nil, e
		}
		cur, ok := vals[e.PCR]
		if !ok {
			cur = make([]byte, size)
			if e.PCR == 0 {
				cur[size-1] = locality
			}
		}
		vals[e.PCR] = hashOf(bank, cur, d)
	}
	return vals, nil
}

// startupLocalitySig is TCG_EfiStartupLocalityEvent.Signature.
var startupLocalitySig = []byte("StartupLocality\x00")

// startupLocality decodes a StartupLocality EV_NO_ACTION event of PCR 0.
func startupLocality(e *Event) (int, bool) {
	if e.Type != EvNoAction || e.PCR != 0 || len(e.Data) != len(startupLocalitySig)+1 || !bytes.HasPrefix(e.Data, startupLocalitySig) {
		return 0, false
	}
	return int(e.Data[len(startupLocalitySig)]), true
}

// frameError walks the event framing of raw (without interpreting data) to say where a log breaks:
// "event 37 at offset 5120: …". It returns "" when the framing is sound or the header is unusable.
func frameError(raw []byte) string {
	const legacyHdr = 32 // PCRIndex, EventType, SHA1 digest, EventSize
	if len(raw) < legacyHdr {
		return fmt.Sprintf("the log is %d bytes, shorter than one event header", len(raw))
	}
	size := int(binary.LittleEndian.Uint32(raw[28:32]))
	if size > len(raw)-legacyHdr {
		return fmt.Sprintf("event 0 at offset 0: event data of %d bytes, only %d left", size, len(raw)-legacyHdr)
	}
	first := raw[legacyHdr : legacyHdr+size]
	off := legacyHdr + size
	sizes, agile := specIDDigestSizes(raw, first)
	if !agile {
		for n := 1; off < len(raw); n++ {
			if len(raw)-off < legacyHdr {
				return fmt.Sprintf("event %d at offset %d: truncated header (%d bytes left)", n, off, len(raw)-off)
			}
			size := int(binary.LittleEndian.Uint32(raw[off+28 : off+32]))
			if size > len(raw)-off-legacyHdr {
				return fmt.Sprintf("event %d at offset %d: event data of %d bytes, only %d left", n, off, size, len(raw)-off-legacyHdr)
			}
			off += legacyHdr + size
		}
		return ""
	}
	for n := 1; off < len(raw); n++ {
		start := off
		if len(raw)-off < 12 {
			return fmt.Sprintf("event %d at offset %d: truncated header (%d bytes left)", n, start, len(raw)-off)
		}
		count := int(binary.LittleEndian.Uint32(raw[off+8 : off+12]))
		off += 12
		for i := 0; i < count; i++ {
			if len(raw)-off < 2 {
				return fmt.Sprintf("event %d at offset %d: truncated digest list", n, start)
			}
			alg := binary.LittleEndian.Uint16(raw[off : off+2])
			sz, ok := sizes[alg]
			if !ok {
				return fmt.Sprintf("event %d at offset %d: digest algorithm 0x%04x is not declared in the Spec ID header", n, start, alg)
			}
			off += 2
			if len(raw)-off < sz {
				return fmt.Sprintf("event %d at offset %d: truncated %d-byte digest", n, start, sz)
			}
			off += sz
		}
		if len(raw)-off < 4 {
			return fmt.Sprintf("event %d at offset %d: truncated event size", n, start)
		}
		size := int(binary.LittleEndian.Uint32(raw[off : off+4]))
		off += 4
		if size > len(raw)-off {
			return fmt.Sprintf("event %d at offset %d: event data of %d bytes, only %d left", n, start, size, len(raw)-off)
		}
		off += size
	}
	return ""
}

// specIDDigestSizes reads the algorithm table of a Spec ID Event03 header (the first event's data);
// ok is false when the first event is not one.
func specIDDigestSizes(raw, data []byte) (map[uint16]int, bool) {
	if binary.LittleEndian.Uint32(raw[4:8]) != uint32(EvNoAction) || !bytes.HasPrefix(data, []byte("Spec ID Event03\x00")) || len(data) < 28 {
		return nil, false
	}
	n := int(binary.LittleEndian.Uint32(data[24:28]))
	if n > (len(data)-28)/4 {
		return nil, false
	}
	sizes := map[uint16]int{}
	for i := 0; i < n; i++ {
		p := data[28+4*i:]
		sizes[binary.LittleEndian.Uint16(p)] = int(binary.LittleEndian.Uint16(p[2:]))
	}
	return sizes, true
}

// sortedBanks returns the banks of v in the package's order.
func (v PCRValues) sortedBanks() []tpm2.TPMAlgID {
	var out []tpm2.TPMAlgID
	for _, b := range banks {
		if _, ok := v[b]; ok {
			out = append(out, b)
		}
	}
	return out
}

// Hex returns the values as Keylime's JSON shape: bank name → PCR number (decimal string) → lower-case hex.
func (v PCRValues) Hex() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, b := range v.sortedBanks() {
		m := map[string]string{}
		for pcr, val := range v[b] {
			m[fmt.Sprint(pcr)] = fmt.Sprintf("%x", val)
		}
		out[BankName(b)] = m
	}
	return out
}

// PCRsOf lists the PCRs the log extends in bank, ascending.
func (v PCRValues) PCRsOf(bank tpm2.TPMAlgID) []int {
	var out []int
	for p := range v[bank] {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
