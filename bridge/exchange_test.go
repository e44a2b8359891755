package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
	"github.com/directus-bridge/directus-bridge/mapping"
)

const testAudience = "https://bridge.test/api"

// clock is a test clock that only moves when told to.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type harness struct {
	t        *testing.T
	fake     *directustest.Server
	admin    *directus.Client
	ex       *Exchanger
	srv      *httptest.Server
	auth0    *testIssuer
	st       *testIssuer
	clock    *clock
	store    *Store
	logs     *syncBuffer
	reader   directus.Role
	writer   directus.Role
	extra    directus.Policy
	provider string
	opts     Options
}

type harnessOpt func(*harness, *Options)

func newHarness(t *testing.T, version string, opts ...harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, clock: &clock{t: time.Now().Truncate(time.Second)}, logs: &syncBuffer{}}
	h.fake = directustest.NewServer(t, directustest.Options{Version: version})
	var err error
	h.admin, err = directus.New(h.fake.URL, h.fake.AdminToken, directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	h.extra, _ = h.admin.CreatePolicy(ctx, directus.Policy{Name: "extra"})
	readPol, _ := h.admin.CreatePolicy(ctx, directus.Policy{Name: "read"})
	h.reader, _ = h.admin.CreateRole(ctx, directus.Role{Name: "Reader", Policies: []string{readPol.ID}})
	h.writer, _ = h.admin.CreateRole(ctx, directus.Role{Name: "Writer"})
	h.auth0 = newTestIssuer(t, jose.RS256, true)
	h.st = newTestIssuer(t, jose.ES256, false)
	h.store = NewMemoryStore()
	o := Options{
		Issuers: []IssuerConfig{
			{Name: "auth0", Issuer: h.auth0.URL, Audiences: []string{testAudience}, RequiredClaims: map[string]any{"gty": "client-credentials"}},
			{Name: "supertokens", Issuer: h.st.URL, Audiences: []string{testAudience}, Algorithms: []string{"ES256"}, UserIDs: UserIDsIssuer,
				RequiredClaims: map[string]any{"stt": 1}, ScopeClaims: []string{"scp"}},
		},
		Tokens:   TokenConfig{TTL: Duration(15 * time.Minute)},
		Limits:   LimitsConfig{PerIP: RateLimit{Rate: -1}, PerClient: RateLimit{Rate: -1}},
		Directus: h.admin,
		Store:    h.store,
		Logger:   slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:      h.clock.Now,
	}
	for _, f := range opts {
		f(h, &o)
	}
	h.opts = o
	h.ex, err = NewExchanger(o)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := LoadMapper(ctx, h.admin, mapping.Rules{
		{Name: "writers", AllScopes: []string{"items:write"}, Role: "Writer", Policies: []string{"extra"}},
		{Name: "readers", AnyScopes: []string{"items:read", "my_service#read"}, Role: "Reader"},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.ex.SetMapper(m)
	h.srv = httptest.NewServer((&Server{Exchanger: h.ex, Logger: o.Logger}).Handler())
	t.Cleanup(h.srv.Close)
	h.fake.ResetRequests()
	return h
}

// tokenResponse is a decoded /oauth/token answer.
type tokenResponse struct {
	Status     int
	RetryAfter string
	NoStore    bool
	Body       map[string]any
}

func (r tokenResponse) str(k string) string { s, _ := r.Body[k].(string); return s }

func (h *harness) post(form url.Values) tokenResponse {
	h.t.Helper()
	resp, err := http.PostForm(h.srv.URL+"/oauth/token", form)
	if err != nil {
		h.t.Fatal(err)
	}
	return decodeResponse(h.t, resp)
}

func decodeResponse(t *testing.T, resp *http.Response) tokenResponse {
	t.Helper()
	defer resp.Body.Close()
	out := tokenResponse{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"),
		NoStore: resp.Header.Get("Cache-Control") == "no-store"}
	if err := json.NewDecoder(resp.Body).Decode(&out.Body); err != nil {
		t.Fatalf("response is not JSON: %v", err)
	}
	return out
}

func exchangeForm(subject string) url.Values {
	return url.Values{
		"grant_type":         {GrantTypeTokenExchange},
		"subject_token":      {subject},
		"subject_token_type": {TokenTypeAccessToken},
	}
}

func (h *harness) exchange(subject string) tokenResponse {
	h.t.Helper()
	return h.post(exchangeForm(subject))
}

func (h *harness) auth0Token(client, scope string) string {
	return h.auth0.sign(h.t, h.auth0.claims(client, testAudience, h.clock.Now(), scope))
}

func (h *harness) user(id string) directus.User {
	h.t.Helper()
	u, err := h.admin.User(context.Background(), id)
	if err != nil {
		h.t.Fatalf("User(%s): %v", id, err)
	}
	return u
}

// tokenWorks reports whether tok authenticates against the fake Directus.
func (h *harness) tokenWorks(tok string) bool {
	c, err := directus.New(h.fake.URL, tok, directus.Options{Retries: -1})
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = c.Me(context.Background())
	return err == nil
}

func TestExchangeCreatesMachineUser(t *testing.T) {
	for _, version := range []string{"12.4.0", "11.17.4"} {
		t.Run(version, func(t *testing.T) {
			h := newHarness(t, version)
			resp := h.exchange(h.auth0Token("svc-a@clients", "my_service#read other"))
			if resp.Status != 200 {
				t.Fatalf("status %d: %v", resp.Status, resp.Body)
			}
			if got := h.fake.Requests(); got != 1 {
				t.Errorf("Directus requests for a new client = %d, want 1", got)
			}
			if !resp.NoStore {
				t.Errorf("Cache-Control is not no-store")
			}
			tok := resp.str("access_token")
			if !strings.HasPrefix(tok, "dbr_") || strings.Count(tok, ".") != 0 || len(tok) != 4+43 {
				t.Errorf("token %q: want dbr_ + 43 base64url characters", Fingerprint(tok))
			}
			if got := resp.str("issued_token_type"); got != TokenTypeAccessToken {
				t.Errorf("issued_token_type = %q", got)
			}
			if got := resp.str("token_type"); got != "Bearer" {
				t.Errorf("token_type = %q", got)
			}
			if got := resp.Body["expires_in"].(float64); got != 900 {
				t.Errorf("expires_in = %v, want 900", got)
			}
			if got := resp.str("scope"); got != "my_service#read other" {
				t.Errorf("scope = %q", got)
			}
			// uuidv5("svc-a@clients", NIL), as npm uuid computes it.
			id := uuid.NewSHA1(uuid.Nil, []byte("svc-a@clients")).String()
			u := h.user(id)
			if u.ExternalIdentifier != "svc-a@clients" || u.FirstName != "External" || u.LastName != "Client" ||
				u.Role != h.reader.ID || u.Status != "active" || !u.HasToken || u.Provider != "default" {
				t.Errorf("user = %+v", u)
			}
			if d := h.clock.Now().Sub(u.LastAccess); d < 0 || d > time.Second {
				t.Errorf("last_access = %v, want about %v", u.LastAccess, h.clock.Now())
			}
			if !h.tokenWorks(tok) {
				t.Errorf("issued token does not authenticate against Directus")
			}
		})
	}
}

func TestExchangeReusesLiveToken(t *testing.T) {
	h := newHarness(t, "12.4.0")
	first := h.exchange(h.auth0Token("svc-b@clients", "items:read"))
	h.fake.ResetRequests()
	h.clock.Add(5 * time.Minute)
	// A different subject token of the same client (another instance).
	second := h.exchange(h.auth0Token("svc-b@clients", "items:read"))
	if first.str("access_token") != second.str("access_token") {
		t.Fatalf("second exchange returned another token")
	}
	if got := second.Body["expires_in"].(float64); got != 600 {
		t.Errorf("expires_in = %v, want the true remaining 600", got)
	}
	if n := h.fake.Requests(); n != 0 {
		t.Errorf("Directus requests for a returning client = %d, want 0", n)
	}
}

func TestExchangeRotatesNearExpiry(t *testing.T) {
	h := newHarness(t, "12.4.0")
	first := h.exchange(h.auth0Token("svc-c@clients", "items:read")).str("access_token")
	h.clock.Add(11 * time.Minute) // 4m left, below rotate_before (5m)
	h.fake.ResetRequests()
	resp := h.exchange(h.auth0Token("svc-c@clients", "items:read"))
	second := resp.str("access_token")
	if second == "" || second == first {
		t.Fatalf("no rotation: %v", resp.Body)
	}
	if n := h.fake.Requests(); n != 1 {
		t.Errorf("Directus requests for a rotation = %d, want 1", n)
	}
	if h.tokenWorks(first) || !h.tokenWorks(second) {
		t.Errorf("after rotation the old token must fail and the new one work")
	}
}

func TestExchangeCapsTTLAtSubjectExpiry(t *testing.T) {
	h := newHarness(t, "12.4.0")
	c := h.auth0.claims("svc-cap@clients", testAudience, h.clock.Now(), "items:read")
	c["exp"] = h.clock.Now().Add(2 * time.Minute).Unix()
	resp := h.exchange(h.auth0.sign(t, c))
	if got := resp.Body["expires_in"].(float64); got != 120 {
		t.Errorf("expires_in = %v, want 120 (the subject token's)", got)
	}
	// The same short subject token again: a new token would not live
	// longer, so the live one is reused.
	h.clock.Add(90 * time.Second)
	h.fake.ResetRequests()
	again := h.exchange(h.auth0.sign(t, c))
	if again.str("access_token") != resp.str("access_token") || h.fake.Requests() != 0 {
		t.Errorf("capped token was rotated needlessly (%d requests)", h.fake.Requests())
	}
}

func TestExchangeConcurrentNewClient(t *testing.T) {
	h := newHarness(t, "12.4.0")
	subject := h.auth0Token("svc-d@clients", "items:read")
	var wg sync.WaitGroup
	tokens := make([]string, 50)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.PostForm(h.srv.URL+"/oauth/token", exchangeForm(subject))
			if err != nil {
				t.Error(err)
				return
			}
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			tokens[i], _ = body["access_token"].(string)
		}()
	}
	wg.Wait()
	for i, tok := range tokens {
		if tok == "" || tok != tokens[0] {
			t.Fatalf("exchange %d returned %q, want the one shared token", i, Fingerprint(tok))
		}
	}
	if n := h.fake.Requests(); n != 1 {
		t.Errorf("Directus requests = %d, want 1 (one create)", n)
	}
	if !h.tokenWorks(tokens[0]) {
		t.Errorf("shared token does not work")
	}
}

