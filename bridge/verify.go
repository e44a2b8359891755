package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/directus-bridge/directus-bridge/mapping"
	jose "github.com/go-jose/go-jose/v4"
)

// IssuerConfig describes one trusted token issuer.
type IssuerConfig struct {
	// Name is how rules and logs refer to the issuer.
	Name string `yaml:"name"`
	// Issuer MUST equal the token's iss exactly (a trailing slash matters).
	Issuer string `yaml:"issuer"`
	// Audiences: the token's aud must contain at least one of them.
	Audiences []string `yaml:"audiences"`
	// JWKSURL skips discovery; otherwise keys come from
	// Issuer/.well-known/openid-configuration.
	JWKSURL string `yaml:"jwks_url"`
	// Algorithms allowed (default RS256). none and HMAC are never allowed.
	Algorithms []string `yaml:"algorithms"`
	// Leeway is the clock skew allowed on exp, nbf and iat (default 30s).
	Leeway Duration `yaml:"leeway"`
	// RequiredClaims must all be present with these values (for example
	// gty: client-credentials for Auth0, stt: 1 for SuperTokens). A name
	// starting with "/" is a JSON Pointer into nested claims, as in rules.
	RequiredClaims map[string]any `yaml:"required_claims"`
	// RequireTyp, when set, must equal the JWT header typ (e.g. at+jwt),
	// compared case-insensitively with an optional "application/" prefix.
	RequireTyp string `yaml:"require_typ"`
	// ScopeClaims are where scopes are read from, in order; every one present
	// is merged (default: scope, scp). Strings are split on spaces. Each is
	// a claim name or a JSON Pointer ("/scopes/granted").
	ScopeClaims []string `yaml:"scope_claims"`
	// ClientClaim names the client (default sub): a claim name or a JSON
	// Pointer ("/kubernetes.io/serviceaccount/name"). Its value is a string,
	// or a number (written without exponent).
	ClientClaim string `yaml:"client_claim"`
	// UserIDs says how the Directus user of a client is named: "hook" (the
	// default) gives the hook extension's ids, uuidv5(namespace, client),
	// with external_identifier = client; "issuer" gives issuer-scoped ids,
	// uuidv5(namespace, "directus-bridge" NUL issuer NUL client), with
	// external_identifier = "<name>:<client>". At most one issuer may use
	// hook ids: two issuers with a client of the same name would otherwise
	// name the same user.
	UserIDs string `yaml:"user_ids"`
	// Timeout bounds each request to the issuer: discovery, and each JWKS
	// fetch (default 10s). A verification waiting for keys gives up at its
	// own deadline, which may come first.
	Timeout Duration `yaml:"timeout"`
	// IDFromIssuer is the former name of user ids from the issuer. It is
	// refused with a message, because its ids (issuer and client
	// concatenated) were ambiguous.
	IDFromIssuer *bool `yaml:"id_from_issuer" deprecated:"user_ids"`
}

// User id schemes of IssuerConfig.UserIDs.
const (
	UserIDsHook   = "hook"
	UserIDsIssuer = "issuer"
)

var allowedAlgs = map[string]bool{
	oidc.RS256: true, oidc.RS384: true, oidc.RS512: true,
	oidc.ES256: true, oidc.ES384: true, oidc.ES512: true,
	oidc.PS256: true, oidc.PS384: true, oidc.PS512: true,
	oidc.EdDSA: true,
}

func (c *IssuerConfig) setDefaults() {
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{oidc.RS256}
	}
	if c.Leeway == 0 {
		c.Leeway = Duration(30 * time.Second)
	}
	if len(c.ScopeClaims) == 0 {
		c.ScopeClaims = []string{"scope", "scp"}
	}
	if c.ClientClaim == "" {
		c.ClientClaim = "sub"
	}
	if c.UserIDs == "" {
		c.UserIDs = UserIDsHook
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(defaultIdPTimeout)
	}
}

// ValidateIssuer lists every problem with an issuer's configuration.
func ValidateIssuer(c IssuerConfig) []error {
	c.setDefaults()
	return c.validate()
}

