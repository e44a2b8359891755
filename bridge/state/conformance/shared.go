package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
)

// SharedOpener opens one more instance (a replica, as another bridge process
// would) of one and the same state each time it is called.
type SharedOpener func() (state.Shared, error)

// RunShared runs the suite of what the bridge relies on from a state.Shared:
// locks, versioned reads and conditional writes, the change feed with its
// CoherentAt guarantee, and leases, across several instances of one state.
// fresh returns an opener of a new, empty state for each case; the suite
// closes what it opens.
func RunShared(t *testing.T, fresh func(t *testing.T) SharedOpener) {
	for _, c := range []struct {
		name string
		fn   func(t *testing.T, open SharedOpener)
	}{
		{"LockExcludes", testLockExcludes},
		{"LockKeyTwice", testLockKeyTwice},
		{"LockDisjoint", testLockDisjoint},
		{"LockSameInstance", testLockSameInstance},
		{"LockContextEnds", testLockContextEnds},
		{"UnlockIdempotent", testUnlockIdempotent},
		{"CloseReleasesLocks", testCloseReleasesLocks},
		{"LockNoDeadlock", testLockNoDeadlock},
		{"Versions", testVersions},
		{"ExpectAbsent", testExpectAbsent},
		{"Conflict", testConflict},
		{"DeleteWithVersion", testDeleteWithVersion},
		{"VersionsNeverReused", testVersionsNeverReused},
		{"ReadLeavesOutAbsent", testReadLeavesOutAbsent},
		{"VisibleToOthers", testVisibleToOthers},
		{"WriteBounds", testWriteBounds},
		{"PutChangesVersion", testPutChangesVersion},
		{"ChangesToOthers", testChangesToOthers},
		{"ChangesInCommitOrder", testChangesInCommitOrder},
		{"CoherentAt", testCoherentAt},
		{"ChangesOneAtATime", testChangesOneAtATime},
		{"LeaseHeld", testLeaseHeld},
		{"LeaseExpires", testLeaseExpires},
		{"LeaseRelease", testLeaseRelease},
		{"LeaseNames", testLeaseNames},
		{"NoLostUpdate", testNoLostUpdate},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, fresh(t)) })
	}
}

// The bounds of waiting. A Lock that must wait is given mustWait to return
// (it must not); one that must proceed is given mustProceed (generous: the
// machine may be slow, and a deadlock still shows).
const (
	mustWait    = 200 * time.Millisecond
	mustProceed = 10 * time.Second
)

// openShared opens n instances of the state, closed at the end of the test.
func openShared(t *testing.T, open SharedOpener, n int) []state.Shared {
	t.Helper()
	var bs []state.Shared
	for range n {
		b, err := open()
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		bs = append(bs, b)
	}
	return bs
}

type lockResult struct {
	unlock func()
	err    error
}

// lockAsync starts a Lock and returns where its result arrives. A Lock that
// was never waited for is unlocked at the end of the test.
func lockAsync(t *testing.T, c context.Context, b state.Shared, keys ...string) <-chan lockResult {
	ch := make(chan lockResult, 1)
	done := make(chan lockResult, 1)
	go func() {
		u, err := b.Lock(c, keys)
		r := lockResult{u, err}
		ch <- r
		done <- r
	}()
	t.Cleanup(func() {
		select {
		case r := <-done:
			if r.err == nil {
				r.unlock()
			}
		case <-time.After(mustProceed):
		}
	})
	return ch
}

// waits asserts that the Lock of ch does not return within mustWait.
func waits(t *testing.T, ch <-chan lockResult, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s returned (err %v) while another held the lock", what, r.err)
	case <-time.After(mustWait):
	}
}

// proceeds asserts that the Lock of ch returns, without error, within
// mustProceed, and returns its unlock.
func proceeds(t *testing.T, ch <-chan lockResult, what string) func() {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r.unlock
	case <-time.After(mustProceed):
		t.Fatalf("%s did not return within %s", what, mustProceed)
		return nil
	}
}

func mustLock(t *testing.T, b state.Shared, keys ...string) func() {
	t.Helper()
	return proceeds(t, lockAsync(t, ctx(t), b, keys...), fmt.Sprintf("Lock(%q) of a free key", keys))
}

