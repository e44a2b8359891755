package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
	"github.com/directus-bridge/directus-bridge/mapping"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with testdata/explain/name.golden (-update rewrites it).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "explain", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", name, diff)
	}
}

func TestExplainGolden(t *testing.T) {
	rules := mapping.Rules{
		{Name: "blocked", Client: "legacy-*", Deny: true},
		{Name: "writers", Issuer: "supertokens", AllScopes: []string{"items:write"}, Role: "Writers", Policies: []string{"Audit"}},
		{Name: "readers", AnyScopes: []string{"items:read", "my_service#read"}, Role: "Readers"},
	}
	roles := []directus.Role{{ID: "11111111-1111-1111-1111-111111111111", Name: "Writers"}, {ID: "22222222-2222-2222-2222-222222222222", Name: "Readers"},
		{ID: "44444444-4444-4444-4444-444444444444", Name: "Root", Policies: []string{"55555555-5555-5555-5555-555555555555"}}}
	policies := []directus.Policy{{ID: "33333333-3333-3333-3333-333333333333", Name: "Audit"}, {ID: "55555555-5555-5555-5555-555555555555", Name: "All", AdminAccess: true}}
	m, _, err := bridge.NewMapper(rules, roles, policies)
	if err != nil {
		t.Fatal(err)
	}
	// A rule whose role has admin access without allow_admin: blocked.
	withRoot, _, err := bridge.NewMapper(append(mapping.Rules{{Name: "root", Client: "root-*", Role: "Root"}}, rules...), roles, policies)
	var adminErr *bridge.AdminAccessError
	if !errors.As(err, &adminErr) {
		t.Fatalf("NewMapper: %v, want the root rule blocked", err)
	}
	for _, tc := range []struct {
		name string
		m    *bridge.Mapper
		in   mapping.Input
		code int
	}{
		{"writer", m, mapping.Input{Issuer: "supertokens", Client: "task-service", Scopes: []string{"items:write", "items:read"}}, 0},
		{"reader", m, mapping.Input{Issuer: "auth0", Client: "svc@clients", Scopes: []string{"my_service#read"}}, 0},
		{"denied", m, mapping.Input{Issuer: "auth0", Client: "legacy-app", Scopes: []string{"items:read"}}, 1},
		{"nomatch", m, mapping.Input{Issuer: "auth0", Client: "svc@clients", Scopes: []string{"other"}}, 1},
		{"blocked", withRoot, mapping.Input{Issuer: "auth0", Client: "root-svc", Scopes: []string{"items:read"}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got strings.Builder
			if code := explain(&got, tc.m, tc.in); code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			golden(t, tc.name, got.String())
		})
	}
}

// explainYAML is a configuration for mappings explain; %s is Directus's URL.
// Its Directus token variable is named by tokenEnv; state.path is required
// by the full validation only.
const explainYAML = `directus: {url: %s, token_env: EXPLAIN_TEST_DIRECTUS_TOKEN, timeout: 2s, retries: -1}
state: {path: %s}
issuers:
  - name: auth0
    issuer: https://example.eu.auth0.com/
    audiences: [https://api.example.com]
  - name: supertokens
    issuer: https://auth.example.com/auth
    audiences: [directus, directus-staging]
    user_ids: issuer
    scope_claims: [scp]
rules:
  - {name: blocked, client: "legacy-*", deny: true}
  - {name: writers, issuer: supertokens, all_scopes: [items:write], role: Writers, policies: [Audit]}
  - {name: ops, claims: {team: "ops-*"}, audience: directus, role: Operators}
  - {name: readers, any_scopes: [items:read, "my_service#read"], role: Readers}
`

const tokenEnv = "EXPLAIN_TEST_DIRECTUS_TOKEN"

