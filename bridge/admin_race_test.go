package bridge

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// An administrator reactivates a user the bridge suspended (idle), then
// suspends it again on purpose: the suspension is the administrator's now,
// and the client's next exchange must not undo it.
func TestAdminResuspensionIsNotUndone(t *testing.T) {
	h := newHarness(t, "12.4.0")
	admin := h.humanAdmin()
	ctx := context.Background()
	h.watch()
	if r := h.exchange(h.auth0Token("idle", "items:read")); r.Status != 200 {
		t.Fatalf("exchange: %d %v", r.Status, r.Body)
	}
	h.clock.Add(31 * 24 * time.Hour)
	if _, err := h.ex.Reconcile(ctx, ReconcileConfig{}, false); err != nil { // suspends the idle user
		t.Fatal(err)
	}
	if u := h.user(idOf("idle")); u.Status != "suspended" {
		t.Fatalf("setup: reconcile did not suspend: %s", u.Status)
	}
	// The administrator reactivates it, the watcher sees it, then the
	// administrator suspends it on purpose.
	if _, err := admin.UpdateUser(ctx, idOf("idle"), directus.UserChange{Status: directus.Ptr("active")}); err != nil {
		t.Fatal(err)
	}
	h.watch()
	if _, err := admin.UpdateUser(ctx, idOf("idle"), directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	h.watch()
	r := h.exchange(h.auth0Token("idle", "items:read"))
	if u := h.user(idOf("idle")); u.Status != "suspended" || r.Status == 200 {
		t.Fatalf("the bridge reactivated a user an administrator suspended: answer %d, status now %s, token works %v",
			r.Status, u.Status, h.tokenWorks(r.str("access_token")))
	}
}

// The reconciler's suspension fails with a 503 before Directus applied it;
// an administrator then suspends the user: that suspension is the
// administrator's, not the bridge's unconfirmed one, and stays.
func TestUnconfirmedBridgeSuspensionDoesNotHideAdminSuspension(t *testing.T) {
	h := newHarness(t, "12.4.0")
	admin := h.humanAdmin()
	ctx := context.Background()
	h.watch()
	if r := h.exchange(h.auth0Token("idle2", "items:read")); r.Status != 200 {
		t.Fatalf("exchange: %d %v", r.Status, r.Body)
	}
	h.clock.Add(31 * 24 * time.Hour)
	h.fake.SetFault(func(r *http.Request) directustest.Fault {
		if r.Method == http.MethodPatch && r.URL.Path == "/users" && r.Header.Get("Authorization") == "Bearer "+h.fake.AdminToken {
			return directustest.Fault{Status: 503} // refused before Directus applied anything
		}
		return directustest.Fault{}
	})
	if _, err := h.ex.Reconcile(ctx, ReconcileConfig{}, false); err == nil {
		t.Fatal("setup: reconcile did not fail")
	}
	h.fake.SetFault(nil)
	if u := h.user(idOf("idle2")); u.Status != "active" {
		t.Fatalf("setup: the refused suspension applied: %s", u.Status)
	}
	if _, err := admin.UpdateUser(ctx, idOf("idle2"), directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	h.watch()
	r := h.exchange(h.auth0Token("idle2", "items:read"))
	if u := h.user(idOf("idle2")); u.Status != "suspended" || r.Status == 200 {
		t.Fatalf("the bridge reactivated a user an administrator suspended: answer %d, status now %s", r.Status, u.Status)
	}
}

// raceDirectus lets a test interleave an exchange's create with a Watch.
type raceDirectus struct {
	*directus.Client
	inCreate chan struct{} // closed when the exchange's create starts
	listed   chan struct{} // closed when Watch's read of the users returned
	mu       sync.Mutex
	written  string // the token the create carried
	armed    bool
}

func (d *raceDirectus) CreateUser(ctx context.Context, u directus.NewUser) (directus.User, error) {
	d.mu.Lock()
	armed := d.armed
	d.mu.Unlock()
	if !armed {
		return d.Client.CreateUser(ctx, u)
	}
	close(d.inCreate)
	<-d.listed
	d.mu.Lock()
	d.written = u.Token
	d.mu.Unlock()
	if _, err := d.Client.CreateUser(ctx, u); err != nil {
		return directus.User{}, err
	}
	// Directus applied the create; the answer is lost.
	return directus.User{}, &directus.APIError{Op: "create_user", Status: 502, Code: "SERVICE_UNAVAILABLE", Message: "answer lost"}
}

func (d *raceDirectus) ListUsers(ctx context.Context, f directus.UserFilter, limit, offset int) ([]directus.User, error) {
	users, err := d.Client.ListUsers(ctx, f, limit, offset)
	if len(f.IDs) > 0 {
		select {
		case <-d.inCreate:
			close(d.listed)
		default:
		}
	}
	return users, err
}

// A Watch that read a user while an exchange was writing it must not apply
// its stale read after the exchange ended without a confirmed answer: the
// record would forget a token Directus holds.
func TestWatchKeepsTokenOfConcurrentLostWrite(t *testing.T) {
	rd := &raceDirectus{inCreate: make(chan struct{}), listed: make(chan struct{})}
	h := newHarness(t, "12.4.0", func(h *harness, o *Options) {
		c, err := directus.New(h.fake.URL, h.fake.AdminToken, directus.Options{Retries: -1})
		if err != nil {
			t.Fatal(err)
		}
		rd.Client = c
		o.Directus = rd
	})
	admin := h.humanAdmin()
	ctx := context.Background()
	h.watch()
	if r := h.exchange(h.auth0Token("race", "items:read")); r.Status != 200 {
		t.Fatalf("exchange: %d %v", r.Status, r.Body)
	}
	// An administrator deletes the user; before the watcher runs, the client
	// rotates (the record still shows the user), its PATCH finds no user and
	// it creates it again.
	if err := admin.DeleteUsers(ctx, []string{idOf("race")}); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(11 * time.Minute) // into the rotation window
	rd.mu.Lock()
	rd.armed = true
	rd.mu.Unlock()
	done := make(chan tokenResponse)
	go func() { done <- h.exchange(h.auth0Token("race", "items:read")) }()
	<-rd.inCreate
	h.watch() // reads the user (absent), then waits for the exchange's lock
	if r := <-done; r.Status != 503 {
		t.Fatalf("exchange: %d %v, want 503 (lost answer)", r.Status, r.Body)
	}
	u, err := h.admin.User(ctx, idOf("race"))
	if err != nil || !u.HasToken {
		t.Fatalf("setup: the lost create did not apply: %v", err)
	}
	rd.mu.Lock()
	tok := rd.written
	rd.mu.Unlock()
	rec, _ := h.store.Get(idOf("race"))
	known := rec.Token == tok
	for _, c := range rec.Maybe {
		known = known || c.Token == tok
	}
	if !known {
		h.clock.Add(20 * time.Minute)
		n, err := h.ex.RevokeExpired(ctx)
		t.Fatalf("Directus holds a token the bridge forgot (record gone=%v unsure=%v maybe=%d); after its expiry the revoker revoked %d (%v) and it still works: %v",
			rec.Gone, rec.Unsure, len(rec.Maybe), n, err, h.tokenWorks(tok))
	}
}

// Records of the earlier format carry no issuer URL: the first start binds
// each to the URL of the issuer of its name, and persists it. Renaming the
// old issuer later and giving its name to another IdP (with hook ids) then
// cannot hand the old user to that IdP's client with the same sub.
func TestFormat1RecordIsBoundToItsIssuerURL(t *testing.T) {
	h := newHarness(t, "12.4.0")
	ctx := context.Background()
	now := h.clock.Now()
	// What the earlier version left: the user of auth0's client "svc" and a
	// format 1 record bound by the name "auth0" (no issuer_url, no binding).
	if _, err := h.admin.CreateUser(ctx, directus.NewUser{ID: idOf("svc"), Status: "active", Role: h.reader.ID,
		ExternalIdentifier: "svc", FirstName: "External", LastName: "Client", Token: "dbr_old-auth0-token"}); err != nil {
		t.Fatal(err)
	}
	if err := h.store.Put(Record{UserID: idOf("svc"), Issuer: "auth0", Client: "svc", Token: "dbr_old-auth0-token",
		Expiry: now.Add(10 * time.Minute), Role: h.reader.ID, Scopes: []string{"items:read"}}); err != nil {
		t.Fatal(err)
	}
	// The first start on the new format binds the record.
	if _, err := NewExchanger(h.opts); err != nil {
		t.Fatal(err)
	}
	if rec, _ := h.store.Get(idOf("svc")); rec.IssuerURL != h.auth0.URL {
		t.Fatalf("format 1 record bound to %q, want %q", rec.IssuerURL, h.auth0.URL)
	}
	// Then the operator renames the old issuer and gives its name to
	// another IdP with hook ids.
	o := h.opts
	o.Issuers = []IssuerConfig{
		{Name: "auth0", Issuer: h.st.URL, Audiences: []string{testAudience}, Algorithms: []string{"ES256"},
			RequiredClaims: map[string]any{"stt": 1}, ScopeClaims: []string{"scp"}},
		{Name: "auth0-old", Issuer: h.auth0.URL, Audiences: []string{testAudience}, UserIDs: UserIDsIssuer,
			RequiredClaims: map[string]any{"gty": "client-credentials"}},
	}
	ex, err := NewExchanger(o)
	if err != nil {
		t.Fatal(err)
	}
	ex.SetMapper(h.ex.Mapper())
	subject := h.st.sign(t, map[string]any{"iss": h.st.URL, "sub": "svc", "aud": testAudience, "iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "scp": []string{"items:read"}, "stt": 1})
	before := h.fake.Snapshot()
	res, err := ex.Exchange(ctx, Request{SubjectToken: subject})
	if err == nil {
		t.Fatalf("another IdP's client took over the old issuer's user: token is the old one: %v", res.Token == "dbr_old-auth0-token")
	}
	if d := diffSnapshots(before, h.fake.Snapshot()); d != "" {
		t.Errorf("the refusal changed Directus: %s", d)
	}
}

// A write's answer that shows the user holds no token (an administrator
// cleared it, the watcher has not run yet, a rules reload made the next
// exchange PATCH only the role) must not be recorded as confirming the token:
// the bridge writes the token again before it answers.
func TestWriteFollowsTheAnswersTokenState(t *testing.T) {
	h := newHarness(t, "12.4.0")
	admin := h.humanAdmin()
	ctx := context.Background()
	h.watch()
	tok := h.exchange(h.auth0Token("cleared", "items:read")).str("access_token")
	if _, err := admin.UpdateUser(ctx, idOf("cleared"), directus.UserChange{Token: directus.Ptr("")}); err != nil {
		t.Fatal(err)
	}
	m, _, err := LoadMapper(ctx, h.admin, mapping.Rules{{Name: "readers", AnyScopes: []string{"items:read"}, Role: "Writer"}})
	if err != nil {
		t.Fatal(err)
	}
	h.ex.SetMapper(m)
	r := h.exchange(h.auth0Token("cleared", "items:read"))
	rec, _ := h.store.Get(idOf("cleared"))
	if r.Status == 200 && !h.tokenWorks(r.str("access_token")) {
		t.Fatalf("200 (outcome recorded: unsure=%v, same token %v) with a token Directus does not hold; the PATCH answer said token null",
			rec.Unsure, r.str("access_token") == tok)
	}
}
