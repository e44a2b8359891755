package bridge

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// syncBuffer is a log sink that may be read while a timer writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines decodes the JSON log lines, failing on any that is not JSON.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// auditHarness is a harness whose server logs at info to logs and whose
// Server (for Close) is s.
type auditHarness struct {
	*harness
	s    *Server
	logs *syncBuffer
}

func newAuditHarness(t *testing.T, every time.Duration, maxClients int) *auditHarness {
	t.Helper()
	logs := &syncBuffer{}
	h := newHarness(t, "12.4.0", func(_ *harness, o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	s := &Server{Exchanger: h.ex, Logger: h.opts.Logger, ReuseSummaryInterval: every, ReuseSummaryClients: maxClients}
	h.srv.Close()
	h.srv = httptest.NewServer(s.Handler())
	t.Cleanup(h.srv.Close)
	t.Cleanup(s.Close) // no timer outlives the test
	return &auditHarness{harness: h, s: s, logs: logs}
}

// exchangeOK exchanges subject and returns the access token, failing unless
// the answer is 200.
func (h *auditHarness) exchangeOK(subject string) string {
	h.t.Helper()
	r := h.exchange(subject)
	if r.Status != http.StatusOK {
		h.t.Fatalf("exchange: status %d %v", r.Status, r.Body)
	}
	return r.str("access_token")
}

// byEvent returns the lines of one event, and of one outcome unless "".
func byEvent(lines []map[string]any, event, outcome string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["event"] == event && (outcome == "" || l["outcome"] == outcome) {
			out = append(out, l)
		}
	}
	return out
}

func TestReuseSummary(t *testing.T) {
	h := newAuditHarness(t, time.Hour, 0)
	subject1 := h.auth0Token("sum-1", "items:read")
	subject2 := h.auth0Token("sum-2", "items:read")
	tok1 := h.exchangeOK(subject1) // issued
	for range 3 {
		if got := h.exchangeOK(subject1); got != tok1 {
			t.Fatalf("reuse returned another token")
		}
	}
	tok2 := h.exchangeOK(subject2)
	h.exchangeOK(subject2)
	if r := h.exchange("garbage"); r.Status != http.StatusBadRequest {
		t.Fatalf("garbage: status %d", r.Status)
	}
	if r := h.exchange(h.auth0Token("sum-3", "unmapped")); r.Status != http.StatusBadRequest {
		t.Fatalf("unmapped: status %d", r.Status)
	}

	// Before the summaries are due: issues and refusals have their own
	// lines at once, reuses none.
	lines := h.logs.lines(t)
	if n := len(byEvent(lines, "exchange", "issued")); n != 2 {
		t.Errorf("issued lines = %d, want 2", n)
	}
	if n := len(byEvent(lines, "exchange", "refused")); n != 2 {
		t.Errorf("refused lines = %d, want 2 (garbage, unmapped)", n)
	}
	if got := byEvent(lines, "exchange", "reused"); len(got) != 0 {
		t.Errorf("a reuse has its own line: %v", got)
	}
	if got := byEvent(lines, "reuse_summary", ""); len(got) != 0 {
		t.Errorf("summary written before it was due: %v", got)
	}
	for _, l := range byEvent(lines, "exchange", "") {
		if l["request_id"] == "" || l["request_id"] == nil || l["remote"] != "127.0.0.1" {
			t.Errorf("exchange line without request_id or remote: %v", l)
		}
	}

	// Shutdown writes them.
	h.s.Close()
	lines = h.logs.lines(t)
	sums := byEvent(lines, "reuse_summary", "reused")
	if len(sums) != 2 {
		t.Fatalf("summaries = %d, want 2: %v", len(sums), sums)
	}
	byClient := map[string]map[string]any{}
	for _, l := range sums {
		byClient[l["client"].(string)] = l
	}
	for _, tc := range []struct {
		client, token, subject string
		reuses                 float64
	}{
		{"sum-1", tok1, subject1, 3},
		{"sum-2", tok2, subject2, 1},
	} {
		l := byClient[tc.client]
		if l == nil {
			t.Errorf("no summary for %s", tc.client)
			continue
		}
		want := map[string]any{
			"msg": "exchanges reused", "level": "INFO", "issuer": "auth0", "user_id": UserID(h.ex.namespace, nil, tc.client),
			"token_fp": Fingerprint(tc.token), "reuses": tc.reuses, "flush": "shutdown", "role": h.reader.ID,
			"rule": "rule 2 (readers)", "scopes": "items:read", "remotes": []any{"127.0.0.1"}, "subject_fps": []any{Fingerprint(tc.subject)},
			"first": h.clock.Now().UTC().Format(time.RFC3339), "last": h.clock.Now().UTC().Format(time.RFC3339),
		}
		got := map[string]any{}
		for k := range want {
			got[k] = l[k]
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("summary of %s (-want +got):\n%s", tc.client, diff)
		}
	}

	// After Close a reuse is logged on its own line: nothing is lost.
	h.exchangeOK(subject1)
	if n := len(byEvent(h.logs.lines(t), "exchange", "reused")); n != 1 {
		t.Errorf("reuse after Close: %d lines, want 1", n)
	}
	logs := h.logs.String()
	for _, secret := range []string{tok1, tok2, subject1, subject2, "dbr_", "eyJ"} {
		if strings.Contains(logs, secret) {
			t.Errorf("a token reached the log (%.8s...)", secret)
		}
	}
}

func TestReuseSummaryInterval(t *testing.T) {
	h := newAuditHarness(t, 20*time.Millisecond, 0)
	subject := h.auth0Token("sum-interval", "items:read")
	h.exchangeOK(subject)
	h.exchangeOK(subject)
	h.exchangeOK(subject)
	deadline := time.Now().Add(10 * time.Second)
	for len(byEvent(h.logs.lines(t), "reuse_summary", "")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no summary 10s after an interval of 20ms")
		}
		time.Sleep(5 * time.Millisecond)
	}
	sums := byEvent(h.logs.lines(t), "reuse_summary", "")
	if len(sums) != 1 || sums[0]["reuses"] != 2.0 || sums[0]["flush"] != "interval" {
		t.Fatalf("summaries after the interval: %v, want one of 2 reuses", sums)
	}
	// The next reuse opens a new summary, written at its own interval.
	h.exchangeOK(subject)
	for len(byEvent(h.logs.lines(t), "reuse_summary", "")) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no second summary")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReuseSummaryBeforeRotation(t *testing.T) {
	h := newAuditHarness(t, time.Hour, 0)
	subject := h.auth0Token("sum-rotate", "items:read")
	tok := h.exchangeOK(subject)
	h.exchangeOK(subject)
	h.exchangeOK(subject)
	// Into the rotation window (TTL 15m, rotate_before 5m) with a fresh
	// subject token: the next exchange rotates.
	h.clock.Add(11 * time.Minute)
	if got := h.exchangeOK(h.auth0Token("sum-rotate", "items:read")); got == tok {
		t.Fatal("not rotated")
	}
	var events []string
	for _, l := range h.logs.lines(t) {
		if l["event"] == "reuse_summary" || l["event"] == "exchange" {
			events = append(events, l["event"].(string)+":"+l["outcome"].(string))
		}
		if l["event"] == "reuse_summary" && (l["flush"] != "superseded" || l["reuses"] != 2.0 || l["token_fp"] != Fingerprint(tok)) {
			t.Errorf("summary before the rotation: %v", l)
		}
	}
	want := []string{"exchange:issued", "reuse_summary:reused", "exchange:rotated"}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("order of the lines (-want +got):\n%s", diff)
	}
}