func TestExchangeRefusalsWriteNothing(t *testing.T) {
	h := newHarness(t, "12.4.0")
	now := h.clock.Now()
	other := newTestIssuer(t, jose.RS256, false)
	with := func(mut func(map[string]any)) string {
		c := h.auth0.claims("svc-e@clients", testAudience, now, "items:read")
		mut(c)
		return h.auth0.sign(t, c)
	}
	for _, tc := range []struct {
		name    string
		form    url.Values
		code    string
		status  int
		inDescr string
	}{
		{"untrusted issuer", exchangeForm(other.sign(t, other.claims("svc-e", testAudience, now, "items:read"))), "invalid_request", 400, "issuer is not trusted"},
		{"wrong audience", exchangeForm(with(func(c map[string]any) { c["aud"] = "https://elsewhere" })), "invalid_request", 400, "audience"},
		{"expired", exchangeForm(with(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), "invalid_request", 400, "expired"},
		{"missing required claim", exchangeForm(with(func(c map[string]any) { delete(c, "gty") })), "invalid_request", 400, "gty"},
		{"wrong required claim", exchangeForm(with(func(c map[string]any) { c["gty"] = "password" })), "invalid_request", 400, "gty"},
		{"issuer without trailing slash", exchangeForm(with(func(c map[string]any) { c["iss"] = strings.TrimSuffix(h.auth0.URL, "/") })), "invalid_request", 400, "not trusted"},
		{"no mapped scope", exchangeForm(h.auth0Token("svc-e@clients", "unrelated")), "invalid_scope", 400, "no mapping rule"},
		{"scope not carried", func() url.Values {
			f := exchangeForm(h.auth0Token("svc-e@clients", "items:read"))
			f.Set("scope", "items:write")
			return f
		}(), "invalid_scope", 400, "items:write"},
		{"nbf in the future", exchangeForm(with(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() })), "invalid_request", 400, "nbf"},
		{"iat in the future", exchangeForm(with(func(c map[string]any) { c["iat"] = now.Add(time.Hour).Unix() })), "invalid_request", 400, "iat"},
		{"not a JWT", exchangeForm("opaque-token"), "invalid_request", 400, "not a signed JWT"},
		{"unsupported grant", url.Values{"grant_type": {"client_credentials"}}, "unsupported_grant_type", 400, ""},
		{"missing subject token type", url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {"x"}}, "invalid_request", 400, "subject_token_type"},
		{"repeated parameter", func() url.Values {
			f := exchangeForm(h.auth0Token("svc-e@clients", "items:read"))
			f.Add("subject_token", "again")
			return f
		}(), "invalid_request", 400, "repeated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.post(tc.form)
			if resp.Status != tc.status || resp.str("error") != tc.code {
				t.Fatalf("got %d %v, want %d %s", resp.Status, resp.Body, tc.status, tc.code)
			}
			if !strings.Contains(resp.str("error_description"), tc.inDescr) {
				t.Errorf("error_description %q does not mention %q", resp.str("error_description"), tc.inDescr)
			}
		})
	}
	if n := h.fake.Requests(); n != 0 {
		t.Errorf("refused exchanges made %d Directus requests, want 0", n)
	}
	if h.store.Len() != 0 {
		t.Errorf("refused exchanges left %d state records", h.store.Len())
	}
}

