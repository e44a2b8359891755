package bridge

import (
	"context"
	"slices"
	"sync"
)

// userLocks serialises the writes of one machine user (an exchange that
// writes, a revocation, a reconcile batch, the watcher) with one lock per
// user that exists only while someone holds or waits for it, so a slow
// Directus request holds up that user's writers only, never another
// user's exchange. A wait ends with its context.
type userLocks struct {
	mu sync.Mutex
	m  map[string]*userLock
}

type userLock struct {
	sem  chan struct{} // holds one token while locked
	refs int           // holders and waiters
}

// lock locks id, or returns ctx's error when ctx ends first.
func (l *userLocks) lock(ctx context.Context, id string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*userLock{}
	}
	u := l.m[id]
	if u == nil {
		u = &userLock{sem: make(chan struct{}, 1)}
		l.m[id] = u
	}
	u.refs++
	l.mu.Unlock()
	select {
	case u.sem <- struct{}{}:
	case <-ctx.Done():
		l.release(id, u)
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-u.sem
			l.release(id, u)
		})
	}, nil
}

func (l *userLocks) release(id string, u *userLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u.refs--; u.refs == 0 {
		delete(l.m, id)
	}
}

// lockAll locks every id, in sorted order so that two callers can never
// deadlock, and returns the unlock of all of them.
func (l *userLocks) lockAll(ctx context.Context, ids []string) (unlock func(), err error) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	unlocks := make([]func(), 0, len(ids))
	all := func() {
		for _, u := range slices.Backward(unlocks) {
			u()
		}
	}
	for _, id := range ids {
		u, err := l.lock(ctx, id)
		if err != nil {
			all()
			return nil, err
		}
		unlocks = append(unlocks, u)
	}
	return all, nil
}

// held counts the users whose lock is held or awaited (tests).
func (l *userLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
