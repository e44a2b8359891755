package bridge

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// A hanging IdP: its discovery or JWKS endpoint accepts
// and never answers. Every request to it is bounded by the issuer's
// timeout, a caller waiting for its keys gives up at its own deadline, and
// no other issuer notices.

// hangingIdP accepts every request and answers none until the test ends.
type hangingIdP struct {
	*httptest.Server
	requests atomic.Int64
}

func newHangingIdP(t *testing.T) *hangingIdP {
	t.Helper()
	release := make(chan struct{})
	h := &hangingIdP{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.requests.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(h.Close)
	t.Cleanup(func() { close(release) }) // before Close, which waits for the handlers
	return h
}

// hangTimeout is the issuer timeout of the hanging issuers: short, so that
// the tests see it end.
const hangTimeout = Duration(5 * time.Second)

// hangSlack is how late a caller may return after its own deadline: well
// under hangTimeout, so that waiting for the issuer instead of the own
// deadline shows, and generous for a loaded machine under -race.
const hangSlack = 2 * time.Second

// eventually waits up to d for cond.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
	}
}

// hangingVerifier trusts cfg (an issuer of the hanging IdP) and a working
// ES256 issuer, on a pinned clock.
func hangingVerifier(t *testing.T, cfg IssuerConfig) (*verifier, *clock, *testIssuer) {
	t.Helper()
	good := newTestIssuer(t, jose.ES256, false)
	clk := &clock{t: time.Now()}
	cfg.Name, cfg.Audiences, cfg.Timeout, cfg.UserIDs = "hanging", []string{testAudience}, hangTimeout, UserIDsIssuer
	v := newVerifier([]IssuerConfig{cfg,
		{Name: "good", Issuer: good.URL, Audiences: []string{testAudience}, Algorithms: []string{"ES256"}},
	}, clk.Now, -1, nil)
	return v, clk, good
}

func issuerNamed(t *testing.T, v *verifier, name string) *issuerKeys {
	t.Helper()
	for _, k := range v.all() {
		if k.cfg.Name == name {
			return k
		}
	}
	t.Fatalf("no issuer %s", name)
	return nil
}

