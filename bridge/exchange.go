package bridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// Directus is what the bridge needs from Directus; *directus.Client
// satisfies it.
type Directus interface {
	Ping(ctx context.Context) error
	ServerInfo(ctx context.Context) (directus.Info, error)
	User(ctx context.Context, id string) (directus.User, error)
	CreateUser(ctx context.Context, u directus.NewUser) (directus.User, error)
	UpdateUser(ctx context.Context, id string, ch directus.UserChange) (directus.User, error)
	UpdateUsers(ctx context.Context, ids []string, ch directus.UserChange) error
	ListUsers(ctx context.Context, f directus.UserFilter, limit, offset int) ([]directus.User, error)
	DeleteUsers(ctx context.Context, ids []string) error
	Roles(ctx context.Context) ([]directus.Role, error)
	Policies(ctx context.Context) ([]directus.Policy, error)
	Me(ctx context.Context) (directus.User, error)
	Activity(ctx context.Context, f directus.ActivityFilter, limit int) ([]directus.Activity, error)
	LastActivityID(ctx context.Context, collection string) (int64, error)
	AccessUsers(ctx context.Context, ids []string) (map[string]string, error)
}

// TokenConfig shapes the Directus static tokens the bridge issues.
type TokenConfig struct {
	// TTL is the lifetime of an issued token (default 15m).
	TTL Duration `yaml:"ttl"`
	// RotateBefore: a live token with less than this left is replaced by a
	// new one at the client's next exchange (default TTL/3). Until then every
	// exchange of the client returns the same token.
	RotateBefore Duration `yaml:"rotate_before"`
	// OutliveSubject lets an issued token live longer than the subject token
	// it was exchanged for. Off by default: the TTL is capped at the subject
	// token's expiry.
	OutliveSubject bool `yaml:"outlive_subject"`
	// Prefix starts every issued token, so that leaked ones are recognisable
	// (default "dbr_").
	Prefix string `yaml:"prefix"`
	// RevokeInterval is how often expired tokens are looked for and revoked
	// in Directus (default 5s).
	RevokeInterval Duration `yaml:"revoke_interval"`
}

// UserConfig shapes the machine users the bridge creates.
type UserConfig struct {
	// Namespace is the UUID namespace of user ids (default the NIL UUID, as
	// the hook extension uses).
	Namespace string `yaml:"namespace"`
	FirstName string `yaml:"first_name"` // default "External"
	LastName  string `yaml:"last_name"`  // default "Client"
	// Provider is the Directus auth provider recorded on users (default
	// "default"). Directus 12 without a license accepts only "default": the
	// bridge then falls back to it with one warning.
	Provider string `yaml:"provider"`
}

// Options wire an Exchanger.
type Options struct {
	Issuers  []IssuerConfig
	Tokens   TokenConfig
	Users    UserConfig
	Directus Directus
	Store    *Store
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// VerifiedCacheSize bounds the cache of verified subject tokens
	// (default 10000; negative disables it).
	VerifiedCacheSize int
	// Limits are the rate limits (defaults applied; negative rates disable).
	Limits LimitsConfig
	// Metrics, when set, records what the exchanger does.
	Metrics *Metrics
}

// Exchanger turns verified IdP tokens into Directus static tokens.
type Exchanger struct {
	tokens    atomic.Pointer[TokenConfig] // replaced by SetTokens
	users     UserConfig
	namespace uuid.UUID
	verifier  *verifier
	directus  Directus
	store     *Store
	log       *slog.Logger
	now       func() time.Time
	mapper    atomic.Pointer[Mapper]
	loaded    atomic.Bool // SetMapper was called
	provider  atomic.Pointer[string]
	warnOnce  sync.Once
	metrics   *Metrics
	leader    *Leader // on a replica: the jobs run only while it holds the lease
	perClient limiterRef
	perIP     limiterRef

	watchMu sync.Mutex // one Watch at a time
	selfMu  sync.Mutex
	self    string // the bridge's own Directus user id, learnt once
	retryMu sync.Mutex
	retry   map[string]bool // users Watch looks at again
	// recreated: users someone else created or deleted since Watch last
	// looked at them.
	recreated map[string]bool
}

