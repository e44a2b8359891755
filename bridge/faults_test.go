package bridge

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
)

// withClient makes the exchanger talk to the fake through a client with
// these options (timeouts and retries), instead of the harness's admin one.
func withClient(o directus.Options) harnessOpt {
	return func(h *harness, opts *Options) {
		c, err := directus.New(h.fake.URL, h.fake.AdminToken, o)
		if err != nil {
			h.t.Fatal(err)
		}
		opts.Directus = c
	}
}

func TestDirectusFaultsGive503AndWriteNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault directustest.Fault
	}{
		{"500", directustest.Fault{Status: 500}},
		{"502", directustest.Fault{Status: 502}},
		{"429", directustest.Fault{Status: 429, RetryAfter: "1"}},
		{"malformed JSON", directustest.Fault{Status: 200, Body: `{"data": [not json`}},
		{"HTML error page", directustest.Fault{Status: 502, Body: `<html>bad gateway</html>`}},
		{"slow", directustest.Fault{Delay: 2 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "12.4.0", withClient(directus.Options{Timeout: 300 * time.Millisecond, Retries: 2,
				RetryWait: 10 * time.Millisecond, RetryMaxWait: 50 * time.Millisecond}))
			h.fake.SetFault(func(r *http.Request) directustest.Fault { return tc.fault })
			resp := h.exchange(h.auth0Token("faulty", "items:read"))
			if resp.Status != 503 || resp.str("error") != "temporarily_unavailable" {
				t.Fatalf("got %d %v, want 503 temporarily_unavailable", resp.Status, resp.Body)
			}
			if s, err := strconv.Atoi(resp.RetryAfter); err != nil || s < 1 {
				t.Errorf("Retry-After %q, want whole seconds", resp.RetryAfter)
			}
			if n := h.fake.Requests(); n < 1 || n > 3 {
				t.Errorf("Directus attempts %d, want 1 to 3 (bounded retries)", n)
			}
			h.fake.SetFault(nil)
			if _, err := h.admin.User(context.Background(), idOf("faulty")); !errors.Is(err, directus.ErrNotFound) {
				t.Errorf("the failed exchange left a user: %v", err)
			}
			// The bridge recovers by itself.
			resp = h.exchange(h.auth0Token("faulty", "items:read"))
			if resp.Status != 200 || !h.tokenWorks(resp.str("access_token")) {
				t.Errorf("after the fault: %d %v", resp.Status, resp.Body)
			}
		})
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	h := newHarness(t, "12.4.0", withClient(directus.Options{Retries: 2, RetryMaxWait: 2 * time.Second}))
	var calls atomic.Int32
	h.fake.SetFault(func(r *http.Request) directustest.Fault {
		if calls.Add(1) == 1 {
			return directustest.Fault{Status: 429, RetryAfter: "1"}
		}
		return directustest.Fault{}
	})
	resp := h.exchange(h.auth0Token("patient", "items:read"))
	if resp.Status != 200 {
		t.Fatalf("got %d %v, want 200 after one retry", resp.Status, resp.Body)
	}
	times := h.fake.RequestTimes()
	if len(times) != 2 {
		t.Fatalf("Directus requests %d, want 2 (429, then the retry)", len(times))
	}
	if gap := times[1].Sub(times[0]); gap < 900*time.Millisecond {
		t.Errorf("retried after %v, want the 1s Retry-After honoured", gap)
	}
}

func TestLostAnswerLeavesNoUnknownToken(t *testing.T) {
	h := newHarness(t, "12.4.0", withClient(directus.Options{Timeout: 200 * time.Millisecond, Retries: -1}))
	h.fake.SetFault(func(r *http.Request) directustest.Fault {
		return directustest.Fault{LoseAnswer: true, Delay: time.Second}
	})
	resp := h.exchange(h.auth0Token("lost", "items:read"))
	if resp.Status != 503 {
		t.Fatalf("got %d %v, want 503", resp.Status, resp.Body)
	}
	h.fake.SetFault(nil)
	// Directus did create the user with the token; the bridge recorded it
	// ahead, so it knows the token and will revoke it.
	if u := h.user(idOf("lost")); !u.HasToken {
		t.Fatalf("the lost create did not write (test setup)")
	}
	rec, ok := h.store.Get(idOf("lost"))
	if !ok || !rec.Unsure || len(rec.Maybe) != 1 || rec.Token != "" {
		t.Fatalf("no unconfirmed record for the lost write: %+v", rec)
	}
	h.clock.Add(16 * time.Minute)
	if n, err := h.ex.RevokeExpired(context.Background()); err != nil || n != 1 {
		t.Fatalf("RevokeExpired = %d, %v; want the pending token revoked", n, err)
	}
	if h.user(idOf("lost")).HasToken || h.tokenWorks(rec.Maybe[0].Token) {
		t.Errorf("the token of the lost write is still valid")
	}
	// The client comes back: adopted (conflict, read, patch) with a new token.
	resp = h.exchange(h.auth0Token("lost", "items:read"))
	if resp.Status != 200 || !h.tokenWorks(resp.str("access_token")) {
		t.Errorf("returning client: %d %v", resp.Status, resp.Body)
	}
}

func TestPendingTokenIsNeverHandedOut(t *testing.T) {
	h := newHarness(t, "12.4.0", withClient(directus.Options{Timeout: 200 * time.Millisecond, Retries: -1}))
	h.fake.SetFault(func(r *http.Request) directustest.Fault {
		return directustest.Fault{LoseAnswer: true, Delay: time.Second}
	})
	h.exchange(h.auth0Token("pending", "items:read"))
	h.fake.SetFault(nil)
	rec, _ := h.store.Get(idOf("pending"))
	if rec.live(h.clock.Now()) {
		t.Fatalf("an unconfirmed record is live: %+v", rec)
	}
	resp := h.exchange(h.auth0Token("pending", "items:read"))
	if resp.Status != 200 || !h.tokenWorks(resp.str("access_token")) {
		t.Errorf("a pending token was handed out: %d", resp.Status)
	}
}
