package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
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
	// gty: client-credentials for Auth0, stt: 1 for SuperTokens).
	RequiredClaims map[string]any `yaml:"required_claims"`
	// RequireTyp, when set, must equal the JWT header typ (e.g. at+jwt),
	// compared case-insensitively with an optional "application/" prefix.
	RequireTyp string `yaml:"require_typ"`
	// ScopeClaims are where scopes are read from, in order; every one present
	// is merged (default: scope, scp). Strings are split on spaces.
	ScopeClaims []string `yaml:"scope_claims"`
	// ClientClaim names the client (default sub).
	ClientClaim string `yaml:"client_claim"`
	// UserIDs says how the Directus user of a client is named: "hook" (the
	// default) gives the hook extension's ids, uuidv5(namespace, client),
	// with external_identifier = client; "issuer" gives issuer-scoped ids,
	// uuidv5(namespace, "directus-bridge" NUL issuer NUL client), with
	// external_identifier = "<name>:<client>". At most one issuer may use
	// hook ids: two issuers with a client of the same name would otherwise
	// name the same user.
	UserIDs string `yaml:"user_ids"`
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
}

// ValidateIssuer lists every problem with an issuer's configuration.
func ValidateIssuer(c IssuerConfig) []error {
	c.setDefaults()
	return c.validate()
}

// validate lists every problem with the issuer (defaults already applied).
func (c *IssuerConfig) validate() []error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("issuer %q: "+format, append([]any{c.Name}, a...)...))
	}
	if c.Name == "" {
		bad("name is required")
	}
	if !strings.HasPrefix(c.Issuer, "https://") && !strings.HasPrefix(c.Issuer, "http://") {
		bad("issuer must be an http(s) URL, got %q", c.Issuer)
	}
	if len(c.Audiences) == 0 {
		bad("at least one audience is required")
	}
	for _, a := range c.Algorithms {
		if !allowedAlgs[a] {
			bad("algorithm %q is not allowed (use RS*, ES*, PS* or EdDSA)", a)
		}
	}
	if c.Leeway < 0 || c.Leeway.D() > 5*time.Minute {
		bad("leeway must be between 0 and 5m")
	}
	if c.JWKSURL != "" && !strings.HasPrefix(c.JWKSURL, "https://") && !strings.HasPrefix(c.JWKSURL, "http://") {
		bad("jwks_url must be an http(s) URL")
	}
	if strings.ContainsFunc(c.Issuer, unicode.IsControl) {
		bad("issuer must not contain control characters")
	}
	switch c.UserIDs {
	case UserIDsHook:
	case UserIDsIssuer:
		if strings.Contains(c.Name, ":") {
			bad("a name with user_ids: issuer must not contain \":\" (it starts the users' external identifiers)")
		}
	default:
		bad("user_ids must be hook or issuer, got %q", c.UserIDs)
	}
	if c.IDFromIssuer != nil {
		bad("id_from_issuer was replaced by user_ids: issuer, whose ids differ; see the upgrade notes before changing ids")
	}
	return errs
}

