package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/directus"
)

// field returns the extensions.field of a Directus error, or "".
func field(err error) string {
	var e *directus.APIError
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// as returns a client that authenticates with token.
func (s *suite) as(t *testing.T, token string) *directus.Client {
	t.Helper()
	c, err := directus.New(s.target.URL, token, directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newAdmin creates another administrator (a user holding a policy with
// admin access) with a static token, as an operator would, and deletes it
// when the test ends. It returns a client acting as that user and its id.
// On Directus 12 Core it takes one of the three seats while it exists.
func (s *suite) newAdmin(t *testing.T) (*directus.Client, string) {
	t.Helper()
	p, err := s.admin.CreatePolicy(t.Context(), directus.Policy{Name: "conformance-admin-" + random(), AdminAccess: true})
	if err != nil {
		t.Fatalf("CreatePolicy(admin): %v", err)
	}
	u := s.newUser(t)
	u.Token = token()
	u.Policies = []string{p.ID}
	s.create(t, u)
	return s.as(t, u.Token), u.ID
}

// raw sends one admin request outside the client (for payloads the client
// never builds) and returns the HTTP status.
func (s *suite) raw(ctx context.Context, method, path string, body any) (int, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(s.target.URL, "/")+path, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+s.target.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func (s *suite) externalIdentifierUnique(t *testing.T) {
	a, b := s.newUser(t), s.newUser(t)
	s.create(t, a)
	b.ExternalIdentifier = a.ExternalIdentifier
	err := s.createErr(t.Context(), b)
	var e *directus.APIError
	if !errors.As(err, &e) || e.Code != directus.CodeRecordNotUnique || e.Field != "external_identifier" {
		t.Fatalf("second user with external_identifier %q: got %v, want RECORD_NOT_UNIQUE on field external_identifier", a.ExternalIdentifier, err)
	}
	if !errors.Is(err, directus.ErrConflict) || errors.Is(err, directus.ErrUnavailable) {
		t.Errorf("duplicate external_identifier: want ErrConflict and not ErrUnavailable: %v", err)
	}
	if _, err := s.admin.User(t.Context(), b.ID); !errors.Is(err, directus.ErrNotFound) {
		t.Errorf("refused create left a user behind: %v", err)
	}
	if got := s.read(t, a.ID).ExternalIdentifier; got != a.ExternalIdentifier {
		t.Errorf("first user's external_identifier: got %q, want %q", got, a.ExternalIdentifier)
	}
}

// binding is the issuer binding the bridge keeps in auth_data.
const binding = `{"directus_bridge":{"issuer":"https://issuer.example/","client":"svc"}}`

func (s *suite) authDataRoundTrip(t *testing.T) {
	ctx := t.Context()
	checkRaw := func(what string, got json.RawMessage, want string) {
		t.Helper()
		if want == "" {
			if got != nil {
				t.Errorf("%s: auth_data = %s, want null", what, got)
			}
			return
		}
		if string(got) != want {
			t.Errorf("%s: auth_data = %s, want %s", what, got, want)
		}
	}

	u := s.newUser(t)
	u.AuthData = json.RawMessage(binding)
	created, err := s.admin.CreateUser(ctx, u)
	if err != nil {
		t.Fatalf("CreateUser with auth_data: %v", err)
	}
	checkRaw("create answer", created.AuthData, binding)
	checkRaw("read after create", s.read(t, u.ID).AuthData, binding)

	other := `{"directus_bridge":{"issuer":"https://other.example/","client":"svc2"}}`
	updated, err := s.admin.UpdateUser(ctx, u.ID, directus.UserChange{AuthData: json.RawMessage(other)})
	if err != nil {
		t.Fatalf("UpdateUser(auth_data): %v", err)
	}
	checkRaw("update answer", updated.AuthData, other)
	checkRaw("read after update", s.read(t, u.ID).AuthData, other)

	// A batch writes it too.
	if err := s.admin.UpdateUsers(ctx, []string{u.ID}, directus.UserChange{AuthData: json.RawMessage(binding)}); err != nil {
		t.Fatalf("UpdateUsers(auth_data): %v", err)
	}
	checkRaw("read after batch", s.read(t, u.ID).AuthData, binding)

	// Other fields leave it alone.
	if err := s.updateErr(ctx, u.ID, directus.UserChange{Status: directus.Ptr("suspended"), Token: directus.Ptr(token())}); err != nil {
		t.Fatal(err)
	}
	checkRaw("read after a status change", s.read(t, u.ID).AuthData, binding)

	// Any JSON comes back as the same value (compared as values: Directus
	// on PostgreSQL re-serialises it).
	odd := `{"a":[1,2.5,{"b":null}],"é":"ü <&>","n":-3}`
	if err := s.updateErr(ctx, u.ID, directus.UserChange{AuthData: json.RawMessage(odd)}); err != nil {
		t.Fatalf("UpdateUser(odd auth_data): %v", err)
	}
	var want, got any
	_ = json.Unmarshal([]byte(odd), &want)
	if err := json.Unmarshal(s.read(t, u.ID).AuthData, &got); err != nil || !cmp.Equal(want, got) {
		t.Errorf("odd auth_data read back as %v (%v), want %v", got, err, want)
	}

	// Writing null clears it.
	cleared, err := s.admin.UpdateUser(ctx, u.ID, directus.UserChange{AuthData: json.RawMessage("null")})
	if err != nil {
		t.Fatalf("UpdateUser(auth_data null): %v", err)
	}
	checkRaw("update to null", cleared.AuthData, "")
	checkRaw("read after null", s.read(t, u.ID).AuthData, "")

	// A user created without it has none.
	plain := s.newUser(t)
	s.create(t, plain)
	checkRaw("user created without auth_data", s.read(t, plain.ID).AuthData, "")

	// Invalid JSON is refused before any request.
	if _, err := s.admin.UpdateUser(ctx, u.ID, directus.UserChange{AuthData: json.RawMessage("{")}); err == nil || directus.Code(err) != "" {
		t.Errorf("UpdateUser with invalid JSON: got %v, want a client-side error", err)
	}

	// Directus clears auth_data on a PATCH that carries external_identifier
	// (or provider), even one that also writes auth_data.
	if err := s.updateErr(ctx, u.ID, directus.UserChange{AuthData: json.RawMessage(binding)}); err != nil {
		t.Fatal(err)
	}
	st, err := s.raw(ctx, http.MethodPatch, "/users/"+u.ID, map[string]any{
		"external_identifier": u.ExternalIdentifier, "auth_data": json.RawMessage(other),
	})
	if err != nil || st != http.StatusOK {
		t.Fatalf("PATCH external_identifier + auth_data: status %d, %v", st, err)
	}
	checkRaw("after a PATCH with external_identifier", s.read(t, u.ID).AuthData, "")
	if err := s.updateErr(ctx, u.ID, directus.UserChange{AuthData: json.RawMessage(binding)}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.raw(ctx, http.MethodPatch, "/users/"+u.ID, map[string]any{"provider": "default"}); err != nil || st != http.StatusOK {
		t.Fatalf("PATCH provider: status %d, %v", st, err)
	}
	checkRaw("after a PATCH with provider", s.read(t, u.ID).AuthData, "")
	// A create keeps it next to external_identifier (every create above).
}

func (s *suite) deletion(t *testing.T) {
	ctx := t.Context()
	u, other := s.newUser(t), s.newUser(t)
	u.Token = token()
	s.create(t, u)
	s.create(t, other)
	if err := s.admin.DeleteUsers(ctx, []string{u.ID}); err != nil {
		t.Fatalf("DeleteUsers: %v", err)
	}
	if _, err := s.admin.User(ctx, u.ID); !errors.Is(err, directus.ErrNotFound) {
		t.Errorf("User after delete: got %v, want ErrNotFound", err)
	}
	if err := s.updateErr(ctx, u.ID, directus.UserChange{Status: directus.Ptr("suspended")}); !errors.Is(err, directus.ErrNotFound) {
		t.Errorf("UpdateUser after delete: got %v, want ErrNotFound", err)
	}
	if err := s.admin.UpdateUsers(ctx, []string{u.ID, other.ID}, directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatalf("UpdateUsers with a deleted id: %v", err)
	}
	if got := s.read(t, other.ID).Status; got != "suspended" {
		t.Errorf("UpdateUsers with a deleted id skipped the other user: status %q", got)
	}
	if _, err := s.admin.User(ctx, u.ID); !errors.Is(err, directus.ErrNotFound) {
		t.Errorf("UpdateUsers brought a deleted user back: %v", err)
	}
	if _, err := s.as(t, u.Token).Me(ctx); directus.Code(err) != directus.CodeInvalidCredentials {
		t.Errorf("token of a deleted user: got %v, want INVALID_CREDENTIALS", err)
	}
	// Deleting again, or deleting an id that never existed, is no error.
	if err := s.admin.DeleteUsers(ctx, []string{u.ID, uuid.NewString()}); err != nil {
		t.Errorf("DeleteUsers of missing ids: %v", err)
	}
	// The token is free again.
	again := s.newUser(t)
	again.Token = u.Token
	if err := s.createErr(ctx, again); err != nil {
		t.Errorf("reusing a deleted user's token: %v", err)
	}
}

func (s *suite) suspendedTokenRefused(t *testing.T) {
	ctx := t.Context()
	role, err := s.admin.CreateRole(ctx, directus.Role{Name: "conformance-" + random()})
	if err != nil {
		t.Fatal(err)
	}
	u := s.newUser(t)
	u.Token = token()
	u.Role = role.ID
	s.create(t, u)
	as := s.as(t, u.Token)
	// A user without app access may not read its own status or role: Me
	// tells its id alone.
	want := directus.User{ID: u.ID}
	me, err := as.Me(ctx)
	if err != nil {
		t.Fatalf("Me: %v", err)
	}
	if diff := cmp.Diff(want, directus.User{ID: me.ID, Status: me.Status, Role: me.Role}); diff != "" {
		t.Errorf("Me of a user without app access (-want +got):\n%s", diff)
	}
	// An admin reads its own.
	if me, err := s.admin.Me(ctx); err != nil || me.ID == "" || me.Status != "active" {
		t.Errorf("Me of the admin: %+v, %v; want id and status active", me, err)
	}
	for _, status := range []string{"suspended", "archived", "draft"} {
		if err := s.updateErr(ctx, u.ID, directus.UserChange{Status: directus.Ptr(status)}); err != nil {
			t.Fatal(err)
		}
		_, err := as.Me(ctx)
		var e *directus.APIError
		if !errors.As(err, &e) || e.Status != http.StatusUnauthorized || e.Code != directus.CodeInvalidCredentials {
			t.Errorf("Me while %s: got %v, want 401 INVALID_CREDENTIALS", status, err)
		}
		if err := s.updateErr(ctx, u.ID, directus.UserChange{Status: directus.Ptr("active")}); err != nil {
			t.Fatal(err)
		}
		me, err := as.Me(ctx)
		if err != nil || me.ID != u.ID {
			t.Errorf("Me after reactivation from %s: %+v, %v", status, me, err)
		}
	}
}

func (s *suite) repeatedWrite(t *testing.T) {
	ctx := t.Context()
	a, b := s.newUser(t), s.newUser(t)
	s.create(t, a)
	s.create(t, b)
	tok := token()
	ch := directus.UserChange{Token: &tok, Status: directus.Ptr("active"), AuthData: json.RawMessage(binding)}
	for i := range 2 {
		got, err := s.admin.UpdateUser(ctx, a.ID, ch)
		if err != nil {
			t.Fatalf("UpdateUser #%d: %v", i+1, err)
		}
		if !got.HasToken || string(got.AuthData) != binding {
			t.Errorf("UpdateUser #%d answer: token=%v auth_data=%s", i+1, got.HasToken, got.AuthData)
		}
	}
	me, err := s.as(t, tok).Me(ctx)
	if err != nil || me.ID != a.ID {
		t.Fatalf("Me with the token written twice: %+v, %v; want user %s", me, err, a.ID)
	}
	// Only a holds it: another user cannot take it.
	err = s.updateErr(ctx, b.ID, directus.UserChange{Token: &tok})
	if directus.Code(err) != directus.CodeRecordNotUnique || field(err) != "token" {
		t.Errorf("second holder of the token: got %v, want RECORD_NOT_UNIQUE on token", err)
	}
	if s.read(t, b.ID).HasToken {
		t.Errorf("second holder got the token")
	}
	// The batch form is idempotent too.
	for i := range 2 {
		if err := s.admin.UpdateUsers(ctx, []string{a.ID, b.ID}, directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
			t.Fatalf("UpdateUsers #%d: %v", i+1, err)
		}
	}
	for _, id := range []string{a.ID, b.ID} {
		if got := s.read(t, id).Status; got != "suspended" {
			t.Errorf("user %s after two batches: status %q", id, got)
		}
	}
}

// policyCreateTwice pins what the bridge must guard against: attaching a
// policy the user already holds adds a second access row instead of failing,
// so after a lost answer the bridge reads the user before sending again.
func (s *suite) policyCreateTwice(t *testing.T) {
	ctx := t.Context()
	p, err := s.admin.CreatePolicy(ctx, directus.Policy{Name: "conformance-" + random()})
	if err != nil {
		t.Fatal(err)
	}
	u := s.newUser(t)
	u.Policies = []string{p.ID}
	s.create(t, u)
	first := s.read(t, u.ID).Access
	got, err := s.admin.UpdateUser(ctx, u.ID, directus.UserChange{AddPolicies: []string{p.ID}})
	if err != nil {
		t.Fatalf("attaching the same policy again: %v", err)
	}
	if diff := cmp.Diff([]string{p.ID, p.ID}, got.PolicyIDs()); diff != "" {
		t.Errorf("policies after attaching twice (-want +got):\n%s", diff)
	}
	read := s.read(t, u.ID)
	if len(read.Access) != 2 || read.Access[0].ID == read.Access[1].ID || read.Access[0] != first[0] {
		t.Fatalf("access rows after attaching twice: %+v; want the first %+v and a new one", read.Access, first)
	}
	// Removing one leaves the other.
	if err := s.updateErr(ctx, u.ID, directus.UserChange{RemoveAccess: []string{read.Access[1].ID}}); err != nil {
		t.Fatalf("removing the duplicate: %v", err)
	}
	if diff := cmp.Diff([]directus.Access{first[0]}, s.read(t, u.ID).Access); diff != "" {
		t.Errorf("access after removing the duplicate (-want +got):\n%s", diff)
	}
	// Both in one PATCH: two rows as well.
	v := s.newUser(t)
	s.create(t, v)
	if err := s.updateErr(ctx, v.ID, directus.UserChange{AddPolicies: []string{p.ID, p.ID}}); err != nil {
		t.Fatalf("attaching a policy twice in one PATCH: %v", err)
	}
	if diff := cmp.Diff([]string{p.ID, p.ID}, s.read(t, v.ID).PolicyIDs()); diff != "" {
		t.Errorf("policies after one PATCH with the policy twice (-want +got):\n%s", diff)
	}
}
