package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestExplainGolden(t *testing.T) {
	rules := mapping.Rules{
		{Name: "blocked", Client: "legacy-*", Deny: true},
		{Name: "writers", Issuer: "supertokens", AllScopes: []string{"items:write"}, Role: "Writers", Policies: []string{"Audit"}},
		{Name: "readers", AnyScopes: []string{"items:read", "my_service#read"}, Role: "Readers"},
	}
	m, _, err := bridge.NewMapper(rules,
		[]directus.Role{{ID: "11111111-1111-1111-1111-111111111111", Name: "Writers"}, {ID: "22222222-2222-2222-2222-222222222222", Name: "Readers"}},
		[]directus.Policy{{ID: "33333333-3333-3333-3333-333333333333", Name: "Audit"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   mapping.Input
	}{
		{"writer", mapping.Input{Issuer: "supertokens", Client: "task-service", Scopes: []string{"items:write", "items:read"}}},
		{"reader", mapping.Input{Issuer: "auth0", Client: "svc@clients", Scopes: []string{"my_service#read"}}},
		{"denied", mapping.Input{Issuer: "auth0", Client: "legacy-app", Scopes: []string{"items:read"}}},
		{"nomatch", mapping.Input{Issuer: "auth0", Client: "svc@clients", Scopes: []string{"other"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got strings.Builder
			explain(&got, m, tc.in)
			path := filepath.Join("testdata", "explain", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if diff := cmp.Diff(string(want), got.String()); diff != "" {
				t.Errorf("explain output (-want +got):\n%s", diff)
			}
		})
	}
}
