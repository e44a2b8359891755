package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
)

// twoReplicas opens two Stores on one in-memory shared state.
func twoReplicas(t *testing.T) (*memstate.SharedState, *Store, *Store) {
	t.Helper()
	ms := memstate.NewShared()
	key := newKey(t)
	open := func() *Store {
		b, err := ms.Open()
		if err != nil {
			t.Fatal(err)
		}
		s := replicaStore(t, b, key)
		return s
	}
	return ms, open(), open()
}

// replicaStore is a Store on the instance b, closed when the test ends.
func replicaStore(t *testing.T, b state.Shared, keys ...[]byte) *Store {
	t.Helper()
	s, err := NewSharedStore(b, time.Minute, keys...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// instances opens instances of ms, closed when the test ends.
func instances(t *testing.T, ms *memstate.SharedState) func() state.Shared {
	return func() state.Shared {
		b, err := ms.Open()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
}

// putLocked writes r on s under the user's locks, in place of the record
// read there, as every writer does.
func putLocked(t *testing.T, s *Store, r Record) {
	t.Helper()
	unlock, err := s.Lock(t.Context(), r.UserID)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	// As every writer does: from the record read under the lock.
	if cur, ok := s.Get(r.UserID); ok {
		r.ver = cur.ver
	}
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
}

// A record another replica writes reaches this one, and until it has been
// read it is not handed out from memory.
func TestSharedStoreHearsOtherReplicas(t *testing.T) {
	_, a, b := twoReplicas(t)
	exp := time.Now().Add(time.Hour)
	putLocked(t, a, Record{UserID: "u", Client: "c", Token: "t1", Expiry: exp, Bound: true})
	eventually(t, 10*time.Second, "b reads a's record", func() bool { r, ok := b.Reusable("u"); return ok && r.Token == "t1" })
	// b rotates; a must stop handing out t1 and then see t2.
	putLocked(t, b, Record{UserID: "u", Client: "c", Token: "t2", Expiry: exp, Bound: true})
	eventually(t, 10*time.Second, "a reads b's rotation", func() bool { r, ok := a.Reusable("u"); return ok && r.Token == "t2" })
	// Locking reads the record in the database whatever memory holds.
	if r, _ := a.Get("u"); r.Token != "t2" {
		t.Fatalf("a holds %q, want t2", r.Token)
	}
}

// With its change feed cut, a replica hands out nothing from memory, reads
// the record under the lock, and Sync reads records it never heard of.
func TestSharedStoreCutFeed(t *testing.T) {
	defer func(w time.Duration) { syncWait = w }(syncWait)
	syncWait = 10 * time.Millisecond
	ms, a, b := twoReplicas(t)
	exp := time.Now().Add(time.Hour)
	putLocked(t, a, Record{UserID: "u", Client: "c", Token: "t1", Expiry: exp})
	eventually(t, 10*time.Second, "b reads a's record", func() bool { _, ok := b.Get("u"); return ok })
	ms.CutFeed(b.Shared())
	if _, ok := b.Reusable("u"); ok {
		t.Fatal("a replica with a cut feed hands out a token from memory")
	}
	if b.Coherent() {
		t.Fatal("Coherent with a cut feed")
	}
	putLocked(t, a, Record{UserID: "u", Client: "c", Token: "t2", Expiry: exp})
	putLocked(t, a, Record{UserID: "v", Client: "d", Token: "t3", Expiry: exp})
	if _, ok := b.Get("v"); ok {
		t.Fatal("b heard of v through a cut feed")
	}
	unlock, err := b.Lock(t.Context(), "u")
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := b.Get("u"); r.Token != "t2" {
		t.Fatalf("under the lock b holds %q, want t2 (read from the database)", r.Token)
	}
	unlock()
	if err := b.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r, ok := b.Get("v"); !ok || r.Token != "t3" {
		t.Fatalf("after Sync b holds v=%v %q, want t3", ok, r.Token)
	}
	ms.RestoreFeed(b.Shared())
	eventually(t, 10*time.Second, "b coherent again", func() bool { _, ok := b.Reusable("u"); return ok && b.Coherent() })
}

// A write from a record another replica has changed since is refused (no
// lost update), and the record is read again.
func TestSharedStoreConditionalWrite(t *testing.T) {
	ms, a, b := twoReplicas(t)
	putLocked(t, a, Record{UserID: "u", Client: "c", Role: "r1"})
	eventually(t, 10*time.Second, "b reads a's record", func() bool { _, ok := b.Get("u"); return ok })
	ms.CutFeed(b.Shared()) // b does not hear of a's next write
	putLocked(t, a, Record{UserID: "u", Client: "c", Role: "r2"})
	err := b.Put(Record{UserID: "u", Client: "c", Role: "stale"}) // no lock: as a lost one
	if !errors.Is(err, state.ErrConflict) {
		t.Fatalf("a write from a stale record: %v, want a conflict", err)
	}
	ms.RestoreFeed(b.Shared())
	eventually(t, 10*time.Second, "b reads the record again", func() bool { r, _ := b.Get("u"); return r.Role == "r2" })
	if r, _ := a.Get("u"); r.Role != "r2" {
		t.Fatalf("a's record changed to %q", r.Role)
	}
}

// Flush writes the batched last-exchange times under the users' locks
// without undoing another replica's write, keeping the later time.
func TestSharedStoreFlushMerges(t *testing.T) {
	_, a, b := twoReplicas(t)
	t0 := time.Now().Truncate(time.Second)
	putLocked(t, a, Record{UserID: "u", Client: "c", Role: "r1", LastExchange: t0})
	eventually(t, 10*time.Second, "b reads a's record", func() bool { _, ok := b.Get("u"); return ok })
	a.Touch("u", t0.Add(time.Minute))
	putLocked(t, b, Record{UserID: "u", Client: "c", Role: "r2", LastExchange: t0.Add(time.Second)})
	if err := a.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	eventually(t, 10*time.Second, "b hears of the flush", func() bool { r, _ := b.Get("u"); return r.LastExchange.Equal(t0.Add(time.Minute)) })
	r, _ := b.Get("u")
	if r.Role != "r2" {
		t.Fatalf("the flush undid b's write: role %q", r.Role)
	}
}

// The jobs lease: one holder at a time, passed on when it is not renewed,
// with a rising fencing token; a replica that lost it is fenced off.
func TestLeaderLease(t *testing.T) {
	ms := memstate.NewShared()
	now := time.Now()
	ms.SetLeaseClock(func() time.Time { return now })
	open := instances(t, ms)
	log := slog.New(slog.DiscardHandler)
	a, b := NewLeader(open(), "a", 5*time.Second, log), NewLeader(open(), "b", 5*time.Second, log)
	elected := b.Elected()
	a.renew(t.Context())
	b.renew(t.Context())
	if !a.Held() || b.Held() {
		t.Fatalf("held: a %v, b %v; want a only", a.Held(), b.Held())
	}
	if err := a.Fence(t.Context()); err != nil {
		t.Fatalf("the holder's fence: %v", err)
	}
	if err := b.Fence(t.Context()); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("the other's fence: %v, want ErrNotLeader", err)
	}
	now = now.Add(6 * time.Second) // a stopped renewing (paused, cut off)
	b.renew(t.Context())
	if !b.Held() {
		t.Fatal("b did not take the expired lease")
	}
	select {
	case <-elected:
	default:
		t.Fatal("Elected not closed when b took the lease")
	}
	if b.token <= a.token {
		t.Fatalf("fencing token %d after %d: want it to rise", b.token, a.token)
	}
	// a does not know yet (Held by its own clock), but its next write batch
	// is fenced off.
	if err := a.Fence(t.Context()); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("the old holder's fence: %v, want ErrNotLeader", err)
	}
	if a.Held() {
		t.Fatal("a still holds after its fence failed")
	}
	// Run releases the lease when it ends: a takes it at once.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	cancel()
	<-done
	a.renew(t.Context())
	if !a.Held() {
		t.Fatal("a did not take the lease b released")
	}
}

// The jobs refuse to run on a replica without the lease; a dry run of the
// reconciler runs anywhere.
func TestJobsNeedTheLease(t *testing.T) {
	open := instances(t, memstate.NewShared())
	log := slog.New(slog.DiscardHandler)
	holder := NewLeader(open(), "holder", time.Minute, log)
	holder.renew(t.Context())
	h := newHarness(t, "12.4.0")
	other := NewLeader(open(), "other", time.Minute, log)
	other.renew(t.Context())
	h.ex.SetLeader(other)
	if _, err := h.ex.RevokeExpired(t.Context()); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("RevokeExpired: %v, want ErrNotLeader", err)
	}
	if _, err := h.ex.Reconcile(t.Context(), ReconcileConfig{}, false); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Reconcile: %v, want ErrNotLeader", err)
	}
	if _, err := h.ex.Watch(t.Context()); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Watch: %v, want ErrNotLeader", err)
	}
	if _, err := h.ex.Reconcile(t.Context(), ReconcileConfig{}, true); errors.Is(err, ErrNotLeader) {
		t.Fatalf("a dry run refused: %v", err)
	}
}