func testLockExcludes(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 3)
	a, b, c := bs[0], bs[1], bs[2]
	unlockA := mustLock(t, a, "k")
	chB := lockAsync(t, ctx(t), b, "k")
	chC := lockAsync(t, ctx(t), c, "k")
	waits(t, chB, "B's Lock of a key A holds")
	waits(t, chC, "C's Lock of a key A holds")
	unlockA()
	// One of B and C gets it, and the other waits for that one.
	var first func()
	var rest <-chan lockResult
	select {
	case r := <-chB:
		first, rest = r.unlock, chC
		if r.err != nil {
			t.Fatalf("B's Lock after A's unlock: %v", r.err)
		}
	case r := <-chC:
		first, rest = r.unlock, chB
		if r.err != nil {
			t.Fatalf("C's Lock after A's unlock: %v", r.err)
		}
	case <-time.After(mustProceed):
		t.Fatalf("neither waiter got the lock within %s of A's unlock", mustProceed)
	}
	waits(t, rest, "the second waiter's Lock while the first holds it")
	first()
	proceeds(t, rest, "the second waiter's Lock after the first's unlock")()
}

func testLockKeyTwice(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	a, b := bs[0], bs[1]
	unlockA := mustLock(t, a, "k", "k", "other", "k")
	chB := lockAsync(t, ctx(t), b, "k")
	waits(t, chB, "B's Lock of a key A locked (given twice)")
	unlockA()
	proceeds(t, chB, "B's Lock after A's unlock of a key given twice")()
}

func testLockDisjoint(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 3)
	unlockA := mustLock(t, bs[0], "a", "b")
	defer unlockA()
	unlockB := mustLock(t, bs[1], "c")
	defer unlockB()
	unlockC := mustLock(t, bs[2], "d", "e")
	defer unlockC()
	// And a key held does not hold the others of a set waiting for it.
	ch := lockAsync(t, ctx(t), bs[1], "e", "f")
	waits(t, ch, "a Lock of a set with a held key")
	unlockC()
	proceeds(t, ch, "the Lock after the holder's unlock")()
}

func testLockSameInstance(t *testing.T, open SharedOpener) {
	a := openShared(t, open, 1)[0]
	unlock := mustLock(t, a, "k")
	ch := lockAsync(t, ctx(t), a, "k")
	waits(t, ch, "a second Lock of the same instance on a held key")
	unlock()
	proceeds(t, ch, "the same instance's second Lock after the unlock")()
}

func testLockContextEnds(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 3)
	a, b, c := bs[0], bs[1], bs[2]
	unlockA := mustLock(t, a, "k")
	wctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	// B waits for k; whatever order it takes keys in, a and z must be free
	// again once it gives up.
	chB := lockAsync(t, wctx, b, "z", "k", "a")
	waits(t, chB, "B's Lock of a held key")
	cancel()
	select {
	case r := <-chB:
		if r.err == nil {
			r.unlock()
			t.Fatal("B's Lock returned no error after its context ended while the key was held")
		}
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("B's Lock after its context ended: %v, want context.Canceled", r.err)
		}
	case <-time.After(mustProceed):
		t.Fatalf("B's Lock did not return within %s of its context's end", mustProceed)
	}
	mustLock(t, c, "a", "z")()
	unlockA()
	mustLock(t, c, "k", "a", "z")()
}

func testUnlockIdempotent(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 3)
	a, b, c := bs[0], bs[1], bs[2]
	unlockA := mustLock(t, a, "k")
	unlockA()
	unlockA()
	unlockB := mustLock(t, b, "k")
	// A's stale unlock must not release B's lock.
	unlockA()
	chC := lockAsync(t, ctx(t), c, "k")
	waits(t, chC, "C's Lock after a stale unlock of A while B holds the key")
	unlockB()
	proceeds(t, chC, "C's Lock after B's unlock")()
}

func testCloseReleasesLocks(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	b, c := bs[0], bs[1]
	a, err := open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	unlockA := mustLock(t, a, "k", "m")
	chB := lockAsync(t, ctx(t), b, "k")
	chC := lockAsync(t, ctx(t), c, "m")
	waits(t, chB, "B's Lock of a key A holds")
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(mustProceed):
		t.Fatalf("Close of an instance holding locks did not return within %s", mustProceed)
	}
	unlockB := proceeds(t, chB, "B's Lock after the holder closed")
	defer unlockB()
	unlockC := proceeds(t, chC, "C's Lock after the holder closed")
	defer unlockC()
	// The closed holder's unlock is harmless: it releases nothing of others.
	unlockA()
	d := openShared(t, open, 1)[0]
	waits(t, lockAsync(t, ctx(t), d, "k"), "D's Lock of a key B holds, after the closed A's unlock")
}

