package bridge

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate/pgstatetest"
)

// Faults of a shared state that a review found the Store did not survive:
// each test asserts what the design promises.

// loseAnswer commits a Write and then reports an error, as when the
// connection breaks during COMMIT.
type loseAnswer struct {
	state.Shared
	lose bool
}

func (l *loseAnswer) Write(ctx context.Context, ws []state.Write) ([]int64, error) {
	v, err := l.Shared.Write(ctx, ws)
	if l.lose && err == nil {
		l.lose = false
		return nil, errors.New("connection reset while committing")
	}
	return v, err
}

// A write that committed but whose answer was lost leaves the replica's
// memory at the old record, not marked stale, and no notification of its
// own comes back: the replica goes on handing out the old token from
// memory. Here: the token was cleared (a reconcile's suspension confirmed by
// Directus), the write's answer was lost, and the cleared token is still
// Reusable long after.
func TestSharedStoreLostWriteAnswer(t *testing.T) {
	ms := memstate.NewShared()
	key := newKey(t)
	b, err := ms.Open()
	if err != nil {
		t.Fatal(err)
	}
	la := &loseAnswer{Shared: b}
	s := replicaStore(t, la, key)
	exp := time.Now().Add(time.Hour)
	putLocked(t, s, Record{UserID: "u", Client: "c", Token: "t0", Expiry: exp, Bound: true})

	unlock, err := s.Lock(t.Context(), "u")
	if err != nil {
		t.Fatal(err)
	}
	la.lose = true
	if err := s.Put(Record{UserID: "u", Client: "c", Bound: true, SuspendedByBridge: true}); err == nil {
		t.Fatal("the lost answer was not reported")
	}
	unlock()
	// The database holds the cleared record.
	vs, err := b.Read(t.Context(), []string{"u"})
	if err != nil || len(vs) != 1 {
		t.Fatal(vs, err)
	}
	if err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The refresher reads the record again (the write failed: it may
	// have committed).
	eventually(t, 10*time.Second, "the record read again", func() bool { r, _ := s.Get("u"); return r.SuspendedByBridge })
	if r, ok := s.Reusable("u"); ok && r.Token == "t0" {
		t.Fatalf("after a committed write whose answer was lost, memory still hands out %q (database at version %d holds no token)", r.Token, vs[0].Version)
	}
}

// PostgreSQL restarts a key's version at 1 when it is created again after a
// delete (memstate never repeats a version, so the model tests cannot see
// it). A replica that holds version 1 of the old record then takes the new
// one for the same (apply skips equal versions), even under the user's lock,
// and its conditional write at version 1 succeeds over the other replica's
// record: a lost update.
func TestSharedStoreVersionNeverReusedOnPostgres(t *testing.T) {
	sc := pgstatetest.NewSchemas(t)
	dsn := sc.Fresh(t)
	key := newKey(t)
	open := func() *Store {
		b, err := pgstate.OpenShared(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		s := replicaStore(t, b, key)
		return s
	}
	a, b := open(), open()
	exp := time.Now().Add(time.Hour)
	// b: a new client's write ahead (version 1), seen by a.
	putLocked(t, b, Record{UserID: "u", Client: "c", Unsure: true, Maybe: []Candidate{{Token: "t1", Expiry: exp}}})
	eventually(t, 10*time.Second, "a reads b's record", func() bool { r, ok := a.Get("u"); return ok && len(r.Maybe) == 1 })
	if err := a.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	// a's refresher is slow (busy, or waiting for the writer lock): it does
	// not read between b's two writes. Stopped here to make that certain;
	// the lock's own read below is what should catch the change.
	a.closeShared()
	// b: Directus refused, restore deletes; then the next attempt writes
	// another write ahead: version 1 again, other content.
	func() {
		unlock, err := b.Lock(t.Context(), "u")
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		if err := b.Delete(Record{UserID: "u"}); err != nil {
			t.Fatal(err)
		}
		if err := b.Put(Record{UserID: "u", Client: "c", Unsure: true, Maybe: []Candidate{{Token: "t2", Expiry: exp}}}); err != nil {
			t.Fatal(err)
		}
	}()
	unlock, err := a.Lock(t.Context(), "u")
	if err != nil {
		t.Fatal(err)
	}
	r, _ := a.Get("u")
	got := ""
	if len(r.Maybe) > 0 {
		got = r.Maybe[0].Token
	}
	// a writes from what it holds: on version 1 this succeeds over t2.
	werr := a.Put(Record{UserID: "u", Client: "c", Unsure: true, Maybe: []Candidate{{Token: got, Expiry: exp}, {Token: "t3", Expiry: exp}}})
	unlock()
	if got != "t2" {
		t.Errorf("under the lock a holds candidate %q, the database t2 (same version, other record)", got)
	}
	if werr == nil && got != "t2" {
		t.Errorf("a's write based on the deleted record succeeded: candidate t2 lost")
	}
}

// hangLock is a state whose Lock never answers (a database that accepts
// and does not reply, e.g. packets dropped on an open pooled connection).
type hangLock struct{ state.Shared }

func (hangLock) Lock(ctx context.Context, _ []string) (func(), error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// The exchange's locked path waits on the database with the request's
// context only: opTimeout bounds every Put, but not Lock and the read under
// it, so a hanging database holds exchanges until the client gives up
// instead of answering 503 + Retry-After.
func TestSharedStoreLockBoundedByOpTimeout(t *testing.T) {
	defer func(d time.Duration) { opTimeout = d }(opTimeout)
	opTimeout = 50 * time.Millisecond
	ms := memstate.NewShared()
	b, err := ms.Open()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSharedStore(hangLock{b}, time.Minute, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	done := make(chan error, 1)
	go func() {
		// A request context: no deadline of its own (ended here only to
		// let the goroutine go at the end of the test).
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := s.Lock(ctx, "u")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("locked a hanging state")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Store.Lock on a hanging database still waits after 100 times opTimeout")
	}
}

// One record this replica cannot decode (sealed by a replica that already
// has the next state key first, in a rolling rotation) fails the whole
// refresh batch it falls in: the other records of the batch stay stale for
// good (the refresher retries forever, logging nothing), and after a Reset
// the full read fails, so no record at all is handed out from memory while
// /readyz (Coherent) still reports the replica fine.
func TestSharedStoreUndecodableRecord(t *testing.T) {
	ms := memstate.NewShared()
	k1, k2 := newKey(t), newKey(t)
	open := func(keys ...[]byte) *Store {
		b, err := ms.Open()
		if err != nil {
			t.Fatal(err)
		}
		s := replicaStore(t, b, keys...)
		return s
	}
	a, c := open(k1), open(k1)
	exp := time.Now().Add(time.Hour)
	putLocked(t, c, Record{UserID: "w", Client: "w", Token: "t1", Expiry: exp, Bound: true})
	eventually(t, 10*time.Second, "a reads w", func() bool { r, ok := a.Reusable("w"); return ok && r.Token == "t1" })
	b := open(k2, k1) // the next key first: what it writes, a cannot open
	putLocked(t, b, Record{UserID: "u", Client: "u", Token: "tu", Expiry: exp, Bound: true})
	putLocked(t, c, Record{UserID: "w", Client: "w", Token: "t2", Expiry: exp, Bound: true})
	ok := false
	for range 100 {
		if r, got := a.Reusable("w"); got && r.Token == "t2" {
			ok = true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !ok {
		t.Errorf("a never hands out w's new token from memory: u's undecodable record blocks the batch (Coherent %v)", a.Coherent())
	}
}

// A replica whose database lock was lost during its Directus write (a
// database restart) finds its confirmation overtaken by another replica's
// write: the token it wrote goes back into the record as a candidate, so
// that the state still knows every token Directus may hold.
func TestSharedStoreKeepCandidateAfterLostLock(t *testing.T) {
	ms, a, b := twoReplicas(t)
	exp := time.Now().Add(time.Hour)
	unlock, err := a.Lock(t.Context(), "u")
	if err != nil {
		t.Fatal(err)
	}
	ahead := Record{UserID: "u", Client: "c", Unsure: true, Maybe: []Candidate{{Token: "ta", Expiry: exp}}}
	if err := a.Put(ahead); err != nil {
		t.Fatal(err)
	}
	ms.Fail(errors.New("restart")) // every session ends: a's lock with it
	ms.Fail(nil)
	eventually(t, 10*time.Second, "b reads a's write ahead", func() bool { r, ok := b.Get("u"); return ok && r.Unsure })
	putLocked(t, b, Record{UserID: "u", Client: "c", Token: "tb", Expiry: exp})
	confirmed := ahead
	confirmed.Token, confirmed.Expiry, confirmed.Maybe, confirmed.Unsure = "ta", exp, nil, false
	if err := a.Put(confirmed); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("a's confirmation over b's write: %v, want a conflict", err)
	}
	if err := a.KeepCandidate(confirmed, "ta", exp); err != nil {
		t.Fatal(err)
	}
	unlock()
	r, _ := a.Get("u")
	if !r.Unsure || r.Token != "tb" || len(r.Maybe) != 1 || r.Maybe[0].Token != "ta" {
		t.Fatalf("record after the lost lock: unsure %v token %q candidates %v; want unsure, tb, [ta]", r.Unsure, r.Token, r.Maybe)
	}
	eventually(t, 10*time.Second, "b hears of it", func() bool { r, _ := b.Get("u"); return r.Unsure && len(r.Maybe) == 1 })
}

// More faults of the several-replicas mode, found by a second review.

// upsert's restore after a definite refusal of a create deletes the write
// ahead with Store.Delete, whose conditional delete expects the version in
// memory, not the one the writer read under its lock. After a lost database
// lock, another replica's write that this one has heard of (the normal case:
// the feed is ~1 ms, Directus ~10 ms) is then deleted: a lost update, and the
// token that replica confirmed is unknown to the state.
func TestSharedStoreDeleteAfterLostLock(t *testing.T) {
	ms, a, b := twoReplicas(t)
	exp := time.Now().Add(time.Hour)
	unlock, err := a.Lock(t.Context(), "u")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	// A new client: the write ahead of the create.
	if err := a.Put(Record{UserID: "u", Client: "c", Unsure: true, Maybe: []Candidate{{Token: "ta", Expiry: exp}}}); err != nil {
		t.Fatal(err)
	}
	ms.Fail(errors.New("restart")) // a's database lock ends with its session
	ms.Fail(nil)
	eventually(t, 10*time.Second, "b reads a's write ahead", func() bool { r, ok := b.Get("u"); return ok && r.Unsure })
	putLocked(t, b, Record{UserID: "u", Client: "c", Token: "tb", Expiry: exp, Bound: true})
	eventually(t, 10*time.Second, "a hears of b's write", func() bool { r, _ := a.Get("u"); return r.Token == "tb" })
	// Directus refused a's create: restore deletes the write ahead.
	derr := a.Delete(Record{UserID: "u"}) // as written ahead, from no record
	vs, err := b.Shared().Read(t.Context(), []string{"u"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatalf("a's restore (Delete: %v) deleted b's record holding the confirmed token tb: a lost update", derr)
	}
	if !errors.Is(derr, state.ErrConflict) {
		t.Fatalf("Delete over another replica's write: %v, want a conflict", derr)
	}
}

// One record a replica cannot decode (a rolling key rotation done out of
// order: the docs say only that client is refused) fails every
// Lock of a batch it falls in. The jobs lock up to 200 users at once: a
// revoke batch holding it fails for all of them every run (expired tokens
// that Directus still accepts), a reconcile run stops at that batch, and
// Flush stops at the first batch for good. Here: Flush never writes w's
// last exchange, and locking w together with u fails.
func TestSharedStoreUndecodableRecordInABatch(t *testing.T) {
	ms := memstate.NewShared()
	k1, k2 := newKey(t), newKey(t)
	open := func(keys ...[]byte) *Store {
		b, err := ms.Open()
		if err != nil {
			t.Fatal(err)
		}
		s := replicaStore(t, b, keys...)
		return s
	}
	a, c := open(k1), open(k1)
	t0 := time.Now().Truncate(time.Second)
	exp := t0.Add(time.Hour)
	putLocked(t, c, Record{UserID: "u", Client: "u", Token: "tu", Expiry: exp, Bound: true, LastExchange: t0})
	putLocked(t, c, Record{UserID: "w", Client: "w", Token: "tw", Expiry: exp, Bound: true, LastExchange: t0})
	eventually(t, 10*time.Second, "a reads u and w", func() bool {
		_, u := a.Reusable("u")
		_, w := a.Reusable("w")
		return u && w
	})
	a.Touch("u", t0.Add(time.Minute))
	a.Touch("w", t0.Add(time.Minute))
	b := open(k2, k1) // the next key first, on one replica only
	putLocked(t, b, Record{UserID: "u", Client: "u", Token: "tu2", Expiry: exp, Bound: true, LastExchange: t0})
	eventually(t, 10*time.Second, "a finds u undecodable", func() bool {
		a.mu.RLock()
		defer a.mu.RUnlock()
		return a.sh.bad["u"]
	})
	ferr := a.Flush()
	if r, _ := c.Shared().Read(t.Context(), []string{"w"}); len(r) == 1 {
		got, _, err := c.decode("w", r[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		if !got.LastExchange.Equal(t0.Add(time.Minute)) {
			t.Errorf("Flush (%v) did not write w's last exchange: u, which this replica cannot open, holds up its batch", ferr)
		}
	}
	unlock, err := a.Lock(t.Context(), "u", "w")
	if err != nil {
		t.Errorf("locking w with the undecodable u: %v (every revoke/reconcile batch holding u fails for all its users)", err)
	} else {
		unlock()
	}
}

// readHook runs after the first Read once armed.
type readHook struct {
	state.Shared
	mu    sync.Mutex
	after func()
}

func (h *readHook) Read(ctx context.Context, keys []string) ([]state.Versioned, error) {
	vs, err := h.Shared.Read(ctx, keys)
	h.mu.Lock()
	f := h.after
	h.after = nil
	h.mu.Unlock()
	if f != nil {
		f()
	}
	return vs, err
}

// Lock's read (refresh with the keys' locks) is applied after taking the
// writer lock, without checking whether the refresher applied something
// newer meanwhile: with a lost database lock, memory goes back to the older
// record and the newer one is no longer stale, so the replica hands out
// from memory a token the other replica is replacing (the write ahead of a
// rotation) -- Reusable until another change of that user.
func TestSharedStoreLockReadKeepsNewerRecord(t *testing.T) {
	ms := memstate.NewShared()
	key := newKey(t)
	ba, err := ms.Open()
	if err != nil {
		t.Fatal(err)
	}
	h := &readHook{Shared: ba}
	a := replicaStore(t, h, key)
	bb, err := ms.Open()
	if err != nil {
		t.Fatal(err)
	}
	b := replicaStore(t, bb, key)
	exp := time.Now().Add(time.Hour)
	putLocked(t, b, Record{UserID: "u", Client: "c", Token: "t1", Expiry: exp, Bound: true})
	eventually(t, 10*time.Second, "a reads u", func() bool { r, ok := a.Reusable("u"); return ok && r.Token == "t1" })
	cur, _ := b.Get("u")
	h.mu.Lock()
	h.after = func() {
		// b writes while a's database lock is lost (its session ended):
		// the write ahead of a rotation of t1.
		ahead := cur
		ahead.Unsure, ahead.Maybe = true, []Candidate{{Token: "t2", Expiry: exp}}
		v, err := b.encode(&ahead)
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := bb.Write(context.Background(), []state.Write{{Key: "u", Value: v, Expect: cur.ver}}); err != nil {
			t.Error(err)
			return
		}
		// a's refresher hears of it while Lock's read is not applied yet:
		// it must not apply it before, nor Lock's older read after it.
		time.Sleep(50 * time.Millisecond)
	}
	h.mu.Unlock()
	unlock, err := a.Lock(t.Context(), "u")
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	eventually(t, 10*time.Second, "a reads b's write ahead", func() bool { r, _ := a.Get("u"); return r.Unsure })
	time.Sleep(50 * time.Millisecond)
	if r, ok := a.Reusable("u"); ok && r.Token == "t1" && !r.Unsure {
		t.Fatalf("a hands out t1 from memory while the database holds b's write ahead replacing it (a's memory at version %d)", r.ver)
	}
}

// The usual outcome of a lost lock: the other replica read this one's write
// ahead, took its candidate and confirmed it. KeepCandidate then marks the
// record unsure again (tok both the confirmed token and a candidate):
// nothing is lost, but the confirmed token stops being handed out from
// memory, and the next exchange reads the user in Directus and writes again.
func TestSharedStoreKeepCandidateOfConfirmedToken(t *testing.T) {
	ms, a, b := twoReplicas(t)
	exp := time.Now().Add(time.Hour)
	unlock, err := a.Lock(t.Context(), "u")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ahead := Record{UserID: "u", Client: "c", Unsure: true, Maybe: []Candidate{{Token: "ta", Expiry: exp}}}
	if err := a.Put(ahead); err != nil {
		t.Fatal(err)
	}
	ms.Fail(errors.New("restart"))
	ms.Fail(nil)
	eventually(t, 10*time.Second, "b reads a's write ahead", func() bool { r, ok := b.Get("u"); return ok && r.Unsure })
	putLocked(t, b, Record{UserID: "u", Client: "c", Token: "ta", Expiry: exp, Bound: true}) // b confirmed a's candidate
	confirmed := ahead
	confirmed.Token, confirmed.Expiry, confirmed.Maybe, confirmed.Unsure = "ta", exp, nil, false
	if err := a.Put(confirmed); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("a's confirmation over b's write: %v, want a conflict", err)
	}
	if err := a.KeepCandidate(confirmed, "ta", exp); err != nil {
		t.Fatal(err)
	}
	if r, _ := a.Get("u"); r.Unsure {
		t.Errorf("KeepCandidate of the token the database already holds confirmed made the record unsure (token %q, candidates %d)", r.Token, len(r.Maybe))
	}
}

// Sound (passes): the write ahead and the outcome from one read under the
// lock do not conflict when the refresher re-reads the record in between
// (a late notification, a markStale, a Reset of the feed).
func TestSharedStoreNoSpuriousConflictAcrossRefresh(t *testing.T) {
	ms, a, b := twoReplicas(t)
	exp := time.Now().Add(time.Hour)
	putLocked(t, b, Record{UserID: "u", Client: "c", Token: "t0", Expiry: exp, Bound: true})
	for i := range 20 {
		unlock, err := a.Lock(t.Context(), "u")
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := a.Get("u")
		next := rec
		next.Unsure, next.Maybe = true, []Candidate{{Token: "tn", Expiry: exp}}
		if err := a.Put(next); err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			a.markStale([]string{"u"})
		case 1:
			ms.CutFeed(a.Shared())
			ms.RestoreFeed(a.Shared())
		case 2:
			if err := a.Sync(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond)
		if i%2 == 0 {
			err = a.Put(rec) // restore
		} else {
			next.Token, next.Maybe, next.Unsure = "tn", nil, false
			err = a.Put(next)
		}
		unlock()
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
}
