package bridge

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/big"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
)

// Fuzz targets for what parses attacker input: the subject token
// (FuzzVerify), the request body (FuzzParseRequest) and the claim helpers
// (FuzzClaims). Their seed corpora live in testdata/fuzz/<FuzzName>/ and run
// with every `go test`; a crasher the fuzzer finds is kept there too.
//
//	go test ./bridge -run '^$' -fuzz '^FuzzVerify$' -fuzztime 30s
//
// The FuzzVerify seeds are written by
//
//	go test ./bridge -run '^TestFuzzSeeds$' -update-fuzz-seeds
//
// which leaves other files (crashers) alone.

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the generated seeds in testdata/fuzz")

// fuzzNow is the pinned clock of FuzzVerify: seed tokens stay valid forever.
var fuzzNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const fuzzAudience = "https://bridge.fuzz.test/api"

// fuzzIssuers are two issuers with keys derived from fixed labels, not
// generated: the fuzzer runs the target in several processes, and the
// committed seeds must verify in each of them. The keys sign only for
// issuers that exist inside this test (*.fuzz.test, JWKS on loopback).
type fuzzIssuers struct {
	ed     ed25519.PrivateKey // issuer "eddsa": typ at+jwt, gty client-credentials
	es     *ecdsa.PrivateKey  // issuer "es256": scp, stt 1
	cfg    []IssuerConfig
	verify *verifier
}

func fuzzKeySeed(label string) []byte {
	s := sha256.Sum256([]byte("directus-bridge fuzz key " + label))
	return s[:]
}

