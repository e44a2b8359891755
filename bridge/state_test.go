package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// failNext makes the next Directus request matching method fail with a 503
// before Directus sees it (lost=false), or after Directus applied it
// (lost=true); later requests pass.
func (h *harness) failNext(method string, lost bool) {
	done := false
	h.fake.SetFault(func(r *http.Request) directustest.Fault {
		if done || r.Method != method {
			return directustest.Fault{}
		}
		done = true
		if lost {
			return directustest.Fault{LoseAnswer: true, Status: 502}
		}
		return directustest.Fault{Status: 503}
	})
}

// A failed write must not make the state believe in the new grant: the next
// exchange applies the downgrade and the removed policy.
func TestFailedWriteIsRetriedFromWhatDirectusHolds(t *testing.T) {
	for _, lost := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "lost"}[lost], func(t *testing.T) {
			h := newHarness(t, "12.4.0")
			client := "down@clients"
			if r := h.exchange(h.auth0Token(client, "items:write")); r.Status != 200 {
				t.Fatalf("first exchange: %d %v", r.Status, r.Body)
			}
			// The rules now grant only Reader, without the extra policy.
			h.setRules(mapping.Rules{{Name: "all-read", AnyScopes: []string{"items:write", "items:read"}, Role: "Reader"}})
			h.failNext(http.MethodPatch, lost)
			if r := h.exchange(h.auth0Token(client, "items:write")); r.Status != 503 || r.RetryAfter == "" {
				t.Fatalf("exchange with a failing PATCH: %d %v, want 503 with Retry-After", r.Status, r.Body)
			}
			h.fake.SetFault(nil)
			r := h.exchange(h.auth0Token(client, "items:write"))
			if r.Status != 200 || !h.tokenWorks(r.str("access_token")) {
				t.Fatalf("after recovery: %d %v", r.Status, r.Body)
			}
			u := h.user(idOf(client))
			if u.Role != h.reader.ID || len(u.Access) != 0 {
				t.Errorf("Directus holds role %s policies %v, want Reader and none", u.Role, u.PolicyIDs())
			}
		})
	}
}

// A rotation whose write fails keeps the old token known with its own
// expiry: it is revoked when it expires, not one TTL later.
func TestFailedRotationKeepsOldTokenKnown(t *testing.T) {
	for _, lost := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "lost"}[lost], func(t *testing.T) {
			h := newHarness(t, "12.4.0")
			old := h.exchange(h.auth0Token("rot@clients", "items:read")).str("access_token")
			h.clock.Add(11 * time.Minute) // inside rotate_before
			h.failNext(http.MethodPatch, lost)
			if r := h.exchange(h.auth0Token("rot@clients", "items:read")); r.Status != 503 {
				t.Fatalf("rotation with a failing PATCH: %d %v", r.Status, r.Body)
			}
			h.fake.SetFault(nil)
			h.clock.Add(4*time.Minute + time.Second) // the old token's expiry
			if _, err := h.ex.RevokeExpired(context.Background()); err != nil {
				t.Fatal(err)
			}
			if h.tokenWorks(old) {
				t.Errorf("the old token still works after its expiry and a revoker run")
			}
			if u := h.user(idOf("rot@clients")); u.HasToken {
				t.Errorf("Directus still holds a token after the revoker run")
			}
		})
	}
}

// A hook user that an administrator suspended is recorded as Directus holds
// it: after reactivation the bridge writes its own token before handing it
// out, and the hook's token stops working.
func TestAdoptingAdminSuspendedUser(t *testing.T) {
	h := newHarness(t, "11.17.4")
	id := idOf("legacy2@clients")
	if _, err := h.admin.CreateUser(context.Background(), directus.NewUser{ID: id, Status: "suspended",
		ExternalIdentifier: "legacy2@clients", Role: h.writer.ID, Token: "hook-old-token"}); err != nil {
		t.Fatal(err)
	}
	if r := h.exchange(h.auth0Token("legacy2@clients", "items:read")); r.Status != 400 || r.str("error") != "unauthorized_client" {
		t.Fatalf("suspended hook user: %d %v, want 400 unauthorized_client", r.Status, r.Body)
	}
	if u := h.user(id); u.Role != h.writer.ID || u.Status != "suspended" {
		t.Errorf("refused exchange changed the user: %+v", u)
	}
	if _, err := h.admin.UpdateUser(context.Background(), id, directus.UserChange{Status: directus.Ptr("active")}); err != nil {
		t.Fatal(err)
	}
	r := h.exchange(h.auth0Token("legacy2@clients", "items:read"))
	if r.Status != 200 || !h.tokenWorks(r.str("access_token")) {
		t.Fatalf("after reactivation: %d %v (token works: %v)", r.Status, r.Body, h.tokenWorks(r.str("access_token")))
	}
	if h.tokenWorks("hook-old-token") {
		t.Errorf("the hook's token still works")
	}
	if u := h.user(id); u.Role != h.reader.ID {
		t.Errorf("role %s, want Reader", u.Role)
	}
}

