package bridge

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
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
	tokens    TokenConfig
	users     UserConfig
	namespace uuid.UUID
	verifier  *verifier
	directus  Directus
	store     *Store
	log       *slog.Logger
	now       func() time.Time
	locks     stripes
	mapper    atomic.Pointer[Mapper]
	provider  atomic.Pointer[string]
	warnOnce  sync.Once
	metrics   *Metrics
	perClient *limiter
	perIP     *limiter
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
	for i := range issuers {
		issuers[i].setDefaults()
	}
	o.Limits.SetDefaults()
	e := &Exchanger{
		tokens:    o.Tokens,
		users:     o.Users,
		namespace: ns,
		verifier:  newVerifier(issuers, o.Now, o.VerifiedCacheSize),
		directus:  o.Directus,
		store:     o.Store,
		log:       o.Logger,
		now:       o.Now,
		metrics:   o.Metrics,
		perClient: newLimiter(o.Limits.PerClient, o.Now),
		perIP:     newLimiter(o.Limits.PerIP, o.Now),
	}
	for _, k := range e.verifier.issuers {
		name := k.cfg.Name
		k.observe = func(ok bool) { e.metrics.jwksFetch(name, ok) }
	}
	p := o.Users.Provider
	e.provider.Store(&p)
	e.mapper.Store(&Mapper{})
	return e, nil
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

// SetMapper replaces the rules in force; exchanges in flight finish with the
// rules they started with.
func (e *Exchanger) SetMapper(m *Mapper) { e.mapper.Store(m) }