// validate lists every problem with the issuer (defaults already applied),
// each an *IssuerError (Index 0: the caller sets it).
func (c *IssuerConfig) validate() []error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &IssuerError{Name: c.Name, Field: field, Reason: fmt.Sprintf(format, a...), With: -1})
	}
	if c.Name == "" {
		bad("name", "name is required")
	}
	if !strings.HasPrefix(c.Issuer, "https://") && !strings.HasPrefix(c.Issuer, "http://") {
		bad("issuer", "issuer must be an http(s) URL, got %q", c.Issuer)
	}
	if len(c.Audiences) == 0 {
		bad("audiences", "at least one audience is required")
	}
	for _, a := range c.Algorithms {
		if !allowedAlgs[a] {
			bad("algorithms", "algorithm %q is not allowed (use RS*, ES*, PS* or EdDSA)", a)
		}
	}
	if c.Leeway < 0 || c.Leeway.D() > 5*time.Minute {
		bad("leeway", "leeway must be between 0 and 5m")
	}
	if c.Timeout < 0 || c.Timeout.D() > 2*time.Minute {
		bad("timeout", "timeout must be between 0 and 2m")
	}
	if c.JWKSURL != "" && !strings.HasPrefix(c.JWKSURL, "https://") && !strings.HasPrefix(c.JWKSURL, "http://") {
		bad("jwks_url", "jwks_url must be an http(s) URL")
	}
	if strings.ContainsFunc(c.Issuer, unicode.IsControl) {
		bad("issuer", "issuer must not contain control characters")
	}
	switch c.UserIDs {
	case UserIDsHook:
	case UserIDsIssuer:
		if strings.Contains(c.Name, ":") {
			bad("name", "a name with user_ids: issuer must not contain \":\" (it starts the users' external identifiers)")
		}
	default:
		bad("user_ids", "user_ids must be hook or issuer, got %q", c.UserIDs)
	}
	if _, err := mapping.ParsePath(c.ClientClaim); err != nil {
		bad("client_claim", "client_claim: %v", err)
	}
	for i, name := range c.ScopeClaims {
		if _, err := mapping.ParsePath(name); err != nil {
			bad(fmt.Sprintf("scope_claims[%d]", i+1), "scope_claims: %v", err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.RequiredClaims)) {
		if _, err := mapping.ParsePath(name); err != nil {
			bad("required_claims."+name, "required_claims: %v", err)
		}
	}
	if c.IDFromIssuer != nil {
		bad("id_from_issuer", "id_from_issuer was replaced by user_ids: issuer, whose ids differ; see the upgrade notes before changing ids")
	}
	return errs
}

// IssuerError is one problem with one issuer's configuration. Index and
// Field say where it is (for a configuration check to point at the line);
// the message names the issuer.
type IssuerError struct {
	// Index is the issuer's position in the list given to ValidateIssuers,
	// from 0 (0 from ValidateIssuer).
	Index int
	// Name is the issuer's name.
	Name string
	// Field is the issuer's YAML key the problem is about, or "" for the
	// issuer as a whole.
	Field string
	// Reason is what is wrong, without the issuer's name.
	Reason string
	// With is, for a problem between issuers, the index of the earlier
	// issuer involved (of the same name, the same issuer, the first with
	// hook ids); -1 otherwise.
	With int
	// among: a problem between issuers, whose Reason names them all.
	among bool
}

func (e *IssuerError) Error() string {
	if e.among {
		return e.Reason
	}
	return fmt.Sprintf("issuer %q: %s", e.Name, e.Reason)
}

