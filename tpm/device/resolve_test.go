package device

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

// resolve finds the value a changing PCR had when quoted, one PCR at a time, and leaves the values
// alone when no candidate matches.
func TestResolve(t *testing.T) {
	val := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	quoted := map[int][]byte{0: val(0), 10: val(7), 15: val(1)}
	order := []int{0, 10, 15}
	digestOf := func(vals map[int][]byte) []byte {
		h := sha256.New()
		for _, p := range order {
			h.Write(vals[p])
		}
		return h.Sum(nil)
	}
	want := digestOf(quoted)
	for _, tc := range []struct {
		name     string
		proposed map[int][][]byte
		ok       bool
	}{
		{"quoted value among the candidates", map[int][][]byte{10: {val(5), val(7), val(9)}}, true},
		{"no candidate matches", map[int][][]byte{10: {val(5), val(9)}}, false},
		{"candidates for a PCR not quoted", map[int][][]byte{11: {val(7)}}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := map[int][]byte{0: val(0), 10: val(9), 15: val(1)} // PCR 10 moved on after the quote
			got := resolve(read, tc.proposed, func() []byte { return digestOf(read) }, want)
			if got != tc.ok {
				t.Fatalf("resolve = %v, want %v", got, tc.ok)
			}
			if tc.ok && !bytes.Equal(read[10], val(7)) {
				t.Fatalf("PCR 10 resolved to %x", read[10])
			}
			if !tc.ok && !bytes.Equal(read[10], val(9)) {
				t.Fatalf("PCR 10 changed to %x although nothing matched", read[10])
			}
		})
	}
}
