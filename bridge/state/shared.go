package state

import (
	"context"
	"errors"
	"strings"
	"time"
)

// Shared is a Backend that several bridge processes use at once (replicas
// on one database). Opening one takes no exclusive hold: every process
// reads and writes, and they keep out of each other's way with per-key
// locks, versions and leases. The Backend methods keep their meaning; Put
// and Delete are unconditional (for copying a state), and the Store writes
// with Write instead.
type Shared interface {
	Backend

	// Lock takes the locks of keys across processes (a key given twice is
	// locked once), in an order that cannot deadlock with another Lock,
	// waiting until ctx ends. unlock releases them and may be called more
	// than once. While a process holds a key's lock, no other process's
	// Lock of that key returns; a process that dies releases its locks.
	Lock(ctx context.Context, keys []string) (unlock func(), err error)

	// Read returns the records of keys as they are now, with their
	// versions; absent keys are left out.
	Read(ctx context.Context, keys []string) ([]Versioned, error)

	// Write applies the writes in one transaction if each key's version is
	// still its Expect (0: the key must be absent); otherwise it writes
	// nothing and returns a *ConflictError naming every key whose version
	// differed. It returns the new version of each write, in order (0 for
	// a delete). Every successful Write is announced to the other
	// processes' Changes.
	Write(ctx context.Context, ws []Write) ([]int64, error)

	// OnChange sets fn, called for every change that other processes make
	// (writes by this Backend are not reported), one call at a time, in the
	// order the writes committed. A Change with Reset set means changes may
	// have been missed (the listening connection broke): every record must
	// be read again. fn must return quickly and must not call the Backend.
	// Set it once, before any write of any process matters.
	OnChange(fn func(Change))

	// CoherentAt returns the latest time t such that fn of OnChange has
	// returned for every write that other processes committed before t
	// (zero while that is not known, e.g. when disconnected).
	CoherentAt() time.Time

	// Lease takes or renews the named lease for holder, for ttl, and
	// reports whether holder has it now, with its fencing token: a number
	// that grows every time the lease passes to another holder. The lease
	// stays with a holder that renews it in time; it passes to another
	// once ttl has passed since the last renewal (by the database's clock
	// where there is one).
	Lease(ctx context.Context, name, holder string, ttl time.Duration) (held bool, token int64, err error)

	// Release gives up the named lease if holder has it.
	Release(ctx context.Context, name, holder string) error
}

// Versioned is a record with its version, a number above 0 that changes
// with every write of the key.
type Versioned struct {
	Key     string
	Value   []byte
	Version int64
}

// Write is one conditional write: Value is written (or, with Delete, the
// key removed) if the key's version is still Expect; Expect 0 means the key
// must be absent.
type Write struct {
	Key    string
	Value  []byte
	Delete bool
	Expect int64
}

// Change says that another process wrote Key (or, with Reset, that changes
// may have been missed).
type Change struct {
	Key   string
	Reset bool
}

// ErrConflict is what a *ConflictError matches with errors.Is.
var ErrConflict = errors.New("state: a record changed in another process")

// ConflictError is Write's refusal: the versions of Keys were not the
// expected ones, and nothing was written.
type ConflictError struct {
	Keys []string
}

func (e *ConflictError) Error() string {
	s := strings.Join(e.Keys, ", ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return ErrConflict.Error() + ": " + s
}

// Is makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }
