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

// ReconcileConfig shapes the periodic reconciliation of machine users.
type ReconcileConfig struct {
	// Schedule is a cron spec or "@every 5m" (default); "off" disables the
	// schedule (directus-bridge reconcile still works).
	Schedule string `yaml:"schedule"`
	// SuspendAfter suspends machine users not seen for this long (default
	// 720h; "0s" is the default, use a negative value to never suspend).
	SuspendAfter Duration `yaml:"suspend_after"`
	// DeleteAfter deletes users the bridge suspended this long ago (default
	// 0: never).
	DeleteAfter Duration `yaml:"delete_after"`
	// Drift says what to do with a role or policies changed by hand in
	// Directus: restore (default), keep, or report.
	Drift string `yaml:"drift"`
	// PageSize is how many users one read fetches (default 1000).
	PageSize int `yaml:"page_size"`
	// WatchInterval is how often Directus's activity log is read for changes
	// to machine users made by others: suspensions, deletions, hand edits
	// (default 5s; negative disables). See Exchanger.Watch.
	WatchInterval Duration `yaml:"watch_interval"`
}

// Drift modes.
const (
	DriftRestore = "restore"
	DriftKeep    = "keep"
	DriftReport  = "report"
)

// SetDefaults fills in the zero fields.
func (c *ReconcileConfig) SetDefaults() {
	if c.Schedule == "" {
		c.Schedule = "@every 5m"
	}
	if c.SuspendAfter == 0 {
		c.SuspendAfter = Duration(720 * time.Hour)
	}
	if c.Drift == "" {
		c.Drift = DriftRestore
	}
	if c.PageSize <= 0 {
		c.PageSize = 1000
	}
	if c.WatchInterval == 0 {
		c.WatchInterval = Duration(5 * time.Second)
	}
}

// Reconcile actions.
const (
	ActRevoke   = "revoke"   // token past expiry or unknown to the bridge
	ActRemap    = "remap"    // the rules now grant another role or policies
	ActUnmapped = "unmapped" // no rule grants access any more: token cleared, suspended
	ActRestore  = "restore"  // role or policies changed by hand, restored
	ActDrift    = "drift"    // the same, only reported (drift: keep or report)
	ActSuspend  = "suspend"  // not seen for suspend_after
	ActDelete   = "delete"   // suspended by the bridge for delete_after
	ActNoticed  = "noticed"  // suspended by an administrator: recorded, Directus untouched
	ActGone     = "gone"     // deleted in Directus: recorded, created again at the next exchange
)

// Change is one planned or applied action on one user.
type Change struct {
	Action string `json:"action"`
	UserID string `json:"user_id"`
	Client string `json:"client"`
	Detail string `json:"detail"`
}

// Report is the outcome of a reconcile run.
type Report struct {
	DryRun   bool           `json:"dry_run"`
	Started  time.Time      `json:"started"`
	Duration string         `json:"duration"`
	Scanned  int            `json:"scanned"` // users with an external identifier
	Managed  int            `json:"managed"` // of which bridge-managed
	Actions  map[string]int `json:"actions"`
	Changes  []Change       `json:"changes"`
	Skipped  int            `json:"skipped"` // planned but changed meanwhile by an exchange
	// BlockedRules are rules whose grant has admin access in Directus
	// without allow_admin: they deny.
	BlockedRules []string `json:"blocked_rules,omitempty"`
	Error        string   `json:"error,omitempty"`
}

// plan is what a run intends for one user.
type plan struct {
	user   directus.User
	rec    Record
	known  bool
	action string
	detail string
	grant  Grant // for remap/restore
}

// managedID reports whether id is a bridge-managed machine user: its id is
// the UUIDv5 the bridge derives from its external identifier (so no human
// user matches by accident), or the bridge's state knows it.
func (e *Exchanger) managedID(u directus.User) bool {
	if u.ExternalIdentifier == "" {
		return false
	}
	if UserID(e.namespace, nil, u.ExternalIdentifier) == u.ID {
		return true
	}
	for _, k := range e.verifier.all() {
		client, ok := strings.CutPrefix(u.ExternalIdentifier, k.cfg.Name+":")
		if ok && k.cfg.UserIDs == UserIDsIssuer && UserID(e.namespace, k.cfg, client) == u.ID {
			return true
		}
	}
	_, known := e.store.Get(u.ID)
	return known
}