// Warm discovers every issuer and loads its keys, so that the first exchange
// does not pay for it. Failures are returned joined; they are retried later.
func (e *Exchanger) Warm(ctx context.Context) error {
	var errs []error
	for _, k := range e.verifier.issuers {
		if err := k.warm(ctx, e.now()); err != nil {
			errs = append(errs, fmt.Errorf("issuer %s: %w", k.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Directus returns the Directus the exchanger writes to.
func (e *Exchanger) Directus() Directus { return e.directus }

// Mapper returns the rules in force.
func (e *Exchanger) Mapper() *Mapper { return e.mapper.Load() }

// UserID derives the Directus user id of a client: UUIDv5 of the client id
// in the configured namespace (NIL by default, as the hook extension does),
// or of issuer + client id when the issuer asks for it.
func UserID(ns uuid.UUID, issuer *IssuerConfig, client string) string {
	name := client
	if issuer != nil && issuer.IDFromIssuer {
		name = issuer.Issuer + client
	}
	return uuid.NewSHA1(ns, []byte(name)).String()
}

// Request is one token-exchange request, already parsed.
type Request struct {
	SubjectToken string
	// Scopes asked for; nil means all the subject token carries.
	Scopes []string
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

func unavailable(cause error) *Error {
	ra := 5 * time.Second
	var api *directus.APIError
	if errors.As(cause, &api) && api.RetryAfter > ra {
		ra = api.RetryAfter
	}
	return &Error{Code: "temporarily_unavailable", Description: "Directus is not available, try again later",
		Status: 503, RetryAfter: ra, Cause: cause}
}

// Exchange verifies the subject token, maps it to a role, upserts the
// machine user and returns its static token. Nothing is written to Directus
// unless the token is valid and a rule grants access.
func (e *Exchanger) Exchange(ctx context.Context, req Request) (*Result, error) {
	id, err := e.verifier.Verify(ctx, req.SubjectToken)
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
	res, err := e.exchangeVerified(ctx, id, req)
	if err != nil {
		var ee *Error
		if errors.As(err, &ee) {
			ee.Issuer = id.Issuer.Name
		}
		return nil, err
	}
	return res, nil
}

func (e *Exchanger) exchangeVerified(ctx context.Context, id *Identity, req Request) (*Result, error) {
	if ok, wait := e.perClient.allow(id.Issuer.Name + "\x00" + id.Client); !ok {
		e.metrics.limited("client")
		return nil, &Error{Code: "temporarily_unavailable", Description: "rate limit exceeded for this client",
			Status: 429, RetryAfter: wait}
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
		scopes = sortedUnique(req.Scopes)
	}
	m := e.mapper.Load()
	// Reasons (why each earlier rule did not match) cost a formatted string
	// per rule: build them only when the debug line will be written.
	in := mapping.Input{Issuer: id.Issuer.Name, Audiences: id.Audiences, Client: id.Client, Scopes: scopes, Claims: id.Claims}
	var dec mapping.Decision
	if e.log.Enabled(ctx, slog.LevelDebug) {
		dec = m.Rules.Evaluate(in)
		e.log.DebugContext(ctx, "mapping", "issuer", id.Issuer.Name, "client", id.Client, "rule", dec.Rule,
			"deny", dec.Deny, "counted", dec.Counted, "reasons", dec.Reasons)
	} else {
		dec = m.Rules.Decide(in)
	}
	if dec.Deny {
		desc := "no mapping rule grants access for these scopes"
		if dec.Matched {
			desc = "access denied by mapping rule " + dec.Rule
		}
		return nil, &Error{Code: "invalid_scope", Description: desc, Status: 400}
	}
	grant := m.Resolve(dec)
	res := &Result{
		UserID: UserID(e.namespace, id.Issuer, id.Client), Issuer: id.Issuer.Name, Client: id.Client,
		Scopes: scopes, Role: grant.Role, Policies: grant.Policies, Rule: dec.Rule, SubjectFP: id.Fingerprint,
	}
	if err := e.upsert(ctx, id, res); err != nil {
		return nil, err
	}
	return res, nil
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

func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return slices.Compact(out)
}

// newExpiry is the expiry a token minted now for id would get.
func (e *Exchanger) newExpiry(id *Identity, now time.Time) time.Time {
	exp := now.Add(e.tokens.TTL.D())
	if !e.tokens.OutliveSubject && id.Expiry.Before(exp) {
		exp = id.Expiry
	}
	return exp
}

// reusable reports whether the live token of rec may be handed out again:
// while at least RotateBefore of it is left, or while a new token would not
// live longer anyway (its subject token expires first).
func (e *Exchanger) reusable(rec *Record, newExp, now time.Time) bool {
	return rec.live(now) && (rec.Expiry.Sub(now) >= e.tokens.RotateBefore.D() || !newExp.After(rec.Expiry))
}

func (e *Exchanger) upsert(ctx context.Context, id *Identity, res *Result) error {
	unlock := e.locks.lock(res.UserID)
	defer unlock()
	now := e.now()
	rec, known := e.store.Get(res.UserID)
	newExp := e.newExpiry(id, now)
	sameGrant := known && rec.Role == res.Role && samePolicies(rec.Policies, res.Policies)
	if known && sameGrant && !rec.SuspendedByBridge && !rec.SuspendedByAdmin && e.reusable(&rec, newExp, now) {
		res.Token, res.Expiry, res.Outcome = rec.Token, rec.Expiry, Reused
		if slices.Equal(rec.Scopes, res.Scopes) && rec.Issuer == res.Issuer {
			e.store.Touch(res.UserID, now)
			return nil
		}
		rec.Scopes, rec.Issuer, rec.LastExchange = res.Scopes, res.Issuer, now
		if err := e.store.Put(rec); err != nil {
			return &Error{Code: "server_error", Description: "the bridge could not record the exchange", Status: 500, Cause: err}
		}
		return nil
	}

	next := Record{
		UserID: res.UserID, Issuer: res.Issuer, Client: res.Client, Scopes: res.Scopes, Role: res.Role,
		Audiences: id.Audiences, Claims: ruleClaims(id.Claims, e.mapper.Load().Rules), LastExchange: now, Pending: true,
	}
	res.Outcome = Issued
	switch {
	case known && e.reusable(&rec, newExp, now):
		next.Token, next.Expiry, res.Outcome = rec.Token, rec.Expiry, Updated
	case known && rec.live(now):
		res.Outcome = Rotated
		fallthrough
	default:
		tok, err := e.mint()
		if err != nil {
			return &Error{Code: "server_error", Description: "could not generate a token", Status: 500, Cause: err}
		}
		next.Token, next.Expiry = tok, newExp
	}
	// Write ahead: once Directus may hold the token, the bridge knows it, so
	// it is revoked on expiry even if the bridge dies before Directus answers.
	if err := e.store.Put(next); err != nil {
		return &Error{Code: "server_error", Description: "the bridge could not record the token", Status: 500, Cause: err}
	}
	var prev *Record
	if known {
		prev = &rec
	}
	user, err := e.write(ctx, prev, &next, res.Policies, id, now)
	if err != nil {
		if errors.Is(err, directus.ErrUnavailable) {
			return unavailable(err)
		}
		var ee *Error
		if errors.As(err, &ee) {
			return ee
		}
		return &Error{Code: "server_error", Description: "Directus refused the machine user update", Status: 500, Cause: err}
	}
	next.Pending = false
	next.SuspendedByBridge = false
	next.SuspendedByAdmin = user.Status != "active"
	next.Policies = grantedAccess(user.Access, res.Policies)
	if err := e.store.Put(next); err != nil {
		return &Error{Code: "server_error", Description: "the bridge could not record the token", Status: 500, Cause: err}
	}
	if user.Status != "active" {
		return &Error{Code: "unauthorized_client", Status: 400,
			Description: "the Directus user of this client is " + user.Status + " by a Directus administrator"}
	}
	res.Token, res.Expiry = next.Token, next.Expiry
	return nil
}

// write brings the Directus user in line with next in as few requests as
// possible: one PATCH for a known user, one POST for a new one, and a read
// plus a PATCH for a user that exists in Directus but not in the bridge's
// state (a user of the hook extension, or lost state).
func (e *Exchanger) write(ctx context.Context, prev, next *Record, want []string, id *Identity, now time.Time) (directus.User, error) {
	if prev != nil {
		ch := directus.UserChange{LastAccess: &now}
		if next.Token != prev.Token || prev.Pending {
			ch.Token = &next.Token
		}
		if next.Role != prev.Role {
			ch.Role = &next.Role
		}
		ch.AddPolicies, ch.RemoveAccess = policyDiff(prev.Policies, want)
		if prev.SuspendedByBridge {
			ch.Status = directus.Ptr("active")
		}
		user, err := e.directus.UpdateUser(ctx, next.UserID, ch)
		if !errors.Is(err, directus.ErrNotFound) {
			return user, err
		}
		// The user was deleted in Directus: create it again.
	}
	user, err := e.create(ctx, next, want, id, now)
	if !errors.Is(err, directus.ErrConflict) || directus.Code(err) == "" {
		return user, err
	}
	var api *directus.APIError
	if errors.As(err, &api) && api.Field != "" && api.Field != "id" {
		return user, err // e.g. external_identifier taken by another user
	}
	cur, err := e.directus.User(ctx, next.UserID)
	if err != nil {
		return directus.User{}, err
	}
	if cur.Status != "active" {
		// Not suspended by the bridge (it has no record): an admin's decision.
		return cur, nil
	}
	ch := directus.UserChange{Token: &next.Token, LastAccess: &now}
	if cur.Role != next.Role {
		ch.Role = &next.Role
	}
	ch.AddPolicies, ch.RemoveAccess = policyDiff(cur.Access, want)
	return e.directus.UpdateUser(ctx, next.UserID, ch)
}

// create creates the machine user, falling back to the default provider
// when Directus refuses a custom one (Directus 12 without a license).
func (e *Exchanger) create(ctx context.Context, next *Record, want []string, id *Identity, now time.Time) (directus.User, error) {
	nu := directus.NewUser{
		ID: next.UserID, Status: "active", Role: next.Role, ExternalIdentifier: id.Client,
		FirstName: e.users.FirstName, LastName: e.users.LastName, Token: next.Token, LastAccess: now,
		Policies: want,
	}
	if p := *e.provider.Load(); p != "default" {
		nu.Provider = p
	}
	user, err := e.directus.CreateUser(ctx, nu)
	if nu.Provider != "" && directus.Code(err) == directus.CodeInvalidPayload && strings.Contains(strings.ToLower(err.Error()), "provider") {
		e.fallBackProvider("Directus refused the custom provider")
		nu.Provider = ""
		user, err = e.directus.CreateUser(ctx, nu)
	}
	return user, err
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
	return e.tokens.Prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

func samePolicies(have []directus.Access, want []string) bool {
	if len(have) != len(want) {
		return false
	}
	for _, p := range want {
		if !hasPolicy(have, p) {
			return false
		}
	}
	return true
}

func hasPolicy(access []directus.Access, policy string) bool {
	return slices.ContainsFunc(access, func(a directus.Access) bool { return a.Policy == policy })
}

// grantedAccess keeps the access rows of the wanted policies, and an entry
// without a row id for a wanted policy Directus did not list (its row id is
// learnt at the next write). Nil when nothing is wanted: most machine users
// have no extra policy.
func grantedAccess(access []directus.Access, want []string) []directus.Access {
	var out []directus.Access
	for _, a := range access {
		if slices.Contains(want, a.Policy) {
			out = append(out, a)
		}
	}
	for _, p := range want {
		if !hasPolicy(out, p) {
			out = append(out, directus.Access{Policy: p})
		}
	}
	return out
}

// policyDiff returns the policies to attach and the access rows to delete to
// go from have (policy id -> access row id) to want.
func policyDiff(have []directus.Access, want []string) (add, remove []string) {
	for _, p := range want {
		if !hasPolicy(have, p) {
			add = append(add, p)
		}
	}
	for _, a := range have {
		if !slices.Contains(want, a.Policy) && a.ID != "" {
			remove = append(remove, a.ID)
		}
	}
	sort.Strings(remove)
	return add, remove
}
