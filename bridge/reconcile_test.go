package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

func idOf(client string) string { return uuid.NewSHA1(uuid.Nil, []byte(client)).String() }

func (h *harness) reconcile(rc ReconcileConfig, dry bool) *Report {
	h.t.Helper()
	rep, err := h.ex.Reconcile(context.Background(), rc, dry)
	if err != nil {
		h.t.Fatalf("Reconcile: %v", err)
	}
	return rep
}

func (h *harness) setRules(rules mapping.Rules) {
	h.t.Helper()
	m, _, err := LoadMapper(context.Background(), h.admin, rules)
	if err != nil {
		h.t.Fatal(err)
	}
	h.ex.SetMapper(m)
}

func TestReconcileNothingToDo(t *testing.T) {
	h := newHarness(t, "12.4.0")
	for i := range 5 {
		h.exchange(h.auth0Token(fmt.Sprintf("idle-%d", i), "items:read"))
	}
	h.fake.ResetRequests()
	rep := h.reconcile(ReconcileConfig{PageSize: 2}, false)
	if rep.Managed != 5 || len(rep.Changes) != 0 {
		t.Errorf("report: managed %d, changes %v; want 5 and none", rep.Managed, rep.Changes)
	}
	// Plus one read each of roles and policies: the admin-access check.
	if got := h.fake.RequestsBy(); got["GET /users"] != 3 || h.fake.Requests() != 5 {
		t.Errorf("requests %v, want 3 page reads, the admin-access check and no write", got)
	}
}

func TestReconcileRevokesAndLeavesOthersAlone(t *testing.T) {
	h := newHarness(t, "12.4.0")
	h.exchange(h.auth0Token("expired", "items:read"))
	ctx := context.Background()
	// A human whose external identifier looks like a client's, with a token.
	human := directus.NewUser{ID: uuid.NewString(), ExternalIdentifier: "expired-too", Token: "human-token-1"}
	if _, err := h.admin.CreateUser(ctx, human); err != nil {
		t.Fatal(err)
	}
	// A machine user (self-certifying id) holding a token the bridge never issued.
	if _, err := h.admin.CreateUser(ctx, directus.NewUser{ID: idOf("orphan"), ExternalIdentifier: "orphan", Token: "orphan-token-1"}); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(16 * time.Minute)
	rep := h.reconcile(ReconcileConfig{}, false)
	want := map[string]int{ActRevoke: 2}
	if diff := cmp.Diff(want, rep.Actions); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	for _, id := range []string{idOf("expired"), idOf("orphan")} {
		if h.user(id).HasToken {
			t.Errorf("user %s still holds a token", id)
		}
	}
	if !h.user(human.ID).HasToken || !h.tokenWorks("human-token-1") {
		t.Errorf("the human user was touched")
	}
	h.fake.ResetRequests()
	if rep := h.reconcile(ReconcileConfig{}, false); len(rep.Changes) != 0 || h.fake.Requests() != 3 {
		t.Errorf("second run: changes %v, %d requests; want none and 3 reads (users, roles, policies)", rep.Changes, h.fake.Requests())
	}
}

func TestReconcileRemapsIdleClients(t *testing.T) {
	h := newHarness(t, "12.4.0")
	for i := range 3 {
		h.exchange(h.auth0Token(fmt.Sprintf("idle-%d", i), "items:read"))
	}
	h.setRules(mapping.Rules{{AnyScopes: []string{"items:read"}, Role: "Writer"}})
	h.fake.ResetRequests()
	rep := h.reconcile(ReconcileConfig{}, false)
	if rep.Actions[ActRemap] != 3 {
		t.Fatalf("actions %v, want 3 remaps", rep.Actions)
	}
	if by := h.fake.RequestsBy(); by["PATCH /users"] != 1 {
		t.Errorf("requests %v, want one batch PATCH for three identical role changes", by)
	}
	for i := range 3 {
		if u := h.user(idOf(fmt.Sprintf("idle-%d", i))); u.Role != h.writer.ID {
			t.Errorf("idle-%d role %s, want Writer", i, u.Role)
		}
	}
	// The clients' live tokens keep working with the new role.
	if rep := h.reconcile(ReconcileConfig{}, false); len(rep.Changes) != 0 {
		t.Errorf("second run: %v", rep.Changes)
	}
	// Rules that grant nothing any more: token cleared and suspended.
	h.setRules(mapping.Rules{{AllScopes: []string{"other"}, Role: "Writer"}})
	rep = h.reconcile(ReconcileConfig{}, false)
	if rep.Actions[ActUnmapped] != 3 {
		t.Fatalf("actions %v, want 3 unmapped", rep.Actions)
	}
	if u := h.user(idOf("idle-0")); u.Status != "suspended" || u.HasToken {
		t.Errorf("unmapped user: status %s token %v", u.Status, u.HasToken)
	}
}

func TestReconcileDrift(t *testing.T) {
	for _, mode := range []string{DriftRestore, DriftReport, DriftKeep} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t, "12.4.0")
			h.exchange(h.auth0Token("drifter", "items:read"))
			if _, err := h.admin.UpdateUser(context.Background(), idOf("drifter"), directus.UserChange{Role: &h.writer.ID}); err != nil {
				t.Fatal(err)
			}
			rep := h.reconcile(ReconcileConfig{Drift: mode}, false)
			wantRole, wantAction := h.writer.ID, ActDrift
			if mode == DriftRestore {
				wantRole, wantAction = h.reader.ID, ActRestore
			}
			if rep.Actions[wantAction] != 1 || len(rep.Changes) != 1 {
				t.Errorf("actions %v, want one %s", rep.Actions, wantAction)
			}
			if got := h.user(idOf("drifter")).Role; got != wantRole {
				t.Errorf("role after run: %s, want %s", got, wantRole)
			}
		})
	}
}

