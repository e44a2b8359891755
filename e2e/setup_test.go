package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/directus"
)

// runSetupBinary runs `directus-bridge setup` against d with env added and
// returns the exit code, stdout and stderr.
func runSetupBinary(t *testing.T, d DirectusInstance, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"setup", "-directus", d.URL}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String()+errOut.String(), d.AdminToken) {
		t.Errorf("setup printed the admin token")
	}
	return code, out.String(), errOut.String()
}

var setupUserLine = regexp.MustCompile(`create user "[^"]+" \(id ([0-9a-f-]{36}),`)

// stackLogin is the stack's admin email and password for d.
func stackLogin(t *testing.T, d DirectusInstance) (email, password string) {
	t.Helper()
	b, err := os.ReadFile(os.Getenv(StackEnv))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Directus []struct {
			Name          string `json:"name"`
			AdminEmail    string `json:"admin_email"`
			AdminPassword string `json:"admin_password"`
		} `json:"directus"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	for _, x := range s.Directus {
		if x.Name == d.Name {
			return x.AdminEmail, x.AdminPassword
		}
	}
	t.Skipf("no admin email for %s in the stack file", d.Name)
	return "", ""
}

// TestSetup runs setup against each real Directus with the admin token:
// it creates the policy, role and user; the token it writes has admin
// access; a second run changes nothing; `serve` works with that token.
func TestSetup(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		ctx := context.Background()
		admin, err := directus.New(d.URL, d.AdminToken, directus.Options{})
		if err != nil {
			t.Fatal(err)
		}
		name := "setup-e2e-" + random()
		env := []string{"DIRECTUS_ADMIN_TOKEN=" + d.AdminToken}
		tokenFile := filepath.Join(t.TempDir(), "bridge.token")
		// Remove what setup created, so the shared stack keeps its seats.
		t.Cleanup(func() {
			if ps, err := admin.PoliciesNamed(ctx, name); err == nil {
				for _, p := range ps {
					raw(t, d, d.AdminToken, "DELETE", "/policies/"+p.ID, nil, nil)
				}
			}
			if rs, err := admin.RolesNamed(ctx, name); err == nil {
				for _, r := range rs {
					raw(t, d, d.AdminToken, "DELETE", "/roles/"+r.ID, nil, nil)
				}
			}
		})

		code, out, errOut := runSetupBinary(t, d, env, "-name", name, "-token-file", tokenFile)
		if code != 0 {
			t.Fatalf("setup: exit %d\n%s%s", code, out, errOut)
		}
		m := setupUserLine.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("setup did not create a user:\n%s", out)
		}
		id := m[1]
		t.Cleanup(func() { _ = admin.DeleteUsers(ctx, []string{id}) })
		for _, want := range []string{
			fmt.Sprintf("create policy %q (admin access, no app access)", name),
			fmt.Sprintf("create role %q with policy %q", name, name),
			"directus:\n  url: " + d.URL + "\n  token_env: DIRECTUS_BRIDGE_DIRECTUS_TOKEN\n",
			"token written to " + tokenFile + " (0600)",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("setup output lacks %q:\n%s", want, out)
			}
		}
		if seat := strings.Contains(out, "one seat"); seat != (d.Major() >= 12) {
			t.Errorf("seat note shown: %v on Directus %d:\n%s", seat, d.Major(), out)
		}
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			t.Fatal(err)
		}
		token := strings.TrimSpace(string(b))
		if st, _ := os.Stat(tokenFile); st.Mode().Perm() != 0o600 {
			t.Errorf("token file mode %v", st.Mode().Perm())
		}
		if strings.Contains(out+errOut, token) {
			t.Errorf("with -token-file the token was printed")
		}

		// The token works and has admin access.
		as, err := directus.New(d.URL, token, directus.Options{})
		if err != nil {
			t.Fatal(err)
		}
		me, err := as.Me(ctx)
		if err != nil || me.ID != id || me.Status != "active" {
			t.Fatalf("GET /users/me with the new token: %+v, %v; want %s, active", me, err, id)
		}
		roles, err := admin.RolesNamed(ctx, name)
		if err != nil || len(roles) != 1 || me.Role != roles[0].ID {
			t.Errorf("the user's role %q; roles named %s: %+v, %v", me.Role, name, roles, err)
		}
		if acc, err := as.MyAccess(ctx); err != nil || !acc.AdminAccess {
			t.Errorf("the new token's access: %+v, %v; want admin access", acc, err)
		}
		policies, err := admin.PoliciesNamed(ctx, name)
		if err != nil || len(policies) != 1 || !policies[0].AdminAccess || policies[0].AppAccess {
			t.Errorf("policies named %s: %+v, %v; want one with admin access and no app access", name, policies, err)
		}
		// It does not look like a machine user: the reconciler and the
		// watcher never touch it.
		u, err := admin.User(ctx, id)
		if err != nil || u.ExternalIdentifier != "" || u.Provider != "default" || u.AuthData != nil || u.Email != "" || u.FirstName != name {
			t.Errorf("the bridge's user: %+v, %v; want no external identifier, auth_data or email, provider default, first name %s", u, err, name)
		}

		// A rerun finds everything and writes nothing.
		before := setupActivity(t, admin, id, roles, policies)
		if before == 0 {
			t.Fatalf("no activity rows for the objects setup created: the no-op check below would prove nothing")
		}
		code, out, errOut = runSetupBinary(t, d, env, "-name", name, "-token-file", tokenFile)
		if code != 0 {
			t.Fatalf("rerun: exit %d\n%s%s", code, out, errOut)
		}
		for _, want := range []string{"exists policy", "exists role", "exists user", "unchanged"} {
			if !strings.Contains(out, want) {
				t.Errorf("rerun output lacks %q:\n%s", want, out)
			}
		}
		for _, bad := range []string{"create ", "fix ", "rotate ", "set a token"} {
			if strings.Contains(out, bad) {
				t.Errorf("rerun output has %q:\n%s", bad, out)
			}
		}
		if after := setupActivity(t, admin, id, roles, policies); after != before {
			t.Errorf("rerun wrote to Directus: %d activity rows before, %d after", before, after)
		}
		if b2, _ := os.ReadFile(tokenFile); string(b2) != string(b) {
			t.Errorf("rerun changed the token file")
		}

		// serve with that token: rules load and an exchange creates a
		// machine user.
		reader, err := admin.CreateRole(ctx, directus.Role{Name: "setup-e2e-reader-" + random()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw(t, d, d.AdminToken, "DELETE", "/roles/"+reader.ID, nil, nil) })
		withToken := d
		withToken.AdminToken = token // startBinary hands it to the bridge and checks its log never shows it
		port := freePort(t)
		p := startBinary(t, withToken, binaryConfig(withToken, port, filepath.Join(t.TempDir(), "s.db"), "1m",
			fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", reader.Name)), port)
		select {
		case err := <-p.done:
			t.Fatalf("serve with the setup token exited: %v\n%s", err, p.logs.String())
		default:
		}
		auth0 := stack.IdP.Issuers["auth0"]
		client, secret := auth0.registerClient(t, "", "items:read", 600)
		t.Cleanup(func() { _ = admin.DeleteUsers(ctx, []string{userID(client + "@clients")}) })
		if r := p.exchange(t, auth0.token(t, client, secret, "", "")); r.status != 200 {
			t.Fatalf("exchange through a bridge on the setup token: %d %v\n%s", r.status, r.body, p.logs.String())
		}
		if mu, err := admin.User(ctx, userID(client+"@clients")); err != nil || mu.Role != reader.ID {
			t.Errorf("machine user: %+v, %v; want role %s", mu, err, reader.ID)
		}

		// Rotation: a new token in the file, the old one refused at once.
		code, out, errOut = runSetupBinary(t, d, env, "-name", name, "-token-file", tokenFile, "-rotate-token")
		if code != 0 || !strings.Contains(out, "rotate the token") {
			t.Fatalf("rotation: exit %d\n%s%s", code, out, errOut)
		}
		b3, _ := os.ReadFile(tokenFile)
		rotated := strings.TrimSpace(string(b3))
		if rotated == token {
			t.Fatalf("rotation left the token file as it was")
		}
		if _, err := as.MyAccess(ctx); directus.Code(err) != directus.CodeInvalidCredentials {
			t.Errorf("the old token after rotation: %v, want INVALID_CREDENTIALS", err)
		}
		as2, _ := directus.New(d.URL, rotated, directus.Options{})
		if acc, err := as2.MyAccess(ctx); err != nil || !acc.AdminAccess {
			t.Errorf("the rotated token: %+v, %v", acc, err)
		}
	})
}

// setupActivity counts the activity rows of the bridge's user, role and
// policy.
func setupActivity(t *testing.T, admin *directus.Client, user string, roles []directus.Role, policies []directus.Policy) int {
	t.Helper()
	items := []string{user}
	for _, r := range roles {
		items = append(items, r.ID)
	}
	for _, p := range policies {
		items = append(items, p.ID)
	}
	n := 0
	for _, item := range items {
		acts, err := admin.Activity(context.Background(), directus.ActivityFilter{Item: item}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n += len(acts)
	}
	return n
}

// TestSetupCredentials: email and password work (dry run), a wrong
// password and a non-admin token are refused with one line and exit 1.
func TestSetupCredentials(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		email, password := stackLogin(t, d)
		name := "setup-e2e-" + random()
		code, out, errOut := runSetupBinary(t, d, []string{"DIRECTUS_ADMIN_TOKEN=", "DIRECTUS_ADMIN_PASSWORD=" + password},
			"-name", name, "-admin-email", email, "-dry-run")
		if code != 0 || !strings.Contains(out, fmt.Sprintf("would create policy %q", name)) {
			t.Errorf("dry run with email and password: exit %d\n%s%s", code, out, errOut)
		}
		if strings.Contains(out+errOut, password) {
			t.Errorf("setup printed the password")
		}
		wrong := "wrong-" + random()
		code, out, errOut = runSetupBinary(t, d, []string{"DIRECTUS_ADMIN_PASSWORD=" + wrong}, "-name", name, "-admin-email", email)
		if code != 1 || !strings.Contains(errOut, "email or password") || strings.Contains(out+errOut, wrong) {
			t.Errorf("wrong password: exit %d\n%s%s", code, out, errOut)
		}

		// A user without admin access.
		admin, err := directus.New(d.URL, d.AdminToken, directus.Options{})
		if err != nil {
			t.Fatal(err)
		}
		plain := "plain-" + random() + random()
		u, err := admin.CreateUser(context.Background(), directus.NewUser{ID: uuid.NewString(), Token: plain, FirstName: "setup-e2e"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.DeleteUsers(context.Background(), []string{u.ID}) })
		code, out, errOut = runSetupBinary(t, d, []string{"DIRECTUS_ADMIN_TOKEN=" + plain}, "-name", name)
		if code != 1 || !strings.Contains(errOut, "no admin access") {
			t.Errorf("non-admin token: exit %d\n%s%s", code, out, errOut)
		}
		if ps, err := admin.PoliciesNamed(context.Background(), name); err != nil || len(ps) != 0 {
			t.Errorf("a refused run left policies: %v %v", ps, err)
		}
	})
}
