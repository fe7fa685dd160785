package store

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Bucket is a path of bucket names from the root, e.g. Bucket{"agents"} or
// Bucket{"agents", "ima"} for a nested bucket. Write methods create missing
// buckets along the path; read methods treat a missing bucket as empty.
type Bucket []string

// String joins the path with "/" for messages.
func (b Bucket) String() string { return strings.Join(b, "/") }

// KV is a key/value pair copied out of a transaction.
type KV struct {
	Key, Value []byte
}

// Tx is a transaction handed to Update, View, Batch and migrations. Every
// value it returns is a copy owned by the caller, and every slice it is given
// is copied in, so callers may reuse buffers. A Tx is valid only inside the
// function it was passed to.
type Tx struct {
	tx *bolt.Tx
}

// Writable reports whether the transaction may write.
func (t *Tx) Writable() bool { return t.tx.Writable() }

// Get returns a copy of the value at key in bucket, or ErrNotFound.
func (t *Tx) Get(bucket Bucket, key []byte) ([]byte, error) {
	b, err := t.bucket(bucket, false)
	if err != nil {
		return nil, err
	}
	var v []byte
	if b != nil {
		v = b.Get(key)
	}
	if v == nil {
		return nil, fmt.Errorf("get %s %q: %w", bucket, key, ErrNotFound)
	}
	return clone(v), nil
}

// Has reports whether key is in bucket, without copying its value.
func (t *Tx) Has(bucket Bucket, key []byte) (bool, error) {
	b, err := t.bucket(bucket, false)
	if err != nil {
		return false, err
	}
	return b != nil && b.Get(key) != nil, nil
}

// Put stores value at key in bucket, creating the bucket path if needed.
func (t *Tx) Put(bucket Bucket, key, value []byte) error {
	b, err := t.bucket(bucket, true)
	if err != nil {
		return err
	}
	if err := b.Put(clone(key), clone(value)); err != nil {
		return fmt.Errorf("put %s %q: %w", bucket, key, err)
	}
	return nil
}

// PutOwned is Put for a value the caller hands over: it is not copied and must not be modified until
// the transaction ends (a freshly encoded record).
func (t *Tx) PutOwned(bucket Bucket, key, value []byte) error {
	b, err := t.bucket(bucket, true)
	if err != nil {
		return err
	}
	if err := b.Put(clone(key), value); err != nil {
		return fmt.Errorf("put %s %q: %w", bucket, key, err)
	}
	return nil
}

// Delete removes key from bucket. It returns ErrNotFound if the key is absent,
// so an API can answer 404; callers that want idempotent deletes ignore it.
func (t *Tx) Delete(bucket Bucket, key []byte) error {
	b, err := t.bucket(bucket, false)
	if err != nil {
		return err
	}
	if b == nil || b.Get(key) == nil {
		return fmt.Errorf("delete %s %q: %w", bucket, key, ErrNotFound)
	}
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("delete %s %q: %w", bucket, key, err)
	}
	return nil
}

// CompareAndSwap sets key to new only if its current value equals old, else
// it returns ErrConflict. A nil old means the key must not exist (an empty
// non-nil old matches a present, empty value); a nil new deletes the key.
func (t *Tx) CompareAndSwap(bucket Bucket, key, old, new []byte) error {
	b, err := t.bucket(bucket, true)
	if err != nil {
		return err
	}
	cur := b.Get(key)
	if (old == nil) != (cur == nil) || !bytes.Equal(cur, old) {
		return fmt.Errorf("compare-and-swap %s %q: %w", bucket, key, ErrConflict)
	}
	switch {
	case new == nil && cur == nil:
		return nil
	case new == nil:
		err = b.Delete(key)
	default:
		err = b.Put(clone(key), clone(new))
	}
	if err != nil {
		return fmt.Errorf("compare-and-swap %s %q: %w", bucket, key, err)
	}
	return nil
}

// ForEach calls fn with copies of each key/value pair in bucket, in key
// order, skipping nested buckets. An error from fn stops the walk and is
// returned unchanged.
func (t *Tx) ForEach(bucket Bucket, fn func(key, value []byte) error) error {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return err
	}
	return b.ForEach(func(k, v []byte) error {
		if v == nil { // nested bucket
			return nil
		}
		return fn(clone(k), clone(v))
	})
}

// List returns copies of all key/value pairs in bucket in key order.
func (t *Tx) List(bucket Bucket) ([]KV, error) {
	var kvs []KV
	err := t.ForEach(bucket, func(k, v []byte) error {
		kvs = append(kvs, KV{Key: k, Value: v})
		return nil
	})
	return kvs, err
}

// Count returns the number of keys in bucket, not counting nested buckets.
func (t *Tx) Count(bucket Bucket) (int, error) {
	b, err := t.bucket(bucket, false)
	if err != nil || b == nil {
		return 0, err
	}
	n := 0
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			n++
		}
	}
	return n, nil
}

// CreateBucket creates the bucket path if it does not exist yet.
func (t *Tx) CreateBucket(bucket Bucket) error {
	_, err := t.bucket(bucket, true)
	return err
}

// DeleteBucket removes the last bucket of the path with everything in it, or
// returns ErrNotFound.
func (t *Tx) DeleteBucket(bucket Bucket) error {
	b, err := t.bucket(bucket, false)
	if err != nil {
		return err
	}
	if b == nil {
		return fmt.Errorf("delete bucket %s: %w", bucket, ErrNotFound)
	}
	name := []byte(bucket[len(bucket)-1])
	if len(bucket) == 1 {
		err = t.tx.DeleteBucket(name)
	} else {
		parent, _ := t.bucket(bucket[:len(bucket)-1], false) // exists: it holds b
		err = parent.DeleteBucket(name)
	}
	if err != nil {
		return fmt.Errorf("delete bucket %s: %w", bucket, err)
	}
	return nil
}

// bucket walks the path; with create it makes missing buckets, without it a
// missing bucket yields (nil, nil).
func (t *Tx) bucket(path Bucket, create bool) (*bolt.Bucket, error) {
	if len(path) == 0 || path[0] == MetaBucket || slices.Contains(path, "") {
		return nil, fmt.Errorf("bucket %q: %w", path.String(), ErrInvalidBucket)
	}
	var b *bolt.Bucket
	for i, name := range path {
		var err error
		switch {
		case !create && i == 0:
			b = t.tx.Bucket([]byte(name))
		case !create:
			b = b.Bucket([]byte(name))
		case i == 0:
			b, err = t.tx.CreateBucketIfNotExists([]byte(name))
		default:
			b, err = b.CreateBucketIfNotExists([]byte(name))
		}
		if err != nil {
			return nil, fmt.Errorf("create bucket %s: %w", path, err)
		}
		if b == nil {
			return nil, nil
		}
	}
	return b, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
