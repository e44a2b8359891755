package mapping_test

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"gopkg.in/yaml.v3"

	"github.com/directus-bridge/directus-bridge/mapping"
)

// token is a typical verified token as the rules see it; cases change the
// fields they are about.
func token() mapping.Input {
	return mapping.Input{
		Issuer:    "corp",
		Audiences: []string{"directus"},
		Client:    "svc-billing",
		Scopes:    []string{"billing.read", "billing.write"},
		Claims: map[string][]string{
			"team":   {"payments"},
			"groups": {"eng", "ops"},
		},
	}
}

// with returns token() changed by f.
func with(f func(in *mapping.Input)) mapping.Input {
	in := token()
	f(&in)
	return in
}

// granted is the decision for rule i (unnamed) granting role.
func granted(i int, role string, counted ...string) mapping.Decision {
	return mapping.Decision{
		Matched: true,
		Index:   i,
		Rule:    "rule " + string(rune('1'+i)),
		Role:    role,
		Counted: counted,
	}
}

// denied is the decision when no rule matches.
func denied(reasons ...string) mapping.Decision {
	return mapping.Decision{Index: -1, Deny: true, Reasons: reasons}
}

// withReasons adds the reasons of the rules before the match.
func withReasons(d mapping.Decision, reasons ...string) mapping.Decision {
	d.Reasons = reasons
	return d
}

