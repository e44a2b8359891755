package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
)

// setupRun is one `directus-bridge setup` run against a fake.
type setupRun struct {
	code           int
	stdout, stderr string
}

// runSetup runs setup against fake with the admin token in
// DIRECTUS_ADMIN_TOKEN (unless env sets it) and checks the rules every run
// keeps: no secret on stderr, the admin token never printed.
func runSetup(t *testing.T, fake *directustest.Server, env map[string]string, args ...string) setupRun {
	t.Helper()
	if _, ok := env["DIRECTUS_ADMIN_TOKEN"]; !ok {
		t.Setenv("DIRECTUS_ADMIN_TOKEN", fake.AdminToken)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errOut strings.Builder
	code := run(append([]string{"setup", "-directus", fake.URL}, args...), &out, &errOut)
	r := setupRun{code: code, stdout: out.String(), stderr: errOut.String()}
	for _, u := range fake.Snapshot() {
		if u.Token != nil && strings.Contains(r.stderr, *u.Token) {
			t.Errorf("a static token reached stderr:\n%s", r.stderr)
		}
		if u.Token != nil && *u.Token == fake.AdminToken && strings.Contains(r.stdout, *u.Token) {
			t.Errorf("the admin token reached stdout")
		}
	}
	for _, v := range env {
		if v != "" && (strings.Contains(r.stdout, v) || strings.Contains(r.stderr, v)) {
			t.Errorf("a credential from the environment was printed:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
		}
	}
	return r
}

var exportLine = regexp.MustCompile(`(?m)^export DIRECTUS_BRIDGE_DIRECTUS_TOKEN=(\S+)$`)

// printedToken returns the token setup printed on stdout, or "".
func printedToken(r setupRun) string {
	m := exportLine.FindStringSubmatch(r.stdout)
	if m == nil {
		return ""
	}
	return m[1]
}

func bridgeUserID(name string) string { return uuid.NewSHA1(setupNamespace, []byte(name)).String() }

func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q:\n%s", what, sub, s)
		}
	}
}