func newFuzzIssuers(tb testing.TB, ctx context.Context) *fuzzIssuers {
	tb.Helper()
	fx := &fuzzIssuers{ed: ed25519.NewKeyFromSeed(fuzzKeySeed("eddsa"))}
	var err error
	if fx.es, err = ecdsa.ParseRawPrivateKey(elliptic.P256(), fuzzKeySeed("es256")); err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := jose.JSONWebKey{Key: fx.ed.Public(), KeyID: "fz-ed", Algorithm: "EdDSA", Use: "sig"}
		if r.URL.Path == "/es256" {
			key = jose.JSONWebKey{Key: fx.es.Public(), KeyID: "fz-es", Algorithm: "ES256", Use: "sig"}
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{key}})
	}))
	tb.Cleanup(srv.Close)
	fx.cfg = []IssuerConfig{
		{Name: "eddsa", Issuer: "https://eddsa.fuzz.test/", Audiences: []string{fuzzAudience}, JWKSURL: srv.URL + "/eddsa",
			Algorithms: []string{"EdDSA"}, RequireTyp: "at+jwt", RequiredClaims: map[string]any{"gty": "client-credentials"}},
		{Name: "es256", Issuer: "https://es256.fuzz.test", Audiences: []string{fuzzAudience}, JWKSURL: srv.URL + "/es256", UserIDs: UserIDsIssuer,
			Algorithms: []string{"ES256"}, RequiredClaims: map[string]any{"stt": 1}, ScopeClaims: []string{"scp"}},
	}
	ex, err := NewExchanger(Options{
		Issuers: fx.cfg, Store: NewMemoryStore(), Now: func() time.Time { return fuzzNow },
		VerifiedCacheSize: -1, // every input takes the whole path
		Limits:            LimitsConfig{PerIP: RateLimit{Rate: -1}, PerClient: RateLimit{Rate: -1}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	fx.verify = ex.verifier
	return fx
}

func (fx *fuzzIssuers) signEd(header, payload string) string {
	in := forgeB64(header) + "." + forgeB64(payload)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(fx.ed, []byte(in)))
}

func (fx *fuzzIssuers) signES(tb testing.TB, header, payload string) string {
	in := forgeB64(header) + "." + forgeB64(payload)
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(nil, fx.es, d[:])
	if err != nil {
		tb.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// fuzzVerifySeeds returns the FuzzVerify seeds by name; "valid-*" ones
// verify. Header and payload are deterministic (ES256 signatures are not).
func fuzzVerifySeeds(tb testing.TB, fx *fuzzIssuers) map[string]string {
	edHdr := `{"alg":"EdDSA","kid":"fz-ed","typ":"at+jwt"}`
	esHdr := `{"alg":"ES256","kid":"fz-es","typ":"at+jwt"}`
	now, exp := fuzzNow.Unix(), fuzzNow.Add(time.Hour).Unix()
	ed := func(extra string) string {
		return fmt.Sprintf(`{"iss":"https://eddsa.fuzz.test/","sub":"fuzz@clients","aud":%q,"iat":%d,"exp":%d,"scope":"items:read items:write","gty":"client-credentials"%s}`,
			fuzzAudience, now, exp, extra)
	}
	es := fmt.Sprintf(`{"iss":"https://es256.fuzz.test","sub":"task-service","aud":[%q,"other"],"iat":%d,"exp":%d,"scp":["items:read"],"stt":1}`,
		fuzzAudience, now, exp)
	validEd := fx.signEd(edHdr, ed(""))
	pub := fx.ed.Public().(ed25519.PublicKey)
	hmacSig := func(header, payload string, secret []byte) string {
		in := forgeB64(header) + "." + forgeB64(payload)
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	return map[string]string{
		"valid-eddsa":            validEd,
		"valid-es256":            fx.signES(tb, esHdr, es),
		"valid-eddsa-scope-list": fx.signEd(edHdr, ed(`,"scp":["a","b"],"nbf":`+strconv.FormatInt(now-10, 10))),
		"empty":                  "",
		"alg-none":               forgeB64(`{"alg":"none","typ":"at+jwt"}`) + "." + forgeB64(ed("")) + ".",
		"alg-none-signed":        strings.Replace(validEd, strings.Split(validEd, ".")[0], forgeB64(`{"alg":"none","kid":"fz-ed","typ":"at+jwt"}`), 1),
		"hs256-public-key":       hmacSig(`{"alg":"HS256","kid":"fz-ed","typ":"at+jwt"}`, ed(""), pub),
		"es256-for-eddsa-issuer": fx.signES(tb, esHdr, ed("")),
		"unknown-kid":            fx.signEd(`{"alg":"EdDSA","kid":"nope","typ":"at+jwt"}`, ed("")),
		"typ-jwt":                fx.signEd(`{"alg":"EdDSA","kid":"fz-ed","typ":"JWT"}`, ed("")),
		"crit":                   fx.signEd(`{"alg":"EdDSA","kid":"fz-ed","typ":"at+jwt","crit":["exp"],"exp":1}`, ed("")),
		"jwe":                    "eyJhbGciOiJSU0EtT0FFUC0yNTYiLCJlbmMiOiJBMTI4R0NNIn0.AAAA.BBBB.CCCC.DDDD",
		"nested-cty-jwt":         fx.signEd(`{"alg":"EdDSA","kid":"fz-ed","typ":"at+jwt","cty":"JWT"}`, validEd),
		"expired":                fx.signEd(edHdr, strings.Replace(ed(""), fmt.Sprint(exp), fmt.Sprint(now-3600), 1)),
		"wrong-aud":              fx.signEd(edHdr, strings.Replace(ed(""), fuzzAudience, "https://elsewhere.fuzz.test", 1)),
		"iss-no-slash":           fx.signEd(edHdr, strings.Replace(ed(""), "eddsa.fuzz.test/", "eddsa.fuzz.test", 1)),
		"dup-iss-signed":         fx.signEd(edHdr, `{"iss":"https://evil.fuzz.test/",`+ed("")[1:]),
		"exp-upper-signed":       fx.signEd(edHdr, strings.Replace(ed(""), `"exp":`+fmt.Sprint(exp), `"exp":1,"EXP":`+fmt.Sprint(exp), 1)),
		"nbf-huge-signed":        fx.signEd(edHdr, ed(`,"nbf":1e19`)),
		"iat-maxint-signed":      fx.signEd(edHdr, strings.Replace(ed(""), `"iat":`+fmt.Sprint(now), `"iat":9223372036854775807`, 1)),
		"bad-base64":             "eyJ!." + strings.SplitN(validEd, ".", 2)[1],
	}
}

// TestFuzzSeeds keeps the committed corpora honest: the FuzzVerify valid-*
// seeds still verify with the derived keys. With -update-fuzz-seeds it
// rewrites the generated seeds of every target.
func TestFuzzSeeds(t *testing.T) {
	fx := newFuzzIssuers(t, t.Context())
	if *updateFuzzSeeds {
		corpora := map[string]map[string][]any{"FuzzVerify": {}, "FuzzParseRequest": fuzzParseRequestSeeds(), "FuzzClaims": fuzzClaimsSeeds()}
		for name, tok := range fuzzVerifySeeds(t, fx) {
			corpora["FuzzVerify"][name] = []any{tok}
		}
		for target, seeds := range corpora {
			dir := filepath.Join("testdata", "fuzz", target)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, args := range seeds {
				var b strings.Builder
				b.WriteString("go test fuzz v1\n")
				for _, a := range args {
					switch a := a.(type) {
					case string:
						b.WriteString("string(" + strconv.Quote(a) + ")\n")
					case []byte:
						b.WriteString("[]byte(" + strconv.Quote(string(a)) + ")\n")
					default:
						t.Fatalf("seed %s/%s: type %T", target, name, a)
					}
				}
				if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	files, err := filepath.Glob(filepath.Join(dir, "valid-*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no valid-* seeds in %s (%v): run with -update-fuzz-seeds", dir, err)
	}
	for _, f := range files {
		tok := readFuzzString(t, f)
		if _, err := fx.verify.Verify(t.Context(), tok); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}
}

// readFuzzString reads a one-string "go test fuzz v1" file.
func readFuzzString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "string(") {
		t.Fatalf("%s: not a one-string fuzz file", path)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

// FuzzVerify feeds arbitrary subject tokens to the verifier. It must never
// panic, must refuse with a *TokenError whose reason reveals no internals,
// and may accept only a token signed by a fuzz issuer's key (which only the
// seeds carry) whose header and claims pass an independent strict check.
func FuzzVerify(f *testing.F) {
	fx := newFuzzIssuers(f, f.Context())
	// The seeds are the files in testdata/fuzz/FuzzVerify (see TestFuzzSeeds).
	signed := map[string]bool{} // canonical header.payload of every seed signed with a fuzz key
	for _, tok := range fuzzVerifySeeds(f, fx) {
		if parts := strings.Split(tok, "."); len(parts) == 3 && fuzzSignatureOK(fx, parts) {
			signed[parts[0]+"."+parts[1]] = true
		}
	}
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := fx.verify.Verify(context.Background(), raw)
		if err != nil {
			var te *TokenError
			if !errors.As(err, &te) {
				t.Fatalf("refusal is not a TokenError (a 5xx for the caller): %v", err)
			}
			for _, m := range []string{"go-jose", "oidc:", "fetching keys", "http", "json:"} {
				if strings.Contains(te.Reason, m) {
					t.Fatalf("reason %q leaks %q", te.Reason, m)
				}
			}
			return
		}
		// Accepted: the signature must verify independently of go-jose on
		// the bytes the verifier read, and those bytes must be a seed's.
		parts, ok := fuzzCanonical(raw)
		if !ok {
			t.Fatalf("accepted a token that is not a compact JWS: %q", raw)
		}
		if !signed[parts[0]+"."+parts[1]] || !fuzzSignatureOK(fx, parts) {
			t.Fatalf("accepted a token no fuzz key signed: %q", raw)
		}
		if msg := fuzzStrictCheck(fx, parts); msg != "" {
			t.Fatalf("accepted a signed token a strict check refuses (%s): %q", msg, raw)
		}
		if id.Client == "" || id.Issuer == nil || !fuzzNow.Before(id.Expiry.Add(id.Issuer.Leeway.D())) {
			t.Fatalf("accepted identity is incomplete or expired: %+v", id)
		}
	})
}

// fuzzCanonical returns the canonical base64url segments of a compact JWS
// as go-jose reads it (white space stripped, trailing bits ignored).
func fuzzCanonical(raw string) ([]string, bool) {
	raw = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, raw)
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, false
	}
	for i, p := range parts {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			return nil, false
		}
		parts[i] = base64.RawURLEncoding.EncodeToString(b)
	}
	return parts, true
}

// fuzzSignatureOK verifies a canonical JWS with crypto/ed25519 or
// crypto/ecdsa directly: an oracle that does not share go-jose's code.
func fuzzSignatureOK(fx *fuzzIssuers, parts []string) bool {
	var h struct {
		Alg string `json:"alg"`
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	sig, err2 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || json.Unmarshal(hb, &h) != nil {
		return false
	}
	in := []byte(parts[0] + "." + parts[1])
	switch h.Alg {
	case "EdDSA":
		return ed25519.Verify(fx.ed.Public().(ed25519.PublicKey), in, sig)
	case "ES256":
		if len(sig) != 64 {
			return false
		}
		d := sha256.Sum256(in)
		return ecdsa.Verify(&fx.es.PublicKey, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
	return false
}

// fuzzStrictCheck is an independent reading of the rules a token must meet:
// no repeated or case-variant members, exact iss, an accepted aud, dates
// that are numbers and hold with the leeway, the issuer's algorithm, typ and
// required claims. It returns what fails, or "".
func fuzzStrictCheck(fx *fuzzIssuers, parts []string) string {
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	hdr, msg := fuzzStrictObject(hb)
	if msg != "" {
		return "header: " + msg
	}
	claims, msg := fuzzStrictObject(pb)
	if msg != "" {
		return "payload: " + msg
	}
	var iss string
	if json.Unmarshal(claims["iss"], &iss) != nil {
		return "iss"
	}
	var cfg *IssuerConfig
	for i := range fx.cfg {
		if fx.cfg[i].Issuer == iss {
			cfg = &fx.cfg[i]
		}
	}
	if cfg == nil {
		return "issuer not trusted"
	}
	var alg, typ string
	_ = json.Unmarshal(hdr["alg"], &alg)
	_ = json.Unmarshal(hdr["typ"], &typ)
	if !slices.Contains(cfg.Algorithms, alg) {
		return "alg"
	}
	if cfg.RequireTyp != "" && !strings.EqualFold(strings.TrimPrefix(strings.ToLower(typ), "application/"), cfg.RequireTyp) {
		return "typ"
	}
	if _, ok := hdr["crit"]; ok {
		return "crit"
	}
	leeway := time.Duration(30) * time.Second
	date := func(name string) (int64, string) {
		raw, ok := claims[name]
		if !ok {
			return 0, ""
		}
		var f float64
		if raw[0] == '"' || json.Unmarshal(raw, &f) != nil || f < 0 || f > 253402300799 {
			return 0, name + " is not a NumericDate"
		}
		return int64(f), ""
	}
	exp, m1 := date("exp")
	nbf, m2 := date("nbf")
	iat, m3 := date("iat")
	if m := m1 + m2 + m3; m != "" {
		return m
	}
	now := fuzzNow.Unix()
	switch {
	case exp == 0 || now >= exp+int64(leeway/time.Second):
		return "exp"
	case nbf > now+int64(leeway/time.Second):
		return "nbf"
	case iat > now+int64(leeway/time.Second):
		return "iat"
	}
	var aud []string
	var one string
	if json.Unmarshal(claims["aud"], &one) == nil {
		aud = []string{one}
	} else if json.Unmarshal(claims["aud"], &aud) != nil {
		return "aud"
	}
	if !slices.Contains(aud, fuzzAudience) {
		return "aud"
	}
	for name, want := range cfg.RequiredClaims {
		if !claimEquals(claims[name], want) {
			return name
		}
	}
	var sub string
	if json.Unmarshal(claims["sub"], &sub) != nil || sub == "" {
		return "sub"
	}
	return ""
}

// fuzzStrictObject reads a JSON object whose member names are unique and
// do not spell a registered name in another case.
func fuzzStrictObject(b []byte) (map[string]json.RawMessage, string) {
	registered := []string{"alg", "typ", "enc", "crit", "kid", "cty", "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "nonce", "at_hash"}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, "not an object"
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, "malformed"
		}
		name := tok.(string)
		if _, dup := out[name]; dup {
			return nil, "repeated member " + name
		}
		for _, r := range registered {
			if name != r && strings.EqualFold(name, r) {
				return nil, "member " + name + " spells " + r
			}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, "malformed"
		}
		out[name] = v
	}
	return out, ""
}

func fuzzParseRequestSeeds() map[string][]any {
	const form, js = "application/x-www-form-urlencoded", "application/json"
	valid := "grant_type=" + url.QueryEscape(GrantTypeTokenExchange) + "&subject_token=a.b.c&subject_token_type=" + url.QueryEscape(TokenTypeAccessToken)
	jsonValid := `{"grant_type":"` + GrantTypeTokenExchange + `","subject_token":"a.b.c","subject_token_type":"` + TokenTypeJWT + `"}`
	seed := func(ct, query, body string) []any { return []any{ct, query, []byte(body)} }
	return map[string][]any{
		"form-valid":             seed(form, "", valid),
		"form-scope":             seed(form+"; charset=utf-8", "", valid+"&scope=items%3Aread+%20items%3Awrite"),
		"form-scope-blank":       seed(form, "", valid+"&scope=+"),
		"form-repeated":          seed(form, "", valid+"&subject%5Ftoken=x"),
		"form-semicolon":         seed(form, "", valid+";scope=x"),
		"form-bad-escape":        seed(form, "", valid+"&x=%zz"),
		"form-query":             seed(form, "subject_token=a.b.c", valid),
		"form-actor":             seed(form, "", valid+"&actor_token=x&actor_token_type=y"),
		"form-binary-token":      seed(form, "", "grant_type="+url.QueryEscape(GrantTypeTokenExchange)+"&subject_token=%ff%00%c3&subject_token_type="+url.QueryEscape(TokenTypeJWT)),
		"json-valid":             seed(js+"; charset=utf-8", "", jsonValid),
		"json-scope-list":        seed(js, "", strings.TrimSuffix(jsonValid, "}")+`,"scope":["a","b c"]}`),
		"json-escaped-duplicate": seed(js, "", strings.TrimSuffix(jsonValid, "}")+`,"subject\u005ftoken":"x"}`),
		"json-trailing-brace":    seed(js, "", jsonValid+"}"),
		"json-number":            seed(js, "", `{"subject_token":1}`),
		"json-null":              seed(js, "", "null"),
		"json-deep":              seed(js, "", `{"x":`+strings.Repeat("[", 1000)+strings.Repeat("]", 1000)+"}"),
		"text-plain":             seed("text/plain", "", valid),
		"no-content-type":        seed("", "", valid),
		"other-grant":            seed(form, "", "grant_type=client_credentials&subject_token=x"),
	}
}

// FuzzParseRequest feeds arbitrary bodies, content types and URL queries to
// the request decoder. It must never panic; a refusal is 400, 413 or 415
// with an RFC 6749 code; an accepted request must be what an independent
// parse of the body says, and must round-trip through a form body.
func FuzzParseRequest(f *testing.F) {
	const form = "application/x-www-form-urlencoded"
	// The seeds are in testdata/fuzz/FuzzParseRequest. None is over
	// MaxRequestBytes: minimising a 64 KiB input stalls the fuzzer, and
	// TestHostileTokenCorpus covers 413.
	f.Fuzz(func(t *testing.T, contentType, query string, body []byte) {
		req, perr := fuzzParse(contentType, query, body)
		mt, _, _ := mime.ParseMediaType(contentType)
		if perr != nil {
			switch {
			case perr.Status == 413:
				if len(body) <= MaxRequestBytes {
					t.Fatalf("413 for %d bytes", len(body))
				}
			case perr.Status == 415:
				if mt == form || mt == "application/json" {
					t.Fatalf("415 for %q", contentType)
				}
			case perr.Status != 400:
				t.Fatalf("status %d: %+v", perr.Status, perr)
			}
			if len(body) > MaxRequestBytes && perr.Status != 413 {
				t.Fatalf("%d bytes answered %d, want 413", len(body), perr.Status)
			}
			switch perr.Code {
			case "invalid_request", "unsupported_grant_type", "invalid_scope":
			default:
				t.Fatalf("error code %q", perr.Code)
			}
			if perr.Description == "" {
				t.Fatalf("empty error_description")
			}
			return
		}
		if query != "" || len(body) > MaxRequestBytes {
			t.Fatalf("accepted with query %q and %d bytes", query, len(body))
		}
		if req.SubjectToken == "" {
			t.Fatalf("accepted without a subject_token")
		}
		if req.Scopes != nil && (len(req.Scopes) == 0 || slices.ContainsFunc(req.Scopes, func(s string) bool { return strings.TrimSpace(s) != s || s == "" })) {
			t.Fatalf("scopes %q", req.Scopes)
		}
		// An independent reading of the body agrees.
		var subject string
		switch mt {
		case form:
			vals, err := url.ParseQuery(string(body))
			if err != nil {
				t.Fatalf("accepted a form url.ParseQuery refuses: %v", err)
			}
			subject = vals.Get("subject_token")
		case "application/json":
			if !json.Valid(body) {
				t.Fatalf("accepted a JSON body that is not valid JSON: %q", body)
			}
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatalf("accepted a JSON body json.Unmarshal refuses: %v", err)
			}
			subject, _ = m["subject_token"].(string)
		default:
			t.Fatalf("accepted content type %q", contentType)
		}
		if subject != req.SubjectToken {
			t.Fatalf("subject_token %q, an independent parse says %q", req.SubjectToken, subject)
		}
		// Round trip through a form body.
		v := url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {req.SubjectToken},
			"subject_token_type": {TokenTypeAccessToken}}
		if req.Scopes != nil {
			v.Set("scope", strings.Join(req.Scopes, " "))
		}
		again, perr := fuzzParse(form, "", []byte(v.Encode()))
		if perr != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, perr, req)
		}
		if utf8.ValidString(req.SubjectToken) {
			js, _ := json.Marshal(map[string]any{"grant_type": GrantTypeTokenExchange, "subject_token": req.SubjectToken,
				"subject_token_type": TokenTypeJWT, "scope": req.Scopes})
			if req.Scopes == nil {
				js, _ = json.Marshal(map[string]any{"grant_type": GrantTypeTokenExchange, "subject_token": req.SubjectToken,
					"subject_token_type": TokenTypeJWT})
			}
			if again, perr := fuzzParse("application/json", "", js); perr != nil || !reflect.DeepEqual(again, req) {
				t.Fatalf("JSON round trip: %+v, %v; want %+v", again, perr, req)
			}
		}
	})
}

