package main

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
)

// A user someone else created at the bridge's id (the namespace is public)
// with a token they know must not end up with admin access on that token.
func TestSetupPlantedUserKeepsNoAdminToken(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	ctx := context.Background()
	admin := adminClient(t, fake)
	people, err := admin.CreateRole(ctx, directus.Role{Name: "people"})
	if err != nil {
		t.Fatal(err)
	}
	planted := "planted-" + strings.Repeat("x", 40)
	id := bridgeUserID("directus-bridge")
	if _, err := admin.CreateUser(ctx, directus.NewUser{ID: id, Status: "active", Role: people.ID, Token: planted}); err != nil {
		t.Fatal(err)
	}
	r := runSetup(t, fake, nil)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got, err := myAccess(t, fake, planted); err == nil && got.AdminAccess {
		t.Errorf("the token the user had before setup has admin access after it:\n%s", r.stdout)
	}
	tok := printedToken(r)
	if got, err := myAccess(t, fake, tok); err != nil || !got.AdminAccess {
		t.Errorf("the printed token %q: %+v, %v; want admin access\n%s", tok, got, err, r.stdout)
	}
}

// A suspended bridge user (its token leaked, say) that setup reactivates
// gets a new token: the suspended one stays dead.
func TestSetupReactivatedUserGetsNewToken(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	first := runSetup(t, fake, nil)
	old := printedToken(first)
	id := bridgeUserID("directus-bridge")
	if _, err := adminClient(t, fake).UpdateUser(context.Background(), id, directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	r := runSetup(t, fake, nil)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := myAccess(t, fake, old); err == nil {
		t.Errorf("the suspended user's old token works again after setup:\n%s", r.stdout)
	}
}

// A person (email and password) at the bridge's id is not made an admin.
func TestSetupRefusesPersonAtBridgeID(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	ctx := context.Background()
	admin := adminClient(t, fake)
	id := bridgeUserID("directus-bridge")
	if _, err := admin.CreateUser(ctx, directus.NewUser{ID: id, Status: "active", Email: "mallory@example.com", Password: "mallory-password"}); err != nil {
		t.Fatal(err)
	}
	r := runSetup(t, fake, nil)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	mustContain(t, "stderr", r.stderr, id, "email", "nothing was changed")
	if st := fake.Snapshot()[id]; st.Role != "" {
		t.Errorf("the person's role changed to %q", st.Role)
	}
}

// A machine user of the bridge (external identifier) at that id neither.
func TestSetupRefusesMachineUserAtBridgeID(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	id := bridgeUserID("directus-bridge")
	if _, err := adminClient(t, fake).CreateUser(context.Background(), directus.NewUser{ID: id, Status: "active", ExternalIdentifier: "svc-a"}); err != nil {
		t.Fatal(err)
	}
	fake.ResetRequests()
	r := runSetup(t, fake, nil)
	if r.code != 1 || fake.Writes() != 0 {
		t.Fatalf("exit %d, %d writes; want 1, none\n%s%s", r.code, fake.Writes(), r.stdout, r.stderr)
	}
	mustContain(t, "stderr", r.stderr, "external identifier")
}

// A policy of that name that others hold is not given admin access.
func TestSetupRefusesPolicyOthersHold(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	ctx := context.Background()
	admin := adminClient(t, fake)
	p, err := admin.CreatePolicy(ctx, directus.Policy{Name: "directus-bridge", AppAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateRole(ctx, directus.Role{Name: "editors", Policies: []string{p.ID}}); err != nil {
		t.Fatal(err)
	}
	fake.ResetRequests()
	r := runSetup(t, fake, nil)
	if r.code != 1 || fake.Writes() != 0 {
		t.Fatalf("exit %d, %d writes; want 1, none\n%s%s", r.code, fake.Writes(), r.stdout, r.stderr)
	}
	mustContain(t, "stderr", r.stderr, `role "editors"`, "nothing was changed")
}

// A role of that name with people in it is not given admin access.
func TestSetupRefusesRoleOthersHave(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	ctx := context.Background()
	admin := adminClient(t, fake)
	role, err := admin.CreateRole(ctx, directus.Role{Name: "directus-bridge"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateUser(ctx, directus.NewUser{ID: "0b0b0b0b-0000-4000-8000-000000000001", Status: "active", Role: role.ID}); err != nil {
		t.Fatal(err)
	}
	child, err := admin.CreateRole(ctx, directus.Role{Name: "below", Parent: role.ID})
	if err != nil {
		t.Fatal(err)
	}
	_ = child
	fake.ResetRequests()
	r := runSetup(t, fake, nil)
	if r.code != 1 || fake.Writes() != 0 {
		t.Fatalf("exit %d, %d writes; want 1, none\n%s%s", r.code, fake.Writes(), r.stdout, r.stderr)
	}
	mustContain(t, "stderr", r.stderr, "0b0b0b0b-0000-4000-8000-000000000001", `role "below"`, "nothing was changed")
}

// The answer to the user's creation is lost: Directus holds the token, the
// file was never written. The next run must not report the file as kept.
func TestSetupLostAnswerThenRerun(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	file := t.TempDir() + "/bridge.token"
	var once sync.Once
	fake.SetFault(func(r *http.Request) directustest.Fault {
		f := directustest.Fault{}
		if r.Method == http.MethodPost && r.URL.Path == "/users" {
			once.Do(func() { f = directustest.Fault{Drop: true} })
		}
		return f
	})
	first := runSetup(t, fake, nil, "-token-file", file)
	fake.SetFault(nil)
	t.Logf("first run: exit %d\n%s%s", first.code, first.stdout, first.stderr)
	if _, err := os.Stat(file); err == nil {
		b, _ := os.ReadFile(file)
		if got, err := myAccess(t, fake, strings.TrimSpace(string(b))); err != nil || !got.AdminAccess {
			t.Fatalf("the token file's token does not work: %+v, %v", got, err)
		}
		return
	}
	if first.code == 0 {
		t.Fatalf("first run: exit 0 and no token file")
	}
	r := runSetup(t, fake, nil, "-token-file", file)
	if _, err := os.Stat(file); err != nil && r.code == 0 {
		t.Errorf("rerun: exit 0 and %s does not exist:\n%s%s", file, r.stdout, r.stderr)
	}
	if _, err := os.Stat(file); err != nil && !strings.Contains(r.stderr, "-rotate-token") {
		t.Errorf("rerun: no word of -rotate-token:\n%s%s", r.stdout, r.stderr)
	}
	if r := runSetup(t, fake, nil, "-token-file", file, "-rotate-token"); r.code != 0 {
		t.Fatalf("rerun with -rotate-token: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	b, _ := os.ReadFile(file)
	if got, err := myAccess(t, fake, strings.TrimSpace(string(b))); err != nil || !got.AdminAccess {
		t.Errorf("after -rotate-token the file's token: %+v, %v", got, err)
	}
}

// Credentials in -directus are refused (exit 2), never printed.
func TestSetupRefusesCredentialsInURL(t *testing.T) {
	t.Setenv("DIRECTUS_ADMIN_TOKEN", "admintoken")
	var out, errOut strings.Builder
	code := run([]string{"setup", "-directus", "https://admin:s3cret-pw@directus.example.com"}, &out, &errOut)
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if strings.Contains(out.String()+errOut.String(), "s3cret-pw") {
		t.Fatalf("the password was printed:\n%s%s", out.String(), errOut.String())
	}
}
