package softagent

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// The ima-ng template data is byte-exact: Keylime's own test vector (test/test_ima_ast.py) hashes to the
// logged template hash.
func TestIMATemplateData(t *testing.T) {
	digest, _ := hex.DecodeString("bc026ae66d81713e4e852465e980784dc96651f8")
	data := imaTemplateData(nil, "sha1", "/usr/lib/systemd/systemd", digest)
	want := "1a000000" + hex.EncodeToString([]byte("sha1:\x00")) + "bc026ae66d81713e4e852465e980784dc96651f8" +
		"19000000" + hex.EncodeToString([]byte("/usr/lib/systemd/systemd\x00"))
	if got := hex.EncodeToString(data); got != want {
		t.Errorf("template data\n got %s\nwant %s", got, want)
	}
	if sum := sha1.Sum(data); hex.EncodeToString(sum[:]) != "7936eb315fb4e74b99e7d461bc5c96049e1ee092" {
		t.Errorf("template hash %x", sum)
	}

	d := sha256.Sum256([]byte("content"))
	line, tdata := IMAEntry("/opt/my file", d)
	th := sha1.Sum(tdata)
	wantLine := "10 " + hex.EncodeToString(th[:]) + " ima-ng sha256:" + hex.EncodeToString(d[:]) + " /opt/my_file\n"
	if line != wantLine {
		t.Errorf("line %q, want %q", line, wantLine)
	}
	if !strings.Contains(string(tdata), "/opt/my_file\x00") {
		t.Errorf("template data does not hold the kernel's path: %q", tdata)
	}
}

// The log serves entries as the agent does: from an entry on, everything from 0 past the end, nothing
// new exactly at the end.
func TestIMALogFrom(t *testing.T) {
	tpm, err := NewTPM(ECC)
	if err != nil {
		t.Fatal(err)
	}
	var l imaLog
	files := DefaultIMAFiles()
	for i := range 3 {
		if err := l.add(tpm, files[i].Path, files[i].Digest); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.SplitAfter(string(l.text), "\n")[:3]
	tests := []struct {
		first     int
		text      string
		wantFirst int
	}{
		{0, strings.Join(lines, ""), 0},
		{1, lines[1] + lines[2], 1},
		{2, lines[2], 2},
		{3, "", 3},
		{4, strings.Join(lines, ""), 0},
	}
	for _, tt := range tests {
		text, first := l.from(tt.first)
		if text != tt.text || first != tt.wantFirst {
			t.Errorf("from(%d) = %q, %d; want %q, %d", tt.first, text, first, tt.text, tt.wantFirst)
		}
	}
}
