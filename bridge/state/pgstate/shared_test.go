package pgstate

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/conformance"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate/pgstatetest"
)

// The Backend suite, on OpenShared. Its HeldByOne case opens the state
// a second time while the first is open: shared openers do not exclude each
// other, so that second open is an exclusive one (Open), which a shared
// holder must refuse with ErrHeld.
func TestSharedConformance(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	conformance.Run(t, func(t *testing.T) conformance.Opener {
		dsn := s.Fresh(t)
		var mu sync.Mutex
		var cur *Shared
		return func() (state.Backend, error) {
			mu.Lock()
			defer mu.Unlock()
			if cur != nil && cur.check() == nil {
				return Open(t.Context(), dsn)
			}
			b, err := OpenShared(t.Context(), dsn)
			if err != nil {
				return nil, err
			}
			cur = b
			return b, nil
		}
	})
}

func mustShared(t *testing.T, dsn string) *Shared {
	t.Helper()
	b, err := OpenShared(t.Context(), dsn)
	if err != nil {
		t.Fatalf("open shared: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// terminate ends the server process pid from the admin connection.
func terminate(t *testing.T, s *pgstatetest.Schemas, pid uint32) {
	t.Helper()
	if pid == 0 {
		t.Fatal("no server process to terminate")
	}
	s.Mu.Lock()
	var ok bool
	err := s.Admin.QueryRow(t.Context(), `SELECT pg_terminate_backend($1, 5000)`, int32(pid)).Scan(&ok)
	s.Mu.Unlock()
	if err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v %v", pid, ok, err)
	}
}

// eventually polls cond every 10 ms for up to 20 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 2000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not after 20 s", what)
}

// mustLock locks keys, failing the test on an error.
func mustLock(t *testing.T, b *Shared, keys ...string) func() {
	t.Helper()
	unlock, err := b.Lock(timeout(t, 20*time.Second), keys)
	if err != nil {
		t.Fatalf("lock %v: %v", keys, err)
	}
	return unlock
}

// blocked reports that Lock of keys is still waiting after a while (the
// wait is abandoned).
func blocked(t *testing.T, b *Shared, keys ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	unlock, err := b.Lock(ctx, keys)
	if err == nil {
		unlock()
		t.Fatalf("lock %v was taken while another held it", keys)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock %v ended by its deadline: %v, want the context's error", keys, err)
	}
}

func TestSharedLock(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	a, b := mustShared(t, dsn), mustShared(t, dsn)

	t.Run("AcrossInstances", func(t *testing.T) {
		unlock := mustLock(t, a, "k", "k") // a key given twice is locked once
		blocked(t, b, "k")
		blocked(t, b, "other", "k")
		mustLock(t, b, "other")() // another key is free
		got := make(chan error, 1)
		go func() {
			u, err := b.Lock(timeout(t, 20*time.Second), []string{"k"})
			if err == nil {
				u()
			}
			got <- err
		}()
		unlock()
		unlock() // idempotent
		if err := <-got; err != nil {
			t.Fatalf("b's lock after a's unlock: %v", err)
		}
	})
	t.Run("TwoLocksOfOneInstance", func(t *testing.T) {
		unlock := mustLock(t, a, "k")
		blocked(t, a, "k")
		unlock()
		mustLock(t, a, "k")()
	})
	t.Run("CancelledWaitKeepsNothing", func(t *testing.T) {
		unlock := mustLock(t, a, "k2")
		// b takes k1 (or k2's wait comes first: the order is the hashes'),
		// then waits for k2 until its context ends.
		blocked(t, b, "k1", "k2")
		unlock()
		// Had the abandoned wait kept k1 or k2, these would not return.
		mustLock(t, a, "k1", "k2")()
		if n := len(b.lockPIDs()); n != 0 {
			t.Fatalf("b holds %d lock connections after its wait was abandoned", n)
		}
	})
	t.Run("ReleasedWhenTheSessionDies", func(t *testing.T) {
		unlock := mustLock(t, a, "k")
		pids := a.lockPIDs()
		if len(pids) != 1 {
			t.Fatalf("a holds %d lock connections, want 1", len(pids))
		}
		terminate(t, s, pids[0])
		mustLock(t, b, "k")()
		unlock() // on a dead connection: no panic, nothing held
		mustLock(t, a, "k")()
	})
	t.Run("NoDeadlock", func(t *testing.T) {
		// Opposite orders, many times, from both instances: a deadlock would
		// show as the server's "deadlock detected" error, or a timeout.
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i, inst := range []*Shared{a, b, a, b} {
			keys := []string{"x", "y", "z"}
			if i%2 == 1 {
				slices.Reverse(keys)
			}
			wg.Go(func() {
				for range 25 {
					u, err := inst.Lock(timeout(t, 20*time.Second), keys)
					if err != nil {
						errs <- err
						return
					}
					u()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})
	t.Run("CloseReleases", func(t *testing.T) {
		c := mustShared(t, dsn)
		mustLock(t, c, "held-at-close")
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		mustLock(t, a, "held-at-close")()
		if _, err := c.Lock(t.Context(), []string{"k"}); !errors.Is(err, ErrClosed) {
			t.Fatalf("lock after close: %v, want ErrClosed", err)
		}
	})
}

// read returns key's value and version ("", 0 when absent).
func read(t *testing.T, b *Shared, key string) (string, int64) {
	t.Helper()
	vs, err := b.Read(t.Context(), []string{key})
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if len(vs) == 0 {
		return "", 0
	}
	return string(vs[0].Value), vs[0].Version
}

func write(t *testing.T, b *Shared, ws ...state.Write) []int64 {
	t.Helper()
	got, err := b.Write(t.Context(), ws)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	return got
}

func TestSharedWrite(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	a, b := mustShared(t, dsn), mustShared(t, dsn)

	// Versions are the sequence's: above 0, distinct, each write's above
	// every earlier one of its key. Exact numbers are the sequence's own.
	got := write(t, a, state.Write{Key: "a", Value: []byte("a1")}, state.Write{Key: "b", Value: []byte("b1")}, state.Write{Key: "p1", Value: []byte("p")})
	if len(got) != 3 || got[0] <= 0 || got[1] <= 0 || got[2] <= 0 || got[0] == got[1] || got[1] == got[2] || got[0] == got[2] {
		t.Fatalf("versions of new keys: %v, want three distinct above 0", got)
	}
	a1, b1, p1 := got[0], got[1], got[2]
	got = write(t, b, state.Write{Key: "a", Value: []byte("a2"), Expect: a1})
	a2 := got[0]
	if len(got) != 1 || a2 <= a1 || a2 == b1 || a2 == p1 {
		t.Fatalf("version of an update: %v, want one above %d, and none of the others' (%d %d)", got, a1, b1, p1)
	}
	if v, n := read(t, a, "a"); v != "a2" || n != a2 {
		t.Fatalf("a reads %q %d, want a2 %d", v, n, a2)
	}

	// A key given twice is refused.
	_, err := a.Write(t.Context(), []state.Write{{Key: "a", Value: []byte("x"), Expect: a2}, {Key: "a", Delete: true, Expect: a2}})
	if err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Fatalf("a key given twice: %v, want a refusal", err)
	}

	// A conflict names every mismatched key, in order, and writes nothing.
	_, err = a.Write(t.Context(), []state.Write{
		{Key: "a", Value: []byte("a3"), Expect: a2},     // right
		{Key: "b", Value: []byte("b2"), Expect: b1 + 1}, // wrong
		{Key: "c", Value: []byte("c1")},                 // right: absent
		{Key: "d", Delete: true, Expect: 3},             // wrong: absent
		{Key: "e", Value: []byte("x"), Expect: 1},       // wrong: absent
		{Key: "gone", Delete: true},                     // right: absent
		{Key: "p1", Value: []byte("x"), Expect: 0},      // wrong: present
		{Key: "a-gone", Delete: true, Expect: 0},        // right: absent
	})
	var ce *state.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, state.ErrConflict) {
		t.Fatalf("conflicting write: %v, want a *ConflictError", err)
	}
	if fmt.Sprint(ce.Keys) != "[b d e p1]" {
		t.Fatalf("conflicting keys %v, want [b d e p1]", ce.Keys)
	}
	for k, want := range map[string]string{"a": fmt.Sprint("a2 ", a2), "b": fmt.Sprint("b1 ", b1), "c": " 0", "e": " 0", "p1": fmt.Sprint("p ", p1)} {
		if v, n := read(t, b, k); fmt.Sprint(v, " ", n) != want {
			t.Fatalf("after the refused write, %s is %q %d, want %s", k, v, n, want)
		}
	}

	// Without the wrong ones it applies, with the new versions in order.
	got = write(t, a,
		state.Write{Key: "a", Value: []byte("a3"), Expect: a2},
		state.Write{Key: "b", Delete: true, Expect: b1},
		state.Write{Key: "c", Value: []byte("c1")},
		state.Write{Key: "gone", Delete: true},
	)
	if len(got) != 4 || got[0] <= a2 || got[1] != 0 || got[2] <= 0 || got[2] == got[0] || slices.Contains([]int64{a1, a2, b1, p1}, got[2]) || got[3] != 0 {
		t.Fatalf("versions: %v, want [>%d 0 new 0]", got, a2)
	}
	a3, c1 := got[0], got[2]
	vs, err := b.Read(t.Context(), []string{"a", "b", "c", "gone"})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(vs, func(x, y state.Versioned) int { return strings.Compare(x.Key, y.Key) })
	var rs []string
	for _, v := range vs {
		rs = append(rs, fmt.Sprintf("%s=%s@%d", v.Key, v.Value, v.Version))
	}
	if want := fmt.Sprintf("[a=a3@%d c=c1@%d]", a3, c1); fmt.Sprint(rs) != want {
		t.Fatalf("records: %v, want %s", rs, want)
	}
	// A deleted key is absent: writing it again needs Expect 0, and its
	// new version is above every one it had (the sequence never goes
	// back), so a write expecting an old one conflicts.
	if _, err := a.Write(t.Context(), []state.Write{{Key: "b", Value: []byte("x"), Expect: b1}}); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("update of a deleted key: %v, want a conflict", err)
	}
	b2 := write(t, a, state.Write{Key: "b", Value: []byte("b-again")})[0]
	if b2 <= b1 {
		t.Fatalf("version of a re-created key: %d, want above its old %d", b2, b1)
	}
	if _, err := b.Write(t.Context(), []state.Write{{Key: "b", Value: []byte("stale"), Expect: b1}}); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("a write expecting the version of a deleted record, after its re-creation: %v, want a conflict", err)
	}

	// Put is unconditional and raises the versions too.
	if err := b.Put(t.Context(), []state.Entry{{Key: "a", Value: []byte("put")}, {Key: "n", Value: []byte("new")}}); err != nil {
		t.Fatal(err)
	}
	if v, n := read(t, a, "a"); v != "put" || n <= a3 {
		t.Fatalf("a after a put: %q %d, want put above %d", v, n, a3)
	}
	if _, n := read(t, a, "n"); n <= b2 {
		t.Fatalf("a new key put: version %d, want above the latest (%d)", n, b2)
	}
	// Bounds as every Backend's.
	if _, err := a.Write(t.Context(), []state.Write{{Key: ""}}); !errors.Is(err, state.ErrTooLarge) {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := a.Write(t.Context(), []state.Write{{Key: "big", Value: make([]byte, state.MaxValueBytes+1)}}); !errors.Is(err, state.ErrTooLarge) {
		t.Fatalf("value over the bound: %v", err)
	}
}

// Concurrent increments through Read and Write from two instances: no
// update is lost.
func TestSharedWriteRace(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	a, b := mustShared(t, dsn), mustShared(t, dsn)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	const each = 20
	var mu sync.Mutex
	var all []int64 // the versions of the successful writes
	for _, inst := range []*Shared{a, b} {
		wg.Go(func() {
			var last int64
			for done := 0; done < each; {
				vs, err := inst.Read(t.Context(), []string{"n"})
				if err != nil {
					errs <- err
					return
				}
				var n, ver int64
				if len(vs) == 1 {
					fmt.Sscan(string(vs[0].Value), &n)
					ver = vs[0].Version
				}
				got, err := inst.Write(t.Context(), []state.Write{{Key: "n", Value: fmt.Append(nil, n+1), Expect: ver}})
				if errors.Is(err, state.ErrConflict) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				// Each write of the key is above what it read, and above
				// this instance's previous one.
				if got[0] <= ver || got[0] <= last {
					errs <- fmt.Errorf("write on version %d returned %d, after this instance's %d", ver, got[0], last)
					return
				}
				last = got[0]
				mu.Lock()
				all = append(all, got[0])
				mu.Unlock()
				done++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every successful write counted, each with its own version, the
	// record at the latest.
	slices.Sort(all)
	if len(all) != 2*each || len(slices.Compact(slices.Clone(all))) != len(all) {
		t.Fatalf("versions of the successful writes %v, want %d distinct", all, 2*each)
	}
	if v, n := read(t, a, "n"); v != fmt.Sprint(2*each) || n != all[len(all)-1] {
		t.Fatalf("counter %q at version %d, want %d at %d", v, n, 2*each, all[len(all)-1])
	}
}

// recorder collects the changes an instance is told of.
type recorder struct {
	mu sync.Mutex
	cs []state.Change
}

func record(b *Shared) *recorder {
	r := &recorder{}
	b.OnChange(func(c state.Change) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.cs = append(r.cs, c)
	})
	return r
}

func (r *recorder) take() []state.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs := r.cs
	r.cs = nil
	return cs
}

func keysOfChanges(cs []state.Change) []string {
	var ks []string
	for _, c := range cs {
		if c.Reset {
			ks = append(ks, "RESET")
		} else {
			ks = append(ks, c.Key)
		}
	}
	return ks
}

// coherentAfter waits until b's CoherentAt passes t.
func coherentAfter(t *testing.T, b *Shared, at time.Time) {
	t.Helper()
	eventually(t, "CoherentAt after the writes", func() bool { return b.CoherentAt().After(at) })
}

func TestSharedChanges(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	a, b := mustShared(t, dsn), mustShared(t, dsn)
	ra, rb := record(a), record(b)

	// Odd keys travel escaped.
	odd := "key with spaces+plus%percent/é"
	write(t, a, state.Write{Key: "k1", Value: []byte("1")}, state.Write{Key: odd, Value: []byte("2")})
	write(t, a, state.Write{Key: "k1", Value: []byte("3"), Expect: 1})
	if err := a.Put(t.Context(), []state.Entry{{Key: "p", Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(t.Context(), "never-there"); err != nil { // changes nothing: not announced
		t.Fatal(err)
	}
	// A refused write is not announced.
	if _, err := a.Write(t.Context(), []state.Write{{Key: "k1", Value: []byte("no"), Expect: 1}}); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("stale write: %v", err)
	}
	// A batch larger than one notification's payload.
	var big []state.Entry
	var bigKeys []string
	for i := range 2000 {
		k := fmt.Sprintf("user-%04d-%s", i, strings.Repeat("x", 20))
		big = append(big, state.Entry{Key: k, Value: []byte("v")})
		bigKeys = append(bigKeys, k)
	}
	if err := a.Put(t.Context(), big); err != nil {
		t.Fatal(err)
	}
	write(t, b, state.Write{Key: "from-b", Value: []byte("b")})
	written := time.Now()

	// Once b's CoherentAt passes the end of a's writes, b has been told of
	// every one of them, in commit order.
	coherentAfter(t, b, written)
	want := append([]string{"k1", odd, "k1", "p", "p"}, bigKeys...)
	if got := keysOfChanges(rb.take()); !slices.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("b was told of %d changes, want %d; they differ from change %d on: %q, want %q", len(got), len(want), i, got[i:min(i+3, len(got))], want[i:min(i+3, len(want))])
	}
	coherentAfter(t, a, written)
	if got := keysOfChanges(ra.take()); !slices.Equal(got, []string{"from-b"}) {
		t.Fatalf("a was told of %v, want only b's write (not its own)", got)
	}
	// CoherentAt keeps advancing.
	c1 := b.CoherentAt()
	eventually(t, "CoherentAt advancing", func() bool { return b.CoherentAt().After(c1) })
	if c := b.CoherentAt(); c.After(time.Now()) {
		t.Fatalf("CoherentAt %s is in the future", c)
	}
}

func TestSharedListenerBreak(t *testing.T) {
	quick(t)
	old := reconnectMin
	reconnectMin = 700 * time.Millisecond // long enough to see the gap
	t.Cleanup(func() { reconnectMin = old })
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	a, b := mustShared(t, dsn), mustShared(t, dsn)
	rb := record(b)
	coherentAfter(t, b, time.Now())
	pid := b.listenerPID()
	terminate(t, s, pid)
	eventually(t, "CoherentAt zero after the break", func() bool { return b.CoherentAt().IsZero() })
	// Written while b cannot hear: b must learn that it may have missed it.
	write(t, a, state.Write{Key: "missed", Value: []byte("1")})
	eventually(t, "the listener reconnected", func() bool { p := b.listenerPID(); return p != 0 && p != pid })
	write(t, a, state.Write{Key: "after", Value: []byte("1")})
	written := time.Now()
	coherentAfter(t, b, written)
	got := keysOfChanges(rb.take())
	if len(got) == 0 || got[0] != "RESET" || got[len(got)-1] != "after" {
		t.Fatalf("changes after the break: %v, want RESET first, then (possibly missed) ..., after", got)
	}
	// b still takes part: its Lock excludes a's, and its writes reach a.
	ra := record(a)
	write(t, b, state.Write{Key: "from-b", Value: []byte("1")})
	coherentAfter(t, a, time.Now())
	if got := keysOfChanges(ra.take()); !slices.Equal(got, []string{"from-b"}) {
		t.Fatalf("a after b's reconnection: %v", got)
	}
	// The shared lock was taken again: an exclusive open is refused even
	// with a closed.
	a.Close()
	if _, err := Open(t.Context(), dsn); !errors.Is(err, state.ErrHeld) {
		t.Fatalf("exclusive open while b runs reconnected: %v, want ErrHeld", err)
	}
}

func TestSharedLease(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	a, b := mustShared(t, dsn), mustShared(t, dsn)
	lease := func(inst *Shared, holder string, ttl time.Duration) (bool, int64) {
		t.Helper()
		held, token, err := inst.Lease(t.Context(), "leader", holder, ttl)
		if err != nil {
			t.Fatalf("lease for %s: %v", holder, err)
		}
		return held, token
	}
	if held, tok := lease(a, "A", time.Hour); !held || tok != 1 {
		t.Fatalf("first lease: %v %d, want held 1", held, tok)
	}
	if held, tok := lease(b, "B", time.Hour); held || tok != 1 {
		t.Fatalf("lease of a held name: %v %d, want not held, token 1", held, tok)
	}
	if held, tok := lease(a, "A", 300*time.Millisecond); !held || tok != 1 {
		t.Fatalf("renewal: %v %d, want held 1", held, tok)
	}
	// Expiry, by the database's clock: B takes it, with a higher token.
	var tok int64
	eventually(t, "B takes the expired lease", func() bool {
		var held bool
		held, tok = lease(b, "B", time.Hour)
		return held
	})
	if tok != 2 {
		t.Fatalf("token after a takeover: %d, want 2", tok)
	}
	if held, tok := lease(a, "A", time.Hour); held || tok != 2 {
		t.Fatalf("old holder: %v %d, want not held 2", held, tok)
	}
	// Release by another is nothing; by the holder frees it at once.
	if err := a.Release(t.Context(), "leader", "A"); err != nil {
		t.Fatal(err)
	}
	if held, _ := lease(a, "A", time.Hour); held {
		t.Fatal("A's release freed B's lease")
	}
	if err := b.Release(t.Context(), "leader", "B"); err != nil {
		t.Fatal(err)
	}
	if held, tok := lease(a, "A", time.Hour); !held || tok != 3 {
		t.Fatalf("after B's release: %v %d, want held 3", held, tok)
	}
	// Other names are independent.
	if held, tok, err := b.Lease(t.Context(), "other", "B", time.Hour); err != nil || !held || tok != 1 {
		t.Fatalf("another lease: %v %d %v", held, tok, err)
	}
	if _, _, err := a.Lease(t.Context(), "x", "A", 0); err == nil {
		t.Fatal("a lease of no duration was taken")
	}
}

func TestSharedAndExclusiveExclude(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	t.Run("BothWays", func(t *testing.T) {
		dsn := s.Fresh(t)
		a, b := mustShared(t, dsn), mustShared(t, dsn) // shared ones do not exclude each other
		_, err := Open(t.Context(), dsn)
		if !errors.Is(err, state.ErrHeld) {
			t.Fatalf("exclusive open while shared ones run: %v, want ErrHeld", err)
		}
		a.Close()
		if _, err := Open(t.Context(), dsn); !errors.Is(err, state.ErrHeld) {
			t.Fatalf("exclusive open while one shared runs: %v, want ErrHeld", err)
		}
		b.Close()
		e := mustOpen(t, dsn)
		_, err = OpenShared(t.Context(), dsn)
		if !errors.Is(err, state.ErrHeld) || !strings.Contains(err.Error(), fmt.Sprintf("server process %d", e.backendPID())) {
			t.Fatalf("shared open while an exclusive one holds: %v, want ErrHeld naming it", err)
		}
		e.Close()
		mustShared(t, dsn)
	})
	t.Run("VersionsAcrossModes", func(t *testing.T) {
		dsn := s.Fresh(t)
		// The exclusive mode's puts and deletes take versions from the
		// same sequence: each put raises the record's, a record deleted
		// and put again is above its old ones, and a shared write after
		// the exclusive one closed is above them all.
		e := mustOpen(t, dsn)
		var seen []int64
		for i := range 4 {
			if i == 2 {
				if err := e.Delete(t.Context(), "a"); err != nil {
					t.Fatal(err)
				}
			}
			if err := put(t, e, "a"); err != nil {
				t.Fatal(err)
			}
			n, err := strconv.ParseInt(mustQuery(t, dsn, `SELECT version::text FROM `+recordsTable+` WHERE key = 'a'`), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			seen = append(seen, n)
		}
		if seen[0] <= 0 || !slices.IsSorted(seen) || len(slices.Compact(slices.Clone(seen))) != len(seen) {
			t.Fatalf("versions after each exclusive put (a delete before the third): %v, want strictly rising above 0", seen)
		}
		e.Close()
		sh := mustShared(t, dsn)
		last := seen[len(seen)-1]
		if v, n := read(t, sh, "a"); v != "v-a" || n != last {
			t.Fatalf("after the exclusive puts: %q %d, want v-a %d", v, n, last)
		}
		for _, old := range seen[:len(seen)-1] {
			if _, err := sh.Write(t.Context(), []state.Write{{Key: "a", Value: []byte("stale"), Expect: old}}); !errors.Is(err, state.ErrConflict) {
				t.Fatalf("a shared write expecting the old version %d: %v, want a conflict", old, err)
			}
		}
		if n := write(t, sh, state.Write{Key: "a", Value: []byte("w"), Expect: last})[0]; n <= last {
			t.Fatalf("a shared write after the exclusive ones: version %d, want above %d", n, last)
		}
	})
	t.Run("ExclusiveWhileListenerDown", func(t *testing.T) {
		// An exclusive process opens in the moment the shared one's
		// listener is disconnected: the shared one's writes are refused
		// (ErrTakenOver), and so is everything after it reconnects.
		old := reconnectMin
		reconnectMin = 2 * time.Second
		t.Cleanup(func() { reconnectMin = old })
		for _, closeFirst := range []bool{false, true} {
			t.Run(fmt.Sprintf("ExclusiveClosedBeforeReconnect=%v", closeFirst), func(t *testing.T) {
				dsn := s.Fresh(t)
				sh := mustShared(t, dsn)
				write(t, sh, state.Write{Key: "a", Value: []byte("1")})
				terminate(t, s, sh.listenerPID())
				eventually(t, "the listener noticed", func() bool { return sh.listenerPID() == 0 })
				e, err := Open(t.Context(), dsn)
				if err != nil {
					t.Fatalf("exclusive open with the listener down: %v", err)
				}
				defer e.Close()
				if !closeFirst {
					if err := sh.Put(t.Context(), []state.Entry{{Key: "b", Value: []byte("x")}}); !errors.Is(err, ErrTakenOver) {
						t.Fatalf("shared put while the exclusive one holds: %v, want ErrTakenOver", err)
					}
				} else {
					e.Close()
				}
				eventually(t, "ErrTakenOver after the reconnection", func() bool {
					_, err := sh.Read(t.Context(), []string{"a"})
					return errors.Is(err, ErrTakenOver)
				})
				for i, op := range []func() error{
					func() error { _, err := sh.Write(t.Context(), []state.Write{{Key: "c"}}); return err },
					func() error { _, err := sh.Lock(t.Context(), []string{"c"}); return err },
					func() error { _, _, err := sh.Lease(t.Context(), "l", "h", time.Second); return err },
					func() error { return sh.Load(t.Context(), func(string, []byte) error { return nil }) },
				} {
					if err := op(); !errors.Is(err, ErrTakenOver) || !strings.Contains(err.Error(), "restart") {
						t.Fatalf("operation %d after the takeover: %v, want ErrTakenOver", i, err)
					}
				}
				if got := keysOf(t, mustOpenAfter(t, e, sh, dsn)); got != "a" {
					t.Fatalf("records: %q, want only a", got)
				}
			})
		}
	})
	t.Run("ExclusiveLostWhileSharedRan", func(t *testing.T) {
		// The exclusive process loses its connection, shared ones open and
		// write, close: its reconnection sees the generation moved on.
		dsn := s.Fresh(t)
		e := mustOpen(t, dsn)
		if err := put(t, e, "a"); err != nil {
			t.Fatal(err)
		}
		kill(t, s, e)
		sh, err := OpenShared(t.Context(), dsn)
		if err != nil {
			t.Fatalf("shared open after the exclusive connection died: %v", err)
		}
		write(t, sh, state.Write{Key: "s", Value: []byte("1")})
		sh.Close()
		put(t, e, "b") // meets the broken connection
		if err := put(t, e, "b"); !errors.Is(err, ErrTakenOver) {
			t.Fatalf("exclusive put after shared ones wrote: %v, want ErrTakenOver", err)
		}
	})
}

// mustOpenAfter closes the others and opens dsn exclusively.
func mustOpenAfter(t *testing.T, e *Backend, sh *Shared, dsn string) *Backend {
	t.Helper()
	e.Close()
	sh.Close()
	return mustOpen(t, dsn)
}

func TestSharedMigrateFromV1(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`CREATE TABLE ` + versionTable + ` (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
		migrations[0],
		`INSERT INTO ` + versionTable + ` (version) VALUES (1)`,
		`INSERT INTO ` + recordsTable + ` (key, value) VALUES ('u1', 'one'), ('u2', '')`,
		`INSERT INTO ` + metaTable + ` (key, value) VALUES ('m', 'meta')`,
		`UPDATE ` + holderTable + ` SET generation = 7`,
	} {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	conn.Close(t.Context())
	// Replicas starting together migrate one at a time.
	var wg sync.WaitGroup
	opened := make(chan *Shared, 3)
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			b, err := OpenShared(t.Context(), dsn)
			if err != nil {
				errs <- err
				return
			}
			opened <- b
		})
	}
	wg.Wait()
	close(errs)
	close(opened)
	for b := range opened {
		t.Cleanup(func() { b.Close() })
	}
	for err := range errs {
		t.Fatalf("open of a v1 schema: %v", err)
	}
	b := mustShared(t, dsn)
	vs, err := b.Read(t.Context(), []string{"u1", "u2"})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(vs, func(x, y state.Versioned) int { return strings.Compare(x.Key, y.Key) })
	// The records of v1 each get a version of their own from the sequence,
	// and the writes after are above them.
	if len(vs) != 2 || string(vs[0].Value) != "one" || vs[0].Version <= 0 || len(vs[1].Value) != 0 || vs[1].Value == nil || vs[1].Version <= 0 || vs[0].Version == vs[1].Version {
		t.Fatalf("records after the migration: %+v, want distinct versions above 0", vs)
	}
	if _, err := b.Write(t.Context(), []state.Write{{Key: "u1", Value: []byte("x"), Expect: vs[1].Version}}); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("a write to u1 expecting u2's version: %v, want a conflict", err)
	}
	got := write(t, b, state.Write{Key: "u1", Value: []byte("two"), Expect: vs[0].Version}, state.Write{Key: "u3", Value: []byte("new")})
	if top := max(vs[0].Version, vs[1].Version); got[0] <= top || got[1] <= top || got[0] == got[1] {
		t.Fatalf("versions of writes after the migration: %v, want distinct, above the migrated ones (%d)", got, top)
	}
	if m, ok, err := b.Meta(t.Context(), "m"); err != nil || !ok || string(m) != "meta" {
		t.Fatalf("meta after the migration: %q %v %v", m, ok, err)
	}
	if v, _ := versions(t, dsn); fmt.Sprint(v) != "[1 2]" {
		t.Fatalf("schema versions %v, want [1 2]", v)
	}
	if g := mustQuery(t, dsn, `SELECT generation::text FROM `+holderTable); g != "11" {
		t.Fatalf("generation %s after four shared opens from 7, want 11", g)
	}
}

func TestSharedClose(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	b, err := OpenShared(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	done := b.done
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	default:
		t.Fatal("the listener still runs after Close")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	for i, op := range []func() error{
		func() error { return b.Put(t.Context(), []state.Entry{{Key: "a"}}) },
		func() error { return b.Delete(t.Context(), "a") },
		func() error { _, _, err := b.Meta(t.Context(), "m"); return err },
		func() error { return b.SetMeta(t.Context(), "m", nil) },
		func() error { return b.Load(t.Context(), func(string, []byte) error { return nil }) },
		func() error { _, err := b.Read(t.Context(), []string{"a"}); return err },
		func() error { _, err := b.Write(t.Context(), []state.Write{{Key: "a"}}); return err },
		func() error { _, err := b.Lock(t.Context(), []string{"a"}); return err },
		func() error { _, _, err := b.Lease(t.Context(), "l", "h", time.Second); return err },
		func() error { return b.Release(t.Context(), "l", "h") },
	} {
		if err := op(); !errors.Is(err, ErrClosed) {
			t.Fatalf("operation %d after close: %v, want ErrClosed", i, err)
		}
	}
	// The shared lock went with it.
	mustOpen(t, dsn)
}

func TestPayloads(t *testing.T) {
	var keys []string
	for i := range 500 {
		keys = append(keys, fmt.Sprintf("k %d+%s", i, strings.Repeat("é", i%40)))
	}
	keys = append(keys, strings.Repeat("\x01", state.MaxKeyBytes))
	ps := payloads("inst", keys)
	if len(ps) < 2 {
		t.Fatalf("%d payloads for %d keys", len(ps), len(keys))
	}
	var back []string
	for _, p := range ps {
		if len(p) > notifyBytes {
			t.Fatalf("payload of %d bytes", len(p))
		}
		f := strings.Split(p, " ")
		if f[0] != "inst" {
			t.Fatalf("payload %.40q does not start with the instance", p)
		}
		for _, e := range f[1:] {
			k, err := url.QueryUnescape(e)
			if err != nil {
				t.Fatal(err)
			}
			back = append(back, k)
		}
	}
	if !slices.Equal(back, keys) {
		t.Fatal("the keys did not survive the payloads")
	}
	if ps := payloads("inst", nil); len(ps) != 0 {
		t.Fatalf("payloads of no keys: %q", ps)
	}
}

func TestSharedPasswordNeverInErrors(t *testing.T) {
	passwordNeverInErrors(t, "open shared", func(ctx context.Context, dsn string) error {
		_, err := OpenShared(ctx, dsn)
		return err
	})
}

// TestRunShared runs the suite of the Shared port (the one the in-memory
// fake passes too) on OpenShared.
func TestRunShared(t *testing.T) {
	s := pgstatetest.NewSchemas(t)
	conformance.RunShared(t, func(t *testing.T) conformance.SharedOpener {
		dsn := s.Fresh(t)
		return func() (state.Shared, error) { return OpenShared(t.Context(), dsn) }
	})
}