func fuzzParse(contentType, query string, body []byte) (Request, *Error) {
	r := httptest.NewRequest(http.MethodPost, "/oauth/token", bytes.NewReader(body))
	r.URL.RawQuery = query
	r.Header.Set("Content-Type", contentType)
	return parseRequest(httptest.NewRecorder(), r)
}

func fuzzClaimsSeeds() map[string][]any {
	seed := func(raw, want string) []any { return []any{[]byte(raw), want} }
	return map[string][]any{
		"scope-string":     seed(`"items:read  items:write\t"`, "items:read"),
		"unicode-spaces":   seed(`"a\u00a0b\u2003c"`, "a"),
		"list":             seed(`["a","b c",1,null,["d"]]`, "a"),
		"empty-list":       seed(`[]`, ""),
		"number":           seed(`1`, "1"),
		"number-float":     seed(` 1.0 `, ""),
		"date":             seed(`1893553445`, ""),
		"date-string":      seed(`"1893553445"`, "1893553445"),
		"date-huge":        seed(`1e19`, ""),
		"date-max-int64":   seed(`9223372036854775807`, ""),
		"date-negative":    seed(`-1e300`, ""),
		"bool":             seed(`true`, "true"),
		"null":             seed(`null`, ""),
		"object":           seed(`{"a":"b"}`, "b"),
		"invalid":          seed(`"abc`, "abc"),
		"invalid-utf8":     seed("\"\xff\xfe\"", "\ufffd\ufffd"),
		"trailing-garbage": seed(`"a" "b"`, "a"),
	}
}

