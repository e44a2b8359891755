package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// ownChanges keeps the changes for the given users (the Directus under test
// also holds machine users of other tests).
func ownChanges(rep *bridge.Report, ids ...string) map[string]string {
	out := map[string]string{}
	for _, c := range rep.Changes { // sorted by user, then action
		if slices.Contains(ids, c.UserID) {
			if out[c.UserID] != "" {
				out[c.UserID] += "+"
			}
			out[c.UserID] += c.Action
		}
	}
	return out
}

func TestReconcile(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		ctx := context.Background()
		f := newFixture(t, d)
		// Tokens live 3s; the bridge's own revoker is slowed down so that the
		// reconciler is what revokes them here.
		b := startBridge(t, f, bridge.TokenConfig{TTL: bridge.Duration(3 * time.Second), RotateBefore: bridge.Duration(time.Second),
			RevokeInterval: bridge.Duration(time.Hour)}, bridge.UserConfig{})
		auth0 := stack.IdP.Issuers["auth0"]
		clients := map[string]string{} // role in the test -> client id
		subjects := map[string]string{}
		for _, name := range []string{"expiring", "remapped", "stale", "suspended", "edited"} {
			id, secret := auth0.registerClient(t, "", "items:read", 600)
			clients[name] = id + "@clients"
			subjects[name] = auth0.token(t, id, secret, "", "")
			if r := b.exchange(t, subjects[name], ""); r.status != 200 {
				t.Fatalf("exchange %s: %d %v", name, r.status, r.body)
			}
		}
		uid := func(name string) string { return userID(clients[name]) }
		ids := []string{uid("expiring"), uid("remapped"), uid("stale"), uid("suspended"), uid("edited")}
		if _, err := f.admin.UpdateUser(ctx, uid("suspended"), directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.admin.UpdateUser(ctx, uid("edited"), directus.UserChange{Role: &f.writer.ID}); err != nil {
			t.Fatal(err)
		}
		m, _, err := bridge.LoadMapper(ctx, f.admin, mapping.Rules{
			{Name: "promoted", Client: clients["remapped"], Role: f.writer.Name},
			{Name: "readers", AnyScopes: []string{"items:read"}, Role: f.reader.Name},
		})
		if err != nil {
			t.Fatal(err)
		}
		b.ex.SetMapper(m)
		time.Sleep(4 * time.Second) // every token is past its 3s TTL

		rc := bridge.ReconcileConfig{SuspendAfter: bridge.Duration(time.Hour)}
		dry, err := b.ex.Reconcile(ctx, rc, true)
		if err != nil {
			t.Fatal(err)
		}
		if u, _ := f.admin.User(ctx, uid("expiring")); !u.HasToken {
			t.Fatalf("the dry run changed Directus")
		}
		real, err := b.ex.Reconcile(ctx, rc, false)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(dry.Changes, real.Changes); diff != "" {
			t.Errorf("the run did not do what the dry run planned (-dry +run):\n%s", diff)
		}
		want := map[string]string{
			uid("expiring"): bridge.ActRevoke, uid("stale"): bridge.ActRevoke,
			uid("suspended"): bridge.ActNoticed + "+" + bridge.ActRevoke,
			uid("remapped"):  bridge.ActRemap + "+" + bridge.ActRevoke, uid("edited"): bridge.ActRestore + "+" + bridge.ActRevoke,
		}
		if diff := cmp.Diff(want, ownChanges(real, ids...)); diff != "" {
			t.Errorf("actions (-want +got):\n%s", diff)
		}
		for name, role := range map[string]string{"remapped": f.writer.ID, "edited": f.reader.ID} {
			if u, _ := f.admin.User(ctx, uid(name)); u.Role != role {
				t.Errorf("%s: role %s, want %s", name, u.Role, role)
			}
		}
		if u, _ := f.admin.User(ctx, uid("expiring")); u.HasToken {
			t.Errorf("expired token not revoked")
		}
		// Nothing left to do for our users.
		again, err := b.ex.Reconcile(ctx, rc, false)
		if err != nil || len(ownChanges(again, ids...)) != 0 {
			t.Errorf("second run: %v, %v", ownChanges(again, ids...), err)
		}

		// Idle clients are suspended; a returning one is reactivated, the
		// one an admin suspended is not.
		time.Sleep(1100 * time.Millisecond)
		rep, err := b.ex.Reconcile(ctx, bridge.ReconcileConfig{SuspendAfter: bridge.Duration(time.Second)}, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := ownChanges(rep, uid("stale"))[uid("stale")]; got != bridge.ActSuspend {
			t.Errorf("stale client: action %q, want suspend", got)
		}
		if u, _ := f.admin.User(ctx, uid("stale")); u.Status != "suspended" {
			t.Errorf("stale client status %s", u.Status)
		}
		r := b.exchange(t, subjects["stale"], "")
		if r.status != 200 || raw(t, d, r.token(), "GET", "/users/me", nil, nil) != 200 {
			t.Errorf("returning stale client: %d %v", r.status, r.body)
		}
		if r := b.exchange(t, subjects["suspended"], ""); r.status != 400 || r.code() != "unauthorized_client" {
			t.Errorf("admin-suspended client: %d %v", r.status, r.body)
		}
		if u, _ := f.admin.User(ctx, uid("suspended")); u.Status != "suspended" {
			t.Errorf("admin-suspended client reactivated: %s", u.Status)
		}
	})
}
