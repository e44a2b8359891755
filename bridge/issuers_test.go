package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
)

// downIdP serves a testIssuer's discovery and JWKS, or 503 for either.
type downIdP struct {
	*testIssuer
	discoveryDown, jwksDown  atomic.Bool
	discoveries, jwksFetches atomic.Int64
}

func newDownIdP(t *testing.T) *downIdP {
	t.Helper()
	d := &downIdP{testIssuer: &testIssuer{alg: jose.ES256, key: generateKey(t, jose.ES256), kid: "down"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			d.discoveries.Add(1)
			if d.discoveryDown.Load() {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": d.URL, "jwks_uri": d.URL + "/jwks"})
		case "/jwks":
			d.jwksFetches.Add(1)
			if d.jwksDown.Load() {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			k, kid := d.current()
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.Public(), KeyID: kid, Algorithm: "ES256", Use: "sig"}}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	d.URL = srv.URL
	return d
}

func (d *downIdP) config() IssuerConfig {
	return IssuerConfig{Name: "down", Issuer: d.URL, Audiences: []string{testAudience}, Algorithms: []string{"ES256"}, UserIDs: UserIDsIssuer}
}

// Readiness is truthful: an issuer is ready only once
// its keys really loaded; until then each warm-up retries, within the
// cooldowns, and status says why not.
func TestIssuerReadyOnlyOnceKeysLoaded(t *testing.T) {
	idp := newDownIdP(t)
	idp.jwksDown.Store(true)
	clk := &clock{t: time.Now()}
	v := newVerifier([]IssuerConfig{idp.config()}, clk.Now, -1, nil)
	k := issuerNamed(t, v, "down")
	if err := k.status(); !errors.Is(err, errKeysUnavailable) {
		t.Errorf("before any attempt: status %v, want errKeysUnavailable", err)
	}

	// The first JWKS fetch fails: not ready, however often asked.
	if err := k.warm(t.Context(), clk.Now()); !errors.Is(err, errFetchingKeys) {
		t.Fatalf("warm with the JWKS down: %v, want a failed fetch", err)
	}
	for range 3 {
		if err := k.warm(t.Context(), clk.Now()); !errors.Is(err, errFetchingKeys) {
			t.Errorf("warm again within the cooldown: %v, want the failed fetch (it used to count as loaded)", err)
		}
		if k.ready() || !errors.Is(k.status(), errFetchingKeys) {
			t.Errorf("ready %v, status %v: want not ready, a failed fetch", k.ready(), k.status())
		}
	}
	if n := idp.jwksFetches.Load(); n != 1 {
		t.Errorf("%d JWKS fetches within the cooldown, want 1", n)
	}
	tok := idp.sign(t, idp.claims("c", testAudience, clk.Now(), "s"))
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, errKeysUnavailable) {
		t.Errorf("verification without keys: %v, want errKeysUnavailable (503)", err)
	}

	// The JWKS answers again: the next attempt after the cooldown loads it,
	// a verification as well as a warm-up.
	idp.jwksDown.Store(false)
	if err := k.warm(t.Context(), clk.Now()); err == nil {
		t.Errorf("ready within the cooldown without a fetch")
	}
	clk.Add(keySetCooldown)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("verification after the cooldown: %v", err)
	}
	if err := k.status(); err != nil || !k.ready() {
		t.Errorf("after the keys loaded: status %v", err)
	}
	if err := k.warm(t.Context(), clk.Now()); err != nil {
		t.Errorf("warm once loaded: %v", err)
	}
	if n := idp.jwksFetches.Load(); n != 2 {
		t.Errorf("%d JWKS fetches, want 2", n)
	}

	// Keys once loaded stay loaded through a failing refresh.
	idp.jwksDown.Store(true)
	clk.Add(keySetCooldown)
	other := signWith(t, jose.ES256, generateKey(t, jose.ES256), "rotated", "at+jwt", idp.claims("c", testAudience, clk.Now(), "s"))
	if _, err := v.Verify(t.Context(), other); err == nil {
		t.Errorf("unknown key accepted")
	}
	if err := k.status(); err != nil {
		t.Errorf("a failed refresh made loaded keys unready: %v", err)
	}
}

func TestIssuerDiscoveryRetriedAfterTheCooldown(t *testing.T) {
	idp := newDownIdP(t)
	idp.discoveryDown.Store(true)
	clk := &clock{t: time.Now()}
	v := newVerifier([]IssuerConfig{idp.config()}, clk.Now, -1, nil)
	k := issuerNamed(t, v, "down")
	if err := k.warm(t.Context(), clk.Now()); err == nil {
		t.Fatal("warm succeeded with discovery down")
	}
	idp.discoveryDown.Store(false)
	for range 3 {
		if err := k.warm(t.Context(), clk.Now()); err == nil || k.status() == nil {
			t.Errorf("within the discovery cooldown: warm %v, status %v; want both failing", err, k.status())
		}
	}
	if n := idp.discoveries.Load(); n != 1 {
		t.Errorf("%d discoveries within the cooldown, want 1", n)
	}
	clk.Add(discoveryCooldown)
	if err := k.warm(t.Context(), clk.Now()); err != nil || k.status() != nil {
		t.Errorf("after the cooldown: warm %v, status %v", err, k.status())
	}
}