// Narrowing the scope parameter must not obtain another grant or dodge a
// deny rule: one user per client cannot hold narrowed privileges.
func TestScopeNarrowingIsRefused(t *testing.T) {
	h := newHarness(t, "12.4.0")
	h.setRules(mapping.Rules{
		{Name: "blocked", AnyScopes: []string{"blocked"}, Deny: true},
		{Name: "writers", AllScopes: []string{"items:write"}, Role: "Writer"},
		{Name: "readers", AnyScopes: []string{"items:read"}, Role: "Reader"},
	})
	for _, tc := range []struct{ name, scopes, ask string }{
		{"dodge deny", "blocked items:read", "items:read"},
		{"narrow writer to reader", "items:read items:write", "items:read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.fake.ResetRequests()
			form := exchangeForm(h.auth0Token("narrow-"+strings.ReplaceAll(tc.name, " ", "-"), tc.scopes))
			form.Set("scope", tc.ask)
			r := h.post(form)
			if r.Status != 400 || r.str("error") != "invalid_scope" {
				t.Errorf("narrowed exchange: %d %v, want 400 invalid_scope", r.Status, r.Body)
			}
			if n := h.fake.Requests(); n != 0 {
				t.Errorf("refused exchange made %d Directus requests", n)
			}
		})
	}
	// Asking for exactly the token's scopes is not narrowing.
	form := exchangeForm(h.auth0Token("exact", "items:read items:write"))
	form.Set("scope", "items:write items:read")
	if r := h.post(form); r.Status != 200 || r.str("scope") != "items:read items:write" {
		t.Errorf("exact scopes: %d %v", r.Status, r.Body)
	}
}

// A human user holding the client's external identifier: a clear refusal,
// nothing written, nothing recorded.
func TestExternalIdentifierTakenByHuman(t *testing.T) {
	h := newHarness(t, "12.4.0")
	if _, err := h.admin.CreateUser(context.Background(), directus.NewUser{ID: "9f0e4f5e-2c43-4a43-9d3e-0a6b1b5f0001",
		ExternalIdentifier: "human@clients", FirstName: "Ada"}); err != nil {
		t.Fatal(err)
	}
	h.fake.ResetRequests()
	r := h.exchange(h.auth0Token("human@clients", "items:read"))
	if r.Status != 400 || r.str("error") != "unauthorized_client" || !strings.Contains(r.str("error_description"), "external identifier") {
		t.Errorf("got %d %v, want 400 unauthorized_client naming the external identifier", r.Status, r.Body)
	}
	if _, ok := h.store.Get(idOf("human@clients")); ok {
		t.Errorf("a refused exchange left a record")
	}
	if _, err := h.admin.User(context.Background(), idOf("human@clients")); err != directus.ErrNotFound {
		t.Errorf("a refused exchange created a user: %v", err)
	}
	if !strings.Contains(h.logs.String(), "external_identifier") {
		t.Errorf("the log does not tell the operator what to fix")
	}
}

// A subject token accepted inside the leeway after its exp gets nothing.
func TestSubjectTokenInLeewayAfterExpiry(t *testing.T) {
	h := newHarness(t, "12.4.0")
	for _, late := range []time.Duration{time.Second, 10 * time.Second, 29 * time.Second} {
		c := h.auth0.claims("late@clients", testAudience, h.clock.Now().Add(-time.Hour), "items:read")
		c["exp"] = h.clock.Now().Add(-late).Unix()
		r := h.exchange(h.auth0.sign(t, c))
		if r.Status != 400 || r.str("error") != "invalid_request" || r.str("error_description") != "subject_token has expired" {
			t.Errorf("subject token %v past exp: %d %v, want 400 invalid_request", late, r.Status, r.Body)
		}
	}
	if n := h.fake.Requests(); n != 0 {
		t.Errorf("expired subject tokens made %d Directus requests", n)
	}
}

