package bridge

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"hash"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Hostile input. Every token and request in this file is one an
// unauthenticated caller can send. Each must be refused with the status and
// RFC 6749 §5.2 / RFC 8693 §2.2.2 error docs/exchange.md promises, and must write
// nothing: the tests check the fake Directus and the state store, not only
// the response.
//
// Tokens are built by hand (forgeCompact) rather than with go-jose's signer,
// so that what reaches the verifier is exactly the bytes an attacker chose:
// repeated or case-variant JSON members, odd types, bad encodings.

// forgeSigner signs a JWS signing input (RFC 7515 §5.1).
type forgeSigner func(t *testing.T, input []byte) []byte

// forgeCompact returns the compact JWS of a literal header and payload; a
// nil sign leaves the signature empty.
func forgeCompact(t *testing.T, header, payload string, sign forgeSigner) string {
	t.Helper()
	in := forgeB64(header) + "." + forgeB64(payload)
	var sig []byte
	if sign != nil {
		sig = sign(t, []byte(in))
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func forgeB64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func forgeRSA(key *rsa.PrivateKey, h crypto.Hash, pss bool) forgeSigner {
	return func(t *testing.T, input []byte) []byte {
		t.Helper()
		d := h.New()
		d.Write(input)
		var sig []byte
		var err error
		if pss {
			sig, err = rsa.SignPSS(rand.Reader, key, h, d.Sum(nil), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(rand.Reader, key, h, d.Sum(nil))
		}
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
}

// forgeES256 signs with ECDSA P-256 in the JWS encoding (R || S, 32 bytes each).
func forgeES256(key *ecdsa.PrivateKey) forgeSigner {
	return func(t *testing.T, input []byte) []byte {
		t.Helper()
		d := sha256.Sum256(input)
		r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out
	}
}

func forgeHMAC(h func() hash.Hash, secret []byte) forgeSigner {
	return func(t *testing.T, input []byte) []byte {
		m := hmac.New(h, secret)
		m.Write(input)
		return m.Sum(nil)
	}
}

// forgeObject writes a JSON object with its members in the order given;
// json.Marshal would sort them and cannot repeat a name.
func forgeObject(t *testing.T, kv ...any) string {
	t.Helper()
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(kv[i].(string))
		if err != nil {
			t.Fatal(err)
		}
		v, err := json.Marshal(kv[i+1])
		if err != nil {
			t.Fatal(err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.String()
}

// forgeOmit as a value removes the member from forgeHeader.
const forgeOmit = "\x00omit"

// forgeHeader is the header of a valid RS256 at+jwt with key kid, with the
// members of kv replacing (in place), removing (forgeOmit) or following its
// own; a header never repeats a name unless written out literally.
func forgeHeader(t *testing.T, kid string, kv ...any) string {
	t.Helper()
	out := []any{"alg", "RS256", "kid", kid, "typ", "at+jwt"}
	for i := 0; i < len(kv); i += 2 {
		replaced := false
		for j := 0; j < len(out); j += 2 {
			if out[j] == kv[i] {
				out[j+1], replaced = kv[i+1], true
			}
		}
		if !replaced {
			out = append(out, kv[i], kv[i+1])
		}
	}
	var kept []any
	for i := 0; i < len(out); i += 2 {
		if out[i+1] != forgeOmit {
			kept = append(kept, out[i], out[i+1])
		}
	}
	return forgeObject(t, kept...)
}

// forgeAppend adds members after the others of a JSON object, so that they
// repeat (and, for Go's encoding/json, override) earlier ones.
func forgeAppend(obj, members string) string { return obj[:len(obj)-1] + "," + members + "}" }

// forgePrepend adds members before the others of a JSON object.
func forgePrepend(obj, members string) string { return "{" + members + "," + obj[1:] }

// attacker is a server an attacker controls; a token's header may point at
// it. The bridge must never fetch anything from it.
type attacker struct {
	*httptest.Server
	hits atomic.Int64
	key  *rsa.PrivateKey
	cert []byte // self-signed, DER
}

func newAttacker(t *testing.T) *attacker {
	t.Helper()
	a := &attacker{}
	var err error
	if a.key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "attacker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	if a.cert, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &a.key.PublicKey, a.key); err != nil {
		t.Fatal(err)
	}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		if r.URL.Path == "/cert.pem" {
			_ = pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: a.cert})
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{a.jwk("attacker-kid")}})
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *attacker) jwk(kid string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: &a.key.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"}
}

// hostileHarness is the exchange harness with the auth0 issuer enforcing
// typ at+jwt, a third trusted issuer ("okta", RS256 and PS256 allowed) whose
// keys must not verify the others' tokens, and no rate limits (the corpus
// is larger than the per-IP burst; limits are tested elsewhere).
func hostileHarness(t *testing.T) (*harness, *testIssuer) {
	t.Helper()
	var okta *testIssuer
	h := newHarness(t, "12.4.0", func(h *harness, o *Options) {
		okta = newTestIssuer(t, jose.RS256, false)
		o.Issuers[0].RequireTyp = "at+jwt"
		o.Issuers = append(o.Issuers, IssuerConfig{Name: "okta", Issuer: okta.URL, Audiences: []string{testAudience},
			Algorithms: []string{"RS256", "PS256"}, UserIDs: UserIDsIssuer})
		o.Limits = LimitsConfig{PerIP: RateLimit{Rate: -1}, PerClient: RateLimit{Rate: -1}}
	})
	return h, okta
}

// serve runs one hand-made request through the bridge's handler in process
// (a 1 MB body over a socket may be cut off before the client reads the 413).
func (h *harness) serve(r *http.Request) tokenResponse {
	h.t.Helper()
	rec := httptest.NewRecorder()
	h.srv.Config.Handler.ServeHTTP(rec, r)
	return decodeResponse(h.t, rec.Result())
}

// writes runs f and returns how many Directus requests and new state
// records it caused; a refused exchange must cause none. Deltas (not
// totals) keep one wrongly accepted case from failing all later ones.
func (h *harness) writes(f func()) (requests, records int) {
	h.t.Helper()
	req, rec := h.fake.Requests(), h.store.Len()
	f()
	return h.fake.Requests() - req, h.store.Len() - rec
}

func assertNoWrites(t *testing.T, h *harness, requests, records int) {
	t.Helper()
	if requests != 0 || records != 0 {
		t.Errorf("refused exchange made %d Directus requests and %d state records, want 0 and 0 (by endpoint: %v)",
			requests, records, h.fake.RequestsBy())
	}
}

// leakMarkers must never appear in an error_description: internals of the
// libraries, addresses of the IdP or Directus.
var leakMarkers = []string{"go-jose", "oidc:", "fetching keys", "127.0.0.1", "http://", "https://", "jwks", "goroutine", "panic"}

type hostileCase struct {
	name  string
	token string               // the subject_token of an otherwise valid form body
	req   func() *http.Request // a hand-made request instead of token
	// status and code default to 400 invalid_request.
	status int
	code   string
	descr  string // a part of error_description ("" = any)
}

func TestHostileTokenCorpus(t *testing.T) {
	h, okta := hostileHarness(t)
	now := h.clock.Now()
	atk := newAttacker(t)

	auth0Key := h.auth0.key.(*rsa.PrivateKey)
	stKey := h.st.key.(*ecdsa.PrivateKey)
	oktaKey := okta.key.(*rsa.PrivateKey)
	rs256 := forgeRSA(auth0Key, crypto.SHA256, false)
	es256 := forgeES256(stKey)
	strangerRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	strangerEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	// The auth0 issuer's header and claims, as a valid token has them.
	hdr := func(kv ...any) string { return forgeHeader(t, h.auth0.kid, kv...) }
	const client = "svc-hostile@clients"
	claims := func(mut func(c map[string]any)) string {
		c := h.auth0.claims(client, testAudience, now, "items:read")
		if mut != nil {
			mut(c)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	set := func(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
	del := func(k string) func(map[string]any) { return func(c map[string]any) { delete(c, k) } }
	auth0 := func(mut func(map[string]any)) string { return forgeCompact(t, hdr(), claims(mut), rs256) }
	valid := auth0(nil)
	validParts := strings.Split(valid, ".")
	unix := func(d time.Duration) int64 { return now.Add(d).Unix() }

	// The SuperTokens issuer's (ES256, scp, stt: 1).
	stHdr := forgeObject(t, "alg", "ES256", "kid", h.st.kid, "typ", "at+jwt")
	stClaims := func(k string, v any) string {
		c := map[string]any{"iss": h.st.URL, "sub": "task-service", "aud": testAudience, "iat": now.Unix(),
			"exp": unix(time.Hour), "scp": []string{"items:read"}, "stt": 1}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		b, _ := json.Marshal(c)
		return string(b)
	}

	// Key confusion: the issuer's public key, in every form an attacker can
	// get it, used as an HMAC secret.
	pubDER, err := x509.MarshalPKIXPublicKey(&auth0Key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemPKIX := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pemPKCS1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&auth0Key.PublicKey)})
	jwkJSON, err := json.Marshal(jose.JSONWebKey{Key: &auth0Key.PublicKey, KeyID: h.auth0.kid, Algorithm: "RS256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	stPKIX, err := x509.MarshalPKIXPublicKey(&stKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	hs := func(alg string, h2 func() hash.Hash, secret []byte) string {
		return forgeCompact(t, forgeObject(t, "alg", alg, "kid", h.auth0.kid, "typ", "at+jwt"), claims(nil), forgeHMAC(h2, secret))
	}

	// JWE: the claims encrypted to the issuer's own key (RSA-OAEP-256).
	enc, err := jose.NewEncrypter(jose.A128GCM, jose.Recipient{Algorithm: jose.RSA_OAEP_256, Key: &auth0Key.PublicKey},
		(&jose.EncrypterOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	jweObj, err := enc.Encrypt([]byte(claims(nil)))
	if err != nil {
		t.Fatal(err)
	}
	jwe, err := jweObj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}

	// An OIDC ID token of the same issuer: user subject, aud = a client id,
	// nonce, azp, typ JWT.
	idToken := func(typ string) string {
		c, _ := json.Marshal(map[string]any{"iss": h.auth0.URL, "sub": "auth0|user-1", "aud": "spa-client-id",
			"azp": "spa-client-id", "nonce": "n-0S6_WzA2Mj", "auth_time": now.Unix(), "iat": now.Unix(),
			"exp": unix(time.Hour), "name": "Alice"})
		return forgeCompact(t, forgeObject(t, "alg", "RS256", "kid", h.auth0.kid, "typ", typ), string(c), rs256)
	}

	// A payload whose base64url has '_' so that its standard base64 has '/'.
	stdAlphabet := func() string {
		p := claims(set("scope", "items:read ???"))
		seg := base64.StdEncoding.WithPadding(base64.NoPadding).EncodeToString([]byte(p))
		if !strings.ContainsAny(seg, "+/") {
			t.Fatal("test payload has no +/ in standard base64")
		}
		return forgeB64(hdr()) + "." + seg + "." + validParts[2]
	}()

	form := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v.Encode()
	}
	exchangeBody := func(extra ...string) string {
		return form(append([]string{"grant_type", GrantTypeTokenExchange, "subject_token", valid,
			"subject_token_type", TokenTypeAccessToken}, extra...)...)
	}
	post := func(target, ct, body string) func() *http.Request {
		return func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(body))
			if ct != "" {
				r.Header.Set("Content-Type", ct)
			}
			return r
		}
	}
	const formCT = "application/x-www-form-urlencoded"
	jsonBody := func(subject string) string {
		b, _ := json.Marshal(map[string]string{"grant_type": GrantTypeTokenExchange, "subject_token": subject,
			"subject_token_type": TokenTypeAccessToken})
		return string(b)
	}
	huge := strings.Repeat("A", 1<<20)

	cases := []hostileCase{
		// Algorithms: none, HMAC, algorithms the issuer does not allow.
		{name: "alg none without signature", token: forgeCompact(t, forgeObject(t, "alg", "none", "typ", "at+jwt"), claims(nil), nil), descr: `algorithm "none"`},
		{name: "alg none with the issuer's signature", token: forgeCompact(t, forgeObject(t, "alg", "none", "kid", h.auth0.kid, "typ", "at+jwt"), claims(nil), rs256), descr: `algorithm "none"`},
		{name: "alg None", token: forgeCompact(t, forgeObject(t, "alg", "None", "typ", "at+jwt"), claims(nil), nil), descr: "algorithm"},
		{name: "alg missing", token: forgeCompact(t, forgeObject(t, "kid", h.auth0.kid, "typ", "at+jwt"), claims(nil), rs256), descr: `algorithm ""`},
		{name: "HS256 keyed with the issuer's public key PEM (PKIX)", token: hs("HS256", sha256.New, pemPKIX), descr: `algorithm "HS256"`},
		{name: "HS256 keyed with the issuer's public key PEM (PKCS#1)", token: hs("HS256", sha256.New, pemPKCS1), descr: `algorithm "HS256"`},
		{name: "HS256 keyed with the issuer's public key DER", token: hs("HS256", sha256.New, pubDER), descr: `algorithm "HS256"`},
		{name: "HS256 keyed with the issuer's JWK JSON", token: hs("HS256", sha256.New, jwkJSON), descr: `algorithm "HS256"`},
		{name: "HS256 keyed with the issuer's modulus", token: hs("HS256", sha256.New, auth0Key.N.Bytes()), descr: `algorithm "HS256"`},
		{name: "HS512 keyed with the issuer's public key PEM", token: hs("HS512", sha512.New, pemPKIX), descr: `algorithm "HS512"`},
		{name: "HS256 keyed with the ES256 issuer's public key", token: forgeCompact(t, forgeObject(t, "alg", "HS256", "kid", h.st.kid, "typ", "at+jwt"), stClaims("stt", 1), forgeHMAC(sha256.New, stPKIX)), descr: `algorithm "HS256"`},
		{name: "PS256 with the issuer's own key, only RS256 allowed", token: forgeCompact(t, hdr("alg", "PS256"), claims(nil), forgeRSA(auth0Key, crypto.SHA256, true)), descr: `algorithm "PS256"`},
		{name: "RS384 with the issuer's own key, only RS256 allowed", token: forgeCompact(t, hdr("alg", "RS384"), claims(nil), forgeRSA(auth0Key, crypto.SHA384, false)), descr: `algorithm "RS384"`},
		{name: "ES256 with a key the JWKS does not have", token: forgeCompact(t, forgeObject(t, "alg", "ES256", "kid", h.auth0.kid, "typ", "at+jwt"), claims(nil), forgeES256(strangerEC)), descr: `algorithm "ES256"`},
		{name: "RS256 issuer's claims, ES256 with the other issuer's key", token: forgeCompact(t, forgeObject(t, "alg", "ES256", "kid", h.st.kid, "typ", "at+jwt"), claims(nil), es256), descr: `algorithm "ES256"`},
		{name: "ES256 issuer, RS256 token", token: forgeCompact(t, forgeObject(t, "alg", "RS256", "kid", h.st.kid, "typ", "at+jwt"), stClaims("stt", 1), rs256), descr: `algorithm "RS256"`},
		// RFC 8725 §3.1: a key is used with exactly one algorithm. The okta
		// JWKS publishes its key with alg RS256; okta allows RS256 and PS256.
		// Fails until keyset.go checks the JWK's alg.
		{name: "PS256 with a key the JWKS pins to RS256", token: forgeCompact(t, forgeObject(t, "alg", "PS256", "kid", okta.kid),
			claims(set("iss", okta.URL)), forgeRSA(oktaKey, crypto.SHA256, true)), descr: "signature"},

		// Keys belong to one issuer (RFC 8725 §3.8); unknown keys fail.
		{name: "another trusted issuer's key and kid", token: forgeCompact(t, forgeObject(t, "alg", "RS256", "kid", okta.kid, "typ", "at+jwt"), claims(nil), forgeRSA(oktaKey, crypto.SHA256, false)), descr: "signature"},
		{name: "another trusted issuer's key, this issuer's kid", token: forgeCompact(t, hdr(), claims(nil), forgeRSA(oktaKey, crypto.SHA256, false)), descr: "signature"},
		{name: "another trusted issuer's key, no kid", token: forgeCompact(t, forgeObject(t, "alg", "RS256", "typ", "at+jwt"), claims(nil), forgeRSA(oktaKey, crypto.SHA256, false)), descr: "signature"},
		{name: "unknown key, unknown kid", token: forgeCompact(t, hdr("kid", "rotated-2"), claims(nil), forgeRSA(strangerRSA, crypto.SHA256, false)), descr: "signature"},
		{name: "unknown key, the issuer's kid", token: forgeCompact(t, hdr(), claims(nil), forgeRSA(strangerRSA, crypto.SHA256, false)), descr: "signature"},
		{name: "ES256 issuer, unknown key with its kid", token: forgeCompact(t, stHdr, stClaims("stt", 1), forgeES256(strangerEC)), descr: "signature"},
		{name: "claims altered after signing", token: validParts[0] + "." + forgeB64(claims(set("scope", "items:read items:write"))) + "." + validParts[2], descr: "signature"},
		{name: "signature of another token", token: validParts[0] + "." + validParts[1] + "." + strings.Split(auth0(set("jti", "other")), ".")[2], descr: "signature"},
		{name: "signature truncated", token: valid[:len(valid)-10], descr: "signature"},
		{name: "signature empty", token: validParts[0] + "." + validParts[1] + ".", descr: "signature"},

		// Header parameters that name keys: never fetched, never trusted.
		{name: "jku at the attacker's JWKS", token: forgeCompact(t, hdr("kid", "attacker-kid", "jku", atk.URL+"/jwks"), claims(nil), forgeRSA(atk.key, crypto.SHA256, false)), descr: "signature"},
		{name: "jku with the issuer's kid", token: forgeCompact(t, hdr("jku", atk.URL+"/jwks"), claims(nil), forgeRSA(atk.key, crypto.SHA256, false)), descr: "signature"},
		{name: "x5u at the attacker's certificate", token: forgeCompact(t, hdr("kid", "attacker-kid", "x5u", atk.URL+"/cert.pem"), claims(nil), forgeRSA(atk.key, crypto.SHA256, false)), descr: "signature"},
		{name: "embedded jwk of the attacker", token: forgeCompact(t, hdr("kid", "attacker-kid", "jwk", atk.jwk("attacker-kid")), claims(nil), forgeRSA(atk.key, crypto.SHA256, false)), descr: "signature"},
		{name: "embedded jwk with the issuer's kid", token: forgeCompact(t, hdr("jwk", atk.jwk(h.auth0.kid)), claims(nil), forgeRSA(atk.key, crypto.SHA256, false)), descr: "signature"},
		{name: "x5c with the attacker's certificate", token: forgeCompact(t, hdr("kid", "attacker-kid", "x5c", []string{base64.StdEncoding.EncodeToString(atk.cert)}), claims(nil), forgeRSA(atk.key, crypto.SHA256, false)), descr: "signature"},
		{name: "jku, x5u, jwk and no kid", token: forgeCompact(t, forgeObject(t, "alg", "RS256", "typ", "at+jwt", "jku", atk.URL+"/jwks", "x5u", atk.URL+"/cert.pem", "jwk", atk.jwk("")), claims(nil), forgeRSA(atk.key, crypto.SHA256, false)), descr: "signature"},

		// crit, JWE, nested tokens.
		{name: "crit exp, signed by the issuer", token: forgeCompact(t, hdr("exp", unix(time.Hour), "crit", []string{"exp"}), claims(nil), rs256), descr: "crit"},
		{name: "crit b64 false (RFC 7797)", token: forgeCompact(t, hdr("b64", false, "crit", []string{"b64"}), claims(nil), rs256), descr: "crit"},
		{name: "crit empty list", token: forgeCompact(t, hdr("crit", []string{}), claims(nil), rs256), descr: "crit"},
		{name: "JWE compact, encrypted to the issuer's key", token: jwe, descr: "JWE"},
		{name: "five parts of garbage", token: "a.b.c.d.e", descr: "JWE"},
		{name: "enc in a three-part header", token: forgeCompact(t, hdr("enc", "A128GCM"), claims(nil), rs256), descr: "encrypted"},
		{name: "nested JWT (cty JWT) around a valid token", token: forgeCompact(t, hdr("cty", "JWT"), valid, rs256), descr: "malformed JWT payload"},
		{name: "nested JWT (cty JWT) around a JWE", token: forgeCompact(t, hdr("cty", "JWT"), jwe, rs256), descr: "malformed JWT payload"},

		// Tokens of the wrong kind from a trusted issuer.
		{name: "typ JWT where at+jwt is required", token: forgeCompact(t, hdr("typ", "JWT"), claims(nil), rs256), descr: "token type"},
		{name: "typ missing where at+jwt is required", token: forgeCompact(t, hdr("typ", forgeOmit), claims(nil), rs256), descr: "token type"},
		{name: "typ application/jwt", token: forgeCompact(t, hdr("typ", "application/jwt"), claims(nil), rs256), descr: "token type"},
		{name: "typ dpop+jwt", token: forgeCompact(t, hdr("typ", "dpop+jwt"), claims(nil), rs256), descr: "token type"},
		{name: "OIDC ID token (typ JWT)", token: idToken("JWT"), descr: "token type"},
		{name: "OIDC ID token shape with typ at+jwt", token: idToken("at+jwt"), descr: "audience"},
		{name: "Auth0 gty password", token: auth0(set("gty", "password")), descr: "gty"},
		{name: "Auth0 gty refresh_token", token: auth0(set("gty", "refresh_token")), descr: "gty"},
		{name: "Auth0 gty client_credentials (underscore)", token: auth0(set("gty", "client_credentials")), descr: "gty"},
		{name: "Auth0 gty in other case", token: auth0(set("gty", "Client-Credentials")), descr: "gty"},
		{name: "Auth0 gty list of other grants", token: auth0(set("gty", []string{"refresh_token", "password"})), descr: "gty"},
		{name: "Auth0 gty null", token: auth0(set("gty", nil)), descr: "gty"},
		{name: "Auth0 gty missing", token: auth0(del("gty")), descr: "gty"},
		{name: "SuperTokens stt 0", token: forgeCompact(t, stHdr, stClaims("stt", 0), es256), descr: "stt"},
		{name: "SuperTokens stt 2", token: forgeCompact(t, stHdr, stClaims("stt", 2), es256), descr: "stt"},
		{name: "SuperTokens stt string 1", token: forgeCompact(t, stHdr, stClaims("stt", "1"), es256), descr: "stt"},
		{name: "SuperTokens stt true", token: forgeCompact(t, stHdr, stClaims("stt", true), es256), descr: "stt"},
		{name: "SuperTokens stt missing", token: forgeCompact(t, stHdr, stClaims("stt", nil), es256), descr: "stt"},

		// Issuer: exact, trailing slash both ways (auth0's has one, st's not).
		{name: "iss without the trailing slash", token: auth0(set("iss", strings.TrimSuffix(h.auth0.URL, "/"))), descr: "issuer is not trusted"},
		{name: "iss with a doubled trailing slash", token: auth0(set("iss", h.auth0.URL+"/")), descr: "issuer is not trusted"},
		{name: "iss with a trailing slash added", token: forgeCompact(t, stHdr, stClaims("iss", h.st.URL+"/"), es256), descr: "issuer is not trusted"},
		{name: "iss in upper case", token: auth0(set("iss", strings.ToUpper(h.auth0.URL))), descr: "issuer is not trusted"},
		{name: "iss with a leading space", token: auth0(set("iss", " "+h.auth0.URL)), descr: "issuer is not trusted"},
		{name: "iss of an untrusted issuer, signed by a trusted key", token: auth0(set("iss", "https://evil.example/")), descr: "issuer is not trusted"},
		{name: "iss empty", token: auth0(set("iss", "")), descr: "issuer is not trusted"},
		{name: "iss missing", token: auth0(del("iss")), descr: "issuer is not trusted"},
		{name: "iss as a list", token: auth0(set("iss", []string{h.auth0.URL})), descr: "malformed JWT payload"},

		// Audience.
		{name: "aud of another API", token: auth0(set("aud", "https://elsewhere.example/api")), descr: "audience"},
		{name: "aud missing", token: auth0(del("aud")), descr: "audience"},
		{name: "aud empty list", token: auth0(set("aud", []string{})), descr: "audience"},
		{name: "aud with a trailing slash", token: auth0(set("aud", testAudience+"/")), descr: "audience"},
		{name: "aud in upper case", token: auth0(set("aud", strings.ToUpper(testAudience))), descr: "audience"},
		{name: "aud list without ours", token: auth0(set("aud", []string{"a", "b"})), descr: "audience"},
		{name: "aud a number", token: auth0(set("aud", 1))},

		// Time, with the default 30s leeway (accepted edges: TestHostileTokensAcceptedAtTheEdges).
		{name: "expired beyond the leeway", token: auth0(set("exp", unix(-31*time.Second))), descr: "expired"},
		{name: "expired exactly the leeway ago", token: auth0(set("exp", unix(-30*time.Second))), descr: "expired"},
		{name: "expired an hour ago", token: auth0(set("exp", unix(-time.Hour))), descr: "expired"},
		{name: "exp missing", token: auth0(del("exp")), descr: "exp"},
		{name: "exp 0", token: auth0(set("exp", 0))},
		{name: "exp negative", token: auth0(set("exp", -1))},
		{name: "exp 1e300", token: auth0(set("exp", 1e300))},
		{name: "exp not a number", token: auth0(set("exp", "tomorrow"))},
		{name: "exp null", token: auth0(set("exp", nil))},
		// NumericDate is a JSON number (RFC 7519 §2). go-oidc accepts quoted
		// numbers and wraps huge ones (float64 to int64) into the far past,
		// the bridge ignores an nbf it cannot read: these fail until the
		// dates are read strictly from the claims.
		{name: "exp a future date as a string", token: auth0(set("exp", itoa(unix(time.Hour))))},
		{name: "nbf beyond the leeway", token: auth0(set("nbf", unix(31*time.Second))), descr: "nbf"},
		{name: "nbf an hour ahead", token: auth0(set("nbf", unix(time.Hour))), descr: "nbf"},
		{name: "nbf far in the future (1e19)", token: auth0(set("nbf", 1e19)), descr: "nbf"},
		{name: "nbf far in the future (max int64)", token: auth0(set("nbf", json.Number("9223372036854775807"))), descr: "nbf"},
		{name: "nbf a future date as a string", token: auth0(set("nbf", itoa(unix(time.Hour)))), descr: "nbf"},
		{name: "iat beyond the leeway", token: auth0(set("iat", unix(31*time.Second))), descr: "iat"},
		{name: "iat an hour ahead", token: auth0(set("iat", unix(time.Hour))), descr: "iat"},
		{name: "iat far in the future (1e19)", token: auth0(set("iat", 1e19)), descr: "iat"},
		{name: "iat far in the future (max int64)", token: auth0(set("iat", json.Number("9223372036854775807"))), descr: "iat"},

		// The client claim.
		{name: "sub missing", token: auth0(del("sub")), descr: "client claim sub"},
		{name: "sub empty", token: auth0(set("sub", "")), descr: "client claim sub"},
		// go-oidc reads sub as a string: the refusal says "signature or issuer
		// check failed", which is vague but reveals nothing.
		{name: "sub a number", token: auth0(set("sub", 42))},

		// Encoding: base64url in each segment, JSON in each part.
		{name: "not a JWT", token: "opaque-token", descr: "not a signed JWT"},
		{name: "two parts", token: validParts[0] + "." + validParts[1], descr: "not a signed JWT"},
		{name: "four parts", token: valid + ".x", descr: "not a signed JWT"},
		{name: "six parts", token: valid + "." + valid[:10] + ".y.z", descr: "not a signed JWT"},
		{name: "only dots", token: "..", descr: "malformed JWT header"},
		{name: "bad base64 in the header", token: "eyJ!bGc." + validParts[1] + "." + validParts[2], descr: "malformed JWT header"},
		{name: "bad base64 in the payload", token: validParts[0] + ".eyJ!c3M." + validParts[2], descr: "malformed JWT payload"},
		{name: "bad base64 in the signature", token: validParts[0] + "." + validParts[1] + ".!!" + validParts[2][2:], descr: "signature"},
		{name: "padded header", token: padded(hdr("x", "y")) + "." + validParts[1] + "." + validParts[2], descr: "malformed JWT header"},
		{name: "padded payload", token: validParts[0] + "." + padded(claims(set("jti", "p"))) + "." + validParts[2], descr: "malformed JWT payload"},
		{name: "standard base64 alphabet in the payload", token: stdAlphabet, descr: "malformed JWT payload"},
		{name: "leading space", token: " " + valid, descr: "malformed JWT header"},
		{name: "space inside the header", token: validParts[0][:5] + " " + validParts[0][5:] + "." + validParts[1] + "." + validParts[2], descr: "malformed JWT header"},
		{name: "header not JSON", token: forgeCompact(t, "{", claims(nil), rs256), descr: "malformed JWT header"},
		{name: "header a JSON list", token: forgeCompact(t, `["RS256"]`, claims(nil), rs256), descr: "malformed JWT header"},
		{name: "header a JSON string", token: forgeCompact(t, `"RS256"`, claims(nil), rs256), descr: "malformed JWT header"},
		{name: "header null", token: forgeCompact(t, "null", claims(nil), rs256), descr: "algorithm"},
		{name: "payload not JSON, signed", token: forgeCompact(t, hdr(), "iss=me", rs256), descr: "malformed JWT payload"},
		{name: "payload a JSON list, signed", token: forgeCompact(t, hdr(), "["+claims(nil)+"]", rs256), descr: "malformed JWT payload"},
		{name: "payload null, signed", token: forgeCompact(t, hdr(), "null", rs256), descr: "issuer is not trusted"},
		{name: "payload with trailing data, signed", token: forgeCompact(t, hdr(), claims(nil)+`{"iss":"x"}`, rs256), descr: "malformed JWT payload"},
		{name: "payload with a byte order mark, signed", token: forgeCompact(t, hdr(), "\ufeff"+claims(nil), rs256), descr: "malformed JWT payload"},
		{name: "payload in UTF-16, signed", token: forgeCompact(t, hdr(), utf16le(claims(nil)), rs256), descr: "malformed JWT payload"},

		// Repeated and case-variant JSON members, in tokens the issuer signed
		// (an IdP that builds payloads from client-controlled custom claims
		// can emit them). Go's encoding/json takes the last of repeated
		// members (RFC 7519 §4 allows that) and matches struct fields
		// case-insensitively (it does not: names are case-sensitive); go-jose
		// refuses repeated header members. The bridge must refuse repeated
		// members and case variants of registered names, so that no two
		// parsers (the issuer's, go-oidc's, the bridge's claim map) read one
		// token two ways. Fails until verify.go checks member names.
		{name: "header alg repeated", token: forgeCompact(t, `{"alg":"none","alg":"RS256","kid":"`+h.auth0.kid+`","typ":"at+jwt"}`, claims(nil), rs256)},
		{name: "header kid repeated", token: forgeCompact(t, `{"alg":"RS256","kid":"other","kid":"`+h.auth0.kid+`","typ":"at+jwt"}`, claims(nil), rs256)},
		{name: "header typ repeated", token: forgeCompact(t, `{"alg":"RS256","kid":"`+h.auth0.kid+`","typ":"JWT","typ":"at+jwt"}`, claims(nil), rs256)},
		{name: "payload iss repeated, trusted one last", token: forgeCompact(t, hdr(), forgePrepend(claims(nil), `"iss":"https://evil.example/"`), rs256)},
		{name: "payload iss repeated, untrusted one last", token: forgeCompact(t, hdr(), forgeAppend(claims(nil), `"iss":"https://evil.example/"`), rs256)},
		{name: "payload aud repeated, ours last", token: forgeCompact(t, hdr(), forgePrepend(claims(set("aud", "https://elsewhere.example/api")), `"aud":"`+testAudience+`"`), rs256)},
		{name: "payload exp repeated, future one last", token: forgeCompact(t, hdr(), forgeAppend(claims(set("exp", unix(-time.Hour))), `"exp":`+itoa(unix(time.Hour))), rs256)},
		{name: "payload sub repeated", token: forgeCompact(t, hdr(), forgeAppend(claims(nil), `"sub":"admin@clients"`), rs256)},
		{name: "payload gty repeated, client-credentials last", token: forgeCompact(t, hdr(), forgeAppend(claims(set("gty", "password")), `"gty":"client-credentials"`), rs256)},
		{name: "payload EXP (upper case) overrides an expired exp", token: forgeCompact(t, hdr(), forgeAppend(claims(set("exp", unix(-time.Hour))), `"EXP":`+itoa(unix(time.Hour))), rs256)},
		{name: "payload EXP (upper case) instead of exp", token: forgeCompact(t, hdr(), forgeAppend(claims(del("exp")), `"EXP":`+itoa(unix(time.Hour))), rs256)},
		{name: "payload Aud (mixed case) overrides aud", token: forgeCompact(t, hdr(), forgeAppend(claims(set("aud", "https://elsewhere.example/api")), `"Aud":"`+testAudience+`"`), rs256)},
		// Claim paths and conditions read nested members: a repeated one is
		// refused as a repeated claim is.
		{name: "payload nested member repeated", token: forgeCompact(t, hdr(), forgeAppend(claims(nil), `"realm_access":{"roles":["user"],"roles":["admin"]}`), rs256), descr: "malformed JWT payload"},
		{name: "payload member repeated in a list element", token: forgeCompact(t, hdr(), forgeAppend(claims(nil), `"orgs":[{"id":"a","id":"b"}]`), rs256), descr: "malformed JWT payload"},
		{name: "payload nested member repeated through an escape", token: forgeCompact(t, hdr(), forgeAppend(claims(nil), `"k8s":{"ns":"dev","\u006es":"prod"}`), rs256), descr: "malformed JWT payload"},
		{name: "payload ISS (upper case) names the trusted issuer", token: forgeCompact(t, hdr(), forgeAppend(claims(set("iss", "https://evil.example/")), `"ISS":"`+h.auth0.URL+`"`), rs256)},

		// The request around the token.
		{name: "subject_token of 1 MiB", req: post("/oauth/token", formCT, form("grant_type", GrantTypeTokenExchange, "subject_token", huge, "subject_token_type", TokenTypeAccessToken)), status: 413, descr: "over"},
		{name: "JSON body of 1 MiB", req: post("/oauth/token", "application/json", jsonBody(huge)), status: 413, descr: "over"},
		{name: "body of exactly 64 KiB is read", req: post("/oauth/token", formCT, padForm(form("grant_type", GrantTypeTokenExchange, "subject_token", "x.y.z", "subject_token_type", TokenTypeAccessToken), MaxRequestBytes)), descr: "subject_token:"},
		{name: "body of 64 KiB + 1", req: post("/oauth/token", formCT, padForm(exchangeBody(), MaxRequestBytes+1)), status: 413},
		{name: "JSON nested 10000 deep", req: post("/oauth/token", "application/json", `{"x":`+strings.Repeat("[", 10000)+strings.Repeat("]", 10000)+"}")},
		{name: "Content-Type text/plain", req: post("/oauth/token", "text/plain", exchangeBody()), status: 415},
		{name: "Content-Type missing", req: post("/oauth/token", "", exchangeBody()), status: 415},
		{name: "Content-Type multipart/form-data", req: post("/oauth/token", "multipart/form-data; boundary=x", exchangeBody()), status: 415},
		{name: "Content-Type application/jwt", req: post("/oauth/token", "application/jwt", valid), status: 415},
		{name: "Content-Type malformed", req: post("/oauth/token", "application/", exchangeBody()), status: 415},
		{name: "form: subject_token repeated", req: post("/oauth/token", formCT, exchangeBody("subject_token", auth0(set("sub", "admin@clients")))), descr: "repeated"},
		{name: "form: subject_token repeated, same value", req: post("/oauth/token", formCT, exchangeBody("subject_token", valid)), descr: "repeated"},
		{name: "form: grant_type repeated", req: post("/oauth/token", formCT, exchangeBody("grant_type", GrantTypeTokenExchange)), descr: "repeated"},
		{name: "form: subject_token_type repeated", req: post("/oauth/token", formCT, exchangeBody("subject_token_type", TokenTypeJWT)), descr: "repeated"},
		{name: "form: scope repeated", req: post("/oauth/token", formCT, exchangeBody("scope", "items:read", "scope", "items:write")), descr: "repeated"},
		{name: "form: percent-encoded name repeats subject_token", req: post("/oauth/token", formCT, exchangeBody()+"&subject%5Ftoken=x"), descr: "repeated"},
		{name: "form: semicolon separator", req: post("/oauth/token", formCT, exchangeBody()+";subject_token=x"), descr: "malformed"},
		{name: "form: bad percent-encoding", req: post("/oauth/token", formCT, exchangeBody()+"&scope=%zz"), descr: "malformed"},
		{name: "JSON: subject_token repeated", req: post("/oauth/token", "application/json", forgeAppend(jsonBody(valid), `"subject_token":"x"`)), descr: "repeated"},
		{name: "JSON: subject_token repeated through an escape", req: post("/oauth/token", "application/json", forgeAppend(jsonBody(valid), `"subject\u005ftoken":"x"`)), descr: "repeated"},
		{name: "JSON: subject_token a number", req: post("/oauth/token", "application/json", `{"grant_type":"`+GrantTypeTokenExchange+`","subject_token":1,"subject_token_type":"`+TokenTypeAccessToken+`"}`), descr: "string"},
		{name: "JSON: subject_token an object", req: post("/oauth/token", "application/json", `{"grant_type":"`+GrantTypeTokenExchange+`","subject_token":{"jwt":"`+valid+`"},"subject_token_type":"`+TokenTypeAccessToken+`"}`), descr: "string"},
		{name: "JSON: a list", req: post("/oauth/token", "application/json", "["+jsonBody(valid)+"]")},
		{name: "JSON: null", req: post("/oauth/token", "application/json", "null")},
		{name: "JSON: two objects", req: post("/oauth/token", "application/json", jsonBody(valid)+jsonBody(valid))},
		{name: "JSON: trailing garbage", req: post("/oauth/token", "application/json", jsonBody(valid)+" x")},
		// json.Decoder.More is false before '}' and ']': fails until
		// jsonParams wants io.EOF after the object.
		{name: "JSON: trailing closing brace", req: post("/oauth/token", "application/json", jsonBody(valid)+"}")},
		{name: "JSON: trailing closing bracket", req: post("/oauth/token", "application/json", jsonBody(valid)+"]")},
		{name: "subject_token in the URL query", req: post("/oauth/token?"+form("subject_token", valid), formCT, form("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeAccessToken)), descr: "URL"},
		{name: "subject_token in the URL query and the body", req: post("/oauth/token?"+form("subject_token", valid), formCT, exchangeBody()), descr: "URL"},
		{name: "any URL query", req: post("/oauth/token?debug=1", formCT, exchangeBody()), descr: "URL"},
		{name: "GET with the parameters in the query", req: func() *http.Request {
			return httptest.NewRequest(http.MethodGet, "/oauth/token?"+exchangeBody(), nil)
		}, status: 405},
		{name: "actor_token (delegation)", req: post("/oauth/token", formCT, exchangeBody("actor_token", valid, "actor_token_type", TokenTypeAccessToken)), descr: "delegation"},
		{name: "subject_token_type id_token", req: post("/oauth/token", formCT, form("grant_type", GrantTypeTokenExchange, "subject_token", valid, "subject_token_type", "urn:ietf:params:oauth:token-type:id_token")), descr: "subject_token_type"},
		{name: "requested_token_type jwt", req: post("/oauth/token", formCT, exchangeBody("requested_token_type", TokenTypeJWT)), descr: "requested_token_type"},
		{name: "grant_type client_credentials", req: post("/oauth/token", formCT, form("grant_type", "client_credentials", "subject_token", valid, "subject_token_type", TokenTypeAccessToken)), code: "unsupported_grant_type"},
		{name: "scope empty", req: post("/oauth/token", formCT, exchangeBody("scope", " ")), code: "invalid_scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.status == 0 {
				tc.status = 400
			}
			if tc.code == "" {
				tc.code = "invalid_request"
			}
			var r tokenResponse
			reqs, recs := h.writes(func() {
				if tc.req != nil {
					r = h.serve(tc.req())
				} else {
					r = h.exchange(tc.token)
				}
			})
			assertNoWrites(t, h, reqs, recs)
			if r.Status != tc.status || r.str("error") != tc.code {
				t.Errorf("got %d %v, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
			descr := r.str("error_description")
			if !strings.Contains(descr, tc.descr) {
				t.Errorf("error_description %q does not mention %q", descr, tc.descr)
			}
			for _, m := range leakMarkers {
				if strings.Contains(descr, m) {
					t.Errorf("error_description %q leaks %q", descr, m)
				}
			}
			if tc.token != "" && len(tc.token) > 16 && strings.Contains(descr, tc.token) {
				t.Errorf("error_description echoes the subject token")
			}
			if _, ok := r.Body["access_token"]; ok {
				t.Errorf("a refused exchange returned an access_token")
			}
		})
	}
	if n := atk.hits.Load(); n != 0 {
		t.Errorf("the attacker's server got %d requests, want 0 (jku/x5u/jwk must never be fetched)", n)
	}
	if strings.Contains(h.logs.String(), valid) {
		t.Errorf("a subject token reached the log")
	}
}

// TestHostileTokensAcceptedAtTheEdges pins what must still be accepted:
// the leeway works both ways, typ compares as RFC 7515 §4.1.9 says, and
// the hand-forged tokens of TestHostileTokenCorpus are refused for what they
// change, not for how they are built.
func TestHostileTokensAcceptedAtTheEdges(t *testing.T) {
	h, _ := hostileHarness(t)
	now := h.clock.Now()
	auth0Key := h.auth0.key.(*rsa.PrivateKey)
	rs256 := forgeRSA(auth0Key, crypto.SHA256, false)
	hdr := func(kv ...any) string { return forgeHeader(t, h.auth0.kid, kv...) }
	unix := func(d time.Duration) int64 { return now.Add(d).Unix() }
	for i, tc := range []struct {
		name   string
		header string
		mut    func(c map[string]any)
		sign   forgeSigner
		spaced bool // a space before the last character of the token
	}{
		{name: "control: the forged token as TestHostileTokenCorpus builds it"},
		// exp within the leeway verifies, but the exchange refuses it:
		// TestSubjectTokenInLeewayAfterExpiry.
		{name: "nbf within the leeway", mut: func(c map[string]any) { c["nbf"] = unix(20 * time.Second) }},
		{name: "nbf exactly the leeway ahead", mut: func(c map[string]any) { c["nbf"] = unix(30 * time.Second) }},
		{name: "iat within the leeway", mut: func(c map[string]any) { c["iat"] = unix(20 * time.Second) }},
		{name: "typ application/at+jwt", header: hdr("typ", "application/at+jwt")},
		{name: "typ in upper case", header: hdr("typ", "AT+JWT")},
		{name: "no kid (every key of the issuer is tried)", header: hdr("kid", forgeOmit)},
		// go-jose strips white space from a compact JWS before decoding, so
		// the signature segment may carry some: the same signed bytes, so a
		// benign malleability (the header and payload segments may not).
		{name: "white space in the signature segment", mut: func(c map[string]any) { c["jti"] = "ws" }, spaced: true},
		{name: "aud list with ours among others", mut: func(c map[string]any) { c["aud"] = []string{"https://a.example", testAudience} }},
		{name: "unknown claims and header parameters", header: hdr("x-trace", "1"), mut: func(c map[string]any) { c["https://acme/tenant"] = "t1" }},
		// required_claims also match an element of a list claim (documented
		// in claimEquals; rules need it for roles).
		{name: "gty as a one-element list", mut: func(c map[string]any) { c["gty"] = []string{"client-credentials"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.auth0.claims("edge-"+itoa(int64(i))+"@clients", testAudience, now, "items:read")
			if tc.mut != nil {
				tc.mut(c)
			}
			header := tc.header
			if header == "" {
				header = hdr()
			}
			payload, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			sign := tc.sign
			if sign == nil {
				sign = rs256
			}
			tok := forgeCompact(t, header, string(payload), sign)
			if tc.spaced {
				tok = tok[:len(tok)-1] + " " + tok[len(tok)-1:]
			}
			before := h.fake.Requests()
			r := h.exchange(tok)
			if r.Status != 200 || r.str("access_token") == "" {
				t.Fatalf("got %d %v, want 200", r.Status, r.Body)
			}
			if exp, _ := r.Body["expires_in"].(float64); exp < 1 {
				t.Errorf("expires_in = %v, want >= 1", r.Body["expires_in"])
			}
			if n := h.fake.Requests() - before; n != 1 {
				t.Errorf("Directus requests = %d, want 1 (the new user)", n)
			}
		})
	}
}

// TestHostileTokensMisconfiguredIssuer: an issuer whose configuration skipped
// validation and lists none and HS256 still never accepts them (defence in
// depth below the allow-list).
func TestHostileTokensMisconfiguredIssuer(t *testing.T) {
	h := newHarness(t, "12.4.0", func(h *harness, o *Options) {
		o.Issuers[0].Algorithms = []string{"none", "HS256", "RS256"}
	})
	if errs := ValidateIssuer(IssuerConfig{Name: "x", Issuer: "https://x/", Audiences: []string{"a"},
		Algorithms: []string{"none", "HS256"}}); len(errs) != 2 {
		t.Errorf("ValidateIssuer reported %d problems, want 2 (none, HS256): %v", len(errs), errs)
	}
	auth0Key := h.auth0.key.(*rsa.PrivateKey)
	pubDER, err := x509.MarshalPKIXPublicKey(&auth0Key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemPKIX := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	payload, _ := json.Marshal(h.auth0.claims("misconfigured@clients", testAudience, h.clock.Now(), "items:read"))
	for name, tok := range map[string]string{
		"alg none":           forgeCompact(t, forgeObject(t, "alg", "none"), string(payload), nil),
		"HS256 with the PEM": forgeCompact(t, forgeObject(t, "alg", "HS256", "kid", h.auth0.kid), string(payload), forgeHMAC(sha256.New, pemPKIX)),
		"HS256 with the DER": forgeCompact(t, forgeObject(t, "alg", "HS256"), string(payload), forgeHMAC(sha256.New, pubDER)),
	} {
		t.Run(name, func(t *testing.T) {
			var r tokenResponse
			reqs, recs := h.writes(func() { r = h.exchange(tok) })
			if r.Status != 400 || r.str("error") != "invalid_request" {
				t.Errorf("got %d %v, want 400 invalid_request", r.Status, r.Body)
			}
			assertNoWrites(t, h, reqs, recs)
		})
	}
}

func itoa(n int64) string { return big.NewInt(n).String() }

// padForm pads a form body with an ignored parameter to exactly n bytes.
func padForm(body string, n int) string {
	const name = "&pad="
	if len(body)+len(name) > n {
		panic("padForm: body too long")
	}
	return body + name + strings.Repeat("p", n-len(body)-len(name))
}

// padded is base64url with '=' padding (RFC 7515 §2 forbids it); s is
// lengthened with spaces until padding is needed.
func padded(s string) string {
	for len(s)%3 == 0 {
		s += " "
	}
	return base64.URLEncoding.EncodeToString([]byte(s))
}

// utf16le encodes ASCII text as UTF-16LE, which encoding/json does not read.
func utf16le(s string) string {
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		b.WriteByte(s[i])
		b.WriteByte(0)
	}
	return b.String()
}
