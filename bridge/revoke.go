package bridge

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/directus-bridge/directus-bridge/directus"
)

// revokeBatch bounds the ids of one PATCH /users.
const revokeBatch = 200

// RevokeExpired clears, in Directus, every static token whose expiry has
// passed (pending ones included) and forgets it. It takes the users' locks,
// so it never clears a token that an exchange has just issued. It returns how
// many tokens it revoked.
func (e *Exchanger) RevokeExpired(ctx context.Context) (int, error) {
	now := e.now()
	var ids []string
	for _, r := range e.store.All() {
		if r.Token != "" && !now.Before(r.Expiry) {
			ids = append(ids, r.UserID)
		}
	}
	sort.Strings(ids)
	revoked := 0
	for len(ids) > 0 {
		n := min(len(ids), revokeBatch)
		k, err := e.revoke(ctx, ids[:n])
		revoked += k
		if err != nil {
			return revoked, err
		}
		ids = ids[n:]
	}
	return revoked, nil
}

// revoke clears the tokens of ids that are still expired once their locks
// are held.
func (e *Exchanger) revoke(ctx context.Context, ids []string) (int, error) {
	unlock := e.locks.lockAll(ids)
	defer unlock()
	now := e.now()
	var recs []Record
	for _, id := range ids {
		if r, ok := e.store.Get(id); ok && r.Token != "" && !now.Before(r.Expiry) {
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
	// Users deleted in Directus meanwhile are skipped by Directus.
	if err := e.directus.UpdateUsers(ctx, keys, directus.UserChange{Token: directus.Ptr("")}); err != nil {
		return 0, fmt.Errorf("revoke: %w", err)
	}
	for i := range recs {
		recs[i].Token, recs[i].Pending = "", false
	}
	if err := e.store.PutAll(recs); err != nil {
		return 0, fmt.Errorf("revoke: %w", err)
	}
	for _, r := range recs {
		e.log.Info("token revoked", "event", "revoke", "user_id", r.UserID, "client", r.Client, "issuer", r.Issuer,
			"expired_at", r.Expiry.UTC().Format(time.RFC3339))
	}
	e.metrics.revoked(len(recs))
	return len(recs), nil
}

// RunRevoker revokes expired tokens every RevokeInterval until ctx ends, and
// flushes the store's batched writes on the same beat.
func (e *Exchanger) RunRevoker(ctx context.Context) {
	t := time.NewTicker(e.tokens.RevokeInterval.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := e.RevokeExpired(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("revoking expired tokens failed; next try on the next tick", "err", err)
			}
			if err := e.store.Flush(); err != nil {
				e.log.Warn("state flush failed", "err", err)
			}
		}
	}
}
