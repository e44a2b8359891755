package memstate_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
)

func openN(t *testing.T, s *memstate.SharedState, n int) []state.Shared {
	t.Helper()
	var bs []state.Shared
	for range n {
		b, err := s.Open()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		bs = append(bs, b)
	}
	return bs
}

// recorder records the changes delivered to one instance, "RESET" for a
// Reset.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func record(b state.Shared) *recorder {
	r := &recorder{}
	b.OnChange(func(c state.Change) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if c.Reset {
			r.got = append(r.got, "RESET")
		} else {
			r.got = append(r.got, c.Key)
		}
	})
	return r
}

func (r *recorder) changes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
	}
}

// coherentNow waits until b's CoherentAt is after now.
func coherentNow(t *testing.T, b state.Shared) {
	t.Helper()
	now := time.Now()
	waitFor(t, "CoherentAt after now", func() bool { return b.CoherentAt().After(now) })
}

func write(t *testing.T, b state.Shared, key string, expect int64) int64 {
	t.Helper()
	vs, err := b.Write(t.Context(), []state.Write{{Key: key, Value: []byte("v"), Expect: expect}})
	if err != nil {
		t.Fatalf("write %q: %v", key, err)
	}
	return vs[0]
}

func TestSharedFail(t *testing.T) {
	s := memstate.NewShared()
	bs := openN(t, s, 2)
	a, b := bs[0], bs[1]
	rb := record(b)
	v := write(t, a, "k", 0)
	coherentNow(t, b)
	unlockA, err := a.Lock(t.Context(), []string{"held"})
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan error, 1)
	go func() {
		u, err := b.Lock(t.Context(), []string{"held"})
		if err == nil {
			u()
		}
		waiting <- err
	}()
	time.Sleep(50 * time.Millisecond) // most likely waiting by now; either way it must fail

	down := errors.New("connection refused")
	s.Fail(down)
	if err := <-waiting; !errors.Is(err, down) {
		t.Fatalf("a Lock waiting when the database went down: %v, want %v", err, down)
	}
	ctx := t.Context()
	for _, b := range bs {
		for name, err := range map[string]error{
			"Load":    b.Load(ctx, func(string, []byte) error { return nil }),
			"Put":     b.Put(ctx, []state.Entry{{Key: "p", Value: []byte("x")}}),
			"Delete":  b.Delete(ctx, "k"),
			"SetMeta": b.SetMeta(ctx, "m", []byte("x")),
			"Release": b.Release(ctx, "l", "h"),
		} {
			if !errors.Is(err, down) {
				t.Errorf("%s while down: %v, want %v", name, err, down)
			}
		}
		if _, _, err := b.Meta(ctx, "m"); !errors.Is(err, down) {
			t.Errorf("Meta while down: %v", err)
		}
		if _, err := b.Lock(ctx, []string{"free"}); !errors.Is(err, down) {
			t.Errorf("Lock while down: %v", err)
		}
		if _, err := b.Read(ctx, []string{"k"}); !errors.Is(err, down) {
			t.Errorf("Read while down: %v", err)
		}
		if _, err := b.Write(ctx, []state.Write{{Key: "k", Value: []byte("x"), Expect: v}}); !errors.Is(err, down) {
			t.Errorf("Write while down: %v", err)
		}
		if _, _, err := b.Lease(ctx, "l", "h", time.Minute); !errors.Is(err, down) {
			t.Errorf("Lease while down: %v", err)
		}
		if at := b.CoherentAt(); !at.IsZero() {
			t.Errorf("CoherentAt while down: %v, want zero", at)
		}
	}
	if _, err := s.Open(); !errors.Is(err, down) {
		t.Errorf("Open while down: %v", err)
	}

	s.Fail(nil)
	// The records survived; the lock did not (its connection went down).
	if got, err := b.Read(ctx, []string{"k"}); err != nil || len(got) != 1 || got[0].Version != v {
		t.Fatalf("read after the database came back: %+v %v", got, err)
	}
	unlockB, err := b.Lock(ctx, []string{"held"})
	if err != nil {
		t.Fatalf("lock of a key whose holder lost it: %v", err)
	}
	unlockA() // stale: must not release b's lock
	lockCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := a.Lock(lockCtx, []string{"held"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a stale unlock released another's lock: Lock returned %v", err)
	}
	unlockB()
	// b's feed says it may have missed changes, then works on.
	coherentNow(t, b)
	write(t, a, "after", 0)
	coherentNow(t, b)
	if got, want := rb.changes(), []string{"k", "RESET", "after"}; !slices.Equal(got, want) {
		t.Fatalf("b was told of %q, want %q", got, want)
	}
}

func TestSharedCutFeed(t *testing.T) {
	s := memstate.NewShared()
	bs := openN(t, s, 3)
	a, b, c := bs[0], bs[1], bs[2]
	rb, rc := record(b), record(c)
	s.CutFeed(b)
	if at := b.CoherentAt(); !at.IsZero() {
		t.Fatalf("CoherentAt of a cut feed: %v, want zero", at)
	}
	write(t, a, "missed", 0)
	write(t, b, "by-b", 0) // b's other operations work on
	coherentNow(t, c)
	if got, want := rc.changes(), []string{"missed", "by-b"}; !slices.Equal(got, want) {
		t.Fatalf("c was told of %q, want %q", got, want)
	}
	if at := b.CoherentAt(); !at.IsZero() {
		t.Fatalf("CoherentAt of a cut feed after writes: %v, want zero", at)
	}
	s.RestoreFeed(b)
	coherentNow(t, b)
	write(t, a, "later", 0)
	coherentNow(t, b)
	if got, want := rb.changes(), []string{"RESET", "later"}; !slices.Equal(got, want) {
		t.Fatalf("b was told of %q, want %q", got, want)
	}
	// Restoring a feed that is up delivers nothing more.
	s.RestoreFeed(b)
	coherentNow(t, b)
	if got := rb.changes(); len(got) != 2 {
		t.Fatalf("a second RestoreFeed delivered %q", got[2:])
	}
}