// NewExchanger builds an Exchanger; it makes no request. Options are
// expected to be validated (see cmd/directus-bridge's Config.Validate);
// defaults are applied here.
func NewExchanger(o Options) (*Exchanger, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.VerifiedCacheSize == 0 {
		o.VerifiedCacheSize = 10000
	}
	o.Tokens.setDefaults()
	o.Users.setDefaults()
	ns, err := uuid.Parse(o.Users.Namespace)
	if err != nil {
		return nil, fmt.Errorf("bridge: users.namespace: %w", err)
	}
	issuers := slices.Clone(o.Issuers)
	var hook []string
	for i := range issuers {
		issuers[i].setDefaults()
		if issuers[i].UserIDs == UserIDsHook {
			hook = append(hook, issuers[i].Name)
		}
	}
	if len(hook) > 1 {
		return nil, fmt.Errorf("bridge: issuers %s all use hook user ids: at most one may (user_ids: issuer on the others)", strings.Join(hook, ", "))
	}
	o.Limits.SetDefaults()
	e := &Exchanger{
		users:     o.Users,
		namespace: ns,
		verifier:  newVerifier(issuers, o.Now, o.VerifiedCacheSize, o.Metrics.jwksFetch),
		directus:  o.Directus,
		store:     o.Store,
		log:       o.Logger,
		now:       o.Now,
		metrics:   o.Metrics,
		retry:     map[string]bool{},
		recreated: map[string]bool{},
	}
	e.perClient.set(o.Limits.clientLimiter(o.Now))
	e.perIP.set(o.Limits.ipLimiter(o.Now))
	tc := o.Tokens
	e.tokens.Store(&tc)
	if err := e.bindFormat1(issuers); err != nil {
		return nil, err
	}
	p := o.Users.Provider
	e.provider.Store(&p)
	e.mapper.Store(&Mapper{})
	return e, nil
}