func TestEvaluate(t *testing.T) {
	tests := []struct {
		name  string
		rules mapping.Rules
		in    mapping.Input
		want  mapping.Decision
	}{
		// issuer
		{
			name:  "issuer matches",
			rules: mapping.Rules{{Issuer: "corp", Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor"),
		},
		{
			name:  "issuer differs",
			rules: mapping.Rules{{Issuer: "partner", Role: "Editor"}},
			in:    token(),
			want:  denied(`rule 1: issuer is "corp", rule wants "partner"`),
		},
		{
			name:  "issuer is exact, not a glob",
			rules: mapping.Rules{{Issuer: "c*", Role: "Editor"}},
			in:    token(),
			want:  denied(`rule 1: issuer is "corp", rule wants "c*"`),
		},
		{
			name:  "empty issuer condition holds for any issuer",
			rules: mapping.Rules{{Role: "Editor"}},
			in:    with(func(in *mapping.Input) { in.Issuer = "partner" }),
			want:  granted(0, "Editor"),
		},

		// audience
		{
			name:  "audience exact, only audience",
			rules: mapping.Rules{{Audience: "directus", Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor"),
		},
		{
			name:  "audience one of several",
			rules: mapping.Rules{{Audience: "directus", Role: "Editor"}},
			in:    with(func(in *mapping.Input) { in.Audiences = []string{"api", "directus", "web"} }),
			want:  granted(0, "Editor"),
		},
		{
			name:  "audience missing",
			rules: mapping.Rules{{Audience: "directus", Role: "Editor"}},
			in:    with(func(in *mapping.Input) { in.Audiences = []string{"api", "web"} }),
			want:  denied(`rule 1: audience "directus" not in token`),
		},
		{
			name:  "audience is exact, not a prefix",
			rules: mapping.Rules{{Audience: "directus", Role: "Editor"}},
			in:    with(func(in *mapping.Input) { in.Audiences = []string{"directus-staging"} }),
			want:  denied(`rule 1: audience "directus" not in token`),
		},
		{
			name:  "audience is exact, not a glob",
			rules: mapping.Rules{{Audience: "direct*", Role: "Editor"}},
			in:    token(),
			want:  denied(`rule 1: audience "direct*" not in token`),
		},
		{
			name:  "audience wanted, token has none",
			rules: mapping.Rules{{Audience: "directus", Role: "Editor"}},
			in:    with(func(in *mapping.Input) { in.Audiences = nil }),
			want:  denied(`rule 1: audience "directus" not in token`),
		},

		// client
		{
			name:  "client exact",
			rules: mapping.Rules{{Client: "svc-billing", Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor"),
		},
		{
			name:  "client exact differs",
			rules: mapping.Rules{{Client: "svc-billing", Role: "Editor"}},
			in:    with(func(in *mapping.Input) { in.Client = "svc-billing-2" }),
			want:  denied(`rule 1: client "svc-billing-2" does not match "svc-billing"`),
		},
		{
			name:  "client glob star",
			rules: mapping.Rules{{Client: "svc-*", Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor"),
		},
		{
			name:  "client glob question mark",
			rules: mapping.Rules{{Client: "svc-billin?", Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor"),
		},
		{
			name:  "client glob does not match",
			rules: mapping.Rules{{Client: "app-*", Role: "Editor"}},
			in:    token(),
			want:  denied(`rule 1: client "svc-billing" does not match "app-*"`),
		},
		{
			name:  "client glob with escaped star is literal",
			rules: mapping.Rules{{Client: `svc-\*`, Role: "Editor"}},
			in:    token(),
			want:  denied(`rule 1: client "svc-billing" does not match "svc-\\*"`),
		},

		// all_scopes
		{
			name:  "all_scopes all present",
			rules: mapping.Rules{{AllScopes: []string{"billing.read", "billing.write"}, Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor", "billing.read", "billing.write"),
		},
		{
			name:  "all_scopes subset of token scopes",
			rules: mapping.Rules{{AllScopes: []string{"billing.read"}, Role: "Viewer"}},
			in:    token(),
			want:  granted(0, "Viewer", "billing.read"),
		},
		{
			name:  "all_scopes one missing",
			rules: mapping.Rules{{AllScopes: []string{"billing.read", "billing.admin"}, Role: "Admin"}},
			in:    token(),
			want:  denied(`rule 1: missing scopes billing.admin`),
		},
		{
			name:  "all_scopes several missing, listed in rule order",
			rules: mapping.Rules{{AllScopes: []string{"z.write", "billing.read", "a.read"}, Role: "Admin"}},
			in:    token(),
			want:  denied(`rule 1: missing scopes z.write a.read`),
		},
		{
			name:  "all_scopes token has no scopes",
			rules: mapping.Rules{{AllScopes: []string{"billing.read"}, Role: "Viewer"}},
			in:    with(func(in *mapping.Input) { in.Scopes = nil }),
			want:  denied(`rule 1: missing scopes billing.read`),
		},
		{
			name:  "scopes are exact, not globs",
			rules: mapping.Rules{{AllScopes: []string{"billing.*"}, Role: "Viewer"}},
			in:    token(),
			want:  denied(`rule 1: missing scopes billing.*`),
		},

		// any_scopes
		{
			name:  "any_scopes one present",
			rules: mapping.Rules{{AnyScopes: []string{"billing.admin", "billing.write"}, Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor", "billing.write"),
		},
		{
			name:  "any_scopes several present, all counted",
			rules: mapping.Rules{{AnyScopes: []string{"billing.write", "billing.admin", "billing.read"}, Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor", "billing.read", "billing.write"),
		},
		{
			name:  "any_scopes none present",
			rules: mapping.Rules{{AnyScopes: []string{"billing.admin", "hr.read"}, Role: "Editor"}},
			in:    token(),
			want:  denied(`rule 1: none of the scopes billing.admin hr.read`),
		},
		{
			name: "all_scopes and any_scopes",
			rules: mapping.Rules{{
				AllScopes: []string{"billing.read"},
				AnyScopes: []string{"billing.write", "billing.admin"},
				Role:      "Editor",
			}},
			in:   token(),
			want: granted(0, "Editor", "billing.read", "billing.write"),
		},
		{
			name: "all_scopes present but any_scopes only repeats them",
			rules: mapping.Rules{{
				AllScopes: []string{"billing.read"},
				AnyScopes: []string{"billing.read", "billing.admin"},
				Role:      "Editor",
			}},
			in:   with(func(in *mapping.Input) { in.Scopes = []string{"billing.read"} }),
			want: granted(0, "Editor", "billing.read"),
		},

		// claims
		{
			name:  "claim exact",
			rules: mapping.Rules{{Claims: map[string]string{"team": "payments"}, Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor"),
		},
		{
			name:  "claim exact differs",
			rules: mapping.Rules{{Claims: map[string]string{"team": "pay"}, Role: "Editor"}},
			in:    token(),
			want:  denied(`rule 1: claim team does not match "pay"`),
		},
		{
			name:  "claim glob",
			rules: mapping.Rules{{Claims: map[string]string{"team": "pay*"}, Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor"),
		},
		{
			name:  "claim glob does not match",
			rules: mapping.Rules{{Claims: map[string]string{"team": "*ops"}, Role: "Editor"}},
			in:    token(),
			want:  denied(`rule 1: claim team does not match "*ops"`),
		},
		{
			name:  "list claim, one element matches exactly",
			rules: mapping.Rules{{Claims: map[string]string{"groups": "ops"}, Role: "Operator"}},
			in:    token(),
			want:  granted(0, "Operator"),
		},
		{
			name:  "list claim, one element matches glob",
			rules: mapping.Rules{{Claims: map[string]string{"groups": "o?s"}, Role: "Operator"}},
			in:    token(),
			want:  granted(0, "Operator"),
		},
		{
			name:  "list claim, no element matches",
			rules: mapping.Rules{{Claims: map[string]string{"groups": "admins"}, Role: "Admin"}},
			in:    token(),
			want:  denied(`rule 1: claim groups does not match "admins"`),
		},
		{
			name:  "list claim is not joined into one string",
			rules: mapping.Rules{{Claims: map[string]string{"groups": "eng*ops"}, Role: "Admin"}},
			in:    token(),
			want:  denied(`rule 1: claim groups does not match "eng*ops"`),
		},
		{
			name:  "claim missing from token",
			rules: mapping.Rules{{Claims: map[string]string{"department": "*"}, Role: "Editor"}},
			in:    token(),
			want:  denied(`rule 1: claim department does not match "*"`),
		},
		{
			name:  "claim present but empty list",
			rules: mapping.Rules{{Claims: map[string]string{"groups": "*"}, Role: "Editor"}},
			in:    with(func(in *mapping.Input) { in.Claims["groups"] = []string{} }),
			want:  denied(`rule 1: claim groups does not match "*"`),
		},
		{
			name:  "star matches an empty string claim",
			rules: mapping.Rules{{Claims: map[string]string{"team": "*"}, Role: "Editor"}},
			in:    with(func(in *mapping.Input) { in.Claims["team"] = []string{""} }),
			want:  granted(0, "Editor"),
		},
		{
			name:  "all claims must match",
			rules: mapping.Rules{{Claims: map[string]string{"team": "payments", "groups": "ops"}, Role: "Editor"}},
			in:    token(),
			want:  granted(0, "Editor"),
		},
		{
			name:  "first failing claim in name order is the reason",
			rules: mapping.Rules{{Claims: map[string]string{"zone": "eu", "team": "hr", "groups": "ops"}, Role: "Editor"}},
			in:    token(),
			want:  denied(`rule 1: claim team does not match "hr"`),
		},
		{
			name:  "claims when the token has none",
			rules: mapping.Rules{{Claims: map[string]string{"team": "*"}, Role: "Editor"}},
			in:    with(func(in *mapping.Input) { in.Claims = nil }),
			want:  denied(`rule 1: claim team does not match "*"`),
		},

		// all conditions together
		{
			name: "every condition holds",
			rules: mapping.Rules{{
				Issuer:    "corp",
				Audience:  "directus",
				Client:    "svc-*",
				AllScopes: []string{"billing.read"},
				AnyScopes: []string{"billing.write"},
				Claims:    map[string]string{"team": "payments"},
				Role:      "Editor",
			}},
			in:   token(),
			want: granted(0, "Editor", "billing.read", "billing.write"),
		},
		{
			name: "first failing condition is the reason",
			rules: mapping.Rules{{
				Issuer:    "corp",
				Audience:  "directus",
				Client:    "app-*",
				AllScopes: []string{"billing.admin"},
				Role:      "Editor",
			}},
			in:   token(),
			want: denied(`rule 1: client "svc-billing" does not match "app-*"`),
		},

		// order and outcomes
		{
			name: "first match wins",
			rules: mapping.Rules{
				{Client: "svc-*", Role: "First"},
				{Client: "svc-billing", Role: "Second"},
			},
			in:   token(),
			want: granted(0, "First"),
		},
		{
			name: "later rule matches after earlier ones fail",
			rules: mapping.Rules{
				{Issuer: "partner", Role: "Partner"},
				{AllScopes: []string{"billing.admin"}, Role: "Admin"},
				{AllScopes: []string{"billing.write"}, Role: "Editor"},
				{Role: "Viewer"},
			},
			in: token(),
			want: withReasons(granted(2, "Editor", "billing.write"),
				`rule 1: issuer is "corp", rule wants "partner"`,
				`rule 2: missing scopes billing.admin`,
			),
		},
		{
			name: "explicit deny rule",
			rules: mapping.Rules{
				{Client: "svc-billing", Deny: true},
				{Role: "Viewer"},
			},
			in:   token(),
			want: mapping.Decision{Matched: true, Index: 0, Rule: "rule 1", Deny: true},
		},
		{
			name: "deny rule counts scopes but grants nothing, even if misconfigured",
			rules: mapping.Rules{
				{AllScopes: []string{"billing.write"}, Deny: true, Role: "Admin", Policies: []string{"Everything"}},
			},
			in:   token(),
			want: mapping.Decision{Matched: true, Index: 0, Rule: "rule 1", Deny: true, Counted: []string{"billing.write"}},
		},
		{
			name: "deny rule that does not match is passed over",
			rules: mapping.Rules{
				{Client: "svc-blocked", Deny: true},
				{Role: "Viewer"},
			},
			in:   token(),
			want: withReasons(granted(1, "Viewer"), `rule 1: client "svc-billing" does not match "svc-blocked"`),
		},
		{
			name: "no match denies with a reason for each rule",
			rules: mapping.Rules{
				{Issuer: "partner", Role: "Partner"},
				{Name: "admins", AllScopes: []string{"billing.admin"}, Role: "Admin"},
				{Claims: map[string]string{"team": "hr"}, Role: "HR"},
			},
			in: token(),
			want: denied(
				`rule 1: issuer is "corp", rule wants "partner"`,
				`rule 2 (admins): missing scopes billing.admin`,
				`rule 3: claim team does not match "hr"`,
			),
		},
		{
			name:  "no rules deny everything",
			rules: nil,
			in:    token(),
			want:  denied(),
		},
		{
			name: "catch-all last rule",
			rules: mapping.Rules{
				{Client: "svc-admin", Role: "Admin"},
				{Role: "Viewer", Policies: []string{"Read Only"}},
			},
			in: token(),
			want: mapping.Decision{
				Matched: true, Index: 1, Rule: "rule 2", Role: "Viewer", Policies: []string{"Read Only"},
				Reasons: []string{`rule 1: client "svc-billing" does not match "svc-admin"`},
			},
		},
		{
			name:  "catch-all matches an empty input",
			rules: mapping.Rules{{Role: "Viewer"}},
			in:    mapping.Input{},
			want:  granted(0, "Viewer"),
		},
		{
			name:  "rule name in the decision",
			rules: mapping.Rules{{Name: "billing", Role: "Editor", Policies: []string{"Audit", "Export"}}},
			in:    token(),
			want:  mapping.Decision{Matched: true, Index: 0, Rule: "rule 1 (billing)", Role: "Editor", Policies: []string{"Audit", "Export"}},
		},

		// counted scopes
		{
			name: "counted scopes are sorted and unique",
			rules: mapping.Rules{{
				AllScopes: []string{"write", "read", "write"},
				AnyScopes: []string{"read", "admin", "missing", "admin"},
				Role:      "Editor",
			}},
			in:   with(func(in *mapping.Input) { in.Scopes = []string{"write", "admin", "read", "admin", "extra"} }),
			want: granted(0, "Editor", "admin", "read", "write"),
		},
		{
			name:  "scopes the rule does not name are not counted",
			rules: mapping.Rules{{AnyScopes: []string{"billing.read"}, Role: "Viewer"}},
			in:    with(func(in *mapping.Input) { in.Scopes = []string{"billing.read", "billing.write", "hr.read"} }),
			want:  granted(0, "Viewer", "billing.read"),
		},
		{
			name:  "nothing counted without scope conditions",
			rules: mapping.Rules{{Client: "svc-*", Role: "Viewer"}},
			in:    token(),
			want:  granted(0, "Viewer"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.rules.Evaluate(tt.in)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Evaluate() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEvaluateCopies checks that a decision shares no memory with the rules
// or the input: callers attach the decision to a request and may change it.
func TestEvaluateCopies(t *testing.T) {
	rules := mapping.Rules{{
		AllScopes: []string{"write", "read"},
		AnyScopes: []string{"admin"},
		Role:      "Editor",
		Policies:  []string{"Audit", "Export"},
	}}
	in := mapping.Input{Scopes: []string{"write", "admin", "read"}}
	rulesBefore := cloneRules(rules)
	inBefore := mapping.Input{Scopes: slices.Clone(in.Scopes)}

	d := rules.Evaluate(in)
	if diff := cmp.Diff([]string{"Audit", "Export"}, d.Policies); diff != "" {
		t.Fatalf("Policies mismatch (-want +got):\n%s", diff)
	}
	d.Policies[0] = "Administrator"
	d.Policies = append(d.Policies[:1], "Everything")
	for i := range d.Counted {
		d.Counted[i] = "changed"
	}

	if diff := cmp.Diff(rulesBefore, rules); diff != "" {
		t.Errorf("changing the decision changed the rules (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(inBefore, in); diff != "" {
		t.Errorf("Evaluate changed its input (-before +after):\n%s", diff)
	}
	again := rules.Evaluate(in)
	if diff := cmp.Diff([]string{"Audit", "Export"}, again.Policies); diff != "" {
		t.Errorf("second decision's Policies mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"admin", "read", "write"}, again.Counted); diff != "" {
		t.Errorf("second decision's Counted mismatch (-want +got):\n%s", diff)
	}
}

func cloneRules(rs mapping.Rules) mapping.Rules {
	out := make(mapping.Rules, len(rs))
	for i, r := range rs {
		r.AllScopes = slices.Clone(r.AllScopes)
		r.AnyScopes = slices.Clone(r.AnyScopes)
		r.Policies = slices.Clone(r.Policies)
		if r.Claims != nil {
			c := make(map[string]string, len(r.Claims))
			for k, v := range r.Claims {
				c[k] = v
			}
			r.Claims = c
		}
		out[i] = r
	}
	return out
}

// validateParts splits Validate's error into its problems.
func validateParts(t *testing.T, rs mapping.Rules) []string {
	t.Helper()
	err := rs.Validate()
	if err == nil {
		return nil
	}
	msg, ok := strings.CutPrefix(err.Error(), "mapping: ")
	if !ok {
		t.Errorf("Validate() = %q, want the prefix %q", err, "mapping: ")
	}
	return strings.Split(msg, "; ")
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		rules mapping.Rules
		want  []string // the problems, in order; nil means valid
	}{
		{
			name:  "no rules",
			rules: nil,
		},
		{
			name: "valid rules",
			rules: mapping.Rules{
				{Name: "blocked", Client: "svc-legacy", Deny: true},
				{Issuer: "corp", Client: "svc-billing-*", AllScopes: []string{"billing.read"}, AnyScopes: []string{"billing.write"}, Role: "Editor", Policies: []string{"Audit"}},
				{Issuer: "corp", Claims: map[string]string{"groups": `ops\*`}, Role: "Operator", AllowAdmin: true},
				{Role: "Viewer"},
			},
		},

		// outcome
		{
			name:  "missing role",
			rules: mapping.Rules{{Client: "svc-a"}},
			want:  []string{"rule 1: needs a role (or deny: true)"},
		},
		{
			name:  "policies without a role",
			rules: mapping.Rules{{Client: "svc-a", Policies: []string{"Audit"}}},
			want:  []string{"rule 1: needs a role (or deny: true)"},
		},
		{
			name:  "deny with role",
			rules: mapping.Rules{{Name: "blocked", Client: "svc-a", Deny: true, Role: "Editor"}},
			want:  []string{"rule 1 (blocked): deny rules grant nothing: remove role and policies"},
		},
		{
			name:  "deny with policies",
			rules: mapping.Rules{{Client: "svc-a", Deny: true, Policies: []string{"Audit"}}},
			want:  []string{"rule 1: deny rules grant nothing: remove role and policies"},
		},

		// globs
		{
			name:  "client pattern ends in an escape",
			rules: mapping.Rules{{Client: `svc-\`, Role: "Editor"}},
			want:  []string{`rule 1: client pattern "svc-\\" ends in an unfinished escape`},
		},
		{
			name:  "client pattern ending in an escaped backslash is fine",
			rules: mapping.Rules{{Client: `svc-\\`, Role: "Editor"}},
		},
		{
			name:  "claim pattern ends in an escape",
			rules: mapping.Rules{{Claims: map[string]string{"team": `ops\`}, Role: "Editor"}},
			want:  []string{`rule 1: claim "team" pattern "ops\\" ends in an unfinished escape`},
		},
		{
			name:  "empty claim name",
			rules: mapping.Rules{{Claims: map[string]string{"": "x"}, Role: "Editor"}},
			want:  []string{"rule 1: empty claim name"},
		},

		// scopes
		{
			name:  "empty scope in all_scopes",
			rules: mapping.Rules{{AllScopes: []string{"read", ""}, Role: "Editor"}},
			want:  []string{`rule 1: scope "" is empty or has white space`},
		},
		{
			name:  "scope with a space in any_scopes",
			rules: mapping.Rules{{AnyScopes: []string{"read write"}, Role: "Editor"}},
			want:  []string{`rule 1: scope "read write" is empty or has white space`},
		},
		{
			name:  "scope with a tab and a newline",
			rules: mapping.Rules{{AllScopes: []string{"a\tb"}, AnyScopes: []string{"c\n"}, Role: "Editor"}},
			want: []string{
				`rule 1: scope "a\tb" is empty or has white space`,
				`rule 1: scope "c\n" is empty or has white space`,
			},
		},

		// several at once
		{
			name: "every problem reported at once, in rule order",
			rules: mapping.Rules{
				{Name: "first", Client: `a\`, Deny: true, Role: "Editor"},
				{Claims: map[string]string{"team": `b\`}},
				{Role: "Viewer", AllScopes: []string{""}},
				{Name: "never", Client: "svc-z", Role: "Other"},
			},
			want: []string{
				"rule 1 (first): deny rules grant nothing: remove role and policies",
				`rule 1 (first): client pattern "a\\" ends in an unfinished escape`,
				"rule 2: needs a role (or deny: true)",
				`rule 2: claim "team" pattern "b\\" ends in an unfinished escape`,
				`rule 3: scope "" is empty or has white space`,
			},
		},
		{
			name: "problems and a shadowed rule",
			rules: mapping.Rules{
				{Role: "Viewer"},
				{Client: "svc-z"},
			},
			want: []string{
				"rule 2: needs a role (or deny: true)",
				"rule 2: never matches: rule 1 matches every token it does",
			},
		},

		// shadowed rules
		{
			name: "catch-all before a rule",
			rules: mapping.Rules{
				{Role: "Viewer"},
				{Name: "billing", Client: "svc-billing", Role: "Editor"},
			},
			want: []string{"rule 2 (billing): never matches: rule 1 matches every token it does"},
		},
		{
			name: "deny catch-all before a rule",
			rules: mapping.Rules{
				{Name: "lockdown", Deny: true},
				{Client: "svc-billing", Role: "Editor"},
			},
			want: []string{"rule 2: never matches: rule 1 (lockdown) matches every token it does"},
		},
		{
			name: "client star before a specific client",
			rules: mapping.Rules{
				{Client: "*", Role: "Viewer"},
				{Client: "svc-billing", Role: "Editor"},
			},
			want: []string{"rule 2: never matches: rule 1 matches every token it does"},
		},
		{
			name: "same client, earlier has fewer conditions",
			rules: mapping.Rules{
				{Client: "svc-*", Role: "Viewer"},
				{Issuer: "corp", Audience: "directus", Client: "svc-*", AllScopes: []string{"read"}, Claims: map[string]string{"team": "ops"}, Role: "Editor"},
			},
			want: []string{"rule 2: never matches: rule 1 matches every token it does"},
		},
		{
			name: "same issuer and audience",
			rules: mapping.Rules{
				{Issuer: "corp", Audience: "directus", Role: "Viewer"},
				{Issuer: "corp", Audience: "directus", Client: "svc-a", Role: "Editor"},
			},
			want: []string{"rule 2: never matches: rule 1 matches every token it does"},
		},
		{
			name: "all_scopes subset",
			rules: mapping.Rules{
				{AllScopes: []string{"read"}, Role: "Viewer"},
				{AllScopes: []string{"write", "read"}, Role: "Editor"},
			},
			want: []string{"rule 2: never matches: rule 1 matches every token it does"},
		},
		{
			name: "any_scopes guaranteed by all_scopes",
			rules: mapping.Rules{
				{AnyScopes: []string{"read", "write"}, Role: "Viewer"},
				{AllScopes: []string{"write"}, Role: "Editor"},
			},
			want: []string{"rule 2: never matches: rule 1 matches every token it does"},
		},
		{
			name: "any_scopes narrower later",
			rules: mapping.Rules{
				{AnyScopes: []string{"read", "write", "admin"}, Role: "Viewer"},
				{AnyScopes: []string{"write", "admin"}, Role: "Editor"},
			},
			want: []string{"rule 2: never matches: rule 1 matches every token it does"},
		},
		{
			name: "claim star before a claim pattern",
			rules: mapping.Rules{
				{Claims: map[string]string{"team": "*"}, Role: "Viewer"},
				{Claims: map[string]string{"team": "ops"}, Role: "Editor"},
			},
			want: []string{"rule 2: never matches: rule 1 matches every token it does"},
		},
		{
			name: "same claim pattern",
			rules: mapping.Rules{
				{Claims: map[string]string{"team": "o*"}, Role: "Viewer"},
				{Claims: map[string]string{"team": "o*", "zone": "eu"}, Role: "Editor"},
			},
			want: []string{"rule 2: never matches: rule 1 matches every token it does"},
		},
		{
			name: "identical rules",
			rules: mapping.Rules{
				{Client: "svc-a", Role: "Viewer"},
				{Client: "svc-a", Role: "Editor"},
			},
			want: []string{"rule 2: never matches: rule 1 matches every token it does"},
		},
		{
			name: "only the first covering rule is named",
			rules: mapping.Rules{
				{Client: "svc-*", Role: "Viewer"},
				{Client: "*", Role: "Other"},
				{Client: "svc-*", AllScopes: []string{"write"}, Role: "Editor"},
			},
			want: []string{"rule 3: never matches: rule 1 matches every token it does"},
		},
		{
			name: "a rule after a non-adjacent catch-all",
			rules: mapping.Rules{
				{Role: "Viewer"},
				{Client: "svc-a", Role: "A"},
				{Client: "svc-b", Role: "B"},
			},
			want: []string{
				"rule 2: never matches: rule 1 matches every token it does",
				"rule 3: never matches: rule 1 matches every token it does",
			},
		},

		// not shadowed
		{
			name: "later rule more general is not reported",
			rules: mapping.Rules{
				{Client: "svc-billing", AllScopes: []string{"write"}, Role: "Editor"},
				{Client: "svc-*", Role: "Viewer"},
				{Role: "Guest"},
			},
		},
		{
			name: "different issuers",
			rules: mapping.Rules{
				{Issuer: "corp", Role: "Viewer"},
				{Issuer: "partner", Role: "Partner"},
			},
		},
		{
			name: "earlier issuer, later any issuer",
			rules: mapping.Rules{
				{Issuer: "corp", Role: "Viewer"},
				{Client: "svc-a", Role: "Partner"},
			},
		},
		{
			name: "different audiences",
			rules: mapping.Rules{
				{Audience: "directus", Role: "Viewer"},
				{Audience: "api", Role: "Api"},
			},
		},
		{
			name: "different client globs",
			rules: mapping.Rules{
				{Client: "svc-*", Role: "Viewer"},
				{Client: "app-*", Role: "App"},
			},
		},
		{
			name: "earlier rule needs more scopes",
			rules: mapping.Rules{
				{AllScopes: []string{"read", "write"}, Role: "Editor"},
				{AllScopes: []string{"read"}, Role: "Viewer"},
			},
		},
		{
			name: "any_scopes not guaranteed",
			rules: mapping.Rules{
				{AnyScopes: []string{"write"}, Role: "Editor"},
				{AnyScopes: []string{"write", "read"}, Role: "Viewer"},
			},
		},
		{
			name: "any_scopes earlier, none later",
			rules: mapping.Rules{
				{AnyScopes: []string{"write"}, Role: "Editor"},
				{Client: "svc-a", Role: "Viewer"},
			},
		},
		{
			name: "different claim patterns",
			rules: mapping.Rules{
				{Claims: map[string]string{"team": "ops"}, Role: "Ops"},
				{Claims: map[string]string{"team": "dev"}, Role: "Dev"},
			},
		},
		{
			name: "earlier claim, later no claim",
			rules: mapping.Rules{
				{Claims: map[string]string{"team": "ops"}, Role: "Ops"},
				{Role: "Viewer"},
			},
		},
		{
			// A token without a team claim fails rule 1 and matches rule 2.
			name: "earlier claim star, later no claim",
			rules: mapping.Rules{
				{Claims: map[string]string{"team": "*"}, Role: "Member"},
				{Role: "Viewer"},
			},
		},
		{
			// Rule 1 needs a team claim holding "", rule 2 does not.
			name: "earlier empty claim pattern, later no claim",
			rules: mapping.Rules{
				{Claims: map[string]string{"team": ""}, Role: "Member"},
				{Role: "Viewer"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := validateParts(t, tt.rules)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestValidateIsDeterministic checks that the same rules always produce the
// same message, so that config checks can be compared and grepped.
func TestValidateIsDeterministic(t *testing.T) {
	rules := mapping.Rules{{
		Role: "Editor",
		Claims: map[string]string{
			"a": `1\`, "b": `2\`, "c": `3\`, "d": `4\`, "e": `5\`,
		},
	}}
	want := []string{
		`rule 1: claim "a" pattern "1\\" ends in an unfinished escape`,
		`rule 1: claim "b" pattern "2\\" ends in an unfinished escape`,
		`rule 1: claim "c" pattern "3\\" ends in an unfinished escape`,
		`rule 1: claim "d" pattern "4\\" ends in an unfinished escape`,
		`rule 1: claim "e" pattern "5\\" ends in an unfinished escape`,
	}
	for i := range 20 {
		got := validateParts(t, rules)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("run %d: Validate() problems mismatch (-want +got):\n%s", i, diff)
		}
	}
}

// TestValidateShadowIsSound checks the promise behind "never matches": when
// Validate says rule 2 can never match, every input that rule 2 matches on
// its own must also be matched by rule 1. Rules and inputs are drawn from a
// small vocabulary so that overlaps are common.
func TestValidateShadowIsSound(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	reported := 0
	for range 20000 {
		a, b := genRule(r), genRule(r)
		a.Deny, a.Role, a.Policies = false, "A", nil
		b.Deny, b.Role, b.Policies = false, "B", nil
		err := mapping.Rules{a, b}.Validate()
		if err == nil || !strings.Contains(err.Error(), "rule 2: never matches") {
			continue
		}
		reported++
		for range 200 {
			in := genInput(r)
			onlyA, onlyB := mapping.Rules{a}, mapping.Rules{b}
			if onlyB.Evaluate(in).Matched && !onlyA.Evaluate(in).Matched {
				t.Fatalf("Validate says rule 2 never matches, but this input skips rule 1 and matches rule 2:\n"+
					"rule 1: %+v\nrule 2: %+v\ninput: %+v", a, b, in)
			}
		}
	}
	if reported < 200 {
		t.Errorf("only %d shadowed pairs drawn; the generator is too weak to test anything", reported)
	}
}

// exampleYAML is the rule format as written in the configuration file; the
// examples show the same rules as Go values.
const exampleYAML = `
- name: billing-writers
  issuer: corp
  audience: directus
  client: "svc-billing-*"
  all_scopes: [billing.read]
  any_scopes: [billing.write, billing.admin]
  claims:
    groups: "payments-*"
  role: Billing Editor
  policies: [Audit Log]
- name: no-legacy
  client: "legacy-*"
  deny: true
- name: admins
  issuer: corp
  client: svc-ops
  role: Administrator
  allow_admin: true
- name: everyone-else
  role: Viewer
`

// TestRulesYAML checks the field names that the configuration file and the
// documentation use.
func TestRulesYAML(t *testing.T) {
	dec := yaml.NewDecoder(strings.NewReader(exampleYAML))
	dec.KnownFields(true)
	var got mapping.Rules
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := mapping.Rules{
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
		{Name: "no-legacy", Client: "legacy-*", Deny: true},
		{Name: "admins", Issuer: "corp", Client: "svc-ops", Role: "Administrator", AllowAdmin: true},
		{Name: "everyone-else", Role: "Viewer"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded rules mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
}
