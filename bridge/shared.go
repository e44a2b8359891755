package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
)

// A Store on a state.Shared backend is one of several replicas on one
// state. Each keeps every record in memory, as on a file, and:
//
//   - writes a record only while it holds the user's lock in the database
//     (Lock), after reading the record from the database under that lock,
//     and only if its version is still the one read (a conditional write:
//     a lost lock can never make an update lost);
//   - hears of every other replica's writes (state.Shared's OnChange) and
//     marks those records stale until it has read them again;
//   - hands out a live token without asking the database (Reusable) only
//     while the record is not stale and the change feed is coherent: every
//     write committed more than MaxStale ago has been heard of.
//
// Every writer marks a record (unsure, with its new token as a candidate)
// and commits that before the Directus request that may end the old token,
// so another replica stops handing the old one out when it hears of that
// write, normally long before Directus answers. Without the feed (the
// database away) the bound is MaxStale, after which returning clients take
// the locked path and get a 503 while the database is away.

// DefaultMaxStale is the default bound on how old the change feed may be
// before a replica stops handing out tokens from memory.
const DefaultMaxStale = 2 * time.Second

// sharedBatch bounds the keys of one database lock or read: advisory locks
// take entries of PostgreSQL's shared lock table.
const sharedBatch = 200

// sharedState is the part of a Store that only a replica has.
type sharedState struct {
	b        state.Shared
	maxStale time.Duration
	seq      uint64            // counts changes heard of (s.mu)
	stale    map[string]uint64 // key -> seq of its latest change not read since (s.mu)
	reset    uint64            // seq of a Reset not followed by a full read yet (s.mu)
	// bad are the records this replica cannot decode (sealed with a key
	// it does not have): never handed out from memory, refused under the
	// lock, and not read again until another change (s.mu).
	bad     map[string]bool
	log     *slog.Logger
	ctx     context.Context // ends with Close: bounds the refresher's reads
	cancel  context.CancelFunc
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	closing sync.Once
}