// bindFormat1 binds every record of the earlier format (bound by issuer
// name only) to the URL of the configured issuer of that name, once, and
// persists it: from then on a rename, or a name given to another issuer,
// changes nothing. A record whose issuer name is not configured stays bound
// by name.
func (e *Exchanger) bindFormat1(issuers []IssuerConfig) error {
	if e.store == nil {
		return nil
	}
	byName := map[string]string{}
	for _, c := range issuers {
		byName[c.Name] = c.Issuer
	}
	var ids []string
	for _, r := range e.store.All() {
		if r.IssuerURL == "" && byName[r.Issuer] != "" {
			ids = append(ids, r.UserID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	sort.Strings(ids)
	bound := 0
	// Under the users' locks, from the records read there: replicas that
	// start together on such records bind each once, whoever comes first.
	for k := range slices.Chunk(ids, batchSize) {
		n, err := e.bindBatch(k, byName)
		bound += n
		if err != nil {
			return fmt.Errorf("bridge: binding records of the earlier state format: %w", err)
		}
	}
	if bound > 0 {
		e.log.Info("records of the earlier state format bound to their issuers' URLs", "records", bound)
	}
	return nil
}

func (e *Exchanger) bindBatch(ids []string, byName map[string]string) (int, error) {
	ctx, cancel := opCtx()
	defer cancel()
	unlock, err := e.store.Lock(ctx, ids...)
	if err != nil {
		return 0, err
	}
	defer unlock()
	var recs []Record
	for _, id := range ids {
		if r, ok := e.store.Get(id); ok && r.IssuerURL == "" && byName[r.Issuer] != "" {
			r.IssuerURL = byName[r.Issuer]
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return 0, nil
	}
	return len(recs), e.store.PutAll(recs)
}

func (c *TokenConfig) setDefaults() {
	if c.TTL == 0 {
		c.TTL = Duration(15 * time.Minute)
	}
	if c.RotateBefore == 0 {
		c.RotateBefore = c.TTL / 3
	}
	if c.Prefix == "" {
		c.Prefix = "dbr_"
	}
	if c.RevokeInterval == 0 {
		c.RevokeInterval = Duration(5 * time.Second)
	}
}

func (c *UserConfig) setDefaults() {
	if c.Namespace == "" {
		c.Namespace = uuid.Nil.String()
	}
	if c.FirstName == "" {
		c.FirstName = "External"
	}
	if c.LastName == "" {
		c.LastName = "Client"
	}
	if c.Provider == "" {
		c.Provider = "default"
	}
}

// tok is the token configuration in force.
func (e *Exchanger) tok() *TokenConfig { return e.tokens.Load() }

// RevokeInterval is the revoke interval in force, its default applied.
func (e *Exchanger) RevokeInterval() time.Duration { return e.tok().RevokeInterval.D() }

// SetTokens puts a new token configuration in force (a reload): new tokens
// get the new lifetime and prefix; tokens already issued keep theirs.
func (e *Exchanger) SetTokens(c TokenConfig) {
	c.setDefaults()
	e.tokens.Store(&c)
}

// SetLimits puts new rate limits in force (a reload); every bucket starts
// full again.
func (e *Exchanger) SetLimits(c LimitsConfig) {
	c.SetDefaults()
	e.perClient.set(c.clientLimiter(e.now))
	e.perIP.set(c.ipLimiter(e.now))
}

// SetIssuers puts a new set of trusted issuers in force (a reload): a
// removed issuer is distrusted at once and the cached verifications of
// removed and changed issuers are dropped; an unchanged issuer keeps its
// keys. It refuses a set in which more than one issuer has hook ids.
func (e *Exchanger) SetIssuers(cfgs []IssuerConfig) (added, removed, changed []string, err error) {
	if errs := ValidateIssuers(cfgs); len(errs) > 0 {
		return nil, nil, nil, fmt.Errorf("bridge: issuers: %w", errors.Join(errs...))
	}
	added, removed, changed = e.verifier.setIssuers(cfgs)
	return added, removed, changed, nil
}

// SetMapper replaces the rules in force; exchanges in flight finish with the
// rules they started with.
func (e *Exchanger) SetMapper(m *Mapper) {
	e.mapper.Store(m)
	e.loaded.Store(true)
	e.metrics.blocked(m.BlockedCount())
}

// Loaded reports whether rules were put in force: until then exchanges
// answer 503 (the server listens at once, while Directus may still boot).
func (e *Exchanger) Loaded() bool { return e.loaded.Load() }

// Warm discovers every issuer and loads its keys, so that the first exchange
// does not pay for it. Failures are returned joined; they are retried later.
func (e *Exchanger) Warm(ctx context.Context) error {
	var errs []error
	for _, k := range e.verifier.all() {
		if err := k.warm(ctx, e.now()); err != nil {
			errs = append(errs, fmt.Errorf("issuer %s: %w", k.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// WarmEach warms every issuer at once, each on its own (one issuer whose
// discovery hangs delays no other), logs the ones that failed (they are
// retried on use) and returns when all are done or ctx ends.
func (e *Exchanger) WarmEach(ctx context.Context, log *slog.Logger) {
	var wg sync.WaitGroup
	for _, k := range e.verifier.all() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx, cancel := context.WithTimeout(ctx, warmTimeout)
			defer cancel()
			if err := k.warm(wctx, e.now()); err != nil && ctx.Err() == nil {
				log.Warn("issuer keys not loaded yet; retried on use", "issuer", k.cfg.Name, "err", err)
			}
		}()
	}
	wg.Wait()
}

// warmTimeout bounds the warm-up of one issuer at start.
const warmTimeout = 15 * time.Second

// Directus returns the Directus the exchanger writes to.
func (e *Exchanger) Directus() Directus { return e.directus }

// Mapper returns the rules in force.
func (e *Exchanger) Mapper() *Mapper { return e.mapper.Load() }

// UserID derives the Directus user id of a client of issuer: with hook ids
// (the default, and a nil issuer) UUIDv5 of the client id in the namespace,
// as the hook extension does; with issuer-scoped ids UUIDv5 of
// "directus-bridge" NUL issuer NUL client. Issuers contain no control
// characters and clients are refused with them, so no two (issuer, client)
// pairs share a name.
func UserID(ns uuid.UUID, issuer *IssuerConfig, client string) string {
	name := client
	if issuer != nil && issuer.UserIDs == UserIDsIssuer {
		name = "directus-bridge\x00" + issuer.Issuer + "\x00" + client
	}
	return uuid.NewSHA1(ns, []byte(name)).String()
}

// ExternalID is the external_identifier of a client's Directus user: the
// client id with hook ids (as the hook extension writes it), "<issuer
// name>:<client>" with issuer-scoped ids (Directus keeps external
// identifiers unique across all users).
func ExternalID(issuer *IssuerConfig, client string) string {
	if issuer != nil && issuer.UserIDs == UserIDsIssuer {
		return issuer.Name + ":" + client
	}
	return client
}

// Request is one token-exchange request, already parsed.
type Request struct {
	SubjectToken string
	// Scopes asked for; nil means all the subject token carries.
	Scopes []string
	// Proxied marks the exchange the proxy makes for each request it
	// forwards. The rate limits then count only subject tokens the bridge
	// has not verified before: a returning client's request costs the
	// bridge a cache lookup, and its rate is Directus's to limit.
	Proxied bool
}

// Outcome says what an exchange did.
type Outcome string

// Outcomes of a successful exchange.
const (
	Issued  Outcome = "issued"  // a new token for a client without a live one
	Reused  Outcome = "reused"  // the live token, no Directus request
	Rotated Outcome = "rotated" // a new token replacing one near expiry
	Updated Outcome = "updated" // the live token, with role or policies changed
)

// Result is a successful exchange.
type Result struct {
	Token     string
	Expiry    time.Time
	Scopes    []string
	UserID    string
	Issuer    string // configured name
	Client    string
	Role      string
	Policies  []string
	Rule      string
	Outcome   Outcome
	SubjectFP string // fingerprint of the subject token
}

// Error is a refused or failed exchange, in OAuth terms. Description is safe
// to send to the caller; Cause (internal) is only logged.
type Error struct {
	Code        string // RFC 6749 §5.2 / RFC 8693 error code
	Description string
	Status      int
	RetryAfter  time.Duration
	Cause       error
	Issuer      string // configured issuer name, once the token verified
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Code + ": " + e.Description + ": " + e.Cause.Error()
	}
	return e.Code + ": " + e.Description
}

func (e *Error) Unwrap() error { return e.Cause }

// SubjectExpired reports whether the exchange was refused because the
// subject token has expired (and for nothing else).
func (e *Error) SubjectExpired() bool {
	var te *TokenError
	return errors.As(e.Cause, &te) && te.Expired
}

func unavailable(cause error) *Error {
	ra := 5 * time.Second
	var api *directus.APIError
	if errors.As(cause, &api) && api.RetryAfter > ra {
		ra = api.RetryAfter
	}
	return &Error{Code: "temporarily_unavailable", Description: "Directus is not available, try again later",
		Status: 503, RetryAfter: ra, Cause: cause}
}

// Trusts reports whether raw looks like a JWT of a trusted issuer, without
// verifying it (see package proxy): a credential the bridge must exchange,
// never pass on.
func (e *Exchanger) Trusts(raw string) bool { return e.verifier.trusts(raw) }

// Exchange verifies the subject token, maps it to a role, upserts the
// machine user and returns its static token. Nothing is written to Directus
// unless the token is valid and a rule grants access.
func (e *Exchanger) Exchange(ctx context.Context, req Request) (*Result, error) {
	id, hit, err := e.verifier.verify(ctx, req.SubjectToken)
	if err != nil {
		var te *TokenError
		if errors.As(err, &te) {
			return nil, &Error{Code: "invalid_request", Description: "subject_token: " + te.Reason, Status: 400, Cause: err}
		}
		if errors.Is(err, errKeysUnavailable) {
			return nil, &Error{Code: "temporarily_unavailable", Description: "the issuer's keys cannot be fetched, try again later",
				Status: 503, RetryAfter: discoveryCooldown, Cause: err}
		}
		return nil, &Error{Code: "server_error", Description: "token verification failed", Status: 500, Cause: err}
	}
	if !e.loaded.Load() {
		return nil, &Error{Code: "temporarily_unavailable", Description: "the bridge is starting: its rules are not loaded yet",
			Status: 503, RetryAfter: 2 * time.Second, Issuer: id.Issuer.Name}
	}
	res, err := e.exchangeVerified(ctx, id, req, req.Proxied && hit)
	if err != nil {
		var ee *Error
		if errors.As(err, &ee) {
			// A copy: refusals are shared values, answered to many requests
			// at once.
			c := *ee
			c.Issuer = id.Issuer.Name
			return nil, &c
		}
		return nil, err
	}
	return res, nil
}

func (e *Exchanger) exchangeVerified(ctx context.Context, id *Identity, req Request, unlimited bool) (*Result, error) {
	if lim := e.perClient.get(); lim != nil && !unlimited { // the key is built only when a limit is in force
		if ok, wait := lim.allow(id.Issuer.Name + "\x00" + id.Client); !ok {
			e.metrics.limited("client")
			return nil, &Error{Code: "temporarily_unavailable", Description: "rate limit exceeded for this client",
				Status: 429, RetryAfter: wait}
		}
	}
	if !e.now().Before(id.Expiry) {
		// Inside the issuer's leeway: valid, but anything issued for it
		// would outlive it.
		return nil, &Error{Code: "invalid_request", Status: 400, Description: "subject_token has expired",
			Cause: &TokenError{Reason: "token expired", Expired: true}}
	}
	scopes := id.Scopes
	if req.Scopes != nil {
		var missing []string
		for _, s := range req.Scopes {
			if !slices.Contains(id.Scopes, s) {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			return nil, &Error{Code: "invalid_scope", Status: 400,
				Description: "the subject token does not carry the scopes " + strings.Join(missing, " ")}
		}
		// One Directus user and one token per client: a narrowed token
		// would share its privileges with every other instance of the
		// client, so narrowing cannot be honoured and is refused.
		if len(sortedUnique(req.Scopes)) != len(id.Scopes) {
			return nil, &Error{Code: "invalid_scope", Status: 400,
				Description: "narrowing the scope is not supported: a client's token always carries every scope of its subject token; omit scope or ask for all of them"}
		}
	}
	m := e.mapper.Load()
	// The mapping depends on the identity alone (scopes are its own: a
	// narrower request was refused above) and on the rules in force: an
	// identity presented again under the same rules and blocked set is
	// mapped once (see Identity.decided).
	blocked := m.blocked.Load()
	debug := e.log.Enabled(ctx, slog.LevelDebug)
	if d := id.decided.Load(); d != nil && d.m == m && d.blocked == blocked && !debug {
		res := &Result{
			UserID: d.userID, Issuer: id.Issuer.Name, Client: id.Client,
			Scopes: scopes, Role: d.grant.Role, Policies: d.grant.Policies, Rule: d.rule, SubjectFP: id.Fingerprint,
		}
		if err := e.upsert(ctx, id, res, m); err != nil {
			return nil, err
		}
		return res, nil
	}
	// Reasons (why each earlier rule did not match) cost a formatted string
	// per rule: build them only when the debug line will be written.
	in := mapping.Input{Issuer: id.Issuer.Name, Audiences: id.Audiences, Client: id.Client, Scopes: scopes, Raw: id.Raw, Claims: id.Claims}
	var dec mapping.Decision
	if debug {
		dec = m.Evaluate(in)
		e.log.DebugContext(ctx, "mapping", "issuer", id.Issuer.Name, "client", id.Client, "rule", dec.Rule,
			"deny", dec.Deny, "counted", dec.Counted, "reasons", dec.Reasons)
	} else {
		dec = m.Decide(in)
	}
	if dec.Deny {
		desc := "no mapping rule grants access for these scopes"
		switch {
		case dec.Blocked:
			desc = "mapping rule " + dec.Rule + " is withheld: its grant has admin access in Directus"
		case dec.Matched:
			desc = "access denied by mapping rule " + dec.Rule
		}
		return nil, &Error{Code: "invalid_scope", Description: desc, Status: 400}
	}
	grant := m.Resolve(dec)
	res := &Result{
		UserID: UserID(e.namespace, id.Issuer, id.Client), Issuer: id.Issuer.Name, Client: id.Client,
		Scopes: scopes, Role: grant.Role, Policies: grant.Policies, Rule: dec.Rule, SubjectFP: id.Fingerprint,
	}
	id.decided.Store(&decided{m: m, blocked: blocked, grant: grant, rule: dec.Rule, userID: res.UserID})
	if err := e.upsert(ctx, id, res, m); err != nil {
		return nil, err
	}
	return res, nil
}

// decided is the mapping of one identity under one Mapper and its blocked
// set: what exchangeVerified computes for a granted exchange. Its slices
// are shared by every Result made from it and never modified.
type decided struct {
	m       *Mapper
	blocked *map[int]string
	grant   Grant
	rule    string
	userID  string
}

// ruleClaims keeps the claims that some rule looks at, so that the
// reconciler can evaluate the rules again without storing every claim of
// every client. A claim condition added to the rules later is evaluated from
// each client's next exchange on; until then the reconciler sees the claim
// as absent.
func ruleClaims(all map[string][]string, rules mapping.Rules) map[string][]string {
	var out map[string][]string
	for _, r := range rules {
		for k := range r.Claims {
			if v, ok := all[k]; ok {
				if out == nil {
					out = map[string][]string{}
				}
				out[k] = v
			}
		}
	}
	return out
}

// recordClaims keeps, as signed, the top-level claims that the rules read
// (through claim paths and conditions; every claim when a condition may
// read any), so that the reconciler can evaluate the rules again as the
// exchange did. As with ruleClaims, a claim the rules start to read later
// is seen from each client's next exchange on.
func recordClaims(id *Identity, rules mapping.Rules) map[string]json.RawMessage {
	roots, all := rules.ClaimRoots()
	if all {
		return maps.Clone(id.signed)
	}
	var out map[string]json.RawMessage
	for _, k := range roots {
		if v, ok := id.signed[k]; ok {
			if out == nil {
				out = map[string]json.RawMessage{}
			}
			out[k] = v
		}
	}
	return out
}

// recordInput is what the rules see of a record's last token.
func recordInput(rec Record) mapping.Input {
	in := mapping.Input{Issuer: rec.Issuer, Audiences: rec.Audiences, Client: rec.Client, Scopes: rec.Scopes, Claims: rec.Claims}
	if rec.RawClaims != nil {
		in.Raw = make(map[string]any, len(rec.RawClaims))
		for k, b := range rec.RawClaims {
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.UseNumber()
			var v any
			if dec.Decode(&v) == nil {
				in.Raw[k] = v
			}
		}
	}
	return in
}

func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return slices.Compact(out)
}

// newExpiry is the expiry a token minted now for id would get.
func (e *Exchanger) newExpiry(id *Identity, now time.Time) time.Time {
	exp := now.Add(e.tok().TTL.D())
	if !e.tok().OutliveSubject && id.Expiry.Before(exp) {
		exp = id.Expiry
	}
	return exp
}

// DetectProvider checks, once at start, whether Directus accepts a custom
// provider (Directus 12 without a license does not) and falls back to
// "default" with one warning when it cannot.
func (e *Exchanger) DetectProvider(ctx context.Context) {
	if *e.provider.Load() == "default" {
		return
	}
	info, err := e.directus.ServerInfo(ctx)
	if err != nil {
		return // create() still falls back on the first refusal
	}
	if major, _, _ := strings.Cut(info.Version, "."); atoi(major) >= 12 {
		e.fallBackProvider("Directus " + info.Version + " accepts a custom provider only with a license")
	}
}

func (e *Exchanger) fallBackProvider(why string) {
	e.warnOnce.Do(func() {
		e.log.Warn("using provider \"default\" for machine users", "configured", *e.provider.Load(), "why", why)
		d := "default"
		e.provider.Store(&d)
	})
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

func (e *Exchanger) mint() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return e.tok().Prefix + base64.RawURLEncoding.EncodeToString(b), nil
}
