package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/directus-bridge/directus-bridge/directus"
)

// cookbookCase is one token of a recipe: the documented payload with
// overrides laid over it (objects merge, anything else replaces, null
// removes), and the documented role it must get, or "" when the rules
// must refuse it with refusal. A token granted another role than the
// documented one is of another client (one client, one role); a refused
// one may be of the same client, which its refusal must leave alone.
type cookbookCase struct {
	name      string
	overrides map[string]any
	role      string
	refusal   string // the error code
}

// cookbookRecipe ties a section of docs/idps.md to an issuer of the test
// IdP: which of the section's texts stand for the issuer URL and the
// audience, the client to register, and the tokens to exchange.
type cookbookRecipe struct {
	section  string // the "## " heading
	issuer   string // the stack issuer
	url      string // the documented issuer URL (a placeholder, or the real one)
	audience string // the documented audience placeholder
	client   string // client_id registered at the IdP
	cases    []cookbookCase
}

// The first case of each recipe is the documented token as shown.
var cookbookRecipes = []cookbookRecipe{
	{section: "Auth0", issuer: "auth0", url: "https://YOUR_TENANT.auth0.com/", audience: "YOUR_API_IDENTIFIER",
		client: "k3T9pQ2mV8xR1sLwZ7cN4bY6", cases: []cookbookCase{
			{name: "documented", role: "Article readers"},
			{name: "a user's token", overrides: map[string]any{"gty": "password"}, refusal: "invalid_request"},
			{name: "another scope", overrides: map[string]any{"scope": "articles:list"}, refusal: "invalid_scope"},
		}},
	{section: "SuperTokens", issuer: "supertokens", url: "https://YOUR_API_DOMAIN/auth", audience: "YOUR_AUDIENCE",
		client: "billing-exporter", cases: []cookbookCase{
			{name: "documented", role: "Article writers"},
			{name: "another client, read only", overrides: map[string]any{
				"sub": "billing-reporter", "client_id": "billing-reporter", "scp": []any{"articles:read"},
			}, role: "Article readers"},
			{name: "no scope of the rules", overrides: map[string]any{"scp": []any{"profile"}}, refusal: "invalid_scope"},
			{name: "not an access token", overrides: map[string]any{"stt": 2}, refusal: "invalid_request"},
		}},
	{section: "Keycloak", issuer: "keycloak", url: "https://YOUR_KEYCLOAK/realms/YOUR_REALM", audience: "YOUR_AUDIENCE",
		client: "billing-exporter", cases: []cookbookCase{
			{name: "documented", role: "Article writers"},
			{name: "another client with the client role only", overrides: map[string]any{
				"sub": "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a", "azp": "billing-reporter", "client_id": "billing-reporter",
				"preferred_username": "service-account-billing-reporter",
				"realm_access":       map[string]any{"roles": []any{"offline_access"}},
			}, role: "Article readers"},
			{name: "neither role", overrides: map[string]any{
				"realm_access":    map[string]any{"roles": []any{"offline_access"}},
				"resource_access": map[string]any{"directus": map[string]any{"roles": []any{"articles-admin"}}},
			}, refusal: "invalid_scope"},
			{name: "an ID token", overrides: map[string]any{"typ": "ID"}, refusal: "invalid_request"},
		}},
	{section: "Okta", issuer: "okta", url: "https://YOUR_OKTA_DOMAIN/oauth2/YOUR_SERVER", audience: "YOUR_AUDIENCE",
		client: "0oa8f5j3ecb5w3dF35d7", cases: []cookbookCase{
			{name: "documented", role: "Article readers"},
			{name: "a user's token", overrides: map[string]any{"uid": "00u1a2b3c4D5e6F7g8h9", "sub": "alice@example.com"},
				refusal: "invalid_scope"},
		}},
	{section: "Microsoft Entra ID", issuer: "entra", url: "https://login.microsoftonline.com/YOUR_TENANT_ID/v2.0",
		audience: "YOUR_API_CLIENT_ID", client: "2d4f6a8c-1b3e-4d5f-9a7b-c8e0f2a4b6d8", cases: []cookbookCase{
			{name: "documented", role: "Article readers"},
			{name: "another client, a writer", overrides: map[string]any{
				"azp": "3e5a7b9d-2c4e-4f6a-8b0c-d1e3f5a7b9c0", "oid": "d1e2f3a4-b5c6-4d7e-8f9a-0b1c2d3e4f5a",
				"sub": "d1e2f3a4-b5c6-4d7e-8f9a-0b1c2d3e4f5a", "roles": []any{"Directus.Read", "Directus.Write"},
			}, role: "Article writers"},
			{name: "a delegated token", overrides: map[string]any{"scp": "user_impersonation"}, refusal: "invalid_scope"},
			{name: "another app role", overrides: map[string]any{"roles": []any{"Reports.Read"}}, refusal: "invalid_scope"},
		}},
	{section: "Kubernetes service accounts", issuer: "kubernetes", url: "https://YOUR_CLUSTER_ISSUER", audience: "YOUR_AUDIENCE",
		client: "exporter", cases: []cookbookCase{
			{name: "documented", role: "Billing writers"},
			{name: "another service account of the namespace", overrides: map[string]any{
				"kubernetes.io": map[string]any{"serviceaccount": map[string]any{"name": "reporter"}},
				"sub":           "system:serviceaccount:billing:reporter",
			}, role: "Billing readers"},
			{name: "the same name in another namespace", overrides: map[string]any{
				"kubernetes.io": map[string]any{"namespace": "default"},
				"sub":           "system:serviceaccount:default:exporter",
			}, refusal: "invalid_scope"},
		}},
	{section: "GitHub Actions", issuer: "github", url: "https://token.actions.githubusercontent.com", audience: "YOUR_AUDIENCE",
		client: "deploy", cases: []cookbookCase{
			{name: "documented", role: "Deployers"},
			{name: "a push to main of another repository of the owner", overrides: map[string]any{
				"environment": nil, "repository": "acme/site", "repository_id": "987654321",
				"sub":          "repo:acme/site:ref:refs/heads/main",
				"workflow_ref": "acme/site/.github/workflows/ci.yml@refs/heads/main",
			}, role: "Readers"},
			{name: "the same names, registered again by someone else", overrides: map[string]any{
				"repository_owner_id": "99999999", "repository_id": "88888888",
			}, refusal: "invalid_scope"},
			{name: "a pull request", overrides: map[string]any{
				"environment": nil, "event_name": "pull_request", "ref": "refs/pull/7/merge",
				"sub": "repo:acme/deploy:pull_request",
			}, refusal: "invalid_scope"},
		}},
	{section: "SPIFFE (SPIRE)", issuer: "spiffe", url: "https://YOUR_SPIRE_OIDC_DISCOVERY", audience: "YOUR_AUDIENCE",
		client: "billing", cases: []cookbookCase{
			{name: "documented", role: "Billing writers"},
			{name: "another workload in prod", overrides: map[string]any{"sub": "spiffe://example.org/ns/prod/sa/reporting"},
				role: "Billing readers"},
			{name: "the same workload in staging", overrides: map[string]any{"sub": "spiffe://example.org/ns/staging/sa/billing"},
				refusal: "invalid_scope"},
		}},
}