func adminClient(t *testing.T, fake *directustest.Server) *directus.Client {
	t.Helper()
	c, err := directus.New(fake.URL, fake.AdminToken, directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// myAccess reads what token may do in fake.
func myAccess(t *testing.T, fake *directustest.Server, token string) (directus.AccessFlags, error) {
	t.Helper()
	c, err := directus.New(fake.URL, token, directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c.MyAccess(context.Background())
}

func TestSetupCreatesThenChangesNothing(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	r := runSetup(t, fake, nil)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	id := bridgeUserID("directus-bridge")
	mustContain(t, "stdout", r.stdout,
		`create policy "directus-bridge" (admin access, no app access)`,
		`create role "directus-bridge" with policy "directus-bridge"`,
		`create user "directus-bridge" (id `+id+`, role "directus-bridge", active, static token)`,
		"one seat",
		"directus:\n  url: "+fake.URL+"\n  token_env: DIRECTUS_BRIDGE_DIRECTUS_TOKEN\n")
	mustContain(t, "stderr", r.stderr, "will not be shown again")
	tok := printedToken(r)
	if tok == "" {
		t.Fatalf("no token printed:\n%s", r.stdout)
	}
	if len(tok) < 43 || strings.Count(tok, ".") > 0 {
		t.Errorf("token %q: want 32 random bytes, opaque (not a JWT)", tok)
	}
	st := fake.Snapshot()[id]
	if st.Token == nil || *st.Token != tok || st.Status != "active" || st.ExternalIdentifier != "" || st.AuthData != nil || len(st.Policies) != 0 {
		t.Errorf("bridge user in Directus: %+v; want active, the printed token, no external identifier, auth_data or own policies", st)
	}
	u, err := adminClient(t, fake).User(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if u.Provider != "default" || u.FirstName != "directus-bridge" || u.Email != "" {
		t.Errorf("bridge user: provider %q first name %q email %q; want default, directus-bridge, none", u.Provider, u.FirstName, u.Email)
	}
	if id == uuid.NewSHA1(uuid.Nil, []byte("directus-bridge")).String() {
		t.Errorf("the user id is in the NIL namespace, where machine users' ids live")
	}
	policies, _ := adminClient(t, fake).PoliciesNamed(context.Background(), "directus-bridge")
	if len(policies) != 1 || !policies[0].AdminAccess || policies[0].AppAccess {
		t.Errorf("policies named directus-bridge: %+v; want one, admin access, no app access", policies)
	}
	if got, err := myAccess(t, fake, tok); err != nil || !got.AdminAccess {
		t.Errorf("the new token: %+v, %v; want admin access", got, err)
	}

	fake.ResetRequests()
	again := runSetup(t, fake, nil)
	if again.code != 0 {
		t.Fatalf("rerun: exit %d\n%s%s", again.code, again.stdout, again.stderr)
	}
	if w := fake.Writes(); w != 0 {
		t.Errorf("rerun wrote %d times: %v", w, fake.RequestsBy())
	}
	mustContain(t, "rerun stdout", again.stdout,
		`exists policy "directus-bridge"`, `exists role "directus-bridge"`, `exists user "directus-bridge"`,
		"unchanged", "-rotate-token", "token_env: DIRECTUS_BRIDGE_DIRECTUS_TOKEN")
	if printedToken(again) != "" || strings.Contains(again.stdout, "create ") {
		t.Errorf("rerun printed a token or a create:\n%s", again.stdout)
	}
	if st := fake.Snapshot()[id]; st.Token == nil || *st.Token != tok {
		t.Errorf("rerun changed the token")
	}
}

func TestSetupDryRunWritesNothing(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	tokenFile := filepath.Join(t.TempDir(), "tok")
	r := runSetup(t, fake, nil, "-dry-run", "-token-file", tokenFile)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if w := fake.Writes(); w != 0 {
		t.Errorf("dry run wrote %d times: %v", w, fake.RequestsBy())
	}
	mustContain(t, "stdout", r.stdout, `would create policy "directus-bridge" (admin access, no app access)`,
		`would create role "directus-bridge"`, `would create user "directus-bridge"`)
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, "create ") || strings.HasPrefix(line, "token written") {
			t.Errorf("dry run reports a change as done: %q", line)
		}
	}
	if printedToken(r) != "" {
		t.Errorf("dry run printed a token")
	}
	if _, err := os.Stat(tokenFile); err == nil {
		t.Errorf("dry run wrote the token file")
	}
	// After a real run, a dry rotation writes nothing either.
	if r := runSetup(t, fake, nil); r.code != 0 {
		t.Fatalf("setup: %d %s", r.code, r.stderr)
	}
	fake.ResetRequests()
	r = runSetup(t, fake, nil, "-dry-run", "-rotate-token")
	if r.code != 0 || fake.Writes() != 0 {
		t.Errorf("dry rotation: exit %d, %d writes", r.code, fake.Writes())
	}
	mustContain(t, "dry rotation", r.stdout, `would rotate the token of user "directus-bridge"`)
}

func TestSetupRotateToken(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	first := printedToken(runSetup(t, fake, nil))
	r := runSetup(t, fake, nil, "-rotate-token")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	mustContain(t, "stdout", r.stdout, `rotate the token of user "directus-bridge"`, `exists user "directus-bridge"`)
	second := printedToken(r)
	if second == "" || second == first {
		t.Fatalf("rotation printed %q (first %q)", second, first)
	}
	if _, err := myAccess(t, fake, first); directus.Code(err) != directus.CodeInvalidCredentials {
		t.Errorf("the old token after rotation: %v, want INVALID_CREDENTIALS", err)
	}
	if got, err := myAccess(t, fake, second); err != nil || !got.AdminAccess {
		t.Errorf("the new token: %+v, %v", got, err)
	}
}

func TestSetupExistingUserWithoutTokenGetsOne(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	runSetup(t, fake, nil)
	id := bridgeUserID("directus-bridge")
	if _, err := adminClient(t, fake).UpdateUser(context.Background(), id, directus.UserChange{Token: directus.Ptr("")}); err != nil {
		t.Fatal(err)
	}
	r := runSetup(t, fake, nil)
	mustContain(t, "stdout", r.stdout, `set a token for user "directus-bridge" (it has none)`)
	if tok := printedToken(r); tok == "" || fake.Snapshot()[id].Token == nil || *fake.Snapshot()[id].Token != tok {
		t.Errorf("no new token, or not the one printed")
	}
}

func TestSetupFixesWhatIsWrong(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	runSetup(t, fake, nil)
	ctx := context.Background()
	admin := adminClient(t, fake)
	id := bridgeUserID("directus-bridge")
	other, err := admin.CreateRole(ctx, directus.Role{Name: "someone-else"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UpdateUser(ctx, id, directus.UserChange{Role: &other.ID, Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	p, _ := admin.PoliciesNamed(ctx, "directus-bridge")
	if _, err := admin.SetPolicyAccess(ctx, p[0].ID, directus.AccessFlags{AppAccess: true}); err != nil {
		t.Fatal(err)
	}
	// Detach the policy from the role.
	roles, _ := admin.RolesNamed(ctx, "directus-bridge")
	rows := roleAccessRows(t, fake, roles[0].ID)
	if len(rows) != 1 {
		t.Fatalf("the role's access rows: %v, want one", rows)
	}
	for _, row := range rows {
		if err := admin.DeleteAccess(ctx, row); err != nil {
			t.Fatal(err)
		}
	}
	r := runSetup(t, fake, nil)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	mustContain(t, "stdout", r.stdout,
		`fix policy "directus-bridge": admin access on, app access off (was: admin access off, app access on)`,
		`fix role "directus-bridge": attach policy "directus-bridge"`,
		`fix user "directus-bridge": role "someone-else" -> "directus-bridge", status suspended -> active`)
	st := fake.Snapshot()[id]
	if st.Role != roles[0].ID || st.Status != "active" {
		t.Errorf("after the fix: %+v", st)
	}
	if got, err := myAccess(t, fake, *st.Token); err != nil || !got.AdminAccess {
		t.Errorf("the token after the fix: %+v, %v", got, err)
	}
	fake.ResetRequests()
	if r := runSetup(t, fake, nil); r.code != 0 || fake.Writes() != 0 || strings.Contains(r.stdout, "fix ") {
		t.Errorf("run after the fix: exit %d, %d writes:\n%s", r.code, fake.Writes(), r.stdout)
	}
}

// roleAccessRows lists the ids of a role's access rows (GET /access).
func roleAccessRows(t *testing.T, fake *directustest.Server, role string) []string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, fake.URL+"/access?fields=id,role&limit=-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+fake.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data []struct {
			ID   string  `json:"id"`
			Role *string `json:"role"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, row := range body.Data {
		if row.Role != nil && *row.Role == role {
			ids = append(ids, row.ID)
		}
	}
	return ids
}

func TestSetupAmbiguousPolicyChangesNothing(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	admin := adminClient(t, fake)
	for range 2 {
		if _, err := admin.CreatePolicy(context.Background(), directus.Policy{Name: "directus-bridge", AdminAccess: true}); err != nil {
			t.Fatal(err)
		}
	}
	fake.ResetRequests()
	r := runSetup(t, fake, nil)
	if r.code != 1 || fake.Writes() != 0 {
		t.Errorf("exit %d, %d writes; want 1 and none", r.code, fake.Writes())
	}
	mustContain(t, "stderr", r.stderr, `2 policies are named "directus-bridge"`)
}

func TestSetupRefusesNonAdmin(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	plain := "plain-" + uuid.NewString()
	if _, err := adminClient(t, fake).CreateUser(context.Background(), directus.NewUser{ID: uuid.NewString(), Token: plain}); err != nil {
		t.Fatal(err)
	}
	fake.ResetRequests()
	r := runSetup(t, fake, map[string]string{"DIRECTUS_ADMIN_TOKEN": plain})
	if r.code != 1 || fake.Writes() != 0 {
		t.Errorf("exit %d, %d writes; want 1 and none", r.code, fake.Writes())
	}
	mustContain(t, "stderr", r.stderr, "no admin access", "DIRECTUS_ADMIN_TOKEN")
	if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 {
		t.Errorf("want one line on stderr, got:\n%s", r.stderr)
	}
}

func TestSetupBadCredentials(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{AdminEmail: "admin@example.com", AdminPassword: "right-" + uuid.NewString()})
	r := runSetup(t, fake, map[string]string{"DIRECTUS_ADMIN_TOKEN": "not-a-token-" + uuid.NewString()})
	if r.code != 1 || fake.Writes() != 0 {
		t.Errorf("bad token: exit %d, %d writes", r.code, fake.Writes())
	}
	mustContain(t, "bad token stderr", r.stderr, "refused the token in DIRECTUS_ADMIN_TOKEN", "401")

	fake.ResetRequests()
	r = runSetup(t, fake, map[string]string{"DIRECTUS_ADMIN_PASSWORD": "wrong-" + uuid.NewString()}, "-admin-email", "admin@example.com")
	if r.code != 1 {
		t.Errorf("wrong password: exit %d", r.code)
	}
	if by := fake.RequestsBy(); fake.Writes() != by["POST /auth/login"] {
		t.Errorf("wrong password: writes besides the login: %v", by)
	}
	mustContain(t, "wrong password stderr", r.stderr, "email or password", "admin@example.com", "DIRECTUS_ADMIN_PASSWORD")
}

func TestSetupWithEmailAndPassword(t *testing.T) {
	pw := "right-" + uuid.NewString()
	fake := directustest.NewServer(t, directustest.Options{AdminEmail: "admin@example.com", AdminPassword: pw})
	r := runSetup(t, fake, map[string]string{"DIRECTUS_ADMIN_TOKEN": "", "DIRECTUS_ADMIN_PASSWORD": pw}, "-admin-email", "admin@example.com", "-name", "bridge-two")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	mustContain(t, "stdout", r.stdout, `create user "bridge-two"`)
	if got, err := myAccess(t, fake, printedToken(r)); err != nil || !got.AdminAccess {
		t.Errorf("the new token: %+v, %v", got, err)
	}
}

func TestSetupTokenFile(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	path := filepath.Join(t.TempDir(), "bridge.token")
	r := runSetup(t, fake, nil, "-token-file", path)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	mustContain(t, "stdout", r.stdout, "token written to "+path+` (0600); export DIRECTUS_BRIDGE_DIRECTUS_TOKEN="$(cat `+path+`)"`)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	id := bridgeUserID("directus-bridge")
	held := fake.Snapshot()[id].Token
	if held == nil || strings.TrimSpace(string(b)) != *held {
		t.Fatalf("token file does not hold the user's token")
	}
	if strings.Contains(r.stdout, *held) || printedToken(r) != "" {
		t.Errorf("with -token-file the token reached stdout")
	}
	// Rerun: the file stays as it is.
	r = runSetup(t, fake, nil, "-token-file", path)
	if b2, _ := os.ReadFile(path); r.code != 0 || string(b2) != string(b) {
		t.Errorf("rerun: exit %d, file changed", r.code)
	}
	// Rotation replaces the file, still 0600.
	r = runSetup(t, fake, nil, "-token-file", path, "-rotate-token")
	b3, _ := os.ReadFile(path)
	if r.code != 0 || string(b3) == string(b) || strings.TrimSpace(string(b3)) != *fake.Snapshot()[id].Token {
		t.Errorf("rotation: exit %d, file not replaced with the new token\n%s", r.code, r.stderr)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("rotated token file mode %v", st.Mode().Perm())
	}
}

func TestSetupTokenFileNeverOverwritten(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	path := filepath.Join(t.TempDir(), "bridge.token")
	if err := os.WriteFile(path, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runSetup(t, fake, nil, "-token-file", path)
	if r.code != 1 || fake.Writes() != 0 {
		t.Errorf("exit %d, %d writes; want 1 and none", r.code, fake.Writes())
	}
	mustContain(t, "stderr", r.stderr, path, "exists", "-rotate-token")
	if b, _ := os.ReadFile(path); string(b) != "keep me\n" {
		t.Errorf("the existing file was overwritten")
	}
}

func TestSetupUnreachableAndUsage(t *testing.T) {
	var out, errOut strings.Builder
	t.Setenv("DIRECTUS_ADMIN_TOKEN", "x")
	if code := run([]string{"setup", "-directus", "http://127.0.0.1:1"}, &out, &errOut); code != 1 {
		t.Errorf("unreachable: exit %d", code)
	}
	mustContain(t, "unreachable stderr", errOut.String(), "cannot reach Directus at http://127.0.0.1:1")
	for _, tc := range []struct {
		args []string
		env  string
		code int
	}{
		{args: []string{"setup", "-h"}, env: "x", code: 0},
		{args: []string{"setup"}, env: "x", code: 2},
		{args: []string{"setup", "-directus", "not a url"}, env: "x", code: 2},
		{args: []string{"setup", "-directus", "http://127.0.0.1:1", "extra"}, env: "x", code: 2},
		{args: []string{"setup", "-directus", "http://127.0.0.1:1", "-name", ""}, env: "x", code: 2},
		{args: []string{"setup", "-directus", "http://127.0.0.1:1"}, env: "", code: 2},
		{args: []string{"setup", "-directus", "http://127.0.0.1:1", "-bogus"}, env: "x", code: 2},
	} {
		t.Setenv("DIRECTUS_ADMIN_TOKEN", tc.env)
		t.Setenv("DIRECTUS_ADMIN_PASSWORD", "")
		var out, errOut strings.Builder
		if code := run(tc.args, &out, &errOut); code != tc.code {
			t.Errorf("%v (token %q): exit %d, want %d\n%s", tc.args, tc.env, code, tc.code, errOut.String())
		}
	}
}
