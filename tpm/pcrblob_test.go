package tpm_test

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/tpm"
)

// Layout of the tpm2-tools PCR blob (see pcrblob.go), repeated here so that tests can poke at bytes.
const (
	blobSelSize  = 4 + 16*8
	blobListSize = 4 + 8*66
)

// quoteFixture returns tpm/testdata/quote/name, written by testdata/quote/gen.sh with tpm2-tools.
func quoteFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "quote", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return b
}

// pcrRead parses the YAML tpm2_pcrread printed (testdata/quote/pcrread.yaml): bank → PCR → value.
func pcrRead(t testing.TB) map[tpm2.TPMAlgID]map[int][]byte {
	t.Helper()
	out := map[tpm2.TPMAlgID]map[int][]byte{}
	var bank map[int][]byte
	sc := bufio.NewScanner(bytes.NewReader(quoteFixture(t, "pcrread.yaml")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutSuffix(line, ":"); ok {
			alg, _, err := tpm.HashByName(name)
			if err != nil {
				t.Fatalf("pcrread.yaml: %v", err)
			}
			bank = map[int][]byte{}
			out[alg] = bank
			continue
		}
		num, val, ok := strings.Cut(line, ":")
		if !ok || bank == nil {
			t.Fatalf("pcrread.yaml: unexpected line %q", line)
		}
		p, err := strconv.Atoi(strings.TrimSpace(num))
		if err != nil {
			t.Fatalf("pcrread.yaml: %q: %v", line, err)
		}
		v, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(val), "0x"))
		if err != nil {
			t.Fatalf("pcrread.yaml: %q: %v", line, err)
		}
		bank[p] = v
	}
	if len(out[tpm2.TPMAlgSHA1]) != 24 || len(out[tpm2.TPMAlgSHA256]) != 24 {
		t.Fatalf("pcrread.yaml: want 24 PCRs of sha1 and sha256, got %d and %d", len(out[tpm2.TPMAlgSHA1]), len(out[tpm2.TPMAlgSHA256]))
	}
	return out
}

// subset returns the values of pcrs from all.
func subset(all map[int][]byte, pcrs ...int) map[int][]byte {
	out := map[int][]byte{}
	for _, p := range pcrs {
		out[p] = all[p]
	}
	return out
}