func TestExchangeSupertokensAndPolicies(t *testing.T) {
	h := newHarness(t, "12.4.0")
	now := h.clock.Now()
	subject := h.st.sign(t, map[string]any{
		"iss": h.st.URL, "sub": "task-service", "aud": testAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"scp": []string{"items:write", "items:read"}, "stt": 1,
	})
	resp := h.exchange(subject)
	if resp.Status != 200 {
		t.Fatalf("status %d: %v", resp.Status, resp.Body)
	}
	// supertokens has issuer-scoped ids.
	u := h.user(UserID(uuid.Nil, &h.opts.Issuers[1], "task-service"))
	if u.Role != h.writer.ID || len(u.Access) != 1 || u.Access[0].Policy != h.extra.ID {
		t.Errorf("user role=%s policies=%v, want Writer + extra", u.Role, u.PolicyIDs())
	}
	if u.ExternalIdentifier != "supertokens:task-service" {
		t.Errorf("external_identifier %q, want supertokens:task-service", u.ExternalIdentifier)
	}
	// Narrowing is refused (one token per client); TestScopeNarrowingIsRefused.
	f := exchangeForm(subject)
	f.Set("scope", "items:read")
	if resp = h.post(f); resp.Status != 400 || resp.str("error") != "invalid_scope" {
		t.Fatalf("narrowed exchange: %d %v", resp.Status, resp.Body)
	}
	if u2 := h.user(u.ID); u2.Role != h.writer.ID {
		t.Errorf("a refused narrowing changed the role to %s", u2.Role)
	}
	// stt other than 1 is another kind of token.
	bad := h.st.sign(t, map[string]any{"iss": h.st.URL, "sub": "task-service", "aud": testAudience,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "scp": []string{"items:read"}, "stt": 0})
	if r := h.exchange(bad); r.Status != 400 {
		t.Errorf("stt 0: status %d, want 400", r.Status)
	}
}

