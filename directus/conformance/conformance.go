// Package conformance is the test suite that every Directus the bridge talks
// to must pass: real Directus 12 and 11 in the e2e suite (and in TestReal
// here, given DIRECTUS_BRIDGE_STACK), and the in-memory fake of package
// directustest in unit tests. It pins down the behaviours the
// bridge relies on, so that the fake cannot drift from the real thing.
package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/directus"
)

// Target is a Directus to test, reached with an admin static token.
type Target struct {
	URL        string
	AdminToken string
	// Major is the Directus major version (11, 12, ...): Directus 12 without a
	// license refuses custom providers.
	Major int
}

// Run runs the whole suite against target. Every user, role and policy it
// creates has a random name, and users are deleted at the end.
func Run(t *testing.T, target Target) {
	admin, err := directus.New(target.URL, target.AdminToken, directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	s := &suite{target: target, admin: admin}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"CreateAndRead", s.createAndRead},
		{"CreateExistingID", s.createExistingID},
		{"DuplicateTokenIsRedacted", s.duplicateToken},
		{"ReadMissing", s.readMissing},
		{"UpdateFields", s.updateFields},
		{"UpdateMissing", s.updateMissing},
		{"BatchUpdate", s.batchUpdate},
		{"ListFilterAndPaging", s.listFilterAndPaging},
		{"RolesAndPolicies", s.rolesAndPolicies},
		{"AttachAndDetachPolicy", s.attachPolicy},
		{"CustomProvider", s.customProvider},
		{"StaticTokenLifecycle", s.staticToken},
		{"InvalidAdminToken", s.invalidAdminToken},
		{"ExternalIdentifierUnique", s.externalIdentifierUnique},
		{"AuthDataRoundTrip", s.authDataRoundTrip},
		{"Deletion", s.deletion},
		{"SuspendedTokenRefused", s.suspendedTokenRefused},
		{"RepeatedWriteIsIdempotent", s.repeatedWrite},
		{"PolicyCreateTwice", s.policyCreateTwice},
		{"ActivityOfUserWrites", s.activityOfUserWrites},
		{"AccessRowsAndTheirActivity", s.accessRows},
		{"MyAccess", s.myAccess},
		{"Login", s.login},
		{"PoliciesAndRolesByName", s.byName},
		{"MendRoleAndPolicy", s.mendRoleAndPolicy},
	} {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	target Target
	admin  *directus.Client
}