// ValidateIssuers lists every problem with a set of issuers, each one's and
// those between them: names and issuers are unique, and at most one issuer
// uses hook ids.
func ValidateIssuers(issuers []IssuerConfig) []error {
	var errs []error
	names, urls := map[string]bool{}, map[string]bool{}
	var hook []string
	for _, c := range issuers {
		errs = append(errs, ValidateIssuer(c)...)
		c.setDefaults()
		if names[c.Name] {
			errs = append(errs, fmt.Errorf("issuer %q: the name is used twice", c.Name))
		}
		if urls[c.Issuer] {
			errs = append(errs, fmt.Errorf("issuer %q: issuer %s is configured twice", c.Name, c.Issuer))
		}
		names[c.Name], urls[c.Issuer] = true, true
		if c.UserIDs == UserIDsHook {
			hook = append(hook, c.Name)
		}
	}
	if len(hook) > 1 {
		errs = append(errs, fmt.Errorf("issuers %s all use hook user ids (user_ids: hook, the default): at most one may, "+
			"or a client of one could receive the Directus user of a client of the same name at another; "+
			"set user_ids: issuer on all but the issuer the hook extension served", strings.Join(hook, ", ")))
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
	Expiry    time.Time
	// Fingerprint identifies the subject token in logs without revealing it.
	Fingerprint string
}

// TokenError is a refused subject token; Reason is safe to show the caller.
type TokenError struct{ Reason string }

func (e *TokenError) Error() string { return "token refused: " + e.Reason }

func refuse(format string, a ...any) error { return &TokenError{Reason: fmt.Sprintf(format, a...)} }

// verifier checks subject tokens against the trusted issuers.
type verifier struct {
	now     func() time.Time
	issuers map[string]*issuerKeys // by iss
	cache   *verifiedCache
}

// issuerKeys holds one issuer's config and go-oidc verifier, built lazily
// when discovery was not possible at start.
type issuerKeys struct {
	cfg *IssuerConfig

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	set      *keySet
	lastTry  time.Time
	lastErr  error
	observe  func(ok bool) // JWKS fetch outcomes, for metrics
}

const discoveryCooldown = 10 * time.Second

func newVerifier(issuers []IssuerConfig, now func() time.Time, cacheSize int) *verifier {
	v := &verifier{now: now, issuers: map[string]*issuerKeys{}, cache: newVerifiedCache(cacheSize)}
	for i := range issuers {
		cfg := &issuers[i]
		v.issuers[cfg.Issuer] = &issuerKeys{cfg: cfg}
	}
	return v
}

// keys returns the issuer's go-oidc verifier, discovering its JWKS URL on
// first use and at most once per cooldown after a failure.
func (k *issuerKeys) keys(ctx context.Context, now time.Time) (*oidc.IDTokenVerifier, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.verifier != nil {
		return k.verifier, nil
	}
	if !k.lastTry.IsZero() && now.Sub(k.lastTry) < discoveryCooldown {
		return nil, k.lastErr
	}
	k.lastTry = now
	jwks := k.cfg.JWKSURL
	if jwks == "" {
		p, err := oidc.NewProvider(oidc.ClientContext(ctx, nil), k.cfg.Issuer)
		if err != nil {
			k.lastErr = fmt.Errorf("discovery for %s: %w", k.cfg.Name, err)
			return nil, k.lastErr
		}
		var meta struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err := p.Claims(&meta); err != nil || meta.JWKSURI == "" {
			k.lastErr = fmt.Errorf("discovery for %s: no jwks_uri", k.cfg.Name)
			return nil, k.lastErr
		}
		jwks = meta.JWKSURI
	}
	k.set = &keySet{url: jwks, client: &http.Client{Timeout: 10 * time.Second}, now: time.Now,
		cooldown: keySetCooldown, observe: k.observe}
	k.verifier = oidc.NewVerifier(k.cfg.Issuer, k.set, &oidc.Config{
		SkipClientIDCheck:    true, // audiences are checked below, against a list
		SkipExpiryCheck:      true, // exp/nbf/iat are checked below, with the leeway
		SupportedSigningAlgs: k.cfg.Algorithms,
	})
	return k.verifier, nil
}

// warm discovers the issuer and loads its keys once, so that the first
// exchange does not pay for it and readiness can tell.
func (k *issuerKeys) warm(ctx context.Context, now time.Time) error {
	if _, err := k.keys(ctx, now); err != nil {
		return err
	}
	k.mu.Lock()
	set := k.set
	k.mu.Unlock()
	if set.loaded() {
		return nil
	}
	return set.refresh(ctx, time.Time{})
}

// ready reports whether the issuer's keys were loaded at least once.
func (k *issuerKeys) ready() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.set != nil && k.set.loaded()
}

// errKeysUnavailable marks a token that could not be checked because the
// issuer's discovery document is unreachable: the caller gets 503.
var errKeysUnavailable = errors.New("issuer keys unavailable")

// header is the part of the JOSE header the bridge inspects itself.
type header struct {
	Alg  string          `json:"alg"`
	Typ  string          `json:"typ"`
	Enc  string          `json:"enc"`
	Crit json.RawMessage `json:"crit"`
}

// Verify checks raw and returns the identity it proves.
func (v *verifier) Verify(ctx context.Context, raw string) (*Identity, error) {
	now := v.now()
	sum := sha256.Sum256([]byte(raw))
	if id := v.cache.get(sum, now); id != nil {
		return id, nil
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		if len(parts) == 5 {
			return nil, refuse("encrypted tokens (JWE) are not accepted")
		}
		return nil, refuse("subject_token is not a signed JWT")
	}
	var h header
	if err := decodeSegment(parts[0], &h, registeredHeader); err != nil {
		return nil, refuse("malformed JWT header")
	}
	if h.Enc != "" {
		return nil, refuse("encrypted tokens (JWE) are not accepted")
	}
	if len(h.Crit) > 0 {
		return nil, refuse("JWT header has crit parameters the bridge does not understand")
	}
	var unverified struct {
		Iss string `json:"iss"`
	}
	if err := decodeSegment(parts[1], &unverified, registeredClaims); err != nil {
		return nil, refuse("malformed JWT payload")
	}
	k := v.issuers[unverified.Iss]
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
	ov, err := k.keys(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errKeysUnavailable, err)
	}
	tok, err := ov.Verify(ctx, raw)
	if err != nil {
		if strings.Contains(err.Error(), "fetching keys") {
			return nil, fmt.Errorf("%w: %v", errKeysUnavailable, err)
		}
		return nil, refuse("signature or issuer check failed")
	}
	var claims map[string]json.RawMessage
	if err := tok.Claims(&claims); err != nil {
		return nil, refuse("malformed JWT claims")
	}
	id, err := v.check(cfg, tok, claims, now)
	if err != nil {
		return nil, err
	}
	id.Fingerprint = Fingerprint(raw)
	v.cache.put(sum, id, now)
	return id, nil
}

