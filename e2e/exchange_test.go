package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/conformance"
	"github.com/directus-bridge/directus-bridge/mapping"
)

func TestDirectusConformance(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		conformance.Run(t, conformance.Target{URL: d.URL, AdminToken: d.AdminToken, Major: d.Major()})
	})
}

func random() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// raw sends an admin request to Directus and decodes data into out.
func raw(t *testing.T, d DirectusInstance, token, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(context.Background(), method, d.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if out != nil {
		var env struct{ Data json.RawMessage }
		_ = json.NewDecoder(resp.Body).Decode(&env)
		_ = json.Unmarshal(env.Data, out)
	}
	return resp.StatusCode
}

// fixture is a collection plus reader and writer roles on one Directus.
type fixture struct {
	d          DirectusInstance
	admin      *directus.Client
	collection string
	reader     directus.Role // may read items
	writer     directus.Role // may read and create items
	audit      directus.Policy
}

func newFixture(t *testing.T, d DirectusInstance) *fixture {
	t.Helper()
	f := &fixture{d: d, collection: "e2e_items_" + random()}
	var err error
	f.admin, err = directus.New(d.URL, d.AdminToken, directus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if st := raw(t, d, d.AdminToken, "POST", "/collections", map[string]any{
		"collection": f.collection, "schema": map[string]any{}, "meta": map[string]any{},
		"fields": []any{
			map[string]any{"field": "id", "type": "integer", "schema": map[string]any{"is_primary_key": true, "has_auto_increment": true}},
			map[string]any{"field": "title", "type": "string", "schema": map[string]any{}},
		},
	}, nil); st != 200 {
		t.Fatalf("create collection: status %d", st)
	}
	t.Cleanup(func() { raw(t, d, d.AdminToken, "DELETE", "/collections/"+f.collection, nil, nil) })
	policy := func(name string, actions ...string) directus.Policy {
		p, err := f.admin.CreatePolicy(ctx, directus.Policy{Name: name + "-" + random()})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range actions {
			if st := raw(t, d, d.AdminToken, "POST", "/permissions", map[string]any{
				"policy": p.ID, "collection": f.collection, "action": a, "fields": []string{"*"}, "permissions": map[string]any{},
			}, nil); st != 200 {
				t.Fatalf("create %s permission: status %d", a, st)
			}
		}
		return p
	}
	readP := policy("e2e-read", "read")
	writeP := policy("e2e-write", "read", "create")
	f.audit = policy("e2e-audit")
	t.Cleanup(func() {
		for _, p := range []directus.Policy{readP, writeP, f.audit} {
			raw(t, d, d.AdminToken, "DELETE", "/policies/"+p.ID, nil, nil)
		}
	})
	if f.reader, err = f.admin.CreateRole(ctx, directus.Role{Name: "e2e-reader-" + random(), Policies: []string{readP.ID}}); err != nil {
		t.Fatal(err)
	}
	if f.writer, err = f.admin.CreateRole(ctx, directus.Role{Name: "e2e-writer-" + random(), Policies: []string{writeP.ID}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The machine users the tests left with the fixture's roles go
		// first, then the roles.
		var users []struct {
			ID string `json:"id"`
		}
		q := url.Values{"fields": {"id"}, "limit": {"-1"}, "filter[role][_in]": {f.reader.ID + "," + f.writer.ID}}
		raw(t, d, d.AdminToken, "GET", "/users?"+q.Encode(), nil, &users)
		ids := make([]string, len(users))
		for i, u := range users {
			ids[i] = u.ID
		}
		if err := f.admin.DeleteUsers(context.Background(), ids); err != nil {
			t.Errorf("cleanup: delete the fixture's users: %v", err)
		}
		for _, r := range []directus.Role{f.reader, f.writer} {
			raw(t, d, d.AdminToken, "DELETE", "/roles/"+r.ID, nil, nil)
		}
	})
	return f
}

// deleteUsersAtEnd deletes the users when the test ends, whatever role they
// hold by then.
func (f *fixture) deleteUsersAtEnd(t *testing.T, ids ...string) {
	t.Helper()
	t.Cleanup(func() {
		if err := f.admin.DeleteUsers(context.Background(), ids); err != nil {
			t.Errorf("cleanup: delete users %v: %v", ids, err)
		}
	})
}

// can reports whether token may read and create items of the collection.
func (f *fixture) can(t *testing.T, token string) (read, create bool) {
	t.Helper()
	read = raw(t, f.d, token, "GET", "/items/"+f.collection, nil, nil) == 200
	create = raw(t, f.d, token, "POST", "/items/"+f.collection, map[string]any{"title": "x"}, nil) == 200
	return read, create
}

// bridgeUnderTest is an in-process bridge wired to a real Directus and the
// real IdP.
type bridgeUnderTest struct {
	ex      *bridge.Exchanger
	url     string
	logs    *lockedBuffer
	issuers []bridge.IssuerConfig
	ns      uuid.UUID
	// stop ends the bridge (server, revoker) before the test does, so that
	// another bridge can open its state file. Safe to call twice.
	stop func()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// User-id schemes of bridge.IssuerConfig.UserIDs.
const (
	hookIDs   = bridge.UserIDsHook   // uuidv5(namespace, sub), external_identifier = sub
	issuerIDs = bridge.UserIDsIssuer // issuer-scoped ids, external_identifier = "<issuer name>:<client>"
)

// stackIssuers configures the IdP's three issuers. auth0 keeps the hook
// extension's ids (at most one issuer may); the others use issuer-scoped ids.
// The eddsa issuer requires a gty claim that its tokens do not carry.
func stackIssuers() []bridge.IssuerConfig {
	idp := stack.IdP.Issuers
	return []bridge.IssuerConfig{
		{Name: "auth0", Issuer: idp["auth0"].Issuer, Audiences: []string{idp["auth0"].Audience}, UserIDs: hookIDs,
			RequiredClaims: map[string]any{"gty": "client-credentials"}, RequireTyp: "at+jwt", Leeway: bridge.Duration(time.Second)},
		{Name: "supertokens", Issuer: idp["supertokens"].Issuer, Audiences: []string{idp["supertokens"].Audience}, UserIDs: issuerIDs,
			Algorithms: []string{"ES256"}, RequiredClaims: map[string]any{"stt": 1}, ScopeClaims: []string{"scp"}},
		{Name: "eddsa", Issuer: idp["eddsa"].Issuer, Audiences: []string{idp["eddsa"].Audience}, UserIDs: issuerIDs,
			Algorithms: []string{"EdDSA"}, RequiredClaims: map[string]any{"gty": "client-credentials"}},
	}
}

// defaultRules: items:write grants the writer role and the audit policy,
// items:read (or my_service#read) the reader role.
func defaultRules(f *fixture) mapping.Rules {
	return mapping.Rules{
		{Name: "writers", AllScopes: []string{"items:write"}, Role: f.writer.Name, Policies: []string{f.audit.Name}},
		{Name: "readers", AnyScopes: []string{"items:read", "my_service#read"}, Role: f.reader.Name},
	}
}

// bridgeSetup is what a test changes of the in-process bridge; zero fields
// take the defaults of startBridge.
type bridgeSetup struct {
	issuers  []bridge.IssuerConfig // default stackIssuers()
	tokens   bridge.TokenConfig
	users    bridge.UserConfig
	directus *directus.Client // default the fixture's admin client
	store    *bridge.Store    // default a memory store; the caller closes its own
	rules    mapping.Rules    // default defaultRules(f)
}

func startBridge(t *testing.T, f *fixture, tokens bridge.TokenConfig, users bridge.UserConfig) *bridgeUnderTest {
	t.Helper()
	return startBridgeWith(t, f, bridgeSetup{tokens: tokens, users: users})
}

func startBridgeWith(t *testing.T, f *fixture, s bridgeSetup) *bridgeUnderTest {
	t.Helper()
	if s.issuers == nil {
		s.issuers = stackIssuers()
	}
	if s.directus == nil {
		s.directus = f.admin
	}
	if s.store == nil {
		s.store = bridge.NewMemoryStore()
	}
	if s.rules == nil {
		s.rules = defaultRules(f)
	}
	ns := uuid.Nil
	if s.users.Namespace != "" {
		ns = uuid.MustParse(s.users.Namespace)
	}
	logs := &lockedBuffer{b: &bytes.Buffer{}}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ex, err := bridge.NewExchanger(bridge.Options{
		Issuers: s.issuers, Tokens: s.tokens, Users: s.users, Directus: s.directus, Store: s.store, Logger: log,
		Limits: bridge.LimitsConfig{PerIP: bridge.RateLimit{Rate: -1}, PerClient: bridge.RateLimit{Rate: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := bridge.LoadMapper(ctx, s.directus, s.rules)
	if err != nil {
		t.Fatal(err)
	}
	ex.SetMapper(m)
	ex.DetectProvider(ctx)
	revoker := make(chan struct{})
	go func() {
		defer close(revoker)
		ex.RunRevoker(ctx)
	}()
	srv := httptest.NewServer((&bridge.Server{Exchanger: ex, Logger: log}).Handler())
	stop := func() {
		srv.Close()
		cancel()
		<-revoker
	}
	t.Cleanup(stop)
	return &bridgeUnderTest{ex: ex, url: srv.URL, logs: logs, issuers: s.issuers, ns: ns, stop: stop}
}

// userID is the Directus user id the bridge gives client of the named issuer.
func (b *bridgeUnderTest) userID(t *testing.T, issuer, client string) string {
	t.Helper()
	for i := range b.issuers {
		if b.issuers[i].Name == issuer {
			return bridge.UserID(b.ns, &b.issuers[i], client)
		}
	}
	t.Fatalf("the bridge has no issuer %q", issuer)
	return ""
}

type exchanged struct {
	status     int
	retryAfter string
	body       map[string]any
}

func (r exchanged) token() string { s, _ := r.body["access_token"].(string); return s }
func (r exchanged) code() string  { s, _ := r.body["error"].(string); return s }

func (b *bridgeUnderTest) exchange(t *testing.T, subject, scope string) exchanged {
	t.Helper()
	form := url.Values{
		"grant_type": {bridge.GrantTypeTokenExchange}, "subject_token": {subject},
		"subject_token_type": {bridge.TokenTypeAccessToken},
	}
	if scope != "" {
		form.Set("scope", scope)
	}
	resp, err := http.PostForm(b.url+"/oauth/token", form)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	defer resp.Body.Close()
	out := exchanged{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	_ = json.NewDecoder(resp.Body).Decode(&out.body)
	return out
}

// userID is the hook extension's user id of a client: uuidv5(NIL, sub).
func userID(client string) string { return uuid.NewSHA1(uuid.Nil, []byte(client)).String() }

// sameScopes reports whether scope (a JSON value) is a space-separated list
// of the scopes in want, in any order.
func sameScopes(scope any, want string) bool {
	s, ok := scope.(string)
	if !ok {
		return false
	}
	got, exp := strings.Fields(s), strings.Fields(want)
	slices.Sort(got)
	slices.Sort(exp)
	return slices.Equal(got, exp)
}

func TestExchange(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		f := newFixture(t, d)
		b := startBridge(t, f, bridge.TokenConfig{}, bridge.UserConfig{Provider: "bcc-client-credentials"})
		auth0, st, ed := stack.IdP.Issuers["auth0"], stack.IdP.Issuers["supertokens"], stack.IdP.Issuers["eddsa"]

		t.Run("Auth0ReaderReadsOnly", func(t *testing.T) {
			id, secret := auth0.registerClient(t, "", "items:read my_service#read", 600)
			before := time.Now().Add(-2 * time.Second)
			r := b.exchange(t, auth0.token(t, id, secret, "", ""), "")
			if r.status != 200 || !sameScopes(r.body["scope"], "items:read my_service#read") {
				t.Fatalf("exchange: %d %v", r.status, r.body)
			}
			if read, create := f.can(t, r.token()); !read || create {
				t.Errorf("reader: read=%v create=%v, want true false", read, create)
			}
			if got := b.userID(t, "auth0", id+"@clients"); got != userID(id+"@clients") {
				t.Errorf("auth0 (hook ids): bridge.UserID = %s, want uuidv5(NIL, sub) = %s", got, userID(id+"@clients"))
			}
			u, err := f.admin.User(context.Background(), userID(id+"@clients"))
			if err != nil {
				t.Fatalf("user uuidv5(NIL, sub): %v", err)
			}
			wantProvider := "bcc-client-credentials"
			if d.Major() >= 12 {
				wantProvider = "default" // Directus 12 Core refuses custom providers
			}
			if u.ExternalIdentifier != id+"@clients" || u.FirstName != "External" || u.LastName != "Client" ||
				u.Role != f.reader.ID || u.Provider != wantProvider || u.Status != "active" {
				t.Errorf("user = %+v (want provider %s, role %s)", u, wantProvider, f.reader.ID)
			}
			if u.LastAccess.Before(before) || u.LastAccess.After(time.Now().Add(2*time.Second)) {
				t.Errorf("last_access %v is not fresh", u.LastAccess)
			}
		})

		t.Run("SupertokensWriterWithPolicy", func(t *testing.T) {
			id, secret := st.registerClient(t, "", "items:write items:read", 600)
			subject := st.token(t, id, secret, "", "")
			r := b.exchange(t, subject, "")
			if r.status != 200 || !sameScopes(r.body["scope"], "items:read items:write") {
				t.Fatalf("exchange: %d %v, want 200 with scope items:read items:write", r.status, r.body)
			}
			writerToken := r.token()
			if read, create := f.can(t, writerToken); !read || !create {
				t.Errorf("writer: read=%v create=%v, want true true", read, create)
			}
			// supertokens has issuer-scoped user ids.
			uid := b.userID(t, "supertokens", id)
			if uid == userID(id) {
				t.Fatalf("supertokens user id %s is the hook id uuidv5(NIL, sub)", uid)
			}
			u, err := f.admin.User(context.Background(), uid)
			if err != nil {
				t.Fatalf("user %s: %v", uid, err)
			}
			if u.Role != f.writer.ID || len(u.Access) != 1 || u.Access[0].Policy != f.audit.ID || u.ExternalIdentifier != "supertokens:"+id {
				t.Errorf("writer user role=%s policies=%v external_identifier=%q", u.Role, u.PolicyIDs(), u.ExternalIdentifier)
			}
			// Narrowing to a strict subset of the token's scopes is refused,
			// and changes nothing.
			r = b.exchange(t, subject, "items:read")
			if r.status != 400 || r.code() != "invalid_scope" {
				t.Errorf("narrowed to items:read: %d %v, want 400 invalid_scope", r.status, r.body)
			}
			if u, _ := f.admin.User(context.Background(), uid); u.Role != f.writer.ID {
				t.Errorf("a refused narrowing changed the role to %s", u.Role)
			}
			// Asking for exactly the token's scopes is the same as asking for none.
			r = b.exchange(t, subject, "items:write items:read")
			if r.status != 200 || r.token() != writerToken || !sameScopes(r.body["scope"], "items:read items:write") {
				t.Errorf("all scopes asked for: %d %v, want 200, the same token, scope items:read items:write", r.status, r.body)
			}
		})

		t.Run("EdDSAIssuer", func(t *testing.T) {
			// The eddsa issuer's tokens carry no gty claim: the configured
			// required claim refuses them.
			id, secret := ed.registerClient(t, "", "items:read", 600)
			r := b.exchange(t, ed.token(t, id, secret, "", ""), "")
			if r.status != 400 || r.code() != "invalid_request" || !strings.Contains(r.body["error_description"].(string), "gty") {
				t.Errorf("eddsa token without gty: %d %v", r.status, r.body)
			}
			if _, err := f.admin.User(context.Background(), b.userID(t, "eddsa", id)); !errors.Is(err, directus.ErrNotFound) {
				t.Errorf("refused token created a user: %v", err)
			}
		})

		t.Run("ReuseAndConcurrency", func(t *testing.T) {
			id, secret := auth0.registerClient(t, "", "items:read", 600)
			first := b.exchange(t, auth0.token(t, id, secret, "", ""), "").token()
			second := b.exchange(t, auth0.token(t, id, secret, "", ""), "").token()
			if first == "" || first != second {
				t.Errorf("two exchanges in a row returned different tokens")
			}
			id2, secret2 := auth0.registerClient(t, "", "items:read", 600)
			subject := auth0.token(t, id2, secret2, "", "")
			var wg sync.WaitGroup
			results := make([]exchanged, 50)
			works := make([]bool, 50)
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i] = b.exchange(t, subject, "")
					works[i] = raw(t, d, results[i].token(), "GET", "/users/me", nil, nil) == 200
				}()
			}
			wg.Wait()
			for i, r := range results {
				if r.status != 200 || r.token() != results[0].token() || !works[i] {
					t.Fatalf("concurrent exchange %d: status %d, same token %v, works %v", i, r.status, r.token() == results[0].token(), works[i])
				}
			}
			users, err := f.admin.ListUsers(context.Background(), directus.UserFilter{IDs: []string{userID(id2 + "@clients")}}, -1, 0)
			if err != nil || len(users) != 1 {
				t.Errorf("users for the client: %d, %v; want exactly 1", len(users), err)
			}
		})

		t.Run("200ConcurrentFor20Clients", func(t *testing.T) {
			var subjects, ids []string
			for range 20 {
				id, secret := st.registerClient(t, "", "items:read", 600)
				subjects = append(subjects, st.token(t, id, secret, "", ""))
				ids = append(ids, b.userID(t, "supertokens", id))
			}
			type result struct {
				status int
				works  bool
				code   string
			}
			results := make([]result, 200)
			var wg sync.WaitGroup
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := b.exchange(t, subjects[i%20], "")
					results[i] = result{status: r.status, code: r.code()}
					if r.status == 200 {
						results[i].works = raw(t, d, r.token(), "GET", "/items/"+f.collection, nil, nil) == 200
					}
				}()
			}
			wg.Wait()
			for i, r := range results {
				// 503 + Retry-After is the documented backpressure when
				// Directus is overloaded; anything else is a failure.
				if r.status == 503 && r.code == "temporarily_unavailable" {
					continue
				}
				if r.status != 200 || !r.works {
					t.Errorf("exchange %d: status %d (%s), token works %v", i, r.status, r.code, r.works)
				}
			}
			users, err := f.admin.ListUsers(context.Background(), directus.UserFilter{IDs: ids}, -1, 0)
			if err != nil || len(users) != 20 {
				t.Errorf("users: %d, %v; want exactly 20", len(users), err)
			}
		})

		t.Run("Refusals", func(t *testing.T) {
			id, secret := auth0.registerClient(t, "", "items:read unmapped", 600)
			short, shortSecret := auth0.registerClient(t, "", "items:read", 1)
			expired := auth0.token(t, short, shortSecret, "", "")
			time.Sleep(3 * time.Second) // 1s TTL + 1s leeway, and a margin
			for _, tc := range []struct {
				name, subject, scope, code string
			}{
				{"wrong audience", auth0.token(t, id, secret, "items:read", "https://other.example/api"), "", "invalid_request"},
				{"expired", expired, "", "invalid_request"},
				{"no mapped scope", auth0.token(t, id, secret, "unmapped", ""), "", "invalid_scope"},
				{"scope not carried", auth0.token(t, id, secret, "items:read", ""), "items:write", "invalid_scope"},
			} {
				r := b.exchange(t, tc.subject, tc.scope)
				if r.status != 400 || r.code() != tc.code {
					t.Errorf("%s: %d %v, want 400 %s", tc.name, r.status, r.body, tc.code)
				}
			}
			for _, c := range []string{id + "@clients", short + "@clients"} {
				if _, err := f.admin.User(context.Background(), userID(c)); !errors.Is(err, directus.ErrNotFound) {
					t.Errorf("refused exchanges created user for %s: %v", c, err)
				}
			}
		})

		t.Run("ShortTTLIsRevoked", func(t *testing.T) {
			short := startBridge(t, f, bridge.TokenConfig{TTL: bridge.Duration(3 * time.Second),
				RotateBefore: bridge.Duration(time.Second), RevokeInterval: bridge.Duration(300 * time.Millisecond)}, bridge.UserConfig{})
			id, secret := auth0.registerClient(t, "", "items:read", 600)
			r := short.exchange(t, auth0.token(t, id, secret, "", ""), "")
			if r.status != 200 || r.body["expires_in"].(float64) > 3 {
				t.Fatalf("exchange: %d %v", r.status, r.body)
			}
			if raw(t, d, r.token(), "GET", "/users/me", nil, nil) != 200 {
				t.Fatalf("fresh token refused by Directus")
			}
			deadline := time.Now().Add(10 * time.Second)
			for raw(t, d, r.token(), "GET", "/users/me", nil, nil) == 200 {
				if time.Now().After(deadline) {
					t.Fatalf("token still valid in Directus 10s after its 3s TTL")
				}
				time.Sleep(200 * time.Millisecond)
			}
			if u, _ := f.admin.User(context.Background(), userID(id+"@clients")); u.HasToken {
				t.Errorf("expired token not cleared in Directus")
			}
		})

		t.Run("DirectusOutage", func(t *testing.T) {
			id, secret := auth0.registerClient(t, "", "items:read", 600)
			subject := auth0.token(t, id, secret, "", "")
			stackCmd(t, "directus-stop", d.Name)
			stopped := true
			t.Cleanup(func() {
				if stopped {
					stackCmd(t, "directus-start", d.Name)
				}
			})
			r := b.exchange(t, subject, "")
			if r.status != 503 || r.retryAfter == "" || r.code() != "temporarily_unavailable" {
				t.Errorf("Directus down: %d Retry-After=%q %v", r.status, r.retryAfter, r.body)
			}
			stackCmd(t, "directus-start", d.Name)
			stopped = false
			r = b.exchange(t, subject, "")
			if r.status != 200 || raw(t, d, r.token(), "GET", "/users/me", nil, nil) != 200 {
				t.Errorf("after Directus came back: %d %v", r.status, r.body)
			}
		})

		t.Run("NoSecretsInLogs", func(t *testing.T) {
			logs := b.logs.String()
			if strings.Contains(logs, d.AdminToken) || strings.Contains(logs, "dbr_") || strings.Contains(logs, "eyJ") {
				t.Errorf("a token reached the bridge log")
			}
			if !strings.Contains(logs, `"token_fp"`) {
				t.Errorf("the log has no token fingerprints")
			}
		})
	})
}