// ValidateIssuers lists every problem with a set of issuers, each one's and
// those between them: names and issuers are unique, and at most one issuer
// uses hook ids. Every error is an *IssuerError; a problem between issuers
// is reported at the later one.
func ValidateIssuers(issuers []IssuerConfig) []error {
	var errs []error
	names, urls := map[string]int{}, map[string]int{}
	var hook []string
	hookAt, firstHook := -1, -1
	for i, c := range issuers {
		for _, err := range ValidateIssuer(c) {
			if ie, ok := err.(*IssuerError); ok {
				ie.Index = i
			}
			errs = append(errs, err)
		}
		c.setDefaults()
		if j, dup := names[c.Name]; dup {
			errs = append(errs, &IssuerError{Index: i, Name: c.Name, Field: "name", Reason: "the name is used twice", With: j})
		} else {
			names[c.Name] = i
		}
		if j, dup := urls[c.Issuer]; dup {
			errs = append(errs, &IssuerError{Index: i, Name: c.Name, Field: "issuer",
				Reason: fmt.Sprintf("issuer %s is configured twice", c.Issuer), With: j})
		} else {
			urls[c.Issuer] = i
		}
		if c.UserIDs == UserIDsHook {
			hook = append(hook, c.Name)
			switch len(hook) {
			case 1:
				firstHook = i
			case 2:
				hookAt = i
			}
		}
	}
	if len(hook) > 1 {
		errs = append(errs, &IssuerError{Index: hookAt, Name: issuers[hookAt].Name, Field: "user_ids", among: true, With: firstHook,
			Reason: fmt.Sprintf("issuers %s all use hook user ids (user_ids: hook, the default): at most one may, "+
				"or a client of one could receive the Directus user of a client of the same name at another; "+
				"set user_ids: issuer on all but the issuer the hook extension served", strings.Join(hook, ", "))})
	}
	return errs
}

// Identity is a verified subject token.
type Identity struct {
	Issuer    *IssuerConfig
	Client    string
	Audiences []string
	Scopes    []string            // sorted, unique
	Claims    map[string][]string // string-or-list claims, normalised
	// Raw are all the claims as decoded JSON (numbers as json.Number),
	// for claim paths and conditions.
	Raw    map[string]any
	Expiry time.Time
	// Fingerprint identifies the subject token in logs without revealing it.
	Fingerprint string

	// signed are the claims as signed, kept for the records (recordClaims).
	signed map[string]json.RawMessage

	// decided memoises the mapping of this identity (exchangeVerified): a
	// cached identity is presented again and again by a returning client.
	decided atomic.Pointer[decided]
}

// TokenError is a refused subject token; Reason is safe to show the caller.
// Expired is set when the token was refused for its exp alone: the proxy
// answers it as Directus answers an expired token (TOKEN_EXPIRED), so that
// clients fetch a new one.
type TokenError struct {
	Reason  string
	Expired bool
}

func (e *TokenError) Error() string { return "token refused: " + e.Reason }

func refuse(format string, a ...any) error { return &TokenError{Reason: fmt.Sprintf(format, a...)} }

// header is the part of the JOSE header the bridge inspects itself
// (readHeader).
type header struct {
	Alg, Typ, Enc string
	Crit          json.RawMessage
}

// maxHeaderBytes and maxHeaderMembers bound a JOSE header. Issuers write
// a few short parameters (alg, kid, typ: about a hundred bytes; an x5c
// certificate fits too); go-jose, which parses the header again, pays
// about 50 ns a byte and 2.5 µs a member for it, so that a header filling
// a request would cost more than ten ordinary verifications.
const (
	maxHeaderBytes   = 2 << 10
	maxHeaderMembers = 32
)

// Verify checks raw and returns the identity it proves.
//
// The work before the signature check runs for any caller, so it is
// linear in len(raw) and small: the header is decoded and checked in full
// (it chooses the algorithm and key, and go-jose reads it too), of the
// payload only iss is read (it chooses the issuer). The payload is checked
// in full only once its signature holds, and iss again on what was signed.
func (v *verifier) Verify(ctx context.Context, raw string) (*Identity, error) {
	id, _, err := v.verify(ctx, raw)
	return id, err
}

// verify is Verify, telling also whether the identity came from the
// verified-token cache.
func (v *verifier) verify(ctx context.Context, raw string) (*Identity, bool, error) {
	now := v.now()
	set := v.issuers.Load() // once: the issuers of this verification
	if id := v.cache.get(raw, now); id != nil && set.trusts(id.Issuer) {
		return id, true, nil
	}
	id, err := v.verifyNew(ctx, raw, set, now)
	return id, false, err
}

// cached reports whether raw is in the verified-token cache, live.
func (v *verifier) cached(raw string) bool {
	id := v.cache.get(raw, v.now())
	return id != nil && v.issuers.Load().trusts(id.Issuer)
}