func TestReuseLogBounded(t *testing.T) {
	logs := &syncBuffer{}
	l := newReuseLog(slog.New(slog.NewJSONHandler(logs, nil)), time.Hour, 2)
	t.Cleanup(l.close)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	res := func(user, token string) *Result {
		return &Result{UserID: user, Token: token, Issuer: "auth0", Client: "c-" + user, Outcome: Reused, SubjectFP: "sfp-" + user}
	}
	for i, remote := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.5"} {
		if counted, _ := l.add(res("u1", "t1"), remote, now.Add(time.Duration(i)*time.Second)); !counted {
			t.Fatal("add refused before close")
		}
	}
	l.add(res("u2", "t2"), "192.0.2.9", now)
	if got := logs.String(); got != "" {
		t.Fatalf("written before due: %s", got)
	}
	// A third user: the log is full, both open summaries are written.
	l.add(res("u3", "t3"), "192.0.2.9", now)
	sums := logs.lines(t)
	if len(sums) != 2 {
		t.Fatalf("after the third user: %d lines, want 2", len(sums))
	}
	for _, s := range sums {
		if s["flush"] != "full" {
			t.Errorf("flush = %v, want full", s["flush"])
		}
		if s["user_id"] == "u1" {
			want := map[string]any{"reuses": 6.0, "remotes": []any{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"},
				"more_remotes": true, "first": "2026-01-02T03:04:05Z", "last": "2026-01-02T03:04:10Z", "token_fp": Fingerprint("t1")}
			got := map[string]any{}
			for k := range want {
				got[k] = s[k]
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("u1's summary (-want +got):\n%s", diff)
			}
		}
	}
	if n := len(l.open); n != 1 {
		t.Errorf("open summaries = %d, want 1 (u3)", n)
	}

	// The token of u3 changes between two reuses: its summary is written.
	l.add(res("u3", "t3-new"), "192.0.2.9", now)
	last := logs.lines(t)[2]
	if last["user_id"] != "u3" || last["flush"] != "token_changed" || last["token_fp"] != Fingerprint("t3") || last["reuses"] != 1.0 {
		t.Errorf("token change: %v", last)
	}
	if strings.Contains(logs.String(), `"t3`) || strings.Contains(logs.String(), `"t1"`) {
		t.Error("a token reached the log")
	}
}