// verifyEach runs n verifications of tok at once, the i-th with a deadline
// of base+i*step, and checks that each returns errKeysUnavailable by its
// deadline (and hangSlack). It fails rather than waits when they hang.
func verifyEach(t *testing.T, v *verifier, tok string, n int, base, step time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			d := base + time.Duration(i)*step
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			start := time.Now()
			_, err := v.Verify(ctx, tok)
			if took := time.Since(start); took > d+hangSlack {
				t.Errorf("verification with a %v deadline took %v", d, took)
			}
			if !errors.Is(err, errKeysUnavailable) {
				t.Errorf("verification with a %v deadline: %v, want errKeysUnavailable (503)", d, err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("verifications of the hanging issuer still waiting after 10s")
	}
}

func TestHangingDiscoveryHoldsUpNoCaller(t *testing.T) {
	idp := newHangingIdP(t)
	v, clk, good := hangingVerifier(t, IssuerConfig{Issuer: idp.URL})
	hanging, other := issuerNamed(t, v, "hanging"), issuerNamed(t, v, "good")
	tok := signWith(t, jose.RS256, generateKey(t, jose.RS256), "k", "at+jwt",
		map[string]any{"iss": idp.URL, "sub": "c", "aud": testAudience, "exp": time.Now().Add(time.Hour).Unix()})

	// Warm-up without a deadline of its own (serve's used to be): the
	// discovery of the hanging issuer is bounded by the issuer's timeout,
	// the other issuer's keys load at once.
	warmed := make(chan error, 1)
	start := time.Now()
	go func() { warmed <- v.warm(context.Background()) }()
	eventually(t, time.Second, "the hanging IdP got no discovery request", func() bool { return idp.requests.Load() == 1 })
	eventually(t, time.Second, "the working issuer's keys did not load while the other hangs", func() bool { return other.status() == nil })
	if err := hanging.status(); err == nil {
		t.Fatalf("hanging issuer ready")
	}

	// Callers of the hanging issuer each give up at their own deadline,
	// and join the discovery in flight instead of starting one each.
	verifyEach(t, v, tok, 50, 50*time.Millisecond, 4*time.Millisecond)
	// The other issuer verifies at once meanwhile.
	t0 := time.Now()
	if _, err := v.Verify(t.Context(), good.sign(t, good.claims("c", testAudience, clk.Now(), "s"))); err != nil {
		t.Fatalf("working issuer: %v", err)
	}
	if took := time.Since(t0); took > hangSlack {
		t.Errorf("working issuer took %v while the other hangs", took)
	}
	if n := idp.requests.Load(); n != 1 {
		t.Errorf("%d discovery requests, want 1 (callers share the one in flight)", n)
	}

	// The discovery ends at the issuer's timeout, and so does the warm-up.
	select {
	case err := <-warmed:
		if err == nil {
			t.Errorf("warm-up succeeded with an IdP that never answers")
		}
		if took := time.Since(start); took > hangTimeout.D()+hangSlack {
			t.Errorf("warm-up took %v, want about the issuer timeout %v", took, hangTimeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("warm-up still running after 10s: discovery has no deadline")
	}
	hanging.mu.Lock()
	inflight := hanging.discovery != nil
	hanging.mu.Unlock()
	if err := hanging.status(); err == nil || inflight {
		t.Errorf("after the timeout: status %v, discovery in flight %v; want the discovery's failure", err, inflight)
	}

	// The cooldown holds: no new request, and an answer at once.
	t0 = time.Now()
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, errKeysUnavailable) {
		t.Errorf("within the cooldown: %v, want errKeysUnavailable", err)
	}
	if took := time.Since(t0); took > hangSlack {
		t.Errorf("within the cooldown the verification took %v", took)
	}
	if n := idp.requests.Load(); n != 1 {
		t.Errorf("%d discovery requests within the cooldown, want 1", n)
	}
	// After it, the next caller tries again.
	clk.Add(discoveryCooldown)
	verifyEach(t, v, tok, 1, 100*time.Millisecond, 0)
	if n := idp.requests.Load(); n != 2 {
		t.Errorf("%d discovery requests after the cooldown, want 2", n)
	}
}

func TestHangingJWKSHoldsUpNoCaller(t *testing.T) {
	idp := newHangingIdP(t)
	v, clk, good := hangingVerifier(t, IssuerConfig{Issuer: "https://hanging.test/", JWKSURL: idp.URL + "/jwks"})
	hanging := issuerNamed(t, v, "hanging")
	tok := signWith(t, jose.RS256, generateKey(t, jose.RS256), "k", "at+jwt",
		map[string]any{"iss": "https://hanging.test/", "sub": "c", "aud": testAudience, "exp": time.Now().Add(time.Hour).Unix()})

	warmed := make(chan error, 1)
	start := time.Now()
	go func() { warmed <- hanging.warm(context.Background(), clk.Now()) }()
	eventually(t, time.Second, "the hanging IdP got no JWKS request", func() bool { return idp.requests.Load() == 1 })
	verifyEach(t, v, tok, 50, 50*time.Millisecond, 4*time.Millisecond)
	t0 := time.Now()
	if _, err := v.Verify(t.Context(), good.sign(t, good.claims("c", testAudience, clk.Now(), "s"))); err != nil {
		t.Fatalf("working issuer: %v", err)
	}
	if took := time.Since(t0); took > hangSlack {
		t.Errorf("working issuer took %v while the other's JWKS hangs", took)
	}
	if n := idp.requests.Load(); n != 1 {
		t.Errorf("%d JWKS requests, want 1 (callers share the fetch in flight)", n)
	}
	select {
	case err := <-warmed:
		if !errors.Is(err, errFetchingKeys) {
			t.Errorf("warm-up: %v, want a failed fetch", err)
		}
		if took := time.Since(start); took > hangTimeout.D()+hangSlack {
			t.Errorf("warm-up took %v, want about the issuer timeout %v", took, hangTimeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("warm-up still running after 10s: the JWKS fetch has no deadline")
	}
	if hanging.ready() {
		t.Errorf("ready after a failed fetch")
	}
	// Within the cooldown: the failure, at once (503, not a refusal).
	t0 = time.Now()
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, errKeysUnavailable) {
		t.Errorf("within the cooldown: %v, want errKeysUnavailable", err)
	}
	if took := time.Since(t0); took > hangSlack {
		t.Errorf("within the cooldown the verification took %v", took)
	}
	if n := idp.requests.Load(); n != 1 {
		t.Errorf("%d JWKS requests within the cooldown, want 1", n)
	}
	clk.Add(keySetCooldown)
	verifyEach(t, v, tok, 1, 100*time.Millisecond, 0)
	if n := idp.requests.Load(); n != 2 {
		t.Errorf("%d JWKS requests after the cooldown, want 2", n)
	}
}
