package mapping_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/mapping"
	"github.com/google/go-cmp/cmp"
)

func TestCompileCondition(t *testing.T) {
	tests := []struct {
		expr    string
		wantErr string
	}{
		{expr: `'admin' in claims.realm_access.roles`},
		{expr: `claims["kubernetes.io"].serviceaccount.name == "api"`},
		{expr: `claims.repository_owner_id == 42 && claims.ref.startsWith("refs/heads/")`},
		{expr: `issuer == "okta" && "items:read" in scopes && client.matches("^svc-") && audiences.exists(a, a == "directus")`},
		{expr: `has(claims.environment) && claims.environment in ["prod", "staging"]`},
		{expr: `claims.exists(k, k.startsWith("https://example.com/"))`},
		{expr: `size(scopes) > 0`},
		{expr: ``, wantErr: "empty condition"},
		{expr: `claims.x`, wantErr: "of type dyn, want bool"},
		{expr: `scopes`, wantErr: "want bool"},
		{expr: `1 + `, wantErr: "at 1:5: Syntax error"},
		{expr: "true &&\n  nope == 1", wantErr: "at 2:3: undeclared reference to 'nope'"},
		{expr: `client == 1`, wantErr: "found no matching overload for '_==_' applied to '(string, int)'"},
		{expr: `claims.x.y.z.ext_fn()`, wantErr: "undeclared reference"},
		{expr: strings.Repeat("x", 5000), wantErr: "over 4096 bytes"},
		{expr: strings.Repeat("(", 200) + "true" + strings.Repeat(")", 200), wantErr: "recursion"},
	}
	for _, tt := range tests {
		t.Run(tt.expr[:min(len(tt.expr), 40)], func(t *testing.T) {
			err := mapping.CompileCondition(tt.expr)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("CompileCondition: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("CompileCondition = %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

func TestConditionEval(t *testing.T) {
	raw := decode(t, issuerClaims)
	in := mapping.Input{Issuer: "keycloak", Client: "directus-client", Audiences: []string{"directus"},
		Scopes: []string{"items:read", "items:write"}, Raw: raw}
	tests := []struct {
		expr   string
		held   bool
		reason string // in the trace, when it does not hold
	}{
		{expr: `'admin' in claims.realm_access.roles`, held: true},
		{expr: `'root' in claims.realm_access.roles`, reason: "condition is false"},
		{expr: `'editor' in claims.resource_access[claims.azp].roles`, held: true},
		{expr: `claims["kubernetes.io"].namespace == "prod" && claims["kubernetes.io"].serviceaccount.name == "api"`, held: true},
		{expr: `claims["https://example.com/org"].tier == "gold"`, held: true},
		{expr: `claims.repository_id == 123456789012 && claims.repository_owner_id == 42`, held: true},
		{expr: `claims.repository_owner_id > 40u && claims.repository_owner_id < 42.5`, held: true},
		{expr: `claims.frac == 0.25 && claims.ratio == 1`, held: true},
		{expr: `claims.email_verified == true`, held: true},
		{expr: `claims.empty == null`, held: true},
		{expr: `issuer == "keycloak" && client == "directus-client" && "directus" in audiences && "items:write" in scopes`, held: true},
		{expr: `claims.team == "ops"`, reason: "condition does not hold: no such key: team"},
		{expr: `has(claims.team) && claims.team == "ops"`, reason: "condition is false"},
		{expr: `claims.exists(k, k.startsWith("https://example.com/"))`, held: true},
		{expr: `claims.groups.exists(g, g == 7)`, held: true},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			rules := mapping.Rules{{Name: "r", Condition: tt.expr, Role: "role"}}
			if err := rules.Validate(); err != nil {
				t.Fatal(err)
			}
			d := rules.Explain(in)
			if d.Matched != tt.held {
				t.Fatalf("matched %v, want %v: %v", d.Matched, tt.held, d.Reasons)
			}
			if rules.Decide(in).Matched != tt.held {
				t.Fatalf("Decide disagrees with Evaluate")
			}
			c := d.Trace[0].Checks[0]
			if c.Condition != "condition" || c.Held != tt.held {
				t.Fatalf("trace %+v", c)
			}
			if !tt.held && !strings.Contains(c.Detail, tt.reason) {
				t.Errorf("detail %q, want it to say %q", c.Detail, tt.reason)
			}
		})
	}
}

// TestConditionWithoutRaw: an Input without raw claims shows CEL its
// normalised claims, lists of strings.
func TestConditionWithoutRaw(t *testing.T) {
	rules := mapping.Rules{{Condition: `"ops" in claims.team`, Role: "r"}}
	if !rules.Decide(mapping.Input{Claims: map[string][]string{"team": {"dev", "ops"}}}).Matched {
		t.Error("no match")
	}
}

// TestConditionAndedWithClaims: the condition is one more condition; every
// one must hold.
func TestConditionAndedWithClaims(t *testing.T) {
	raw := decode(t, issuerClaims)
	rules := mapping.Rules{
		{Name: "ns", Claims: map[string]string{"/kubernetes.io/namespace": "prod"}, Condition: `claims.azp == "other"`, Role: "a"},
		{Name: "both", Claims: map[string]string{"/kubernetes.io/namespace": "prod"}, Condition: `claims.azp == "directus-client"`, Role: "b"},
	}
	d := rules.Explain(mapping.Input{Raw: raw})
	if d.Rule != "rule 2 (both)" {
		t.Fatalf("matched %q, want rule 2: %v", d.Rule, d.Reasons)
	}
	want := []mapping.RuleTrace{
		{Index: 0, Rule: "rule 1 (ns)", Checks: []mapping.Check{
			{Condition: "claims./kubernetes.io/namespace", Held: true, Detail: `claim /kubernetes.io/namespace matches "prod"`, Found: `"prod"`},
			{Condition: "condition", Detail: "condition is false"},
		}},
		{Index: 1, Rule: "rule 2 (both)", Checks: []mapping.Check{
			{Condition: "claims./kubernetes.io/namespace", Held: true, Detail: `claim /kubernetes.io/namespace matches "prod"`, Found: `"prod"`},
			{Condition: "condition", Held: true, Detail: "condition is true"},
		}},
	}
	if diff := cmp.Diff(want, d.Trace); diff != "" {
		t.Errorf("trace (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"rule 1 (ns): condition is false"}, d.Reasons); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
}

// TestValidateCondition: a condition that does not compile is a problem
// of the rule's condition key, with the position in the expression.
func TestValidateCondition(t *testing.T) {
	rules := mapping.Rules{
		{Name: "ok", Condition: `true`, Role: "r"},
		{Name: "typo", Condition: `claims.team = "ops"`, Role: "r"},
		{Name: "int", Condition: `size(scopes)`, Role: "r"},
	}
	var re *mapping.RulesError
	if err := rules.Validate(); !errors.As(err, &re) {
		t.Fatalf("Validate = %v", err)
	}
	var got []string
	for _, p := range re.Problems {
		got = append(got, fmt.Sprintf("%d %s %s", p.Index, p.Field, p.Reason))
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], "1 condition condition at 1:13: Syntax error: token recognition error at: '= '; at 1:15:") ||
		got[1] != "2 condition condition is of type int, want bool" {
		t.Errorf("problems:\n%s", strings.Join(got, "\n"))
	}
}

// TestConditionCovers: a rule with a condition shadows a later one only
// with the same condition; a rule without one may shadow a rule with one.
func TestConditionCovers(t *testing.T) {
	tests := []struct {
		a, b     mapping.Rule
		shadowed bool
	}{
		{mapping.Rule{Condition: "claims.a == 1", Role: "r"}, mapping.Rule{Condition: "claims.a == 2", Role: "r"}, false},
		{mapping.Rule{Condition: "claims.a == 1", Role: "r"}, mapping.Rule{Condition: "claims.a == 1", Client: "x", Role: "r"}, true},
		{mapping.Rule{Client: "*", Role: "r"}, mapping.Rule{Condition: "claims.a == 1", Client: "x", Role: "r"}, true},
		{mapping.Rule{Condition: "claims.a == 1", Role: "r"}, mapping.Rule{Client: "x", Role: "r"}, false},
	}
	for _, tt := range tests {
		err := mapping.Rules{tt.a, tt.b}.Validate()
		if got := err != nil && strings.Contains(err.Error(), "never matches"); got != tt.shadowed {
			t.Errorf("%+v then %+v: shadowed %v, want %v (%v)", tt.a, tt.b, got, tt.shadowed, err)
		}
	}
}

// TestConditionCostLimit: a hostile condition, nested comprehensions over
// a long claim list, is cut off by the cost limit, quickly, and does not
// hold.
func TestConditionCostLimit(t *testing.T) {
	groups := make([]any, 2000)
	for i := range groups {
		groups[i] = fmt.Sprint("g", i)
	}
	in := mapping.Input{Raw: map[string]any{"groups": groups}}
	for _, expr := range []string{
		`claims.groups.all(a, claims.groups.all(b, claims.groups.all(c, a != b || b != c || true)))`,
		`claims.groups.map(a, claims.groups.map(b, a + b)).size() > 0`,
		`claims.groups.filter(a, claims.groups.exists(b, b == a + "x")).size() == 0`,
		// Reading a long list in a loop costs what the limit counts, no more.
		`claims.groups.all(a, size(claims.groups) > 0)`,
		`claims.groups.all(a, claims.groups.exists(b, b == "none") || true) && false`,
	} {
		rules := mapping.Rules{{Condition: expr, Role: "r"}}
		if err := rules.Validate(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		d := rules.Evaluate(in)
		took := time.Since(start)
		if d.Matched {
			t.Errorf("%s held", expr)
		}
		if want := "cost limit exceeded"; !strings.Contains(d.Reasons[0], want) {
			t.Errorf("%s: reason %q, want %q", expr, d.Reasons[0], want)
		}
		if took > time.Second {
			t.Errorf("%s took %v", expr, took)
		}
	}
}

// TestClaimRoots: the claims the rules can read, for the records the
// reconciler decides from.
func TestClaimRoots(t *testing.T) {
	tests := []struct {
		rules mapping.Rules
		roots []string
		all   bool
	}{
		{rules: mapping.Rules{{Claims: map[string]string{"team": "x", "/realm_access/roles": "y", "/a~1b/c": "z"}}}, roots: []string{"a/b", "realm_access", "team"}},
		{rules: mapping.Rules{{Condition: `claims.azp == "x" && 'r' in claims["resource_access"]["c"].roles && has(claims.env) && "k" in claims`}},
			roots: []string{"azp", "env", "k", "resource_access"}},
		{rules: mapping.Rules{{Condition: `claims.exists(k, k == "x")`}}, all: true},
		{rules: mapping.Rules{{Condition: `size(claims) > 1`}}, all: true},
		{rules: mapping.Rules{{Condition: `claims[client] == "x"`}}, all: true},
		{rules: mapping.Rules{{Condition: `issuer == "x"`}}},
	}
	for _, tt := range tests {
		roots, all := tt.rules.ClaimRoots()
		if diff := cmp.Diff(tt.roots, roots); diff != "" || all != tt.all {
			t.Errorf("%+v: all %v, roots (-want +got):\n%s", tt.rules, all, diff)
		}
	}
}

// TestDenyConditionFailsClosed: a deny rule whose condition cannot be
// evaluated (a missing claim, a claim of another type, the cost limit)
// refuses the token rather than letting it reach a later rule that grants.
func TestDenyConditionFailsClosed(t *testing.T) {
	groups := make([]any, 2000)
	for i := range groups {
		groups[i] = fmt.Sprint("g", i)
	}
	tests := []struct {
		name string
		expr string
		raw  map[string]any
	}{
		{"missing claim", `claims.banned == true`, map[string]any{}},
		{"other type", `claims.level > 5`, map[string]any{"level": "9"}},
		{"cost limit", `claims.groups.exists(a, claims.groups.exists(b, a + b == "banned"))`, map[string]any{"groups": groups}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := mapping.Rules{
				{Name: "banned", Condition: tt.expr, Deny: true},
				{Name: "everyone", Role: "r"},
			}
			if err := rules.Validate(); err != nil {
				t.Fatal(err)
			}
			in := mapping.Input{Raw: tt.raw}
			for name, d := range map[string]mapping.Decision{"Decide": rules.Decide(in), "Evaluate": rules.Evaluate(in), "Explain": rules.Explain(in)} {
				if !d.Deny || d.Index != 0 {
					t.Errorf("%s: deny %v by rule %d, want the deny rule to refuse", name, d.Deny, d.Index)
				}
			}
			d := rules.Explain(in)
			c := d.Trace[0].Checks[0]
			if !c.Held || !strings.Contains(c.Detail, "deny rule refuses") {
				t.Errorf("trace %+v", c)
			}
			// A condition that is false still lets the token through.
			ok := mapping.Rules{{Condition: `has(claims.banned) && claims.banned == true`, Deny: true}, {Role: "r"}}
			if d := ok.Decide(in); d.Deny {
				t.Errorf("a false deny condition refused: %+v", d)
			}
		})
	}
}