// verifyNew verifies raw, not found in the cache, against the issuers of
// set.
func (v *verifier) verifyNew(ctx context.Context, raw string, set *issuerSet, now time.Time) (*Identity, error) {
	hseg, rest, _ := strings.Cut(raw, ".")
	pseg, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") {
		if strings.Count(raw, ".") == 4 {
			return nil, refuse("encrypted tokens (JWE) are not accepted")
		}
		return nil, refuse("not a signed JWT")
	}
	h, err := readHeader(hseg)
	if err != nil {
		return nil, err
	}
	if h.Enc != "" {
		return nil, refuse("encrypted tokens (JWE) are not accepted")
	}
	if len(h.Crit) > 0 {
		return nil, refuse("JWT header has crit parameters the bridge does not understand")
	}
	payload, err := base64.RawURLEncoding.DecodeString(pseg)
	if err != nil {
		return nil, refuse("malformed JWT payload")
	}
	iss, err := unverifiedIssuer(payload)
	if err != nil {
		return nil, refuse("malformed JWT payload")
	}
	k := set.byIss[iss]
	if k == nil {
		return nil, refuse("issuer is not trusted")
	}
	cfg := k.cfg
	if !slices.Contains(cfg.Algorithms, h.Alg) {
		return nil, refuse("algorithm %q is not allowed for issuer %s", h.Alg, cfg.Name)
	}
	if cfg.RequireTyp != "" && !typMatches(h.Typ, cfg.RequireTyp) {
		return nil, refuse("token type %q is not %q", h.Typ, cfg.RequireTyp)
	}
	keys, err := k.keys(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errKeysUnavailable, err)
	}
	signed, err := keys.verify(ctx, raw, cfg.signatureAlgorithms())
	if err != nil {
		if errors.Is(err, errFetchingKeys) {
			return nil, fmt.Errorf("%w: %v", errKeysUnavailable, err)
		}
		return nil, refuse("signature or issuer check failed")
	}
	if !bytes.Equal(signed, payload) {
		return nil, refuse("signature or issuer check failed") // go-jose read other bytes
	}
	claims, decoded, err := verifiedClaims(signed)
	if err != nil {
		return nil, refuse("malformed JWT payload")
	}
	if !registeredStrings(claims) || stringClaim(claims["iss"]) != cfg.Issuer {
		return nil, refuse("signature or issuer check failed")
	}
	id, err := v.check(cfg, claims, decoded, now)
	if err != nil {
		return nil, err
	}
	id.Fingerprint = Fingerprint(raw)
	v.cache.put(raw, id, now)
	return id, nil
}

// trusts reports whether raw has the shape of a signed JWT whose unverified
// iss is a trusted issuer's, verifying nothing: it tells the proxy which
// credentials are the bridge's to exchange (and never to forward) from those
// it passes to Directus untouched (Directus's own JWTs, static tokens). Its
// work is one base64 decoding and one scan of the payload's member names, or
// a lookup in the verified-token cache.
func (v *verifier) trusts(raw string) bool {
	if v.cached(raw) {
		return true
	}
	_, rest, _ := strings.Cut(raw, ".")
	pseg, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") || base64.RawURLEncoding.DecodedLen(len(pseg)) > maxTrustedPayload {
		return false
	}
	payload, err := base64.RawURLEncoding.DecodeString(pseg)
	if err != nil {
		return false
	}
	iss, err := unverifiedIssuer(payload)
	return err == nil && iss != "" && v.issuers.Load().byIss[iss] != nil
}

// maxTrustedPayload bounds the payload trusts decodes: a credential larger
// than any request header Directus accepts is not one to exchange.
const maxTrustedPayload = 64 << 10

