package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// seedBatch is how many users one POST /users creates while seeding, and
// seedParallel how many such requests run at once.
const (
	seedBatch    = 500
	seedParallel = 2
)

// recRow is one reconciler measurement.
type recRow struct {
	name     string
	requests int64
	wall     time.Duration
	detail   string
	target   func(r recRow) verdict // nil: no target
}

type reconcileReport struct {
	users    int
	seed     time.Duration
	seedReqs int
	rows     []recRow
	check    string
	cleanup  time.Duration
}

// reconcileRows seeds cfg.users machine users into e's Directus and the
// bridge's state, measures the reconciler and the revoker on them, and
// deletes them.
func reconcileRows(ctx context.Context, stderr io.Writer, cfg config, e *env) (rep *reconcileReport, err error) {
	rep = &reconcileReport{users: cfg.users}
	n, c := cfg.users, cfg.changes
	// Its own namespace and names: the exchange rows' users are not part of it.
	ns := uuid.New()
	prefix := "bridge-bench-" + e.run + "-rec-"
	// Clients r-* get another role in the role-change row; the tokens of
	// a-* expire for the reconciler, those of b-* for the revoker; k-* stay.
	kind := func(i int) string {
		switch {
		case i < c:
			return "r"
		case i < 2*c:
			return "a"
		case i < 3*c:
			return "b"
		}
		return "k"
	}
	now := time.Now()
	aud := e.st.IdP.Issuers["auth0"].Audience
	recs := make([]bridge.Record, n)
	users := make([]map[string]any, n)
	ids := make([]string, n)
	for i := range n {
		client := fmt.Sprintf("%s%s-%05d", prefix, kind(i), i)
		id := bridge.UserID(ns, nil, client)
		ids[i] = id
		// As the exchange records them: no claims (no rule looks at one), no
		// extra policy.
		recs[i] = bridge.Record{UserID: id, Issuer: "auth0", Client: client, Scopes: []string{"items:read"},
			Audiences: []string{aud}, Role: e.reader.ID, LastExchange: now}
		users[i] = map[string]any{"id": id, "status": "active", "role": e.reader.ID, "external_identifier": client,
			"first_name": "External", "last_name": "Client", "last_access": now.UTC().Format("2006-01-02T15:04:05.000Z")}
		if k := kind(i); k == "a" || k == "b" {
			tok := "dbr_" + randomToken()
			recs[i].Token, recs[i].Expiry = tok, now.Add(15*time.Minute)
			users[i]["token"] = tok
		}
	}

	// Seed Directus, as admin, seedBatch users per POST /users.
	progress(stderr, "%s: seeding %d machine users", e.d.Name, n)
	var seeded []string
	defer func() {
		progress(stderr, "%s: deleting %d seeded users", e.d.Name, len(seeded))
		t0 := time.Now()
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if derr := e.admin.deleteUsers(cctx, seeded, seedBatch); derr != nil && err == nil {
			err = fmt.Errorf("cleanup: %w", derr)
		}
		rep.cleanup = time.Since(t0)
	}()
	t0 := time.Now()
	var mu sync.Mutex
	var seedErr error
	var wg sync.WaitGroup
	batches := make(chan int)
	for range seedParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range batches {
				j := min(i+seedBatch, n)
				err := e.admin.do(ctx, "POST", "/users?fields=id", users[i:j], nil)
				mu.Lock()
				if err != nil && seedErr == nil {
					seedErr = fmt.Errorf("seed users: %w", err)
				}
				if err == nil {
					seeded = append(seeded, ids[i:j]...)
					rep.seedReqs++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i += seedBatch {
		batches <- i
	}
	close(batches)
	wg.Wait()
	if seedErr != nil {
		return rep, seedErr
	}
	rep.seed = time.Since(t0)
	users = nil

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	store, err := bridge.OpenStore(filepath.Join(e.dir, "reconcile.db"), key)
	if err != nil {
		return rep, err
	}
	defer store.Close()
	if err := store.PutAll(recs); err != nil {
		return rep, err
	}

	cnt := newCounter(e.idleConns)
	dc, err := directus.New(e.d.URL, e.d.AdminToken, directus.Options{Transport: cnt, Timeout: time.Minute})
	if err != nil {
		return rep, err
	}
	ex, err := bridge.NewExchanger(bridge.Options{
		Issuers: e.issuers, Users: bridge.UserConfig{Namespace: ns.String()}, Directus: dc, Store: store,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		return rep, err
	}
	setRules := func(rules mapping.Rules) error {
		m, _, err := bridge.LoadMapper(ctx, dc, rules)
		if err == nil {
			ex.SetMapper(m)
		}
		return err
	}
	if err := setRules(e.rules); err != nil {
		return rep, err
	}
	rc := bridge.ReconcileConfig{Schedule: "off"}
	ours := func(r *bridge.Report) map[string]int {
		out := map[string]int{}
		for _, ch := range r.Changes {
			if strings.HasPrefix(ch.Client, prefix) {
				out[ch.Action]++
			}
		}
		return out
	}
	reconcile := func(name string, want map[string]int, target func(recRow) verdict) error {
		progress(stderr, "%s: reconcile: %s", e.d.Name, name)
		before := cnt.reqs.Load()
		t0 := time.Now()
		r, err := ex.Reconcile(ctx, rc, false)
		row := recRow{name: name, requests: cnt.reqs.Load() - before, wall: time.Since(t0), target: target}
		if err != nil {
			return fmt.Errorf("reconcile (%s): %w", name, err)
		}
		got := ours(r)
		row.detail = fmt.Sprintf("scanned %d, managed %d, actions %s", r.Scanned, r.Managed, actions(got))
		if other := len(r.Changes) - sum(got); other > 0 {
			row.detail += fmt.Sprintf(" (+%d on other users)", other)
		}
		rep.rows = append(rep.rows, row)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("reconcile (%s): actions on the seeded users %v, want %v", name, got, want)
		}
		return nil
	}
	within := func(maxReqs int64, maxWall time.Duration) func(recRow) verdict {
		return func(r recRow) verdict {
			v := verdict{ok: r.requests <= maxReqs && (maxWall == 0 || r.wall < maxWall),
				got: fmt.Sprintf("%d requests, %s", r.requests, r.wall.Round(time.Millisecond))}
			v.what = fmt.Sprintf("reconcile %s: at most %d requests", r.name, maxReqs)
			if maxWall > 0 {
				v.what += " and under " + maxWall.String()
			}
			var miss []string
			if r.requests > maxReqs {
				miss = append(miss, fmt.Sprintf("%d requests over", r.requests-maxReqs))
			}
			if maxWall > 0 && r.wall >= maxWall {
				miss = append(miss, fmt.Sprintf("%s over", (r.wall-maxWall).Round(time.Millisecond)))
			}
			v.miss = strings.Join(miss, ", ")
			return v
		}
	}

	label := func(format string) string { return fmt.Sprintf(format, n, c) }
	if err := reconcile(label("%[1]d users, nothing to do"), map[string]int{}, within(20, 10*time.Second)); err != nil {
		return rep, err
	}

	// The a-* tokens expire: the reconciler revokes them.
	expire := func(k string) error {
		past := time.Now().Add(-time.Minute)
		var batch []bridge.Record
		for i := range recs {
			if kind(i) == k {
				r, _ := store.Get(recs[i].UserID)
				r.Expiry = past
				batch = append(batch, r)
			}
		}
		return store.PutAll(batch)
	}
	if err := expire("a"); err != nil {
		return rep, err
	}
	if err := reconcile(label("%[1]d users, %[2]d expired tokens"), map[string]int{bridge.ActRevoke: c}, within(20, 0)); err != nil {
		return rep, err
	}

	// The b-* tokens expire: the revoker (every revoke_interval) clears them.
	if err := expire("b"); err != nil {
		return rep, err
	}
	progress(stderr, "%s: revoker: %d expired tokens", e.d.Name, c)
	before := cnt.reqs.Load()
	t0 = time.Now()
	revoked, err := ex.RevokeExpired(ctx)
	row := recRow{name: label("revoker, %[2]d expired tokens"), requests: cnt.reqs.Load() - before, wall: time.Since(t0),
		detail: fmt.Sprintf("%d revoked", revoked), target: within(20, 0)}
	rep.rows = append(rep.rows, row)
	if err != nil {
		return rep, fmt.Errorf("revoke: %w", err)
	}
	if revoked != c {
		return rep, fmt.Errorf("revoker revoked %d tokens, want %d", revoked, c)
	}

	// The rules now give the r-* clients the writer role.
	if err := setRules(append(mapping.Rules{{Name: "promoted", Client: prefix + "r-*", Role: e.writer.Name}}, e.rules...)); err != nil {
		return rep, err
	}
	if err := reconcile(label("%[1]d users, %[2]d role changes"), map[string]int{bridge.ActRemap: c}, nil); err != nil {
		return rep, err
	}
	if err := reconcile(label("%[1]d users, nothing to do (after the changes)"), map[string]int{}, within(20, 10*time.Second)); err != nil {
		return rep, err
	}

	// Directus agrees: no seeded user holds a token, the r-* have the writer role.
	withToken, err := e.countUsers(ctx, map[string]any{"_and": []any{
		map[string]any{"external_identifier": map[string]any{"_starts_with": prefix}},
		map[string]any{"token": map[string]any{"_nnull": true}}}})
	if err != nil {
		return rep, err
	}
	writers, err := e.countUsers(ctx, map[string]any{"role": map[string]any{"_eq": e.writer.ID}})
	if err != nil {
		return rep, err
	}
	rep.check = fmt.Sprintf("checked in Directus afterwards: %d seeded users hold a token (want 0), %d have the new role (want %d)", withToken, writers, c)
	if withToken != 0 || writers != c {
		return rep, fmt.Errorf("%s", rep.check)
	}
	return rep, nil
}

// countUsers counts users matching a Directus filter.
func (e *env) countUsers(ctx context.Context, filter map[string]any) (int, error) {
	f, _ := json.Marshal(filter)
	var out []struct {
		ID string `json:"id"`
	}
	q := url.Values{"filter": {string(f)}, "fields": {"id"}, "limit": {"-1"}}
	if err := e.admin.do(ctx, "GET", "/users?"+q.Encode(), nil, &out); err != nil {
		return 0, err
	}
	return len(out), nil
}

func randomToken() string {
	return randomHex(24)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func actions(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func (r *reconcileReport) print(w io.Writer, cfg config) {
	fmt.Fprintf(w, "\n### Reconciler (%d seeded machine users; page size 1000, batches of 200)\n\n", r.users)
	fmt.Fprintln(w, "| run | Directus requests | wall time | what it did |")
	fmt.Fprintln(w, "|---|---:|---:|---|")
	for _, row := range r.rows {
		fmt.Fprintf(w, "| %s | %d | %s | %s |\n", row.name, row.requests, row.wall.Round(time.Millisecond), row.detail)
	}
	fmt.Fprintf(w, "\nseeding: %d users in %d POST /users (%d at a time) in %s; deleting them: %s", r.users, r.seedReqs,
		seedParallel, r.seed.Round(time.Millisecond), r.cleanup.Round(time.Millisecond))
	if r.check != "" {
		fmt.Fprintf(w, "\n%s", r.check)
	}
	fmt.Fprintln(w)
}

func (r *reconcileReport) verdicts(cfg config) []verdict {
	var out []verdict
	for _, row := range r.rows {
		if row.target != nil {
			out = append(out, row.target(row))
		}
	}
	return out
}
