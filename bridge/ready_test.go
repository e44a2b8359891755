package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/directus-bridge/directus-bridge/directus"
)

// pingCounter is a transport for the exchanger's Directus client that counts
// GET /server/ping (the fake's Requests does not) and can slow it or hang it.
type pingCounter struct {
	delay time.Duration
	hang  atomic.Bool
	pings atomic.Int64
}

func (c *pingCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/server/ping") {
		c.pings.Add(1)
		if c.hang.Load() {
			<-r.Context().Done()
			return nil, r.Context().Err()
		}
		select {
		case <-time.After(c.delay):
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// withPingCounter gives the exchanger a Directus client that counts pings.
func withPingCounter(c *pingCounter) harnessOpt {
	return func(h *harness, o *Options) {
		dc, err := directus.New(h.fake.URL, h.fake.AdminToken, directus.Options{Retries: -1, Transport: c})
		if err != nil {
			h.t.Fatal(err)
		}
		o.Directus = dc
	}
}

type readyAnswer struct {
	status int
	body   map[string]string
	took   time.Duration
}

func probeReady(t *testing.T, hd http.Handler) readyAnswer {
	t.Helper()
	start := time.Now()
	rec := httptest.NewRecorder()
	hd.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/readyz", nil))
	a := readyAnswer{status: rec.Code, took: time.Since(start)}
	if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil {
		t.Fatalf("/readyz body %q: %v", rec.Body, err)
	}
	return a
}

func TestReadyzMergesDirectusPings(t *testing.T) {
	pc := &pingCounter{delay: 50 * time.Millisecond}
	h := newHarness(t, "12.4.0", withPingCounter(pc))
	const interval = 3 * time.Second
	hd := (&Server{Exchanger: h.ex, Logger: h.opts.Logger, DirectusCheckInterval: interval}).Handler()
	burst := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		var bad atomic.Int64
		for range n {
			wg.Go(func() {
				if a := probeReady(t, hd); a.status != http.StatusOK {
					if bad.Add(1) == 1 {
						t.Errorf("probe: %d %v", a.status, a.body)
					}
				}
			})
		}
		wg.Wait()
	}
	for _, step := range []struct {
		advance time.Duration
		probes  int
		want    int64
	}{
		{0, 1000, 1},              // 1000 concurrent probes share one ping
		{interval - 1, 1000, 1},   // within the interval: the cached answer
		{1, 1000, 2},              // the interval is over: one more ping
		{interval / 2, 100, 2},    // and that one is cached in turn
		{-time.Hour, 100, 3},      // a clock that stepped back does not pin the cache
		{interval - 1, 100, 3},    // the interval counts from the ping after the step
		{1, 100, 4},               //
		{100 * interval, 1000, 5}, // after a long quiet time: still one
	} {
		h.clock.Add(step.advance)
		burst(step.probes)
		if got := pc.pings.Load(); got != step.want {
			t.Fatalf("after advancing %v and %d probes: %d pings, want %d", step.advance, step.probes, got, step.want)
		}
	}
}

func TestProbeMergesConcurrentCallers(t *testing.T) {
	var p probe[error]
	var calls, entered atomic.Int64
	release := make(chan struct{})
	check := func(ctx context.Context) error {
		calls.Add(1)
		<-release
		return nil
	}
	now := time.Unix(1e9, 0)
	var wg sync.WaitGroup
	for range 1000 {
		wg.Go(func() {
			entered.Add(1)
			if _, failed := p.result(t.Context(), now, 0, time.Minute, check); failed != nil {
				t.Errorf("result: %v", failed)
			}
		})
	}
	for entered.Load() < 1000 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // all of them waiting on the run in flight
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("1000 concurrent callers ran the check %d times, want 1", n)
	}
}

