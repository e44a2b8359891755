package memstate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
)

// SharedState is one in-memory "database" that any number of instances
// open as state.Shared, as bridge replicas open one PostgreSQL state: a fake
// that passes the same conformance suite (conformance.RunShared) as the real
// adapter, with hooks that simulate its faults for tests of the bridge:
// Fail (the database is down), CutFeed and RestoreFeed (one instance's change
// feed breaks), SetLeaseClock (lease expiry without sleeping).
type SharedState struct {
	mu        sync.Mutex
	records   map[string]versioned
	meta      map[string][]byte
	seq       int64 // the last version given: versions are unique, so every write changes a key's
	locks     map[string]*hold
	released  chan struct{} // closed (and replaced) when a lock is released or a fault begins
	leases    map[string]*leaseRecord
	instances map[*instance]struct{}
	fail      error
	leaseNow  func() time.Time
}

type versioned struct {
	value   []byte // never changed in place
	version int64
}

// hold is one successful Lock: the keys it holds map to it in locks.
type hold struct {
	owner *instance
	keys  []string
}

type leaseRecord struct {
	holder  string // "" once released
	token   int64
	expires time.Time
}

// NewShared returns an empty shared state.
func NewShared() *SharedState {
	return &SharedState{
		records:   map[string]versioned{},
		meta:      map[string][]byte{},
		locks:     map[string]*hold{},
		released:  make(chan struct{}),
		leases:    map[string]*leaseRecord{},
		instances: map[*instance]struct{}{},
		leaseNow:  time.Now,
	}
}

// Open returns one more instance of the state. Each has its own change feed,
// delivered by its own goroutine from an unbounded queue, so that a writer
// never waits for a slow subscriber; Close stops it.
func (s *SharedState) Open() (state.Shared, error) {
	i := &instance{s: s, feedUp: true, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	s.mu.Lock()
	if s.fail != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("memstate: open: %w", s.fail)
	}
	s.instances[i] = struct{}{}
	s.mu.Unlock()
	i.done.Add(1)
	go i.deliver()
	return i, nil
}

// Fail makes every operation of every instance (and Open) return err,
// wrapped, until Fail(nil): a database that is down. As a real outage
// would, it also ends every held lock (the unlock funcs of those Locks then
// release nothing, and a Lock that was waiting returns err) and breaks every
// change feed: CoherentAt is zero, changes in the queues are dropped, and
// Fail(nil) delivers a Change with Reset to each instance whose feed was not
// cut by CutFeed. Records, meta values and leases survive, as in a database.
func (s *SharedState) Fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
	if err != nil {
		clear(s.locks)
		s.broadcast()
	}
	for i := range s.instances {
		i.refreshFeed()
	}
}

// CutFeed breaks the change feed of b, an instance of s, as a broken
// listening connection would: its CoherentAt is zero and changes by others
// are not delivered to it (queued ones are dropped) until RestoreFeed, which
// delivers a Change with Reset first. b's other operations work on.
func (s *SharedState) CutFeed(b state.Shared) { s.setCut(b, true) }

// RestoreFeed mends the change feed that CutFeed broke: a Change with Reset
// is delivered, and CoherentAt is known again once its fn call returned.
func (s *SharedState) RestoreFeed(b state.Shared) { s.setCut(b, false) }

func (s *SharedState) setCut(b state.Shared, cut bool) {
	i, ok := b.(*instance)
	if !ok || i.s != s {
		panic("memstate: CutFeed or RestoreFeed of a Backend not opened from this SharedState")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i.cut = cut
	i.refreshFeed()
}

// SetLeaseClock sets the clock by which leases expire (time.Now unless
// set), so that a test can pass a ttl without sleeping. The change feed's
// CoherentAt keeps the real clock: it is compared with the bridge's.
func (s *SharedState) SetLeaseClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaseNow = now
}

// broadcast wakes every waiting Lock; s.mu is held.
func (s *SharedState) broadcast() {
	close(s.released)
	s.released = make(chan struct{})
}

// announce queues a change of key for every instance but from; s.mu is
// held, so that the order of the queues is the order of the commits.
func (s *SharedState) announce(from *instance, keys []string) {
	at := time.Now()
	for i := range s.instances {
		if i == from || !i.feedUp {
			continue
		}
		for _, k := range keys {
			i.push(state.Change{Key: k}, at)
		}
	}
}

var errClosed = errors.New("memstate: the Backend is closed")

