package bridge

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/directus-bridge/directus-bridge/mapping"
)

// withNestedIssuers adds issuers that keep what matters in nested claims:
// a Kubernetes service account issuer (client and namespace nested under
// kubernetes.io, no scopes) and a GitHub Actions issuer (numeric ids).
func withNestedIssuers(k8s, gh *testIssuer) harnessOpt {
	return func(h *harness, o *Options) {
		o.Issuers = append(o.Issuers,
			IssuerConfig{Name: "k8s", Issuer: k8s.URL, Audiences: []string{testAudience}, UserIDs: UserIDsIssuer,
				ClientClaim:    "/kubernetes.io/serviceaccount/name",
				RequiredClaims: map[string]any{"/kubernetes.io/namespace": "prod"},
				ScopeClaims:    []string{"/kubernetes.io/scopes"}},
			IssuerConfig{Name: "github", Issuer: gh.URL, Audiences: []string{testAudience}, UserIDs: UserIDsIssuer,
				ClientClaim: "repository_id", RequiredClaims: map[string]any{"/repository_owner_id": 42}},
		)
	}
}

func k8sClaims(iss string, now time.Time, ns, name string) map[string]any {
	return map[string]any{
		"iss": iss, "sub": "system:serviceaccount:" + ns + ":" + name, "aud": []string{testAudience},
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      ns,
			"serviceaccount": map[string]any{"name": name, "uid": "8f2c"},
			"scopes":         "items:read",
		},
	}
}

func githubClaims(iss string, now time.Time, repoID int64, owner int, ref string) map[string]any {
	return map[string]any{
		"iss": iss, "sub": "repo:octo/app:ref:" + ref, "aud": testAudience,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"repository_id": repoID, "repository_owner_id": owner, "ref": ref,
		"job_workflow_ref": "octo/app/.github/workflows/release.yml@" + ref, "environment": "production",
	}
}

func TestVerifyNestedClaims(t *testing.T) {
	k8s, gh := newTestIssuer(t, jose.RS256, false), newTestIssuer(t, jose.RS256, false)
	h := newHarness(t, "12.4.0", withNestedIssuers(k8s, gh))
	now := h.clock.Now()
	ctx := t.Context()

	id, err := h.ex.verifier.Verify(ctx, k8s.sign(t, k8sClaims(k8s.URL, now, "prod", "api")))
	if err != nil {
		t.Fatal(err)
	}
	if id.Client != "api" || !cmp.Equal(id.Scopes, []string{"items:read"}) {
		t.Errorf("k8s: client %q scopes %q, want api and items:read", id.Client, id.Scopes)
	}
	if v, _ := mapping.MustPath("/kubernetes.io/serviceaccount/uid").Lookup(id.Raw); v != "8f2c" {
		t.Errorf("raw claims lack the nested uid: %v", id.Raw)
	}
	if _, err := h.ex.verifier.Verify(ctx, k8s.sign(t, k8sClaims(k8s.URL, now, "dev", "api"))); err == nil ||
		!strings.Contains(err.Error(), "required claim /kubernetes.io/namespace is missing or has another value") {
		t.Errorf("k8s in dev: %v, want the required namespace refused", err)
	}
	noName := k8sClaims(k8s.URL, now, "prod", "api")
	delete(noName["kubernetes.io"].(map[string]any), "serviceaccount")
	if _, err := h.ex.verifier.Verify(ctx, k8s.sign(t, noName)); err == nil ||
		!strings.Contains(err.Error(), "client claim /kubernetes.io/serviceaccount/name is missing") {
		t.Errorf("k8s without a name: %v", err)
	}

	id, err = h.ex.verifier.Verify(ctx, gh.sign(t, githubClaims(gh.URL, now, 123456789012, 42, "refs/tags/v1")))
	if err != nil {
		t.Fatal(err)
	}
	if id.Client != "123456789012" {
		t.Errorf("github: client %q, want the repository id without exponent", id.Client)
	}
	if _, err := h.ex.verifier.Verify(ctx, gh.sign(t, githubClaims(gh.URL, now, 1, 43, "refs/tags/v1"))); err == nil {
		t.Error("github: another owner accepted")
	}
}

