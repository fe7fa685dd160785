package fleet

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

// rsaCacheFile is the name of the RSA key cache in a cache directory: PKCS#1 PEM blocks, one per key.
const rsaCacheFile = "rsa2048.pem"

// RSAKeys returns n distinct RSA-2048 keys. With a cache directory, the keys stored there are reused
// (generating an RSA key takes tens of milliseconds, so a fleet of thousands takes minutes the first
// time) and newly generated ones are appended; dir "" generates every key.
func RSAKeys(dir string, n int) ([]*rsa.PrivateKey, error) {
	var keys []*rsa.PrivateKey
	path := ""
	if dir != "" {
		path = filepath.Join(dir, rsaCacheFile)
		var err error
		if keys, err = loadRSAKeys(path, n); err != nil {
			return nil, err
		}
	}
	if len(keys) >= n {
		return keys[:n], nil
	}
	fresh, err := generateRSA(n - len(keys))
	if err != nil {
		return nil, err
	}
	if path != "" {
		if err := appendRSAKeys(path, fresh); err != nil {
			return nil, err
		}
	}
	return append(keys, fresh...), nil
}

// loadRSAKeys reads up to n keys from a cache file (missing: none).
func loadRSAKeys(path string, n int) ([]*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: key cache: %w", err)
	}
	var keys []*rsa.PrivateKey
	for len(keys) < n {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("fleet: key cache %s: %w", path, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func appendRSAKeys(path string, keys []*rsa.PrivateKey) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("fleet: key cache: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("fleet: key cache: %w", err)
	}
	for _, k := range keys {
		if err := pem.Encode(f, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}); err != nil {
			f.Close()
			return fmt.Errorf("fleet: key cache: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("fleet: key cache: %w", err)
	}
	return nil
}

// generateRSA generates n RSA-2048 keys on every core.
func generateRSA(n int) ([]*rsa.PrivateKey, error) {
	keys := make([]*rsa.PrivateKey, n)
	err := parallel(n, runtime.GOMAXPROCS(0), func(i int) error {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		keys[i] = k
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: generate RSA key: %w", err)
	}
	return keys, nil
}

// parallel runs f(0…n-1) on at most workers goroutines and returns the first error (the remaining
// calls are skipped once one fails).
func parallel(n, workers int, f func(i int) error) error {
	if workers < 1 {
		workers = 1
	}
	var (
		mu    sync.Mutex
		next  int
		first error
		wg    sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= n || first != nil {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