// testLockNoDeadlock: sets of keys that overlap, locked in different orders
// by several instances at once, never deadlock, and each key's lock is held
// by one at a time.
func testLockNoDeadlock(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 3)
	orders := [][]string{{"x", "y", "z"}, {"z", "y", "x"}, {"y", "x"}, {"z", "x"}, {"y", "z", "x"}, {"x", "z"}}
	holders := map[string]*atomic.Int32{"x": {}, "y": {}, "z": {}}
	c := ctx(t) // its end shows a deadlock
	var wg sync.WaitGroup
	for g, keys := range orders {
		b := bs[g%len(bs)]
		wg.Go(func() {
			for round := range 25 {
				unlock, err := b.Lock(c, keys)
				if err != nil {
					t.Errorf("goroutine %d, round %d: Lock(%q): %v (a deadlock?)", g, round, keys, err)
					return
				}
				for _, k := range keys {
					if n := holders[k].Add(1); n != 1 {
						t.Errorf("key %q held by %d at once", k, n)
					}
				}
				for _, k := range keys {
					holders[k].Add(-1)
				}
				unlock()
			}
		})
	}
	wg.Wait()
}

func write(t *testing.T, b state.Shared, ws ...state.Write) []int64 {
	t.Helper()
	vs, err := b.Write(ctx(t), ws)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	if len(vs) != len(ws) {
		t.Fatalf("write of %d returned %d versions", len(ws), len(vs))
	}
	return vs
}

// read reads keys into a map by key.
func read(t *testing.T, b state.Shared, keys ...string) map[string]state.Versioned {
	t.Helper()
	vs, err := b.Read(ctx(t), keys)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	m := map[string]state.Versioned{}
	for _, v := range vs {
		if _, dup := m[v.Key]; dup {
			t.Fatalf("read returned %q twice", v.Key)
		}
		if !slices.Contains(keys, v.Key) {
			t.Fatalf("read of %q returned %q", keys, v.Key)
		}
		m[v.Key] = v
	}
	return m
}

func put(key, value string, expect int64) state.Write {
	return state.Write{Key: key, Value: []byte(value), Expect: expect}
}

func testVersions(t *testing.T, open SharedOpener) {
	a := openShared(t, open, 1)[0]
	v := write(t, a, put("a", "1", 0), put("b", "x", 0))
	if v[0] <= 0 || v[1] <= 0 {
		t.Fatalf("versions of new records: %v, want > 0", v)
	}
	got := read(t, a, "a", "b")
	if got["a"].Version != v[0] || string(got["a"].Value) != "1" || got["b"].Version != v[1] || string(got["b"].Value) != "x" {
		t.Fatalf("read after write = %+v, want versions %v", got, v)
	}
	seen := map[int64]bool{v[0]: true}
	last := v[0]
	for i := range 5 {
		value := []byte(fmt.Sprint(i))
		n := write(t, a, state.Write{Key: "a", Value: value, Expect: last})[0]
		copy(value, "!") // the written value is the backend's own copy
		if n <= 0 || seen[n] {
			t.Fatalf("write %d: version %d (seen before: %v), want a new one above 0", i, n, seen[n])
		}
		seen[n] = true
		last = n
		if r := read(t, a, "a")["a"]; r.Version != n || string(r.Value) != fmt.Sprint(i) {
			t.Fatalf("read after write %d = %d %q, want %d %q", i, r.Version, r.Value, n, fmt.Sprint(i))
		}
	}
	// Read's value is the caller's: changing it changes nothing stored.
	r := read(t, a, "a")["a"]
	copy(r.Value, "!")
	if r := read(t, a, "a")["a"]; string(r.Value) != "4" {
		t.Fatalf("a read value aliased the stored one: %q", r.Value)
	}
}

// conflict asserts that err is a *ConflictError naming exactly keys.
func conflict(t *testing.T, err error, keys ...string) {
	t.Helper()
	if !errors.Is(err, state.ErrConflict) {
		t.Fatalf("err %v, want ErrConflict", err)
	}
	var ce *state.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("err %v (%T) is no *state.ConflictError", err, err)
	}
	got := slices.Sorted(slices.Values(ce.Keys))
	want := slices.Sorted(slices.Values(keys))
	if !slices.Equal(got, want) {
		t.Fatalf("conflict names %q, want %q", got, want)
	}
}

func testExpectAbsent(t *testing.T, open SharedOpener) {
	a := openShared(t, open, 1)[0]
	v := write(t, a, put("a", "1", 0))[0]
	_, err := a.Write(ctx(t), []state.Write{put("a", "2", 0)})
	conflict(t, err, "a")
	_, err = a.Write(ctx(t), []state.Write{put("absent", "2", v)})
	conflict(t, err, "absent")
	if got := read(t, a, "a", "absent"); len(got) != 1 || got["a"].Version != v || string(got["a"].Value) != "1" {
		t.Fatalf("after refused writes: %+v", got)
	}
}