func TestExchangeDirectusDown(t *testing.T) {
	h := newHarness(t, "12.4.0")
	h.fake.SetFault(func(r *http.Request) directustest.Fault { return directustest.Fault{Status: 503} })
	resp := h.exchange(h.auth0Token("svc-f@clients", "items:read"))
	if resp.Status != 503 || resp.str("error") != "temporarily_unavailable" || resp.RetryAfter == "" {
		t.Fatalf("Directus down: got %d %v Retry-After=%q, want 503 with Retry-After", resp.Status, resp.Body, resp.RetryAfter)
	}
	if strings.Contains(resp.str("error_description"), "injected") {
		t.Errorf("error_description leaks the Directus message: %q", resp.str("error_description"))
	}
	h.fake.SetFault(nil)
	id := uuid.NewSHA1(uuid.Nil, []byte("svc-f@clients")).String()
	if _, err := h.admin.User(context.Background(), id); err != directus.ErrNotFound {
		t.Errorf("failed exchange left a user: %v", err)
	}
	// The token written is known to the bridge as a candidate, so it will
	// be revoked, and never handed out while unconfirmed.
	if rec, ok := h.store.Get(id); !ok || !rec.Unsure || len(rec.Maybe) != 1 || rec.Token != "" {
		t.Errorf("no unconfirmed record for the failed write: %+v", rec)
	}
	resp = h.exchange(h.auth0Token("svc-f@clients", "items:read"))
	if resp.Status != 200 || !h.tokenWorks(resp.str("access_token")) {
		t.Fatalf("after recovery: %d %v", resp.Status, resp.Body)
	}
}

