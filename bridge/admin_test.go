package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/directus/directustest"
)

const testAdminToken = "admin-token-0123456789abcdef0123456789"

// adminHarness is the harness with an admin server in front of its
// exchanger: one client exchanged, its token expired, so that a reconcile
// has one revocation to plan.
type adminHarness struct {
	*harness
	rec *Reconciler
	as  *AdminServer
	srv *httptest.Server
}

func newAdminHarness(t *testing.T) *adminHarness {
	t.Helper()
	h := newHarness(t, "12.4.0")
	if r := h.exchange(h.auth0Token("admin-cli", "items:read")); r.Status != 200 {
		t.Fatalf("exchange: %d %v", r.Status, r.Body)
	}
	h.clock.Add(16 * time.Minute) // past the 15 min TTL: the token is to be revoked
	rec := NewReconciler(h.ex, ReconcileConfig{})
	as, err := NewAdminServer(rec, testAdminToken, h.opts.Logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(as)
	t.Cleanup(srv.Close)
	h.fake.ResetRequests()
	return &adminHarness{harness: h, rec: rec, as: as, srv: srv}
}

// adminAnswer is a decoded admin response.
type adminAnswer struct {
	Status int
	Header http.Header
	Raw    []byte
	Report Report
	Error  string // error code of a non-report answer
	Descr  string
}

func (a *adminHarness) call(method, target, token string, body string) adminAnswer {
	a.t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+target, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return doAdmin(a.t, req)
}

func doAdmin(t *testing.T, req *http.Request) adminAnswer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	out := adminAnswer{Status: resp.StatusCode, Header: resp.Header, Raw: buf.Bytes()}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: Content-Type %q, want JSON; body %s", req.Method, req.URL.Path, ct, buf.Bytes())
	}
	var e struct {
		Error string `json:"error"`
		Descr string `json:"error_description"`
	}
	if err := json.Unmarshal(buf.Bytes(), &e); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v: %s", req.Method, req.URL.Path, err, buf.Bytes())
	}
	if e.Descr != "" {
		out.Error, out.Descr = e.Error, e.Descr
	} else if err := json.Unmarshal(buf.Bytes(), &out.Report); err != nil {
		t.Fatalf("body is not a report: %v: %s", err, buf.Bytes())
	}
	return out
}

func TestAdminRefusesWithoutTheToken(t *testing.T) {
	a := newAdminHarness(t)
	for _, tc := range []struct {
		name   string
		header []string // Authorization values
	}{
		{"missing", nil},
		{"wrong", []string{"Bearer " + strings.Repeat("x", len(testAdminToken))}},
		{"prefix of the token", []string{"Bearer " + testAdminToken[:len(testAdminToken)-1]}},
		{"token with a suffix", []string{"Bearer " + testAdminToken + "x"}},
		{"other scheme", []string{"Basic " + testAdminToken}},
		{"no scheme", []string{testAdminToken}},
		{"empty bearer", []string{"Bearer "}},
		{"twice", []string{"Bearer " + testAdminToken, "Bearer " + testAdminToken}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := a.fake.Requests()
			for _, target := range []string{"/v1/reconcile", "/v1/reconcile?dry_run=false", "/elsewhere"} {
				req, _ := http.NewRequest(http.MethodPost, a.srv.URL+target, nil)
				for _, v := range tc.header {
					req.Header.Add("Authorization", v)
				}
				got := doAdmin(t, req)
				if got.Status != http.StatusUnauthorized || got.Error != "unauthorized" {
					t.Errorf("%s: %d %s, want 401 unauthorized", target, got.Status, got.Raw)
				}
				if h := got.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
					t.Errorf("%s: WWW-Authenticate %q, want Bearer", target, h)
				}
				if strings.Contains(string(got.Raw), testAdminToken[:8]) {
					t.Errorf("the answer echoes the token: %s", got.Raw)
				}
			}
			if n := a.fake.Requests() - before; n != 0 {
				t.Errorf("an unauthenticated call reached Directus %d times: %v", n, a.fake.RequestsBy())
			}
			if u := a.user(idOf("admin-cli")); !u.HasToken {
				t.Errorf("an unauthenticated call revoked the token")
			}
		})
	}
	logs := a.logs.String()
	if strings.Contains(logs, testAdminToken) || strings.Contains(logs, strings.Repeat("x", 16)) {
		t.Errorf("a presented token reached the log:\n%s", logs)
	}
	if !strings.Contains(logs, `"event":"admin"`) || !strings.Contains(logs, `"outcome":"unauthorized"`) {
		t.Errorf("refused admin calls were not logged:\n%s", logs)
	}
}

