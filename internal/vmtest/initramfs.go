package vmtest

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// Initramfs is an initramfs image being assembled in memory: regular files, directories and symlinks
// with root ownership, written as a gzip-compressed newc cpio archive, the format the kernel unpacks.
type Initramfs struct {
	entries map[string]cpioEntry
}

type cpioEntry struct {
	mode uint32 // file type and permission bits
	data []byte // file content or symlink target
}

// File types in cpio modes (the st_mode values of Linux).
const (
	modeType    = 0o170000
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
)

// NewInitramfs returns an empty image.
func NewInitramfs() *Initramfs {
	return &Initramfs{entries: map[string]cpioEntry{}}
}

// clean turns p into the archive's relative form ("bin/sh"), creating nothing.
func clean(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// Dir adds a directory (and its parents) with mode perm.
func (r *Initramfs) Dir(p string, perm os.FileMode) {
	p = clean(p)
	if p == "" {
		return
	}
	r.Dir(path.Dir(p), 0o755)
	if e, ok := r.entries[p]; ok && e.mode&modeType == modeDir {
		return
	}
	r.entries[p] = cpioEntry{mode: modeDir | uint32(perm.Perm())}
}

// File adds a regular file with content data and mode perm, creating its parent directories.
func (r *Initramfs) File(p string, data []byte, perm os.FileMode) {
	p = clean(p)
	r.Dir(path.Dir(p), 0o755)
	r.entries[p] = cpioEntry{mode: modeRegular | uint32(perm.Perm()), data: data}
}

// CopyFile adds the host file src at p with mode perm.
func (r *Initramfs) CopyFile(p, src string, perm os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("initramfs %s: %w", p, err)
	}
	r.File(p, b, perm)
	return nil
}

// Symlink adds a symbolic link at p pointing to target.
func (r *Initramfs) Symlink(p, target string) {
	p = clean(p)
	r.Dir(path.Dir(p), 0o755)
	r.entries[p] = cpioEntry{mode: modeSymlink | 0o777, data: []byte(target)}
}

// WriteTo writes the gzip-compressed newc archive to w, parents before children.
func (r *Initramfs) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	zw, err := gzip.NewWriterLevel(cw, gzip.BestSpeed)
	if err != nil {
		return 0, err
	}
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names) // "a" sorts before "a/b": parents come first
	for i, n := range names {
		e := r.entries[n]
		if err := writeCPIO(zw, uint32(i+1), n, e.mode, e.data); err != nil {
			return cw.n, err
		}
	}
	if err := writeCPIO(zw, 0, "TRAILER!!!", 0, nil); err != nil {
		return cw.n, err
	}
	if err := zw.Close(); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

// WriteFile writes the image to the file p.
func (r *Initramfs) WriteFile(p string) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if _, err := r.WriteTo(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("write initramfs %s: %w", p, err)
	}
	return f.Close()
}

// writeCPIO writes one newc record: the 110-byte ASCII header, the NUL-terminated name padded to 4
// bytes, the data padded to 4 bytes.
func writeCPIO(w io.Writer, ino uint32, name string, mode uint32, data []byte) error {
	nlink := uint32(1)
	if mode&modeType == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+8)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	_, err := w.Write(make([]byte, pad4(len(data))))
	return err
}

func pad4(n int) int { return (4 - n%4) % 4 }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