// Replicas that start together on records of the earlier format (bound by
// issuer name) each bind them to the issuer's URL without refusing to
// start: the binding is written under the users' locks, from the records
// read there.
func TestReplicasBindFormat1Together(t *testing.T) {
	ms := memstate.NewShared()
	key := newKey(t)
	seed, err := ms.Open()
	if err != nil {
		t.Fatal(err)
	}
	var es []state.Entry
	for i := range 50 {
		id := fmt.Sprintf("u%02d", i)
		es = append(es, state.Entry{Key: id, Value: fmt.Appendf(nil, `{"user_id":%q,"issuer":"a","client":%q}`, id, id)})
	}
	if err := seed.Put(t.Context(), es); err != nil {
		t.Fatal(err)
	}
	seed.Close()
	issuers := []IssuerConfig{{Name: "a", Issuer: "https://a.example", Audiences: []string{testAudience}, Algorithms: []string{"EdDSA"}}}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		s := replicaStore(t, instances(t, ms)(), key)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = NewExchanger(Options{Issuers: issuers, Store: s, Directus: nil, Logger: slog.New(slog.DiscardHandler)})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d did not start: %v", i, err)
		}
	}
	check := replicaStore(t, instances(t, ms)(), key)
	for _, r := range check.All() {
		if r.IssuerURL != "https://a.example" {
			t.Errorf("record %s bound to %q", r.UserID, r.IssuerURL)
		}
	}
}