// reloadIssuers are two issuers on test IdPs, and tokens of theirs.
type reloadIssuers struct {
	rs, es *testIssuer
	clk    *clock
}

func newReloadIssuers(t *testing.T) *reloadIssuers {
	t.Helper()
	return &reloadIssuers{rs: newTestIssuer(t, jose.RS256, false), es: newTestIssuer(t, jose.ES256, false), clk: &clock{t: time.Now()}}
}

func (r *reloadIssuers) configs() []IssuerConfig {
	return []IssuerConfig{
		{Name: "rs", Issuer: r.rs.URL, Audiences: []string{testAudience}},
		{Name: "es", Issuer: r.es.URL, Audiences: []string{testAudience}, Algorithms: []string{"ES256"}, UserIDs: UserIDsIssuer},
	}
}

func (r *reloadIssuers) token(t *testing.T, ti *testIssuer, mut func(map[string]any)) string {
	t.Helper()
	c := ti.claims("client", testAudience, r.clk.Now(), "items:read")
	if mut != nil {
		mut(c)
	}
	return ti.sign(t, c)
}

func names(ks []*issuerKeys) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.cfg.Name)
	}
	return out
}

// The issuer set can be replaced at run time: a removed
// issuer is distrusted at once, cached verifications included; a changed
// one is checked with its new configuration from the next verification on;
// an unchanged one keeps its keys and its cache.
func TestSetIssuers(t *testing.T) {
	r := newReloadIssuers(t)
	cfgs := r.configs()
	v := newVerifier(cfgs, r.clk.Now, 100, nil)
	if got, want := names(v.all()), []string{"es", "rs"}; !slices.Equal(got, want) {
		t.Errorf("all() = %v, want %v (sorted by name)", got, want)
	}
	rsTok, esTok := r.token(t, r.rs, nil), r.token(t, r.es, nil)
	verify := func(tok string) (*Identity, error) { return v.Verify(t.Context(), tok) }
	rsID, err := verify(rsTok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify(esTok); err != nil {
		t.Fatal(err)
	}
	fetches := func() int64 { return r.rs.fetches.Load() + r.es.fetches.Load() }
	before := fetches()

	type diff struct{ Added, Removed, Changed []string }
	set := func(cfgs ...IssuerConfig) diff {
		a, rm, c := v.setIssuers(cfgs)
		return diff{a, rm, c}
	}
	refused := func(what, tok, reason string) {
		t.Helper()
		var te *TokenError
		if _, err := verify(tok); !errors.As(err, &te) || te.Reason != reason {
			t.Errorf("%s: %v, want the refusal %q", what, err, reason)
		}
	}

	// The same set again: nothing changes, the cache stays.
	if d := set(r.configs()...); !cmp.Equal(d, diff{}) {
		t.Errorf("unchanged set: %+v", d)
	}
	if id, err := verify(rsTok); err != nil || id != rsID {
		t.Errorf("unchanged set: %v, %p; want the cached identity %p", err, id, rsID)
	}
	snapshot := v.all()

	// Removed: distrusted at once, although its verification is cached.
	if d := set(cfgs[0]); !cmp.Equal(d, diff{Removed: []string{"es"}}) {
		t.Errorf("removing es: %+v", d)
	}
	refused("removed issuer's cached token", esTok, "issuer is not trusted")
	if got := names(snapshot); !slices.Equal(got, []string{"es", "rs"}) {
		t.Errorf("an earlier all() changed: %v", got)
	}
	if got := names(v.all()); !slices.Equal(got, []string{"rs"}) {
		t.Errorf("all() after removing es: %v", got)
	}

	// Changed checks take effect for the next verification, keys kept.
	changes := []struct {
		name   string
		change func(c *IssuerConfig)
		tok    string // refused after the change
		reason string
	}{
		{"audiences", func(c *IssuerConfig) { c.Audiences = []string{"https://other.test/api"} }, rsTok, "audience not accepted"},
		{"algorithms", func(c *IssuerConfig) { c.Algorithms = []string{"PS256"} }, rsTok, `algorithm "RS256" is not allowed for issuer rs`},
		{"required claims", func(c *IssuerConfig) { c.RequiredClaims = map[string]any{"gty": "password"} }, rsTok,
			"required claim gty is missing or has another value"},
		{"typ", func(c *IssuerConfig) { c.RequireTyp = "dpop+jwt" }, rsTok, `token type "at+jwt" is not "dpop+jwt"`},
		{"leeway", func(c *IssuerConfig) { c.Leeway = Duration(time.Second) },
			r.token(t, r.rs, func(c map[string]any) { c["nbf"] = r.clk.Now().Add(10 * time.Second).Unix() }), "token not valid yet (nbf)"},
		{"client claim", func(c *IssuerConfig) { c.ClientClaim = "azp" }, rsTok, "client claim azp is missing"},
	}
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := verify(tc.tok); err != nil {
				t.Fatalf("before the change: %v", err)
			}
			c := cfgs[0]
			tc.change(&c)
			if d := set(c); !cmp.Equal(d, diff{Changed: []string{"rs"}}) {
				t.Errorf("changing %s: %+v", tc.name, d)
			}
			refused("after the change", tc.tok, tc.reason)
			if d := set(cfgs[0]); !cmp.Equal(d, diff{Changed: []string{"rs"}}) {
				t.Errorf("changing %s back: %+v", tc.name, d)
			}
			if _, err := verify(tc.tok); err != nil {
				t.Errorf("after changing back: %v", err)
			}
		})
	}
	if n := fetches() - before; n != 0 {
		t.Errorf("%d JWKS fetches for changes that keep the keys' source, want 0", n)
	}

	// Changes that reach the identity: scopes and user ids.
	c := cfgs[0]
	c.ScopeClaims, c.UserIDs = []string{"scp"}, UserIDsIssuer
	set(c)
	id, err := verify(r.token(t, r.rs, func(m map[string]any) { m["scp"] = []string{"other:read"}; m["jti"] = "scp" }))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(id.Scopes, []string{"other:read"}) || id.Issuer.UserIDs != UserIDsIssuer {
		t.Errorf("after changing scope claims and user ids: scopes %v, user ids %s", id.Scopes, id.Issuer.UserIDs)
	}

	// A new jwks_url is a new key set: fetched from there.
	c = cfgs[0]
	c.JWKSURL = r.rs.URL + "/jwks"
	set(c)
	if _, err := verify(r.token(t, r.rs, func(m map[string]any) { m["jti"] = "jwks" })); err != nil {
		t.Fatal(err)
	}
	if n := fetches() - before; n != 1 {
		t.Errorf("%d JWKS fetches after changing jwks_url, want 1", n)
	}

	// Added back: trusted again (a fresh discovery).
	if d := set(cfgs...); !cmp.Equal(d, diff{Added: []string{"es"}, Changed: []string{"rs"}}) {
		t.Errorf("adding es back: %+v", d)
	}
	if _, err := verify(esTok); err != nil {
		t.Errorf("es added back: %v", err)
	}

	// The caller's configuration is copied: changing it later changes nothing.
	cfgs[0].Audiences[0] = "https://mutated.test/"
	if _, err := verify(r.token(t, r.rs, func(m map[string]any) { m["jti"] = "copy" })); err != nil {
		t.Errorf("after the caller changed its slice: %v", err)
	}
}