// NewSharedStore is NewStore on a state several replicas share: it reads
// every record with its version, keeps hearing of the other replicas'
// writes, and writes only under the users' database locks (see Lock). The
// Store owns b from then on.
func NewSharedStore(b state.Shared, maxStale time.Duration, keys ...[]byte) (*Store, error) {
	if maxStale <= 0 {
		maxStale = DefaultMaxStale
	}
	s, err := newStore(b, false, keys...)
	if err != nil {
		return nil, err
	}
	sh := &sharedState{b: b, maxStale: maxStale, stale: map[string]uint64{}, bad: map[string]bool{},
		log: slog.New(slog.DiscardHandler), kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	sh.ctx, sh.cancel = context.WithCancel(context.Background())
	s.sh = sh
	// Heard of before the records are read: no change falls in between.
	b.OnChange(s.heard)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := s.readAll(ctx); err != nil {
		return nil, fmt.Errorf("state: load: %w", err)
	}
	go s.refresher()
	return s, nil
}

// heard is the backend's OnChange: the record is stale until read again.
func (s *Store) heard(c state.Change) {
	if c.Reset {
		s.changed(nil, true)
	} else {
		s.changed([]string{c.Key}, false)
	}
}

// changed marks keys (every record, with all) stale until read again, and
// wakes the refresher.
func (s *Store) changed(keys []string, all bool) {
	s.mu.Lock()
	s.sh.seq++
	if all {
		s.sh.reset = s.sh.seq
	}
	for _, k := range keys {
		s.sh.stale[k] = s.sh.seq
	}
	s.mu.Unlock()
	select {
	case s.sh.kick <- struct{}{}:
	default:
	}
}

// Reusable returns the record of userID for handing out its live token
// without a lock: on a replica only while the record is known to be what
// the database holds, up to MaxStale.
func (s *Store) Reusable(userID string) (Record, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.recs[userID]
	if !ok {
		return Record{}, false
	}
	if sh := s.sh; sh != nil {
		if sh.reset != 0 || sh.stale[userID] != 0 || sh.bad[userID] || !s.Coherent() {
			return Record{}, false
		}
	}
	return r.clone(), true
}

// Coherent reports, on a replica, whether the change feed is recent enough
// for tokens to be handed out from memory (always true on a file).
func (s *Store) Coherent() bool {
	if s.sh == nil {
		return true
	}
	return time.Since(s.sh.b.CoherentAt()) < s.sh.maxStale
}

// SetLogger sets where a replica's Store reports what it cannot do
// (records it cannot open, a change feed it cannot read).
func (s *Store) SetLogger(l *slog.Logger) {
	if s.sh != nil && l != nil {
		s.sh.log = l
	}
}

// Shared reports whether the Store is a replica on a shared state.
func (s *Store) Shared() state.Shared {
	if s.sh == nil {
		return nil
	}
	return s.sh.b
}

// Lock serialises the writes of the users ids: in this process, and on a
// replica also across processes (the database's locks, taken after this
// process's), after which the records of ids are read from the database so
// that Get returns what the database holds. unlock releases everything.
func (s *Store) Lock(ctx context.Context, ids ...string) (unlock func(), err error) {
	local, err := s.locks.lockAll(ctx, ids)
	if err != nil {
		return nil, err
	}
	if s.sh == nil {
		return local, nil
	}
	// A database that does not answer fails the caller (503) within
	// opTimeout, as every write does, instead of holding it.
	lctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	remote, err := s.lockShared(lctx, ids)
	if err != nil {
		local()
		return nil, s.failed(err)
	}
	return func() { remote(); local() }, nil
}

// lockShared takes the database locks of ids and reads their records.
func (s *Store) lockShared(ctx context.Context, ids []string) (func(), error) {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	var unlocks []func()
	all := func() {
		for _, u := range slices.Backward(unlocks) {
			u()
		}
	}
	// Batches are taken in sorted order, so that two lockers cannot wait
	// on each other across batches either.
	for k := range slices.Chunk(ids, sharedBatch) {
		u, err := s.sh.b.Lock(ctx, k)
		if err != nil {
			all()
			return nil, fmt.Errorf("state: lock: %w", err)
		}
		unlocks = append(unlocks, u)
	}
	for k := range slices.Chunk(ids, sharedBatch) {
		if err := s.refresh(ctx, k); err != nil {
			all()
			return nil, err
		}
	}
	return all, nil
}

// refresh reads the records of keys from the database and puts them in
// memory. It holds the writer lock across the read, so that neither a write
// of this process nor another refresh falls between the read and its use
// (a refresh that read an older record must not apply it over a newer
// one). A record this replica cannot open is dropped from memory and
// marked bad (refused, logged), and the others are read as usual.
func (s *Store) refresh(ctx context.Context, keys []string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	seq := s.sh.seq
	s.mu.RUnlock()
	vs, err := s.sh.b.Read(ctx, keys)
	if err != nil {
		return fmt.Errorf("state: read: %w", err)
	}
	got := make(map[string]*Record, len(vs))
	older := map[string]bool{}
	bad := map[string]error{}
	for _, v := range vs {
		r, old, err := s.decode(v.Key, v.Value)
		if err != nil {
			// One record this replica cannot open (another replica seals
			// with a key this one lacks) must not hold up the others.
			bad[v.Key] = err
			continue
		}
		r.ver, r.own = v.Version, v.Version
		got[v.Key], older[v.Key] = r, old
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if err, ok := bad[k]; ok {
			// Without the record, this replica's exchange of the client
			// fails (its write finds a record where it expected none) and
			// the jobs pass it over.
			delete(s.recs, k)
			delete(s.dirty, k)
			delete(s.older, k)
			if !s.sh.bad[k] {
				s.sh.log.Error("state: a record of the shared state cannot be read by this replica; its client is refused here until it can "+
					"(do all replicas have the same state keys?)", "user_id", k, "err", err)
			}
			s.sh.bad[k] = true
		} else {
			delete(s.sh.bad, k)
			s.apply(k, got[k], older[k])
		}
		if s.sh.stale[k] <= seq {
			delete(s.sh.stale, k)
		}
	}
	return nil
}

// apply puts what the database holds for key (nil: nothing) in memory;
// s.mu is held. A LastExchange of this process's not written yet is kept.
func (s *Store) apply(key string, r *Record, older bool) {
	cur := s.recs[key]
	if r == nil {
		if cur != nil {
			delete(s.recs, key)
			delete(s.dirty, key)
			delete(s.older, key)
		}
		return
	}
	if cur != nil && cur.ver == r.ver {
		return
	}
	if cur != nil && s.dirty[key] && cur.LastExchange.After(r.LastExchange) {
		r.LastExchange = cur.LastExchange
	} else {
		delete(s.dirty, key)
	}
	if older {
		s.older[key] = true
	} else {
		delete(s.older, key)
	}
	s.in.record(r)
	s.rev++
	r.rev = s.rev
	s.recs[key] = r
}

// readAll reads every record again (at the start, and after a Reset):
// the keys from Load, then the records with their versions.
func (s *Store) readAll(ctx context.Context) error {
	s.mu.RLock()
	seq := s.sh.seq
	s.mu.RUnlock()
	keys := map[string]bool{}
	err := s.sh.b.Load(ctx, func(k string, _ []byte) error {
		keys[k] = true
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.RLock()
	for k := range s.recs {
		keys[k] = true // gone from the database: refresh forgets it
	}
	s.mu.RUnlock()
	all := slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	})
	for k := range slices.Chunk(all, 500) {
		if err := s.refresh(ctx, k); err != nil {
			return err
		}
	}
	s.mu.Lock()
	if s.sh.reset <= seq {
		s.sh.reset = 0
	}
	s.mu.Unlock()
	return nil
}

// refresher reads what the other replicas changed, as they announce it.
func (s *Store) refresher() {
	defer close(s.sh.done)
	wait := 100 * time.Millisecond
	for {
		select {
		case <-s.sh.stop:
			return
		case <-s.sh.kick:
		}
		for {
			err := s.refreshStale()
			if err == nil {
				wait = 100 * time.Millisecond
				break
			}
			if s.sh.ctx.Err() == nil {
				s.sh.log.Warn("state: reading the other replicas' changes failed; their records are not handed out from memory until it works", "err", err)
			}
			// The database away: the records stay stale (no token from
			// memory), and the refresher tries again.
			select {
			case <-s.sh.stop:
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
		}
	}
}

// refreshStale reads every stale record (everything after a Reset).
func (s *Store) refreshStale() error {
	ctx, cancel := context.WithTimeout(s.sh.ctx, opTimeout)
	defer cancel()
	s.mu.RLock()
	reset := s.sh.reset != 0
	s.mu.RUnlock()
	if reset {
		ctx, cancel := context.WithTimeout(s.sh.ctx, 5*time.Minute)
		defer cancel()
		if err := s.readAll(ctx); err != nil {
			return err
		}
	}
	for {
		s.mu.RLock()
		keys := make([]string, 0, min(len(s.sh.stale), 500))
		for k := range s.sh.stale {
			if len(keys) == 500 {
				break
			}
			keys = append(keys, k)
		}
		s.mu.RUnlock()
		if len(keys) == 0 {
			return nil
		}
		if err := s.refresh(ctx, keys); err != nil {
			return err
		}
	}
}

// syncWait bounds how long Sync waits for the change feed to catch up
// before it reads every record instead.
var syncWait = time.Second

// Sync brings the records in memory up to date with every write committed
// before it was called, on a replica (on a file they always are): the jobs
// that walk every record (revoker, reconciler, watcher) call it first, since
// a record another replica created may not be in memory yet. It waits for
// the change feed up to a second, and reads every record when the feed
// does not catch up (cut off).
func (s *Store) Sync(ctx context.Context) error {
	if s.sh == nil {
		return nil
	}
	start := time.Now()
	for s.sh.b.CoherentAt().Before(start) && time.Since(start) < syncWait {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	if s.sh.b.CoherentAt().Before(start) {
		s.changed(nil, true)
	}
	if err := s.refreshStale(); err != nil {
		return s.failed(fmt.Errorf("state: sync: %w", err))
	}
	return nil
}

// markStale makes the refresher read keys again (a conditional write found
// them changed).
func (s *Store) markStale(keys []string) {
	if s.sh != nil {
		s.changed(keys, false)
	}
}

// writeShared writes rs conditionally and returns their new versions, and
// the versions they descend from; s.wmu is held.
//
// A record is written on the version it was read at (a copy keeps its
// version), unless it was read at a version this process's own writes have
// replaced since without another replica's write in between (the write
// ahead of an exchange, then its outcome, both from one read): then on the
// version in memory. So a write from a record another replica has changed
// since it was read conflicts, even when memory has heard of that change.
func (s *Store) writeShared(ctx context.Context, rs []Record, es []state.Entry) (vers, bases []int64, err error) {
	ws := make([]state.Write, len(es))
	bases = make([]int64, len(es))
	s.mu.RLock()
	for i, e := range es {
		ws[i] = state.Write{Key: e.Key, Value: e.Value}
		ws[i].Expect, bases[i] = s.expected(s.recs[e.Key], rs[i].ver)
	}
	s.mu.RUnlock()
	vers, err = s.sh.b.Write(ctx, ws)
	if err != nil {
		// A conflict, or any failure: the write may have committed with
		// its answer lost, and a replica never hears of its own writes.
		keys := make([]string, len(ws))
		for i := range ws {
			keys[i] = ws[i].Key
		}
		s.markStale(keys)
		return nil, nil, err
	}
	return vers, bases, nil
}

// expected is the version a write (or delete) of a record read at version
// read must find, and the version the record then descends from, given
// cur, the record in memory (nil: none); s.mu is held.
func (s *Store) expected(cur *Record, read int64) (expect, base int64) {
	switch {
	case cur == nil:
		return 0, 0 // absent as far as this process knows: it must be absent
	case read >= cur.own && read <= cur.ver:
		return cur.ver, cur.own
	default:
		return read, read
	}
}

// deleteShared deletes r conditionally, as writeShared writes; s.wmu is
// held.
func (s *Store) deleteShared(ctx context.Context, r Record) error {
	key := r.UserID
	s.mu.RLock()
	cur := s.recs[key]
	expect, _ := s.expected(cur, r.ver)
	s.mu.RUnlock()
	if cur == nil {
		return nil // not in the database either, as far as this process knows
	}
	_, err := s.sh.b.Write(ctx, []state.Write{{Key: key, Delete: true, Expect: expect}})
	if err != nil {
		s.markStale([]string{key}) // a conflict, or committed with the answer lost
	}
	return err
}

// flushShared writes the records changed by Touch, each under its
// database lock, re-read first (another replica may have written it).
func (s *Store) flushShared() error {
	s.mu.RLock()
	ids := make([]string, 0, len(s.dirty))
	for id := range s.dirty {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	slices.Sort(ids)
	for k := range slices.Chunk(ids, sharedBatch) {
		if err := s.flushBatch(k); err != nil {
			return err // the rest next time: a database away fails each batch after opTimeout
		}
	}
	return nil
}

func (s *Store) flushBatch(ids []string) error {
	ctx, cancel := opCtx()
	defer cancel()
	unlock, err := s.Lock(ctx, ids...)
	if err != nil {
		return err
	}
	defer unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	var rs []Record
	for _, id := range ids {
		if r := s.recs[id]; r != nil && s.dirty[id] {
			rs = append(rs, r.clone())
		}
	}
	s.mu.RUnlock()
	if len(rs) == 0 {
		return nil
	}
	return s.putAll(ctx, rs)
}

// KeepCandidate records that Directus may hold tok (expiring at exp) for
// the user of base, after the write confirming it lost to another
// replica's: the record is read again, marked unsure and given tok as a
// candidate. base stands for a record the database no longer has.
func (s *Store) KeepCandidate(base Record, tok string, exp time.Time) error {
	return s.amend(base, func(r *Record, found bool) bool {
		if !found {
			*r = base
			r.Token, r.Expiry, r.Maybe = "", time.Time{}, nil
		}
		has := slices.ContainsFunc(r.Maybe, func(c Candidate) bool { return c.Token == tok })
		if r.Token == tok && !r.Unsure || r.Unsure && has {
			return false // known already: confirmed, or a candidate
		}
		r.Unsure = true
		if !has {
			r.Maybe = append(slices.Clone(r.Maybe), Candidate{Token: tok, Expiry: exp})
		}
		return true
	})
}

// MarkUnsure records that what Directus holds for the user of r is not
// known, after a write of the jobs (a revocation, a reconcile batch) that
// Directus applied lost to another replica's write in the state: the next
// exchange reads the user first.
func (s *Store) MarkUnsure(r Record) error {
	return s.amend(r, func(r *Record, found bool) bool {
		if !found || r.Unsure {
			return false
		}
		r.Unsure = true
		return true
	})
}

// amend reads the record of base's user again, lets change alter it (found:
// the database has it), and writes it conditionally, again on a conflict,
// three times at most. Only on a replica.
func (s *Store) amend(base Record, change func(r *Record, found bool) bool) error {
	if s.sh == nil {
		return nil
	}
	var err error
	for range 3 {
		ctx, cancel := opCtx()
		err = s.refresh(ctx, []string{base.UserID})
		cancel()
		if err != nil {
			continue
		}
		r, found := s.Get(base.UserID)
		if !change(&r, found) {
			return nil
		}
		if err = s.Put(r); err == nil || !errors.Is(err, state.ErrConflict) {
			return err
		}
	}
	return err
}

// closeShared stops the refresher.
func (s *Store) closeShared() {
	if s.sh == nil {
		return
	}
	s.sh.closing.Do(func() {
		s.sh.cancel()
		close(s.sh.stop)
		<-s.sh.done
	})
}

// decode reads one stored record.
func (s *Store) decode(k string, v []byte) (*Record, bool, error) {
	r := &Record{}
	if err := json.Unmarshal(v, r); err != nil {
		return nil, false, err
	}
	older, err := s.unseal(r)
	if err != nil {
		return nil, false, err
	}
	if r.UserID != k {
		return nil, false, errors.New("the record's user id is not its key " + strconv.Quote(k))
	}
	r.migrate()
	return r, older, nil
}
