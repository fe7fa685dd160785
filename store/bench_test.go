package store

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var benchValue = bytes.Repeat([]byte("v"), 256)

func benchDB(b *testing.B, opts Options) *DB {
	b.Helper()
	db, err := Open(filepath.Join(b.TempDir(), "bench.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func reportSize(b *testing.B, db *DB) {
	b.Helper()
	if n, err := db.Size(); err == nil {
		b.ReportMetric(float64(n)/float64(b.N), "file-B/key")
	}
}

// BenchmarkPut is one Update (one fsync) per 256-byte value.
func BenchmarkPut(b *testing.B) {
	db := benchDB(b, Options{})
	key := make([]byte, 8)
	i := uint64(0)
	for b.Loop() {
		binary.BigEndian.PutUint64(key, i)
		i++
		if err := db.Put(agents, key, benchValue); err != nil {
			b.Fatal(err)
		}
	}
	reportSize(b, db)
}

// BenchmarkBatchPut has many goroutines writing through Batch, as the
// verifier's pollers do; ns/op is per value, amortised over shared commits.
// Below MaxBatchSize writers, a commit waits MaxBatchDelay for company, so
// throughput is about writers/MaxBatchDelay.
func BenchmarkBatchPut(b *testing.B) {
	for _, bc := range []struct {
		name    string
		writers int
		delay   time.Duration
	}{
		{"writers=32/delay=10ms", 32, 0},
		{"writers=512/delay=10ms", 512, 0},
		{"writers=32/delay=1ms", 32, time.Millisecond},
	} {
		b.Run(bc.name, func(b *testing.B) {
			db := benchDB(b, Options{MaxBatchDelay: bc.delay})
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range bc.writers {
				wg.Go(func() {
					key := make([]byte, 8)
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						binary.BigEndian.PutUint64(key, uint64(i))
						if err := db.Batch(func(tx *Tx) error { return tx.Put(agents, key, benchValue) }); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			reportSize(b, db)
		})
	}
}

// BenchmarkGet reads (and copies out) one value from 10k.
func BenchmarkGet(b *testing.B) {
	db := benchDB(b, Options{})
	err := db.Update(func(tx *Tx) error {
		for i := range uint64(10000) {
			if err := tx.Put(agents, binary.BigEndian.AppendUint64(nil, i), benchValue); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	key := make([]byte, 8)
	i := uint64(0)
	for b.Loop() {
		binary.BigEndian.PutUint64(key, i%10000)
		i++
		if _, err := db.Get(agents, key); err != nil {
			b.Fatal(err)
		}
	}
}
