package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"
)

var agents = Bucket{"agents"}

// openTest opens a fresh store in a new directory below t.TempDir().
func openTest(t *testing.T, opts Options) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "sub", "test.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustPut(t *testing.T, db *DB, b Bucket, k, v string) {
	t.Helper()
	if err := db.Put(b, []byte(k), []byte(v)); err != nil {
		t.Fatalf("Put %s %s: %v", b, k, err)
	}
}

func TestOpenCreatesFileAndDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "registrar.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Path() != path {
		t.Errorf("Path() = %q, want %q", db.Path(), path)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %v, want %v", p, got, want)
		}
	}
	if n, err := db.Size(); err != nil || n <= 0 {
		t.Errorf("Size() = %d, %v; want > 0", n, err)
	}
	if v, err := db.SchemaVersion(); err != nil || v != 0 {
		t.Errorf("SchemaVersion() = %d, %v; want 0", v, err)
	}
}

func TestGetNotFound(t *testing.T) {
	db := openTest(t, Options{})
	mustPut(t, db, agents, "a", "1")
	mustPut(t, db, Bucket{"agents", "ima"}, "a", "2")
	tests := []struct {
		name   string
		bucket Bucket
		key    string
	}{
		{"missing bucket", Bucket{"nope"}, "a"},
		{"missing key", agents, "b"},
		{"missing nested bucket", Bucket{"agents", "nope"}, "a"},
		{"key is a nested bucket", agents, "ima"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := db.Get(tt.bucket, []byte(tt.key))
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get = %q, %v; want ErrNotFound", v, err)
			}
		})
	}
	if v, err := db.Get(Bucket{"agents", "ima"}, []byte("a")); err != nil || string(v) != "2" {
		t.Errorf("nested Get = %q, %v; want 2", v, err)
	}
}

func TestInvalidBucket(t *testing.T) {
	db := openTest(t, Options{})
	for name, b := range map[string]Bucket{"nil": nil, "meta": {MetaBucket}, "empty name": {"agents", ""}} {
		t.Run(name, func(t *testing.T) {
			if err := db.Put(b, []byte("k"), []byte("v")); !errors.Is(err, ErrInvalidBucket) {
				t.Errorf("Put: %v, want ErrInvalidBucket", err)
			}
			if _, err := db.Get(b, []byte("k")); !errors.Is(err, ErrInvalidBucket) {
				t.Errorf("Get: %v, want ErrInvalidBucket", err)
			}
		})
	}
}

func TestCopyOut(t *testing.T) {
	db := openTest(t, Options{})
	// A bucket this large gets its own page, so bbolt's slices point into the
	// read-only mmap (small buckets are stored inline and may be cloned).
	mustPut(t, db, agents, "pad", strings.Repeat("p", 4096))
	mustPut(t, db, agents, "a", "original")

	got, err := db.Get(agents, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	copy(got, "MUTATED!")
	if again, _ := db.Get(agents, []byte("a")); string(again) != "original" {
		t.Errorf("after mutating a returned slice, Get = %q", again)
	}

	kept, _ := db.Get(agents, []byte("a"))
	list, err := db.List(agents)
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %v, %v", list, err)
	}
	copy(list[0].Value, "XXXX")
	// Grow the file well past its first mmap so bbolt remaps and reuses
	// pages; a slice still pointing into the old mapping would now be
	// garbage or fault.
	val := bytes.Repeat([]byte("x"), 1024)
	if err := db.Update(func(tx *Tx) error {
		for i := range 20000 {
			if err := tx.Put(Bucket{"filler"}, fmt.Appendf(nil, "%08d", i), val); err != nil {
				return err
			}
		}
		return tx.Put(agents, []byte("a"), []byte("overwritten"))
	}); err != nil {
		t.Fatal(err)
	}
	if string(kept) != "original" {
		t.Errorf("value read before other writes changed to %q", kept)
	}
	if again, _ := db.Get(agents, []byte("a")); string(again) != "overwritten" {
		t.Errorf("Get after overwrite = %q", again)
	}
}