func TestWriteTokenMatchesEncodingJSON(t *testing.T) {
	for _, tc := range []struct {
		token  string
		scopes []string
	}{
		{"dbr_abcDEF-_0123456789", []string{"items:read"}},
		{"dbr_x", nil},
		{"dbr_x", []string{"a<b", "c>d&e", `q"uote`, `back\slash`}},
		{"dbr_x", []string{"tab\there", "nl\n", "\x00\x1f\x7f", "é", "\u2028\u2029", "\xff\xfe"}},
	} {
		rec := httptest.NewRecorder()
		writeToken(rec, tc.token, 900, tc.scopes)
		var want bytes.Buffer
		_ = json.NewEncoder(&want).Encode(map[string]any{
			"access_token": tc.token, "issued_token_type": TokenTypeAccessToken, "token_type": "Bearer",
			"expires_in": int64(900), "scope": strings.Join(tc.scopes, " "),
		})
		if diff := cmp.Diff(want.String(), rec.Body.String()); diff != "" {
			t.Errorf("scopes %q (-encoding/json +writeToken):\n%s", tc.scopes, diff)
		}
		for k, v := range map[string]string{"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store", "Pragma": "no-cache"} {
			if got := rec.Header().Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		if rec.Code != http.StatusOK {
			t.Errorf("status %d", rec.Code)
		}
	}
}

// A graceful shutdown of the http.Server writes the open summaries, with no
// call to Close: Handler registered it.
func TestReuseSummaryOnShutdown(t *testing.T) {
	h := newAuditHarness(t, time.Hour, 0)
	subject := h.auth0Token("sum-shutdown", "items:read")
	tok := h.exchangeOK(subject)
	h.exchangeOK(subject)
	h.exchangeOK(subject)
	http.DefaultClient.CloseIdleConnections()
	if err := h.srv.Config.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		sums := byEvent(h.logs.lines(t), "reuse_summary", "")
		if len(sums) == 1 {
			if sums[0]["flush"] != "shutdown" || sums[0]["reuses"] != 2.0 || sums[0]["token_fp"] != Fingerprint(tok) {
				t.Errorf("summary at shutdown: %v", sums[0])
			}
			break
		}
		if len(sums) > 1 || time.Now().After(deadline) {
			t.Fatalf("summaries after Shutdown: %v, want one", sums)
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.s.Close() // returns at once: nothing left to write
	if n := len(byEvent(h.logs.lines(t), "reuse_summary", "")); n != 1 {
		t.Errorf("summaries after Close: %d, want still 1", n)
	}
}
