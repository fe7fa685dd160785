package store

import (
	"encoding/json"
	"fmt"
)

// Getter is satisfied by *DB and *Tx.
type Getter interface {
	Get(bucket Bucket, key []byte) ([]byte, error)
}

// Putter is satisfied by *DB and *Tx.
type Putter interface {
	Put(bucket Bucket, key, value []byte) error
}

// GetJSON reads the value at key and decodes it as JSON into a T; a missing
// key is ErrNotFound.
func GetJSON[T any](g Getter, bucket Bucket, key []byte) (T, error) {
	var v T
	raw, err := g.Get(bucket, key)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode %s %q: %w", bucket, key, err)
	}
	return v, nil
}

// PutJSON encodes v as JSON and stores it at key.
func PutJSON(p Putter, bucket Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s %q: %w", bucket, key, err)
	}
	return p.Put(bucket, key, raw)
}
