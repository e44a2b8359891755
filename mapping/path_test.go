package mapping_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/directus-bridge/directus-bridge/mapping"
	"github.com/google/go-cmp/cmp"
)

// decode reads claims as the bridge does: numbers as json.Number.
func decode(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// issuerClaims are the claims real issuers put what matters in.
const issuerClaims = `{
	"sub": "spiffe://example.org/ns/prod/sa/api",
	"https://example.com/tenant": "acme",
	"https://example.com/org": {"id": "o-1", "tier": "gold"},
	"realm_access": {"roles": ["offline_access", "admin"]},
	"resource_access": {"directus-client": {"roles": ["editor"]}},
	"azp": "directus-client",
	"scp": ["items:read", "items:write"],
	"kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "api", "uid": "u-1"}},
	"repository_id": 123456789012,
	"repository_owner_id": 42,
	"ratio": 1.0,
	"big": 1e3,
	"frac": 0.25,
	"email_verified": true,
	"job_workflow_ref": "octo/deploy/.github/workflows/release.yml@refs/heads/main",
	"a/b": "slash",
	"m~n": "tilde",
	"empty": null,
	"groups": ["ops", 7, true, null, {"x": 1}, ["nested"]]
}`

func TestParsePath(t *testing.T) {
	tests := []struct {
		in      string
		tokens  []string
		root    string
		key     string
		wantErr string
	}{
		{in: "team", tokens: []string{"team"}, root: "team", key: "/team"},
		{in: "https://example.com/tenant", tokens: []string{"https://example.com/tenant"}, root: "https://example.com/tenant", key: "/https:~1~1example.com~1tenant"},
		{in: "/realm_access/roles", tokens: []string{"realm_access", "roles"}, root: "realm_access", key: "/realm_access/roles"},
		{in: "/kubernetes.io/serviceaccount/name", tokens: []string{"kubernetes.io", "serviceaccount", "name"}, root: "kubernetes.io", key: "/kubernetes.io/serviceaccount/name"},
		{in: "/a~1b", tokens: []string{"a/b"}, root: "a/b", key: "/a~1b"},
		{in: "/m~0n", tokens: []string{"m~n"}, root: "m~n", key: "/m~0n"},
		{in: "/~01", tokens: []string{"~1"}, root: "~1", key: "/~01"},
		{in: "m~n", tokens: []string{"m~n"}, root: "m~n", key: "/m~0n"},
		{in: "", wantErr: "empty claim name"},
		{in: "/", wantErr: "empty member name"},
		{in: "/a//b", wantErr: "empty member name (at /a/)"},
		{in: "/a/", wantErr: "empty member name"},
		{in: "/a~", wantErr: "~ not followed by 0 or 1"},
		{in: "/a~2", wantErr: "~ not followed by 0 or 1"},
		{in: strings.Repeat("/a", 33), wantErr: "deeper than 32"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := mapping.ParsePath(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePath(%q) = %v, want an error with %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.tokens, p.Tokens()); diff != "" {
				t.Errorf("tokens (-want +got):\n%s", diff)
			}
			if p.Root() != tt.root || p.Key() != tt.key || p.String() != tt.in {
				t.Errorf("root %q key %q string %q, want %q %q %q", p.Root(), p.Key(), p.String(), tt.root, tt.key, tt.in)
			}
		})
	}
}

