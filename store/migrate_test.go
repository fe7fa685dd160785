package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// migrationSet returns n migrations that each record their run in *ran and
// write key "vN" into bucket "data".
func migrationSet(ran *[]int, n int) []Migration {
	var ms []Migration
	for v := 1; v <= n; v++ {
		ms = append(ms, Migration{Version: v, Name: "step", Apply: func(tx *Tx) error {
			*ran = append(*ran, v)
			return tx.Put(Bucket{"data"}, []byte{'v', byte('0' + v)}, []byte("ok"))
		}})
	}
	return ms
}

// reopen opens path with ms, closing it at the end of the test.
func reopen(t *testing.T, path string, ms []Migration) (*DB, error) {
	t.Helper()
	db, err := Open(path, Options{Migrations: ms})
	if err == nil {
		t.Cleanup(func() { db.Close() })
	}
	return db, err
}

func wantVersion(t *testing.T, db *DB, want int) {
	t.Helper()
	if v, err := db.SchemaVersion(); err != nil || v != want {
		t.Errorf("SchemaVersion() = %d, %v; want %d", v, err, want)
	}
}

func TestMigrateFresh(t *testing.T) {
	var ran []int
	db, err := reopen(t, filepath.Join(t.TempDir(), "a.db"), migrationSet(&ran, 3))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ran, []int{1, 2, 3}) {
		t.Errorf("ran %v, want [1 2 3]", ran)
	}
	wantVersion(t, db, 3)
	if n, _ := db.Count(Bucket{"data"}); n != 3 {
		t.Errorf("data has %d keys, want 3", n)
	}
}

func TestMigratePartial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	var ran []int
	db, err := reopen(t, path, migrationSet(&ran, 3)[:1])
	if err != nil {
		t.Fatal(err)
	}
	wantVersion(t, db, 1)
	db.Close()

	ran = nil
	db, err = reopen(t, path, migrationSet(&ran, 3))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ran, []int{2, 3}) {
		t.Errorf("reopen ran %v, want only the pending [2 3]", ran)
	}
	wantVersion(t, db, 3)
	db.Close()

	ran = nil
	if _, err := reopen(t, path, migrationSet(&ran, 3)); err != nil || len(ran) != 0 {
		t.Errorf("up-to-date reopen ran %v, err %v; want nothing", ran, err)
	}
}

func TestMigrateSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	var ran []int
	db, err := reopen(t, path, migrationSet(&ran, 2))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for name, ms := range map[string][]Migration{"older list": migrationSet(&ran, 1), "no migrations": nil} {
		if _, err := reopen(t, path, ms); !errors.Is(err, ErrSchemaTooNew) {
			t.Errorf("%s: Open = %v, want ErrSchemaTooNew", name, err)
		}
	}
	// The refused Open released the lock and left the file intact.
	db, err = reopen(t, path, migrationSet(&ran, 2))
	if err != nil {
		t.Fatal(err)
	}
	wantVersion(t, db, 2)
}

func TestMigrateFailureLeavesVersionAndData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	var ran []int
	ms := migrationSet(&ran, 1)
	db, err := reopen(t, path, ms)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	errBoom := errors.New("boom")
	failing := append(slices.Clone(ms),
		Migration{Version: 2, Name: "half done", Apply: func(tx *Tx) error {
			if err := tx.Put(Bucket{"data"}, []byte("v1"), []byte("changed")); err != nil {
				return err
			}
			if err := tx.Put(Bucket{"new"}, []byte("k"), []byte("v")); err != nil {
				return err
			}
			return errBoom
		}},
		Migration{Version: 3, Name: "after", Apply: func(tx *Tx) error { t.Error("migration 3 ran after 2 failed"); return nil }},
	)
	if _, err := reopen(t, path, failing); !errors.Is(err, errBoom) {
		t.Fatalf("Open with failing migration = %v, want errBoom", err)
	}

	db, err = reopen(t, path, ms)
	if err != nil {
		t.Fatal(err)
	}
	wantVersion(t, db, 1)
	if v, err := db.Get(Bucket{"data"}, []byte("v1")); err != nil || string(v) != "ok" {
		t.Errorf("data/v1 = %q, %v; want untouched \"ok\"", v, err)
	}
	if n, _ := db.Count(Bucket{"new"}); n != 0 {
		t.Errorf("bucket written by the failed migration has %d keys", n)
	}
}

func TestMigrationListMustIncrease(t *testing.T) {
	nop := func(*Tx) error { return nil }
	tests := []struct {
		name string
		ms   []Migration
	}{
		{"zero version", []Migration{{Version: 0, Name: "a", Apply: nop}}},
		{"duplicate", []Migration{{1, "a", nop}, {1, "b", nop}}},
		{"decreasing", []Migration{{1, "a", nop}, {3, "b", nop}, {2, "c", nop}}},
		{"nil apply", []Migration{{1, "a", nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a.db")
			if _, err := reopen(t, path, tt.ms); !errors.Is(err, ErrInvalidMigrations) {
				t.Fatalf("Open = %v, want ErrInvalidMigrations", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("refused Open touched the file: %v", err)
			}
		})
	}
}
