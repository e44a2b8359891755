package bridge

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// humanAdmin is a Directus administrator other than the bridge's user, so
// that its changes show in the activity log under another user.
func (h *harness) humanAdmin() *directus.Client {
	h.t.Helper()
	c, err := directus.New(h.fake.URL, h.fake.NewAdmin(), directus.Options{Retries: -1})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) watch() int {
	h.t.Helper()
	n, err := h.ex.Watch(context.Background())
	if err != nil {
		h.t.Fatalf("Watch: %v", err)
	}
	return n
}

func TestWatchNoticesAdminSuspension(t *testing.T) {
	h := newHarness(t, "12.4.0")
	admin := h.humanAdmin()
	h.watch() // the starting point
	const clients = 50
	for i := range clients {
		if r := h.exchange(h.auth0Token(fmt.Sprintf("w-%d", i), "items:read")); r.Status != 200 {
			t.Fatalf("exchange: %d %v", r.Status, r.Body)
		}
	}
	if _, err := admin.UpdateUser(context.Background(), idOf("w-7"), directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	h.fake.ResetRequests()
	if n := h.watch(); n != 1 {
		t.Errorf("Watch changed %d records, want 1", n)
	}
	// One read of the log and one of the changed user, whatever the number
	// of clients.
	if n := h.fake.Requests(); n != 2 {
		t.Errorf("Watch made %d Directus requests for one change among %d clients, want 2 (%v)", n, clients, h.fake.RequestsBy())
	}
	if r := h.exchange(h.auth0Token("w-7", "items:read")); r.Status != 400 || r.str("error") != "unauthorized_client" {
		t.Errorf("suspended client after Watch: %d %v, want 400 unauthorized_client", r.Status, r.Body)
	}
	if u := h.user(idOf("w-7")); u.Status != "suspended" {
		t.Errorf("the bridge changed the administrator's suspension: %s", u.Status)
	}
	// Returning clients still cost nothing.
	h.fake.ResetRequests()
	for i := range 5 {
		h.exchange(h.auth0Token(fmt.Sprintf("w-%d", i), "items:read"))
	}
	if n := h.fake.Requests(); n != 0 {
		t.Errorf("returning clients made %d Directus requests", n)
	}
	// The administrator reactivates: Watch notices, the client gets a
	// working token.
	if _, err := admin.UpdateUser(context.Background(), idOf("w-7"), directus.UserChange{Status: directus.Ptr("active")}); err != nil {
		t.Fatal(err)
	}
	h.watch()
	if r := h.exchange(h.auth0Token("w-7", "items:read")); r.Status != 200 || !h.tokenWorks(r.str("access_token")) {
		t.Errorf("after reactivation: %d %v", r.Status, r.Body)
	}
}

func TestWatchRepairsDeletion(t *testing.T) {
	h := newHarness(t, "11.17.4")
	admin := h.humanAdmin()
	h.watch()
	h.exchange(h.auth0Token("deleted", "items:read"))
	if err := admin.DeleteUsers(context.Background(), []string{idOf("deleted")}); err != nil {
		t.Fatal(err)
	}
	h.watch()
	r := h.exchange(h.auth0Token("deleted", "items:read"))
	if r.Status != 200 || !h.tokenWorks(r.str("access_token")) {
		t.Fatalf("after deletion: %d %v (token works %v)", r.Status, r.Body, h.tokenWorks(r.str("access_token")))
	}
	if u := h.user(idOf("deleted")); u.Role != h.reader.ID {
		t.Errorf("recreated user role %s, want Reader", u.Role)
	}
}

func TestWatchHandEdits(t *testing.T) {
	h := newHarness(t, "12.4.0")
	admin := h.humanAdmin()
	h.watch()
	tok := h.exchange(h.auth0Token("edited", "items:read")).str("access_token")
	ctx := context.Background()
	if _, err := admin.UpdateUser(ctx, idOf("edited"), directus.UserChange{Role: &h.writer.ID, AddPolicies: []string{h.extra.ID}}); err != nil {
		t.Fatal(err)
	}
	h.watch()
	r := h.exchange(h.auth0Token("edited", "items:read"))
	if r.Status != 200 || r.str("access_token") != tok || !h.tokenWorks(tok) {
		t.Fatalf("after a hand edit: %d %v; want the same, working token", r.Status, r.Body)
	}
	if u := h.user(idOf("edited")); u.Role != h.reader.ID || len(u.Access) != 0 {
		t.Errorf("after the next exchange: role %s policies %v, want Reader and none", u.Role, u.PolicyIDs())
	}
	// A token set by hand is replaced by the bridge's own.
	if _, err := admin.UpdateUser(ctx, idOf("edited"), directus.UserChange{Token: directus.Ptr("set-by-hand")}); err != nil {
		t.Fatal(err)
	}
	h.watch()
	r = h.exchange(h.auth0Token("edited", "items:read"))
	if r.Status != 200 || !h.tokenWorks(r.str("access_token")) || h.tokenWorks("set-by-hand") {
		t.Errorf("after a token set by hand: %d %v", r.Status, r.Body)
	}
}

// The watcher's position survives a restart: a change made while the bridge
// was down is noticed by the next run.
func TestWatchResumesAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	key := make([]byte, 32)
	var store *Store
	h := newHarness(t, "12.4.0", func(h *harness, o *Options) {
		var err error
		if store, err = OpenStore(path, key); err != nil {
			t.Fatal(err)
		}
		o.Store = store
	})
	admin := h.humanAdmin()
	h.watch()
	h.exchange(h.auth0Token("down", "items:read"))
	store.Close()
	if _, err := admin.UpdateUser(context.Background(), idOf("down"), directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenStore(path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	o := h.opts
	o.Store = s2
	ex, err := NewExchanger(o)
	if err != nil {
		t.Fatal(err)
	}
	ex.SetMapper(h.ex.Mapper())
	if n, err := ex.Watch(context.Background()); err != nil || n != 1 {
		t.Fatalf("Watch after restart = %d, %v; want the suspension noticed", n, err)
	}
	if rec, _ := s2.Get(idOf("down")); !rec.SuspendedByAdmin {
		t.Errorf("suspension not recorded: %+v", rec)
	}
}

func TestReconcileNoticesDeletion(t *testing.T) {
	h := newHarness(t, "12.4.0")
	h.exchange(h.auth0Token("gone", "items:read"))
	if err := h.admin.DeleteUsers(context.Background(), []string{idOf("gone")}); err != nil {
		t.Fatal(err)
	}
	rep := h.reconcile(ReconcileConfig{}, false)
	if rep.Actions[ActGone] != 1 {
		t.Errorf("actions %v, want one %s", rep.Actions, ActGone)
	}
	if r := h.exchange(h.auth0Token("gone", "items:read")); r.Status != 200 || !h.tokenWorks(r.str("access_token")) {
		t.Errorf("after reconcile: %d %v", r.Status, r.Body)
	}
}

// A policy attached through /access directly (Directus logs only a
// directus_access row) is noticed, and the next exchange detaches it.
func TestWatchNoticesAccessRows(t *testing.T) {
	h := newHarness(t, "12.4.0")
	admin := h.humanAdmin()
	h.watch()
	tok := h.exchange(h.auth0Token("direct", "items:read")).str("access_token")
	ctx := context.Background()
	if _, err := admin.AttachPolicy(ctx, idOf("direct"), h.extra.ID); err != nil {
		t.Fatal(err)
	}
	if n := h.watch(); n != 1 {
		t.Errorf("Watch changed %d records, want 1", n)
	}
	r := h.exchange(h.auth0Token("direct", "items:read"))
	if r.Status != 200 || r.str("access_token") != tok {
		t.Fatalf("exchange: %d %v, want the same token", r.Status, r.Body)
	}
	if u := h.user(idOf("direct")); len(u.Access) != 0 {
		t.Errorf("policies after the next exchange: %v, want none", u.PolicyIDs())
	}
	// The same for a row deleted by hand: the record notices it.
	h.setRules(mapping.Rules{{Name: "readers", AnyScopes: []string{"items:read"}, Role: "Reader", Policies: []string{"extra"}}})
	h.exchange(h.auth0Token("direct", "items:read"))
	u := h.user(idOf("direct"))
	if len(u.Access) != 1 {
		t.Fatalf("setup: policies %v", u.PolicyIDs())
	}
	if err := admin.DeleteAccess(ctx, u.Access[0].ID); err != nil {
		t.Fatal(err)
	}
	if n := h.watch(); n != 1 {
		t.Errorf("Watch after a deleted row changed %d records, want 1", n)
	}
	h.exchange(h.auth0Token("direct", "items:read"))
	if u := h.user(idOf("direct")); len(u.Access) != 1 || u.Access[0].Policy != h.extra.ID {
		t.Errorf("policies after the next exchange: %v, want [extra]", u.PolicyIDs())
	}
}