// TestSharedCutFeedWhileDelivering: a cut while fn runs drops what is
// queued behind it, and CoherentAt stays zero until the Reset's fn call
// returned, not merely the call that was running.
func TestSharedCutFeedWhileDelivering(t *testing.T) {
	s := memstate.NewShared()
	bs := openN(t, s, 2)
	a, b := bs[0], bs[1]
	entered, release := make(chan string, 10), make(chan struct{})
	var mu sync.Mutex
	var got []string
	b.OnChange(func(c state.Change) {
		k := c.Key
		if c.Reset {
			k = "RESET"
		}
		entered <- k
		<-release
		mu.Lock()
		got = append(got, k)
		mu.Unlock()
	})
	write(t, a, "first", 0)
	write(t, a, "queued", 0)
	if k := <-entered; k != "first" {
		t.Fatalf("first call of fn for %q", k)
	}
	s.CutFeed(b)
	s.RestoreFeed(b)
	if at := b.CoherentAt(); !at.IsZero() {
		t.Fatalf("CoherentAt before the Reset was delivered: %v", at)
	}
	release <- struct{}{} // "first" returns
	if k := <-entered; k != "RESET" {
		t.Fatalf("after the cut, fn was called for %q, want the Reset", k)
	}
	if at := b.CoherentAt(); !at.IsZero() {
		t.Fatalf("CoherentAt while the Reset's fn runs: %v", at)
	}
	release <- struct{}{}
	coherentNow(t, b)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"first", "RESET"}; !slices.Equal(got, want) {
		t.Fatalf("fn was called for %q, want %q", got, want)
	}
}

func TestSharedFeedOfAnotherState(t *testing.T) {
	b, err := memstate.NewShared().Open()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer func() {
		if recover() == nil {
			t.Fatal("CutFeed of another state's instance did not panic")
		}
	}()
	memstate.NewShared().CutFeed(b)
}

func TestSharedLeaseClock(t *testing.T) {
	s := memstate.NewShared()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s.SetLeaseClock(func() time.Time { return now })
	bs := openN(t, s, 2)
	lease := func(b state.Shared, holder string) (bool, int64) {
		t.Helper()
		held, tok, err := b.Lease(t.Context(), "leader", holder, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return held, tok
	}
	held, t1 := lease(bs[0], "h1")
	if !held {
		t.Fatal("h1 did not get a free lease")
	}
	now = now.Add(59 * time.Second)
	if held, _ := lease(bs[1], "h2"); held {
		t.Fatal("h2 got the lease 59 s into a ttl of 1 min")
	}
	now = now.Add(time.Second)
	held, t2 := lease(bs[1], "h2")
	if !held || t2 <= t1 {
		t.Fatalf("h2 at the ttl's end: held %v, token %d, want true above %d", held, t2, t1)
	}
	if _, _, err := bs[0].Lease(t.Context(), "leader", "", time.Minute); err == nil {
		t.Fatal("a lease for an empty holder was no error")
	}
	if _, _, err := bs[0].Lease(t.Context(), "leader", "h1", 0); err == nil {
		t.Fatal("a lease for a ttl of 0 was no error")
	}
}

// TestSharedSlowSubscriber: a subscriber whose fn blocks does not hold up
// writers; its changes wait, in order, and CoherentAt says so.
func TestSharedSlowSubscriber(t *testing.T) {
	s := memstate.NewShared()
	bs := openN(t, s, 2)
	a, b := bs[0], bs[1]
	unblock := make(chan struct{})
	var mu sync.Mutex
	var got []string
	b.OnChange(func(c state.Change) {
		<-unblock
		mu.Lock()
		got = append(got, c.Key)
		mu.Unlock()
	})
	const n = 1000
	done := make(chan struct{})
	before := time.Now()
	go func() {
		defer close(done)
		for i := range n {
			if _, err := a.Write(context.Background(), []state.Write{{Key: fmt.Sprintf("k%04d", i), Value: []byte("v"), Expect: 0}}); err != nil {
				t.Errorf("write: %v", err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writers waited for a blocked subscriber")
	}
	if at := b.CoherentAt(); at.IsZero() || at.After(time.Now()) || at.Before(before) {
		t.Fatalf("CoherentAt of a blocked subscriber: %v, want the first write's commit, after %v", at, before)
	}
	after := time.Now()
	if b.CoherentAt().After(after) {
		t.Fatal("CoherentAt passed writes that fn has not returned from")
	}
	close(unblock)
	coherentNow(t, b)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n || !slices.IsSorted(got) {
		t.Fatalf("%d changes delivered (sorted: %v), want %d in commit order", len(got), slices.IsSorted(got), n)
	}
}

func TestSharedClose(t *testing.T) {
	s := memstate.NewShared()
	bs := openN(t, s, 2)
	a, c := bs[0], bs[1]
	b, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	rb, rc := record(b), record(c)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	write(t, a, "k", 0)
	coherentNow(t, c)
	if got := rb.changes(); len(got) != 0 || len(rc.changes()) != 1 {
		t.Fatalf("a closed instance was told of %q", got)
	}
	if _, err := b.Read(t.Context(), []string{"k"}); err == nil {
		t.Fatal("Read of a closed instance was no error")
	}
	if _, err := b.Lock(t.Context(), []string{"x"}); err == nil {
		t.Fatal("Lock of a closed instance was no error")
	}
	if at := b.CoherentAt(); !at.IsZero() {
		t.Fatalf("CoherentAt of a closed instance: %v", at)
	}
}