// Reconcile makes Directus match the bridge's intent for every managed
// machine user and touches nothing else. With dryRun it only plans. Every
// action is idempotent: a failed run leaves nothing inconsistent and the
// next run picks up.
func (e *Exchanger) Reconcile(ctx context.Context, rc ReconcileConfig, dryRun bool) (_ *Report, err error) {
	rc.SetDefaults()
	rep := &Report{DryRun: dryRun, Started: e.now(), Actions: map[string]int{}, Changes: []Change{}}
	if !dryRun && !e.leading() {
		rep.Error = ErrNotLeader.Error()
		return rep, fmt.Errorf("reconcile: %w", ErrNotLeader)
	}
	if err := e.store.Sync(ctx); err != nil {
		rep.Error = err.Error()
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	defer func() { rep.Duration = e.now().Sub(rep.Started).Round(time.Millisecond).String() }()
	defer func() { e.metrics.reconciled(rep, err) }()
	// A role or policy may have gained admin access since the rules
	// loaded: such rules deny from now on, and their users are planned
	// unmapped below.
	if rep.BlockedRules, err = e.CheckAdminAccess(ctx); err != nil {
		rep.Error = err.Error()
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	e.metrics.blocked(len(rep.BlockedRules))
	var plans []plan
	seen := map[string]bool{}
	for offset := 0; ; offset += rc.PageSize {
		var users []directus.User
		users, err = e.directus.ListUsers(ctx, directus.UserFilter{HasExternalIdentifier: true}, rc.PageSize, offset)
		if err != nil {
			rep.Error = err.Error()
			return rep, fmt.Errorf("reconcile: %w", err)
		}
		for _, u := range users {
			seen[u.ID] = true
			rep.Scanned++
			if !e.managedID(u) {
				continue
			}
			rep.Managed++
			plans = append(plans, e.planUser(u, rc)...)
		}
		if len(users) < rc.PageSize {
			break
		}
	}
	gone, err := e.missingUsers(ctx, seen)
	if err != nil {
		rep.Error = err.Error()
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	plans = append(plans, gone...)
	defer rep.sort()
	if dryRun {
		for _, p := range plans {
			rep.add(p)
		}
		return rep, nil
	}
	if err = e.apply(ctx, plans, rep); err != nil {
		rep.Error = err.Error()
		return rep, err
	}
	return rep, nil
}

// sort orders the changes by user and action, so that a dry run and the run
// after it list the same plan the same way.
func (r *Report) sort() {
	sort.Slice(r.Changes, func(i, j int) bool {
		a, b := r.Changes[i], r.Changes[j]
		if a.UserID != b.UserID {
			return a.UserID < b.UserID
		}
		return a.Action < b.Action
	})
}

func (r *Report) add(p plan) {
	r.Actions[p.action]++
	r.Changes = append(r.Changes, Change{Action: p.action, UserID: p.user.ID, Client: p.user.ExternalIdentifier, Detail: p.detail})
}

// planUser decides what to do with one managed user, from Directus's view
// (u) and the bridge's state. Delete, suspend and unmapped (which clear the
// token too) stand alone; a role change (remap, restore) may come with a
// revocation.
func (e *Exchanger) planUser(u directus.User, rc ReconcileConfig) []plan {
	now := e.now()
	rec, known := e.store.Get(u.ID)
	liveToken := known && rec.liveToken(now)
	p := plan{user: u, rec: rec, known: known}
	one := func(action, detail string) []plan { p.action, p.detail = action, detail; return []plan{p} }
	var out []plan
	revoke := func() []plan {
		if u.HasToken && !liveToken {
			q := p
			q.action, q.detail = ActRevoke, "token past expiry or unknown to the bridge"
			out = append(out, q)
		}
		return out
	}

	if u.Status != "active" {
		if u.Status == "suspended" && rc.DeleteAfter > 0 && known && rec.SuspendedByBridge && !rec.SuspendedAt.IsZero() &&
			now.Sub(rec.SuspendedAt) >= rc.DeleteAfter.D() {
			return one(ActDelete, fmt.Sprintf("suspended by the bridge since %s", rec.SuspendedAt.UTC().Format(time.RFC3339)))
		}
		if known && !rec.SuspendedByBridge && !rec.SuspendedByAdmin {
			// Left as it is in Directus; the bridge stops handing out the
			// client's token at once instead of at its next write.
			out = one(ActNoticed, "status "+u.Status+" set in Directus, not by the bridge")
		}
		return revoke() // an admin's or the bridge's suspension stays
	}
	last := u.LastAccess
	if known && rec.LastExchange.After(last) {
		last = rec.LastExchange
	}
	if rc.SuspendAfter > 0 && !last.IsZero() && now.Sub(last) >= rc.SuspendAfter.D() {
		return one(ActSuspend, fmt.Sprintf("not seen since %s", last.UTC().Format(time.RFC3339)))
	}
	if known && (len(rec.Scopes) > 0 || rec.Issuer != "") {
		m := e.mapper.Load()
		d := m.Decide(recordInput(rec))
		if d.Blocked {
			return one(ActUnmapped, d.Rule+"'s grant has admin access in Directus without allow_admin")
		}
		if d.Deny {
			return one(ActUnmapped, "no rule grants access for scopes "+fmt.Sprint(rec.Scopes))
		}
		g := m.Resolve(d)
		p.grant = g
		have := u.PolicyIDs()
		sort.Strings(have)
		actual := g.Role == u.Role && slices.Equal(have, g.Policies)
		switch {
		case actual:
		case g.Role != rec.Role || !samePolicies(rec.Policies, g.Policies):
			out = one(ActRemap, fmt.Sprintf("%s now grants role %s", d.Rule, m.RoleName(g.Role)))
		case rc.Drift == DriftRestore:
			out = one(ActRestore, fmt.Sprintf("role %s (policies %v) in Directus, bridge grants %s (%v)", u.Role, have, g.Role, g.Policies))
		default:
			out = one(ActDrift, fmt.Sprintf("role %s (policies %v) in Directus, bridge grants %s (%v)", u.Role, have, g.Role, g.Policies))
		}
	}
	return revoke()
}

// batchSize bounds the ids of one batch request.
const batchSize = 200

// apply carries out the plans in as few requests as it can: identical
// changes share one PATCH /users. Each batch holds the users' locks and
// re-checks every plan against the state, so that a token an exchange has
// just issued is never revoked or overwritten.
func (e *Exchanger) apply(ctx context.Context, plans []plan, rep *Report) error {
	written := map[string]uint64{} // the revision this run left each record at
	groups := map[string][]plan{}
	var order []string
	for _, p := range plans {
		key := p.action
		if p.action == ActRemap || p.action == ActRestore {
			have := p.user.PolicyIDs()
			sort.Strings(have)
			if slices.Equal(have, p.grant.Policies) {
				key += "/role:" + p.grant.Role // batchable: only the role changes
			} else {
				key += "/user:" + p.user.ID // policies differ: one PATCH each
			}
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], p)
	}
	sort.Strings(order)
	for _, key := range order {
		g := groups[key]
		for len(g) > 0 {
			n := min(len(g), batchSize)
			if err := e.applyBatch(ctx, g[:n], rep, written); err != nil {
				return err
			}
			g = g[n:]
		}
	}
	return nil
}

func (e *Exchanger) applyBatch(ctx context.Context, batch []plan, rep *Report, written map[string]uint64) error {
	ids := make([]string, len(batch))
	for i, p := range batch {
		ids[i] = p.user.ID
	}
	unlock, err := e.store.Lock(ctx, ids...)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	defer unlock()
	now := e.now()
	var keep []plan
	for _, p := range batch {
		rec, known := e.store.Get(p.user.ID)
		// An exchange ran since the plan was made: leave the user to it.
		if known != p.known || (known && (rec.rev != p.rec.rev && rec.rev != written[rec.UserID] || !rec.LastExchange.Equal(p.rec.LastExchange))) {
			rep.Skipped++
			continue
		}
		p.rec = rec // the latest record: an earlier batch of this run may have changed it
		keep = append(keep, p)
	}
	if len(keep) == 0 {
		return nil
	}
	action := keep[0].action
	ids = ids[:0]
	for _, p := range keep {
		ids = append(ids, p.user.ID)
	}
	var cursor int64 // the activity log's position before a suspension
	if err := e.fence(ctx); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	switch action {
	case ActRevoke:
		err = e.directus.UpdateUsers(ctx, ids, directus.UserChange{Token: directus.Ptr("")})
	case ActSuspend, ActUnmapped:
		if cursor, err = e.directus.LastActivityID(ctx, directus.CollectionUsers); err != nil {
			return fmt.Errorf("reconcile: %s: %w", action, err)
		}
		err = e.directus.UpdateUsers(ctx, ids, directus.UserChange{Token: directus.Ptr(""), Status: directus.Ptr("suspended")})
	case ActDelete:
		err = e.directus.DeleteUsers(ctx, ids)
	case ActRemap, ActRestore:
		p := keep[0]
		add, remove := policyDiff(p.user.Access, p.grant.Policies)
		if len(add) == 0 && len(remove) == 0 {
			err = e.directus.UpdateUsers(ctx, ids, directus.UserChange{Role: &p.grant.Role})
		} else {
			var u directus.User
			u, err = e.directus.UpdateUser(ctx, p.user.ID, directus.UserChange{Role: &p.grant.Role, AddPolicies: add, RemoveAccess: remove})
			if errors.Is(err, directus.ErrNotFound) {
				err = nil
			}
			keep[0].user.Access = u.Access
		}
	case ActDrift, ActNoticed, ActGone:
		// No Directus request: reported, or recorded below.
	}
	if err != nil {
		if !definite(err) {
			// Directus may have applied it: the next exchange of each user
			// reads it first. A suspension of the bridge's may be in force.
			var recs []Record
			for _, p := range keep {
				if !p.known {
					continue
				}
				r := p.rec
				r.Unsure = true
				if action == ActSuspend || action == ActUnmapped {
					r.SuspendedByBridge, r.SuspendedAt, r.SuspendedCursor = true, now, cursor
				}
				recs = append(recs, r)
			}
			if perr := e.store.PutAll(recs); perr != nil {
				err = errors.Join(err, perr)
			}
		}
		return fmt.Errorf("reconcile: %s: %w", action, err)
	}
	var recs []Record
	for _, p := range keep {
		rep.add(p)
		e.log.Info("reconcile", "event", "reconcile", "action", p.action, "user_id", p.user.ID,
			"client", p.user.ExternalIdentifier, "detail", p.detail)
		if !p.known {
			continue
		}
		r := p.rec
		switch p.action {
		case ActRevoke:
			r.tokensCleared()
		case ActSuspend, ActUnmapped:
			r.tokensCleared()
			r.SuspendedByBridge, r.SuspendedAt, r.SuspendedCursor = true, now, cursor
		case ActRemap, ActRestore:
			r.Role, r.Policies = p.grant.Role, p.user.Access
		case ActDelete, ActGone:
			r.gone()
		case ActNoticed:
			r.SuspendedByAdmin = true
		default:
			continue
		}
		recs = append(recs, r)
	}
	if err := e.store.PutAll(recs); err != nil {
		e.unsureAfterConflict(recs, err)
		return fmt.Errorf("reconcile: %w", err)
	}
	for _, r := range recs {
		if cur, ok := e.store.Get(r.UserID); ok {
			written[r.UserID] = cur.rev
		}
	}
	return nil
}

// missingUsers plans ActGone for every record whose user the listing did not
// show and a read by id confirms is gone (the listing skips users without
// an external identifier).
func (e *Exchanger) missingUsers(ctx context.Context, seen map[string]bool) ([]plan, error) {
	var ids []string
	for _, r := range e.store.All() {
		if !seen[r.UserID] && !r.Gone {
			ids = append(ids, r.UserID)
		}
	}
	sort.Strings(ids)
	var out []plan
	for len(ids) > 0 {
		n := min(len(ids), readBatch)
		found, err := e.directus.ListUsers(ctx, directus.UserFilter{IDs: ids[:n]}, n, 0)
		if err != nil {
			return nil, err
		}
		there := map[string]bool{}
		for _, u := range found {
			there[u.ID] = true
		}
		for _, id := range ids[:n] {
			if rec, ok := e.store.Get(id); ok && !there[id] {
				out = append(out, plan{user: directus.User{ID: id, ExternalIdentifier: rec.Client}, rec: rec, known: true,
					action: ActGone, detail: "deleted in Directus; created again at the client's next exchange"})
			}
		}
		ids = ids[n:]
	}
	return out, nil
}

// readBatch bounds the ids of one read by id.
const readBatch = 100