func TestRevokeExpired(t *testing.T) {
	h := newHarness(t, "12.4.0")
	var toks []string
	for _, c := range []string{"r1", "r2", "r3"} {
		toks = append(toks, h.exchange(h.auth0Token(c, "items:read")).str("access_token"))
	}
	h.clock.Add(14 * time.Minute)
	if n, err := h.ex.RevokeExpired(context.Background()); err != nil || n != 0 {
		t.Fatalf("before expiry: revoked %d, %v", n, err)
	}
	h.clock.Add(2 * time.Minute)
	h.fake.ResetRequests()
	n, err := h.ex.RevokeExpired(context.Background())
	if err != nil || n != 3 {
		t.Fatalf("RevokeExpired = %d, %v; want 3", n, err)
	}
	if r := h.fake.Requests(); r != 1 {
		t.Errorf("revoking 3 tokens took %d requests, want 1 batch", r)
	}
	for i, tok := range toks {
		if h.tokenWorks(tok) {
			t.Errorf("token %d still works after revocation", i)
		}
	}
	if n, _ := h.ex.RevokeExpired(context.Background()); n != 0 {
		t.Errorf("second run revoked %d again", n)
	}
	// The client comes back: a new token.
	resp := h.exchange(h.auth0Token("r1", "items:read"))
	if resp.Status != 200 || !h.tokenWorks(resp.str("access_token")) {
		t.Errorf("returning client: %d %v", resp.Status, resp.Body)
	}
}

