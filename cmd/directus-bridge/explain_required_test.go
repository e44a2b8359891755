package main

import (
	"strings"
	"testing"
)

// An issuer's required claims are checked before any rule: explain assumes
// a token carries them (rules see them, as in a real exchange) unless a
// -claim says otherwise, and then it denies as the bridge would.
func TestExplainRequiredClaims(t *testing.T) {
	y := `issuers:
  - name: auth0
    issuer: https://example.eu.auth0.com/
    audiences: [directus]
    required_claims: {gty: client-credentials}
rules:
  - name: cc only
    issuer: auth0
    claims: {gty: client-credentials}
    role: Readers
`
	cfg := writeConfig(t, "", y)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-client", "svc"}, 0, "decision: ALLOW by rule 1 (cc only)"},
		{[]string{"-client", "svc", "-claim", "gty=client-credentials"}, 0, "decision: ALLOW"},
		{[]string{"-client", "svc", "-claim", "gty=password"}, 1, `decision: DENY before any rule: claim "gty" is "password", but issuer "auth0" requires "client-credentials"`},
	} {
		code, out, errOut := runExplain(append([]string{"explain", "-offline", "-config", cfg, "-issuer", "auth0"}, c.args...)...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, want %d; output lacks %q:\n%s%s", c.args, code, c.code, c.want, out, errOut)
		}
	}
}

// The commands that do not serve the admin listener do not ask for its
// token: mappings check fails here on Directus, never on admin.token_env.
func TestMappingsNeedNoAdminToken(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "x")
	unsetEnv(t, "DIRECTUS_BRIDGE_ADMIN_TOKEN")
	y := `listen: 127.0.0.1:8080
admin: {listen: 127.0.0.1:8081}
directus: {url: "` + unreachable + `"}
state: {path: ` + t.TempDir() + `/s.db}
issuers: [{name: a, issuer: "https://a.example/", audiences: [x]}]
rules: [{name: r, issuer: a, all_scopes: [s], role: R}]
`
	cfg := writeConfig(t, "", y)
	code, _, errOut := runExplain("check", "-config", cfg)
	if code != 3 || strings.Contains(errOut, "admin.token_env") || !strings.Contains(errOut, "127.0.0.1") {
		t.Fatalf("exit %d, want 3 for the unreachable Directus only:\n%s", code, errOut)
	}
	var out, serveErr strings.Builder
	if code := run([]string{"config", "check", "-config", cfg}, &out, &serveErr); code != 1 || !strings.Contains(out.String(), "admin.token_env") {
		t.Fatalf("config check (what serve needs) must still ask for the admin token: exit %d\n%s", code, out.String())
	}
}
