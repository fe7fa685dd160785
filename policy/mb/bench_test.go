package mb

import (
	"testing"
)

// BenchmarkParseReplayEvaluate measures what the verifier does per quote with a log: parse and replay
// it, compare the quoted PCRs and judge it against a reference state.
func BenchmarkParseReplayEvaluate(b *testing.B) {
	for _, name := range []string{vmLog, sbLog, klLog} {
		raw := readFile(b, name)
		l := mustParse(b, raw)
		ref, _, err := Generate(l, true)
		if err != nil {
			b.Fatal(err)
		}
		quoted := l.PCRs()[sha256Bank]
		pcrs, _ := PCRsToCheck(PolicyExample)
		b.Run(name[len("testdata/"):], func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				l, err := Parse(raw)
				if err != nil {
					b.Fatal(err)
				}
				if f := l.CheckPCRs(sha256Bank, quoted, pcrs); len(f) != 0 {
					b.Fatal(f)
				}
				if f := Evaluate(PolicyExample, ref, l); len(f) != 0 {
					b.Fatal(f)
				}
			}
		})
		b.Run("parse-only/"+name[len("testdata/"):], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
