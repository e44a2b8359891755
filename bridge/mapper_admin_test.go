package bridge

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// setAdminAccess flips a policy's admin flag in the fake, as an
// administrator does in the Directus app.
func (h *harness) setAdminAccess(policyID string, admin bool) {
	h.t.Helper()
	body := `{"admin_access":false}`
	if admin {
		body = `{"admin_access":true}`
	}
	req, _ := http.NewRequest(http.MethodPatch, h.fake.URL+"/policies/"+policyID, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.fake.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		h.t.Fatalf("PATCH policy: %v %v", resp, err)
	}
	resp.Body.Close()
}

// A policy that gains admin access in Directus after the rules loaded is no
// longer handed out: the rule denies (other rules keep working), its users
// lose their tokens at the next reconcile run, a reload keeps working, and
// the rule grants again once the access is removed.
func TestAdminAccessGainedLaterIsWithheld(t *testing.T) {
	h := newHarness(t, "12.4.0")
	if r := h.exchange(h.auth0Token("writer", "items:write")); r.Status != 200 {
		t.Fatalf("writer: %d %v", r.Status, r.Body)
	}
	h.setAdminAccess(h.extra.ID, true)
	rep := h.reconcile(ReconcileConfig{}, false)
	if len(rep.BlockedRules) != 1 || !strings.Contains(rep.BlockedRules[0], "admin access") {
		t.Fatalf("blocked rules %v, want the writers rule", rep.BlockedRules)
	}
	if rep.Actions[ActUnmapped] != 1 {
		t.Errorf("actions %v, want the writer unmapped", rep.Actions)
	}
	if u := h.user(idOf("writer")); u.HasToken || u.Status != "suspended" {
		t.Errorf("writer after the run: status %s, token %v", u.Status, u.HasToken)
	}
	r := h.exchange(h.auth0Token("writer", "items:write"))
	if r.Status != 400 || r.str("error") != "invalid_scope" || !strings.Contains(r.str("error_description"), "admin access") {
		t.Errorf("writer while withheld: %d %v", r.Status, r.Body)
	}
	if r := h.exchange(h.auth0Token("reader", "items:read")); r.Status != 200 {
		t.Errorf("another rule stopped working: %d %v", r.Status, r.Body)
	}
	if !strings.Contains(h.logs.String(), "gained admin access") {
		t.Errorf("the change was not logged loudly")
	}
	// A reload loads, with the rule denying.
	m, _, err := LoadMapper(context.Background(), h.admin, h.ex.Mapper().Rules)
	var adminErr *AdminAccessError
	if !errors.As(err, &adminErr) || m == nil || m.BlockedCount() != 1 {
		t.Fatalf("reload: %v (mapper %v)", err, m != nil)
	}
	if d := m.Decide(mapping.Input{Scopes: []string{"items:write"}}); !d.Deny || !d.Blocked {
		t.Errorf("decision of the blocked rule: %+v", d)
	}
	h.ex.SetMapper(m)
	// The administrator removes the admin access: the rule grants again.
	h.setAdminAccess(h.extra.ID, false)
	if rep := h.reconcile(ReconcileConfig{}, false); len(rep.BlockedRules) != 0 {
		t.Errorf("still blocked: %v", rep.BlockedRules)
	}
	if r := h.exchange(h.auth0Token("writer", "items:write")); r.Status != 200 || !h.tokenWorks(r.str("access_token")) {
		t.Errorf("writer after the fix: %d %v", r.Status, r.Body)
	}
}

// The re-check must not be turned off by an unrelated change in Directus (a
// second role with the name a rule uses): the rule whose policy became admin
// is still withheld.
func TestAdminRecheckSurvivesAnAmbiguousName(t *testing.T) {
	h := newHarness(t, "12.4.0")
	if r := h.exchange(h.auth0Token("writer", "items:write")); r.Status != 200 {
		t.Fatalf("writer: %d %v", r.Status, r.Body)
	}
	if _, err := h.admin.CreateRole(context.Background(), directus.Role{Name: "Reader"}); err != nil {
		t.Fatal(err)
	}
	h.setAdminAccess(h.extra.ID, true)
	if rep := h.reconcile(ReconcileConfig{}, false); len(rep.BlockedRules) != 1 {
		t.Errorf("blocked rules %v, want the writers rule", rep.BlockedRules)
	}
	if r := h.exchange(h.auth0Token("writer2", "items:write")); r.Status == 200 {
		t.Errorf("a new writer still gets a grant with admin access")
	}
	if r := h.exchange(h.auth0Token("reader", "items:read")); r.Status != 200 {
		t.Errorf("the readers rule (ids in force) stopped working: %d %v", r.Status, r.Body)
	}
}
