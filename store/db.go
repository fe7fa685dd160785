// Package store is a thin, generic wrapper around a bbolt file: values are
// copied out of transactions, writes can compare-and-swap, a missing key is
// ErrNotFound, and the file carries a schema version advanced by ordered
// migrations. It knows nothing about agents; each role (registrar, verifier)
// owns its own file, bucket layout and record types.
//
// Layout of a store file. Only the meta bucket belongs to this package; every
// other top-level bucket belongs to the role that owns the file:
//
//	<root>
//	├── _store                        meta bucket (reserved; see MetaBucket)
//	│   └── schema_version : "3"      decimal version of the last applied migration
//	└── <role buckets>                e.g. agents/<uuid> : record, policies/<digest> : policy
//	    └── <nested buckets>          addressed by a Bucket path, e.g. Bucket{"agents", "ima"}
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// MetaBucket is the reserved top-level bucket holding the store's own metadata.
const MetaBucket = "_store"

const (
	keySchemaVersion   = "schema_version"
	defaultLockTimeout = time.Second
)

// Sentinel errors returned (wrapped) by this package; test them with errors.Is.
var (
	// ErrNotFound means the key (or the bucket holding it) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a CompareAndSwap found a value other than the expected one.
	ErrConflict = errors.New("conflict")
	// ErrLocked means another process (or another open handle) holds the file.
	ErrLocked = errors.New("store locked")
	// ErrSchemaTooNew means the file was written by a newer program than this one.
	ErrSchemaTooNew = errors.New("schema version newer than supported")
	// ErrInvalidMigrations means a migration list is not strictly increasing or is incomplete.
	ErrInvalidMigrations = errors.New("invalid migrations")
	// ErrInvalidBucket means a bucket path is empty or names the reserved meta bucket.
	ErrInvalidBucket = errors.New("invalid bucket")
)

// Options configures Open. The zero value is usable.
type Options struct {
	// LockTimeout bounds the wait for the file lock; 0 means one second.
	LockTimeout time.Duration
	// Owner names the program using the file (e.g. "registrar") in the locked-file error.
	Owner string
	// Migrations are applied in order by Open; see Migration.
	Migrations []Migration
	// MaxBatchSize and MaxBatchDelay tune Batch; zero keeps bbolt's defaults (1000, 10ms).
	MaxBatchSize  int
	MaxBatchDelay time.Duration
}

// DB is an open store file. It is safe for concurrent use.
type DB struct {
	bolt *bolt.DB
	path string
}

// Open opens (creating if needed, mode 0600, parent directory 0700) the store
// file at path, takes its exclusive lock and applies pending migrations. If
// the lock is held elsewhere (another process, or another Open of the same
// file in this process) it fails after LockTimeout with an error wrapping
// ErrLocked that names the file.
func Open(path string, opts Options) (*DB, error) {
	if err := checkMigrations(opts.Migrations); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store %s: create directory: %w", path, err)
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = defaultLockTimeout
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		who := "another instance"
		if opts.Owner != "" {
			who = "a " + opts.Owner
		}
		return nil, fmt.Errorf("store %s is locked by another process (is %s already running?): %w", path, who, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if opts.MaxBatchSize > 0 {
		b.MaxBatchSize = opts.MaxBatchSize
	}
	if opts.MaxBatchDelay > 0 {
		b.MaxBatchDelay = opts.MaxBatchDelay
	}
	db := &DB{bolt: b, path: path}
	if err := db.migrate(opts.Migrations); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return db, nil
}

// Close releases the file and its lock.
func (db *DB) Close() error { return db.bolt.Close() }

// Path returns the file path given to Open.
func (db *DB) Path() string { return db.path }

// Size returns the size of the file on disk in bytes (bbolt grows it in steps).
func (db *DB) Size() (int64, error) {
	fi, err := os.Stat(db.path)
	if err != nil {
		return 0, fmt.Errorf("store size: %w", err)
	}
	return fi.Size(), nil
}

// SchemaVersion returns the version recorded in the meta bucket (0 for a fresh file).
func (db *DB) SchemaVersion() (v int, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		v, err = readVersion(tx)
		return err
	})
	return v, err
}

