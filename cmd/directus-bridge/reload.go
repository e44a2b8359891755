package main

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/robfig/cron/v3"

	"github.com/directus-bridge/directus-bridge/bridge"
)

// restartOnly are the settings a running server cannot change: the
// listener, its TLS files and trusted proxies, the state file and its key,
// the Directus connection, how machine users are named, logging, the
// watcher's interval, and the admin listener and its token. A reload names
// them when they changed and leaves them as they were.
var restartOnly = []string{"listen", "tls", "trusted_proxies", "state", "directus", "users", "log", "reconcile.watch_interval", "admin", "proxy"}

// changedKeys lists the YAML paths (top level, and one level into structs)
// whose values differ between a and b.
func changedKeys(a, b any) []string {
	var out []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	t := va.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "" || name == "-" {
			continue
		}
		x, y := va.Field(i), vb.Field(i)
		if reflect.DeepEqual(x.Interface(), y.Interface()) {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() != "time" {
			for _, k := range changedKeys(x.Interface(), y.Interface()) {
				out = append(out, name+"."+k)
			}
			continue
		}
		out = append(out, name)
	}
	return out
}

// needsRestart reports whether key (a changedKeys path) is restart-only.
func needsRestart(key string) bool {
	for _, r := range restartOnly {
		if key == r || strings.HasPrefix(key, r+".") {
			return true
		}
	}
	return false
}

// reloader applies changed configuration files to a running server.
type reloader struct {
	ex    *bridge.Exchanger
	dc    bridge.Directus
	sched *reconcileSchedule
	log   *slog.Logger
	mu    sync.Mutex
	cur   *Config // what is in force
}

// apply puts next in force as far as a running server can: issuers
// (removed ones distrusted at once), tokens, limits and reconcile settings
// take effect at once; the rules are checked against Directus first and kept
// when that fails. Restart-only settings that changed are named in an error
// and stay as they were. It returns whether anything was applied.
func (r *reloader) apply(ctx context.Context, next *Config) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cur
	keys := changedKeys(*old, *next)
	var restart, applied []string
	for _, k := range keys {
		if needsRestart(k) {
			restart = append(restart, k)
		}
	}
	// What is in force afterwards: next, with the restart-only settings as
	// they were.
	inForce := *next
	inForce.Listen, inForce.TLS, inForce.TrustedProxies = old.Listen, old.TLS, old.TrustedProxies
	inForce.State, inForce.Directus, inForce.Users, inForce.Log = old.State, old.Directus, old.Users, old.Log
	inForce.Admin = old.Admin
	inForce.Reconcile.WatchInterval = old.Reconcile.WatchInterval

	if !reflect.DeepEqual(old.Issuers, next.Issuers) {
		added, removed, changed, err := r.ex.SetIssuers(next.Issuers)
		if err != nil {
			r.log.Error("reload refused: the issuers and everything else in force stay", "err", err)
			return false
		}
		r.log.Info("issuers reloaded", "added", added, "removed", removed, "changed", changed)
		applied = append(applied, "issuers")
	}
	if !reflect.DeepEqual(old.Tokens, next.Tokens) {
		r.ex.SetTokens(next.Tokens)
		applied = append(applied, "tokens")
	}
	if !reflect.DeepEqual(old.Limits, next.Limits) {
		r.ex.SetLimits(next.Limits)
		applied = append(applied, "limits")
	}
	if !reflect.DeepEqual(old.Reconcile, inForce.Reconcile) {
		if err := r.sched.update(inForce.Reconcile); err != nil {
			r.log.Error("reload: reconcile settings refused, the ones in force stay", "err", err)
			inForce.Reconcile = old.Reconcile
		} else {
			applied = append(applied, "reconcile")
		}
	}
	m, warnings, err := bridge.LoadMapper(ctx, r.dc, next.Rules)
	var adminErr *bridge.AdminAccessError
	if errors.As(err, &adminErr) && m != nil {
		// Only some rules hand out admin access (a role or policy changed
		// in Directus, or a rule without allow_admin): those deny, the
		// others are in force.
		r.log.Error("rules reloaded, but these rules deny: their grant has admin access without allow_admin", "err", err)
		err = nil
	}
	if err != nil {
		r.log.Error("reload: the rules could not be checked against Directus; the rules in force stay", "err", err)
		inForce.Rules = old.Rules
	} else {
		for _, w := range warnings {
			r.log.Warn(w)
		}
		r.ex.SetMapper(m)
		applied = append(applied, "rules")
	}
	if len(restart) > 0 {
		r.log.Error("reload: these settings need a restart and are NOT in force", "keys", strings.Join(restart, ", "))
	}
	r.log.Info("configuration reloaded", "applied", strings.Join(slices.Compact(applied), ", "),
		"rules", len(inForce.Rules), "blocked", r.ex.Mapper().BlockedCount())
	r.cur = &inForce
	return len(applied) > 0
}

// reconcileSchedule runs the reconciler on the schedule in force: runs never
// overlap (nor with those asked for on the admin listener: a scheduled run
// due while one is in progress is skipped), a panic is recovered and
// logged, and a reload may change the schedule and the settings, which it
// puts in force in rec.
type reconcileSchedule struct {
	ctx  context.Context
	rec  *bridge.Reconciler
	log  *slog.Logger
	cron *cron.Cron
	mu   sync.Mutex
	rc   bridge.ReconcileConfig
	id   cron.EntryID
	on   bool
}

func newReconcileSchedule(ctx context.Context, rec *bridge.Reconciler, rc bridge.ReconcileConfig, log *slog.Logger) (*reconcileSchedule, error) {
	cl := cronLogger{log}
	s := &reconcileSchedule{ctx: ctx, rec: rec, log: log,
		cron: cron.New(cron.WithChain(cron.Recover(cl), cron.SkipIfStillRunning(cl)), cron.WithLogger(cl))}
	if err := s.update(rc); err != nil {
		return nil, err
	}
	s.cron.Start()
	return s, nil
}

// update puts rc in force, for the scheduled runs and the admin listener's;
// a changed schedule replaces the cron entry. When it fails (a bad
// schedule) the settings in force stay.
func (s *reconcileSchedule) update(rc bridge.ReconcileConfig) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.on && rc.Schedule == s.rc.Schedule {
		s.rc = rc
		s.rec.SetConfig(rc)
		return nil
	}
	var id cron.EntryID
	if rc.Schedule != "off" {
		var err error
		if id, err = s.cron.AddFunc(rc.Schedule, s.run); err != nil {
			return err
		}
	}
	if s.on && s.id != 0 {
		s.cron.Remove(s.id)
	}
	s.rc, s.id, s.on = rc, id, true
	s.rec.SetConfig(rc)
	return nil
}

func (s *reconcileSchedule) run() {
	rep, ran, err := s.rec.TryRun(s.ctx, false)
	if !ran {
		s.log.Info("scheduled reconcile skipped: another run is in progress", "event", "reconcile_run")
		return
	}
	if errors.Is(err, bridge.ErrNotLeader) {
		s.log.Debug("scheduled reconcile skipped: another replica holds the jobs lease", "event", "reconcile_run")
		return
	}
	if err != nil {
		s.log.Warn("reconcile failed; the next run picks up", "err", err)
		return
	}
	s.log.Info("reconcile done", "event", "reconcile_run", "scanned", rep.Scanned, "managed", rep.Managed,
		"changes", len(rep.Changes), "skipped", rep.Skipped, "actions", rep.Actions, "duration", rep.Duration)
}

// stop stops the schedule and waits for a run in progress.
func (s *reconcileSchedule) stop() { <-s.cron.Stop().Done() }
