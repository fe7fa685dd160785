package agent

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReleaseStartupMemory hands back to the OS what the agent's start-up used and the running agent does
// not: it is meant to run once, after registration. It collects the start-up garbage and returns the free
// heap (debug.FreeOSMemory), then releases the executable's pages (releaseExecutablePages). It returns
// the size of the mappings it advised; on a kernel without MADV_PAGEOUT it releases the heap only.
func ReleaseStartupMemory() (advised int, err error) {
	debug.FreeOSMemory()
	return releaseExecutablePages()
}

// releaseExecutablePages makes the executable's resident pages what the running agent really uses.
// Start-up runs code the running agent never touches again (the initialisation of every role linked into
// the binary, the configuration parser, key creation, registration), and the kernel read far more of the
// file than that around each page it faulted in. So, for the executable's read-only mappings (code,
// read-only data, function tables; writable ones hold the program's variables):
//   - MADV_PAGEOUT reclaims the pages only this process maps, as memory pressure would;
//   - MADV_RANDOM stops read-ahead, so a page faulted back in is read alone: otherwise the kernel reads
//     128 KiB around it and maps every cached page of the 64 KiB around it, and the few hundred scattered
//     pages serving the API would bring most of the binary back;
//   - POSIX_FADV_DONTNEED drops the file's cached pages that no process maps (those read ahead at
//     start-up and never used), which would otherwise still be mapped in around a fault.
//
// Pages another process maps (a registrar running the same file) are left alone by all three. What
// serving the API needs is read back on first use, one 4 KiB read per page (a few hundred in all, over
// the first quotes), and then stays resident as before.
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
		if err := madvise(start, end, unix.MADV_PAGEOUT); err != nil {
			if errors.Is(err, unix.EINVAL) && advised == 0 {
				return 0, nil // kernel older than 5.4: nothing to do
			}
			return advised, err
		}
		if err := madvise(start, end, unix.MADV_RANDOM); err != nil {
			return advised, err
		}
		advised += int(end - start)
	}
	if advised == 0 {
		return 0, nil
	}
	f, err := os.Open("/proc/self/exe") // the running file, even if it was replaced since
	if err != nil {
		return advised, fmt.Errorf("release executable pages: %w", err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return advised, fmt.Errorf("release executable pages: fadvise: %w", err)
	}
	return advised, nil
}

// madvise applies advice to the mapping [start, end) of this process.
func madvise(start, end uintptr, advice int) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, uintptr(advice)); errno != 0 {
		return fmt.Errorf("release executable pages: madvise(%d) %x-%x: %w", advice, start, end, errno)
	}
	return nil
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