// FuzzClaims feeds arbitrary JSON to the claim helpers. They must never
// panic; a JSON string reads as itself (split on white space for scopes), a
// list as its strings (nothing else), null as nothing, and a NumericDate
// never lands on the wrong side of the epoch (a far-future nbf must not
// read as a past one).
func FuzzClaims(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte, want string) {
		msg := json.RawMessage(raw)
		split, whole := stringOrList(msg, true), stringOrList(msg, false)
		for _, w := range []any{want, float64(len(want)), len(want), int64(len(want)), uint64(len(want)), true, nil, []any{want}} {
			claimEquals(msg, w)
		}
		client := stringClaim(msg)
		date, ok := numericDate(msg)
		// A client id is a string claim, or a number written out.
		switch id := clientClaim(msg); {
		case client != "" && id != client:
			t.Fatalf("clientClaim(%q) = %q, want the string %q", raw, id, client)
		case client == "" && id != "":
			var n json.Number
			if json.Unmarshal(raw, &n) != nil {
				t.Fatalf("clientClaim(%q) = %q from neither a string nor a number", raw, id)
			}
		}

		var v any
		if json.Unmarshal(raw, &v) != nil {
			if split != nil || whole != nil || client != "" || ok {
				t.Fatalf("invalid JSON read as %q %q %q %v", split, whole, client, date)
			}
			return
		}
		switch v := v.(type) {
		case string:
			if !slices.Equal(split, strings.Fields(v)) {
				t.Fatalf("stringOrList(%q, true) = %q, want strings.Fields = %q", raw, split, strings.Fields(v))
			}
			if !slices.Equal(whole, []string{v}) || client != v || !claimEquals(msg, v) {
				t.Fatalf("string %q read as %q / %q / claimEquals false", raw, whole, client)
			}
			if ok {
				t.Fatalf("string %q read as a NumericDate", raw)
			}
		case []any:
			var strs []string
			for _, e := range v {
				if s, isStr := e.(string); isStr {
					strs = append(strs, s)
					if !claimEquals(msg, s) {
						t.Fatalf("claimEquals(%q, %q) = false for a list element", raw, s)
					}
				}
			}
			if !slices.Equal(split, strs) || !slices.Equal(whole, strs) {
				t.Fatalf("list %q read as %q / %q, want %q", raw, split, whole, strs)
			}
		case float64:
			if !ok && !math.IsInf(v, 0) && v >= 0 && v <= 253402300799 {
				t.Fatalf("number %q (within years 1970-9999) is not a NumericDate", raw)
			}
			if ok && (v >= 0) != (date.Unix() >= 0) {
				t.Fatalf("NumericDate %q read as %v: a far-future date must not become a past one", raw, date)
			}
			if ok && v >= 0 && v <= 253402300799 && date.Unix() != int64(v) {
				t.Fatalf("NumericDate %q read as %d", raw, date.Unix())
			}
			if !slices.Equal(whole, []string{string(raw)}) && !slices.Equal(whole, []string{strings.TrimSpace(string(raw))}) {
				t.Fatalf("number %q read as %q", raw, whole)
			}
		case nil:
			// null is no value: not a scope, not a claim value to match.
			if split != nil || whole != nil || ok || client != "" {
				t.Fatalf("null read as %q / %q / %v / %q", split, whole, date, client)
			}
		case bool:
			if ok || client != "" {
				t.Fatalf("bool %q read as a date or a client", raw)
			}
		}
	})
}