func random() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newUser returns a fresh machine-style user (id = UUIDv5 of its external
// identifier, as the bridge derives it) and deletes it when the test ends.
func (s *suite) newUser(t *testing.T) directus.NewUser {
	t.Helper()
	ext := "conformance-" + random() + "@clients"
	u := directus.NewUser{
		ID:                 uuid.NewSHA1(uuid.Nil, []byte(ext)).String(),
		ExternalIdentifier: ext,
		FirstName:          "External",
		LastName:           "Client",
	}
	t.Cleanup(func() {
		// The user may already be gone; only a failure to reach Directus matters.
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.admin.DeleteUsers(ctx, []string{u.ID}); errors.Is(err, directus.ErrUnavailable) {
			t.Errorf("cleanup: %v", err)
		}
	})
	return u
}

func (s *suite) create(t *testing.T, u directus.NewUser) {
	t.Helper()
	if err := s.createErr(t.Context(), u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
}

func (s *suite) createErr(ctx context.Context, u directus.NewUser) error {
	_, err := s.admin.CreateUser(ctx, u)
	return err
}

func (s *suite) updateErr(ctx context.Context, id string, ch directus.UserChange) error {
	_, err := s.admin.UpdateUser(ctx, id, ch)
	return err
}

func (s *suite) read(t *testing.T, id string) directus.User {
	t.Helper()
	got, err := s.admin.User(t.Context(), id)
	if err != nil {
		t.Fatalf("User(%s): %v", id, err)
	}
	return got
}

func token() string { return "conf_" + random() + random() }

func (s *suite) createAndRead(t *testing.T) {
	u := s.newUser(t)
	u.Token = token()
	u.LastAccess = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	s.create(t, u)
	got := s.read(t, u.ID)
	want := directus.User{
		ID: u.ID, Status: "active", Provider: "default", ExternalIdentifier: u.ExternalIdentifier,
		FirstName: "External", LastName: "Client", LastAccess: u.LastAccess, HasToken: true, Access: []directus.Access{},
	}
	if got.Access == nil {
		got.Access = []directus.Access{}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("read back (-want +got):\n%s", diff)
	}
}

func (s *suite) createExistingID(t *testing.T) {
	u := s.newUser(t)
	s.create(t, u)
	again := u
	again.ExternalIdentifier = ""
	err := s.createErr(t.Context(), again)
	if !errors.Is(err, directus.ErrConflict) {
		t.Fatalf("second CreateUser: got %v, want RECORD_NOT_UNIQUE", err)
	}
	if errors.Is(err, directus.ErrUnavailable) {
		t.Errorf("conflict must not count as unavailable: %v", err)
	}
}

func (s *suite) duplicateToken(t *testing.T) {
	a, b := s.newUser(t), s.newUser(t)
	a.Token = token()
	s.create(t, a)
	b.Token = a.Token
	err := s.createErr(t.Context(), b)
	if directus.Code(err) != directus.CodeRecordNotUnique {
		t.Fatalf("CreateUser with a taken token: got %v, want RECORD_NOT_UNIQUE", err)
	}
	if strings.Contains(err.Error(), a.Token) {
		t.Errorf("error echoes the token: %v", err)
	}
	if f := field(err); f != "token" {
		t.Errorf("duplicate token: Field = %q, want token", f)
	}
	if _, err := s.admin.User(t.Context(), b.ID); !errors.Is(err, directus.ErrNotFound) {
		t.Errorf("refused create left a user behind: %v", err)
	}
	// Same through an update.
	s.create(t, directus.NewUser{ID: b.ID, ExternalIdentifier: b.ExternalIdentifier})
	err = s.updateErr(t.Context(), b.ID, directus.UserChange{Token: &a.Token})
	if directus.Code(err) != directus.CodeRecordNotUnique || strings.Contains(err.Error(), a.Token) {
		t.Errorf("UpdateUser with a taken token: got %v, want a redacted RECORD_NOT_UNIQUE", err)
	}
	if s.read(t, b.ID).HasToken {
		t.Errorf("refused update set the token")
	}
}

func (s *suite) readMissing(t *testing.T) {
	_, err := s.admin.User(t.Context(), uuid.NewString())
	if !errors.Is(err, directus.ErrNotFound) {
		t.Errorf("User(missing): got %v, want ErrNotFound", err)
	}
}

func (s *suite) updateFields(t *testing.T) {
	u := s.newUser(t)
	s.create(t, u)
	role, err := s.admin.CreateRole(t.Context(), directus.Role{Name: "conformance-" + random()})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 7, 2, 3, 4, 5, 0, time.UTC)
	tok := token()
	if err := s.updateErr(t.Context(), u.ID, directus.UserChange{
		Role: &role.ID, Token: &tok, LastAccess: &at, Status: directus.Ptr("suspended"),
	}); err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	got := s.read(t, u.ID)
	if got.Role != role.ID || !got.HasToken || !got.LastAccess.Equal(at) || got.Status != "suspended" {
		t.Errorf("after update: role=%q token=%v last_access=%v status=%q; want %q true %v suspended",
			got.Role, got.HasToken, got.LastAccess, got.Status, role.ID, at)
	}
	if err := s.updateErr(t.Context(), u.ID, directus.UserChange{Role: directus.Ptr(""), Token: directus.Ptr("")}); err != nil {
		t.Fatalf("UpdateUser to null: %v", err)
	}
	got = s.read(t, u.ID)
	if got.Role != "" || got.HasToken {
		t.Errorf("after nulling: role=%q token=%v; want none", got.Role, got.HasToken)
	}
	if err := s.updateErr(t.Context(), u.ID, directus.UserChange{Role: directus.Ptr(uuid.NewString())}); directus.Code(err) == "" {
		t.Errorf("UpdateUser with an unknown role: got %v, want a Directus error", err)
	}
}

func (s *suite) updateMissing(t *testing.T) {
	err := s.updateErr(t.Context(), uuid.NewString(), directus.UserChange{Status: directus.Ptr("active")})
	if !errors.Is(err, directus.ErrNotFound) {
		t.Errorf("UpdateUser(missing): got %v, want ErrNotFound", err)
	}
}

func (s *suite) batchUpdate(t *testing.T) {
	var ids []string
	for range 3 {
		u := s.newUser(t)
		u.Token = token()
		s.create(t, u)
		ids = append(ids, u.ID)
	}
	if err := s.admin.UpdateUsers(t.Context(), ids, directus.UserChange{Token: directus.Ptr(""), Status: directus.Ptr("suspended")}); err != nil {
		t.Fatalf("UpdateUsers: %v", err)
	}
	for _, id := range ids {
		if got := s.read(t, id); got.HasToken || got.Status != "suspended" {
			t.Errorf("user %s after batch: token=%v status=%q", id, got.HasToken, got.Status)
		}
	}
	// A missing key is skipped; the others are updated.
	err := s.admin.UpdateUsers(t.Context(), append([]string{ids[0]}, uuid.NewString()), directus.UserChange{Status: directus.Ptr("active")})
	if err != nil {
		t.Fatalf("batch with a missing id: %v", err)
	}
	if got := s.read(t, ids[0]); got.Status != "active" {
		t.Errorf("batch with a missing id skipped an existing user: status=%q", got.Status)
	}
}

func (s *suite) listFilterAndPaging(t *testing.T) {
	var ids []string
	for i := range 5 {
		u := s.newUser(t)
		if i%2 == 0 {
			u.Token = token()
		}
		s.create(t, u)
		ids = append(ids, u.ID)
	}
	// Page through the five by id, two at a time.
	var seen []string
	for offset := 0; offset < 20; offset += 2 {
		page, err := s.admin.ListUsers(t.Context(), directus.UserFilter{IDs: ids}, 2, offset)
		if err != nil {
			t.Fatalf("ListUsers: %v", err)
		}
		if len(page) > 2 {
			t.Fatalf("page of %d users, limit 2", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, u := range page {
			seen = append(seen, u.ID)
		}
	}
	want := append([]string(nil), ids...)
	sortStrings(want)
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("paged ids (-want +got):\n%s", diff)
	}
	withToken, err := s.admin.ListUsers(t.Context(), directus.UserFilter{IDs: ids, HasToken: directus.Ptr(true), HasExternalIdentifier: true}, -1, 0)
	if err != nil {
		t.Fatalf("ListUsers(token set): %v", err)
	}
	if len(withToken) != 3 {
		t.Errorf("users with a token: got %d, want 3", len(withToken))
	}
	without, err := s.admin.ListUsers(t.Context(), directus.UserFilter{IDs: ids, HasToken: directus.Ptr(false)}, -1, 0)
	if err != nil {
		t.Fatalf("ListUsers(token null): %v", err)
	}
	if len(without) != 2 {
		t.Errorf("users without a token: got %d, want 2", len(without))
	}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func (s *suite) rolesAndPolicies(t *testing.T) {
	name := "conformance-" + random()
	admin, err := s.admin.CreatePolicy(t.Context(), directus.Policy{Name: name + "-admin", AdminAccess: true, AppAccess: true})
	if err != nil {
		t.Fatalf("CreatePolicy: %v", err)
	}
	plain, err := s.admin.CreatePolicy(t.Context(), directus.Policy{Name: name + "-plain"})
	if err != nil {
		t.Fatalf("CreatePolicy: %v", err)
	}
	role, err := s.admin.CreateRole(t.Context(), directus.Role{Name: name, Policies: []string{plain.ID}})
	if err != nil {
		t.Fatalf("CreateRole: %v", err)
	}
	roles, err := s.admin.Roles(t.Context())
	if err != nil {
		t.Fatalf("Roles: %v", err)
	}
	var found *directus.Role
	for i := range roles {
		if roles[i].ID == role.ID {
			found = &roles[i]
		}
	}
	if found == nil {
		t.Fatalf("Roles does not list the new role %s", role.ID)
	}
	if diff := cmp.Diff(directus.Role{ID: role.ID, Name: name, Policies: []string{plain.ID}}, *found); diff != "" {
		t.Errorf("listed role (-want +got):\n%s", diff)
	}
	policies, err := s.admin.Policies(t.Context())
	if err != nil {
		t.Fatalf("Policies: %v", err)
	}
	got := map[string]directus.Policy{}
	for _, p := range policies {
		got[p.ID] = p
	}
	if diff := cmp.Diff(admin, got[admin.ID]); diff != "" {
		t.Errorf("admin policy (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(plain, got[plain.ID]); diff != "" {
		t.Errorf("plain policy (-want +got):\n%s", diff)
	}
}

func (s *suite) attachPolicy(t *testing.T) {
	p1, err := s.admin.CreatePolicy(t.Context(), directus.Policy{Name: "conformance-" + random()})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := s.admin.CreatePolicy(t.Context(), directus.Policy{Name: "conformance-" + random()})
	if err != nil {
		t.Fatal(err)
	}
	u := s.newUser(t)
	u.Policies = []string{p1.ID}
	s.create(t, u)
	if diff := cmp.Diff([]string{p1.ID}, s.read(t, u.ID).PolicyIDs()); diff != "" {
		t.Errorf("policies after create (-want +got):\n%s", diff)
	}
	access := s.read(t, u.ID).Access[0].ID
	if err := s.updateErr(t.Context(), u.ID, directus.UserChange{AddPolicies: []string{p2.ID}, RemoveAccess: []string{access}}); err != nil {
		t.Fatalf("UpdateUser(policies): %v", err)
	}
	if diff := cmp.Diff([]string{p2.ID}, s.read(t, u.ID).PolicyIDs()); diff != "" {
		t.Errorf("policies after swap (-want +got):\n%s", diff)
	}
	// Removing an access row that is gone, or another user's, is no error
	// and removes nothing (a retry after a lost answer does this).
	other := s.newUser(t)
	other.Policies = []string{p1.ID}
	s.create(t, other)
	othersAccess := s.read(t, other.ID).Access[0].ID
	if err := s.updateErr(t.Context(), u.ID, directus.UserChange{RemoveAccess: []string{access, othersAccess, uuid.NewString()}}); err != nil {
		t.Errorf("removing access rows that are gone or another user's: %v", err)
	}
	if diff := cmp.Diff([]string{p2.ID}, s.read(t, u.ID).PolicyIDs()); diff != "" {
		t.Errorf("policies after removing rows that are not the user's (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{p1.ID}, s.read(t, other.ID).PolicyIDs()); diff != "" {
		t.Errorf("the other user's policies after another user's PATCH named its access row (-want +got):\n%s", diff)
	}
	if err := s.updateErr(t.Context(), u.ID, directus.UserChange{AddPolicies: []string{uuid.NewString()}}); directus.Code(err) == "" {
		t.Errorf("attaching an unknown policy: got %v, want a Directus error", err)
	}
}

func (s *suite) customProvider(t *testing.T) {
	u := s.newUser(t)
	u.Provider = "bcc-client-credentials"
	err := s.createErr(t.Context(), u)
	if s.target.Major >= 12 {
		if directus.Code(err) != directus.CodeInvalidPayload {
			t.Fatalf("custom provider on Directus %d: got %v, want INVALID_PAYLOAD", s.target.Major, err)
		}
		if _, err := s.admin.User(t.Context(), u.ID); !errors.Is(err, directus.ErrNotFound) {
			t.Errorf("refused create left a user behind: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("custom provider on Directus %d: %v", s.target.Major, err)
	}
	if got := s.read(t, u.ID).Provider; got != u.Provider {
		t.Errorf("provider: got %q, want %q", got, u.Provider)
	}
}

func (s *suite) staticToken(t *testing.T) {
	u := s.newUser(t)
	u.Token = token()
	s.create(t, u)
	as, err := directus.New(s.target.URL, u.Token, directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	me, err := as.Me(t.Context())
	if err != nil {
		t.Fatalf("Me with the new token: %v", err)
	}
	if me.ID != u.ID {
		t.Errorf("Me: got %s, want %s", me.ID, u.ID)
	}
	if err := s.updateErr(t.Context(), u.ID, directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	if _, err := as.Me(t.Context()); directus.Code(err) != directus.CodeInvalidCredentials {
		t.Errorf("Me while suspended: got %v, want INVALID_CREDENTIALS", err)
	}
	if err := s.updateErr(t.Context(), u.ID, directus.UserChange{Status: directus.Ptr("active"), Token: directus.Ptr("")}); err != nil {
		t.Fatal(err)
	}
	if _, err := as.Me(t.Context()); directus.Code(err) != directus.CodeInvalidCredentials {
		t.Errorf("Me after the token was cleared: got %v, want INVALID_CREDENTIALS", err)
	}
}

func (s *suite) invalidAdminToken(t *testing.T) {
	c, err := directus.New(s.target.URL, "not-a-token-"+random(), directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.User(t.Context(), uuid.NewString())
	if directus.Code(err) != directus.CodeInvalidCredentials {
		t.Errorf("User with a bad token: got %v, want INVALID_CREDENTIALS", err)
	}
	if errors.Is(err, directus.ErrUnavailable) {
		t.Errorf("bad credentials must not count as unavailable")
	}
	if err := c.Ping(t.Context()); err != nil {
		t.Errorf("Ping is public: %v", err)
	}
}
