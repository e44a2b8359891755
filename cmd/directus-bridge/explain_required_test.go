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