func TestReconcileSuspendsStaleAndExchangeReactivates(t *testing.T) {
	h := newHarness(t, "11.17.4")
	h.exchange(h.auth0Token("stale", "items:read"))
	h.exchange(h.auth0Token("admin-suspended", "items:read"))
	if _, err := h.admin.UpdateUser(context.Background(), idOf("admin-suspended"), directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(31 * 24 * time.Hour)
	rep := h.reconcile(ReconcileConfig{}, false)
	if rep.Actions[ActSuspend] != 1 || rep.Actions[ActRevoke] != 1 || rep.Actions[ActNoticed] != 1 {
		t.Errorf("actions %v, want suspend 1 (stale), and for the admin-suspended one noticed 1 and revoke 1 (expired token)", rep.Actions)
	}
	if rec, _ := h.store.Get(idOf("admin-suspended")); !rec.SuspendedByAdmin {
		t.Errorf("the admin's suspension was not recorded")
	}
	if u := h.user(idOf("stale")); u.Status != "suspended" || u.HasToken {
		t.Errorf("stale user: status %s token %v", u.Status, u.HasToken)
	}
	// The stale client comes back: reactivated with a working token.
	resp := h.exchange(h.auth0Token("stale", "items:read"))
	if resp.Status != 200 || !h.tokenWorks(resp.str("access_token")) || h.user(idOf("stale")).Status != "active" {
		t.Errorf("returning stale client: %d %v", resp.Status, resp.Body)
	}
	// The admin-suspended one is not.
	resp = h.exchange(h.auth0Token("admin-suspended", "items:read"))
	if resp.Status != 400 || h.user(idOf("admin-suspended")).Status != "suspended" {
		t.Errorf("admin-suspended client: %d %v, status %s", resp.Status, resp.Body, h.user(idOf("admin-suspended")).Status)
	}
	// Deletion, when configured, of users the bridge suspended long ago.
	h.clock.Add(2 * time.Hour)
	if rep := h.reconcile(ReconcileConfig{SuspendAfter: Duration(time.Hour)}, false); rep.Actions[ActSuspend] != 1 {
		t.Fatalf("actions %v, want the stale client suspended again", rep.Actions)
	}
	h.clock.Add(48 * time.Hour)
	rep = h.reconcile(ReconcileConfig{SuspendAfter: Duration(time.Hour), DeleteAfter: Duration(24 * time.Hour)}, false)
	if rep.Actions[ActDelete] != 1 {
		t.Errorf("actions %v, want one delete (stale, suspended by the bridge)", rep.Actions)
	}
	if _, err := h.admin.User(context.Background(), idOf("admin-suspended")); err != nil {
		t.Errorf("admin-suspended user was deleted: %v", err)
	}
}

func TestReconcileDryRunPlansWhatRunDoes(t *testing.T) {
	h := newHarness(t, "12.4.0")
	for i := range 4 {
		h.exchange(h.auth0Token(fmt.Sprintf("c-%d", i), "items:read"))
	}
	h.clock.Add(16 * time.Minute)
	h.setRules(mapping.Rules{{AnyScopes: []string{"items:read"}, Role: "Writer"}})
	h.fake.ResetRequests()
	dry := h.reconcile(ReconcileConfig{}, true)
	if n := h.fake.Requests(); n != 3 {
		t.Errorf("dry run made %d requests, want 3 reads (users, roles, policies)", n)
	}
	real := h.reconcile(ReconcileConfig{}, false)
	// Each of the four: a role change and an expired token.
	if diff := cmp.Diff(dry.Changes, real.Changes); diff != "" || len(real.Changes) != 8 {
		t.Errorf("dry-run plan differs from the run (-dry +real):\n%s", diff)
	}
}

func TestReconcileNeverRevokesAFreshToken(t *testing.T) {
	h := newHarness(t, "12.4.0")
	h.exchange(h.auth0Token("racer", "items:read"))
	h.clock.Add(16 * time.Minute)
	// Plan while the token is expired, then let an exchange issue a new one
	// before the batch runs: the batch must skip the user.
	plans := h.ex.planUser(h.user(idOf("racer")), ReconcileConfig{})
	if len(plans) != 1 || plans[0].action != ActRevoke {
		t.Fatalf("plan %+v, want one revoke", plans)
	}
	fresh := h.exchange(h.auth0Token("racer", "items:read")).str("access_token")
	rep := &Report{Actions: map[string]int{}}
	if err := h.ex.applyBatch(context.Background(), plans, rep, map[string]uint64{}); err != nil {
		t.Fatal(err)
	}
	if rep.Skipped != 1 || !h.tokenWorks(fresh) {
		t.Errorf("skipped %d, fresh token works %v; want 1 and true", rep.Skipped, h.tokenWorks(fresh))
	}
}

func TestReconcileNoticesAnAdminSuspension(t *testing.T) {
	h := newHarness(t, "12.4.0")
	subject := h.auth0Token("noticed", "items:read")
	h.exchange(subject)
	if _, err := h.admin.UpdateUser(context.Background(), idOf("noticed"), directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	h.fake.ResetRequests()
	rep := h.reconcile(ReconcileConfig{}, false)
	if diff := cmp.Diff(map[string]int{ActNoticed: 1}, rep.Actions); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	if n, w := h.fake.Requests(), h.fake.Writes(); n != 3 || w != 0 {
		t.Errorf("requests %d (writes %d), want 3 reads: noticing writes nothing to Directus", n, w)
	}
	// The live token is not handed out any more.
	if r := h.exchange(subject); r.Status != 400 || r.str("error") != "unauthorized_client" {
		t.Errorf("exchange after the run: %d %v, want unauthorized_client", r.Status, r.Body)
	}
}