// cookbookSection is what a "## " section of docs/idps.md shows: the
// token's payload (its first json block), the configuration (its first
// yaml block), and optionally a command (its first sh block) with what it
// prints (its first text block, lines that must appear in that order).
type cookbookSection struct {
	payload, config, command, output string
}

func cookbookSections(t *testing.T) map[string]cookbookSection {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "idps.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]cookbookSection{}
	var title, fence, indent string
	var cur *strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(line, "## "):
			title = strings.TrimPrefix(line, "## ")
		case cur == nil && strings.HasPrefix(trimmed, "```") && len(trimmed) > 3:
			// A block may be indented (inside a list item).
			fence, cur = strings.TrimPrefix(trimmed, "```"), &strings.Builder{}
			indent = line[:len(line)-len(strings.TrimLeft(line, " "))]
		case cur != nil && trimmed == "```":
			s := out[title]
			for _, f := range []struct {
				lang string
				dst  *string
			}{{"json", &s.payload}, {"yaml", &s.config}, {"sh", &s.command}, {"text", &s.output}} {
				if fence == f.lang && *f.dst == "" {
					*f.dst = cur.String()
				}
			}
			out[title] = s
			cur = nil
		case cur != nil:
			cur.WriteString(strings.TrimPrefix(line, indent) + "\n")
		}
	}
	return out
}

var roleLine = regexp.MustCompile(`(?m)^(\s*role: )([^#\n]*?)\s*(#.*)?$`)

// mergeOverrides lays overrides over claims as the test IdP does.
func mergeOverrides(claims, overrides map[string]any) {
	for k, v := range overrides {
		switch v := v.(type) {
		case nil:
			delete(claims, k)
		case map[string]any:
			if sub, ok := claims[k].(map[string]any); ok {
				mergeOverrides(sub, v)
				continue
			}
			claims[k] = v
		default:
			claims[k] = v
		}
	}
}