// readHeader decodes the JOSE header segment: at most maxHeaderBytes of
// valid JSON, an object (or null, which sets nothing) of at most
// maxHeaderMembers members, none repeated or spelling a registered name in
// another case.
func readHeader(seg string) (header, error) {
	var h header
	if base64.RawURLEncoding.DecodedLen(len(seg)) > maxHeaderBytes {
		return h, refuse("JWT header is over %d bytes", maxHeaderBytes)
	}
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil || !json.Valid(b) {
		return h, refuse("malformed JWT header")
	}
	var o jsonObject
	switch err := o.scan(b); {
	case errors.Is(err, errNotObject):
		if string(bytes.TrimSpace(b)) == "null" {
			return h, nil
		}
		return h, refuse("malformed JWT header")
	case err != nil:
		return h, refuse("malformed JWT header")
	case len(o.members) > maxHeaderMembers:
		return h, refuse("JWT header has more than %d parameters", maxHeaderMembers)
	case o.unique(registeredHeader) != nil:
		return h, refuse("malformed JWT header")
	}
	for i := range o.members {
		var err error
		switch string(o.name(i)) {
		case "alg":
			err = json.Unmarshal(o.value(i), &h.Alg)
		case "typ":
			err = json.Unmarshal(o.value(i), &h.Typ)
		case "enc":
			err = json.Unmarshal(o.value(i), &h.Enc)
		case "crit":
			err = json.Unmarshal(o.value(i), &h.Crit)
		}
		if err != nil {
			return h, refuse("malformed JWT header")
		}
	}
	return h, nil
}

// unverifiedIssuer reads iss from a payload whose signature is not checked
// yet, doing as little as it can with bytes any caller chooses: one scan of
// the top-level member names, in time linear in len(b), for the one named
// iss; a repeated iss is malformed. The payload is checked in full
// (verifiedClaims) once its signature holds. A payload that is not an
// object is malformed, but null, which names no issuer.
func unverifiedIssuer(b []byte) (string, error) {
	s := memberScanner{b: b}
	var iss []byte
	for {
		m, ok, err := s.next()
		if err != nil {
			if errors.Is(err, errNotObject) && string(bytes.TrimSpace(b)) == "null" {
				return "", nil
			}
			return "", err
		}
		if !ok {
			break
		}
		if !isIss(b[m.name.start:m.name.end], m.plain) {
			continue
		}
		if iss != nil {
			return "", errors.New(`member "iss" is repeated`)
		}
		iss = b[m.value.start:m.value.end]
	}
	var v string
	if iss != nil {
		if err := json.Unmarshal(iss, &v); err != nil {
			return "", err
		}
	}
	return v, nil
}

// isIss reports whether the member name raw (as written) is "iss".
func isIss(raw []byte, plain bool) bool {
	if plain {
		return string(raw) == "iss"
	}
	// Only an escape can spell ASCII otherwise (invalid UTF-8 reads as
	// U+FFFD), and an escape spells one character in at most six bytes.
	if len(raw) > 3*6 || bytes.IndexByte(raw, '\\') < 0 {
		return false
	}
	var buf [3 * 6 * utf8.UTFMax]byte
	name, ok := unquoteName(buf[:0], raw)
	return ok && string(name) == "iss"
}

// verifiedClaims decodes a payload whose signature holds: valid JSON, an
// object whose members are unique and spell no registered name in another
// case. It returns the members as written and the whole as decoded JSON,
// numbers as json.Number (exact, as the rules compare them).
func verifiedClaims(b []byte) (map[string]json.RawMessage, map[string]any, error) {
	var o jsonObject
	if err := o.scan(b); err != nil {
		return nil, nil, err
	}
	if err := o.unique(registeredClaims); err != nil {
		return nil, nil, err
	}
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(b, &claims); err != nil {
		return nil, nil, err
	}
	raw, err := decodeClaims(b)
	if err != nil {
		return nil, nil, err
	}
	return claims, raw, nil
}