func TestPutCopiesIn(t *testing.T) {
	db := openTest(t, Options{})
	err := db.Update(func(tx *Tx) error {
		key, val := []byte("k1"), []byte("aaa")
		if err := tx.Put(agents, key, val); err != nil {
			return err
		}
		key[1], val[0] = '2', 'Z' // reuse the buffers before commit
		return tx.Put(agents, key, val)
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"k1": "aaa", "k2": "Zaa"} {
		if got, err := db.Get(agents, []byte(k)); err != nil || string(got) != want {
			t.Errorf("Get %s = %q, %v; want %q", k, got, err, want)
		}
	}
}

// PutOwned stores the caller's value (not copied) and copies the key; Has sees it without a copy.
func TestPutOwnedAndHas(t *testing.T) {
	db := openTest(t, Options{})
	err := db.Update(func(tx *Tx) error {
		key := []byte("k1")
		if err := tx.PutOwned(agents, key, []byte("owned")); err != nil {
			return err
		}
		key[1] = '9' // the key is copied
		for k, want := range map[string]bool{"k1": true, "k9": false} {
			if ok, err := tx.Has(agents, []byte(k)); err != nil || ok != want {
				t.Errorf("Has %s = %v, %v; want %v", k, ok, err, want)
			}
		}
		ok, err := tx.Has(Bucket{"nope"}, []byte("k1"))
		if err != nil || ok {
			t.Errorf("Has in an absent bucket = %v, %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := db.Get(agents, []byte("k1")); err != nil || string(got) != "owned" {
		t.Fatalf("Get = %q, %v", got, err)
	}
}

func TestDelete(t *testing.T) {
	db := openTest(t, Options{})
	mustPut(t, db, agents, "a", "1")
	if err := db.Delete(agents, []byte("a")); err != nil {
		t.Fatalf("Delete present key: %v", err)
	}
	if _, err := db.Get(agents, []byte("a")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	for name, b := range map[string]Bucket{"absent key": agents, "absent bucket": {"nope"}} {
		if err := db.Delete(b, []byte("a")); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Delete = %v, want ErrNotFound", name, err)
		}
	}
}

func TestListForEachCount(t *testing.T) {
	db := openTest(t, Options{})
	for _, k := range []string{"c", "a", "b"} {
		mustPut(t, db, agents, k, "v"+k)
	}
	mustPut(t, db, Bucket{"agents", "nested"}, "x", "skipped")

	want := []KV{{[]byte("a"), []byte("va")}, {[]byte("b"), []byte("vb")}, {[]byte("c"), []byte("vc")}}
	got, err := db.List(agents)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, func(a, b KV) bool { return bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value) }) {
		t.Errorf("List = %q, want %q", got, want)
	}
	if n, err := db.Count(agents); err != nil || n != 3 {
		t.Errorf("Count = %d, %v; want 3", n, err)
	}
	var keys []string
	errStop := errors.New("stop")
	err = db.ForEach(agents, func(k, v []byte) error {
		keys = append(keys, string(k))
		if len(keys) == 2 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || !slices.Equal(keys, []string{"a", "b"}) {
		t.Errorf("ForEach stopped with %v after %q; want errStop after [a b]", err, keys)
	}
	if l, err := db.List(Bucket{"missing"}); err != nil || len(l) != 0 {
		t.Errorf("List(missing) = %v, %v; want empty", l, err)
	}
	if n, err := db.Count(Bucket{"missing"}); err != nil || n != 0 {
		t.Errorf("Count(missing) = %d, %v; want 0", n, err)
	}
}

func TestCompareAndSwap(t *testing.T) {
	tests := []struct {
		name          string
		initial       []byte // nil: key absent
		old, new      []byte
		wantErr       error
		wantAfter     []byte // nil: key absent
		wantAfterSame bool   // expect initial unchanged
	}{
		{name: "create when absent", old: nil, new: []byte("a"), wantAfter: []byte("a")},
		{name: "create when present", initial: []byte("x"), old: nil, new: []byte("a"), wantErr: ErrConflict, wantAfterSame: true},
		{name: "swap on match", initial: []byte("x"), old: []byte("x"), new: []byte("y"), wantAfter: []byte("y")},
		{name: "swap on mismatch", initial: []byte("x"), old: []byte("z"), new: []byte("y"), wantErr: ErrConflict, wantAfterSame: true},
		{name: "swap when absent", old: []byte("x"), new: []byte("y"), wantErr: ErrConflict},
		{name: "empty old matches empty value", initial: []byte{}, old: []byte{}, new: []byte("y"), wantAfter: []byte("y")},
		{name: "nil old does not match empty value", initial: []byte{}, old: nil, new: []byte("y"), wantErr: ErrConflict, wantAfterSame: true},
		{name: "empty old does not match absent", old: []byte{}, new: []byte("y"), wantErr: ErrConflict},
		{name: "nil new deletes on match", initial: []byte("x"), old: []byte("x"), new: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openTest(t, Options{})
			key := []byte("k")
			if tt.initial != nil {
				if err := db.Put(agents, key, tt.initial); err != nil {
					t.Fatal(err)
				}
			}
			err := db.CompareAndSwap(agents, key, tt.old, tt.new)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("CompareAndSwap = %v, want %v", err, tt.wantErr)
			}
			want := tt.wantAfter
			if tt.wantAfterSame {
				want = tt.initial
			}
			got, err := db.Get(agents, key)
			switch {
			case want == nil && !errors.Is(err, ErrNotFound):
				t.Errorf("after: Get = %q, %v; want absent", got, err)
			case want != nil && (err != nil || !bytes.Equal(got, want)):
				t.Errorf("after: Get = %q, %v; want %q", got, err, want)
			}
		})
	}
}

func TestUpdateRollsBackOnError(t *testing.T) {
	db := openTest(t, Options{})
	mustPut(t, db, agents, "a", "1")
	errBoom := errors.New("boom")
	err := db.Update(func(tx *Tx) error {
		if err := tx.Put(agents, []byte("a"), []byte("2")); err != nil {
			return err
		}
		if err := tx.Put(agents, []byte("b"), []byte("2")); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update = %v, want errBoom", err)
	}
	if v, _ := db.Get(agents, []byte("a")); string(v) != "1" {
		t.Errorf("a = %q after rollback, want 1", v)
	}
	if _, err := db.Get(agents, []byte("b")); !errors.Is(err, ErrNotFound) {
		t.Errorf("b after rollback: %v, want ErrNotFound", err)
	}
}

func TestViewIsReadOnly(t *testing.T) {
	db := openTest(t, Options{})
	mustPut(t, db, agents, "a", "1")
	err := db.View(func(tx *Tx) error {
		if tx.Writable() {
			t.Error("View tx is writable")
		}
		return tx.Put(agents, []byte("a"), []byte("2"))
	})
	if !errors.Is(err, bolterrors.ErrTxNotWritable) {
		t.Errorf("Put in View = %v, want ErrTxNotWritable", err)
	}
}

func TestBuckets(t *testing.T) {
	db := openTest(t, Options{})
	nested := Bucket{"agents", "ima"}
	mustPut(t, db, nested, "a", "1")
	err := db.Update(func(tx *Tx) error {
		if err := tx.CreateBucket(Bucket{"empty"}); err != nil {
			return err
		}
		return tx.DeleteBucket(nested)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get(nested, []byte("a")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get in deleted bucket: %v, want ErrNotFound", err)
	}
	err = db.Update(func(tx *Tx) error { return tx.DeleteBucket(nested) })
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteBucket twice = %v, want ErrNotFound", err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.DeleteBucket(Bucket{"empty"}) }); err != nil {
		t.Errorf("DeleteBucket top-level: %v", err)
	}
}

func TestJSON(t *testing.T) {
	type rec struct {
		ID    string `json:"id"`
		Count int    `json:"count"`
	}
	db := openTest(t, Options{})
	if err := PutJSON(db, agents, []byte("a"), rec{"a", 3}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, db, agents, "bad", "{not json")
	err := db.View(func(tx *Tx) error {
		got, err := GetJSON[rec](tx, agents, []byte("a"))
		if err != nil || got != (rec{"a", 3}) {
			t.Errorf("GetJSON = %+v, %v", got, err)
		}
		if _, err := GetJSON[rec](tx, agents, []byte("missing")); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetJSON missing: %v, want ErrNotFound", err)
		}
		if _, err := GetJSON[rec](tx, agents, []byte("bad")); err == nil {
			t.Error("GetJSON of invalid JSON succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBatchConcurrentWriters(t *testing.T) {
	db := openTest(t, Options{})
	const writers, each = 16, 50
	counter := Bucket{"counter"}
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				errs <- db.Batch(func(tx *Tx) error {
					if err := tx.Put(agents, fmt.Appendf(nil, "%02d-%03d", w, i), []byte("v")); err != nil {
						return err
					}
					n := 0
					if v, err := tx.Get(counter, []byte("n")); err == nil {
						fmt.Sscan(string(v), &n)
					}
					return tx.Put(counter, []byte("n"), fmt.Append(nil, n+1))
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Batch: %v", err)
		}
	}
	if n, err := db.Count(agents); err != nil || n != writers*each {
		t.Errorf("Count = %d, %v; want %d", n, err, writers*each)
	}
	if v, err := db.Get(counter, []byte("n")); err != nil || string(v) != fmt.Sprint(writers*each) {
		t.Errorf("counter = %q, %v; want %d", v, err, writers*each)
	}
}

func TestOpenLockedInProcess(t *testing.T) {
	db := openTest(t, Options{})
	_, err := Open(db.Path(), Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open in the same process = %v, want ErrLocked", err)
	}
}

const helperEnv = "STORE_TEST_HOLD_LOCK"

// TestHelperProcess is not a real test: run as a child by TestOpenLockedByOtherProcess,
// it opens the store named in $STORE_TEST_HOLD_LOCK, says "locked" and holds
// the lock until its stdin closes.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for TestOpenLockedByOtherProcess")
	}
	db, err := Open(path, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
	db.Close()
	os.Exit(0)
}

func TestOpenLockedByOtherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registrar.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	if sc := bufio.NewScanner(stdout); !sc.Scan() || sc.Text() != "locked" {
		t.Fatalf("helper did not take the lock: %q %v", sc.Text(), sc.Err())
	}

	start := time.Now()
	_, err = Open(path, Options{LockTimeout: 300 * time.Millisecond, Owner: "registrar"})
	elapsed := time.Since(start)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open while another process holds the file = %v, want ErrLocked", err)
	}
	want := "store " + path + " is locked by another process (is a registrar already running?)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if elapsed > 900*time.Millisecond {
		t.Errorf("Open gave up after %v, want about the 300ms LockTimeout", elapsed)
	}

	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper exited: %v", err)
	}
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open after the other process exited: %v", err)
	}
	db.Close()
}
