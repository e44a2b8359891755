package bridge

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/directus"
)

// revokeBatch bounds the ids of one PATCH /users.
const revokeBatch = 200

// RevokeExpired clears, in Directus, the token of every user that may hold
// a token whose expiry has passed (an unconfirmed one included), and
// forgets the user's tokens once Directus confirms. It takes the users' locks,
// so it never clears a token that an exchange has just issued. It returns how
// many tokens it revoked.
func (e *Exchanger) RevokeExpired(ctx context.Context) (int, error) {
	if !e.leading() {
		return 0, ErrNotLeader
	}
	if err := e.store.Sync(ctx); err != nil {
		return 0, fmt.Errorf("revoke: %w", err)
	}
	now := e.now()
	var ids []string
	for _, r := range e.store.All() {
		if r.expiredToken(now) {
			ids = append(ids, r.UserID)
		}
	}
	sort.Strings(ids)
	revoked := 0
	var errs []error
	for len(ids) > 0 {
		n := min(len(ids), revokeBatch)
		k, err := e.revoke(ctx, ids[:n])
		revoked += k
		if err != nil {
			// The other batches still go: one refused batch must not keep
			// every later token alive.
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		ids = ids[n:]
	}
	return revoked, errors.Join(errs...)
}

// revoke clears the tokens of ids that are still expired once their locks
// are held.
func (e *Exchanger) revoke(ctx context.Context, ids []string) (int, error) {
	unlock, err := e.store.Lock(ctx, ids...)
	if err != nil {
		return 0, fmt.Errorf("revoke: %w", err)
	}
	defer unlock()
	now := e.now()
	var recs []Record
	for _, id := range ids {
		if r, ok := e.store.Get(id); ok && r.expiredToken(now) {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return 0, nil
	}
	keys := make([]string, len(recs))
	for i, r := range recs {
		keys[i] = r.UserID
	}
	if err := e.fence(ctx); err != nil {
		return 0, fmt.Errorf("revoke: %w", err)
	}
	// Users deleted in Directus meanwhile are skipped by Directus.
	if err := e.directus.UpdateUsers(ctx, keys, directus.UserChange{Token: directus.Ptr("")}); err != nil {
		if !definite(err) {
			// Directus may have cleared the tokens: the records keep them
			// (they are revoked again next time), and the next exchange
			// reads the user before it writes.
			for i := range recs {
				recs[i].Unsure = true
			}
			if perr := e.store.PutAll(recs); perr != nil {
				err = errors.Join(err, perr)
			}
		}
		return 0, fmt.Errorf("revoke: %w", err)
	}
	expired := make([]time.Time, len(recs))
	for i := range recs {
		expired[i] = recs[i].Expiry
		recs[i].tokensCleared()
	}
	if err := e.store.PutAll(recs); err != nil {
		e.unsureAfterConflict(recs, err)
		return 0, fmt.Errorf("revoke: %w", err)
	}
	for i, r := range recs {
		e.log.Info("token revoked", "event", "revoke", "user_id", r.UserID, "client", r.Client, "issuer", r.Issuer,
			"expired_at", expired[i].UTC().Format(time.RFC3339))
	}
	e.metrics.revoked(len(recs))
	return len(recs), nil
}

// unsureAfterConflict marks unsure, after Directus applied a batch whose
// records then lost to another replica's write in the state (this one's
// database locks were lost meanwhile), the users of recs: what Directus
// holds for them is no longer what either replica recorded.
func (e *Exchanger) unsureAfterConflict(recs []Record, err error) {
	if !errors.Is(err, state.ErrConflict) {
		return
	}
	for _, r := range recs {
		if merr := e.store.MarkUnsure(r); merr != nil {
			e.log.Error("a user Directus changed could not be marked unsure after a conflicting write of another replica",
				"user_id", r.UserID, "err", merr)
		}
	}
}

// RunRevoker revokes expired tokens every RevokeInterval until ctx ends, and
// flushes the store's batched writes on the same beat. On a replica it
// revokes only while it holds the jobs lease, and at once when it takes it.
func (e *Exchanger) RunRevoker(ctx context.Context) {
	every := e.tok().RevokeInterval.D()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var elected <-chan struct{} // nil without a Leader: never ready
		if e.leader != nil {
			elected = e.leader.Elected()
		}
		select {
		case <-ctx.Done():
			return
		case <-elected:
			if _, err := e.RevokeExpired(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, ErrNotLeader) {
				e.log.Warn("revoking expired tokens failed; next try on the next tick", "err", err)
			}
			continue
		case <-t.C:
			if d := e.tok().RevokeInterval.D(); d != every { // a reload changed it
				every = d
				t.Reset(d)
			}
			if _, err := e.RevokeExpired(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, ErrNotLeader) {
				e.log.Warn("revoking expired tokens failed; next try on the next tick", "err", err)
			}
			if err := e.store.Flush(); err != nil {
				e.log.Warn("state flush failed", "err", err)
			}
		}
	}
}
