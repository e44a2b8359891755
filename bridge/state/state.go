package state

import (
	"context"
	"errors"
)

// Entry is one record: its key (a Directus user id) and its encoded value,
// tokens already sealed.
type Entry struct {
	Key   string
	Value []byte
}

// Backend stores records and meta values durably. Its methods may be called
// from several goroutines; the bridge's Store calls the writing ones (Put,
// Delete, SetMeta) one at a time.
type Backend interface {
	// Load calls fn for every record, in no particular order; an error of
	// fn ends Load with that error.
	Load(ctx context.Context, fn func(key string, value []byte) error) error
	// Put writes the entries in one transaction: all of them or none.
	// Putting an existing key replaces its value.
	Put(ctx context.Context, entries []Entry) error
	// Delete removes the record of key; a key that is absent is no error.
	Delete(ctx context.Context, key string) error
	// Meta returns the meta value of key; ok is false when it is unset.
	Meta(ctx context.Context, key string) (value []byte, ok bool, err error)
	// SetMeta writes a meta value durably.
	SetMeta(ctx context.Context, key string, value []byte) error
	// Close releases the backend, and with it the hold on the state.
	Close() error
}

// ErrHeld is returned (wrapped) by an adapter's Open when another process
// holds the state: at most one bridge process uses a state at a time.
var ErrHeld = errors.New("the state is held by another directus-bridge process")

// ErrTakenOver is returned (wrapped) by every operation of a Backend after
// another process held the state while this one had lost its hold (for
// example while disconnected from a database): the process's records in
// memory may be stale, so it must stop and start again.
var ErrTakenOver = errors.New("the state was taken over by another directus-bridge process while this one had lost its hold: restart this process (its records in memory may be stale)")

// MaxKeyBytes bounds a key; MaxValueBytes bounds a value. Adapters refuse
// larger ones, so that every adapter accepts the same records.
const (
	MaxKeyBytes   = 512
	MaxValueBytes = 1 << 20
)

// ErrTooLarge is returned (wrapped) for a key or value over the bounds.
var ErrTooLarge = errors.New("state: key or value too large")

// Check returns ErrTooLarge (wrapped) when an entry is over the bounds, or
// its key empty.
func Check(e Entry) error {
	if e.Key == "" || len(e.Key) > MaxKeyBytes || len(e.Value) > MaxValueBytes {
		return errors.Join(ErrTooLarge, errors.New("key "+quoteShort(e.Key)))
	}
	return nil
}

func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return `"` + s + `"`
}