func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// The PCR blobs tpm2_quote -o wrote hold the values tpm2_pcrread reported, and MarshalPCRBlob of those
// values reproduces each file byte for byte.
func TestPCRBlobGolden(t *testing.T) {
	read := pcrRead(t)
	sha1s, sha256s := read[tpm2.TPMAlgSHA1], read[tpm2.TPMAlgSHA256]
	// Sanity of the fixture itself: PCR 16 was reset and extended with H("nk"); 17-22 are all ones.
	for alg, bank := range read {
		h, _ := alg.Hash()
		inner := h.New()
		inner.Write([]byte("nk"))
		outer := h.New()
		outer.Write(make([]byte, h.Size()))
		outer.Write(inner.Sum(nil))
		if !bytes.Equal(bank[16], outer.Sum(nil)) {
			t.Errorf("fixture %s PCR 16 = %x, not the data-PCR value of \"nk\"", tpm.HashName(alg), bank[16])
		}
		if !bytes.Equal(bank[17], bytes.Repeat([]byte{0xff}, h.Size())) {
			t.Errorf("fixture %s PCR 17 = %x", tpm.HashName(alg), bank[17])
		}
	}
	tests := []struct {
		file  string
		lists int
		want  []tpm.PCRBank
	}{
		{"rsa-sha256-all.pcrs", 3, []tpm.PCRBank{{Alg: tpm2.TPMAlgSHA256, Values: sha256s}}},
		{"ecc-sha256-16.pcrs", 1, []tpm.PCRBank{{Alg: tpm2.TPMAlgSHA256, Values: subset(sha256s, 16)}}},
		{"rsa-multibank.pcrs", 2, []tpm.PCRBank{
			{Alg: tpm2.TPMAlgSHA1, Values: subset(sha1s, seq(0, 10)...)},
			{Alg: tpm2.TPMAlgSHA256, Values: subset(sha256s, 10, 16)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw := quoteFixture(t, tt.file)
			if n := binary.LittleEndian.Uint32(raw[blobSelSize:]); int(n) != tt.lists {
				t.Errorf("fixture has %d TPML_DIGESTs, want %d", n, tt.lists)
			}
			got, err := tpm.ParsePCRBlob(raw)
			if err != nil {
				t.Fatalf("ParsePCRBlob: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParsePCRBlob:\n got %s\nwant %s", fmtBanks(got), fmtBanks(tt.want))
			}
			again, err := tpm.MarshalPCRBlob(tt.want)
			if err != nil {
				t.Fatalf("MarshalPCRBlob: %v", err)
			}
			if !bytes.Equal(again, raw) {
				t.Errorf("MarshalPCRBlob differs from the tpm2-tools file at byte %d (%d vs %d bytes)", firstDiff(again, raw), len(again), len(raw))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func fmtBanks(banks []tpm.PCRBank) string {
	var sb strings.Builder
	for _, b := range banks {
		fmt.Fprintf(&sb, "%s{", tpm.HashName(b.Alg))
		for _, p := range b.PCRs() {
			fmt.Fprintf(&sb, " %d:%x", p, b.Values[p][:4])
		}
		sb.WriteString(" } ")
	}
	return sb.String()
}

// values returns distinct values of pcrs in bank alg, for building blobs.
func values(alg tpm2.TPMAlgID, pcrs ...int) map[int][]byte {
	out := map[int][]byte{}
	for _, p := range pcrs {
		switch alg {
		case tpm2.TPMAlgSHA1:
			s := sha1.Sum([]byte{byte(p)})
			out[p] = s[:]
		default:
			s := sha256.Sum256([]byte{byte(p), byte(alg)})
			h, _ := alg.Hash()
			out[p] = bytes.Repeat(s[:], 2)[:h.Size()]
		}
	}
	return out
}

func mustMarshal(t testing.TB, banks ...tpm.PCRBank) []byte {
	t.Helper()
	b, err := tpm.MarshalPCRBlob(banks)
	if err != nil {
		t.Fatalf("MarshalPCRBlob: %v", err)
	}
	return b
}

// edit returns a copy of b changed by f.
func edit(b []byte, f func(b []byte) []byte) []byte {
	return f(bytes.Clone(b))
}

func TestParsePCRBlob(t *testing.T) {
	one := mustMarshal(t, tpm.PCRBank{Alg: tpm2.TPMAlgSHA256, Values: values(tpm2.TPMAlgSHA256, 16)})
	multi := mustMarshal(t,
		tpm.PCRBank{Alg: tpm2.TPMAlgSHA1, Values: values(tpm2.TPMAlgSHA1, 0, 1, 2, 10)},
		tpm.PCRBank{Alg: tpm2.TPMAlgSHA256, Values: values(tpm2.TPMAlgSHA256, 10, 16)},
		tpm.PCRBank{Alg: tpm2.TPMAlgSHA384, Values: values(tpm2.TPMAlgSHA384, 23)},
	)
	all := mustMarshal(t, tpm.PCRBank{Alg: tpm2.TPMAlgSHA256, Values: values(tpm2.TPMAlgSHA256, seq(0, 23)...)})
	setU16 := func(off int, v uint16) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint16(b[off:], v); return b }
	}
	setU32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b }
	}
	setByte := func(off int, v byte) func([]byte) []byte {
		return func(b []byte) []byte { b[off] = v; return b }
	}
	firstList := blobSelSize + 4
	tests := []struct {
		name  string
		blob  []byte
		banks int // number of banks on success
		pcrs  int // total PCR values on success
		ok    bool
	}{
		{"single bank, PCR 16", one, 1, 1, true},
		{"three banks", multi, 3, 7, true},
		{"24 PCRs in 3 digest lists", all, 1, 24, true},
		{"no banks", mustMarshal(t), 0, 0, true},
		{"sizeofSelect 0 selects nothing", edit(mustMarshal(t, tpm.PCRBank{Alg: tpm2.TPMAlgSHA1}), setByte(4+2, 0)), 1, 0, true},
		{"empty", nil, 0, 0, false},
		{"too short for the selection", one[:blobSelSize], 0, 0, false},
		{"one byte short", one[:len(one)-1], 0, 0, false},
		{"one digest list missing", all[:len(all)-blobListSize], 0, 0, false},
		{"trailing byte", append(bytes.Clone(one), 0), 0, 0, false},
		{"trailing digest list", append(bytes.Clone(one), make([]byte, blobListSize)...), 0, 0, false},
		{"17 selections", edit(one, setU32(0, 17)), 0, 0, false},
		{"17 digest lists", edit(one, setU32(blobSelSize, 17)), 0, 0, false},
		{"digest count overflows list length", edit(all, setU32(blobSelSize, 0xffffffff)), 0, 0, false},
		{"sizeofSelect 4", edit(one, setByte(4+2, 4)), 0, 0, false},
		{"sizeofSelect 2", edit(one, setByte(4+2, 2)), 0, 0, false},
		{"unknown hash SM3", edit(one, setU16(4, uint16(tpm2.TPMAlgSM3256))), 0, 0, false},
		{"hash NULL", edit(one, setU16(4, uint16(tpm2.TPMAlgNull))), 0, 0, false},
		{"digest size 20 in sha256 bank", edit(one, setU16(firstList+4, 20)), 0, 0, false},
		{"digest size 65", edit(one, setU16(firstList+4, 65)), 0, 0, false},
		{"more digests than selected", edit(one, setU32(firstList, 2)), 0, 0, false},
		{"fewer digests than selected", edit(multi, setU32(firstList, 6)), 0, 0, false},
		{"9 digests in one list", edit(all, setU32(firstList, 9)), 0, 0, false},
		{"PCR selected without a digest", edit(one, setByte(4+3, 1)), 0, 0, false},
		{"duplicate bank", edit(multi, setU16(4+8, uint16(tpm2.TPMAlgSHA1))), 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			banks, err := tpm.ParsePCRBlob(tt.blob)
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParsePCRBlob accepted it: %s", fmtBanks(banks))
				}
				if !errors.Is(err, tpm.ErrBadPCRBlob) {
					t.Errorf("error %v does not wrap ErrBadPCRBlob", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePCRBlob: %v", err)
			}
			n := 0
			for _, b := range banks {
				n += len(b.Values)
			}
			if len(banks) != tt.banks || n != tt.pcrs {
				t.Errorf("got %d banks with %d values, want %d and %d", len(banks), n, tt.banks, tt.pcrs)
			}
		})
	}
}

func TestMarshalPCRBlob(t *testing.T) {
	tests := []struct {
		name  string
		banks []tpm.PCRBank
		ok    bool
	}{
		{"one PCR", []tpm.PCRBank{{Alg: tpm2.TPMAlgSHA256, Values: values(tpm2.TPMAlgSHA256, 16)}}, true},
		{"8 PCRs fill one list", []tpm.PCRBank{{Alg: tpm2.TPMAlgSHA1, Values: values(tpm2.TPMAlgSHA1, seq(0, 7)...)}}, true},
		{"9 PCRs need two lists", []tpm.PCRBank{{Alg: tpm2.TPMAlgSHA1, Values: values(tpm2.TPMAlgSHA1, seq(0, 8)...)}}, true},
		{"four full banks", []tpm.PCRBank{
			{Alg: tpm2.TPMAlgSHA1, Values: values(tpm2.TPMAlgSHA1, seq(0, 23)...)},
			{Alg: tpm2.TPMAlgSHA256, Values: values(tpm2.TPMAlgSHA256, seq(0, 23)...)},
			{Alg: tpm2.TPMAlgSHA384, Values: values(tpm2.TPMAlgSHA384, seq(0, 23)...)},
			{Alg: tpm2.TPMAlgSHA512, Values: values(tpm2.TPMAlgSHA512, seq(0, 23)...)},
		}, true},
		{"empty bank", []tpm.PCRBank{{Alg: tpm2.TPMAlgSHA256, Values: map[int][]byte{}}}, true},
		{"PCR 24", []tpm.PCRBank{{Alg: tpm2.TPMAlgSHA256, Values: map[int][]byte{24: make([]byte, 32)}}}, false},
		{"PCR -1", []tpm.PCRBank{{Alg: tpm2.TPMAlgSHA256, Values: map[int][]byte{-1: make([]byte, 32)}}}, false},
		{"short value", []tpm.PCRBank{{Alg: tpm2.TPMAlgSHA256, Values: map[int][]byte{3: make([]byte, 20)}}}, false},
		{"unknown hash", []tpm.PCRBank{{Alg: tpm2.TPMAlgSM3256, Values: map[int][]byte{3: make([]byte, 32)}}}, false},
		{"17 banks", make([]tpm.PCRBank, 17), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blob, err := tpm.MarshalPCRBlob(tt.banks)
			if !tt.ok {
				if err == nil {
					t.Fatal("MarshalPCRBlob accepted it")
				}
				if !errors.Is(err, tpm.ErrBadPCRBlob) {
					t.Errorf("error %v does not wrap ErrBadPCRBlob", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("MarshalPCRBlob: %v", err)
			}
			n := 0
			for _, b := range tt.banks {
				n += len(b.Values)
			}
			if want := blobSelSize + 4 + (n+7)/8*blobListSize; len(blob) != want {
				t.Errorf("blob is %d bytes, want %d", len(blob), want)
			}
			back, err := tpm.ParsePCRBlob(blob)
			if err != nil {
				t.Fatalf("ParsePCRBlob of MarshalPCRBlob: %v", err)
			}
			if !reflect.DeepEqual(back, tt.banks) {
				t.Errorf("round trip:\n got %s\nwant %s", fmtBanks(back), fmtBanks(tt.banks))
			}
		})
	}
}

// FuzzParsePCRBlob: ParsePCRBlob never panics, and whatever it accepts survives MarshalPCRBlob and a
// second parse unchanged.
func FuzzParsePCRBlob(f *testing.F) {
	for _, name := range []string{"rsa-sha256-all.pcrs", "ecc-sha256-16.pcrs", "rsa-multibank.pcrs"} {
		f.Add(quoteFixture(f, name))
	}
	f.Add(mustMarshal(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		banks, err := tpm.ParsePCRBlob(b)
		if err != nil {
			if !errors.Is(err, tpm.ErrBadPCRBlob) {
				t.Fatalf("error %v does not wrap ErrBadPCRBlob", err)
			}
			return
		}
		again, err := tpm.MarshalPCRBlob(banks)
		if err != nil {
			t.Fatalf("MarshalPCRBlob of a parsed blob: %v", err)
		}
		back, err := tpm.ParsePCRBlob(again)
		if err != nil {
			t.Fatalf("ParsePCRBlob of a marshalled blob: %v", err)
		}
		if !reflect.DeepEqual(back, banks) {
			t.Fatalf("round trip changed the banks:\n got %s\nwant %s", fmtBanks(back), fmtBanks(banks))
		}
	})
}
