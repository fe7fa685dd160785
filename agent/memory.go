package agent

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// madvPageout is Linux's MADV_PAGEOUT (5.4+): reclaim the given pages now, as memory pressure would.
const madvPageout = 21

// ReleaseStartupMemory hands back to the OS what the agent's start-up used and the running agent does
// not: it is meant to run once, after registration. It collects the start-up garbage and returns the free
// heap (debug.FreeOSMemory), then asks the kernel to reclaim the pages of the executable's read-only
// mappings (code, read-only data, function tables) that only this process maps. Start-up runs code the
// running agent never touches again (the initialisation of every role linked into the binary, the
// configuration parser, key creation, registration); those pages stay out. What serving the API needs is
// read back from the page cache or disk on first use and then stays resident as before. It returns the
// size of the mappings it advised; on a kernel without MADV_PAGEOUT it releases the heap only.
func ReleaseStartupMemory() (advised int, err error) {
	debug.FreeOSMemory()
	return releaseExecutablePages()
}

// releaseExecutablePages applies MADV_PAGEOUT to the read-only mappings of the running executable. The
// kernel skips pages that another process maps too, so nothing is taken from another process.
func releaseExecutablePages() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("release executable pages: %w", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("release executable pages: %w", err)
	}
	advised := 0
	for _, line := range strings.Split(string(maps), "\n") {
		start, end, ok := readOnlyMapping(line, exe)
		if !ok {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, start, end-start, madvPageout); errno != 0 {
			if errors.Is(errno, syscall.EINVAL) && advised == 0 {
				return 0, nil // kernel older than 5.4: nothing to do
			}
			return advised, fmt.Errorf("release executable pages: madvise %x-%x: %w", start, end, errno)
		}
		advised += int(end - start)
	}
	return advised, nil
}

// readOnlyMapping parses one /proc/self/maps line ("start-end perms offset dev inode path") and reports
// the range of a mapping of path that is not writable (writable ones hold the program's variables).
func readOnlyMapping(line, path string) (start, end uintptr, ok bool) {
	f := strings.Fields(line)
	if len(f) < 6 || !strings.HasSuffix(line, " "+path) || len(f[1]) != 4 || f[1][0] != 'r' || f[1][1] != '-' {
		return 0, 0, false
	}
	lo, hi, found := strings.Cut(f[0], "-")
	a, err1 := strconv.ParseUint(lo, 16, 64)
	b, err2 := strconv.ParseUint(hi, 16, 64)
	if !found || err1 != nil || err2 != nil || b <= a {
		return 0, 0, false
	}
	return uintptr(a), uintptr(b), true
}
