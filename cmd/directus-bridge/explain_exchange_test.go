package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
)

// TestExplainAgreesWithExchange: for each token, explain -offline with the
// token's issuer, client, scopes and audience (and no -claim) says ALLOW
// exactly when the bridge's real Exchanger issues a token for it.
func TestExplainAgreesWithExchange(t *testing.T) {
	fake := directustest.NewServer(t, directustest.Options{})
	dc, err := directus.New(fake.URL, fake.AdminToken, directus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.CreateRole(context.Background(), directus.Role{Name: "Reader"}); err != nil {
		t.Fatal(err)
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(jwks) }))
	t.Cleanup(idp.Close)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "k1").WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "bridge.yaml")
	t.Setenv("EXPLAIN_REVIEW_TOKEN", fake.AdminToken)
	y := fmt.Sprintf(`directus: {url: %s, token_env: EXPLAIN_REVIEW_TOKEN, retries: -1}
state: {path: %s, key_file: %s}
issuers:
  - name: good
    issuer: https://good.example/
    jwks_url: %s
    audiences: [api, other]
rules:
  - {name: banned, claims: {sub: "bad-*"}, deny: true}
  - {name: by-aud, claims: {aud: other}, role: Reader}
  - {name: by-iss, claims: {iss: "https://good.example/"}, all_scopes: [issread], role: Reader}
  - {name: readers, any_scopes: [read], role: Reader}
`, fake.URL, filepath.Join(dir, "state.db"), filepath.Join(dir, "state.key"), idp.URL)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadValid(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ex, store, err := newExchanger(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, tc := range []struct {
		sub, aud, scope string
	}{
		{"svc-a", "api", "read"},
		{"bad-1", "api", "read"},    // the deny rule names sub: the client id
		{"svc-b", "other", ""},      // a rule on the aud claim
		{"svc-c", "api", "issread"}, // a rule on the iss claim
		{"svc-d", "api", ""},
	} {
		claims := map[string]any{"iss": "https://good.example/", "sub": tc.sub, "aud": tc.aud,
			"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
		if tc.scope != "" {
			claims["scope"] = tc.scope
		}
		payload, _ := json.Marshal(claims)
		jws, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := jws.CompactSerialize()
		_, xerr := ex.Exchange(ctx, bridge.Request{SubjectToken: tok})
		code, out, errOut := runExplain("explain", "-offline", "-config", path, "-issuer", "good",
			"-client", tc.sub, "-audience", tc.aud, "-scopes", tc.scope)
		if code != exitAllow && code != exitDeny {
			t.Fatalf("%+v: explain exit %d\n%s%s", tc, code, out, errOut)
		}
		if allowed := xerr == nil; allowed != (code == exitAllow) {
			t.Errorf("%+v: the exchange allowed=%v (%v), explain exit %d:\n%s", tc, allowed, xerr, code, out)
		}
	}
}
