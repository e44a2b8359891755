package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
)

// ErrNotLeader is returned by the jobs that run on one replica at a time
// (revoking expired tokens, reconciling, watching Directus) on a replica
// that does not hold the jobs lease.
var ErrNotLeader = errors.New("this replica does not hold the jobs lease: the revoker, the reconciler and the watcher run on the replica that does")

// JobsLease is the name of the lease of those jobs.
const JobsLease = "jobs"

// Leader holds, for one replica, the lease of the jobs that must run on one
// replica at a time. The lease lives TTL after each renewal; Run renews it
// every TTL/3, and another replica takes it once the holder has not renewed
// it for TTL (by the database's clock). Each write batch of those jobs
// calls Fence first, which renews the lease and checks that its fencing
// token is the one this replica took: a replica that lost the lease (paused,
// cut off) and does not know it yet writes nothing more.
type Leader struct {
	b      state.Shared
	holder string
	ttl    time.Duration
	log    *slog.Logger

	mu      sync.Mutex
	held    bool
	token   int64
	renewed time.Time     // local time of the last renewal that held
	elected chan struct{} // closed and replaced whenever this replica takes the lease
}

// NewLeader returns the Leader of holder (a name unique to the process)
// on b.
func NewLeader(b state.Shared, holder string, ttl time.Duration, log *slog.Logger) *Leader {
	return &Leader{b: b, holder: holder, ttl: ttl, log: log, elected: make(chan struct{})}
}

// Holder returns this replica's name.
func (l *Leader) Holder() string { return l.holder }

// Held reports whether this replica held the lease at its last renewal,
// and that renewal is younger than the TTL.
func (l *Leader) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held && time.Since(l.renewed) < l.ttl
}

// Elected returns a channel closed when this replica next takes the lease.
func (l *Leader) Elected() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.elected
}

// Run takes and renews the lease until ctx ends, then releases it.
func (l *Leader) Run(ctx context.Context) {
	every := max(l.ttl/3, 10*time.Millisecond)
	for {
		l.renew(ctx)
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			l.mu.Lock()
			held := l.held
			l.held = false
			l.mu.Unlock()
			if held {
				if err := l.b.Release(rctx, JobsLease, l.holder); err != nil {
					l.log.Warn("jobs lease: could not release it; another replica takes it when it expires", "err", err)
				}
			}
			return
		case <-time.After(every):
		}
	}
}

// renew takes or renews the lease once.
func (l *Leader) renew(ctx context.Context) {
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, l.ttl/2)
	defer cancel()
	held, token, err := l.b.Lease(rctx, JobsLease, l.holder, l.ttl)
	l.mu.Lock()
	defer l.mu.Unlock()
	was := l.held
	switch {
	case err != nil:
		// Unknown: keep what Held says until the TTL runs out.
		if ctx.Err() == nil {
			l.log.Warn("jobs lease: renewal failed", "err", err)
		}
		return
	case held && (!was || token != l.token):
		l.held, l.token, l.renewed = true, token, start
		close(l.elected)
		l.elected = make(chan struct{})
		l.log.Info("jobs lease taken: this replica runs the revoker, the reconciler and the watcher", "holder", l.holder, "token", token)
	case held:
		l.renewed = start
	default:
		l.held = false
		if was {
			l.log.Warn("jobs lease lost to another replica", "holder", l.holder)
		}
	}
}

// Fence renews the lease and returns nil if this replica still holds it
// with the token it took, else an error wrapping ErrNotLeader.
func (l *Leader) Fence(ctx context.Context) error {
	l.mu.Lock()
	held, token := l.held, l.token
	l.mu.Unlock()
	if !held {
		return ErrNotLeader
	}
	start := time.Now()
	now, t, err := l.b.Lease(ctx, JobsLease, l.holder, l.ttl)
	if err != nil {
		return fmt.Errorf("jobs lease: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !now || t != token {
		l.held = false
		return fmt.Errorf("%w (lost since this run began)", ErrNotLeader)
	}
	l.renewed = start
	return nil
}

// SetLeader makes the revoker, the reconciler and the watcher of e run only
// while l holds the jobs lease, each write batch fenced (nil: they always
// run, as on a file).
func (e *Exchanger) SetLeader(l *Leader) { e.leader = l }

// fence is nil when e may run the jobs' next write batch.
func (e *Exchanger) fence(ctx context.Context) error {
	if e.leader == nil {
		return nil
	}
	return e.leader.Fence(ctx)
}

// leading reports whether e runs the jobs now.
func (e *Exchanger) leading() bool { return e.leader == nil || e.leader.Held() }
