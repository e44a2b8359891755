package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"pgregory.net/rapid"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate/pgstatetest"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// The model-based test of the exchange's state machine: random sequences of
// exchanges (several issuers, colliding client ids, narrowing), rule
// reloads, Directus faults on any request (refused before Directus sees it,
// or lost after Directus applied it), crashes (the state file reopened and
// the exchanger rebuilt), revoker, watcher and reconciler runs, an
// administrator's suspensions, reactivations, deletions and hand edits, and
// clock steps. After every step it checks the invariants against the fake
// Directus's ground truth (directustest.Server.Snapshot). A failure prints
// the seed and rapid shrinks it to a minimal sequence; replay it with
// -rapid.seed. -rapid.checks sets the number of sequences (default 100).

// modelIssuers are shared by every sequence: key generation is the slow part.
type modelIssuers struct {
	hook, b, c *testIssuer // hook ids; issuer-scoped; issuer-scoped whose URL starts with b's
}

func newModelIssuers(t *testing.T) *modelIssuers {
	mi := &modelIssuers{hook: newTestIssuer(t, jose.EdDSA, false)}
	// b and c on one server, c's issuer URL starting with b's: ids that
	// concatenated issuer and client collided for such pairs.
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	at := func(path string) *testIssuer {
		ti := &testIssuer{URL: srv.URL + path, alg: jose.EdDSA, key: generateKey(t, jose.EdDSA), kid: "k" + path}
		mux.HandleFunc(path+"/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": ti.URL, "jwks_uri": ti.URL + "/jwks"})
		})
		mux.HandleFunc(path+"/jwks", func(w http.ResponseWriter, r *http.Request) {
			k, kid := ti.current()
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.Public(), KeyID: kid, Algorithm: "EdDSA", Use: "sig"}}})
		})
		return ti
	}
	mi.b, mi.c = at("/tenant"), at("/tenant/b")
	return mi
}

// configs are the issuers of a configuration variant: in variant 1 an
// operator moved hook ids from a to b (a mistake the bridge must survive:
// b's clients must not get a's users).
func (mi *modelIssuers) configs(variant int) []IssuerConfig {
	cs := []IssuerConfig{
		{Name: "a", Issuer: mi.hook.URL, Audiences: []string{testAudience}, Algorithms: []string{"EdDSA"}},
		{Name: "b", Issuer: mi.b.URL, Audiences: []string{testAudience}, Algorithms: []string{"EdDSA"}, UserIDs: UserIDsIssuer},
		{Name: "c", Issuer: mi.c.URL, Audiences: []string{testAudience}, Algorithms: []string{"EdDSA"}, UserIDs: UserIDsIssuer},
	}
	if variant == 1 {
		cs[0].UserIDs, cs[1].UserIDs = UserIDsIssuer, UserIDsHook
	}
	return cs
}

// modelClients: "b:svc" of the hook issuer has the external identifier of
// b's "svc"; "legacy" may exist in Directus before the bridge (the hook's).
var (
	modelClients = []string{"svc", "ops", "b:svc", "legacy"}
	modelScopes  = [][]string{{"read"}, {"read", "write"}, {"write"}, {"blocked", "read"}}
)

// modelRules are the rule sets a reload switches between; they differ in
// role and policy for the same scopes (downgrades and removed policies).
func modelRules(i int) mapping.Rules {
	deny := mapping.Rule{Name: "blocked", AnyScopes: []string{"blocked"}, Deny: true}
	switch i {
	case 0:
		return mapping.Rules{deny,
			{Name: "writers", AllScopes: []string{"write"}, Role: "Writer", Policies: []string{"extra"}},
			{Name: "readers", AnyScopes: []string{"read"}, Role: "Reader"}}
	case 1:
		return mapping.Rules{deny, {Name: "all read", AnyScopes: []string{"read", "write"}, Role: "Reader"}}
	default:
		return mapping.Rules{deny,
			{Name: "writers", AllScopes: []string{"write"}, Role: "Writer"},
			{Name: "readers", AnyScopes: []string{"read"}, Role: "Reader", Policies: []string{"extra"}}}
	}
}

// faultPlan injects at most one fault into the bridge's Directus requests.
type faultPlan struct {
	mu    sync.Mutex
	kind  string // "", "refuse" (before Directus sees it), "lose" (applied, 502), "drop" (applied, no answer)
	at    int    // the index of the request it hits
	seen  int
	admin string // requests with this token are the administrator's: never faulted
}