func testConflict(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	a, b := bs[0], bs[1]
	v := write(t, a, put("ok", "1", 0), put("stale", "1", 0), put("present", "1", 0), put("gone", "1", 0))
	write(t, b, put("stale", "2", v[1]))
	write(t, b, state.Write{Key: "gone", Delete: true, Expect: v[3]})
	before := read(t, a, "ok", "stale", "present", "gone", "new")
	_, err := a.Write(ctx(t), []state.Write{
		put("ok", "changed", v[0]),                // right version
		put("stale", "changed", v[1]),             // written by B since
		put("present", "changed", 0),              // must be absent, is not
		put("new", "created", 0),                  // right: absent
		{Key: "gone", Delete: true, Expect: v[3]}, // deleted by B since
	})
	conflict(t, err, "stale", "present", "gone")
	if !bytes.Contains([]byte(err.Error()), []byte("stale")) {
		t.Fatalf("conflict error %q does not name the key", err)
	}
	after := read(t, b, "ok", "stale", "present", "gone", "new")
	if len(after) != len(before) {
		t.Fatalf("a refused write changed the records: %+v, were %+v", after, before)
	}
	for k, w := range before {
		if g := after[k]; g.Version != w.Version || !bytes.Equal(g.Value, w.Value) {
			t.Fatalf("a refused write changed %q: %d %q, was %d %q", k, g.Version, g.Value, w.Version, w.Value)
		}
	}
}

func testDeleteWithVersion(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	a, b := bs[0], bs[1]
	v := write(t, a, put("a", "1", 0), put("b", "2", 0))
	_, err := a.Write(ctx(t), []state.Write{{Key: "a", Delete: true, Expect: v[0] + 1000}})
	conflict(t, err, "a")
	got := write(t, a, state.Write{Key: "a", Delete: true, Expect: v[0]}, put("b", "3", v[1]))
	if got[0] != 0 || got[1] <= 0 {
		t.Fatalf("versions of a delete and a write: %v, want [0 >0]", got)
	}
	if r := read(t, b, "a", "b"); len(r) != 1 || string(r["b"].Value) != "3" {
		t.Fatalf("read after the delete: %+v", r)
	}
	same(t, loadShared(t, b), map[string][]byte{"b": []byte("3")})
	// Once deleted, the key is absent: Expect 0 creates it again.
	if n := write(t, a, put("a", "again", 0))[0]; n <= 0 {
		t.Fatalf("version of a record created again: %d", n)
	}
}

// testVersionsNeverReused: a key deleted and written again gets a version
// above every one it had, also when another instance re-creates it. The
// bridge's Store skips a read whose version equals the one in memory and
// writes conditionally on it: a reused version would keep a replica's stale
// content and let a stale conditional write through (a lost update).
func testVersionsNeverReused(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	a, b := bs[0], bs[1]
	v1 := write(t, a, put("k", "1", 0))[0]
	v2 := write(t, a, put("k", "2", v1))[0]
	if v2 <= v1 {
		t.Fatalf("version of an update %d, want above the created one %d", v2, v1)
	}
	write(t, a, state.Write{Key: "k", Delete: true, Expect: v2})
	v3 := write(t, a, put("k", "3", 0))[0]
	if v3 <= v2 {
		t.Fatalf("versions of k: created %d, updated %d, deleted, created again %d: want the last above every earlier one", v1, v2, v3)
	}
	for _, old := range []int64{v1, v2} {
		_, err := b.Write(ctx(t), []state.Write{put("k", "stale", old)})
		conflict(t, err, "k")
		_, err = b.Write(ctx(t), []state.Write{{Key: "k", Delete: true, Expect: old}})
		conflict(t, err, "k")
	}
	if r := read(t, b, "k")["k"]; r.Version != v3 || string(r.Value) != "3" {
		t.Fatalf("after stale writes B reads %d %q, want %d %q", r.Version, r.Value, v3, "3")
	}
	// Across instances: A deletes, B creates again, then B updates, and
	// deletes and creates once more.
	write(t, a, state.Write{Key: "k", Delete: true, Expect: v3})
	v4 := write(t, b, put("k", "4", 0))[0]
	v5 := write(t, b, put("k", "5", v4))[0]
	write(t, b, state.Write{Key: "k", Delete: true, Expect: v5})
	v6 := write(t, a, put("k", "6", 0))[0]
	all := []int64{v1, v2, v3, v4, v5, v6}
	if !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != len(all) {
		t.Fatalf("versions of k through deletes and re-creations by two instances: %v, want strictly rising", all)
	}
	for _, old := range all[:len(all)-1] {
		_, err := a.Write(ctx(t), []state.Write{put("k", "stale", old)})
		conflict(t, err, "k")
	}
	// Put (unconditional) after a re-creation raises past the old ones too.
	write(t, b, state.Write{Key: "k", Delete: true, Expect: v6})
	if err := a.Put(ctx(t), []state.Entry{{Key: "k", Value: []byte("put")}}); err != nil {
		t.Fatal(err)
	}
	r := read(t, b, "k")["k"]
	if r.Version <= v6 || string(r.Value) != "put" {
		t.Fatalf("a key put after its deletion reads %d %q, want a version above %d, and \"put\"", r.Version, r.Value, v6)
	}
	if n := write(t, b, put("k", "last", r.Version))[0]; n <= r.Version {
		t.Fatalf("version of a write after Put %d, want above %d", n, r.Version)
	}
}