func TestAdminSuspendedUserStaysSuspended(t *testing.T) {
	h := newHarness(t, "12.4.0")
	resp := h.exchange(h.auth0Token("svc-g@clients", "items:read"))
	id := uuid.NewSHA1(uuid.Nil, []byte("svc-g@clients")).String()
	if _, err := h.admin.UpdateUser(context.Background(), id, directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	if h.tokenWorks(resp.str("access_token")) {
		t.Fatalf("token works for a suspended user")
	}
	h.clock.Add(11 * time.Minute) // rotation forces a Directus write
	resp = h.exchange(h.auth0Token("svc-g@clients", "items:read"))
	if resp.Status != 400 || resp.str("error") != "unauthorized_client" {
		t.Errorf("suspended client: %d %v, want unauthorized_client", resp.Status, resp.Body)
	}
	if u := h.user(id); u.Status != "suspended" {
		t.Errorf("bridge changed an admin suspension: status %q", u.Status)
	}
	// Again at once: still refused, not handed the token written meanwhile.
	if resp := h.exchange(h.auth0Token("svc-g@clients", "items:read")); resp.Status != 400 {
		t.Errorf("second exchange of a suspended client: %d %v, want 400", resp.Status, resp.Body)
	}
	// The administrator reactivates the user: the next exchange works.
	if _, err := h.admin.UpdateUser(context.Background(), id, directus.UserChange{Status: directus.Ptr("active")}); err != nil {
		t.Fatal(err)
	}
	if resp := h.exchange(h.auth0Token("svc-g@clients", "items:read")); resp.Status != 200 || !h.tokenWorks(resp.str("access_token")) {
		t.Errorf("after reactivation: %d %v", resp.Status, resp.Body)
	}
}

func TestExchangeAdoptsHookUser(t *testing.T) {
	h := newHarness(t, "11.17.4")
	id := uuid.NewSHA1(uuid.Nil, []byte("legacy@clients")).String()
	// A user created by the hook extension, unknown to the bridge.
	if _, err := h.admin.CreateUser(context.Background(), directus.NewUser{ID: id, Provider: "bcc-client-credentials",
		ExternalIdentifier: "legacy@clients", FirstName: "External", LastName: "Client", Role: h.writer.ID}); err != nil {
		t.Fatal(err)
	}
	h.fake.ResetRequests()
	resp := h.exchange(h.auth0Token("legacy@clients", "items:read"))
	if n := h.fake.Requests(); n != 3 {
		t.Errorf("requests = %d, want 3 (create conflict, read, patch)", n)
	}
	if resp.Status != 200 || !h.tokenWorks(resp.str("access_token")) {
		t.Fatalf("exchange for a hook user: %d %v", resp.Status, resp.Body)
	}
	if u := h.user(id); u.Role != h.reader.ID {
		t.Errorf("role = %s, want Reader", u.Role)
	}
}

func TestCustomProvider(t *testing.T) {
	withProvider := func(h *harness, o *Options) { o.Users.Provider = "bcc-client-credentials" }
	for _, tc := range []struct{ version, want string }{{"11.17.4", "bcc-client-credentials"}, {"12.4.0", "default"}} {
		t.Run(tc.version, func(t *testing.T) {
			h := newHarness(t, tc.version, withProvider)
			for _, c := range []string{"p1", "p2"} {
				if resp := h.exchange(h.auth0Token(c, "items:read")); resp.Status != 200 {
					t.Fatalf("status %d: %v", resp.Status, resp.Body)
				}
				if got := h.user(uuid.NewSHA1(uuid.Nil, []byte(c)).String()).Provider; got != tc.want {
					t.Errorf("provider = %q, want %q", got, tc.want)
				}
			}
			if warns := strings.Count(h.logs.String(), "using provider"); tc.want == "default" && warns != 1 {
				t.Errorf("fallback warnings = %d, want exactly 1", warns)
			}
		})
	}
}

func TestStateFileSealsTokens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	key, err := LoadKey("", path+".key")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path + ".key"); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	s, err := OpenStore(path, key)
	if err != nil {
		t.Fatal(err)
	}
	tok := "dbr_" + strings.Repeat("x", 43)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	if err := s.Put(Record{UserID: "u1", Token: tok, Expiry: exp, Scopes: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte(tok)) {
		t.Fatalf("state file holds the token in plaintext")
	}
	s, err = OpenStore(path, key)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := s.Get("u1")
	if !ok || got.Token != tok || !got.Expiry.Equal(exp) {
		t.Errorf("reopened record = %+v", got)
	}
	s.Close()
	other, _ := LoadKey("", filepath.Join(dir, "other.key"))
	if _, err := OpenStore(path, other); err == nil {
		t.Errorf("opening with another key succeeded")
	}
}

func TestLogsHoldNoSecrets(t *testing.T) {
	h := newHarness(t, "12.4.0")
	subject := h.auth0Token("svc-h@clients", "items:read")
	tok := h.exchange(subject).str("access_token")
	h.exchange(h.auth0Token("svc-h@clients", "unmapped"))
	for _, secret := range []string{subject, tok, h.fake.AdminToken} {
		if strings.Contains(h.logs.String(), secret) {
			t.Errorf("a secret (fingerprint %s) reached the log", Fingerprint(secret))
		}
	}
	if !strings.Contains(h.logs.String(), Fingerprint(tok)) {
		t.Errorf("the log lacks the token fingerprint")
	}
}

