package bridge

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestUnknownKidCannotCauseARefreshStorm(t *testing.T) {
	h := newHarness(t, "12.4.0")
	// Load the keys once with a good token.
	if r := h.exchange(h.auth0Token("warm", "items:read")); r.Status != 200 {
		t.Fatalf("warm-up: %d %v", r.Status, r.Body)
	}
	before := h.auth0.fetches.Load()
	attacker, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := h.auth0.claims("storm", testAudience, h.clock.Now(), "items:read")
			c["jti"] = i // a distinct token each time, past the verified cache
			tok := signWith(t, jose.RS256, attacker, "made-up-kid", "at+jwt", c)
			if _, err := h.ex.Exchange(t.Context(), Request{SubjectToken: tok}); err == nil {
				t.Errorf("token with an unknown key accepted")
			}
		}()
	}
	wg.Wait()
	if n := h.auth0.fetches.Load() - before; n > 1 {
		t.Errorf("1000 unknown-kid tokens caused %d JWKS fetches, want at most 1 per cooldown", n)
	}
	if n := h.fake.Requests(); n != 1 {
		t.Errorf("Directus requests %d, want 1 (the warm-up)", n)
	}
}

func TestCachedKeysSurviveAnIdPOutage(t *testing.T) {
	ks := &keySet{client: http.DefaultClient, now: time.Now, cooldown: time.Hour}
	ti := newTestIssuer(t, jose.ES256, false)
	ks.url = ti.URL + "/jwks"
	good := ti.sign(t, ti.claims("c", testAudience, time.Now(), "s"))
	if _, err := ks.VerifySignature(t.Context(), good); err != nil {
		t.Fatalf("first verification: %v", err)
	}
	ks.url = "http://127.0.0.1:1/unreachable" // the IdP goes down
	if _, err := ks.VerifySignature(t.Context(), good); err != nil {
		t.Errorf("cached key stopped working while the IdP is down: %v", err)
	}
	other := newTestIssuer(t, jose.ES256, false)
	unknown := signWith(t, jose.ES256, other.key, "another-kid", "at+jwt", ti.claims("c", testAudience, time.Now(), "s"))
	if _, err := ks.VerifySignature(t.Context(), unknown); err == nil {
		t.Errorf("unknown key accepted while the IdP is down (must fail closed)")
	}
}

func TestKeyRotationIsPickedUpAfterTheCooldown(t *testing.T) {
	clk := &clock{t: time.Now()}
	ti := newTestIssuer(t, jose.RS256, false)
	ks := &keySet{url: ti.URL + "/jwks", client: http.DefaultClient, now: clk.Now, cooldown: keySetCooldown}
	if _, err := ks.VerifySignature(t.Context(), ti.sign(t, ti.claims("c", testAudience, time.Now(), "s"))); err != nil {
		t.Fatal(err)
	}
	// The IdP rotates to a new key; tokens signed with it carry a new kid.
	newKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ti.rotate(newKey, "rotated")
	rotated := ti.sign(t, ti.claims("c", testAudience, time.Now(), "s"))
	if _, err := ks.VerifySignature(t.Context(), rotated); err == nil {
		t.Fatalf("new kid verified within the cooldown without a fetch")
	}
	clk.Add(keySetCooldown + time.Second)
	if _, err := ks.VerifySignature(t.Context(), rotated); err != nil {
		t.Errorf("rotated key not picked up after the cooldown: %v", err)
	}
	if n := ti.fetches.Load(); n != 2 {
		t.Errorf("JWKS fetches %d, want 2", n)
	}
}

func TestVerifiedCacheStaysBounded(t *testing.T) {
	c := newVerifiedCache(100)
	now := time.Now()
	for i := range 1000 {
		c.put(fmt.Sprint("token-", i), &Identity{Expiry: now.Add(time.Hour)}, now)
		if n := len(c.entries); n > 100 {
			t.Fatalf("cache holds %d entries, bound 100", n)
		}
	}
	last := "token-999"
	if c.get("token-1000", now) != nil {
		t.Errorf("a token never put was found")
	}
	if c.get(last, now) == nil {
		t.Errorf("the newest entry was evicted")
	}
	if c.get(last, now.Add(2*time.Hour)) != nil {
		t.Errorf("an entry outlived its token")
	}
}

// The key set reads the compact serialization only (RFC 7515 §7.1), with
// the issuer's algorithms: a JWS in the JSON serialization of a key the
// JWKS holds is refused (the deprecated jose.ParseSigned accepted it).
func TestKeySetReadsCompactJWSOnly(t *testing.T) {
	ti := newTestIssuer(t, jose.ES256, false)
	ks := &keySet{url: ti.URL + "/jwks", client: http.DefaultClient, now: time.Now, cooldown: time.Hour}
	compact := ti.sign(t, ti.claims("c", testAudience, time.Now(), "s"))
	if _, err := ks.VerifySignature(t.Context(), compact); err != nil {
		t.Fatalf("compact JWS: %v", err)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: ti.key, KeyID: ti.kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign([]byte(`{"iss":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	full := jws.FullSerialize() // flattened, for one signature
	for name, raw := range map[string]string{"JSON": full, "JSON after white space": " \n" + full} {
		if p, err := ks.VerifySignature(t.Context(), raw); err == nil {
			t.Errorf("%s serialization accepted: %s", name, p)
		}
	}
	if _, err := ks.verify(t.Context(), compact, []jose.SignatureAlgorithm{jose.RS256}); err == nil {
		t.Errorf("ES256 token accepted with only RS256 allowed")
	}
	if _, err := ks.verify(t.Context(), compact, []jose.SignatureAlgorithm{jose.HS256, "none"}); err == nil {
		t.Errorf("accepted with only HS256 and none allowed")
	}
}