// TestSetIssuersConcurrently runs verifications while the set changes
// under them (go test -race): each sees one set, and once the issuer is
// removed nothing of it is served, not even a verification that was in
// flight when it was removed and cached its result after.
func TestSetIssuersConcurrently(t *testing.T) {
	r := newReloadIssuers(t)
	cfgs := r.configs()
	v := newVerifier(cfgs, r.clk.Now, 1000, nil)
	toks := make([]string, 20)
	for i := range toks {
		ti := r.rs
		if i%2 == 1 {
			ti = r.es
		}
		toks[i] = r.token(t, ti, func(m map[string]any) { m["jti"] = fmt.Sprint(i) })
	}
	if err := v.warm(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; ctx.Err() == nil; i++ {
				id, err := v.Verify(ctx, toks[i%len(toks)])
				var te *TokenError
				switch {
				case err == nil && id.Issuer.Name == "":
					t.Errorf("identity without an issuer")
				case err != nil && !errors.As(err, &te) && !errors.Is(err, errKeysUnavailable):
					t.Errorf("verification: %v", err) // keys of a re-added issuer may still be on their way
				}
				_ = v.all()
			}
		})
	}
	narrowed := cfgs[1]
	narrowed.Audiences = []string{"https://other.test/api"}
	variants := [][]IssuerConfig{cfgs, {cfgs[0]}, {cfgs[0], narrowed}, {cfgs[1]}, nil}
	for i := range 300 {
		v.setIssuers(variants[i%len(variants)])
	}
	v.setIssuers([]IssuerConfig{cfgs[0]})
	time.Sleep(20 * time.Millisecond) // verifications in flight across the last change finish
	cancel()
	wg.Wait()
	for i := 1; i < len(toks); i += 2 {
		if _, err := v.Verify(t.Context(), toks[i]); err == nil {
			t.Fatalf("token of the removed issuer accepted after the last change")
		}
	}
	for i := 0; i < len(toks); i += 2 {
		if _, err := v.Verify(t.Context(), toks[i]); err != nil {
			t.Fatalf("token of the remaining issuer: %v", err)
		}
	}
}