// check applies the issuer's rules to verified claims.
func (v *verifier) check(cfg *IssuerConfig, tok *oidc.IDToken, claims map[string]json.RawMessage, now time.Time) (*Identity, error) {
	leeway := cfg.Leeway.D()
	// Dates come from the claims as signed, never from go-oidc's parse,
	// which accepts quoted numbers and wraps huge ones into the past.
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
		return nil, refuse("token expired")
	}
	if !nbf.IsZero() && now.Add(leeway).Before(nbf) {
		return nil, refuse("token not valid yet (nbf)")
	}
	if !iat.IsZero() && now.Add(leeway).Before(iat) {
		return nil, refuse("token issued in the future (iat)")
	}
	if !slices.ContainsFunc(cfg.Audiences, func(a string) bool { return slices.Contains(tok.Audience, a) }) {
		return nil, refuse("audience not accepted")
	}
	keys := make([]string, 0, len(cfg.RequiredClaims))
	for k := range cfg.RequiredClaims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, name := range keys {
		if !claimEquals(claims[name], cfg.RequiredClaims[name]) {
			return nil, refuse("required claim %s is missing or has another value", name)
		}
	}
	client := stringClaim(claims[cfg.ClientClaim])
	if client == "" {
		return nil, refuse("client claim %s is missing", cfg.ClientClaim)
	}
	if strings.ContainsFunc(client, unicode.IsControl) {
		return nil, refuse("client claim %s contains control characters", cfg.ClientClaim)
	}
	var scopes []string
	for _, c := range cfg.ScopeClaims {
		scopes = append(scopes, stringOrList(claims[c], true)...)
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
		Audiences: tok.Audience,
		Scopes:    slices.Compact(scopes),
		Claims:    norm,
		Expiry:    exp,
	}, nil
}

func typMatches(got, want string) bool {
	norm := func(s string) string { return strings.TrimPrefix(strings.ToLower(s), "application/") }
	return norm(got) == norm(want)
}

// registeredHeader and registeredClaims are the names the bridge and
// go-oidc read into Go structs, whose encoding/json matching ignores case.
var (
	registeredHeader = []string{"alg", "typ", "enc", "crit", "kid", "cty"}
	registeredClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "nonce", "at_hash",
		"_claim_names", "_claim_sources"}
)

func decodeSegment(seg string, v any, registered []string) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	if err := uniqueMembers(b, registered); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// uniqueMembers refuses a JSON object that repeats a member or spells a
// registered name in another case ("EXP", "Aud", "ſub"). RFC 7519 §4 lets a
// parser take the last of repeated claims, and encoding/json (the bridge's
// and go-oidc's) does so and also matches struct fields case-insensitively;
// the issuer or a proxy may read the first. Refusing both leaves one reading
// of every token.
func uniqueMembers(b []byte, registered []string) error {
	// Fast path: the names of a top-level object without escapes are the
	// bytes between their quotes, so they can be compared as they are,
	// without decoding a token at a time (7 µs and 124 allocations for a
	// typical payload). A name with a backslash takes the slow path, which
	// unescapes ("\u0073ub" is "sub").
	names, ok := memberNames(b)
	if !ok {
		return uniqueMembersSlow(b, registered)
	}
	for i, name := range names {
		for _, prev := range names[:i] {
			if string(prev) == string(name) {
				return fmt.Errorf("member %q is repeated", name)
			}
		}
		for _, r := range registered {
			if string(name) != r && bytes.EqualFold(name, []byte(r)) {
				return fmt.Errorf("member %q is not %q", name, r)
			}
		}
	}
	return nil
}

// memberNames returns the member names of the JSON object b as they are
// written, or false when b is not a well-formed-looking object or a name
// holds a backslash or invalid UTF-8 (the caller then decodes properly). Values are skipped
// by tracking strings and nesting; json.Unmarshal validates b afterwards.
func memberNames(b []byte) ([][]byte, bool) {
	var names [][]byte
	depth, expectName := 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			start := i + 1
			escaped := false
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					escaped = true
					i++
				}
			}
			if i >= len(b) {
				return nil, false
			}
			if depth == 1 && expectName {
				// Escapes and invalid UTF-8 (which decodes to U+FFFD, so
				// different bytes can name the same member) take the slow path.
				if escaped || !utf8.Valid(b[start:i]) {
					return nil, false
				}
				names = append(names, b[start:i])
				expectName = false
			}
		case '{', '[':
			depth++
			expectName = depth == 1 && c == '{'
		case '}', ']':
			depth--
		case ',':
			expectName = depth == 1
		}
	}
	return names, depth == 0
}

// uniqueMembersSlow is uniqueMembers with a full JSON tokenizer.
func uniqueMembersSlow(b []byte, registered []string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil // not an object: json.Unmarshal reports it
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		name, ok := t.(string)
		if !ok {
			return errors.New("malformed object")
		}
		if seen[name] {
			return fmt.Errorf("member %q is repeated", name)
		}
		seen[name] = true
		for _, r := range registered {
			if name != r && strings.EqualFold(name, r) {
				return fmt.Errorf("member %q is not %q", name, r)
			}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

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
	want = normaliseYAML(want)
	if reflect.DeepEqual(got, want) {
		return true
	}
	if list, ok := got.([]any); ok {
		return slices.ContainsFunc(list, func(e any) bool { return reflect.DeepEqual(e, want) })
	}
	return false
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
