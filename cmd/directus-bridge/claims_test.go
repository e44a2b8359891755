package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// claimsYAML has issuers and rules that name nested claims, as real issuers
// write them, and a CEL condition.
const claimsYAML = `directus: {url: http://127.0.0.1:1, token_env: EXPLAIN_TEST_DIRECTUS_TOKEN}
state: {path: /tmp/state.db}
issuers:
  - name: keycloak
    issuer: https://kc.example/realms/r
    audiences: [directus]
    client_claim: azp
  - name: k8s
    issuer: https://kubernetes.default.svc
    audiences: [directus]
    client_claim: /kubernetes.io/serviceaccount/name
    required_claims: {/kubernetes.io/namespace: prod}
    user_ids: issuer
  - name: github
    issuer: https://token.actions.githubusercontent.com
    audiences: [directus]
    client_claim: repository_id
    user_ids: issuer
rules:
  - name: kc-admins
    issuer: keycloak
    claims: {/realm_access/roles: admin}
    condition: '"editor" in claims.resource_access[client].roles'
    role: Admins
  - name: k8s-api
    issuer: k8s
    claims: {/kubernetes.io/serviceaccount/name: "api-*"}
    role: API
  - name: releases
    issuer: github
    condition: 'claims.repository_owner_id == 42 && claims.ref.startsWith("refs/tags/")'
    role: Releases
`

func TestConfigCheckClaimPathsAndConditions(t *testing.T) {
	t.Setenv("EXPLAIN_TEST_DIRECTUS_TOKEN", "x")
	if _, ps := checkConfig([]byte(claimsYAML)); len(ps) > 0 {
		t.Fatalf("valid file refused:\n%s", problemLines(ps))
	}
	for _, tc := range []struct {
		name     string
		from, to string
		want     []problemWant
	}{
		{"malformed rule claim path", "{/realm_access/roles: admin}", "{/realm_access//roles: admin}",
			[]problemWant{{"rules[1].claims./realm_access//roles", 22, []string{"empty member name", "/realm_access/"}}}},
		{"bad escape", "{/realm_access/roles: admin}", `{"/realm~access/roles": admin}`,
			[]problemWant{{"rules[1].claims./realm~access/roles", 22, []string{"~ not followed by 0 or 1"}}}},
		{"condition that does not parse", `condition: '"editor" in claims.resource_access[client].roles'`, `condition: 'claims.x = 1'`,
			[]problemWant{{"rules[1].condition", 23, []string{"condition", "at 1:10", "Syntax error"}}}},
		{"condition that is not bool", `condition: '"editor" in claims.resource_access[client].roles'`, `condition: 'size(scopes)'`,
			[]problemWant{{"rules[1].condition", 23, []string{"of type int, want bool"}}}},
		{"condition with an unknown variable", `claims.repository_owner_id == 42`, `claim.repository_owner_id == 42`,
			[]problemWant{{"rules[3].condition", 31, []string{"undeclared reference to 'claim'", "at 1:1"}}}},
		{"malformed client_claim", "client_claim: /kubernetes.io/serviceaccount/name", "client_claim: /kubernetes.io/",
			[]problemWant{{"issuers[2].client_claim", 11, []string{`issuer "k8s"`, "client_claim", "empty member name"}}}},
		{"malformed required claim", "required_claims: {/kubernetes.io/namespace: prod}", "required_claims: {/kubernetes.io~/namespace: prod}",
			[]problemWant{{"issuers[2].required_claims./kubernetes.io~/namespace", 12, []string{"required_claims", "~ not followed"}}}},
		{"malformed scope claim", "client_claim: azp\n", "client_claim: azp\n    scope_claims: [scope, '/a//b']\n",
			[]problemWant{{"issuers[1].scope_claims[2]", 8, []string{"scope_claims", "empty member name"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(claimsYAML, tc.from) {
				t.Fatalf("%q is not in the file", tc.from)
			}
			_, got := checkConfig([]byte(strings.Replace(claimsYAML, tc.from, tc.to, 1)))
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tc.want), problemLines(got))
			}
			for i, w := range tc.want {
				p := got[i]
				if p.Path != w.path || p.Line != w.line {
					t.Errorf("problem %d at %s line %d, want %s line %d: %s", i, p.Path, p.Line, w.path, w.line, p.Msg)
				}
				for _, word := range w.words {
					if !strings.Contains(p.Msg, word) {
						t.Errorf("problem %d %q lacks %q", i, p.Msg, word)
					}
				}
			}
		})
	}
}

