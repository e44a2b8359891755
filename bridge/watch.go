package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/directus-bridge/directus-bridge/directus"
)

// watchPage bounds the activity rows of one read.
const watchPage = 500

// watchPages bounds the reads of one Watch call; the rest waits for the
// next call.
const watchPages = 10

// Watch applies what happened to machine users in Directus since its last
// call, by anyone but the bridge itself: suspensions and reactivations,
// deletions, roles and policies edited by hand, tokens changed or cleared.
// It reads Directus's activity log (one request) and then only the users
// it names (one request per 100), so its cost follows the number of
// changes, not of clients; the returning-client path stays free of Directus
// requests. The position in the log is kept in the state, so a restart
// continues where the last run stopped. It returns how many records it
// changed.
//
// A user an administrator suspended is then refused at once; a deleted one
// is created again at its client's next exchange; a user touched by hand
// is read before the next write, and its live token is written again (the
// bridge cannot see which token Directus holds).
func (e *Exchanger) Watch(ctx context.Context) (int, error) {
	e.watchMu.Lock()
	defer e.watchMu.Unlock()
	if e.leader != nil {
		if !e.leading() {
			return 0, ErrNotLeader
		}
		// Where the last holder of the lease stopped.
		if err := e.store.ReloadCursor(); err != nil {
			return 0, fmt.Errorf("watch: %w", err)
		}
		if err := e.store.Sync(ctx); err != nil {
			return 0, fmt.Errorf("watch: %w", err)
		}
	}
	self, err := e.selfID(ctx)
	if err != nil {
		return 0, fmt.Errorf("watch: %w", err)
	}
	cursor, ok := e.store.Cursor()
	if !ok {
		// First run on this state: start from now. Older changes are the
		// reconciler's.
		last, err := e.directus.LastActivityID(ctx, directus.CollectionUsers)
		if err != nil {
			return 0, fmt.Errorf("watch: %w", err)
		}
		if err := e.store.SetCursor(last); err != nil {
			return 0, fmt.Errorf("watch: %w", err)
		}
		return 0, nil
	}
	changed := 0
	for range watchPages {
		// Users, and the access rows that attach policies to them: an
		// administrator may attach one through /access directly, which
		// Directus logs under directus_access only.
		acts, err := e.directus.Activity(ctx, directus.ActivityFilter{
			Collections: []string{directus.CollectionUsers, directus.CollectionAccess}, AfterID: cursor, ExcludeUser: self}, watchPage)
		if err != nil {
			return changed, fmt.Errorf("watch: %w", err)
		}
		ids := e.takeRetries()
		var rows []string // access rows written by others
		for _, a := range acts {
			if a.Collection == directus.CollectionAccess {
				rows = append(rows, a.Item)
				continue
			}
			if _, known := e.store.Get(a.Item); known {
				ids = append(ids, a.Item)
				if a.Action == directus.ActionCreate || a.Action == directus.ActionDelete {
					e.retryMu.Lock()
					e.recreated[a.Item] = true
					e.retryMu.Unlock()
				}
			}
		}
		owners, err := e.accessOwners(ctx, rows)
		if err != nil {
			return changed, fmt.Errorf("watch: %w", err)
		}
		ids = append(ids, owners...)
		sort.Strings(ids)
		n, err := e.observe(ctx, slices.Compact(ids))
		changed += n
		if err != nil {
			return changed, fmt.Errorf("watch: %w", err)
		}
		if len(acts) == 0 {
			break
		}
		cursor = acts[len(acts)-1].ID
		// A replica that lost the lease must not move the cursor back
		// under the new holder.
		if err := e.fence(ctx); err != nil {
			return changed, fmt.Errorf("watch: %w", err)
		}
		if err := e.store.SetCursor(cursor); err != nil {
			return changed, fmt.Errorf("watch: %w", err)
		}
		if len(acts) < watchPage {
			break
		}
	}
	return changed, nil
}

// selfID is the id of the bridge's own Directus user (its token's), learnt
// once: the activity rows of its own writes are not news.
func (e *Exchanger) selfID(ctx context.Context) (string, error) {
	e.selfMu.Lock()
	defer e.selfMu.Unlock()
	if e.self == "" {
		me, err := e.directus.Me(ctx)
		if err != nil {
			return "", fmt.Errorf("who am I: %w", err)
		}
		e.self = me.ID
	}
	return e.self, nil
}

// accessOwners returns the known users whose direct policies the access
// rows touch: the rows' users as Directus has them now (created or moved
// rows), and the records that list a row (deleted or moved rows).
func (e *Exchanger) accessOwners(ctx context.Context, rows []string) ([]string, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	sort.Strings(rows)
	rows = slices.Compact(rows)
	var out []string
	for batch := range slices.Chunk(rows, readBatch) {
		users, err := e.directus.AccessUsers(ctx, batch)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			if _, known := e.store.Get(u); known {
				out = append(out, u)
			}
		}
	}
	set := map[string]bool{}
	for _, r := range rows {
		set[r] = true
	}
	for _, r := range e.store.All() {
		if slices.ContainsFunc(r.Policies, func(a directus.Access) bool { return set[a.ID] }) {
			out = append(out, r.UserID)
		}
	}
	return out, nil
}

