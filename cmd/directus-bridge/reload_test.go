package main

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
)

func TestChangedKeysAndRestart(t *testing.T) {
	a := Config{Listen: ":8080", Tokens: bridge.TokenConfig{TTL: bridge.Duration(time.Minute)},
		Directus: DirectusConfig{URL: "http://d"}, Issuers: []bridge.IssuerConfig{{Name: "a"}}}
	b := a
	b.Listen = ":9090"
	b.Tokens.TTL = bridge.Duration(2 * time.Minute)
	b.Directus.URL = "http://e"
	b.Issuers = []bridge.IssuerConfig{{Name: "b"}}
	b.Reconcile.WatchInterval = bridge.Duration(time.Second)
	got := changedKeys(a, b)
	want := []string{"listen", "directus.url", "tokens.ttl", "issuers", "reconcile.watch_interval"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("changedKeys = %v, want %v", got, want)
	}
	for k, restart := range map[string]bool{"admin.listen": true, "admin.token_env": true, "listen": true, "directus.url": true, "tokens.ttl": false, "issuers": false,
		"reconcile.watch_interval": true, "reconcile.schedule": false, "limits.per_ip.rate": false, "users.namespace": true} {
		if needsRestart(k) != restart {
			t.Errorf("needsRestart(%s) = %v, want %v", k, !restart, restart)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// A reload that changes admin.* names them as needing a restart and keeps
// them; the reconcile settings it applies are the ones the admin listener's
// runs use, and a refused schedule keeps the settings in force.
func TestReloadAdminIsRestartOnlyAndReconcileSettingsReachTheReconciler(t *testing.T) {
	e := newServeEnv(t)
	cfg, err := loadValid(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ex, err := wire(ctx, cfg, log, bridge.NewMemoryStore(), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	rec := bridge.NewReconciler(ex, cfg.Reconcile)
	sched, err := newReconcileSchedule(ctx, rec, cfg.Reconcile, log)
	if err != nil {
		t.Fatal(err)
	}
	defer sched.stop()
	r := &reloader{ex: ex, dc: ex.Directus(), sched: sched, log: log, cur: cfg}

	next := *cfg
	next.Admin = AdminConfig{Listen: "127.0.0.1:9", TokenEnv: "OTHER_ADMIN_TOKEN"}
	next.Reconcile.SuspendAfter = bridge.Duration(time.Hour)
	r.apply(ctx, &next)
	if l := logs.String(); !strings.Contains(l, "need a restart") || !strings.Contains(l, "admin.listen") || !strings.Contains(l, "admin.token_env") {
		t.Errorf("the admin change was not named as needing a restart:\n%s", l)
	}
	if r.cur.Admin != cfg.Admin {
		t.Errorf("admin in force after the reload: %+v, want %+v", r.cur.Admin, cfg.Admin)
	}
	if got := rec.Config().SuspendAfter; got != bridge.Duration(time.Hour) {
		t.Errorf("suspend_after for admin runs after the reload: %v, want 1h", got)
	}

	bad := next
	bad.Reconcile.Schedule = "not a schedule"
	bad.Reconcile.SuspendAfter = bridge.Duration(2 * time.Hour)
	r.apply(ctx, &bad)
	if got := rec.Config(); got.SuspendAfter != bridge.Duration(time.Hour) || got.Schedule != next.Reconcile.Schedule {
		t.Errorf("after a refused schedule the reconciler has %+v, want the settings in force before", got)
	}
}