func (f *faultPlan) arm(kind string, at int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kind, f.at, f.seen = kind, at, 0
}

func (f *faultPlan) fault(r *http.Request) directustest.Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kind == "" || r.Header.Get("Authorization") == "Bearer "+f.admin {
		return directustest.Fault{}
	}
	n := f.seen
	f.seen++
	if n != f.at {
		return directustest.Fault{}
	}
	switch f.kind {
	case "lose":
		return directustest.Fault{LoseAnswer: true, Status: 502}
	case "drop":
		return directustest.Fault{Drop: true}
	}
	return directustest.Fault{Status: 503}
}

type pair struct{ issuer, client string }

// model is one sequence's system under test and what the test knows.
type model struct {
	t       *testing.T
	mi      *modelIssuers
	fake    *directustest.Server
	bridgeC *directus.Client // the bridge's client (its own admin token)
	admin   *directus.Client // a human administrator (another admin user)
	adminT  string
	faults  *faultPlan
	path    string
	key     []byte
	pgDSN   string // the state in PostgreSQL (a schema of its own) instead of the file
	store   *Store
	ex      *Exchanger
	// With a shared state: the replicas, each with its own store and
	// exchanger on one state (store and ex are the acting replica's).
	reps     []*replica
	cur      int
	shared   func() (state.Shared, error) // opens one more instance of the state
	sfault   *sharedFaults
	mem      any               // the in-memory shared state (its fault hooks), or nil
	cut      map[*replica]bool // replicas whose change feed is cut
	observer state.Shared      // the instance durable reads the state with
	now      time.Time
	rules    int
	variant  int
	roles    []directus.Role
	pols     []directus.Policy
	reader   directus.Role
	writer   directus.Role
	extra    directus.Policy

	users          map[string]pair   // user id -> the pair it was handed to
	tokens         map[string]pair   // token -> the pair it was handed to
	adminSuspended map[string]bool   // suspended by the administrator, not reactivated since
	unobserved     map[string]bool   // touched by the administrator since the last clean Watch
	foreign        map[string]string // user id -> a token the bridge did not write (hook's, admin's)
	cleanRevoke    time.Time         // the time of the last revoker run that succeeded
	last           string            // what the last step did, for failure messages
	nforeign       int
}

func newModel(t *testing.T, mi *modelIssuers, rt *rapid.T, pgDSN ...string) *model {
	return newModelWith(t, mi, rt, func(m *model) {
		if len(pgDSN) > 0 {
			m.pgDSN = pgDSN[0]
		}
	})
}

// newReplicaModel is newModel with n replicas on the shared state open
// opens (mem: its in-memory fake, for its fault hooks).
func newReplicaModel(t *testing.T, mi *modelIssuers, rt *rapid.T, open func() (state.Shared, error), mem any, n int, leaseByModelClock bool) *model {
	return newModelWith(t, mi, rt, func(m *model) {
		if ms, ok := mem.(*memstate.SharedState); ok && leaseByModelClock {
			ms.SetLeaseClock(func() time.Time { return m.now }) // leases expire as the model's clock steps
		}
		m.shared, m.mem, m.sfault = open, mem, &sharedFaults{}
		m.reps, m.cut = make([]*replica, n), map[*replica]bool{}
	})
}