func TestAdminDryRunAndRun(t *testing.T) {
	a := newAdminHarness(t)
	dry := a.call(http.MethodPost, "/v1/reconcile?dry_run=true", testAdminToken, "")
	if dry.Status != http.StatusOK {
		t.Fatalf("dry run: %d %s", dry.Status, dry.Raw)
	}
	if !dry.Report.DryRun || dry.Report.Actions[ActRevoke] != 1 || len(dry.Report.Changes) != 1 ||
		dry.Report.Changes[0].UserID != idOf("admin-cli") {
		t.Errorf("dry-run report %s, want one planned revocation of %s", dry.Raw, idOf("admin-cli"))
	}
	if w := a.fake.Writes(); w != 0 {
		t.Errorf("the dry run wrote %d times to Directus: %v", w, a.fake.RequestsBy())
	}
	if !a.user(idOf("admin-cli")).HasToken {
		t.Errorf("the dry run revoked the token")
	}
	// The same JSON as `directus-bridge reconcile -json` prints: indented.
	want, _ := json.MarshalIndent(dry.Report, "", "  ")
	if string(bytes.TrimSpace(dry.Raw)) != string(want) {
		t.Errorf("body is not the indented report:\n%s\nwant\n%s", dry.Raw, want)
	}
	if cc := dry.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}

	for _, target := range []string{"/v1/reconcile", "/v1/reconcile?dry_run=false"} {
		run := a.call(http.MethodPost, target, testAdminToken, "")
		if run.Status != http.StatusOK || run.Report.DryRun {
			t.Fatalf("%s: %d %s", target, run.Status, run.Raw)
		}
		if target == "/v1/reconcile" && (run.Report.Actions[ActRevoke] != 1 || run.Report.Changes[0].UserID != idOf("admin-cli")) {
			t.Errorf("run report %s, want the revocation", run.Raw)
		}
	}
	if a.user(idOf("admin-cli")).HasToken {
		t.Errorf("the run did not revoke the token in Directus")
	}
	logs := a.logs.String()
	for _, s := range []string{`"event":"admin"`, `"path":"/v1/reconcile"`, `"outcome":"ok"`, `"remote":"127.0.0.1:`, `"duration"`} {
		if !strings.Contains(logs, s) {
			t.Errorf("the admin log lacks %s:\n%s", s, logs)
		}
	}
}

