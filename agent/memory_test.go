package agent

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyMapping(t *testing.T) {
	const exe = "/usr/local/bin/keylime"
	tests := []struct {
		name       string
		line       string
		start, end uintptr
		ok         bool
	}{
		{"code", "00400000-009c5000 r-xp 00000000 fe:01 1234 /usr/local/bin/keylime", 0x400000, 0x9c5000, true},
		{"read-only data", "009c5000-00fe9000 r--p 005c5000 fe:01 1234 /usr/local/bin/keylime", 0x9c5000, 0xfe9000, true},
		{"variables", "00fe9000-0104f000 rw-p 00be9000 fe:01 1234 /usr/local/bin/keylime", 0, 0, false},
		{"another file", "00400000-009c5000 r-xp 00000000 fe:01 99 /usr/local/bin/keylime-old", 0, 0, false},
		{"same name in another directory", "00400000-009c5000 r-xp 00000000 fe:01 99 /opt/usr/local/bin/keylime", 0, 0, false},
		{"anonymous", "7f9b71920000-7f9b71b00000 rw-p 00000000 00:00 0", 0, 0, false},
		{"deleted executable", "00400000-009c5000 r-xp 00000000 fe:01 1234 /usr/local/bin/keylime (deleted)", 0, 0, false},
		{"bad range", "zz-009c5000 r-xp 00000000 fe:01 1234 /usr/local/bin/keylime", 0, 0, false},
		{"empty range", "009c5000-009c5000 r-xp 00000000 fe:01 1234 /usr/local/bin/keylime", 0, 0, false},
		{"empty line", "", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, end, ok := readOnlyMapping(tt.line, exe)
			if start != tt.start || end != tt.end || ok != tt.ok {
				t.Errorf("readOnlyMapping = %x, %x, %v; want %x, %x, %v", start, end, ok, tt.start, tt.end, tt.ok)
			}
		})
	}
}

// rssFileKB reads this process's file-backed resident set (RssFile in /proc/self/status).
func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("RssFile %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestReleaseExecutablePages releases the test binary's read-only pages and checks that the
// file-backed resident set shrank, and that the program keeps running (its code faults back in).
func TestReleaseExecutablePages(t *testing.T) {
	before := rssFileKB(t)
	advised, err := releaseExecutablePages()
	if err != nil {
		t.Fatal(err)
	}
	if advised == 0 {
		t.Skip("kernel without MADV_PAGEOUT (Linux < 5.4)")
	}
	after := rssFileKB(t)
	t.Logf("advised %d kB; RssFile %d kB -> %d kB", advised/1024, before, after)
	if after >= before {
		t.Errorf("RssFile %d kB -> %d kB: nothing released", before, after)
	}
	if !isAuthTag(strings.Repeat("ab", 48)) { // code that was paged out runs again
		t.Error("isAuthTag broken after the release")
	}
	// Read-ahead is off for the executable's read-only mappings (VmFlags "rr"), so what faults back in
	// is what runs.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	random, mappings := 0, 0
	inExe := false
	for _, line := range strings.Split(string(smaps), "\n") {
		if _, _, ok := readOnlyMapping(line, exe); ok {
			inExe, mappings = true, mappings+1
			continue
		}
		if flags, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			if inExe && slices.Contains(strings.Fields(flags), "rr") {
				random++
			}
			inExe = false
		}
	}
	if mappings == 0 || random != mappings {
		t.Errorf("%d of the executable's %d read-only mappings have read-ahead off", random, mappings)
	}
}
