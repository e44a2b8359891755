package bridge

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// testIssuer is a minimal OIDC issuer for unit tests: discovery, a JWKS with
// one key generated per test, and a signer. The e2e suite uses a real one.
type testIssuer struct {
	URL     string // the issuer string
	alg     jose.SignatureAlgorithm
	fetches atomic.Int64 // JWKS fetches

	mu  sync.Mutex
	key crypto.Signer
	kid string
}

// rotate replaces the issuer's key, as an IdP's key rotation does.
func (ti *testIssuer) rotate(key crypto.Signer, kid string) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.key, ti.kid = key, kid
}

func (ti *testIssuer) current() (crypto.Signer, string) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return ti.key, ti.kid
}

// generateKey makes a fresh signing key for alg (RS256/PS256, ES256, EdDSA).
func generateKey(tb testing.TB, alg jose.SignatureAlgorithm) crypto.Signer {
	tb.Helper()
	var key crypto.Signer
	var err error
	switch alg {
	case jose.RS256, jose.PS256:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.EdDSA:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		tb.Fatalf("unsupported alg %s", alg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

func newTestIssuer(t *testing.T, alg jose.SignatureAlgorithm, trailingSlash bool) *testIssuer {
	t.Helper()
	key := generateKey(t, alg)
	ti := &testIssuer{alg: alg, key: key, kid: "k-" + string(alg)}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	ti.URL = srv.URL + "/iss"
	if trailingSlash {
		ti.URL += "/"
	}
	base := srv.URL + "/iss"
	mux.HandleFunc("/iss/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": ti.URL, "jwks_uri": base + "/jwks"})
	})
	mux.HandleFunc("/iss//.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": ti.URL, "jwks_uri": base + "/jwks"})
	})
	mux.HandleFunc("/iss/jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.fetches.Add(1)
		k, kid := ti.current()
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: k.Public(), KeyID: kid, Algorithm: string(alg), Use: "sig"},
		}})
	})
	return ti
}

// sign returns a compact JWT with the given claims, signed by the issuer's key.
func (ti *testIssuer) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	k, kid := ti.current()
	return signWith(t, ti.alg, k, kid, "at+jwt", claims)
}

func signWith(t *testing.T, alg jose.SignatureAlgorithm, key any, kid, typ string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ))
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// claims returns a valid client-credentials claim set for client at now.
func (ti *testIssuer) claims(client, aud string, now time.Time, scope string) map[string]any {
	return map[string]any{
		"iss": ti.URL, "sub": client, "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"scope": scope, "gty": "client-credentials",
	}
}

func jsonB64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
