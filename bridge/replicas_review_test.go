package bridge

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
)

// More faults of the several-replicas mode a second review found: each
// test asserts what the design promises.

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