func TestReadyzHangingDirectus(t *testing.T) {
	pc := &pingCounter{}
	pc.hang.Store(true)
	h := newHarness(t, "12.4.0", withPingCounter(pc))
	if err := h.ex.Warm(t.Context()); err != nil {
		t.Fatal(err)
	}
	const timeout = 300 * time.Millisecond
	hd := (&Server{Exchanger: h.ex, Logger: h.opts.Logger, ReadyTimeout: timeout}).Handler()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			a := probeReady(t, hd)
			if a.took > timeout+time.Second {
				t.Errorf("/readyz took %v with Directus hanging, want about the timeout %v", a.took, timeout)
			}
			if a.status != http.StatusServiceUnavailable || a.body["directus"] != "failing" ||
				a.body["directus.reason"] != "timed out" || a.body["issuer:auth0"] != "ok" {
				t.Errorf("Directus hanging: %d %v, want 503 naming directus, timed out", a.status, a.body)
			}
		})
	}
	wg.Wait()
	if n := pc.pings.Load(); n != 1 {
		t.Errorf("50 probes while Directus hangs caused %d pings, want 1", n)
	}
	// Directus answers again: seen after the interval.
	pc.hang.Store(false)
	if a := probeReady(t, hd); a.body["directus"] != "failing" {
		t.Errorf("within the interval: %v, want the cached failure", a.body)
	}
	h.clock.Add(DefaultDirectusCheckInterval)
	if a := probeReady(t, hd); a.status != http.StatusOK || a.body["directus"] != "ok" {
		t.Errorf("Directus back: %d %v", a.status, a.body)
	}
	logs := h.logs.String()
	for _, want := range []string{`"msg":"readiness check failing"`, `"check":"directus"`, `"msg":"readiness check ok again"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
	if n := strings.Count(logs, `"msg":"readiness check failing"`); n != 1 {
		t.Errorf("%d log lines for one failure, want 1 (changes are logged, not probes)", n)
	}
}

// flakyIdP is an issuer whose discovery document and JWKS answer 503
// until told otherwise, or hang.
type flakyIdP struct {
	URL       string
	discovery atomic.Bool // discovery answers
	jwks      atomic.Bool // JWKS answers
	hang      atomic.Bool // every request hangs
	fetches   atomic.Int64
}

func newFlakyIdP(t *testing.T) *flakyIdP {
	t.Helper()
	f := &flakyIdP{}
	key := generateKey(t, jose.RS256)
	mux := http.NewServeMux()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.hang.Load() {
			<-r.Context().Done()
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if !f.discovery.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": f.URL, "jwks_uri": f.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		f.fetches.Add(1)
		if !f.jwks.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: key.Public(), KeyID: "flaky", Algorithm: string(jose.RS256), Use: "sig"}}})
	})
	return f
}

// withIssuer adds an issuer named flaky.
func withIssuer(c IssuerConfig) harnessOpt {
	return func(h *harness, o *Options) {
		c.Name, c.Audiences, c.UserIDs = "flaky", []string{testAudience}, UserIDsIssuer
		o.Issuers = append(o.Issuers, c)
	}
}

// passKeyCooldown lets the JWKS cooldown of the flaky issuer pass: the test
// clock moves, and so does the key set's last fetch (its clock is the wall
// clock).
func passKeyCooldown(t *testing.T, h *harness) {
	t.Helper()
	h.clock.Add(keySetCooldown)
	for _, k := range h.ex.verifier.all() {
		k.mu.Lock()
		set := k.set
		k.mu.Unlock()
		if set == nil {
			continue
		}
		set.mu.Lock()
		set.fetched = set.fetched.Add(-keySetCooldown)
		set.mu.Unlock()
	}
}

func TestReadyzIssuerKeys(t *testing.T) {
	f := newFlakyIdP(t)
	f.discovery.Store(true)
	h := newHarness(t, "12.4.0", withIssuer(IssuerConfig{Issuer: f.URL}))
	hd := (&Server{Exchanger: h.ex, Logger: h.opts.Logger}).Handler()

	// The JWKS fetch at start fails: that is not ready (it used to count
	// as loaded).
	if err := h.ex.Warm(t.Context()); err == nil {
		t.Fatal("Warm succeeded with the JWKS down")
	}
	fetches := f.fetches.Load()
	a := probeReady(t, hd)
	if a.status != http.StatusServiceUnavailable || a.body["issuer:flaky"] != "failing" || a.body["issuer:auth0"] != "ok" {
		t.Fatalf("JWKS down: %d %v, want 503 naming issuer:flaky only", a.status, a.body)
	}
	if r := a.body["issuer:flaky.reason"]; r != "keys not loaded" && r != "JWKS fetch failed" {
		t.Errorf("reason %q", r)
	}
	// Probes within the cooldown do not fetch.
	f.jwks.Store(true)
	for range 20 {
		if a := probeReady(t, hd); a.body["issuer:flaky"] != "failing" {
			t.Fatalf("within the cooldown: %v", a.body)
		}
	}
	if n := f.fetches.Load() - fetches; n != 0 {
		t.Errorf("%d JWKS fetches within the cooldown, want 0", n)
	}
	// After it, one probe retries and the issuer is ready.
	passKeyCooldown(t, h)
	if a := probeReady(t, hd); a.status != http.StatusOK || a.body["issuer:flaky"] != "ok" {
		t.Errorf("JWKS answering after the cooldown: %d %v", a.status, a.body)
	}
	if n := f.fetches.Load() - fetches; n != 1 {
		t.Errorf("%d JWKS fetches to recover, want 1", n)
	}
	for range 20 {
		probeReady(t, hd)
	}
	if n := f.fetches.Load() - fetches; n != 1 {
		t.Errorf("%d JWKS fetches once ready, want 1: a ready issuer costs probes nothing", n)
	}
}

func TestReadyzIssuerDiscovery(t *testing.T) {
	f := newFlakyIdP(t)
	f.jwks.Store(true)
	h := newHarness(t, "12.4.0", withIssuer(IssuerConfig{Issuer: f.URL}))
	hd := (&Server{Exchanger: h.ex, Logger: h.opts.Logger}).Handler()
	a := probeReady(t, hd)
	if a.body["issuer:flaky"] != "failing" || a.body["issuer:flaky.reason"] != "discovery failed" {
		t.Fatalf("discovery down: %v", a.body)
	}
	f.discovery.Store(true)
	if a := probeReady(t, hd); a.body["issuer:flaky"] != "failing" {
		t.Errorf("within the discovery cooldown: %v, want still failing", a.body)
	}
	h.clock.Add(discoveryCooldown)
	if a := probeReady(t, hd); a.status != http.StatusOK || a.body["issuer:flaky"] != "ok" {
		t.Errorf("discovery back after the cooldown: %d %v", a.status, a.body)
	}
}

func TestReadyzHangingIssuer(t *testing.T) {
	f := newFlakyIdP(t)
	f.hang.Store(true)
	// The issuer's own timeout ends the hanging requests before the test
	// does (httptest's Close waits for them).
	h := newHarness(t, "12.4.0", withIssuer(IssuerConfig{Issuer: f.URL, Timeout: Duration(time.Second)}))
	for _, k := range h.ex.verifier.all() {
		if k.cfg.Name == "auth0" {
			if err := k.warm(t.Context(), h.clock.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	const timeout = 300 * time.Millisecond
	hd := (&Server{Exchanger: h.ex, Logger: h.opts.Logger, ReadyTimeout: timeout}).Handler()
	for range 5 {
		a := probeReady(t, hd)
		if a.took > timeout+time.Second {
			t.Errorf("/readyz took %v with an IdP hanging, want about %v", a.took, timeout)
		}
		if a.body["issuer:flaky"] != "failing" || a.body["issuer:auth0"] != "ok" || a.body["directus"] != "ok" {
			t.Errorf("IdP hanging: %v, want only issuer:flaky failing", a.body)
		}
		h.clock.Add(discoveryCooldown)
	}
}

func TestReadyzExtraChecks(t *testing.T) {
	h := newHarness(t, "12.4.0")
	if err := h.ex.Warm(t.Context()); err != nil {
		t.Fatal(err)
	}
	const timeout = 200 * time.Millisecond
	var calls atomic.Int64
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	mode := atomic.Value{}
	mode.Store("secret")
	s := &Server{Exchanger: h.ex, Logger: h.opts.Logger, ReadyTimeout: timeout,
		Ready: func(ctx context.Context) map[string]error {
			calls.Add(1)
			switch mode.Load() {
			case "hang":
				<-block // ignores ctx
			case "panic":
				panic("boom")
			}
			return map[string]error{"rules": errors.New("token s3cr3t rejected by https://user:pw@example.test"), "store": nil}
		}}
	hd := s.Handler()
	a := probeReady(t, hd)
	if a.status != http.StatusServiceUnavailable || a.body["rules"] != "failing" || a.body["store"] != "ok" ||
		a.body["rules.reason"] != "failing, see the logs" {
		t.Errorf("extra checks: %d %v", a.status, a.body)
	}
	raw, _ := json.Marshal(a.body)
	if strings.Contains(string(raw), "s3cr3t") || strings.Contains(string(raw), "pw@") {
		t.Errorf("/readyz shows an error's text: %s", raw)
	}

	mode.Store("hang")
	calls.Store(0)
	for range 5 {
		a := probeReady(t, hd)
		if a.took > timeout+time.Second || a.body["ready"] != "failing" || a.body["ready.reason"] != "timed out" {
			t.Errorf("Ready hanging: took %v, %v", a.took, a.body)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("a hanging Ready was called %d times, want 1 (one at a time)", n)
	}
}

func TestReadyzCheckPanics(t *testing.T) {
	h := newHarness(t, "12.4.0")
	hd := (&Server{Exchanger: h.ex, Ready: func(context.Context) map[string]error { panic("boom") }}).Handler()
	if a := probeReady(t, hd); a.body["ready"] != "failing" || a.body["ready.reason"] != "check panicked" {
		t.Errorf("panicking check: %v", a.body)
	}
}

func TestReadyReason(t *testing.T) {
	secret := "dbr_s3cr3t"
	for _, tc := range []struct {
		name, check string
		err         error
		want        string
	}{
		{"timeout", "directus", errCheckTimedOut, "timed out"},
		{"deadline", "directus", context.DeadlineExceeded, "timed out"},
		{"transport deadline", "directus", &directus.APIError{Op: "ping", Code: directus.CodeUnreachable,
			Message: `Get "http://d/server/ping?access_token=` + secret + `": context deadline exceeded`}, "timed out"},
		{"unreachable", "directus", &directus.APIError{Op: "ping", Code: directus.CodeUnreachable, Message: "dial tcp " + secret}, "unreachable"},
		{"status", "directus", &directus.APIError{Op: "ping", Status: 503, Code: directus.CodeMalformed, Message: secret}, "answered HTTP 503"},
		{"no pong", "directus", &directus.APIError{Op: "ping", Status: 200, Code: directus.CodeMalformed, Message: secret}, "unexpected answer"},
		{"discovery", "issuer:a", errors.Join(errDiscovery, errors.New(secret)), "discovery failed"},
		{"jwks", "issuer:a", errors.Join(errFetchingKeys, errors.New(secret)), "JWKS fetch failed"},
		{"issuer other", "issuer:a", errors.New(secret), "keys not loaded"},
		{"other", "rules", errors.New(secret), "failing, see the logs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := readyReason(tc.check, tc.err)
			if got != tc.want {
				t.Errorf("readyReason(%s, %v) = %q, want %q", tc.check, tc.err, got, tc.want)
			}
			if strings.Contains(got, "s3cr3t") {
				t.Errorf("reason %q carries the error's text", got)
			}
		})
	}
}
