package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/google/go-tpm/tpm2"
)

// The PCR blob of Keylime's quote string is the in-memory dump of tpm2-tools' tpm2_quote -o output
// (little-endian C structs with fixed-size arrays):
//
//	TPML_PCR_SELECTION  u32 count | 16 × { u16 hash | u8 sizeofSelect | u8 pcrSelect[4] | u8 pad }  = 132 bytes
//	u32 n                                                                                      =   4 bytes
//	n × TPML_DIGEST     u32 count | 8 × { u16 size | u8 buffer[64] }                            = 532 bytes each
//
// Digests follow the selection order (banks in order, PCRs ascending), at most 8 per TPML_DIGEST.
const (
	selectionSlots = 16
	selectionSize  = 4 + selectionSlots*8
	digestSlots    = 8
	digestListSize = 4 + digestSlots*(2+64)
	maxDigestLists = 16
)

// ErrBadPCRBlob wraps every PCR blob parse error.
var ErrBadPCRBlob = errors.New("invalid PCR blob")

// PCRBank is the values of some PCRs of one hash bank.
type PCRBank struct {
	Alg    tpm2.TPMAlgID
	Values map[int][]byte
}

// PCRs returns the bank's PCR numbers in ascending order.
func (b PCRBank) PCRs() []int {
	pcrs := make([]int, 0, len(b.Values))
	for p := range b.Values {
		pcrs = append(pcrs, p)
	}
	sort.Ints(pcrs)
	return pcrs
}

// MarshalPCRBlob encodes banks in the tpm2-tools layout. PCR numbers must be 0-23 and every value must
// have its bank's digest size.
func MarshalPCRBlob(banks []PCRBank) ([]byte, error) {
	if len(banks) > selectionSlots {
		return nil, fmt.Errorf("%w: %d banks", ErrBadPCRBlob, len(banks))
	}
	out := make([]byte, selectionSize, selectionSize+4+digestListSize)
	binary.LittleEndian.PutUint32(out, uint32(len(banks)))
	var digests [][]byte
	for i, b := range banks {
		size, err := digestSize(b.Alg)
		if err != nil {
			return nil, err
		}
		slot := out[4+i*8:]
		binary.LittleEndian.PutUint16(slot, uint16(b.Alg))
		slot[2] = 3
		for _, p := range b.PCRs() {
			if p < 0 || p > 23 {
				return nil, fmt.Errorf("%w: PCR %d", ErrBadPCRBlob, p)
			}
			if len(b.Values[p]) != size {
				return nil, fmt.Errorf("%w: PCR %d value has %d bytes, want %d", ErrBadPCRBlob, p, len(b.Values[p]), size)
			}
			slot[3+p/8] |= 1 << (p % 8)
			digests = append(digests, b.Values[p])
		}
	}
	lists := (len(digests) + digestSlots - 1) / digestSlots
	out = binary.LittleEndian.AppendUint32(out, uint32(lists))
	for l := 0; l < lists; l++ {
		list := make([]byte, digestListSize)
		chunk := digests[l*digestSlots : min((l+1)*digestSlots, len(digests))]
		binary.LittleEndian.PutUint32(list, uint32(len(chunk)))
		for i, d := range chunk {
			off := 4 + i*66
			binary.LittleEndian.PutUint16(list[off:], uint16(len(d)))
			copy(list[off+2:], d)
		}
		out = append(out, list...)
	}
	return out, nil
}

// ParsePCRBlob decodes a tpm2-tools PCR blob. It is strict: the length must be exact, every selection
// must use 0 or 3 select bytes (as Keylime's parser requires) and a known hash, each digest must have its
// bank's size, and the number of digests must equal the number of selected PCRs.
func ParsePCRBlob(b []byte) ([]PCRBank, error) {
	if len(b) < selectionSize+4 {
		return nil, fmt.Errorf("%w: %d bytes, too short", ErrBadPCRBlob, len(b))
	}
	count := binary.LittleEndian.Uint32(b)
	if count > selectionSlots {
		return nil, fmt.Errorf("%w: %d PCR selections", ErrBadPCRBlob, count)
	}
	n := binary.LittleEndian.Uint32(b[selectionSize:])
	if n > maxDigestLists {
		return nil, fmt.Errorf("%w: %d digest lists", ErrBadPCRBlob, n)
	}
	if want := selectionSize + 4 + int(n)*digestListSize; len(b) != want {
		return nil, fmt.Errorf("%w: %d bytes, want %d for %d digest lists", ErrBadPCRBlob, len(b), want, n)
	}
	type want struct {
		bank int
		pcr  int
		size int
	}
	var wants []want
	banks := make([]PCRBank, count)
	for i := 0; i < int(count); i++ {
		slot := b[4+i*8:]
		alg := tpm2.TPMAlgID(binary.LittleEndian.Uint16(slot))
		size, err := digestSize(alg)
		if err != nil {
			return nil, err
		}
		sizeofSelect := slot[2]
		if sizeofSelect != 0 && sizeofSelect != 3 {
			return nil, fmt.Errorf("%w: selection %d has sizeofSelect %d", ErrBadPCRBlob, i, sizeofSelect)
		}
		for j := i - 1; j >= 0; j-- {
			if banks[j].Alg == alg {
				return nil, fmt.Errorf("%w: bank %s selected twice", ErrBadPCRBlob, HashName(alg))
			}
		}
		banks[i] = PCRBank{Alg: alg, Values: map[int][]byte{}}
		for p := 0; p < 8*int(sizeofSelect); p++ {
			if slot[3+p/8]&(1<<(p%8)) != 0 {
				wants = append(wants, want{bank: i, pcr: p, size: size})
			}
		}
	}
	next := 0
	for l := 0; l < int(n); l++ {
		list := b[selectionSize+4+l*digestListSize:]
		c := binary.LittleEndian.Uint32(list)
		if c > digestSlots {
			return nil, fmt.Errorf("%w: digest list %d has %d digests", ErrBadPCRBlob, l, c)
		}
		for i := 0; i < int(c); i++ {
			off := 4 + i*66
			size := int(binary.LittleEndian.Uint16(list[off:]))
			if next >= len(wants) {
				return nil, fmt.Errorf("%w: more digests than selected PCRs", ErrBadPCRBlob)
			}
			w := wants[next]
			if size != w.size {
				return nil, fmt.Errorf("%w: PCR %d digest has %d bytes, want %d", ErrBadPCRBlob, w.pcr, size, w.size)
			}
			banks[w.bank].Values[w.pcr] = append([]byte(nil), list[off+2:off+2+size]...)
			next++
		}
	}
	if next != len(wants) {
		return nil, fmt.Errorf("%w: %d digests for %d selected PCRs", ErrBadPCRBlob, next, len(wants))
	}
	return banks, nil
}
