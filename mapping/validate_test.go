package mapping_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/directus-bridge/directus-bridge/mapping"
)

// Validate's problems say which rule (0-based index) and which of its keys
// they are about, so that a configuration check can point at the line.
func TestValidateProblemsNameRuleAndField(t *testing.T) {
	rs := mapping.Rules{
		{Role: "Viewer"},
		{Name: "blocked", Deny: true, Role: "Editor"},
		{Client: `svc\`, Role: "R"},
		{Claims: map[string]string{"team": `a\`, "": "x"}, Role: "R"},
		{AllScopes: []string{"a b"}, AnyScopes: []string{""}, Role: "R"},
		{},
	}
	err := rs.Validate()
	var re *mapping.RulesError
	if !errors.As(err, &re) {
		t.Fatalf("Validate() = %v (%T), want a *mapping.RulesError", err, err)
	}
	type got struct {
		Index        int
		Field, Label string
		ShadowedBy   int
	}
	var gots []got
	for _, p := range re.Problems {
		gots = append(gots, got{p.Index, p.Field, p.Label, p.ShadowedBy})
		if p.Reason == "" {
			t.Errorf("problem %+v has no reason", p)
		}
	}
	want := []got{
		{1, "deny", "rule 2 (blocked)", -1},
		{1, "", "rule 2 (blocked)", 0}, // never matches
		{2, "client", "rule 3", -1},
		{2, "", "rule 3", 0},
		{3, "claims", "rule 4", -1},
		{3, "claims.team", "rule 4", -1},
		{3, "", "rule 4", 0},
		{4, "all_scopes", "rule 5", -1},
		{4, "any_scopes", "rule 5", -1},
		{4, "", "rule 5", 0},
		{5, "role", "rule 6", -1},
		{5, "", "rule 6", 0},
	}
	if diff := cmp.Diff(want, gots); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	if re.Problems[0].Error() != "rule 2 (blocked): deny rules grant nothing: remove role and policies" {
		t.Errorf("Error() = %q", re.Problems[0].Error())
	}
}

func TestValidateNamesTheShadowingRule(t *testing.T) {
	err := mapping.Rules{{Client: "b", Role: "R"}, {Client: "a", Role: "R"}, {Client: "a", Role: "X"}}.Validate()
	var re *mapping.RulesError
	if !errors.As(err, &re) || len(re.Problems) != 1 {
		t.Fatalf("Validate() = %v, want one problem", err)
	}
	if p := re.Problems[0]; p.Index != 2 || p.ShadowedBy != 1 {
		t.Errorf("problem %+v, want Index 2 ShadowedBy 1", p)
	}
}
