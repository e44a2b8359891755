package conformance

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/directus"
)

// The cases here pin down what `directus-bridge setup` relies on: telling
// an administrator's credentials from others (MyAccess, Login), finding
// its policy and role by name, mending them, and creating the bridge's own
// user: a role with an admin policy, a static token, no email.

// myAccess: /policies/me/globals answers every token holder with its
// access flags, through its role's policies too; a bad token is refused.
func (s *suite) myAccess(t *testing.T) {
	ctx := t.Context()
	got, err := s.admin.MyAccess(ctx)
	if err != nil {
		t.Fatalf("MyAccess(admin): %v", err)
	}
	if !got.AdminAccess {
		t.Errorf("MyAccess(admin) = %+v, want admin access", got)
	}
	plain := s.newUser(t)
	plain.Token = token()
	s.create(t, plain)
	got, err = s.as(t, plain.Token).MyAccess(ctx)
	if err != nil {
		t.Fatalf("MyAccess(user without policies): %v", err)
	}
	if got != (directus.AccessFlags{}) {
		t.Errorf("MyAccess(user without policies) = %+v, want none", got)
	}
	// The bridge's own user, as setup creates it: a role holding a policy
	// with admin access and no app access, a static token, no email, no
	// external identifier. (On Directus 12 Core it takes a seat while it
	// exists.)
	name := "conformance-bridge-" + random()
	p, err := s.admin.CreatePolicy(ctx, directus.Policy{Name: name, AdminAccess: true})
	if err != nil {
		t.Fatalf("CreatePolicy: %v", err)
	}
	role, err := s.admin.CreateRole(ctx, directus.Role{Name: name, Policies: []string{p.ID}})
	if err != nil {
		t.Fatalf("CreateRole: %v", err)
	}
	bridge := s.newUser(t)
	bridge.ExternalIdentifier, bridge.LastName = "", ""
	bridge.FirstName, bridge.Role, bridge.Status, bridge.Token = name, role.ID, "active", token()
	created, err := s.admin.CreateUser(ctx, bridge)
	if err != nil {
		t.Fatalf("CreateUser(role with admin access): %v", err)
	}
	if created.Role != role.ID || created.Provider != "default" || created.ExternalIdentifier != "" || created.Email != "" || !created.HasToken || created.AuthData != nil {
		t.Errorf("created bridge user = %+v; want role %s, provider default, no external identifier, email or auth_data, a token", created, role.ID)
	}
	as := s.as(t, bridge.Token)
	got, err = as.MyAccess(ctx)
	if err != nil {
		t.Fatalf("MyAccess(user of an admin role): %v", err)
	}
	// Directus reports admin access as app access too, although the policy
	// has none (and seats are counted by the policies' flags).
	if want := (directus.AccessFlags{AdminAccess: true, AppAccess: true}); got != want {
		t.Errorf("MyAccess(user of an admin role) = %+v, want %+v", got, want)
	}
	// Admin access is real: it reads other users and their roles.
	if u, err := as.User(ctx, plain.ID); err != nil || u.ID != plain.ID {
		t.Errorf("the admin role's user reading another user: %+v, %v", u, err)
	}
	if _, err := as.Roles(ctx); err != nil {
		t.Errorf("the admin role's user listing roles: %v", err)
	}
	// Without a token Directus answers the public's flags.
	if got, err := s.as(t, "").MyAccess(ctx); err != nil || got != (directus.AccessFlags{}) {
		t.Errorf("MyAccess without a token: %+v, %v; want no access", got, err)
	}
	bad := s.as(t, "not-a-token-"+random())
	if _, err := bad.MyAccess(ctx); directus.Code(err) != directus.CodeInvalidCredentials {
		t.Errorf("MyAccess with a bad token: got %v, want INVALID_CREDENTIALS", err)
	}
}

// login: email and password give an access token that acts as the user;
// a wrong password or an unknown email is INVALID_CREDENTIALS, and the
// password is never echoed.
func (s *suite) login(t *testing.T) {
	ctx := t.Context()
	u := s.newUser(t)
	u.Email = "conformance-" + random() + "@example.com"
	u.Password = "pw-" + random() + random()
	s.create(t, u)
	if got := s.read(t, u.ID).Email; got != u.Email {
		t.Errorf("email read back: %q, want %q", got, u.Email)
	}
	anon := s.as(t, "")
	tok, err := anon.Login(ctx, u.Email, u.Password)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	if tok == "" || tok == u.Password {
		t.Fatalf("Login returned %q", tok)
	}
	as := s.as(t, tok)
	me, err := as.Me(ctx)
	if err != nil || me.ID != u.ID {
		t.Errorf("Me with the access token: %+v, %v; want %s", me, err, u.ID)
	}
	if got, err := as.MyAccess(ctx); err != nil || got.AdminAccess {
		t.Errorf("MyAccess with a non-admin's access token: %+v, %v; want no admin access", got, err)
	}
	wrong := "wrong-" + random()
	_, err = anon.Login(ctx, u.Email, wrong)
	if directus.Code(err) != directus.CodeInvalidCredentials {
		t.Errorf("Login with a wrong password: got %v, want INVALID_CREDENTIALS", err)
	}
	if err != nil && strings.Contains(err.Error(), wrong) {
		t.Errorf("the error echoes the password: %v", err)
	}
	if _, err := anon.Login(ctx, "nobody-"+random()+"@example.com", wrong); directus.Code(err) != directus.CodeInvalidCredentials {
		t.Errorf("Login with an unknown email: got %v, want INVALID_CREDENTIALS", err)
	}
}