// Update runs fn in a read-write transaction, committed if fn returns nil and
// rolled back otherwise. Each Update syncs the file once.
func (db *DB) Update(fn func(*Tx) error) error {
	return db.bolt.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// View runs fn in a read-only transaction. Do not call Update, Batch or any
// write method of DB from inside fn: that can deadlock when the file grows.
func (db *DB) View(fn func(*Tx) error) error {
	return db.bolt.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Batch runs fn in a read-write transaction shared with other concurrent Batch
// callers, so many small writes cost one sync. Use it on hot paths written by
// many goroutines at once (the verifier's per-poll state). A commit waits up to
// MaxBatchDelay for company, so a lone caller is slower than with Update and
// throughput is about writers/MaxBatchDelay until MaxBatchSize writers; use
// Update for single interactive writes. fn may run more than once (if another
// fn in its batch fails) and must only change state through tx.
func (db *DB) Batch(fn func(*Tx) error) error {
	return db.bolt.Batch(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Get returns a copy of the value at key in bucket, or ErrNotFound.
func (db *DB) Get(bucket Bucket, key []byte) (v []byte, err error) {
	err = db.View(func(tx *Tx) error {
		v, err = tx.Get(bucket, key)
		return err
	})
	return v, err
}

// Put stores value at key in bucket, creating the bucket path if needed.
func (db *DB) Put(bucket Bucket, key, value []byte) error {
	return db.Update(func(tx *Tx) error { return tx.Put(bucket, key, value) })
}

// Delete removes key from bucket; it returns ErrNotFound if the key is absent.
func (db *DB) Delete(bucket Bucket, key []byte) error {
	return db.Update(func(tx *Tx) error { return tx.Delete(bucket, key) })
}

// CompareAndSwap atomically replaces the value at key if it equals old; see Tx.CompareAndSwap.
func (db *DB) CompareAndSwap(bucket Bucket, key, old, new []byte) error {
	return db.Update(func(tx *Tx) error { return tx.CompareAndSwap(bucket, key, old, new) })
}

// List returns copies of all key/value pairs in bucket in key order.
func (db *DB) List(bucket Bucket) (kvs []KV, err error) {
	err = db.View(func(tx *Tx) error {
		kvs, err = tx.List(bucket)
		return err
	})
	return kvs, err
}

// ForEach calls fn with copies of each key/value pair in bucket, in key order,
// inside one read transaction (the same rules as View apply to fn).
func (db *DB) ForEach(bucket Bucket, fn func(key, value []byte) error) error {
	return db.View(func(tx *Tx) error { return tx.ForEach(bucket, fn) })
}

// Count returns the number of keys in bucket (nested buckets not counted).
func (db *DB) Count(bucket Bucket) (n int, err error) {
	err = db.View(func(tx *Tx) error {
		n, err = tx.Count(bucket)
		return err
	})
	return n, err
}

func readVersion(tx *bolt.Tx) (int, error) {
	b := tx.Bucket([]byte(MetaBucket))
	if b == nil {
		return 0, nil
	}
	raw := b.Get([]byte(keySchemaVersion))
	if raw == nil {
		return 0, nil
	}
	v, err := strconv.Atoi(string(raw))
	if err != nil || v < 0 {
		return 0, fmt.Errorf("corrupt schema version %q", raw)
	}
	return v, nil
}

func writeVersion(tx *bolt.Tx, v int) error {
	b, err := tx.CreateBucketIfNotExists([]byte(MetaBucket))
	if err != nil {
		return fmt.Errorf("create meta bucket: %w", err)
	}
	return b.Put([]byte(keySchemaVersion), []byte(strconv.Itoa(v)))
}
