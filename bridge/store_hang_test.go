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

// hungBackend is a Backend whose writes hang until their context ends, as
// on a database that accepts connections and never answers.
type hungBackend struct{ state.Backend }

func (hungBackend) Put(ctx context.Context, _ []state.Entry) error {
	<-ctx.Done()
	return ctx.Err()
}

func (hungBackend) Delete(ctx context.Context, _ string) error {
	<-ctx.Done()
	return ctx.Err()
}

// Writes queued behind one that hangs fail within one operation's timeout
// from when they were asked for, not one timeout per write queued ahead:
// concurrent exchanges on a hung database all answer 503 in about
// opTimeout.
func TestStoreQueuedWritesShareTheTimeout(t *testing.T) {
	old := opTimeout
	opTimeout = 300 * time.Millisecond
	t.Cleanup(func() { opTimeout = old })
	b, err := memstate.New().Open()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(hungBackend{b}, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	const writers = 4
	took := make([]time.Duration, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if i%2 == 0 {
				errs[i] = s.Put(Record{UserID: "u", Client: "c"})
			} else {
				errs[i] = s.Delete(Record{UserID: "u"})
			}
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	// Slack for scheduling under -race; without the shared deadline the
	// writers answer after 300ms, 600ms, 900ms and 1.2s.
	bound := opTimeout + 250*time.Millisecond
	for i := range writers {
		if !errors.Is(errs[i], context.DeadlineExceeded) {
			t.Errorf("writer %d: %v, want a deadline exceeded", i, errs[i])
		}
		if took[i] > bound {
			t.Errorf("writer %d failed after %s, want at most %s (one operation's timeout)", i, took[i], bound)
		}
	}
	if _, ok := s.Get("u"); ok {
		t.Fatal("a failed write was kept in memory")
	}
}