func TestRequestFormats(t *testing.T) {
	h := newHarness(t, "12.4.0")
	subject := h.auth0Token("svc-i@clients", "items:read")
	post := func(ct, body string) tokenResponse {
		resp, err := http.Post(h.srv.URL+"/oauth/token", ct, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return decodeResponse(t, resp)
	}
	js, _ := json.Marshal(map[string]string{"grant_type": GrantTypeTokenExchange, "subject_token": subject, "subject_token_type": TokenTypeJWT})
	if r := post("application/json", string(js)); r.Status != 200 {
		t.Errorf("JSON body: %d %v", r.Status, r.Body)
	}
	if r := post("text/plain", "x"); r.Status != 415 || r.str("error") != "invalid_request" {
		t.Errorf("text/plain: %d %v, want 415", r.Status, r.Body)
	}
	if r := post("application/x-www-form-urlencoded", strings.Repeat("a", MaxRequestBytes+1)); r.Status != 413 {
		t.Errorf("huge body: %d, want 413", r.Status)
	}
	if r := post("application/json", `{"grant_type":"a","grant_type":"b"}`); r.Status != 400 {
		t.Errorf("duplicate JSON key: %d, want 400", r.Status)
	}
	resp, err := http.Get(h.srv.URL + "/oauth/token")
	if err != nil {
		t.Fatal(err)
	}
	if r := decodeResponse(t, resp); r.Status != 405 {
		t.Errorf("GET: %d, want 405", r.Status)
	}
}

func TestHostileTokens(t *testing.T) {
	h := newHarness(t, "12.4.0")
	now := h.clock.Now()
	claims := h.auth0.claims("svc-j@clients", testAudience, now, "items:read")
	payload, _ := json.Marshal(claims)
	b64 := func(b []byte) string { return strings.TrimRight(jsonB64(b), "=") }
	none := b64([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + b64(payload) + "."
	hs := signWith(t, jose.HS256, []byte("0123456789abcdef0123456789abcdef"), h.auth0.kid, "at+jwt", claims)
	es := signWith(t, jose.ES256, h.st.key, h.st.kid, "at+jwt", claims) // another issuer's key
	for name, tok := range map[string]string{"alg none": none, "HS256": hs, "other issuer's key": es} {
		if r := h.exchange(tok); r.Status != 400 || r.str("error") != "invalid_request" {
			t.Errorf("%s: %d %v, want 400 invalid_request", name, r.Status, r.Body)
		}
	}
	if n := h.fake.Requests(); n != 0 {
		t.Errorf("hostile tokens made %d Directus requests", n)
	}
}

func TestRestartKeepsTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	key, err := LoadKey("", path+".key")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, "12.4.0", func(h *harness, o *Options) {
		if o.Store, err = OpenStore(path, key); err != nil {
			t.Fatal(err)
		}
	})
	subject := h.auth0Token("durable", "items:read")
	first := h.exchange(subject).str("access_token")
	if err := h.opts.Store.Close(); err != nil {
		t.Fatal(err)
	}
	// The bridge restarts on the same state file.
	o := h.opts
	if o.Store, err = OpenStore(path, key); err != nil {
		t.Fatal(err)
	}
	defer o.Store.Close()
	ex, err := NewExchanger(o)
	if err != nil {
		t.Fatal(err)
	}
	ex.SetMapper(h.ex.Mapper())
	h.fake.ResetRequests()
	res, err := ex.Exchange(t.Context(), Request{SubjectToken: subject})
	if err != nil || res.Token != first || res.Outcome != Reused {
		t.Fatalf("after restart: %v %+v, want the same token reused", err, res)
	}
	if n := h.fake.Requests(); n != 0 {
		t.Errorf("Directus requests after restart %d, want 0", n)
	}
	h.clock.Add(16 * time.Minute)
	if n, err := ex.RevokeExpired(t.Context()); err != nil || n != 1 || h.tokenWorks(first) {
		t.Errorf("revocation after restart: %d, %v", n, err)
	}
}
