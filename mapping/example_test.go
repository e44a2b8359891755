package mapping_test

import (
	"fmt"

	"github.com/directus-bridge/directus-bridge/mapping"
)

// exampleRules are these rules of the configuration file:
//
//	rules:
//	  - name: billing-writers
//	    issuer: corp
//	    audience: directus
//	    client: "svc-billing-*"
//	    all_scopes: [billing.read]
//	    any_scopes: [billing.write, billing.admin]
//	    claims:
//	      groups: "payments-*"
//	    role: Billing Editor
//	    policies: [Audit Log]
//	  - name: no-legacy
//	    client: "legacy-*"
//	    deny: true
//	  - name: everyone-else
//	    role: Viewer
var exampleRules = mapping.Rules{
	{
		Name:      "billing-writers",
		Issuer:    "corp",
		Audience:  "directus",
		Client:    "svc-billing-*",
		AllScopes: []string{"billing.read"},
		AnyScopes: []string{"billing.write", "billing.admin"},
		Claims:    map[string]string{"groups": "payments-*"},
		Role:      "Billing Editor",
		Policies:  []string{"Audit Log"},
	},
	{
		Name:   "no-legacy",
		Client: "legacy-*",
		Deny:   true,
	},
	{
		Name: "everyone-else",
		Role: "Viewer",
	},
}

// The first rule whose every condition holds decides. Here the client, the
// scopes and the groups claim (a list: one element matching is enough) all
// satisfy "billing-writers".
func ExampleRules_Evaluate() {
	d := exampleRules.Evaluate(mapping.Input{
		Issuer:    "corp",
		Audiences: []string{"directus", "api"},
		Client:    "svc-billing-eu",
		Scopes:    []string{"billing.read", "billing.write", "profile"},
		Claims:    map[string][]string{"groups": {"eng", "payments-eu"}},
	})
	fmt.Println("rule:", d.Rule)
	fmt.Println("role:", d.Role)
	fmt.Println("policies:", d.Policies)
	fmt.Println("counted scopes:", d.Counted)
	// Output:
	// rule: rule 1 (billing-writers)
	// role: Billing Editor
	// policies: [Audit Log]
	// counted scopes: [billing.read billing.write]
}

// A deny rule matches like any other rule but grants nothing. Reasons say
// why each earlier rule did not match.
func ExampleRules_Evaluate_deny() {
	d := exampleRules.Evaluate(mapping.Input{
		Issuer:    "corp",
		Audiences: []string{"directus"},
		Client:    "legacy-reports",
	})
	fmt.Println("deny:", d.Deny, "by", d.Rule)
	for _, r := range d.Reasons {
		fmt.Println("skipped", r)
	}
	// Output:
	// deny: true by rule 2 (no-legacy)
	// skipped rule 1 (billing-writers): client "legacy-reports" does not match "svc-billing-*"
}

// Without a catch-all, a token no rule matches is refused: deny by default.
func ExampleRules_Evaluate_noMatch() {
	rules := exampleRules[:2] // without "everyone-else"
	d := rules.Evaluate(mapping.Input{
		Issuer:    "corp",
		Audiences: []string{"directus"},
		Client:    "svc-billing-eu",
		Scopes:    []string{"billing.read"},
	})
	fmt.Println("matched:", d.Matched, "index:", d.Index, "deny:", d.Deny)
	for _, r := range d.Reasons {
		fmt.Println(r)
	}
	// Output:
	// matched: false index: -1 deny: true
	// rule 1 (billing-writers): none of the scopes billing.write billing.admin
	// rule 2 (no-legacy): client "svc-billing-eu" does not match "legacy-*"
}

// Validate reports every problem at once; run it when loading the
// configuration.
func ExampleRules_Validate() {
	rules := mapping.Rules{
		{Name: "catch-all", Role: "Viewer"},
		{Name: "billing", Client: "svc-billing-*", Role: "Billing Editor"},
		{Name: "blocked", Client: `legacy\`, Deny: true, Role: "Viewer"},
	}
	fmt.Println(rules.Validate())
	fmt.Println(exampleRules.Validate())
	// Output:
	// mapping: rule 2 (billing): never matches: rule 1 (catch-all) matches every token it does; rule 3 (blocked): deny rules grant nothing: remove role and policies; rule 3 (blocked): client pattern "legacy\\" ends in an unfinished escape; rule 3 (blocked): never matches: rule 1 (catch-all) matches every token it does
	// <nil>
}

// Patterns are globs in which '/' is an ordinary character, so one '*'
// spans a whole SPIFFE path or URL.
func ExampleGlob() {
	fmt.Println(mapping.Glob("svc-*", "svc-billing"))
	fmt.Println(mapping.Glob("spiffe://example.org/*", "spiffe://example.org/ns/prod/sa/billing"))
	fmt.Println(mapping.Glob("svc-??", "svc-eu"))
	fmt.Println(mapping.Glob(`svc-\*`, "svc-billing"))
	fmt.Println(mapping.Glob(`svc-\*`, "svc-*"))
	// Output:
	// true
	// true
	// true
	// false
	// true
}

// Nested claims are named with JSON Pointers, and a CEL condition says
// what globs cannot. Raw claims are the token's, numbers as json.Number.
func ExampleRules_Explain() {
	rules := mapping.Rules{{
		Name:      "keycloak-editors",
		Issuer:    "keycloak",
		Claims:    map[string]string{"/realm_access/roles": "admin"},
		Condition: `"editor" in claims.resource_access[client].roles`,
		Role:      "Editor",
	}}
	if err := rules.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	in := mapping.Input{Issuer: "keycloak", Client: "directus-app", Raw: map[string]any{
		"realm_access":    map[string]any{"roles": []any{"admin"}},
		"resource_access": map[string]any{"other-app": map[string]any{"roles": []any{"editor"}}},
	}}
	d := rules.Explain(in)
	for _, c := range d.Trace[0].Checks {
		fmt.Println(c.Held, c.Condition, "-", c.Detail)
	}
	fmt.Println("matched:", d.Matched)
	// Output:
	// true issuer - issuer is "keycloak"
	// true claims./realm_access/roles - claim /realm_access/roles matches "admin"
	// false condition - condition does not hold: no such key: directus-app
	// matched: false
}
