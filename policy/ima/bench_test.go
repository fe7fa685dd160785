package ima

import (
	"bytes"
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"
)

const (
	benchEntries = 100_000
	benchDigests = 50_000
)

// benchLog builds a deterministic ima-ng log of n entries over `paths` distinct files, and a policy
// listing every file's digest: the shape of a real system (a boot measures each file about twice).
func benchLog(n, paths int) ([]byte, *RuntimePolicy) {
	p := policyWith(nil)
	var log bytes.Buffer
	var data []byte
	for i := range paths {
		path := fmt.Sprintf("/usr/lib/x86_64-linux-gnu/pkg%05d/lib%05d.so.1", i/8, i)
		d := sha256.Sum256([]byte(path))
		p.Digests[path] = []string{hex.EncodeToString(d[:])}
	}
	for i := range n {
		path := fmt.Sprintf("/usr/lib/x86_64-linux-gnu/pkg%05d/lib%05d.so.1", (i%paths)/8, i%paths)
		d := sha256.Sum256([]byte(path))
		data = data[:0]
		data = binary.LittleEndian.AppendUint32(data, uint32(len("sha256")+2+len(d)))
		data = append(data, "sha256:\x00"...)
		data = append(data, d[:]...)
		data = binary.LittleEndian.AppendUint32(data, uint32(len(path)+1))
		data = append(data, path...)
		data = append(data, 0)
		th := sha1.Sum(data)
		fmt.Fprintf(&log, "10 %x ima-ng sha256:%x %s\n", th, d, path)
	}
	return log.Bytes(), p
}

// BenchmarkAttest measures what the verifier does with a full log per poll: parse every entry,
// rebuild its template data and check the template hash, replay PCR 10 in the SHA-256 bank and judge
// every entry against a 50,000-digest policy. A log in memory is replayed in the template-hash mode
// (the padded-SHA-1 mode only if that fails); a streamed one in both modes at once.
func BenchmarkAttest(b *testing.B) {
	log, p := benchLog(benchEntries, benchDigests)
	c := MustCompile(p)
	quote, err := Replay(bytes.NewReader(log), crypto.SHA256)
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []struct {
		name   string
		reader bool
	}{{"log in memory", false}, {"reader, both extend modes", true}} {
		b.Run(mode.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(log)))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			for b.Loop() {
				ev := Evidence{Log: log, Bank: crypto.SHA256, PCR10: quote[crypto.SHA256]}
				if mode.reader {
					ev.Reader = bytes.NewReader(log)
				}
				res := Attest(State{}, ev, c, Options{})
				if len(res.Failures) != 0 || res.Matched != benchEntries {
					b.Fatal(res.Failures)
				}
			}
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			entries := float64(b.N) * benchEntries
			b.ReportMetric(entries/elapsed.Seconds(), "entries/s")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/entries, "allocs/entry")
		})
	}
}

// BenchmarkParse measures the parser alone (template data rebuilt, template hash checked).
func BenchmarkParse(b *testing.B) {
	log, _ := benchLog(benchEntries, benchDigests)
	b.ReportAllocs()
	b.SetBytes(int64(len(log)))
	start := time.Now()
	for b.Loop() {
		p := NewBytesParser(log, 0)
		for {
			if _, err := p.Next(); err != nil {
				break
			}
		}
	}
	b.ReportMetric(float64(b.N)*benchEntries/time.Since(start).Seconds(), "entries/s")
}

// BenchmarkCompile measures building the shared Compiled form of a 50,000-digest policy from JSON.
func BenchmarkCompile(b *testing.B) {
	_, p := benchLog(0, benchDigests)
	raw, err := json.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		p, err := DecodeRuntimePolicy(raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Compile(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMemoryStableAcrossPolls: incremental polls keep a state of constant size and allocate the
// same per poll, whatever the number of polls before.
func TestMemoryStableAcrossPolls(t *testing.T) {
	log, p := benchLog(3000, 500)
	c := MustCompile(p)
	lines := bytes.SplitAfter(log, []byte("\n"))
	var st State
	pcr := make([]byte, 32)
	next := 0
	poll := func(n int) Result {
		var chunk []byte
		for _, l := range lines[next : next+n] {
			chunk = append(chunk, l...)
		}
		for _, l := range lines[next : next+n] {
			e, err := ParseLine(bytes.TrimSuffix(l, []byte("\n")))
			if err != nil {
				t.Fatal(err)
			}
			extend(crypto.SHA256, pcr, e.ExtendValue(crypto.SHA256, nil))
		}
		res := Attest(st, Evidence{Log: chunk, FirstEntry: next, Bank: crypto.SHA256, PCR10: bytes.Clone(pcr)}, c, Options{})
		if len(res.Failures) != 0 {
			t.Fatal(res.Failures)
		}
		st, next = res.State, next+n
		return res
	}
	var sizes []int
	for range 100 {
		poll(10)
		b, _ := json.Marshal(st)
		sizes = append(sizes, len(b))
	}
	for _, s := range sizes[1:] {
		if s > sizes[0]+4 { // next_entry gains digits
			t.Fatalf("state grew from %d to %d bytes", sizes[0], s)
		}
	}
	early := testing.AllocsPerRun(1, func() {})
	_ = early
	a1 := allocsOfPoll(t, poll)
	for range 100 {
		poll(10)
	}
	a2 := allocsOfPoll(t, poll)
	if a2 > a1+2 {
		t.Fatalf("allocations per poll grew from %v to %v", a1, a2)
	}
}

func allocsOfPoll(t *testing.T, poll func(int) Result) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	poll(10)
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs
}