// A corrupted sealed token is an error at start, not a panic.
func TestCorruptedRecordIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	key := make([]byte, 32)
	s, err := OpenStore(path, key)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(map[string]any{"user_id": "u1", "token_sealed": []byte{1, 2, 3}})
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("users")).Put([]byte("u1"), rec) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = OpenStore(path, key)
	if err == nil || !strings.Contains(err.Error(), "u1") {
		t.Errorf("OpenStore on a corrupted record = %v, want an error naming it", err)
	}
}

// The store interns strings into its own slices, never into the caller's
// (a verified identity's scopes are shared with the cache).
func TestStoreDoesNotWriteCallerSlices(t *testing.T) {
	s := NewMemoryStore()
	if err := s.Put(Record{UserID: "a", Scopes: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	scopes := []string{strings.Clone("x")}
	before := unsafe.StringData(scopes[0])
	if err := s.Put(Record{UserID: "b", Scopes: scopes}); err != nil {
		t.Fatal(err)
	}
	if unsafe.StringData(scopes[0]) != before {
		t.Errorf("Put rewrote an element of the caller's slice")
	}
}

// Two issuers with a client of the same name: each gets its own user and
// token; neither reaches the other's.
func TestCrossIssuerSameClient(t *testing.T) {
	h := newHarness(t, "12.4.0")
	now := h.clock.Now()
	stToken := func(sub string) string {
		return h.st.sign(t, map[string]any{"iss": h.st.URL, "sub": sub, "aud": testAudience, "iat": now.Unix(),
			"exp": now.Add(time.Hour).Unix(), "scp": []string{"items:read"}, "stt": 1})
	}
	a := h.exchange(h.auth0Token("svc", "items:read"))
	b := h.exchange(stToken("svc"))
	if a.Status != 200 || b.Status != 200 {
		t.Fatalf("exchanges: %d %v / %d %v", a.Status, a.Body, b.Status, b.Body)
	}
	if a.str("access_token") == b.str("access_token") {
		t.Fatalf("two issuers' clients share a token")
	}
	ua, ub := h.user(idOf("svc")), h.user(UserID(uuid.Nil, &h.opts.Issuers[1], "svc"))
	if ua.ID == ub.ID || ua.ExternalIdentifier != "svc" || ub.ExternalIdentifier != "supertokens:svc" {
		t.Errorf("users %s (%s) and %s (%s)", ua.ID, ua.ExternalIdentifier, ub.ID, ub.ExternalIdentifier)
	}
	for _, tc := range []struct {
		u      directus.User
		issuer string
	}{{ua, h.auth0.URL}, {ub, h.st.URL}} {
		if bd, ok := bindingOf(tc.u.AuthData); !ok || bd.Issuer != tc.issuer || bd.Client != "svc" {
			t.Errorf("user %s auth_data %s, want bound to %s", tc.u.ID, tc.u.AuthData, tc.issuer)
		}
	}
	if !h.tokenWorks(a.str("access_token")) || !h.tokenWorks(b.str("access_token")) {
		t.Errorf("a token does not work")
	}
}

// An operator moves hook ids to another issuer: that issuer's client with
// the same sub must not receive the first issuer's user, whether the bridge
// remembers the binding (state) or only Directus does (auth_data).
func TestCrossIssuerBindingHolds(t *testing.T) {
	for _, lostState := range []bool{false, true} {
		t.Run(map[bool]string{false: "state", true: "auth_data"}[lostState], func(t *testing.T) {
			h := newHarness(t, "12.4.0")
			if r := h.exchange(h.auth0Token("shared", "items:read")); r.Status != 200 {
				t.Fatalf("first exchange: %d %v", r.Status, r.Body)
			}
			o := h.opts
			o.Issuers = slices.Clone(o.Issuers)
			o.Issuers[0].UserIDs, o.Issuers[1].UserIDs = UserIDsIssuer, UserIDsHook
			if lostState {
				o.Store = NewMemoryStore()
			}
			ex, err := NewExchanger(o)
			if err != nil {
				t.Fatal(err)
			}
			ex.SetMapper(h.ex.Mapper())
			now := h.clock.Now()
			subject := h.st.sign(t, map[string]any{"iss": h.st.URL, "sub": "shared", "aud": testAudience, "iat": now.Unix(),
				"exp": now.Add(time.Hour).Unix(), "scp": []string{"items:read"}, "stt": 1})
			before := h.fake.Snapshot()
			_, err = ex.Exchange(context.Background(), Request{SubjectToken: subject})
			var ee *Error
			if !errors.As(err, &ee) || ee.Code != "unauthorized_client" || !strings.Contains(ee.Description, "another issuer") {
				t.Fatalf("exchange of the other issuer's client: %v, want unauthorized_client (another issuer)", err)
			}
			if d := diffSnapshots(before, h.fake.Snapshot()); d != "" {
				t.Errorf("the refused exchange changed Directus: %s", d)
			}
		})
	}
}

// Issuer-scoped ids cannot collide: issuers that are prefixes of each other
// once shared ids with issuer and client concatenated.
func TestUserIDsAreUnambiguous(t *testing.T) {
	b := &IssuerConfig{Name: "b", Issuer: "https://idp.example/tenant", UserIDs: UserIDsIssuer}
	c := &IssuerConfig{Name: "c", Issuer: "https://idp.example/tenant/b", UserIDs: UserIDsIssuer}
	if UserID(uuid.Nil, b, "/bsvc") == UserID(uuid.Nil, c, "svc") {
		t.Errorf("prefix issuers share a user id")
	}
	if got := UserID(uuid.Nil, nil, "svc"); got != uuid.NewSHA1(uuid.Nil, []byte("svc")).String() {
		t.Errorf("hook ids changed: %s", got)
	}
	if ExternalID(b, "svc") != "b:svc" || ExternalID(&IssuerConfig{}, "svc") != "svc" {
		t.Errorf("external ids: %q %q", ExternalID(b, "svc"), ExternalID(&IssuerConfig{}, "svc"))
	}
	// A client id with a NUL could forge the separator: refused.
	h := newHarness(t, "12.4.0")
	if r := h.exchange(h.auth0Token("directus-bridge\x00x\x00svc", "items:read")); r.Status != 400 {
		t.Errorf("client with control characters: %d %v, want 400", r.Status, r.Body)
	}
}

func TestValidateIssuers(t *testing.T) {
	ok := func(name, iss string) IssuerConfig {
		return IssuerConfig{Name: name, Issuer: iss, Audiences: []string{"a"}}
	}
	for _, tc := range []struct {
		name    string
		issuers []IssuerConfig
		want    string
	}{
		{"two hook issuers", []IssuerConfig{ok("a", "https://a/"), ok("b", "https://b/")}, "all use hook user ids"},
		{"old key", []IssuerConfig{func() IssuerConfig { c := ok("a", "https://a/"); c.IDFromIssuer = new(bool); return c }()}, "id_from_issuer was replaced"},
		{"unknown scheme", []IssuerConfig{func() IssuerConfig { c := ok("a", "https://a/"); c.UserIDs = "uuid"; return c }()}, "user_ids must be"},
		{"colon in a scoped name", []IssuerConfig{func() IssuerConfig { c := ok("a:b", "https://a/"); c.UserIDs = UserIDsIssuer; return c }()}, "must not contain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := errors.Join(ValidateIssuers(tc.issuers)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ValidateIssuers = %v, want %q", err, tc.want)
			}
		})
	}
	one := ok("a", "https://a/")
	two := ok("b", "https://b/")
	two.UserIDs = UserIDsIssuer
	if errs := ValidateIssuers([]IssuerConfig{one, two}); len(errs) != 0 {
		t.Errorf("valid issuers: %v", errs)
	}
}

// One failed revocation batch does not keep the tokens of the later batches
// alive.
func TestRevokeGoesOnAfterAFailedBatch(t *testing.T) {
	h := newHarness(t, "12.4.0")
	past := h.clock.Now().Add(-time.Minute)
	var recs []Record
	for i := range revokeBatch + 50 {
		recs = append(recs, Record{UserID: fmt.Sprintf("00000000-0000-5000-8000-%012d", i), Issuer: "auth0",
			Client: fmt.Sprint(i), Token: fmt.Sprint("dbr_t", i), Expiry: past})
	}
	if err := h.store.PutAll(recs); err != nil {
		t.Fatal(err)
	}
	h.failNext(http.MethodPatch, false)
	n, err := h.ex.RevokeExpired(context.Background())
	if err == nil || n != 50 {
		t.Errorf("RevokeExpired = %d, %v; want the second batch (50) revoked and the first batch's error", n, err)
	}
}