func testReadLeavesOutAbsent(t *testing.T, open SharedOpener) {
	a := openShared(t, open, 1)[0]
	if got := read(t, a, "nothing", "here"); len(got) != 0 {
		t.Fatalf("read of absent keys: %+v", got)
	}
	write(t, a, put("a", "1", 0), put("b", "", 0))
	got := read(t, a, "x", "a", "y", "b", "z")
	if len(got) != 2 || string(got["a"].Value) != "1" || len(got["b"].Value) != 0 || got["b"].Version <= 0 {
		t.Fatalf("read of present and absent keys: %+v", got)
	}
}

// loadShared loads every record of b.
func loadShared(t *testing.T, b state.Shared) map[string][]byte {
	t.Helper()
	return all(t, b)
}

func testVisibleToOthers(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 3)
	a, b, c := bs[0], bs[1], bs[2]
	v := write(t, a, put("a", "1", 0), put("b", "2", 0))
	for i, o := range []state.Shared{b, c} {
		got := read(t, o, "a", "b")
		if got["a"].Version != v[0] || string(got["a"].Value) != "1" || got["b"].Version != v[1] || string(got["b"].Value) != "2" {
			t.Fatalf("instance %d reads %+v, want versions %v", i+1, got, v)
		}
		same(t, loadShared(t, o), map[string][]byte{"a": []byte("1"), "b": []byte("2")})
	}
	// B writes on what it read; A sees that.
	n := write(t, b, put("a", "from b", v[0]))[0]
	if got := read(t, a, "a")["a"]; got.Version != n || string(got.Value) != "from b" {
		t.Fatalf("A reads %d %q after B's write, want %d %q", got.Version, got.Value, n, "from b")
	}
	// Meta values are shared too.
	if err := c.SetMeta(ctx(t), "cursor", []byte("42")); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := a.Meta(ctx(t), "cursor"); err != nil || !ok || string(got) != "42" {
		t.Fatalf("A's meta after C's SetMeta = %q %v %v", got, ok, err)
	}
}

func testWriteBounds(t *testing.T, open SharedOpener) {
	a := openShared(t, open, 1)[0]
	for _, bad := range []state.Write{
		{Key: "", Value: []byte("x")},
		{Key: string(bytes.Repeat([]byte("k"), state.MaxKeyBytes+1)), Value: []byte("x")},
		{Key: "huge", Value: make([]byte, state.MaxValueBytes+1)},
	} {
		_, err := a.Write(ctx(t), []state.Write{put("good", "1", 0), bad})
		if !errors.Is(err, state.ErrTooLarge) {
			t.Fatalf("a write with a key of %d bytes and a value of %d: err %v, want ErrTooLarge", len(bad.Key), len(bad.Value), err)
		}
		if got := read(t, a, "good", "huge"); len(got) != 0 {
			t.Fatalf("a refused batch wrote %+v", got)
		}
	}
	// The bounds themselves are allowed.
	key := string(bytes.Repeat([]byte("k"), state.MaxKeyBytes))
	write(t, a, put(key, string(make([]byte, state.MaxValueBytes)), 0))
	if got := read(t, a, key)[key]; len(got.Value) != state.MaxValueBytes {
		t.Fatalf("a value of the largest size read back with %d bytes", len(got.Value))
	}
}