// TestExplainCondition: mappings explain shows each condition of each
// rule, the CEL one included, with why it failed; -claim takes JSON and
// pointers.
func TestExplainCondition(t *testing.T) {
	unsetEnv(t, tokenEnv)
	cfg := writeConfig(t, "", claimsYAML)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"keycloak admin", []string{"-issuer", "keycloak", "-client", "directus-app", "-audience", "directus",
			"-claim", `realm_access={"roles": ["offline_access", "admin"]}`,
			"-claim", `/resource_access/directus-app/roles=["editor"]`}, 0, []string{
			`claims="realm_access={\"roles\":[\"offline_access\",\"admin\"]} resource_access={\"directus-app\":{\"roles\":[\"editor\"]}}"`,
			"  matched rule 1 (kc-admins)\n" +
				"    held   issuer: issuer is \"keycloak\"\n" +
				"    held   claims./realm_access/roles: claim /realm_access/roles matches \"admin\" (found [\"offline_access\",\"admin\"])\n" +
				"    held   condition \"editor\" in claims.resource_access[client].roles: condition is true\n" +
				"decision: ALLOW by rule 1 (kc-admins)",
		}},
		{"keycloak not an editor", []string{"-issuer", "keycloak", "-client", "directus-app", "-audience", "directus",
			"-claim", "/realm_access/roles=admin", "-claim", "/resource_access/other/roles=editor"}, 1, []string{
			"  skipped rule 1 (kc-admins): condition does not hold: no such key: directus-app\n" +
				"    held   issuer: issuer is \"keycloak\"\n" +
				"    held   claims./realm_access/roles: claim /realm_access/roles matches \"admin\" (found \"admin\")\n" +
				"    failed condition \"editor\" in claims.resource_access[client].roles: condition does not hold: no such key: directus-app\n",
			"decision: DENY (no rule matched; deny by default)",
		}},
		{"github numbers", []string{"-issuer", "github", "-client", "123456789012", "-audience", "directus",
			"-claim", "repository_owner_id=42", "-claim", "ref=refs/tags/v1.2.3"}, 0, []string{
			"    held   condition claims.repository_owner_id == 42 && claims.ref.startsWith(\"refs/tags/\"): condition is true\n" +
				"decision: ALLOW by rule 3 (releases)",
		}},
		{"github string owner id", []string{"-issuer", "github", "-client", "123456789012", "-audience", "directus",
			"-claim", `repository_owner_id="42"`, "-claim", "ref=refs/tags/v1"}, 1, []string{
			"failed condition claims.repository_owner_id == 42 && claims.ref.startsWith(\"refs/tags/\"): condition is false",
		}},
		{"kubernetes pointer client", []string{"-issuer", "k8s", "-client", "api-1", "-audience", "directus"}, 0, []string{
			"    held   claims./kubernetes.io/serviceaccount/name: claim /kubernetes.io/serviceaccount/name matches \"api-*\" (found \"api-1\")\n" +
				"decision: ALLOW by rule 2 (k8s-api)",
		}},
		{"kubernetes wrong namespace", []string{"-issuer", "k8s", "-client", "api-1", "-audience", "directus",
			"-claim", "/kubernetes.io/namespace=dev"}, 1, []string{
			`decision: DENY before any rule: claim "/kubernetes.io/namespace" is "dev", but issuer "k8s" requires "prod"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runExplain(append([]string{"explain", "-offline", "-config", cfg}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks\n%s\n---- output:\n%s", w, out)
				}
			}
		})
	}
}

func TestClaimFlags(t *testing.T) {
	for _, tc := range []struct {
		flags   []string
		want    string
		wantErr string
	}{
		{flags: []string{"team=ops"}, want: `{"team":"ops"}`},
		{flags: []string{"team=ops", "team=dev"}, want: `{"team":["ops","dev"]}`},
		{flags: []string{"id=123456789012", "ok=true", "none=null", `s="123"`, "f=1.50"}, want: `{"f":1.50,"id":123456789012,"none":null,"ok":true,"s":"123"}`},
		{flags: []string{`roles=["a","b"]`}, want: `{"roles":["a","b"]}`},
		{flags: []string{"/kubernetes.io/serviceaccount/name=api", "/kubernetes.io/namespace=prod"}, want: `{"kubernetes.io":{"namespace":"prod","serviceaccount":{"name":"api"}}}`},
		{flags: []string{"/a~1b=x", "https://example.com/tenant=acme"}, want: `{"a/b":"x","https://example.com/tenant":"acme"}`},
		{flags: []string{"team=ops", "/team=dev"}, want: `{"team":["ops","dev"]}`},
		{flags: []string{"a=1", "/a/b=2"}, wantErr: "/a is not an object"},
		{flags: []string{"/a/b=2", `a={"c":1}`}, wantErr: "a is given as a whole and inside"},
		{flags: []string{"/a//b=2"}, wantErr: "empty member name"},
		{flags: []string{"novalue"}, wantErr: "want name=value"},
	} {
		c := &claimFlags{}
		var err error
		for _, f := range tc.flags {
			if err = c.Set(f); err != nil {
				break
			}
		}
		var raw map[string]any
		if err == nil {
			raw, err = c.raw()
		}
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.flags, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.flags, err)
			continue
		}
		b, _ := json.Marshal(raw)
		if diff := cmp.Diff(tc.want, string(b)); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.flags, diff)
		}
	}
}