// instance is one opener's state.Shared. Its fields but s, wake, stop and
// done are guarded by s.mu.
type instance struct {
	s      *SharedState
	closed bool
	fn     func(state.Change)

	// The change feed: queue holds what fn has yet to return from (its head
	// may be in a call of fn). feedUp is false while the feed is broken (by
	// Fail or CutFeed); when it is mended, a Reset heads the queue.
	queue  []pending
	lastID int64
	feedUp bool
	cut    bool
	wake   chan struct{}
	stop   chan struct{}
	done   sync.WaitGroup
}

type pending struct {
	id     int64 // of the instance's queue, to know an entry again
	change state.Change
	at     time.Time // when the write committed
}

// refreshFeed brings feedUp in line with the faults; s.mu is held.
func (i *instance) refreshFeed() {
	up := !i.closed && !i.cut && i.s.fail == nil
	switch {
	case i.feedUp && !up:
		i.queue = nil // lost, as notifications on a broken connection are
	case !i.feedUp && up:
		i.push(state.Change{Reset: true}, time.Now())
	}
	i.feedUp = up
}

// push queues c, committed at at; s.mu is held.
func (i *instance) push(c state.Change, at time.Time) {
	i.lastID++
	i.queue = append(i.queue, pending{id: i.lastID, change: c, at: at})
	i.signal()
}

func (i *instance) signal() {
	select {
	case i.wake <- struct{}{}:
	default:
	}
}

// deliver calls fn for the queue's changes, one at a time, in order.
func (i *instance) deliver() {
	defer i.done.Done()
	for {
		select {
		case <-i.stop:
			return
		case <-i.wake:
		}
		for {
			i.s.mu.Lock()
			if i.closed || len(i.queue) == 0 {
				i.s.mu.Unlock()
				break
			}
			head, fn := i.queue[0], i.fn
			i.s.mu.Unlock()
			if fn != nil {
				fn(head.change)
			}
			i.s.mu.Lock()
			// The head leaves the queue only once fn returned: CoherentAt
			// counts on it. A broken feed may have emptied the queue
			// meanwhile (and queued a Reset since): leave that be.
			if len(i.queue) > 0 && i.queue[0].id == head.id {
				i.queue = i.queue[1:]
			}
			i.s.mu.Unlock()
		}
	}
}

func (i *instance) check() error {
	if i.closed {
		return errClosed
	}
	if i.s.fail != nil {
		return fmt.Errorf("memstate: %w", i.s.fail)
	}
	return nil
}

func (i *instance) Load(_ context.Context, fn func(string, []byte) error) error {
	i.s.mu.Lock()
	if err := i.check(); err != nil {
		i.s.mu.Unlock()
		return err
	}
	snap := make(map[string][]byte, len(i.s.records))
	for k, r := range i.s.records {
		snap[k] = r.value
	}
	i.s.mu.Unlock()
	for k, v := range snap {
		if err := fn(k, bytes.Clone(v)); err != nil {
			return err
		}
	}
	return nil
}

func (i *instance) Put(_ context.Context, es []state.Entry) error {
	for _, e := range es {
		if err := state.Check(e); err != nil {
			return fmt.Errorf("memstate: put: %w", err)
		}
	}
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	if err := i.check(); err != nil {
		return err
	}
	var keys []string
	for _, e := range es {
		i.s.seq++
		i.s.records[e.Key] = versioned{value: cloneValue(e.Value), version: i.s.seq}
		keys = append(keys, e.Key)
	}
	// Put is for copying a state, but it changes records all the same: the
	// other instances hear of it, as of a Write.
	i.s.announce(i, keys)
	return nil
}

func (i *instance) Delete(_ context.Context, key string) error {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	if err := i.check(); err != nil {
		return err
	}
	if _, ok := i.s.records[key]; ok {
		delete(i.s.records, key)
		i.s.announce(i, []string{key})
	}
	return nil
}

func (i *instance) Meta(_ context.Context, key string) ([]byte, bool, error) {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	if err := i.check(); err != nil {
		return nil, false, err
	}
	v, ok := i.s.meta[key]
	return bytes.Clone(v), ok, nil
}

func (i *instance) SetMeta(_ context.Context, key string, value []byte) error {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	if err := i.check(); err != nil {
		return err
	}
	i.s.meta[key] = cloneValue(value)
	return nil
}

// Close releases the instance's locks and stops its change feed; no call of
// fn is running or to come once it returns.
func (i *instance) Close() error {
	i.s.mu.Lock()
	if i.closed {
		i.s.mu.Unlock()
		return nil
	}
	i.closed = true
	delete(i.s.instances, i)
	for k, h := range i.s.locks {
		if h.owner == i {
			delete(i.s.locks, k)
		}
	}
	i.s.broadcast()
	i.s.mu.Unlock()
	close(i.stop)
	i.done.Wait()
	return nil
}