func TestAdminRefusesOtherMethodsQueriesAndBodies(t *testing.T) {
	a := newAdminHarness(t)
	for _, tc := range []struct {
		method, target, body string
		status               int
	}{
		{http.MethodGet, "/v1/reconcile", "", http.StatusMethodNotAllowed},
		{http.MethodPut, "/v1/reconcile", "", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/v1/reconcile?dry_run=true", "", http.StatusMethodNotAllowed},
		{http.MethodPost, "/v1/other", "", http.StatusNotFound},
		{http.MethodPost, "/v1/reconcile/", "", http.StatusNotFound},
		{http.MethodPost, "/v1/reconcile?dry_run=yes", "", http.StatusBadRequest},
		{http.MethodPost, "/v1/reconcile?dryrun=true", "", http.StatusBadRequest}, // a typo must not run for real
		{http.MethodPost, "/v1/reconcile?dry_run=true&dry_run=false", "", http.StatusBadRequest},
		{http.MethodPost, "/v1/reconcile?dry_run=%zz", "", http.StatusBadRequest},
		{http.MethodPost, "/v1/reconcile", strings.Repeat("a", 2<<10), http.StatusRequestEntityTooLarge},
	} {
		got := a.call(tc.method, tc.target, testAdminToken, tc.body)
		if got.Status != tc.status || got.Descr == "" {
			t.Errorf("%s %s: %d %s, want %d with an error", tc.method, tc.target, got.Status, got.Raw, tc.status)
		}
		if tc.status == http.StatusMethodNotAllowed && got.Header.Get("Allow") != http.MethodPost {
			t.Errorf("%s: Allow %q, want POST", tc.method, got.Header.Get("Allow"))
		}
	}
	if n := a.fake.Requests(); n != 0 {
		t.Errorf("refused calls reached Directus %d times: %v", n, a.fake.RequestsBy())
	}
	// A small body is ignored.
	if got := a.call(http.MethodPost, "/v1/reconcile?dry_run=1", testAdminToken, "{}"); got.Status != http.StatusOK {
		t.Errorf("with a small body: %d %s", got.Status, got.Raw)
	}
}

func TestAdminBeforeRulesLoaded(t *testing.T) {
	h := newHarness(t, "12.4.0")
	ex, err := NewExchanger(h.opts) // no SetMapper: the rules are not in force
	if err != nil {
		t.Fatal(err)
	}
	as, err := NewAdminServer(NewReconciler(ex, ReconcileConfig{}), testAdminToken, h.opts.Logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(as)
	defer srv.Close()
	a := &adminHarness{harness: h, srv: srv}
	got := a.call(http.MethodPost, "/v1/reconcile", testAdminToken, "")
	if got.Status != http.StatusServiceUnavailable || got.Header.Get("Retry-After") == "" || got.Error != "unavailable" {
		t.Errorf("before the rules are in force: %d Retry-After %q %s, want 503 with Retry-After",
			got.Status, got.Header.Get("Retry-After"), got.Raw)
	}
	if n := h.fake.Requests(); n != 0 {
		t.Errorf("reached Directus %d times before the rules were in force", n)
	}
}

func TestAdminNewRefusesAShortToken(t *testing.T) {
	h := newHarness(t, "12.4.0")
	for _, tok := range []string{"", "short", strings.Repeat("a", 31)} {
		if _, err := NewAdminServer(NewReconciler(h.ex, ReconcileConfig{}), tok, nil); err == nil {
			t.Errorf("NewAdminServer accepted a %d-character token", len(tok))
		}
	}
}

func TestAdminDirectusUnavailable(t *testing.T) {
	a := newAdminHarness(t)
	a.fake.SetFault(func(r *http.Request) directustest.Fault {
		return directustest.Fault{Status: http.StatusServiceUnavailable}
	})
	got := a.call(http.MethodPost, "/v1/reconcile", testAdminToken, "")
	if got.Status != http.StatusServiceUnavailable || got.Header.Get("Retry-After") == "" {
		t.Errorf("Directus down: %d Retry-After %q, want 503 with Retry-After", got.Status, got.Header.Get("Retry-After"))
	}
	if got.Report.Error == "" || got.Report.Started.IsZero() {
		t.Errorf("Directus down: body %s, want the partial report with its error", got.Raw)
	}
	if !strings.Contains(a.logs.String(), `"outcome":"unavailable"`) {
		t.Errorf("the failure was not logged:\n%s", a.logs.String())
	}
}

func TestAdminReconcileFailure(t *testing.T) {
	a := newAdminHarness(t)
	// Directus refuses the revocation outright (not an outage).
	a.fake.SetFault(func(r *http.Request) directustest.Fault {
		if r.Method == http.MethodPatch {
			return directustest.Fault{Status: http.StatusForbidden}
		}
		return directustest.Fault{}
	})
	got := a.call(http.MethodPost, "/v1/reconcile", testAdminToken, "")
	if got.Status != http.StatusInternalServerError || got.Report.Error == "" {
		t.Errorf("refused write: %d %s, want 500 with the partial report", got.Status, got.Raw)
	}
}

// One reconcile at a time: an admin call waits for the run in progress
// (scheduled or another call), bounded by its context; a scheduled run
// (TryRun) is skipped while one is in progress.
func TestAdminOneReconcileAtATime(t *testing.T) {
	a := newAdminHarness(t)
	a.rec.sem <- struct{}{} // a run in progress
	if _, ran, _ := a.rec.TryRun(t.Context(), true); ran {
		t.Errorf("TryRun ran while another run was in progress")
	}
	done := make(chan adminAnswer, 1)
	go func() { done <- a.call(http.MethodPost, "/v1/reconcile?dry_run=true", testAdminToken, "") }()
	select {
	case got := <-done:
		t.Fatalf("the call did not wait for the run in progress: %d %s", got.Status, got.Raw)
	case <-time.After(300 * time.Millisecond):
	}
	if n := a.fake.Requests(); n != 0 {
		t.Errorf("the waiting call reached Directus %d times", n)
	}
	<-a.rec.sem // the run in progress ends
	select {
	case got := <-done:
		if got.Status != http.StatusOK || !got.Report.DryRun {
			t.Errorf("after the wait: %d %s", got.Status, got.Raw)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call never ran after the run in progress ended")
	}

	// Bounded by the request's context: the caller gives up, nothing runs.
	a.rec.sem <- struct{}{}
	a.fake.ResetRequests()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if rep, err := a.rec.Run(ctx, false); rep != nil || err == nil {
		t.Errorf("Run with an ended context: %v, %v; want no report and an error", rep, err)
	}
	req, _ := http.NewRequest(http.MethodPost, a.srv.URL+"/v1/reconcile", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	ctx2, cancel2 := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel2()
	if _, err := http.DefaultClient.Do(req.WithContext(ctx2)); err == nil {
		t.Errorf("the call answered while a run was in progress")
	}
	time.Sleep(100 * time.Millisecond) // the handler notices its caller left
	<-a.rec.sem
	time.Sleep(100 * time.Millisecond)
	if n := a.fake.Requests(); n != 0 {
		t.Errorf("a call whose caller gave up while waiting ran anyway: %d Directus requests", n)
	}
	if !a.user(idOf("admin-cli")).HasToken {
		t.Errorf("a call whose caller gave up while waiting revoked the token")
	}
	a.as.Logger = nil // stays usable without a logger
	if got := a.call(http.MethodPost, "/v1/reconcile?dry_run=true", testAdminToken, ""); got.Status != 200 {
		t.Errorf("without a logger: %d", got.Status)
	}
}

// The configuration in force is the one the reloader last set.
func TestAdminUsesTheConfigurationInForce(t *testing.T) {
	a := newAdminHarness(t)
	a.rec.SetConfig(ReconcileConfig{SuspendAfter: Duration(time.Minute)}) // idle for 16 min: suspended
	got := a.call(http.MethodPost, "/v1/reconcile?dry_run=true", testAdminToken, "")
	if got.Status != 200 || got.Report.Actions[ActSuspend] != 1 {
		t.Errorf("with suspend_after 1m: %d %s, want a suspension planned", got.Status, got.Raw)
	}
	if rc := a.rec.Config(); rc.SuspendAfter != Duration(time.Minute) {
		t.Errorf("Config() = %+v", rc)
	}
}

// Requests waiting for a run in progress are bounded: past MaxAdminWaiting
// the next gets 503 at once instead of holding a connection and a goroutine
// for up to AdminRunTimeout.
func TestAdminWaitingIsBounded(t *testing.T) {
	a := newAdminHarness(t)
	a.rec.sem <- struct{}{} // a run in progress
	released := false
	release := func() {
		if !released {
			released = true
			<-a.rec.sem
		}
	}
	t.Cleanup(release)
	done := make(chan adminAnswer, MaxAdminWaiting)
	for range MaxAdminWaiting {
		go func() { done <- a.call("POST", "/v1/reconcile?dry_run=true", testAdminToken, "") }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.as.waiting.Load() < MaxAdminWaiting {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests waiting, want %d", a.as.waiting.Load(), MaxAdminWaiting)
		}
		time.Sleep(time.Millisecond)
	}
	over := a.call("POST", "/v1/reconcile?dry_run=true", testAdminToken, "")
	if over.Status != http.StatusServiceUnavailable || over.Header.Get("Retry-After") == "" {
		t.Fatalf("request over the bound: %d (Retry-After %q), want 503 with Retry-After", over.Status, over.Header.Get("Retry-After"))
	}
	release()
	for range MaxAdminWaiting {
		if r := <-done; r.Status != http.StatusOK {
			t.Fatalf("a waiting request got %d, want 200 once the run ended", r.Status)
		}
	}
}
