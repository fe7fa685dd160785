package mb

import (
	"bytes"
	"encoding/binary"
	"slices"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
)

// attestBackend parses with go-attestation's attest.ParseEventLog.
type attestBackend struct{}

func (attestBackend) parse(raw []byte) (bool, []tpm2.TPMAlgID, []Event, error) {
	el, err := attest.ParseEventLog(raw)
	if err != nil {
		return false, nil, nil, err
	}
	// go-attestation drops the Spec ID header of a crypto-agile log and keeps the first event of a
	// legacy one; it tells them apart exactly like this.
	legacy := !(binary.LittleEndian.Uint32(raw[4:8]) == uint32(EvNoAction) &&
		bytes.HasPrefix(raw[32:], []byte("Spec ID Event03\x00")))
	var hdrBanks []tpm2.TPMAlgID
	for _, a := range el.Algs {
		b := tpm2.TPMAlgID(a)
		if legacy {
			b = tpm2.TPMAlgSHA1
		}
		if !slices.Contains(hdrBanks, b) {
			hdrBanks = append(hdrBanks, b)
		}
	}
	var events []Event
	first := 1
	if legacy {
		first = 0
	}
	for _, b := range hdrBanks {
		evs := el.Events(attest.HashAlg(b))
		if events == nil {
			events = make([]Event, len(evs))
			for i, e := range evs {
				events[i] = Event{Num: first + i, PCR: e.Index, Type: EventType(e.Type), Data: e.Data}
			}
		}
		for i, e := range evs {
			if i < len(events) && e.Digest != nil {
				events[i].Digests = append(events[i].Digests, Digest{Bank: b, Value: e.Digest})
			}
		}
	}
	return legacy, hdrBanks, events, nil
}