// byName: policy and role names are not unique; PoliciesNamed and
// RolesNamed list every match, exactly (no prefix or case folding).
func (s *suite) byName(t *testing.T) {
	ctx := t.Context()
	name := "conformance-named-" + random()
	var ids []string
	for range 2 {
		p, err := s.admin.CreatePolicy(ctx, directus.Policy{Name: name})
		if err != nil {
			t.Fatalf("CreatePolicy: %v", err)
		}
		ids = append(ids, p.ID)
	}
	if _, err := s.admin.CreatePolicy(ctx, directus.Policy{Name: name + "-other"}); err != nil {
		t.Fatal(err)
	}
	first := ids[0]
	role, err := s.admin.CreateRole(ctx, directus.Role{Name: name, Policies: []string{first}})
	if err != nil {
		t.Fatalf("CreateRole: %v", err)
	}
	got, err := s.admin.PoliciesNamed(ctx, name)
	if err != nil {
		t.Fatalf("PoliciesNamed: %v", err)
	}
	var gotIDs []string
	for _, p := range got {
		gotIDs = append(gotIDs, p.ID)
		if p.Name != name {
			t.Errorf("PoliciesNamed(%q) listed %q", name, p.Name)
		}
	}
	sortStrings(ids)
	sortStrings(gotIDs)
	if diff := cmp.Diff(ids, gotIDs); diff != "" {
		t.Errorf("PoliciesNamed (-want +got):\n%s", diff)
	}
	roles, err := s.admin.RolesNamed(ctx, name)
	if err != nil {
		t.Fatalf("RolesNamed: %v", err)
	}
	if diff := cmp.Diff([]directus.Role{{ID: role.ID, Name: name, Policies: []string{first}}}, roles); diff != "" {
		t.Errorf("RolesNamed (-want +got):\n%s", diff)
	}
	for _, other := range []string{strings.ToUpper(name), name[:len(name)-1], "conformance-none-" + random()} {
		if ps, err := s.admin.PoliciesNamed(ctx, other); err != nil || len(ps) != 0 {
			t.Errorf("PoliciesNamed(%q) = %v, %v; want none", other, ps, err)
		}
		if rs, err := s.admin.RolesNamed(ctx, other); err != nil || len(rs) != 0 {
			t.Errorf("RolesNamed(%q) = %v, %v; want none", other, rs, err)
		}
	}
}

// mendRoleAndPolicy: a role gains a policy through POST /access, and a
// policy's access flags can be set.
func (s *suite) mendRoleAndPolicy(t *testing.T) {
	ctx := t.Context()
	name := "conformance-mend-" + random()
	p, err := s.admin.CreatePolicy(ctx, directus.Policy{Name: name, AppAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	role, err := s.admin.CreateRole(ctx, directus.Role{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	row, err := s.admin.AttachRolePolicy(ctx, role.ID, p.ID)
	if err != nil || row == "" {
		t.Fatalf("AttachRolePolicy: %q, %v", row, err)
	}
	roles, err := s.admin.RolesNamed(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]directus.Role{{ID: role.ID, Name: name, Policies: []string{p.ID}}}, roles); diff != "" {
		t.Errorf("role after AttachRolePolicy (-want +got):\n%s", diff)
	}
	users, err := s.admin.AccessUsers(ctx, []string{row})
	if err != nil {
		t.Fatal(err)
	}
	if u, ok := users[row]; !ok || u != "" {
		t.Errorf("the role's access row: user %q (listed %v), want a row without user", u, ok)
	}
	set, err := s.admin.SetPolicyAccess(ctx, p.ID, directus.AccessFlags{AdminAccess: true})
	if err != nil {
		t.Fatalf("SetPolicyAccess: %v", err)
	}
	want := directus.Policy{ID: p.ID, Name: name, AdminAccess: true}
	if diff := cmp.Diff(want, set); diff != "" {
		t.Errorf("SetPolicyAccess answer (-want +got):\n%s", diff)
	}
	listed, err := s.admin.PoliciesNamed(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]directus.Policy{want}, listed); diff != "" {
		t.Errorf("policy after SetPolicyAccess (-want +got):\n%s", diff)
	}
	// Directus answers 204 without an item, as for users.
	if _, err := s.admin.SetPolicyAccess(ctx, uuid.NewString(), directus.AccessFlags{}); !errors.Is(err, directus.ErrNotFound) {
		t.Errorf("SetPolicyAccess(missing): got %v, want ErrNotFound", err)
	}
	if _, err := s.admin.AttachRolePolicy(ctx, role.ID, uuid.NewString()); directus.Code(err) == "" {
		t.Errorf("AttachRolePolicy(unknown policy): got %v, want a Directus error", err)
	}
}