func testPutChangesVersion(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	a, b := bs[0], bs[1]
	v := write(t, a, put("a", "1", 0))[0]
	if err := a.Put(ctx(t), []state.Entry{{Key: "a", Value: []byte("put")}, {Key: "p", Value: []byte("new")}}); err != nil {
		t.Fatal(err)
	}
	got := read(t, b, "a", "p")
	if got["a"].Version == v || got["a"].Version <= 0 || string(got["a"].Value) != "put" {
		t.Fatalf("after Put, B reads %d %q, want a version other than %d, and \"put\"", got["a"].Version, got["a"].Value, v)
	}
	if got["p"].Version <= 0 || string(got["p"].Value) != "new" {
		t.Fatalf("a record created by Put reads %d %q", got["p"].Version, got["p"].Value)
	}
	_, err := b.Write(ctx(t), []state.Write{put("a", "stale", v)})
	conflict(t, err, "a")
	write(t, b, put("a", "ok", got["a"].Version))
	if err := a.Delete(ctx(t), "p"); err != nil {
		t.Fatal(err)
	}
	if r := read(t, b, "p"); len(r) != 0 {
		t.Fatalf("after Delete, B reads %+v", r)
	}
	write(t, b, put("p", "again", 0))
}

// feed records what OnChange delivers to one instance.
type feed struct {
	mu      sync.Mutex
	changes []string // keys in the order delivered (Resets left out)
	resets  int
}

func listen(b state.Shared) *feed {
	f := &feed{}
	b.OnChange(func(c state.Change) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if c.Reset {
			f.resets++
			return
		}
		f.changes = append(f.changes, c.Key)
	})
	return f
}

func (f *feed) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.changes)
}

