package bridge

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// offlineRules exercise every condition a rule can have.
var offlineRules = mapping.Rules{
	{Name: "blocked", Client: "legacy-*", Deny: true},
	{Name: "ops", Claims: map[string]string{"team": "ops*"}, AnyScopes: []string{"items:write"}, Role: "Writers"},
	{Name: "writers", Issuer: "supertokens", AllScopes: []string{"items:write"}, Role: "Writers", Policies: []string{"Audit", "Extra"}},
	{Name: "partners", Audience: "partner-api", Role: "Readers"},
	{Name: "readers", AnyScopes: []string{"items:read", "my_service#read"}, Role: "Readers", Policies: []string{"Audit"}},
}

// offlineInputs is every combination of a few values of each input field.
func offlineInputs() []mapping.Input {
	var ins []mapping.Input
	scopes := []string{"items:read", "items:write", "my_service#read", "other"}
	for _, iss := range []string{"", "auth0", "supertokens"} {
		for _, client := range []string{"", "svc@clients", "legacy-app"} {
			for _, aud := range [][]string{nil, {"api"}, {"api", "partner-api"}} {
				for _, claims := range []map[string][]string{nil, {"team": {"core"}}, {"team": {"core", "ops-eu"}}} {
					for mask := range 1 << len(scopes) {
						var sc []string
						for i, s := range scopes {
							if mask&(1<<i) != 0 {
								sc = append(sc, s)
							}
						}
						ins = append(ins, mapping.Input{Issuer: iss, Client: client, Audiences: aud, Scopes: sc, Claims: claims})
					}
				}
			}
		}
	}
	return ins
}

// The offline mapper decides exactly as the one checked against Directus,
// reasons included, for every input: only names are not resolved.
func TestOfflineMapperDecidesAsOnline(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	dc, err := directus.New(fake.URL, fake.AdminToken, directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	audit, _ := dc.CreatePolicy(ctx, directus.Policy{Name: "Audit"})
	_, _ = dc.CreatePolicy(ctx, directus.Policy{Name: "Extra"})
	_, _ = dc.CreateRole(ctx, directus.Role{Name: "Writers"})
	_, _ = dc.CreateRole(ctx, directus.Role{Name: "Readers", Policies: []string{audit.ID}})
	online, _, err := LoadMapper(ctx, dc, offlineRules)
	if err != nil {
		t.Fatal(err)
	}
	fake.ResetRequests()
	offline, err := NewOfflineMapper(offlineRules)
	if err != nil {
		t.Fatal(err)
	}
	if n := fake.Requests(); n != 0 {
		t.Errorf("the offline mapper sent %d requests to Directus", n)
	}
	if !offline.Offline() || online.Offline() {
		t.Errorf("Offline(): offline %v, online %v", offline.Offline(), online.Offline())
	}
	ins := offlineInputs()
	outcomes := map[string]int{}
	for _, in := range ins {
		want, got := online.Evaluate(in), offline.Evaluate(in)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("input %+v: offline decision differs (-online +offline):\n%s", in, diff)
		}
		if diff := cmp.Diff(online.Decide(in), offline.Decide(in)); diff != "" {
			t.Fatalf("input %+v: offline Decide differs (-online +offline):\n%s", in, diff)
		}
		outcomes[got.Rule]++
	}
	// Every rule and deny by default were reached, or the comparison
	// proves less than it claims.
	for _, r := range append([]string{""}, "rule 1 (blocked)", "rule 2 (ops)", "rule 3 (writers)", "rule 4 (partners)", "rule 5 (readers)") {
		if outcomes[r] == 0 {
			t.Errorf("no input decided by %q (outcomes %v)", r, outcomes)
		}
	}
}

// The offline mapper refuses the rules the online one refuses without
// asking Directus, and resolves no names: a grant from it has no ids.
func TestOfflineMapperValidatesAndResolvesNothing(t *testing.T) {
	_, err := NewOfflineMapper(mapping.Rules{{Name: "no-role"}, {Name: "bad", Client: `x\`, Role: "R"}})
	if err == nil {
		t.Fatal("invalid rules accepted")
	}
	for _, want := range []string{"rule 1 (no-role): needs a role", `rule 2 (bad): client pattern "x\\"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	m, err := NewOfflineMapper(offlineRules)
	if err != nil {
		t.Fatal(err)
	}
	d := m.Evaluate(mapping.Input{Scopes: []string{"items:read"}})
	if d.Deny || d.Role != "Readers" {
		t.Fatalf("decision %+v, want readers", d)
	}
	if g := m.Resolve(d); g.Role != "" || len(g.Policies) != 0 {
		t.Errorf("offline grant %+v, want no ids", g)
	}
	if m.BlockedCount() != 0 {
		t.Errorf("offline mapper blocks %d rules", m.BlockedCount())
	}
}

// The one thing the offline mapper cannot know: a rule whose role has
// admin access in Directus without allow_admin denies online (blocked) and
// grants offline. mappings explain -offline says so.
func TestOfflineMapperCannotSeeAdminAccess(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	dc, err := directus.New(fake.URL, fake.AdminToken, directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	admin, _ := dc.CreatePolicy(ctx, directus.Policy{Name: "Everything", AdminAccess: true})
	_, _ = dc.CreateRole(ctx, directus.Role{Name: "Root", Policies: []string{admin.ID}})
	rules := mapping.Rules{{Name: "root", Role: "Root"}}
	online, _, err := LoadMapper(ctx, dc, rules)
	var adminErr *AdminAccessError
	if !errors.As(err, &adminErr) || online == nil {
		t.Fatalf("LoadMapper: %v, mapper %v; want a usable mapper and an admin access error", err, online != nil)
	}
	offline, err := NewOfflineMapper(rules)
	if err != nil {
		t.Fatal(err)
	}
	in := mapping.Input{Client: "svc"}
	if d := online.Evaluate(in); !d.Deny || !d.Blocked {
		t.Errorf("online: %+v, want blocked", d)
	}
	if d := offline.Evaluate(in); d.Deny || d.Blocked || d.Role != "Root" {
		t.Errorf("offline: %+v, want the rule to grant Root", d)
	}
}