// writeConfig writes explainYAML for a Directus at url (or contents when
// given) and returns its path.
func writeConfig(t *testing.T, url string, contents ...string) string {
	t.Helper()
	dir := t.TempDir()
	y := fmt.Sprintf(explainYAML, url, filepath.Join(dir, "state.db"))
	if len(contents) > 0 {
		y = contents[0]
	}
	path := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// unsetEnv removes an environment variable for the test.
func unsetEnv(t *testing.T, name string) {
	t.Setenv(name, "") // restored after the test
	os.Unsetenv(name)
}

func runExplain(args ...string) (code int, stdout, stderr string) {
	var out, errOut strings.Builder
	code = run(append([]string{"mappings"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// unreachable is a Directus URL where nothing listens.
const unreachable = "http://127.0.0.1:1"

func TestExplainOfflineGolden(t *testing.T) {
	unsetEnv(t, tokenEnv)
	cfg := writeConfig(t, unreachable)
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"offline-allow", []string{"-issuer", "supertokens", "-client", "task-service", "-scopes", "items:write items:read"}, 0},
		{"offline-deny", []string{"-issuer", "auth0", "-client", "legacy-app", "-scopes", "items:read"}, 1},
		{"offline-nomatch", []string{"-issuer", "auth0", "-client", "svc@clients", "-scopes", "items:write"}, 1},
		{"offline-claim", []string{"-issuer", "supertokens", "-client", "svc", "-audience", "directus", "-claim", "team=core", "-claim", "team=ops-eu"}, 0},
		{"offline-unknown-issuer", []string{"-issuer", "okta", "-client", "svc", "-scopes", "items:read"}, 1},
		{"offline-issuer-url", []string{"-issuer", "https://example.eu.auth0.com/", "-client", "svc", "-scopes", "items:read"}, 1},
		{"offline-unknown-claim", []string{"-issuer", "auth0", "-client", "svc", "-scopes", "items:read", "-claim", "tenant=acme", "-claim", "scp=items:write"}, 0},
		{"offline-unknown-scope", []string{"-issuer", "auth0", "-client", "svc", "-scopes", "items.read items:read"}, 0},
		{"offline-audience", []string{"-issuer", "supertokens", "-client", "svc", "-audience", "https://api.example.com", "-scopes", "items:read"}, 1},
		{"offline-no-client", []string{"-issuer", "auth0", "-scopes", "items:read"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runExplain(append([]string{"explain", "-offline", "-config", cfg}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, errOut)
			}
			if errOut != "" {
				t.Errorf("stderr: %q", errOut)
			}
			golden(t, tc.name, out)
		})
	}
}

// Offline, nothing is asked of Directus and its token may be unset; a
// configuration that the server would refuse for other reasons (no
// state.path, a bad listen address) still explains.
func TestExplainOfflineNeedsNoToken(t *testing.T) {
	unsetEnv(t, tokenEnv)
	fake := directustest.NewServer(t, directustest.Options{})
	y := strings.Replace(fmt.Sprintf(explainYAML, fake.URL, ""), "state: {path: }\n", "listen: nonsense\n", 1)
	cfg := writeConfig(t, "", y)
	code, out, errOut := runExplain("explain", "-offline", "-config", cfg, "-issuer", "auth0", "-client", "svc", "-scopes", "items:read")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, errOut, out)
	}
	if !strings.Contains(out, "decision: ALLOW by rule 4 (readers)") {
		t.Errorf("stdout %q", out)
	}
	if n := fake.Requests(); n != 0 {
		t.Errorf("%d requests reached Directus offline", n)
	}
	// Online the same file is refused, token and all.
	code, _, errOut = runExplain("explain", "-config", cfg, "-issuer", "auth0", "-client", "svc", "-scopes", "items:read")
	if code != 3 || !strings.Contains(errOut, tokenEnv+" is not set") {
		t.Errorf("online: exit %d, stderr %q; want 3 naming the token variable", code, errOut)
	}
}

// Offline, the issuers and rules are validated as the server validates
// them, every problem listed, and nothing else is.
func TestExplainOfflineInvalidConfig(t *testing.T) {
	unsetEnv(t, tokenEnv)
	y := `directus: {url: not-a-url}
issuers:
  - {name: auth0, issuer: https://example.eu.auth0.com/}
  - {name: auth0, issuer: ftp://x, audiences: [a]}
rules:
  - {name: nobody, issuer: okta, any_scopes: [read]}
  - {name: glob, client: 'x\', role: R}
`
	cfg := writeConfig(t, "", y)
	code, out, errOut := runExplain("explain", "-offline", "-config", cfg, "-issuer", "auth0")
	if code != 3 {
		t.Errorf("exit %d, want 3", code)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
	for _, want := range []string{
		`:3: issuers[1].audiences: issuer "auth0": at least one audience is required`,
		`:4: issuers[2].name: issuer "auth0": the name is used twice`,
		`:4: issuers[2].issuer: issuer "auth0": issuer must be an http(s) URL`,
		`:6: rules[1].issuer: names issuer "okta", which is not configured`,
		`:6: rules[1].role: needs a role`,
		`:7: rules[2].client: client pattern`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr does not say %q:\n%s", want, errOut)
		}
	}
	for _, not := range []string{"directus", "state.path"} {
		if strings.Contains(errOut, not) {
			t.Errorf("stderr mentions %q, which explain does not need:\n%s", not, errOut)
		}
	}
	// Offline validation is config check's, restricted to the issuers and
	// rules: everything config check reports there, explain reports too.
	var full strings.Builder
	if code := run([]string{"config", "check", "-config", cfg}, &full, &full); code != 1 {
		t.Fatalf("config check: exit %d", code)
	}
	for _, line := range strings.Split(full.String(), "\n") {
		if strings.Contains(line, ": issuers[") || strings.Contains(line, ": rules[") {
			if !strings.Contains(errOut, strings.TrimSpace(line)) {
				t.Errorf("config check says %q, offline explain does not:\n%s", line, errOut)
			}
		}
	}
}

func newFakeDirectus(t *testing.T) *directustest.Server {
	t.Helper()
	fake := directustest.NewServer(t, directustest.Options{})
	dc, err := directus.New(fake.URL, fake.AdminToken, directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := dc.CreatePolicy(ctx, directus.Policy{Name: "Audit"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"Writers", "Operators", "Readers"} {
		if _, err := dc.CreateRole(ctx, directus.Role{Name: r}); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(tokenEnv, fake.AdminToken)
	return fake
}

var uuidInParens = regexp.MustCompile(` \([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\)`)

// Online and offline give the same decision, reasons, warnings and exit
// code for the same input; online names carry their ids, offline says the
// names were not checked.
func TestExplainOnlineMatchesOffline(t *testing.T) {
	fake := newFakeDirectus(t)
	cfg := writeConfig(t, fake.URL)
	for _, args := range [][]string{
		{"-issuer", "supertokens", "-client", "task-service", "-scopes", "items:write items:read"},
		{"-issuer", "auth0", "-client", "legacy-app", "-scopes", "items:read"},
		{"-issuer", "auth0", "-client", "svc@clients", "-scopes", "items:write"},
		{"-issuer", "supertokens", "-client", "svc", "-audience", "directus", "-claim", "team=ops-eu"},
		{"-issuer", "supertokens", "-client", "svc", "-audience", "directus-staging", "-claim", "team=ops-eu", "-scopes", "my_service#read"},
		{"-issuer", "okta", "-client", "svc", "-scopes", "items:read", "-claim", "tenant=acme"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			onCode, on, onErr := runExplain(append([]string{"explain", "-config", cfg}, args...)...)
			offCode, off, offErr := runExplain(append([]string{"explain", "-offline", "-config", cfg}, args...)...)
			if onErr != "" || offErr != "" {
				t.Fatalf("stderr online %q, offline %q", onErr, offErr)
			}
			if onCode != offCode {
				t.Errorf("exit online %d, offline %d", onCode, offCode)
			}
			if strings.Contains(on, "decision: ALLOW") && !uuidInParens.MatchString(on) {
				t.Errorf("online ALLOW without ids:\n%s", on)
			}
			if !strings.Contains(off, "\noffline: ") {
				t.Errorf("offline output does not say the names were not checked:\n%s", off)
			}
			var offLines []string
			for _, l := range strings.SplitAfter(off, "\n") {
				if !strings.HasPrefix(l, "offline: ") {
					offLines = append(offLines, l)
				}
			}
			if diff := cmp.Diff(uuidInParens.ReplaceAllString(on, ""), strings.Join(offLines, "")); diff != "" {
				t.Errorf("online and offline differ (-online +offline):\n%s", diff)
			}
		})
	}
}

// The exit codes, each outcome of both subcommands.
func TestMappingsExitCodes(t *testing.T) {
	fake := newFakeDirectus(t)
	good := writeConfig(t, fake.URL)
	down := writeConfig(t, unreachable)
	missingRole := writeConfig(t, "", strings.Replace(fmt.Sprintf(explainYAML, fake.URL, "/tmp/x.db"), "role: Operators", "role: Nobody", 1))
	invalid := writeConfig(t, "", strings.Replace(fmt.Sprintf(explainYAML, fake.URL, "/tmp/x.db"), "role: Operators", "", 1))
	// A rule whose role has admin access: blocked, it denies.
	dc, _ := directus.New(fake.URL, fake.AdminToken, directus.Options{})
	all, err := dc.CreatePolicy(context.Background(), directus.Policy{Name: "All", AdminAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.CreateRole(context.Background(), directus.Role{Name: "Root", Policies: []string{all.ID}}); err != nil {
		t.Fatal(err)
	}
	adminRule := writeConfig(t, "", strings.Replace(fmt.Sprintf(explainYAML, fake.URL, "/tmp/x.db"), "role: Operators", "role: Root", 1))
	ops := []string{"-issuer", "supertokens", "-client", "svc", "-audience", "directus", "-claim", "team=ops-1"}
	reader := []string{"-issuer", "auth0", "-client", "svc", "-scopes", "items:read"}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string // a line it must contain
		stderr string
	}{
		{"allow", append([]string{"explain", "-config", good}, reader...), 0, "decision: ALLOW by rule 4 (readers)", ""},
		{"allow offline", append([]string{"explain", "-offline", "-config", down}, reader...), 0, "decision: ALLOW", ""},
		{"deny rule", []string{"explain", "-config", good, "-issuer", "auth0", "-client", "legacy-x"}, 1, "decision: DENY by rule 1 (blocked)", ""},
		{"deny by default", []string{"explain", "-config", good, "-issuer", "auth0", "-client", "svc"}, 1, "decision: DENY (no rule matched", ""},
		{"deny offline", []string{"explain", "-offline", "-config", down, "-issuer", "auth0", "-client", "svc"}, 1, "decision: DENY", ""},
		{"blocked", append([]string{"explain", "-config", adminRule}, ops...), 1, `decision: DENY by rule 3 (ops): its grant is withheld: role "Root" has admin access: refused without allow_admin: true`, ""},
		{"blocked rule warned, other rules grant", append([]string{"explain", "-config", adminRule}, reader...), 0, `warning: rule 3 (ops): role "Root" has admin access: refused without allow_admin: true; the rule denies`, ""},
		{"no -issuer", []string{"explain", "-config", good, "-client", "svc"}, 2, "", "-issuer is required"},
		{"stray argument", append([]string{"explain", "-config", good, "extra"}, reader...), 2, "", `unexpected argument "extra"`},
		{"bad -claim", append([]string{"explain", "-config", good, "-claim", "novalue"}, reader...), 2, "", "want name=value"},
		{"unknown flag", []string{"explain", "-bogus"}, 2, "", "flag provided but not defined"},
		{"no subcommand", []string{}, 2, "", "usage:"},
		{"unknown subcommand", []string{"bogus"}, 2, "", "usage:"},
		{"explain help", []string{"explain", "-h"}, 0, "", "exit codes:"},
		{"check help", []string{"check", "-h"}, 0, "", "exit codes:"},
		{"Directus unreachable", append([]string{"explain", "-config", down}, reader...), 3, "", "add -offline"},
		{"role missing in Directus", append([]string{"explain", "-config", missingRole}, reader...), 3, "", `rule 3 (ops): role "Nobody" does not exist in Directus`},
		{"invalid configuration", append([]string{"explain", "-config", invalid}, reader...), 3, "", "rules[3].role: needs a role"},
		{"invalid configuration offline", append([]string{"explain", "-offline", "-config", invalid}, reader...), 3, "", "rules[3].role: needs a role"},
		{"check ok", []string{"check", "-config", good}, 0, "4 rules ok against " + fake.URL, ""},
		{"check role missing", []string{"check", "-config", missingRole}, 1, "", `role "Nobody" does not exist in Directus`},
		{"check admin access", []string{"check", "-config", adminRule}, 1, "", `role "Root" has admin access`},
		{"check unreachable", []string{"check", "-config", down}, 3, "", "could not be read"},
		{"check invalid", []string{"check", "-config", invalid}, 3, "", "needs a role"},
		{"check stray argument", []string{"check", "-config", good, "extra"}, 2, "", `unexpected argument "extra"`},
		{"check explain flag", []string{"check", "-config", good, "-issuer", "auth0"}, 2, "", "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runExplain(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.stdout) {
				t.Errorf("stdout does not say %q:\n%s", tc.stdout, out)
			}
			if !strings.Contains(errOut, tc.stderr) {
				t.Errorf("stderr does not say %q:\n%s", tc.stderr, errOut)
			}
			if strings.Contains(out+errOut, fake.AdminToken) {
				t.Errorf("the Directus token was printed")
			}
		})
	}
}

// The -h texts, which the docs quote.
func TestMappingsHelpGolden(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_CONFIG", "")
	for _, sub := range []string{"explain", "check"} {
		code, out, errOut := runExplain(sub, "-h")
		if code != 0 {
			t.Errorf("%s -h: exit %d", sub, code)
		}
		golden(t, "help-"+sub, out+errOut)
	}
}