func (e *Exchanger) takeRetries() []string {
	e.retryMu.Lock()
	defer e.retryMu.Unlock()
	ids := make([]string, 0, len(e.retry))
	for id := range e.retry {
		ids = append(ids, id)
	}
	clear(e.retry)
	return ids
}

func (e *Exchanger) retryLater(id string) {
	e.retryMu.Lock()
	defer e.retryMu.Unlock()
	e.retry[id] = true
}

// observe reads the users ids and brings their records in line with what
// Directus shows. The read holds no lock: a record that an exchange changed
// meanwhile is left to it and looked at again at the next call. On an error
// the ids are kept for the next call.
func (e *Exchanger) observe(ctx context.Context, ids []string) (int, error) {
	changed := 0
	for len(ids) > 0 {
		batch := ids[:min(len(ids), readBatch)]
		ids = ids[len(batch):]
		before := map[string]uint64{}
		for _, id := range batch {
			if r, ok := e.store.Get(id); ok {
				before[id] = r.rev
			}
		}
		users, err := e.directus.ListUsers(ctx, directus.UserFilter{IDs: batch}, len(batch), 0)
		if err != nil {
			for _, id := range append(batch, ids...) {
				e.retryLater(id)
			}
			return changed, err
		}
		byID := map[string]*directus.User{}
		for i := range users {
			byID[users[i].ID] = &users[i]
		}
		for _, id := range batch {
			ok, err := e.observeOne(ctx, id, before[id], byID[id])
			if err != nil {
				for _, id := range append(batch, ids...) {
					e.retryLater(id)
				}
				return changed, err
			}
			if ok {
				changed++
			}
		}
	}
	return changed, nil
}

func (e *Exchanger) observeOne(ctx context.Context, id string, rev uint64, u *directus.User) (bool, error) {
	unlock, err := e.store.Lock(ctx, id)
	if err != nil {
		return false, err
	}
	defer unlock()
	rec, ok := e.store.Get(id)
	if !ok {
		return false, nil
	}
	if rec.rev != rev {
		e.retryLater(id)
		return false, nil
	}
	e.retryMu.Lock()
	recreated := e.recreated[id]
	delete(e.recreated, id)
	e.retryMu.Unlock()
	what := applyObserved(&rec, u, recreated)
	if len(what) == 0 {
		return false, nil
	}
	if err := e.store.Put(rec); err != nil {
		return false, err
	}
	e.log.Info("machine user changed in Directus", "event", "watch", "user_id", id, "client", rec.Client,
		"issuer", rec.Issuer, "noticed", strings.Join(what, ", "))
	e.metrics.watched(len(what))
	return true, nil
}

// applyObserved records in r what Directus shows of its user (nil: the user
// does not exist), after someone other than the bridge wrote to it
// (recreated: created or deleted it). It returns what it noticed.
func applyObserved(r *Record, u *directus.User, recreated bool) []string {
	var what []string
	if u == nil {
		if !r.Gone {
			r.gone()
			what = append(what, "deleted")
		}
		return what
	}
	if r.Gone || recreated {
		// Not the user the bridge wrote: nothing of the bridge's holds.
		r.Gone = false
		r.SuspendedByBridge, r.SuspendedAt = false, time.Time{}
		if r.holdsToken() {
			r.Unsure = true
		}
		what = append(what, "created by someone else")
	}
	if r.SuspendedByBridge {
		// Someone else wrote to a user the bridge suspended: from now on the
		// status is theirs (reactivated, or suspended on purpose).
		r.SuspendedByBridge, r.SuspendedCursor = false, 0
		what = append(what, "suspension taken over by an administrator")
	}
	switch {
	case u.Status != "active" && !r.SuspendedByBridge && !r.SuspendedByAdmin:
		r.SuspendedByAdmin, r.SuspendedAt = true, time.Time{}
		what = append(what, "status "+u.Status+" set by an administrator")
	case u.Status == "active" && r.SuspendedByAdmin:
		r.SuspendedByAdmin = false
		what = append(what, "reactivated by an administrator")
	}
	if u.Role != r.Role || !sameAccess(u.Access, r.Policies) {
		r.Role, r.Policies = u.Role, u.Access
		what = append(what, "role or policies changed")
	}
	if _, bound := bindingOf(u.AuthData); bound != r.Bound {
		r.Bound = bound
		what = append(what, "binding in auth_data changed")
	}
	if !u.HasToken && r.holdsToken() {
		r.tokensCleared()
		what = append(what, "token cleared")
	}
	// The token may have been changed by hand too: Directus does not show
	// it. The next write reads the user and writes the live token again.
	if !r.Unsure && r.holdsToken() {
		r.Unsure = true
		what = append(what, "token unverified")
	}
	return what
}

func sameAccess(a, b []directus.Access) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// RunWatcher calls Watch every interval until ctx ends.
func (e *Exchanger) RunWatcher(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := e.Watch(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, ErrNotLeader) {
				e.log.Warn("watching Directus for changes failed; next try on the next tick", "err", err)
			}
		}
	}
}