// TestExchangeNestedClaimsAndCondition: rules with claim paths and a CEL
// condition decide the exchange; the record keeps the claims they read,
// and the reconciler decides from them as the exchange did.
func TestExchangeNestedClaimsAndCondition(t *testing.T) {
	k8s, gh := newTestIssuer(t, jose.RS256, false), newTestIssuer(t, jose.RS256, false)
	h := newHarness(t, "12.4.0", withNestedIssuers(k8s, gh))
	rules := mapping.Rules{
		{Name: "k8s-api", Issuer: "k8s", Claims: map[string]string{"/kubernetes.io/serviceaccount/name": "api*"}, Role: "Reader"},
		{Name: "releases", Issuer: "github", Claims: map[string]string{"environment": "production"},
			Condition: `claims.ref.startsWith("refs/tags/") && claims.repository_id == 123456789012`, Role: "Writer"},
	}
	h.setRules(rules)
	now := h.clock.Now()
	if r := h.exchange(k8s.sign(t, k8sClaims(k8s.URL, now, "prod", "api-1"))); r.Status != 200 {
		t.Fatalf("k8s exchange: %d %v", r.Status, r.Body)
	}
	if r := h.exchange(gh.sign(t, githubClaims(gh.URL, now, 123456789012, 42, "refs/heads/main"))); r.Status != 400 ||
		!strings.Contains(r.str("error_description"), "no mapping rule grants access") {
		t.Fatalf("github branch exchange: %d %v, want refused", r.Status, r.Body)
	}
	if r := h.exchange(gh.sign(t, githubClaims(gh.URL, now, 123456789012, 42, "refs/tags/v1"))); r.Status != 200 {
		t.Fatalf("github tag exchange: %d %v", r.Status, r.Body)
	}
	var gotGH *Record
	for _, rec := range h.store.All() {
		if rec.Issuer == "github" {
			gotGH = &rec
		}
	}
	if gotGH == nil {
		t.Fatal("no record of the github client")
	}
	want := map[string]json.RawMessage{"environment": json.RawMessage(`"production"`),
		"ref": json.RawMessage(`"refs/tags/v1"`), "repository_id": json.RawMessage(`123456789012`)}
	if diff := cmp.Diff(want, gotGH.RawClaims); diff != "" {
		t.Errorf("record keeps (-want +got):\n%s", diff)
	}
	// The reconciler decides from the record as the exchange did.
	if rep := h.reconcile(ReconcileConfig{}, false); len(rep.Changes) != 0 {
		t.Errorf("reconcile under the same rules: %v", rep.Changes)
	}
	// A condition that no longer holds for the recorded claims unmaps.
	rules[1].Condition = `claims.ref.startsWith("refs/tags/v2")`
	h.setRules(rules)
	rep := h.reconcile(ReconcileConfig{}, false)
	if rep.Actions[ActUnmapped] != 1 {
		t.Errorf("actions %v, want the github client unmapped", rep.Actions)
	}
}

// TestRecordClaims: a record keeps the top-level claims the rules read,
// every claim when a condition may read any, none when no rule reads one.
func TestRecordClaims(t *testing.T) {
	id := &Identity{signed: map[string]json.RawMessage{
		"sub": json.RawMessage(`"a"`), "realm_access": json.RawMessage(`{"roles":["x"]}`), "azp": json.RawMessage(`"c"`),
	}}
	for _, tc := range []struct {
		rules mapping.Rules
		want  []string
	}{
		{mapping.Rules{{Role: "r"}}, nil},
		{mapping.Rules{{Claims: map[string]string{"/realm_access/roles": "x"}, Role: "r"}}, []string{"realm_access"}},
		{mapping.Rules{{Condition: `claims.azp == "c" && has(claims.missing)`, Role: "r"}}, []string{"azp"}},
		{mapping.Rules{{Condition: `claims.exists(k, k == "sub")`, Role: "r"}}, []string{"azp", "realm_access", "sub"}},
	} {
		var got []string
		for k := range recordClaims(id, tc.rules) {
			got = append(got, k)
		}
		if diff := cmp.Diff(tc.want, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
			t.Errorf("%+v (-want +got):\n%s", tc.rules, diff)
		}
	}
}
