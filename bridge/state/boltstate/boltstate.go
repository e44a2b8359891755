// Package boltstate is the state.Backend on a bbolt file: the default, for
// one bridge process with a local disk. The file is locked while it is open
// (flock), so a second process gets state.ErrHeld.
package boltstate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/directus-bridge/directus-bridge/bridge/state"
)

// The file's layout, unchanged since the first version: records in
// "users", keyed by user id; meta values in "meta".
var (
	usersBucket = []byte("users")
	metaBucket  = []byte("meta")
)

// HoldTimeout is how long Open waits for another process to release the
// file before it gives up with state.ErrHeld.
var HoldTimeout = 5 * time.Second

// Backend is a bbolt file.
type Backend struct {
	path   string
	mu     sync.RWMutex // db is replaced once, after the first Load
	db     *bolt.DB
	loaded bool
}

var _ state.Backend = (*Backend)(nil)

// Open opens (or creates, mode 0600, its folder 0700) the file at path.
func Open(path string) (*Backend, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	db, err := open(path)
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(usersBucket); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(metaBucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state: %s: %w", path, err)
	}
	return &Backend{path: path, db: db}, nil
}

func open(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: HoldTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("state: open %s: %w (is a bridge already running on this state file?)", path, state.ErrHeld)
	}
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	return db, nil
}

// Load calls fn for every record. After the first Load the file is
// reopened: loading touched every page of the memory-mapped file, and
// reopening drops them from the process's resident memory (writes touch
// only a few).
func (b *Backend) Load(_ context.Context, fn func(key string, value []byte) error) error {
	b.mu.RLock()
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(usersBucket).ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
	first := !b.loaded
	b.mu.RUnlock()
	if err != nil || !first {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.loaded {
		return nil
	}
	b.loaded = true
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	db, err := open(b.path)
	if err != nil {
		return err
	}
	b.db = db
	return nil
}

// Put writes the entries in one transaction.
func (b *Backend) Put(_ context.Context, es []state.Entry) error {
	for _, e := range es {
		if err := state.Check(e); err != nil {
			return err
		}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(usersBucket)
		for _, e := range es {
			if err := bk.Put([]byte(e.Key), bytes.Clone(e.Value)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Delete removes the record of key.
func (b *Backend) Delete(_ context.Context, key string) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(usersBucket).Delete([]byte(key)) })
}

// Meta returns a meta value.
func (b *Backend) Meta(_ context.Context, key string) ([]byte, bool, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var v []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		if got := tx.Bucket(metaBucket).Get([]byte(key)); got != nil {
			v = bytes.Clone(got)
		}
		return nil
	})
	return v, v != nil, err
}

// SetMeta writes a meta value.
func (b *Backend) SetMeta(_ context.Context, key string, value []byte) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(metaBucket).Put([]byte(key), append([]byte{}, value...))
	})
}

// Close closes the file and releases its lock.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.db.Close()
}
