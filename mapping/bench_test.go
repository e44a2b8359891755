package mapping

// Benchmarks of what every exchange costs the rules: scope
// normalisation and Rules.Evaluate over a realistic set of 20 rules.
//
//	go test -run '^$' -bench . -benchmem ./mapping

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
)

// benchRules are 20 rules of the kinds a deployment writes: per-service
// rules with client globs and scope conditions, claim conditions, issuer-
// and audience-bound rules, deny rules, and a catch-all reader at the end.
func benchRules() Rules {
	var rs Rules
	services := []string{"billing", "orders", "catalog", "search", "mailer", "reports", "audit", "media"}
	for _, s := range services {
		rs = append(rs, Rule{
			Name: s + "-writers", Issuer: "auth0", Audience: "directus",
			Client: "svc-" + s + "-*", AllScopes: []string{s + ":read"}, AnyScopes: []string{s + ":write", s + ":admin"},
			Role: s + " editor", Policies: []string{"audit log"},
		})
	}
	for _, s := range services[:4] {
		rs = append(rs, Rule{
			Name: s + "-team", Claims: map[string]string{"groups": "team-" + s + "-*"},
			AllScopes: []string{"items:write"}, Role: s + " team",
		})
	}
	rs = append(rs,
		Rule{Name: "no-legacy", Client: "legacy-*", Deny: true},
		Rule{Name: "no-test-clients", Client: "*-test@clients", Deny: true},
		Rule{Name: "st-writers", Issuer: "supertokens", AllScopes: []string{"items:write"}, Role: "st writer"},
		Rule{Name: "st-readers", Issuer: "supertokens", AnyScopes: []string{"items:read", "files:read"}, Role: "st reader"},
		Rule{Name: "org-acme", Claims: map[string]string{"org": "acme-*"}, AnyScopes: []string{"items:read"}, Role: "acme reader"},
		Rule{Name: "writers", AllScopes: []string{"items:write", "items:read"}, Role: "writer"},
		Rule{Name: "readers", AnyScopes: []string{"items:read", "my_service#read"}, Role: "reader"},
		Rule{Name: "everyone-else", Deny: true, Client: "*"},
	)
	return rs
}

// normalise is what the bridge does to a token's scope claim and a request's
// scope parameter before the rules see them: split on white space, sort,
// drop duplicates.
func normalise(scope string) []string {
	s := strings.Fields(scope)
	sort.Strings(s)
	return slices.Compact(s)
}

func BenchmarkEvaluate(b *testing.B) {
	rs := benchRules()
	if err := rs.Validate(); err != nil {
		b.Fatal(err)
	}
	if len(rs) != 20 {
		b.Fatalf("%d rules, want 20", len(rs))
	}
	claims := map[string][]string{
		"gty": {"client-credentials"}, "azp": {"abc123"}, "groups": {"eng", "ops"}, "org": {"globex"},
	}
	for _, c := range []struct {
		name  string
		in    Input
		index int // of the rule that must match
	}{
		{"first-rule", Input{Issuer: "auth0", Audiences: []string{"directus"}, Client: "svc-billing-eu@clients",
			Scopes: normalise("billing:read billing:write"), Claims: claims}, 0},
		{"first-rule-raw", Input{Issuer: "auth0", Audiences: []string{"directus"}, Client: "svc-billing-eu@clients",
			Scopes: normalise("billing:read billing:write"), Raw: benchRaw()}, 0},
		{"rule-19", Input{Issuer: "auth0", Audiences: []string{"directus"}, Client: "svc-orders-eu@clients",
			Scopes: normalise("items:read my_service#read"), Claims: claims}, 18},
		{"deny-at-end", Input{Issuer: "auth0", Audiences: []string{"directus"}, Client: "svc-x@clients",
			Scopes: normalise("profile email"), Claims: claims}, 19},
	} {
		b.Run(c.name, func(b *testing.B) {
			if d := rs.Evaluate(c.in); d.Index != c.index {
				b.Fatalf("matched rule %d (%s), want %d", d.Index, d.Rule, c.index)
			}
			b.ReportAllocs()
			for b.Loop() {
				rs.Evaluate(c.in)
			}
		})
	}
}