// coherent waits until b's CoherentAt is after t: from then on every change
// committed before t has been delivered.
func coherent(t *testing.T, b state.Shared, after time.Time) {
	t.Helper()
	deadline := time.Now().Add(mustProceed)
	for !b.CoherentAt().After(after) {
		if time.Now().After(deadline) {
			t.Fatalf("CoherentAt %v still not after %v after %s", b.CoherentAt(), after, mustProceed)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ready waits until CoherentAt of each instance is known: its change feed
// is listening, so a write from now on is delivered.
func ready(t *testing.T, bs ...state.Shared) {
	t.Helper()
	for _, b := range bs {
		coherent(t, b, time.Time{})
	}
}

func testChangesToOthers(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 3)
	a, b, c := bs[0], bs[1], bs[2]
	fa, fb, fc := listen(a), listen(b), listen(c)
	ready(t, a, b, c)
	write(t, a, put("k", "1", 0))
	// b's write comes after a's: once a has it, a's own would have come too.
	write(t, b, put("marker", "1", 0))
	done := time.Now()
	coherent(t, a, done)
	coherent(t, b, done)
	coherent(t, c, done)
	if got, want := fa.keys(), []string{"marker"}; !slices.Equal(got, want) {
		t.Fatalf("A (the writer of k) was told of %q, want %q", got, want)
	}
	if got, want := fb.keys(), []string{"k"}; !slices.Equal(got, want) {
		t.Fatalf("B was told of %q, want %q", got, want)
	}
	if got, want := fc.keys(), []string{"k", "marker"}; !slices.Equal(got, want) {
		t.Fatalf("C was told of %q, want %q", got, want)
	}
}

func testChangesInCommitOrder(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 3)
	a, b, c := bs[0], bs[1], bs[2]
	fa, fb, fc := listen(a), listen(b), listen(c)
	ready(t, a, b, c)
	versions := map[string]int64{}
	var fromA, fromC, all []string
	for i, k := range []string{"x", "y", "x", "z", "x", "y", "z", "x", "y", "x"} {
		w := put(k, fmt.Sprint(i), versions[k])
		if i%4 == 3 && versions[k] != 0 { // a delete is a change too
			w = state.Write{Key: k, Delete: true, Expect: versions[k]}
		}
		writer := a
		if i%3 == 2 {
			writer = c
			fromC = append(fromC, k)
		} else {
			fromA = append(fromA, k)
		}
		all = append(all, k)
		versions[k] = write(t, writer, w)[0]
	}
	done := time.Now()
	coherent(t, a, done)
	coherent(t, b, done)
	coherent(t, c, done)
	if got := fb.keys(); !slices.Equal(got, all) {
		t.Fatalf("B was told of %q, want in commit order %q", got, all)
	}
	if got := fa.keys(); !slices.Equal(got, fromC) {
		t.Fatalf("A was told of %q, want C's writes %q", got, fromC)
	}
	if got := fc.keys(); !slices.Equal(got, fromA) {
		t.Fatalf("C was told of %q, want A's writes %q", got, fromA)
	}
}

// testCoherentAt: the guarantee the bridge relies on. Once B's CoherentAt is
// after the moment a write of A had committed, B's fn has been called for it.
func testCoherentAt(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	a, b := bs[0], bs[1]
	var mu sync.Mutex
	seen := map[string]bool{}
	b.OnChange(func(c state.Change) {
		if c.Key == "" {
			return
		}
		time.Sleep(time.Millisecond) // a slow fn widens the window
		mu.Lock()
		seen[c.Key] = true
		mu.Unlock()
	})
	ready(t, b)
	for i := range 50 {
		k := fmt.Sprint("k", i)
		write(t, a, put(k, "v", 0))
		committed := time.Now() // Write has returned: the commit is before this
		deadline := time.Now().Add(mustProceed)
		for {
			at := b.CoherentAt()
			mu.Lock()
			ok := seen[k]
			mu.Unlock()
			if at.After(committed) {
				// at was read before ok: ok must already hold.
				if !ok {
					t.Fatalf("write %d: CoherentAt %v is after the commit (%v), but fn was not called for %q", i, at, committed, k)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("write %d: CoherentAt %v still not after %v after %s", i, at, committed, mustProceed)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func testChangesOneAtATime(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 3)
	a, b, c := bs[0], bs[1], bs[2]
	var active, overlaps atomic.Int32
	var mu sync.Mutex
	var got []string
	b.OnChange(func(ch state.Change) {
		if active.Add(1) != 1 {
			overlaps.Add(1)
		}
		time.Sleep(100 * time.Microsecond)
		if !ch.Reset {
			mu.Lock()
			got = append(got, ch.Key)
			mu.Unlock()
		}
		active.Add(-1)
	})
	ready(t, b)
	const n = 60
	var wg sync.WaitGroup
	for _, w := range []struct {
		b      state.Shared
		prefix string
	}{{a, "a"}, {c, "c"}} {
		wg.Go(func() {
			for i := range n {
				if _, err := w.b.Write(context.Background(), []state.Write{put(fmt.Sprintf("%s-%03d", w.prefix, i), "v", 0)}); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	coherent(t, b, time.Now())
	if o := overlaps.Load(); o != 0 {
		t.Fatalf("fn was called %d times while another call ran", o)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2*n {
		t.Fatalf("%d changes delivered, want %d", len(got), 2*n)
	}
	// Each writer's writes committed one after another: in that order.
	for _, p := range []string{"a-", "c-"} {
		var mine []string
		for _, k := range got {
			if len(k) > 2 && k[:2] == p {
				mine = append(mine, k)
			}
		}
		if !slices.IsSorted(mine) || len(mine) != n {
			t.Fatalf("changes of writer %s delivered as %q, want %d in commit order", p, mine, n)
		}
	}
}

func lease(t *testing.T, b state.Shared, name, holder string, ttl time.Duration) (bool, int64) {
	t.Helper()
	held, token, err := b.Lease(ctx(t), name, holder, ttl)
	if err != nil {
		t.Fatalf("lease %q for %q: %v", name, holder, err)
	}
	return held, token
}

func testLeaseHeld(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	a, b := bs[0], bs[1]
	const ttl = time.Second
	held, t1 := lease(t, a, "leader", "h1", ttl)
	if !held {
		t.Fatal("the first holder did not get a free lease")
	}
	// For 2 s, five times the ttl's renewals, h1 keeps it. Each refusal of
	// h2 is judged only when it came within ttl of h1's renewal: a stalled
	// machine makes the round say nothing rather than fail.
	judged := 0
	for start := time.Now(); time.Since(start) < 2*time.Second; time.Sleep(50 * time.Millisecond) {
		renewed := time.Now()
		held, tok := lease(t, a, "leader", "h1", ttl)
		if !held || tok != t1 {
			t.Fatalf("h1's renewal: held %v, token %d, want true, %d", held, tok, t1)
		}
		held2, _ := lease(t, b, "leader", "h2", ttl)
		if time.Since(renewed) >= ttl {
			continue
		}
		judged++
		if held2 {
			t.Fatal("h2 took the lease within ttl of h1's renewal")
		}
	}
	if judged == 0 {
		t.Fatal("no round came within ttl: the machine is too slow to judge")
	}
}

func testLeaseExpires(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	a, b := bs[0], bs[1]
	const ttl = 300 * time.Millisecond
	start := time.Now()
	held, t1 := lease(t, a, "leader", "h1", ttl)
	if !held {
		t.Fatal("the first holder did not get a free lease")
	}
	deadline := time.Now().Add(mustProceed)
	var took time.Time
	for {
		took = time.Now()
		held, t2 := lease(t, b, "leader", "h2", ttl)
		if held {
			if since := time.Since(start); since < ttl {
				t.Fatalf("h2 took the lease %s after h1 took it, within the ttl %s", since, ttl)
			}
			if t2 <= t1 {
				t.Fatalf("token of the new holder %d, want above %d", t2, t1)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h2 did not get the lease within %s of its expiry", mustProceed)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Now h1 is refused (judged only if the machine did not stall for the
	// ttl meanwhile).
	if held, _ := lease(t, a, "leader", "h1", ttl); held && time.Since(took) < ttl {
		t.Fatal("h1 got the lease back at once from h2")
	}
}

func testLeaseRelease(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	a, b := bs[0], bs[1]
	const ttl = time.Minute // only a Release lets another in
	_, t1 := lease(t, a, "leader", "h1", ttl)
	if err := a.Release(ctx(t), "leader", "h1"); err != nil {
		t.Fatal(err)
	}
	held, t2 := lease(t, b, "leader", "h2", ttl)
	if !held || t2 <= t1 {
		t.Fatalf("after h1's release, h2: held %v, token %d, want true above %d", held, t2, t1)
	}
	// A release by one who does not hold it does nothing.
	if err := a.Release(ctx(t), "leader", "h1"); err != nil {
		t.Fatal(err)
	}
	if held, _ := lease(t, a, "leader", "h1", ttl); held {
		t.Fatal("h1 got the lease after a release of its own that came after h2 took it")
	}
	if held, tok := lease(t, b, "leader", "h2", ttl); !held || tok != t2 {
		t.Fatalf("h2's renewal after another's release: held %v, token %d, want true %d", held, tok, t2)
	}
	if err := b.Release(ctx(t), "leader", "h2"); err != nil {
		t.Fatal(err)
	}
	if held, t3 := lease(t, a, "leader", "h1", ttl); !held || t3 <= t2 {
		t.Fatalf("after h2's release, h1: held %v, token %d, want true above %d", held, t3, t2)
	}
}

func testLeaseNames(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 2)
	a, b := bs[0], bs[1]
	const ttl = time.Minute
	if held, _ := lease(t, a, "one", "h1", ttl); !held {
		t.Fatal("h1 did not get lease one")
	}
	if held, _ := lease(t, b, "two", "h2", ttl); !held {
		t.Fatal("h2 did not get lease two while h1 holds lease one")
	}
	if held, _ := lease(t, b, "one", "h2", ttl); held {
		t.Fatal("h2 got lease one from h1")
	}
	if held, _ := lease(t, a, "two", "h1", ttl); held {
		t.Fatal("h1 got lease two from h2")
	}
}

// testNoLostUpdate: goroutines of several instances increment counters
// under their locks, as the bridge writes: Lock, Read, Write expecting the
// version read, unlock. No write conflicts, and no increment is lost.
func testNoLostUpdate(t *testing.T, open SharedOpener) {
	bs := openShared(t, open, 3)
	keys := []string{"c0", "c1", "c2"}
	var want [3]atomic.Int64
	c := ctx(t)
	var wg sync.WaitGroup
	for g := range 6 {
		b := bs[g%len(bs)]
		wg.Go(func() {
			for i := range 15 {
				// Each goroutine walks its own sequence of one or two keys.
				set := []int{(g + i) % 3}
				if i%2 == 1 {
					set = append(set, (g+i+1)%3)
				}
				var ks []string
				for _, j := range set {
					ks = append(ks, keys[j])
				}
				if err := increment(c, b, ks); err != nil {
					t.Errorf("goroutine %d, round %d: %v", g, i, err)
					return
				}
				for _, j := range set {
					want[j].Add(1)
				}
			}
		})
	}
	wg.Wait()
	got := read(t, bs[0], keys...)
	for j, k := range keys {
		if n := string(got[k].Value); n != fmt.Sprint(want[j].Load()) {
			t.Errorf("counter %s = %q, want %d", k, n, want[j].Load())
		}
	}
}

func increment(c context.Context, b state.Shared, keys []string) error {
	unlock, err := b.Lock(c, keys)
	if err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer unlock()
	vs, err := b.Read(c, keys)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	cur := map[string]state.Versioned{}
	for _, v := range vs {
		cur[v.Key] = v
	}
	var ws []state.Write
	for _, k := range keys {
		n := 0
		if v, ok := cur[k]; ok {
			if _, err := fmt.Sscan(string(v.Value), &n); err != nil {
				return fmt.Errorf("counter %s = %q: %w", k, v.Value, err)
			}
		}
		ws = append(ws, put(k, fmt.Sprint(n+1), cur[k].Version))
	}
	if _, err := b.Write(c, ws); err != nil {
		return fmt.Errorf("write under the lock: %w", err)
	}
	return nil
}