// decodeClaims decodes a JSON object of claims, numbers as json.Number.
// A member repeated in a nested object is refused (nestedUnique).
func decodeClaims(b []byte) (map[string]any, error) {
	if err := nestedUnique(b); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// claimJSON is the claim that name (a claim name or a JSON Pointer) names,
// as JSON; nil when it is not there.
func claimJSON(claims map[string]json.RawMessage, raw map[string]any, name string) json.RawMessage {
	if !strings.HasPrefix(name, "/") {
		return claims[name]
	}
	p, err := mapping.ParsePath(name)
	if err != nil {
		return nil
	}
	v, ok := p.Lookup(raw)
	if !ok {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// registeredStrings reports whether the registered claims that go-oidc
// read as strings are strings (or null) where present, as go-oidc, which
// verified tokens before, required.
func registeredStrings(claims map[string]json.RawMessage) bool {
	for _, name := range []string{"iss", "sub", "nonce", "at_hash"} {
		if raw, ok := claims[name]; ok {
			var s *string
			if json.Unmarshal(raw, &s) != nil {
				return false
			}
		}
	}
	return true
}

// signatureAlgorithms is the issuer's allow-list for go-jose.
func (c *IssuerConfig) signatureAlgorithms() []jose.SignatureAlgorithm {
	algs := make([]jose.SignatureAlgorithm, len(c.Algorithms))
	for i, a := range c.Algorithms {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	return algs
}

// audiences reads aud as go-oidc did: a string, or a list of strings.
func audiences(raw json.RawMessage) ([]string, bool) {
	if len(raw) == 0 {
		return nil, true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, true
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list, true
	}
	return nil, false
}

// check applies the issuer's rules to verified claims.
func (v *verifier) check(cfg *IssuerConfig, claims map[string]json.RawMessage, raw map[string]any, now time.Time) (*Identity, error) {
	leeway := cfg.Leeway.D()
	// Dates are JSON numbers (go-oidc, which verified tokens before,
	// accepted quoted numbers and wrapped huge ones into the past).
	var dates [3]time.Time
	for i, name := range []string{"exp", "nbf", "iat"} {
		raw, ok := claims[name]
		if !ok {
			continue
		}
		if dates[i], ok = numericDate(raw); !ok {
			return nil, refuse("%s is not a NumericDate", name)
		}
	}
	exp, nbf, iat := dates[0], dates[1], dates[2]
	if exp.IsZero() {
		return nil, refuse("token has no exp")
	}
	if !now.Before(exp.Add(leeway)) {
		return nil, &TokenError{Reason: "token expired", Expired: true}
	}
	if !nbf.IsZero() && now.Add(leeway).Before(nbf) {
		return nil, refuse("token not valid yet (nbf)")
	}
	if !iat.IsZero() && now.Add(leeway).Before(iat) {
		return nil, refuse("token issued in the future (iat)")
	}
	aud, ok := audiences(claims["aud"])
	if !ok || !slices.ContainsFunc(cfg.Audiences, func(a string) bool { return slices.Contains(aud, a) }) {
		return nil, refuse("audience not accepted")
	}
	keys := make([]string, 0, len(cfg.RequiredClaims))
	for k := range cfg.RequiredClaims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, name := range keys {
		if !claimEquals(claimJSON(claims, raw, name), cfg.RequiredClaims[name]) {
			return nil, refuse("required claim %s is missing or has another value", name)
		}
	}
	client := clientClaim(claimJSON(claims, raw, cfg.ClientClaim))
	if client == "" {
		return nil, refuse("client claim %s is missing", cfg.ClientClaim)
	}
	if strings.ContainsFunc(client, unicode.IsControl) {
		return nil, refuse("client claim %s contains control characters", cfg.ClientClaim)
	}
	var scopes []string
	for _, c := range cfg.ScopeClaims {
		scopes = append(scopes, stringOrList(claimJSON(claims, raw, c), true)...)
	}
	sort.Strings(scopes)
	norm := map[string][]string{}
	for k, raw := range claims {
		if vals := stringOrList(raw, false); len(vals) > 0 {
			norm[k] = vals
		}
	}
	return &Identity{
		Issuer:    cfg,
		Client:    client,
		Audiences: aud,
		Scopes:    slices.Compact(scopes),
		Claims:    norm,
		Raw:       raw,
		Expiry:    exp,
		signed:    claims,
	}, nil
}

func typMatches(got, want string) bool {
	norm := func(s string) string { return strings.TrimPrefix(strings.ToLower(s), "application/") }
	return norm(got) == norm(want)
}

// registeredHeader and registeredClaims are the names the bridge and
// go-jose read into Go structs (go-oidc did too, when it verified tokens),
// whose encoding/json matching ignores case: a case variant of one is
// refused (jsonObject.unique). They MUST be lower-case ASCII.
var (
	registeredHeader = []string{"alg", "typ", "enc", "crit", "kid", "cty"}
	registeredClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "nonce", "at_hash",
		"_claim_names", "_claim_sources"}
)

// maxNumericDate is 9999-12-31T23:59:59Z; later dates (and negative ones)
// are refused rather than converted, since float64 to int64 conversion of
// a huge value is implementation-defined (it wraps to the past on amd64).
const maxNumericDate = 253402300799

// numericDate reads a NumericDate (RFC 7519 §2): a JSON number of seconds
// since the epoch, between 0 and maxNumericDate.
func numericDate(raw json.RawMessage) (time.Time, bool) {
	var f *float64 // null is no date
	if len(raw) == 0 || raw[0] == '"' || json.Unmarshal(raw, &f) != nil || f == nil || !(*f >= 0 && *f <= maxNumericDate) {
		return time.Time{}, false
	}
	return time.Unix(int64(*f), 0), true
}

// clientClaim reads a client id: a string, or a number as the rules
// render it (GitHub's repository_id, say).
func clientClaim(raw json.RawMessage) string {
	if len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) {
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			s, _ := mapping.Scalar(n)
			return s
		}
	}
	return stringClaim(raw)
}

func stringClaim(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// stringOrList normalises a claim that may be a string or a list of strings.
// With split, strings are split on white space (OAuth scope syntax).
// Numbers and booleans become their JSON text.
func stringOrList(raw json.RawMessage, split bool) []string {
	if len(raw) == 0 {
		return nil
	}
	// A *string, because null unmarshals into a string without error (and
	// without a value): null is no value, in a list or alone.
	var s *string
	if json.Unmarshal(raw, &s) == nil {
		switch {
		case s == nil:
			return nil
		case split:
			return strings.Fields(*s)
		}
		return []string{*s}
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		var out []string
		for _, e := range list {
			var s *string
			if json.Unmarshal(e, &s) == nil && s != nil {
				out = append(out, *s)
			}
		}
		return out
	}
	var scalar any
	if json.Unmarshal(raw, &scalar) == nil {
		switch scalar.(type) {
		case float64, bool:
			return []string{string(raw)}
		}
	}
	return nil
}

// claimEquals compares a claim with a configured value; numbers compare by
// value, and a configured string is also found inside a list claim.
func claimEquals(raw json.RawMessage, want any) bool {
	if len(raw) == 0 {
		return false
	}
	var got any
	if json.Unmarshal(raw, &got) != nil {
		return false
	}
	if n, ok := numberText(want); ok {
		// Numbers compare exactly (as the rules write them out), not as
		// float64s, which would accept a neighbouring id beyond 2^53.
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var exact any
		if dec.Decode(&exact) != nil {
			return false
		}
		is := func(e any) bool {
			g, ok := e.(json.Number)
			if !ok {
				return false
			}
			s, _ := mapping.Scalar(g)
			return s == n
		}
		if list, ok := exact.([]any); ok {
			return slices.ContainsFunc(list, is)
		}
		return is(exact)
	}
	want = normaliseYAML(want)
	if reflect.DeepEqual(got, want) {
		return true
	}
	if list, ok := got.([]any); ok {
		return slices.ContainsFunc(list, func(e any) bool { return reflect.DeepEqual(e, want) })
	}
	return false
}

// numberText is a configured number (YAML's types) written out as the rules
// write out a JSON number; ok is false for anything else.
func numberText(v any) (string, bool) {
	switch n := v.(type) {
	case uint64:
		return strconv.FormatUint(n, 10), true
	case int, int64, float64:
		return mapping.Scalar(n)
	}
	return "", false
}

// normaliseYAML turns YAML's integer types into JSON's float64.
func normaliseYAML(v any) any {
	switch n := v.(type) {
	case int:
		return float64(n)
	case int64:
		return float64(n)
	case uint64:
		return float64(n)
	}
	return v
}

// Fingerprint returns a short, non-reversible identifier of a secret for
// logs: the first 12 hex digits of its SHA-256.
func Fingerprint(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return fmt.Sprintf("%x", sum[:6])
}
