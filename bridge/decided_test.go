package bridge

import (
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/directus-bridge/directus-bridge/mapping"
)

// The mapping of a cached identity is remembered (Identity.decided) only
// for the rules in force and their blocked set: new rules, or a rule
// blocked since, apply to the very same subject token at once.
func TestDecidedFollowsRules(t *testing.T) {
	// At info level: with debug on, every exchange evaluates the rules
	// again, to log why.
	h := newHarness(t, "12.4.0", func(_ *harness, o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	subject := h.auth0Token("decided", "items:read")
	user := UserID(h.ex.namespace, nil, "decided")
	for range 2 { // the second is the remembered mapping
		if r := h.exchange(subject); r.Status != http.StatusOK {
			t.Fatalf("exchange: %d %v", r.Status, r.Body)
		}
		if got := h.user(user).Role; got != h.reader.ID {
			t.Fatalf("role = %s, want the reader's", got)
		}
	}
	id := h.ex.verifier.cache.get(subject, h.clock.Now())
	if id == nil || id.decided.Load() == nil || id.decided.Load().m != h.ex.Mapper() {
		t.Fatal("the mapping of the cached identity is not remembered")
	}

	// New rules: the same subject token maps to the writer.
	m, _, err := LoadMapper(t.Context(), h.admin, mapping.Rules{{Name: "readers", AnyScopes: []string{"items:read"}, Role: "Writer"}})
	if err != nil {
		t.Fatal(err)
	}
	h.ex.SetMapper(m)
	if r := h.exchange(subject); r.Status != http.StatusOK || r.str("access_token") == "" {
		t.Fatalf("exchange after new rules: %d %v", r.Status, r.Body)
	}
	if got := h.user(user).Role; got != h.writer.ID {
		t.Errorf("role after new rules = %s, want the writer's", got)
	}

	// The rule is blocked in place (its grant gained admin access): the
	// same token is refused.
	blocked := map[int]string{0: "rule 1 (readers): role Writer has admin access"}
	m.blocked.Store(&blocked)
	if r := h.exchange(subject); r.Status != http.StatusBadRequest || r.str("error") != "invalid_scope" {
		t.Errorf("exchange under a blocked rule: %d %v, want 400 invalid_scope", r.Status, r.Body)
	}
}
