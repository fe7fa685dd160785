package policy

import (
	"errors"
	"strings"
	"testing"
)

const (
	zero32 = "0000000000000000000000000000000000000000000000000000000000000000"
	ff32   = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
	zero20 = "0000000000000000000000000000000000000000"
)

func TestParseTPMPolicy(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		mask     uint32
		pcrs     map[int]int // pcr -> number of values
		err      string
	}{
		{name: "empty", in: "", mask: 0},
		{name: "empty object", in: "{}", mask: 0},
		{name: "string and list", in: `{"15": ["` + zero32 + `", "` + zero20 + `"], "7": "` + strings.ToUpper(ff32) + `"}`, mask: 1<<15 | 1<<7, pcrs: map[int]int{15: 2, 7: 1}},
		{name: "stored form with mask", in: `{"15": ["` + zero32 + `"], "mask": "0x408400"}`, mask: 0x408400, pcrs: map[int]int{15: 1}},
		{name: "0x prefix on value", in: `{"0": "0x` + zero32 + `"}`, mask: 1, pcrs: map[int]int{0: 1}},
		{name: "PCR 10", in: `{"10": "` + zero32 + `"}`, err: "PCR 10"},
		{name: "PCR 16", in: `{"16": "` + zero32 + `"}`, err: "PCR 16"},
		{name: "PCR 24", in: `{"24": "` + zero32 + `"}`, err: "not a PCR number"},
		{name: "negative", in: `{"-1": "` + zero32 + `"}`, err: "not a PCR number"},
		{name: "leading zero", in: `{"07": "` + zero32 + `"}`, err: "not a PCR number"},
		{name: "not hex", in: `{"7": "zz"}`, err: "not a SHA"},
		{name: "odd length", in: `{"7": "abc"}`, err: "not a SHA"},
		{name: "wrong digest size", in: `{"7": "abcd"}`, err: "not a SHA"},
		{name: "number value", in: `{"7": 5}`, err: "want a hex string"},
		{name: "empty list", in: `{"7": []}`, err: "no allowed value"},
		{name: "bad mask", in: `{"mask": "0xZZ"}`, err: "not a hex PCR mask"},
		{name: "mask above 23", in: `{"mask": "0x1000000"}`, err: "above 23"},
		{name: "not an object", in: `[1,2]`, err: "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseTPMPolicy(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrBadTPMPolicy) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Mask != tc.mask {
				t.Errorf("mask %s, want %s", FormatMask(p.Mask), FormatMask(tc.mask))
			}
			for pcr, n := range tc.pcrs {
				if len(p.PCRs[pcr]) != n {
					t.Errorf("PCR %d: %v", pcr, p.PCRs[pcr])
				}
				for _, v := range p.PCRs[pcr] {
					if v != strings.ToLower(v) || strings.HasPrefix(v, "0x") {
						t.Errorf("value not normalised: %q", v)
					}
				}
			}
			// The stored JSON form parses back to the same policy.
			back, err := ParseTPMPolicy(p.JSON())
			if err != nil || back.Mask != p.Mask || len(back.PCRs) != len(p.PCRs) {
				t.Errorf("round trip: %+v, %v", back, err)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	p, err := ParseTPMPolicy(`{"15": ["` + zero32 + `", "` + zero20 + `"], "7": "` + ff32 + `", "0": "` + zero32 + `"}`)
	if err != nil {
		t.Fatal(err)
	}
	fails := p.Check(map[int]string{15: zero32, 7: zero32, 16: ff32}, map[int]bool{0: false})
	if len(fails) != 2 {
		t.Fatalf("fails = %+v", fails)
	}
	if fails[0].EventID != "pcr_validation.invalid_pcr_7" || fails[0].Context["got"] != zero32 {
		t.Errorf("first failure %+v", fails[0])
	}
	if fails[1].EventID != "pcr_validation.missing_pcrs" || !strings.Contains(fails[1].Message(), "[0]") {
		t.Errorf("second failure %+v (%s)", fails[1], fails[1].Message())
	}
	if got := p.Check(map[int]string{15: strings.ToUpper(zero32), 7: ff32, 0: zero32}, nil); len(got) != 0 {
		t.Errorf("matching PCRs failed: %+v", got)
	}
	if got := p.Check(map[int]string{15: zero32, 7: ff32}, map[int]bool{0: true}); len(got) != 0 {
		t.Errorf("skipped PCR reported: %+v", got)
	}
}

func TestMask(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		ok   bool
	}{{"0x408400", 0x408400, true}, {"408400", 0x408400, true}, {"0x0", 0, true}, {"0xffffff", 0xffffff, true}, {"", 0, false}, {"0x", 0, false}, {"0x1ffffff", 0, false}, {"0xfffffffff", 0, false}, {"g", 0, false}} {
		got, err := ParseMask(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseMask(%q) = %x, %v", tc.in, got, err)
		}
	}
	if FormatMask(0x8400) != "0x8400" || FormatMask(0) != "0x0" {
		t.Error("FormatMask")
	}
	if got := MaskPCRs(0x8401); len(got) != 3 || got[0] != 0 || got[1] != 10 || got[2] != 15 {
		t.Errorf("MaskPCRs = %v", got)
	}
}

func FuzzParseTPMPolicy(f *testing.F) {
	f.Add(`{"15": ["` + zero32 + `"], "mask": "0x408400"}`)
	f.Add(`{"7": "` + ff32 + `"}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseTPMPolicy(s)
		if err != nil {
			return
		}
		if _, err := ParseTPMPolicy(p.JSON()); err != nil {
			t.Fatalf("re-parse of %q: %v", p.JSON(), err)
		}
		for pcr := range p.PCRs {
			if pcr == IMAPCR || pcr == DataPCR || p.Mask&(1<<pcr) == 0 {
				t.Fatalf("bad PCR %d accepted (mask %x)", pcr, p.Mask)
			}
		}
	})
}
