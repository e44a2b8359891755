package bridge

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func withMetrics(reg *prometheus.Registry) harnessOpt {
	return func(h *harness, o *Options) {
		o.Metrics = NewMetrics(reg, o.Store, o.Now)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, "12.4.0", withMetrics(reg))
	h.exchange(h.auth0Token("m1", "items:read"))
	h.exchange(h.auth0Token("m1", "items:read"))
	h.exchange(h.auth0Token("m2", "unmapped"))
	h.exchange("garbage")
	ex := h.ex.metrics.exchanges
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"auth0", "issued", ""}, 1},
		{[]string{"auth0", "reused", ""}, 1},
		{[]string{"auth0", "refused", "invalid_scope"}, 1},
		{[]string{"unknown", "refused", "invalid_request"}, 1},
	} {
		if got := testutil.ToFloat64(ex.WithLabelValues(tc.labels...)); got != tc.want {
			t.Errorf("exchanges%v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if got := testutil.ToFloat64(h.ex.metrics.jwksFetches.WithLabelValues("auth0", "ok")); got != 1 {
		t.Errorf("JWKS fetches = %v, want 1", got)
	}

	// The names of every metric, as a golden list (run with -update to accept a change).
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	names := h.ex.metrics.names()
	sort.Strings(names)
	got := strings.Join(names, "\n") + "\n"
	golden := filepath.Join("testdata", "metrics.golden")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (UPDATE_GOLDEN=1 go test ./bridge -run TestMetrics)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("metric names (-want +got):\n%s", diff)
	}
	for _, label := range []string{"m1", "m2", "dbr_"} {
		if strings.Contains(string(body), label) {
			t.Errorf("metrics mention %q: client ids or tokens must not be labels", label)
		}
	}
}

func TestRequestID(t *testing.T) {
	h := newHarness(t, "12.4.0")
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/oauth/token", strings.NewReader(exchangeForm(h.auth0Token("rid", "items:read")).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Request-Id", "abc-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-Id"); got != "abc-123" {
		t.Errorf("X-Request-Id = %q, want it echoed", got)
	}
	var line map[string]any
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(l, `"event":"exchange"`) {
			_ = json.Unmarshal([]byte(l), &line)
		}
	}
	if line["request_id"] != "abc-123" {
		t.Errorf("audit line request_id = %v, want abc-123", line["request_id"])
	}
	for _, k := range []string{"issuer", "client", "user_id", "role", "policies", "outcome", "token_fp", "remote"} {
		if _, ok := line[k]; !ok {
			t.Errorf("audit line lacks %s: %v", k, line)
		}
	}
	// A hostile request id is replaced.
	req, _ = http.NewRequest(http.MethodGet, h.srv.URL+"/healthz", nil)
	req.Header.Set("X-Request-Id", "evil<script>")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-Id"); got == "" || strings.Contains(got, "evil") {
		t.Errorf("hostile request id kept: %q", got)
	}
}

func TestReadiness(t *testing.T) {
	h := newHarness(t, "12.4.0")
	get := func() (int, map[string]string) {
		resp, err := http.Get(h.srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if code, body := get(); code != 200 || body["directus"] != "ok" || body["issuer:auth0"] != "ok" {
		t.Errorf("ready: %d %v", code, body)
	}
	h.fake.Close()                            // Directus goes away
	h.clock.Add(DefaultDirectusCheckInterval) // and the next ping sees it
	if code, body := get(); code != 503 || body["directus"] != "failing" || body["issuer:auth0"] != "ok" {
		t.Errorf("Directus down: %d %v, want 503 naming directus", code, body)
	}
	if resp, err := http.Get(h.srv.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz must stay 200 while Directus is down")
	}
}

func TestClientIPBehindTrustedProxies(t *testing.T) {
	s := &Server{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	for _, tc := range []struct {
		peer, xff, want string
	}{
		{"192.0.2.1:5555", "203.0.113.9", "192.0.2.1"},              // untrusted peer: header ignored
		{"10.1.2.3:5555", "203.0.113.9", "203.0.113.9"},             // trusted proxy
		{"10.1.2.3:5555", "198.51.100.7, 10.9.9.9", "198.51.100.7"}, // chain of proxies
		{"10.1.2.3:5555", "1.2.3.4, 203.0.113.9", "203.0.113.9"},    // spoofed left part ignored
		{"10.1.2.3:5555", "not-an-ip", "10.1.2.3"},
		{"10.1.2.3:5555", "", "10.1.2.3"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/oauth/token", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := s.clientIP(r); got != tc.want {
			t.Errorf("peer %s XFF %q: got %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
}