// benchRaw are the raw claims of a Keycloak-style token, as the bridge
// decodes them.
func benchRaw() map[string]any {
	groups := make([]any, 20)
	for i := range groups {
		groups[i] = fmt.Sprintf("team-%d", i)
	}
	return map[string]any{
		"gty": "client-credentials", "azp": "directus", "groups": groups, "org": "globex",
		"realm_access":    map[string]any{"roles": []any{"offline_access", "uma_authorization", "admin"}},
		"resource_access": map[string]any{"directus": map[string]any{"roles": []any{"viewer", "editor"}}},
		"kubernetes.io":   map[string]any{"namespace": "prod", "serviceaccount": map[string]any{"name": "api"}},
		"repository_id":   json.Number("123456789012"),
	}
}

// BenchmarkClaimConditions is the cost of claim paths and CEL conditions:
// the 20 rules with their first rule (the one that matches) given one more
// kind of condition, against the same rule without it ("simple").
func BenchmarkClaimConditions(b *testing.B) {
	in := Input{Issuer: "auth0", Audiences: []string{"directus"}, Client: "svc-billing-eu@clients",
		Scopes: normalise("billing:read billing:write"), Raw: benchRaw()}
	for _, c := range []struct {
		name string
		edit func(r *Rule)
	}{
		{"simple", func(r *Rule) {}},
		{"claim-name", func(r *Rule) { r.Claims = map[string]string{"org": "glob*"} }},
		{"claim-paths", func(r *Rule) {
			r.Claims = map[string]string{"/realm_access/roles": "admin", "/resource_access/directus/roles": "edit*",
				"/kubernetes.io/serviceaccount/name": "api"}
		}},
		{"claim-number", func(r *Rule) { r.Claims = map[string]string{"repository_id": "123456789012"} }},
		{"cel-membership", func(r *Rule) { r.Condition = `"admin" in claims.realm_access.roles && claims.azp == "directus"` }},
		{"cel-nested", func(r *Rule) {
			r.Condition = `"editor" in claims.resource_access[claims.azp].roles && claims["kubernetes.io"].namespace == "prod"`
		}},
		{"cel-exists-20", func(r *Rule) { r.Condition = `claims.groups.exists(g, g.endsWith("-19"))` }},
		{"cel-number", func(r *Rule) { r.Condition = `claims.repository_id == 123456789012` }},
	} {
		rs := benchRules()
		c.edit(&rs[0])
		if err := rs.Validate(); err != nil {
			b.Fatal(err)
		}
		if d := rs.Evaluate(in); d.Index != 0 {
			b.Fatalf("%s: matched rule %d (%s), want 0: %v", c.name, d.Index, d.Rule, d.Reasons)
		}
		for _, mode := range []struct {
			name string
			f    func(Input) Decision
		}{{"decide", rs.Decide}, {"evaluate", rs.Evaluate}} {
			b.Run(c.name+"/"+mode.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					mode.f(in)
				}
			})
		}
	}
}

// BenchmarkNormaliseAndEvaluate is the mapping step of one exchange of an
// Auth0-style token whose rule is near the end: normalise the scope string,
// then evaluate.
func BenchmarkNormaliseAndEvaluate(b *testing.B) {
	rs := benchRules()
	scope := "my_service#read items:read profile items:read openid"
	claims := map[string][]string{"gty": {"client-credentials"}, "groups": {"eng"}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		in := Input{Issuer: "auth0", Audiences: []string{"directus"}, Client: fmt.Sprintf("svc-%d@clients", i%64),
			Scopes: normalise(scope), Claims: claims}
		if d := rs.Evaluate(in); d.Deny {
			b.Fatalf("denied: %v", d.Reasons)
		}
		i++
	}
}

// BenchmarkNormalise is the scope normalisation alone.
func BenchmarkNormalise(b *testing.B) {
	scope := "my_service#read items:read profile items:read openid items:write files:read"
	b.ReportAllocs()
	for b.Loop() {
		normalise(scope)
	}
}
