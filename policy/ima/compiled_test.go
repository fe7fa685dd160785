package ima

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"testing"
)

// TestHashCollisions forces every name into one hash: lookups stay exact.
func TestHashCollisions(t *testing.T) {
	p := policyWith(map[string][]string{
		"/a":  {"35f6036dcbb4d819a90cc3282659754ab1a225e6"},
		"/ab": {"45f6036dcbb4d819a90cc3282659754ab1a225e6"},
		"/b":  {"55f6036dcbb4d819a90cc3282659754ab1a225e6"},
	})
	c := MustCompile(p)
	var tb table
	tb.byHash = map[uint64]uint64{}
	// Re-index the digests table's names, all under hash 7.
	for name, v := range c.digests.byHash {
		_ = name
		c.indexHash(&tb, int(v>>32), int(uint32(v)), 7)
	}
	if len(tb.collide) != 3 || tb.byHash[7] != collided {
		t.Fatalf("collide %d", len(tb.collide))
	}
	for name, d := range map[string]string{"/a": "35", "/ab": "45", "/b": "55"} {
		packed, ok := c.packedHash(tb, []byte(name), 7)
		if !ok || hex.EncodeToString([]byte(packed[1:2])) != d {
			t.Fatalf("%s: %v %x", name, ok, packed)
		}
	}
	for _, name := range []string{"/", "/abc", "/c"} {
		if _, ok := c.packedHash(tb, []byte(name), 7); ok {
			t.Fatalf("%s found", name)
		}
	}
	// A name whose hash matches a stored one of another length is not confused with it.
	v := c.digests.byHash[hashOfName(c, "/ab")]
	tb2 := table{byHash: map[uint64]uint64{9: v}}
	if _, ok := c.packedHash(tb2, []byte("/a"), 9); ok {
		t.Fatal("/a found as /ab")
	}
}

func hashOfName(c *Compiled, name string) uint64 {
	for h, v := range c.digests.byHash {
		if c.arena[v>>32:v>>32+uint64(uint32(v))] == name {
			return h
		}
	}
	return 0
}

// TestCompiledShared: one Compiled serves many agents at once (run with -race).
func TestCompiledShared(t *testing.T) {
	log, p := benchLog(2000, 300)
	p.Excludes = []string{"/nothing/.*"}
	c := MustCompile(p)
	m, err := Replay(bytes.NewReader(log), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Result, 8)
	for range 8 {
		go func() {
			done <- Attest(State{}, Evidence{Log: log, Bank: crypto.SHA256, PCR10: m[crypto.SHA256]}, c, Options{})
		}()
	}
	for range 8 {
		if res := <-done; len(res.Failures) != 0 || res.Matched != 2000 {
			t.Fatal(res.Failures)
		}
	}
}
