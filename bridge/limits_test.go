package bridge

import (
	"strconv"
	"testing"
	"time"
)

func TestRateLimits(t *testing.T) {
	h := newHarness(t, "12.4.0", func(h *harness, o *Options) {
		o.Limits = LimitsConfig{PerIP: RateLimit{Rate: -1}, PerClient: RateLimit{Rate: 1, Burst: 3}}
	})
	subject := h.auth0Token("busy@clients", "items:read")
	for i := range 3 {
		if r := h.exchange(subject); r.Status != 200 {
			t.Fatalf("exchange %d within the burst: %d %v", i, r.Status, r.Body)
		}
	}
	r := h.exchange(subject)
	if r.Status != 429 || r.str("error") != "temporarily_unavailable" {
		t.Fatalf("over the limit: %d %v, want 429", r.Status, r.Body)
	}
	if s, err := strconv.Atoi(r.RetryAfter); err != nil || s < 1 {
		t.Errorf("Retry-After %q, want whole seconds >= 1", r.RetryAfter)
	}
	// Another client is not affected.
	if r := h.exchange(h.auth0Token("calm@clients", "items:read")); r.Status != 200 {
		t.Errorf("other client: %d %v", r.Status, r.Body)
	}
	// The bucket refills with the (test) clock.
	h.clock.Add(2 * time.Second)
	if r := h.exchange(subject); r.Status != 200 {
		t.Errorf("after refill: %d %v", r.Status, r.Body)
	}
}

func TestRateLimitPerIP(t *testing.T) {
	h := newHarness(t, "12.4.0", func(h *harness, o *Options) {
		o.Limits = LimitsConfig{PerIP: RateLimit{Rate: 1, Burst: 2}, PerClient: RateLimit{Rate: -1}}
	})
	codes := []int{}
	for i := range 3 {
		codes = append(codes, h.exchange(h.auth0Token("ip-"+strconv.Itoa(i), "items:read")).Status)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Errorf("statuses %v, want 200 200 429", codes)
	}
	if n := h.fake.Requests(); n != 2 {
		t.Errorf("Directus requests %d, want 2 (the limited request writes nothing)", n)
	}
}