func newModelWith(t *testing.T, mi *modelIssuers, rt *rapid.T, setup func(m *model)) *model {
	m := &model{t: t, mi: mi, now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC),
		users: map[string]pair{}, tokens: map[string]pair{}, adminSuspended: map[string]bool{},
		unobserved: map[string]bool{}, foreign: map[string]string{}}
	m.fake = directustest.NewServer(nil, directustest.Options{Version: rapid.SampledFrom([]string{"12.4.0", "11.17.4"}).Draw(rt, "version")})
	m.adminT = m.fake.NewAdmin()
	m.faults = &faultPlan{admin: m.adminT}
	m.fake.SetFault(m.faults.fault)
	var err error
	if m.bridgeC, err = directus.New(m.fake.URL, m.fake.AdminToken, directus.Options{Retries: -1, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if m.admin, err = directus.New(m.fake.URL, m.adminT, directus.Options{Retries: -1}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m.extra, _ = m.admin.CreatePolicy(ctx, directus.Policy{Name: "extra"})
	m.reader, _ = m.admin.CreateRole(ctx, directus.Role{Name: "Reader"})
	m.writer, _ = m.admin.CreateRole(ctx, directus.Role{Name: "Writer"})
	m.roles = []directus.Role{m.reader, m.writer}
	m.pols = []directus.Policy{m.extra}
	m.path = filepath.Join(t.TempDir(), fmt.Sprintf("state-%d.db", time.Now().UnixNano()))
	m.key = make([]byte, 32)
	setup(m)
	m.startAll()
	if _, err := m.ex.Watch(ctx); err != nil { // the watcher's starting point
		t.Fatal(err)
	}
	return m
}

// close releases what one sequence holds (hundreds of sequences run).
func (m *model) close() {
	if m.shared != nil {
		for _, r := range m.reps {
			r.store.Close()
		}
		if m.observer != nil {
			m.observer.Close()
		}
	} else {
		m.store.Close()
	}
	m.fake.Close()
}

// start opens the state file and builds an exchanger on it, as a restarted
// process does.
func (m *model) start() {
	var err error
	if m.shared != nil {
		m.startReplica()
		return
	}
	if m.pgDSN != "" {
		// Another process taking the state over (a standby) after the
		// holder crashed: the same as a restart, on PostgreSQL.
		b, err := pgstate.Open(context.Background(), m.pgDSN)
		if err != nil {
			m.t.Fatalf("open the PostgreSQL state: %v", err)
		}
		if m.store, err = NewStore(b, m.key); err != nil {
			m.t.Fatalf("load the PostgreSQL state: %v", err)
		}
	} else if m.store, err = OpenStore(m.path, m.key); err != nil {
		m.t.Fatalf("reopen state: %v", err)
	}
	m.ex = m.exchanger(m.store)
}

// exchanger builds the bridge's exchanger on store.
func (m *model) exchanger(store *Store) *Exchanger {
	ex, err := NewExchanger(Options{
		Issuers: m.mi.configs(m.variant), Tokens: TokenConfig{TTL: Duration(15 * time.Minute), RevokeInterval: Duration(5 * time.Second)},
		Directus: m.bridgeC, Store: store, Now: func() time.Time { return m.now }, Logger: slog.New(slog.DiscardHandler),
		Limits: LimitsConfig{PerIP: RateLimit{Rate: -1}, PerClient: RateLimit{Rate: -1}},
	})
	if err != nil {
		m.t.Fatal(err)
	}
	ex.SetMapper(m.mapper())
	return ex
}

func (m *model) mapper() *Mapper {
	mp, _, err := NewMapper(modelRules(m.rules), m.roles, m.pols)
	if err != nil {
		m.t.Fatal(err)
	}
	return mp
}

func (m *model) issuer(i int) (*testIssuer, IssuerConfig) {
	cfgs := m.mi.configs(m.variant)
	return []*testIssuer{m.mi.hook, m.mi.b, m.mi.c}[i], cfgs[i]
}

// grant is what the rules in force give a token with scopes, as ids.
func (m *model) grant(scopes []string) (role string, policies []string, deny bool) {
	mp := m.mapper()
	d := mp.Rules.Decide(mapping.Input{Scopes: scopes})
	if d.Deny {
		return "", nil, true
	}
	g := mp.Resolve(d)
	return g.Role, g.Policies, false
}

func (m *model) exchange(rt *rapid.T) { m.exchangeWith(rt, "") }

// exchangeWith exchanges with the fault stateFault armed too ("": none).
func (m *model) exchangeWith(rt *rapid.T, stateFault string) {
	i := rapid.IntRange(0, 2).Draw(rt, "issuer")
	client := rapid.SampledFrom(modelClients).Draw(rt, "client")
	scopes := rapid.SampledFrom(modelScopes).Draw(rt, "scopes")
	narrow := rapid.IntRange(0, 4).Draw(rt, "narrow") == 0 && len(scopes) > 1
	late := rapid.IntRange(0, 9).Draw(rt, "late") == 0 // exp passed, inside the leeway
	ti, cfg := m.issuer(i)
	claims := map[string]any{"iss": ti.URL, "sub": client, "aud": testAudience, "iat": m.now.Add(-time.Minute).Unix(),
		"exp": m.now.Add(time.Hour).Unix(), "scope": strings.Join(scopes, " ")}
	if late {
		claims["exp"] = m.now.Add(-5 * time.Second).Unix()
	}
	req := Request{SubjectToken: ti.sign(m.t, claims)}
	if narrow {
		req.Scopes = scopes[:1]
	}
	fault, at := m.drawFault(rt)
	if stateFault != "" {
		fault = strings.TrimPrefix(fault+"+"+stateFault, "+")
	}
	uid := UserID(m.ex.namespace, &cfg, client)
	m.last = fmt.Sprintf("exchange issuer=%s client=%q scopes=%v narrow=%v late=%v fault=%s@%d user=%s",
		cfg.Name, client, scopes, narrow, late, fault, at, uid)
	before := m.fake.Snapshot()
	res, err := m.ex.Exchange(context.Background(), req)
	m.faults.arm("", 0)
	role, policies, deny := m.grant(scopes)
	sorted := sortedUnique(scopes)
	var ee *Error
	if err != nil && !errors.As(err, &ee) {
		rt.Fatalf("%s: not an *Error: %v", m.last, err)
	}
	if err != nil && ee.Status < 500 {
		// Refused: nothing written to Directus (an unobserved change by
		// the administrator may first show in the answer to a write).
		if !m.unobserved[uid] {
			if d := diffSnapshots(before, m.fake.Snapshot()); d != "" {
				rt.Fatalf("%s: refused with %v, yet Directus changed: %s", m.last, err, d)
			}
		}
	}
	switch {
	case late || narrow || deny:
		if err == nil || ee.Status != 400 {
			rt.Fatalf("%s: want a 400 refusal, got %v %v", m.last, res, err)
		}
		return
	case err != nil && ee.Status < 500:
		// Refusals the model did not ask for must have their reason in
		// Directus: the user suspended, bound to another issuer, or its
		// external identifier held by another user.
		reserved := ee.Code == "invalid_request" && m.reservedClient(cfg, client)
		if !reserved && (ee.Code != "unauthorized_client" || !m.refusable(before, uid, cfg, client)) {
			rt.Fatalf("%s: refused without a reason: %v", m.last, err)
		}
		return
	case err != nil:
		if ee.Status >= 500 && ee.RetryAfter <= 0 {
			rt.Fatalf("%s: %d without Retry-After: %v", m.last, ee.Status, err)
		}
		if fault == "" && ee.Status >= 500 {
			rt.Fatalf("%s: failed without a fault: %v", m.last, err)
		}
		return
	}
	// Success.
	p := pair{cfg.Issuer, client}
	if q, ok := m.users[res.UserID]; ok && q != p {
		rt.Fatalf("%s: user %s handed to %v and %v", m.last, res.UserID, q, p)
	}
	if q, ok := m.tokens[res.Token]; ok && q != p {
		rt.Fatalf("%s: one token handed to %v and %v", m.last, q, p)
	}
	m.users[res.UserID], m.tokens[res.Token] = p, p
	if got := strings.Join(res.Scopes, " "); got != strings.Join(sorted, " ") {
		rt.Fatalf("%s: answer scope %q, want the token's %q", m.last, got, strings.Join(sorted, " "))
	}
	if m.adminSuspended[res.UserID] && !m.unobserved[res.UserID] {
		rt.Fatalf("%s: a user the administrator suspended got a token", m.last)
	}
	if m.unobserved[res.UserID] {
		return
	}
	u, ok := m.fake.Snapshot()[res.UserID]
	switch {
	case !ok:
		rt.Fatalf("%s: 200 for a user Directus does not have", m.last)
	case u.Token == nil || *u.Token != res.Token || u.Status != "active":
		rt.Fatalf("%s: 200 with a token Directus does not accept (status %s)", m.last, u.Status)
	case u.Role != role || !slices.Equal(u.Policies, policies):
		rt.Fatalf("%s: Directus holds role %s policies %v, the rules grant %s %v", m.last, u.Role, u.Policies, role, policies)
	}
	if b, ok := bindingOf(u.AuthData); !ok || b.Issuer != cfg.Issuer || b.Client != client {
		rt.Fatalf("%s: auth_data binding %s, want issuer %s client %s", m.last, u.AuthData, cfg.Issuer, client)
	}
	if !res.Expiry.After(m.now) {
		rt.Fatalf("%s: token expires at %v, not after now %v", m.last, res.Expiry, m.now)
	}
}

// reservedClient reports whether client of cfg takes the external
// identifier of an issuer-scoped issuer's client (refused).
func (m *model) reservedClient(cfg IssuerConfig, client string) bool {
	for _, o := range m.mi.configs(m.variant) {
		if cfg.UserIDs != UserIDsIssuer && o.UserIDs == UserIDsIssuer && strings.HasPrefix(client, o.Name+":") {
			return true
		}
	}
	return false
}

// refusable reports whether Directus shows a reason to refuse the client.
func (m *model) refusable(snap map[string]directustest.UserState, uid string, cfg IssuerConfig, client string) bool {
	if u, ok := snap[uid]; ok {
		if u.Status != "active" {
			return true
		}
		if b, bound := bindingOf(u.AuthData); bound && b.Issuer != cfg.Issuer {
			return true
		}
	}
	if p, ok := m.users[uid]; ok && p.issuer != cfg.Issuer {
		return true
	}
	if r, ok := m.durable()[uid]; ok && r.IssuerURL != cfg.Issuer {
		return true // written ahead for another issuer: it may have created the user
	}
	for id, u := range snap {
		if id != uid && u.ExternalIdentifier == ExternalID(&cfg, client) {
			return true
		}
	}
	return false
}

func (m *model) drawFault(rt *rapid.T) (string, int) {
	kind := rapid.SampledFrom([]string{"", "", "refuse", "lose", "drop"}).Draw(rt, "fault")
	at := rapid.IntRange(0, 2).Draw(rt, "fault_at")
	m.faults.arm(kind, at)
	return kind, at
}

func (m *model) revoke(rt *rapid.T) {
	fault, at := m.drawFault(rt)
	m.last = fmt.Sprintf("revoke fault=%s@%d", fault, at)
	_, err := m.ex.RevokeExpired(context.Background())
	m.faults.arm("", 0)
	if errors.Is(err, ErrNotLeader) {
		return // another replica holds the jobs lease
	}
	if err == nil {
		m.cleanRevoke = m.now
	} else if fault == "" {
		rt.Fatalf("%s: %v", m.last, err)
	}
}

func (m *model) watch(rt *rapid.T) {
	fault, at := m.drawFault(rt)
	m.last = fmt.Sprintf("watch fault=%s@%d", fault, at)
	_, err := m.ex.Watch(context.Background())
	m.faults.arm("", 0)
	if errors.Is(err, ErrNotLeader) {
		return
	}
	if err == nil {
		clear(m.unobserved)
	} else if fault == "" {
		rt.Fatalf("%s: %v", m.last, err)
	}
}

func (m *model) reconcile(rt *rapid.T) {
	fault, at := m.drawFault(rt)
	m.last = fmt.Sprintf("reconcile fault=%s@%d", fault, at)
	_, err := m.ex.Reconcile(context.Background(), ReconcileConfig{SuspendAfter: Duration(3 * time.Hour), PageSize: 3}, false)
	m.faults.arm("", 0)
	if err != nil && fault == "" && !errors.Is(err, ErrNotLeader) {
		rt.Fatalf("%s: %v", m.last, err)
	}
}

func (m *model) crash(rt *rapid.T) {
	m.last = "crash and restart"
	// A crash loses nothing the store wrote; Close only flushes the batched
	// last-exchange times, which a crash may lose: skip it.
	m.store.closeShared()
	if err := m.store.db.Close(); err != nil {
		rt.Fatal(err)
	}
	m.start()
}

// reconfigure restarts the bridge with the other issuer variant.
func (m *model) reconfigure(rt *rapid.T) {
	m.variant = 1 - m.variant
	m.crash(rt)
	m.last = fmt.Sprintf("restart with issuer variant %d", m.variant)
}

func (m *model) reload(rt *rapid.T) {
	m.rules = rapid.IntRange(0, 2).Draw(rt, "rules")
	m.last = fmt.Sprintf("reload rules %d", m.rules)
	m.ex.SetMapper(m.mapper())
}

func (m *model) step(rt *rapid.T) {
	d := rapid.SampledFrom([]time.Duration{time.Second, 30 * time.Second, 5 * time.Minute, 11 * time.Minute, 16 * time.Minute, 4 * time.Hour}).Draw(rt, "step")
	m.last = "clock +" + d.String()
	m.now = m.now.Add(d)
}

// machineUsers are the Directus users other than the two administrators.
func (m *model) machineUsers() []directustest.UserState {
	var out []directustest.UserState
	for _, u := range m.fake.Snapshot() {
		if u.Token != nil && (*u.Token == m.fake.AdminToken || *u.Token == m.adminT) {
			continue
		}
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (m *model) adminAct(rt *rapid.T) {
	users := m.machineUsers()
	if len(users) == 0 {
		return
	}
	u := rapid.SampledFrom(users).Draw(rt, "user")
	act := rapid.SampledFrom([]string{"suspend", "reactivate", "delete", "role", "attach", "detach", "token",
		"attach via /access", "delete an access row"}).Draw(rt, "act")
	m.last = fmt.Sprintf("admin %s %s", act, u.ID)
	ctx := context.Background()
	var err error
	switch act {
	case "suspend":
		if u.Status != "active" {
			return
		}
		_, err = m.admin.UpdateUser(ctx, u.ID, directus.UserChange{Status: directus.Ptr("suspended")})
		m.adminSuspended[u.ID] = true
	case "reactivate":
		if u.Status == "active" { // an administrator may reactivate any user, the bridge's suspensions too
			return
		}
		_, err = m.admin.UpdateUser(ctx, u.ID, directus.UserChange{Status: directus.Ptr("active")})
		delete(m.adminSuspended, u.ID)
	case "delete":
		err = m.admin.DeleteUsers(ctx, []string{u.ID})
		delete(m.adminSuspended, u.ID)
		delete(m.foreign, u.ID)
	case "role":
		role := rapid.SampledFrom([]string{"", m.reader.ID, m.writer.ID}).Draw(rt, "role")
		_, err = m.admin.UpdateUser(ctx, u.ID, directus.UserChange{Role: &role})
	case "attach":
		_, err = m.admin.UpdateUser(ctx, u.ID, directus.UserChange{AddPolicies: []string{m.extra.ID}})
	case "detach":
		var full directus.User
		if full, err = m.admin.User(ctx, u.ID); err == nil && len(full.Access) > 0 {
			_, err = m.admin.UpdateUser(ctx, u.ID, directus.UserChange{RemoveAccess: []string{full.Access[0].ID}})
		}
	case "attach via /access":
		_, err = m.admin.AttachPolicy(ctx, u.ID, m.extra.ID)
	case "delete an access row":
		var full directus.User
		if full, err = m.admin.User(ctx, u.ID); err == nil && len(full.Access) > 0 {
			err = m.admin.DeleteAccess(ctx, full.Access[0].ID)
		}
	case "token":
		m.nforeign++
		tok := fmt.Sprintf("admin-set-%d", m.nforeign)
		_, err = m.admin.UpdateUser(ctx, u.ID, directus.UserChange{Token: &tok})
		m.foreign[u.ID] = tok
	}
	if err != nil {
		rt.Fatalf("%s: %v", m.last, err)
	}
	m.unobserved[u.ID] = true
}

// seedHookUser creates the hook extension's user of the hook issuer's
// "legacy" client, as a Directus that used the hook holds it.
func (m *model) seedHookUser(rt *rapid.T) {
	_, cfg := m.issuer(m.variant) // the issuer with hook ids
	id := UserID(m.ex.namespace, &cfg, "legacy")
	if _, ok := m.fake.Snapshot()[id]; ok {
		return
	}
	status := rapid.SampledFrom([]string{"active", "suspended"}).Draw(rt, "hook_status")
	m.last = "seed hook user, " + status
	m.nforeign++
	tok := fmt.Sprintf("hook-%d", m.nforeign)
	if _, err := m.admin.CreateUser(context.Background(), directus.NewUser{ID: id, Status: status, ExternalIdentifier: "legacy",
		FirstName: "External", LastName: "Client", Role: m.writer.ID, Token: tok}); err != nil {
		rt.Fatalf("%s: %v", m.last, err)
	}
	m.foreign[id] = tok
	if status == "suspended" {
		m.adminSuspended[id] = true
	}
	m.unobserved[id] = true
}

// check asserts the invariants that hold after every step.
func (m *model) check(rt *rapid.T) {
	recs := m.durable()
	for _, u := range m.machineUsers() {
		if u.Token != nil && u.Status == "active" && *u.Token != m.foreign[u.ID] {
			// Every token Directus accepts is known with an expiry, and is
			// gone once a revoker run after that expiry succeeded.
			r, ok := recs[u.ID]
			if !ok {
				rt.Fatalf("after %s: Directus accepts a token of user %s that the bridge has no record of", m.last, u.ID)
			}
			exp, known := time.Time{}, false
			if r.Token == *u.Token {
				exp, known = r.Expiry, true
			}
			for _, c := range r.Maybe {
				if c.Token == *u.Token {
					exp, known = c.Expiry, true
				}
			}
			if !known {
				rt.Fatalf("after %s: Directus accepts a token of user %s the bridge does not know", m.last, u.ID)
			}
			if !m.cleanRevoke.IsZero() && !m.cleanRevoke.Before(exp) {
				rt.Fatalf("after %s: user %s's token expired at %v and is still accepted after a revoker run at %v", m.last, u.ID, exp, m.cleanRevoke)
			}
		}
		if m.adminSuspended[u.ID] && u.Status == "active" {
			rt.Fatalf("after %s: the bridge reactivated user %s that an administrator suspended", m.last, u.ID)
		}
		if p, ok := m.users[u.ID]; ok {
			if b, bound := bindingOf(u.AuthData); bound && (b.Issuer != p.issuer || b.Client != p.client) {
				rt.Fatalf("after %s: user %s handed to %v is bound to %v in Directus", m.last, u.ID, p, b)
			}
		}
	}
	for id, r := range recs {
		if p, ok := m.users[id]; ok && r.IssuerURL != p.issuer {
			rt.Fatalf("after %s: record %s bound to %s, handed to %v", m.last, id, r.IssuerURL, p)
		}
		if r.live(m.now) && r.Unsure {
			rt.Fatalf("after %s: record %s is live and unsure", m.last, id)
		}
	}
}

func TestExchangeStateMachine(t *testing.T) {
	runStateMachine(t, nil)
}

// TestExchangeStateMachineOnPostgres runs the same sequences with the state
// in PostgreSQL (the test stack's; a schema per sequence): every crash is a
// takeover of the state by another process, which loads it from the
// database.
func TestExchangeStateMachineOnPostgres(t *testing.T) {
	schemas := pgstatetest.NewSchemas(t)
	runStateMachine(t, func() string { return schemas.Fresh(t) })
}

// runStateMachine checks the model's invariants over random sequences;
// with pg, each sequence keeps its state in the PostgreSQL schema pg gives.
func runStateMachine(t *testing.T, pg func() string) {
	mi := newModelIssuers(t)
	rapid.Check(t, func(rt *rapid.T) {
		var dsn []string
		if pg != nil {
			dsn = append(dsn, pg())
		}
		m := newModel(t, mi, rt, dsn...)
		defer m.close()
		rt.Repeat(map[string]func(*rapid.T){
			"exchange":  m.exchange,
			"exchange2": m.exchange, // twice as likely as the rest
			"revoke":    m.revoke,
			"watch":     m.watch,
			"reconcile": m.reconcile,
			"crash":     m.crash,
			"reload":    m.reload,
			"reconfig":  m.reconfigure,
			"clock":     m.step,
			"admin":     m.adminAct,
			"hook user": m.seedHookUser,
			"":          m.check,
		})
	})
}

// diffSnapshots describes how Directus's users changed, "" when they did not.
func diffSnapshots(a, b map[string]directustest.UserState) string {
	var out []string
	for id, u := range a {
		v, ok := b[id]
		switch {
		case !ok:
			out = append(out, id+" deleted")
		case fmt.Sprint(u.Status, u.Role, u.Policies, u.ExternalIdentifier, string(u.AuthData)) !=
			fmt.Sprint(v.Status, v.Role, v.Policies, v.ExternalIdentifier, string(v.AuthData)):
			out = append(out, id+" changed")
		case (u.Token == nil) != (v.Token == nil) || u.Token != nil && *u.Token != *v.Token:
			out = append(out, id+" token changed")
		}
	}
	for id := range b {
		if _, ok := a[id]; !ok {
			out = append(out, id+" created")
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}