// TestCookbook runs every recipe of docs/idps.md as written: the issuer
// URL and audience of the test IdP replace the documented ones, the roles
// the rules name are created in Directus 12, the real binary serves the
// configuration, and the test IdP issues the documented token (its own
// issuer, signature and algorithm), which must get the documented role;
// variations of it get another role or are refused.
func TestCookbook(t *testing.T) {
	s := requireStack(t)
	var d DirectusInstance
	for _, di := range s.Directus {
		if di.Major() == 12 {
			d = di
		}
	}
	if d.URL == "" {
		t.Fatal("the stack has no Directus 12 (start it with directus12-postgres)")
	}
	t.Cleanup(func() { count(d.Name+" ("+d.Version+")", t) })
	sections := cookbookSections(t)
	var documented []string
	for title, sec := range sections {
		if sec.config != "" {
			documented = append(documented, title)
		}
	}
	var tested []string
	for _, r := range cookbookRecipes {
		tested = append(tested, r.section)
	}
	slices.Sort(documented)
	slices.Sort(tested)
	if !slices.Equal(documented, tested) {
		t.Fatalf("docs/idps.md has recipes %q; this test runs %q: keep them in step", documented, tested)
	}

	admin, err := directus.New(d.URL, d.AdminToken, directus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Each role may read users, so that a token shows its user's role
	// (reading only its own user, or only some fields, is a custom
	// permission rule, which Directus 12 Core refuses).
	self, err := admin.CreatePolicy(ctx, directus.Policy{Name: "cookbook-self-" + random()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw(t, d, d.AdminToken, "DELETE", "/policies/"+self.ID, nil, nil) })
	if st := raw(t, d, d.AdminToken, "POST", "/permissions", map[string]any{
		"policy": self.ID, "collection": "directus_users", "action": "read", "fields": []string{"*"},
		"permissions": nil,
	}, nil); st != 200 {
		t.Fatalf("create the self-read permission: status %d", st)
	}

	for _, r := range cookbookRecipes {
		t.Run(r.issuer, func(t *testing.T) {
			sec := sections[r.section]
			is, ok := s.IdP.Issuers[r.issuer]
			if !ok {
				t.Fatalf("the test IdP has no issuer %q", r.issuer)
			}
			if sec.payload == "" {
				t.Fatalf("section %q shows no token payload", r.section)
			}
			var payload map[string]any
			if err := json.Unmarshal([]byte(sec.payload), &payload); err != nil {
				t.Fatalf("section %q: the payload is not JSON: %v", r.section, err)
			}
			// The IdP sets these itself.
			for _, k := range []string{"iss", "aud", "exp", "iat", "nbf", "jti"} {
				delete(payload, k)
			}

			config := sec.config
			for _, ph := range []string{r.url, r.audience} {
				if !strings.Contains(config, ph) {
					t.Fatalf("section %q no longer shows %q: keep this test in step", r.section, ph)
				}
			}
			config = strings.NewReplacer(r.url, is.Issuer, r.audience, is.Audience).Replace(config)
			if strings.Contains(config, "YOUR_") {
				t.Fatalf("section %q has a placeholder this test does not fill:\n%s", r.section, config)
			}
			suffix := random()
			roles := map[string]directus.Role{} // documented name -> created role
			for _, m := range roleLine.FindAllStringSubmatch(config, -1) {
				name := strings.Trim(m[2], `"'`)
				if _, ok := roles[name]; ok {
					continue
				}
				role, err := admin.CreateRole(ctx, directus.Role{Name: name + " " + suffix, Policies: []string{self.ID}})
				if err != nil {
					t.Fatal(err)
				}
				roles[name] = role
			}
			t.Cleanup(func() {
				var ids []string
				for _, role := range roles {
					ids = append(ids, role.ID)
				}
				var users []struct {
					ID string `json:"id"`
				}
				q := url.Values{"fields": {"id"}, "limit": {"-1"}, "filter[role][_in]": {strings.Join(ids, ",")}}
				raw(t, d, d.AdminToken, "GET", "/users?"+q.Encode(), nil, &users)
				var uids []string
				for _, u := range users {
					uids = append(uids, u.ID)
				}
				if err := admin.DeleteUsers(context.Background(), uids); err != nil {
					t.Errorf("cleanup: delete the recipe's users: %v", err)
				}
				for _, id := range ids {
					raw(t, d, d.AdminToken, "DELETE", "/roles/"+id, nil, nil)
				}
			})
			if sec.command != "" {
				cookbookCommand(t, d, r.section, config, sec.command, sec.output)
			}
			config = roleLine.ReplaceAllStringFunc(config, func(line string) string {
				m := roleLine.FindStringSubmatch(line)
				return m[1] + fmt.Sprintf("%q", roles[strings.Trim(m[2], `"'`)].Name)
			})

			port := freePort(t)
			full := fmt.Sprintf(`listen: 127.0.0.1:%d
directus: {url: %q, retries: -1, timeout: 5s}
state: {path: %q}
limits: {per_ip: {rate: -1}, per_client: {rate: -1}}
reconcile: {schedule: "off"}
log: {level: debug}
%s`, port, d.URL, filepath.Join(t.TempDir(), "state.db"), config)
			p := startBinary(t, d, full, port)
			select {
			case err := <-p.done:
				t.Fatalf("the bridge refused the recipe (%v):\n%s\n%s", err, p.logs.String(), full)
			default:
			}

			var first exchanged // the documented token's exchange
			for i, c := range r.cases {
				t.Run(c.name, func(t *testing.T) {
					claims := map[string]any{}
					b, _ := json.Marshal(payload)
					_ = json.Unmarshal(b, &claims) // a deep copy
					mergeOverrides(claims, c.overrides)
					token := is.tokenWithClaims(t, fmt.Sprintf("%s-%d", r.client, i), claims)
					if alg := jwtAlg(t, token); alg != is.Alg {
						t.Fatalf("the IdP signed with %s, want %s", alg, is.Alg)
					}
					res := p.exchange(t, token)
					if c.role == "" {
						if res.status != 400 || res.code() != c.refusal {
							t.Fatalf("exchange: status %d %v, want 400 %s", res.status, res.body, c.refusal)
						}
						return
					}
					if res.status != 200 {
						t.Fatalf("exchange: status %d %v\n%s", res.status, res.body, p.logs.String())
					}
					var me struct {
						ID   string `json:"id"`
						Role string `json:"role"`
					}
					if st := raw(t, d, res.token(), "GET", "/users/me?fields=id,role", nil, &me); st != 200 {
						t.Fatalf("GET /users/me with the exchanged token: status %d", st)
					}
					if want := roles[c.role]; me.Role != want.ID {
						t.Fatalf("the machine user %s has role %s, want %q (%s)", me.ID, me.Role, want.Name, want.ID)
					}
					if i == 0 {
						first = res
					}
				})
			}
			// The refusals (some name the same client) changed nothing of
			// the documented token's user.
			if first.token() != "" {
				var me struct {
					Role string `json:"role"`
				}
				if st := raw(t, d, first.token(), "GET", "/users/me?fields=role", nil, &me); st != 200 || me.Role != roles[r.cases[0].role].ID {
					t.Fatalf("after the other tokens, the documented token's user: status %d, role %s, want %s", st, me.Role, roles[r.cases[0].role].ID)
				}
			}
		})
	}
}

// tokenWithClaims registers a client whose tokens carry claims and gets
// one of its tokens for the default audience.
func (is Issuer) tokenWithClaims(t *testing.T, clientID string, claims map[string]any) string {
	t.Helper()
	id, secret := is.registerClientWith(t, clientID, map[string]any{"claims": claims})
	return is.token(t, id, secret, "", "")
}

// jwtAlg is the alg of a JWT's header.
func jwtAlg(t *testing.T, token string) string {
	t.Helper()
	h, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(b, &hdr); err != nil {
		t.Fatalf("token header: %v", err)
	}
	return hdr.Alg
}

// cookbookCommand runs a section's sh block with the section's
// configuration (roles as documented) and checks that the lines of its
// text block appear in the output, in order.
func cookbookCommand(t *testing.T, d DirectusInstance, section, config, command, want string) {
	t.Helper()
	if want == "" {
		t.Fatalf("section %q runs a command but shows no output", section)
	}
	path := filepath.Join(t.TempDir(), "explain.yaml")
	full := fmt.Sprintf("directus: {url: %q}\nstate: {path: %q}\n%s", d.URL, filepath.Join(filepath.Dir(path), "state.db"), config)
	if err := os.WriteFile(path, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", "set -eo pipefail\n"+command)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(binary(t))+":"+os.Getenv("PATH"),
		"DIRECTUS_BRIDGE_CONFIG="+path, "DIRECTUS_BRIDGE_DIRECTUS_TOKEN="+d.AdminToken)
	out, err := cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); err != nil && !(ok && exit.ExitCode() == 1) {
		t.Fatalf("section %q: the command failed: %v\n%s", section, err, out)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	i := 0
	for _, w := range strings.Split(strings.TrimRight(want, "\n"), "\n") {
		for i < len(lines) && strings.TrimRight(lines[i], " ") != strings.TrimRight(w, " ") {
			i++
		}
		if i == len(lines) {
			t.Fatalf("section %q: the command's output lacks %q (in this order):\n%s", section, w, out)
		}
		i++
	}
}