// Lock takes the keys one at a time in sorted order, as a database's
// per-key locks would be taken, so that no two Locks deadlock.
func (i *instance) Lock(ctx context.Context, keys []string) (func(), error) {
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	h := &hold{owner: i}
	s := i.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		for {
			if err := i.check(); err != nil {
				s.release(h)
				return nil, err
			}
			if s.locks[k] == nil {
				s.locks[k] = h
				h.keys = append(h.keys, k)
				break
			}
			released := s.released
			s.mu.Unlock()
			select {
			case <-released:
				s.mu.Lock()
			case <-ctx.Done():
				s.mu.Lock()
				s.release(h)
				return nil, fmt.Errorf("memstate: lock %q: %w", k, ctx.Err())
			}
		}
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.release(h)
	}, nil
}

// release gives up what h holds still (nothing after a Close of its owner
// or a Fail); s.mu is held.
func (s *SharedState) release(h *hold) {
	freed := false
	for _, k := range h.keys {
		if s.locks[k] == h {
			delete(s.locks, k)
			freed = true
		}
	}
	h.keys = nil
	if freed {
		s.broadcast()
	}
}

func (i *instance) Read(_ context.Context, keys []string) ([]state.Versioned, error) {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	if err := i.check(); err != nil {
		return nil, err
	}
	var out []state.Versioned
	for _, k := range slices.Compact(slices.Sorted(slices.Values(keys))) {
		if r, ok := i.s.records[k]; ok {
			out = append(out, state.Versioned{Key: k, Value: bytes.Clone(r.value), Version: r.version})
		}
	}
	return out, nil
}

func (i *instance) Write(_ context.Context, ws []state.Write) ([]int64, error) {
	for _, w := range ws {
		if err := state.Check(state.Entry{Key: w.Key, Value: w.Value}); err != nil {
			return nil, fmt.Errorf("memstate: write: %w", err)
		}
	}
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	if err := i.check(); err != nil {
		return nil, err
	}
	// Every Expect is checked against the state before the batch.
	var conflicts []string
	for _, w := range ws {
		if i.s.records[w.Key].version != w.Expect && !slices.Contains(conflicts, w.Key) {
			conflicts = append(conflicts, w.Key)
		}
	}
	if conflicts != nil {
		return nil, fmt.Errorf("memstate: write: %w", &state.ConflictError{Keys: conflicts})
	}
	versions := make([]int64, len(ws))
	var keys []string
	for n, w := range ws {
		keys = append(keys, w.Key)
		if w.Delete {
			delete(i.s.records, w.Key)
			continue
		}
		i.s.seq++
		i.s.records[w.Key] = versioned{value: cloneValue(w.Value), version: i.s.seq}
		versions[n] = i.s.seq
	}
	i.s.announce(i, keys)
	return versions, nil
}

func (i *instance) OnChange(fn func(state.Change)) {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	i.fn = fn
}

// CoherentAt is the commit time of the oldest change fn has not returned
// from (every earlier one it has), or now when there is none.
func (i *instance) CoherentAt() time.Time {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	if i.closed || !i.feedUp {
		return time.Time{}
	}
	if len(i.queue) == 0 {
		return time.Now()
	}
	if i.queue[0].change.Reset {
		return time.Time{} // changes were dropped: nothing is known until fn read all again
	}
	return i.queue[0].at
}

func (i *instance) Lease(_ context.Context, name, holder string, ttl time.Duration) (bool, int64, error) {
	if holder == "" || ttl <= 0 {
		return false, 0, fmt.Errorf("memstate: lease %q: holder %q, ttl %s: want a holder and a ttl above 0", name, holder, ttl)
	}
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	if err := i.check(); err != nil {
		return false, 0, err
	}
	now := i.s.leaseNow()
	l := i.s.leases[name]
	switch {
	case l == nil:
		l = &leaseRecord{holder: holder, token: 1}
		i.s.leases[name] = l
	case l.holder == holder:
		// A renewal, even past the ttl if nobody took it meanwhile: the
		// token stays, since the lease did not pass to another.
	case l.holder == "" || !now.Before(l.expires):
		l.holder = holder
		l.token++
	default:
		return false, 0, nil
	}
	l.expires = now.Add(ttl)
	return true, l.token, nil
}

func (i *instance) Release(_ context.Context, name, holder string) error {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	if err := i.check(); err != nil {
		return err
	}
	if l := i.s.leases[name]; l != nil && l.holder == holder {
		l.holder = "" // the token stays, so that the next holder's is higher
	}
	return nil
}

// cloneValue copies v, never nil: an empty value is a value.
func cloneValue(v []byte) []byte {
	return append([]byte{}, v...)
}