func TestPathLookup(t *testing.T) {
	claims := decode(t, issuerClaims)
	tests := []struct {
		path  string
		want  string // JSON of the value; "" for absent
		found bool
	}{
		{"https://example.com/tenant", `"acme"`, true},
		{"/https:~1~1example.com~1tenant", `"acme"`, true},
		{"/https:~1~1example.com~1org/tier", `"gold"`, true},
		{"https://example.com/org", `{"id":"o-1","tier":"gold"}`, true},
		{"/realm_access/roles", `["offline_access","admin"]`, true},
		{"/realm_access/roles/1", `"admin"`, true},
		{"/realm_access/roles/2", "", false},
		{"/realm_access/roles/01", "", false},
		{"/realm_access/roles/-", "", false},
		{"/resource_access/directus-client/roles", `["editor"]`, true},
		{"/kubernetes.io/serviceaccount/name", `"api"`, true},
		{"kubernetes.io", `{"namespace":"prod","serviceaccount":{"name":"api","uid":"u-1"}}`, true},
		{"/kubernetes.io/namespace/x", "", false},
		{"/a~1b", `"slash"`, true},
		{"a/b", `"slash"`, true},
		{"/m~0n", `"tilde"`, true},
		{"/empty", `null`, true},
		{"/missing", "", false},
		{"/realm_access/missing", "", false},
		{"repository_id", `123456789012`, true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			v, ok := mapping.MustPath(tt.path).Lookup(claims)
			if ok != tt.found {
				t.Fatalf("found %v, want %v", ok, tt.found)
			}
			if !ok {
				return
			}
			var b bytes.Buffer
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(v); err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(b.String()); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestScalar(t *testing.T) {
	tests := []struct {
		in   any
		want string
		ok   bool
	}{
		{"x", "x", true},
		{json.Number("123456789012"), "123456789012", true},
		{json.Number("123456789012345678901234567890"), "123456789012345678901234567890", true},
		{json.Number("-0"), "0", true},
		{json.Number("1.0"), "1", true},
		{json.Number("1e3"), "1000", true},
		{json.Number("1.5E2"), "150", true},
		{json.Number("0.25"), "0.25", true},
		{json.Number("1e300"), "1e300", true},
		{json.Number("1e999"), "1e999", true},
		{float64(123456789012), "123456789012", true},
		{true, "true", true},
		{false, "false", true},
		{nil, "", false},
		{[]any{"a"}, "", false},
		{map[string]any{}, "", false},
	}
	for _, tt := range tests {
		got, ok := mapping.Scalar(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Scalar(%#v) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestClaimPaths checks claim conditions over the claims real issuers
// write: nested members, namespaced names, numbers, booleans, lists of
// mixed values; an object never matches.
func TestClaimPaths(t *testing.T) {
	raw := decode(t, issuerClaims)
	tests := []struct {
		claims map[string]string
		want   bool
	}{
		{map[string]string{"https://example.com/tenant": "acme"}, true},
		{map[string]string{"https://example.com/tenant": "ac*"}, true},
		{map[string]string{"/https:~1~1example.com~1org/tier": "gold"}, true},
		{map[string]string{"https://example.com/org": "*"}, false}, // an object
		{map[string]string{"/realm_access/roles": "admin"}, true},
		{map[string]string{"/realm_access/roles": "root"}, false},
		{map[string]string{"realm_access": "*"}, false},
		{map[string]string{"/resource_access/directus-client/roles": "edit*"}, true},
		{map[string]string{"/kubernetes.io/namespace": "prod", "/kubernetes.io/serviceaccount/name": "api"}, true},
		{map[string]string{"/kubernetes.io/serviceaccount": "*"}, false},
		{map[string]string{"kubernetes.io/namespace": "prod"}, false}, // a top-level name, not a path
		{map[string]string{"repository_id": "123456789012"}, true},
		{map[string]string{"/repository_owner_id": "4?"}, true},
		{map[string]string{"ratio": "1"}, true},
		{map[string]string{"big": "1000"}, true},
		{map[string]string{"frac": "0.25"}, true},
		{map[string]string{"email_verified": "true"}, true},
		{map[string]string{"email_verified": "false"}, false},
		{map[string]string{"job_workflow_ref": "octo/deploy/.github/workflows/*@refs/heads/main"}, true},
		{map[string]string{"/a~1b": "slash", "/m~0n": "tilde"}, true},
		{map[string]string{"empty": "*"}, false}, // null is no value
		{map[string]string{"groups": "7"}, true},
		{map[string]string{"groups": "true"}, true},
		{map[string]string{"groups": "nested"}, false}, // one level of list only
		{map[string]string{"groups": "ops"}, true},
		{map[string]string{"/groups/0": "ops"}, true},
		{map[string]string{"/groups/4/x": "1"}, true},
		{map[string]string{"missing": "*"}, false},
	}
	for _, tt := range tests {
		rules := mapping.Rules{{Claims: tt.claims, Role: "r"}}
		if err := rules.Validate(); err != nil {
			t.Fatalf("%v: %v", tt.claims, err)
		}
		in := mapping.Input{Issuer: "idp", Client: "c", Raw: raw}
		if got := rules.Decide(in).Matched; got != tt.want {
			t.Errorf("claims %v: matched %v, want %v (%v)", tt.claims, got, tt.want, rules.Evaluate(in).Reasons)
		}
	}
}

// TestClaimPathsWithoutRaw: an Input without Raw (a record of an earlier
// version) is matched from its normalised claims, top-level names only.
func TestClaimPathsWithoutRaw(t *testing.T) {
	in := mapping.Input{Claims: map[string][]string{"team": {"ops"}, "a/b": {"x"}}}
	for path, want := range map[string]bool{"team": true, "/team": true, "/a~1b": true, "/team/0": false, "/realm_access/roles": false} {
		rules := mapping.Rules{{Claims: map[string]string{path: "*"}, Role: "r"}}
		if got := rules.Decide(in).Matched; got != want {
			t.Errorf("%s: matched %v, want %v", path, got, want)
		}
	}
}

func TestValidateClaimPaths(t *testing.T) {
	rules := mapping.Rules{
		{Name: "bad", Claims: map[string]string{"/a//b": "x", "/a~2": "y", "team": "ops", "/team": "ops"}, Role: "r"},
	}
	err := rules.Validate()
	var re *mapping.RulesError
	if !errors.As(err, &re) {
		t.Fatalf("Validate = %v, want a *RulesError", err)
	}
	var fields []string
	for _, p := range re.Problems {
		fields = append(fields, p.Field+": "+p.Reason)
	}
	want := []string{
		`claims./a//b: claim path "/a//b" has an empty member name (at /a/)`,
		`claims./a~2: claim path "/a~2" has a ~ not followed by 0 or 1 (write ~0 for ~, ~1 for /)`,
		`claims.team: claims "/team" and "team" name the same claim: keep one`,
	}
	if diff := cmp.Diff(want, fields); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

// TestCoversSpellings: a rule on "team" shadows a later one on "/team".
func TestCoversSpellings(t *testing.T) {
	rules := mapping.Rules{
		{Claims: map[string]string{"team": "ops"}, Role: "a"},
		{Claims: map[string]string{"/team": "ops"}, AllScopes: []string{"x"}, Role: "b"},
	}
	err := rules.Validate()
	if err == nil || !strings.Contains(err.Error(), "rule 2: never matches: rule 1") {
		t.Errorf("Validate = %v, want rule 2 shadowed by rule 1", err)
	}
}
