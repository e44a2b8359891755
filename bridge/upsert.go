package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/directus"
)

// maxCandidates bounds the unconfirmed tokens of one user: past it the
// bridge stops writing new ones until Directus confirms one.
const maxCandidates = 4

// view is what Directus holds for one user, as far as the bridge knows:
// from the record (what Directus answered last) or from a read just now.
type view struct {
	exists   bool
	read     bool // read just now: which token Directus holds is unknown
	status   string
	role     string
	access   []directus.Access
	extID    string
	authData json.RawMessage
	binding  binding
	bound    bool
}

func viewOfUser(u directus.User) view {
	v := view{exists: true, read: true, status: u.Status, role: u.Role, access: u.Access,
		extID: u.ExternalIdentifier, authData: u.AuthData}
	v.binding, v.bound = bindingOf(u.AuthData)
	return v
}

func viewOfRecord(r *Record) view {
	v := view{exists: !r.Gone, status: "active", role: r.Role, access: r.Policies, bound: r.Bound,
		binding: binding{Issuer: r.IssuerURL, Client: r.Client}}
	if r.SuspendedByBridge {
		v.status = "suspended"
	}
	return v
}

// binding is what the bridge writes into a machine user's auth_data, so
// that Directus shows which issuer and client the user belongs to and a
// bridge that lost its state still refuses another issuer.
type binding struct {
	Issuer string `json:"issuer"`
	Client string `json:"client"`
}

const bindingKey = "directus_bridge"

// bindingOf reads the binding from auth_data, which Directus returns as an
// object (PostgreSQL) or as a string holding one (SQLite).
func bindingOf(raw json.RawMessage) (binding, bool) {
	obj, ok := authObject(raw)
	if !ok {
		return binding{}, false
	}
	var b binding
	if err := json.Unmarshal(obj[bindingKey], &b); err != nil || b.Issuer == "" {
		return binding{}, false
	}
	return b, true
}

func authObject(raw json.RawMessage) (map[string]json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, false
		}
		raw = json.RawMessage(s)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil || obj == nil {
		return nil, false
	}
	return obj, true
}

// withBinding returns auth_data with the binding set, keeping whatever else
// an object there holds.
func withBinding(raw json.RawMessage, b binding) json.RawMessage {
	obj, ok := authObject(raw)
	if !ok {
		obj = map[string]json.RawMessage{}
	}
	obj[bindingKey], _ = json.Marshal(b)
	out, _ := json.Marshal(obj)
	return out
}

// canReuse reports whether rec's live token may be handed out as it is:
// Directus is known to hold it with exactly the grant, and nothing the
// bridge must write is outstanding.
func (e *Exchanger) canReuse(rec *Record, g Grant, newExp, now time.Time) bool {
	return !rec.Unsure && !rec.Gone && rec.Bound && !rec.SuspendedByBridge && !rec.SuspendedByAdmin &&
		rec.Role == g.Role && samePolicies(rec.Policies, g.Policies) && e.reusable(rec, newExp, now)
}

// reusable reports whether the live token of rec may be handed out again:
// while at least RotateBefore of it is left, or while a new token would not
// live longer anyway (its subject token expires first).
func (e *Exchanger) reusable(rec *Record, newExp, now time.Time) bool {
	return rec.live(now) && e.reusableExpiry(rec.Expiry, newExp, now)
}

func (e *Exchanger) reusableExpiry(exp, newExp, now time.Time) bool {
	return now.Before(exp) && (exp.Sub(now) >= e.tok().RotateBefore.D() || !newExp.After(exp))
}

// Refusals of the write path. None of them writes to Directus.
var (
	errOtherIssuer = &Error{Code: "unauthorized_client", Status: http.StatusBadRequest,
		Description: "the Directus user of this client belongs to another issuer"}
	errForeignUser = &Error{Code: "unauthorized_client", Status: http.StatusBadRequest,
		Description: "the Directus user with this client's id is not a machine user of this issuer"}
	errExternalIDTaken = &Error{Code: "unauthorized_client", Status: http.StatusBadRequest,
		Description: "another Directus user holds this client's external identifier; a Directus administrator must resolve it"}
	errReservedClient = &Error{Code: "invalid_request", Status: http.StatusBadRequest,
		Description: "the client id starts with the name of another issuer and a colon, which its users' external identifiers use"}
	errTooLong = &Error{Code: "invalid_request", Status: http.StatusBadRequest,
		Description: "the client id is too long for a Directus external identifier"}
)

func suspendedError(status string) *Error {
	return &Error{Code: "unauthorized_client", Status: http.StatusBadRequest,
		Description: "the Directus user of this client is " + status + " by a Directus administrator"}
}

func stateError(err error) *Error {
	return &Error{Code: "temporarily_unavailable", Description: "the bridge could not record the exchange, try again later",
		Status: http.StatusServiceUnavailable, RetryAfter: 5 * time.Second, Cause: err}
}

// upsert hands out the client's live token, or brings the Directus user in
// line with the grant and hands out the token it then holds.
//
// The record says what Directus held at its last answer. Before a write,
// the record is marked Unsure with the token being written as a candidate
// (write ahead: a crash cannot leave a token the bridge does not know).
// A confirmed answer replaces the record with what Directus answered; a
// definite refusal restores the record as it was; any other failure leaves
// it Unsure, and the next write reads the user first.
func (e *Exchanger) upsert(ctx context.Context, id *Identity, res *Result, m *Mapper) error {
	g := Grant{Role: res.Role, Policies: res.Policies}
	now := e.now()
	newExp := e.newExpiry(id, now)
	// The returning client: its live token, without taking the user's lock,
	// so that no write in flight for any user (a revocation, a reconcile
	// batch, another exchange) holds it up. A writer marks the record
	// unsure before its Directus request, so what is read here is either
	// before that request (the token is still valid) or not reusable.
	// On a replica, only a record known to be what the database holds.
	if rec, known := e.store.Reusable(res.UserID); known && rec.boundTo(id.Issuer) && e.canReuse(&rec, g, newExp, now) &&
		slices.Equal(rec.Scopes, res.Scopes) && rec.Issuer == res.Issuer {
		res.Token, res.Expiry, res.Outcome = rec.Token, rec.Expiry, Reused
		e.store.Touch(res.UserID, now)
		return nil
	}
	unlock, err := e.store.Lock(ctx, res.UserID)
	if err != nil {
		if ctx.Err() != nil {
			return unavailable(err)
		}
		return stateError(err) // the database's lock (replicas)
	}
	defer unlock()
	now = e.now()
	rec, known := e.store.Get(res.UserID)
	if known && !rec.boundTo(id.Issuer) {
		e.log.WarnContext(ctx, "exchange refused: the client's Directus user belongs to another issuer",
			"user_id", res.UserID, "client", id.Client, "issuer", id.Issuer.Name, "bound_issuer", rec.Issuer)
		return errOtherIssuer
	}
	newExp = e.newExpiry(id, now)
	if known && e.canReuse(&rec, g, newExp, now) {
		res.Token, res.Expiry, res.Outcome = rec.Token, rec.Expiry, Reused
		if slices.Equal(rec.Scopes, res.Scopes) && rec.Issuer == res.Issuer {
			e.store.Touch(res.UserID, now)
			return nil
		}
		rec.Scopes, rec.Issuer, rec.LastExchange = res.Scopes, res.Issuer, now
		if err := e.store.Put(rec); err != nil {
			return stateError(err)
		}
		return nil
	}

	// Where to start from: the record, unless it is unsure or shows a
	// state only Directus can end (an administrator's suspension).
	var v view
	switch {
	case !known || rec.Gone:
		v = view{} // try a create: one request for a new client
	case rec.Unsure || rec.SuspendedByAdmin || rec.SuspendedByBridge:
		// A suspension is only ever undone after reading the user.
		u, err := e.directus.User(ctx, res.UserID)
		switch {
		case errors.Is(err, directus.ErrNotFound):
			v = view{read: true}
		case err != nil:
			return e.directusError(err)
		default:
			v = viewOfUser(u)
		}
	default:
		v = viewOfRecord(&rec)
	}
	if rec.SuspendedByBridge && v.exists && v.status != "active" {
		// Suspended, as the bridge left it, unless someone else wrote to
		// the user since (an administrator who reactivated and suspended
		// it again, or suspended it while the bridge's own suspension was
		// unconfirmed): then it is the administrator's.
		touched, err := e.touchedByOthers(ctx, res.UserID, rec.SuspendedCursor)
		if err != nil {
			return e.directusError(err)
		}
		if touched {
			rec.SuspendedByBridge = false
		}
	}

	// The token to write: the live one while it may still be handed out,
	// else an unconfirmed one that may, else a new one.
	tok, exp := "", time.Time{}
	res.Outcome = Issued
	switch {
	case known && rec.Token != "" && e.reusableExpiry(rec.Expiry, newExp, now):
		tok, exp, res.Outcome = rec.Token, rec.Expiry, Updated
	default:
		for _, c := range slices.Backward(rec.Maybe) {
			if e.reusableExpiry(c.Expiry, newExp, now) {
				tok, exp = c.Token, c.Expiry
				break
			}
		}
		if tok == "" {
			var err error
			if tok, err = e.mint(); err != nil {
				return &Error{Code: "server_error", Description: "could not generate a token", Status: 500, Cause: err}
			}
			exp = newExp
		}
		if known && rec.liveToken(now) {
			res.Outcome = Rotated
		}
	}

	next := rec
	if !known {
		next = Record{UserID: res.UserID}
	}
	next.Issuer, next.IssuerURL, next.Client = id.Issuer.Name, id.Issuer.Issuer, id.Client
	next.Scopes, next.Audiences, next.Claims = res.Scopes, id.Audiences, ruleClaims(id.Claims, m.Rules)
	next.RawClaims = recordClaims(id, m.Rules)
	next.Unsure = true
	if tok != next.Token && !slices.ContainsFunc(next.Maybe, func(c Candidate) bool { return c.Token == tok }) {
		if len(next.Maybe) >= maxCandidates {
			return unavailable(errors.New("too many writes of this user without a confirmed outcome"))
		}
		next.Maybe = append(slices.Clone(next.Maybe), Candidate{Token: tok, Expiry: exp})
	}
	// restore undoes the write ahead after a definite refusal.
	restore := func(refusal *Error) error {
		var err error
		if known {
			err = e.store.Put(rec)
		} else {
			err = e.store.Delete(next) // as written ahead, from no record

		}
		if err != nil {
			return stateError(err)
		}
		return refusal
	}
	if err := e.store.Put(next); err != nil {
		return stateError(err)
	}

	var user directus.User
	for attempt := 0; ; attempt++ {
		if refusal, suspended := e.checkView(ctx, v, &rec, known, id, res); refusal != nil {
			if suspended {
				return e.recordAdminSuspension(rec, known, next, v, refusal)
			}
			return restore(refusal)
		}
		if attempt == 3 {
			// Created and deleted under our feet again and again.
			return unavailable(errors.New("the user changed in Directus during the exchange"))
		}
		sendToken := !v.exists || v.read || rec.Unsure || tok != rec.Token
		if v.exists {
			user, err = e.directus.UpdateUser(ctx, res.UserID, e.change(v, g, tok, sendToken, id, now))
			if errors.Is(err, directus.ErrNotFound) {
				v = view{read: true} // deleted meanwhile: create it again
				continue
			}
			if !v.read && definite(err) {
				// Refused (e.g. an access row an administrator removed): the
				// record was stale. Start again from what Directus holds.
				u, rerr := e.directus.User(ctx, res.UserID)
				switch {
				case errors.Is(rerr, directus.ErrNotFound):
					v = view{read: true}
				case rerr != nil:
					return e.directusError(rerr) // the refused write changed nothing; the write ahead stays, harmless
				default:
					v = viewOfUser(u)
				}
				continue
			}
			if err == nil && !holdsGrant(user, g) {
				// The answer shows what Directus holds: someone changed the
				// user since the bridge last saw it (a policy attached, the
				// token cleared). Write again from the answer.
				v = viewOfUser(user)
				continue
			}
			break
		}
		if e.reservedExternalID(id) {
			e.log.WarnContext(ctx, "exchange refused: the client id starts with the name of an issuer with issuer-scoped ids, "+
				"whose users' external identifiers it would take", "client", id.Client, "issuer", id.Issuer.Name)
			return restore(errReservedClient)
		}
		user, err = e.create(ctx, res.UserID, tok, g, id, now)
		if directus.Code(err) == directus.CodeRecordNotUnique {
			// The user may exist: a user of the hook extension, or one
			// whose record the bridge lost. PostgreSQL names the id,
			// SQLite the external identifier the same user holds. Start
			// from what Directus holds; if no user has the id, another one
			// holds the external identifier.
			u, rerr := e.directus.User(ctx, res.UserID)
			switch {
			case errors.Is(rerr, directus.ErrNotFound):
				break // err stands: refused below
			case rerr != nil:
				return e.directusError(rerr) // the create changed nothing; the write ahead stays, harmless
			default:
				v = viewOfUser(u)
				continue
			}
		}
		break
	}
	if err != nil {
		if !definite(err) {
			// The write ahead stays: Directus may hold tok. Put it again, so
			// that a watcher or reconciler that read the user while this
			// write was in flight sees the record changed and reads again.
			if perr := e.store.Put(next); perr != nil {
				return stateError(perr)
			}
			return e.directusError(err)
		}
		switch {
		case directus.Code(err) == directus.CodeRecordNotUnique && fieldOf(err) == "external_identifier":
			e.log.WarnContext(ctx, "exchange refused: another Directus user holds the client's external identifier; "+
				"remove or change that user's external_identifier in Directus, or give the issuer user_ids: issuer",
				"user_id", res.UserID, "client", id.Client, "issuer", id.Issuer.Name, "external_identifier", ExternalID(id.Issuer, id.Client))
			return restore(errExternalIDTaken)
		case directus.Code(err) == "VALUE_TOO_LONG":
			return restore(errTooLong)
		}
		e.log.ErrorContext(ctx, "Directus refused the machine user write", "user_id", res.UserID, "client", id.Client, "err", err)
		return restore(&Error{Code: "server_error", Description: "Directus refused the machine user update", Status: 500, Cause: err})
	}

	next.Token, next.Expiry, next.Maybe, next.Unsure, next.Gone = tok, exp, nil, false, false
	next.Role, next.Policies = user.Role, user.Access
	_, next.Bound = bindingOf(user.AuthData)
	next.SuspendedByBridge = false
	next.SuspendedByAdmin = user.Status != "active"
	next.LastExchange = now
	if err := e.store.Put(next); err != nil {
		// The write ahead stays: the token is known. Unless another
		// replica's write overtook it (this one's database lock was lost
		// meanwhile, as in a database restart): then Directus may hold tok
		// without the record naming it, so it goes back in as a candidate.
		if errors.Is(err, state.ErrConflict) {
			if kerr := e.store.KeepCandidate(next, tok, exp); kerr != nil {
				e.log.ErrorContext(ctx, "a token Directus may hold could not be recorded after a conflicting write of another replica; "+
					"the reconciler revokes unknown tokens of machine users", "user_id", res.UserID, "err", kerr)
			}
		}
		return stateError(err)
	}
	if user.Status != "active" {
		return suspendedError(user.Status)
	}
	res.Token, res.Expiry = tok, exp
	return nil
}

// reservedExternalID reports whether a client of a hook-ids issuer would
// take the external identifier ("<name>:<client>") of an issuer-scoped
// issuer's client, which Directus keeps unique.
func (e *Exchanger) reservedExternalID(id *Identity) bool {
	if id.Issuer.UserIDs == UserIDsIssuer {
		return false
	}
	for _, k := range e.verifier.all() {
		if k.cfg.UserIDs == UserIDsIssuer && strings.HasPrefix(id.Client, k.cfg.Name+":") {
			return true
		}
	}
	return false
}

// touchedByOthers reports whether anyone but the bridge wrote to the user
// after the activity row afterID, according to Directus's activity log.
func (e *Exchanger) touchedByOthers(ctx context.Context, userID string, afterID int64) (bool, error) {
	self, err := e.selfID(ctx)
	if err != nil {
		return false, err
	}
	acts, err := e.directus.Activity(ctx, directus.ActivityFilter{Collection: directus.CollectionUsers, Item: userID,
		AfterID: afterID, ExcludeUser: self}, 1)
	if err != nil {
		return false, err
	}
	return len(acts) > 0, nil
}

// holdsGrant reports whether a write's answer shows the user as the bridge
// wants it: the grant exactly, a token, its binding. A suspended user is
// left to the caller (refused).
func holdsGrant(u directus.User, g Grant) bool {
	if u.Status != "active" {
		return true
	}
	_, bound := bindingOf(u.AuthData)
	return bound && u.HasToken && u.Role == g.Role && samePolicies(u.Access, g.Policies)
}

// checkView refuses a user that is not this client's to write: bound to
// another issuer, not a machine user of this issuer, or suspended by an
// administrator.
func (e *Exchanger) checkView(ctx context.Context, v view, rec *Record, known bool, id *Identity, res *Result) (_ *Error, suspended bool) {
	if !v.exists {
		return nil, false
	}
	if v.bound && v.binding.Issuer != id.Issuer.Issuer {
		e.log.WarnContext(ctx, "exchange refused: the client's Directus user is bound to another issuer in its auth_data",
			"user_id", res.UserID, "client", id.Client, "issuer", id.Issuer.Name)
		return errOtherIssuer, false
	}
	if v.read && !v.bound && v.extID != ExternalID(id.Issuer, id.Client) {
		e.log.WarnContext(ctx, "exchange refused: a Directus user has this client's id but another external_identifier",
			"user_id", res.UserID, "client", id.Client, "issuer", id.Issuer.Name)
		return errForeignUser, false
	}
	// The bridge only ever sets "suspended"; any other status, or one it
	// did not set, is an administrator's. A user that lost the binding the
	// bridge wrote is not the one it suspended (deleted and created again).
	ours := known && rec.SuspendedByBridge && v.status == "suspended" && !(v.read && rec.Bound && !v.bound)
	if v.status != "active" && !ours {
		return suspendedError(v.status), true
	}
	return nil, false
}

// recordAdminSuspension records what Directus showed of a user an
// administrator suspended, without writing to Directus, and refuses.
func (e *Exchanger) recordAdminSuspension(rec Record, known bool, next Record, v view, refusal *Error) error {
	r := rec
	if !known {
		r = Record{UserID: next.UserID, Issuer: next.Issuer, IssuerURL: next.IssuerURL, Client: next.Client,
			Scopes: next.Scopes, Audiences: next.Audiences, Claims: next.Claims, RawClaims: next.RawClaims}
		// A token Directus holds that the bridge did not write (the hook's)
		// is unknown: the next write replaces it.
		r.Unsure = true
	}
	r.Role, r.Policies, r.Bound = v.role, v.access, v.bound
	r.SuspendedByAdmin = true
	if err := e.store.Put(r); err != nil {
		return stateError(err)
	}
	return refusal
}

// change is the PATCH that brings a user from v to the grant.
func (e *Exchanger) change(v view, g Grant, tok string, sendToken bool, id *Identity, now time.Time) directus.UserChange {
	ch := directus.UserChange{LastAccess: &now}
	if sendToken {
		ch.Token = &tok
	}
	if v.role != g.Role {
		ch.Role = &g.Role
	}
	ch.AddPolicies, ch.RemoveAccess = policyDiff(v.access, g.Policies)
	if v.status != "active" {
		ch.Status = directus.Ptr("active") // only a suspension of the bridge's own
	}
	if !v.bound {
		ch.AuthData = withBinding(v.authData, binding{Issuer: id.Issuer.Issuer, Client: id.Client})
	}
	return ch
}

// create creates the machine user, falling back to the default provider
// when Directus refuses a custom one (Directus 12 without a license).
func (e *Exchanger) create(ctx context.Context, userID, tok string, g Grant, id *Identity, now time.Time) (directus.User, error) {
	nu := directus.NewUser{
		ID: userID, Status: "active", Role: g.Role, ExternalIdentifier: ExternalID(id.Issuer, id.Client),
		FirstName: e.users.FirstName, LastName: e.users.LastName, Token: tok, LastAccess: now,
		Policies: g.Policies, AuthData: withBinding(nil, binding{Issuer: id.Issuer.Issuer, Client: id.Client}),
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

// definite reports whether Directus refused a request outright (a 4xx
// answer other than 429): it applied nothing. Anything else (no answer, a
// 5xx, a malformed answer) leaves the outcome unknown.
func definite(err error) bool {
	var api *directus.APIError
	return errors.As(err, &api) && api.Status >= 400 && api.Status < 500 && api.Status != http.StatusTooManyRequests
}

func fieldOf(err error) string {
	var api *directus.APIError
	if errors.As(err, &api) {
		return api.Field
	}
	return ""
}

// directusError turns a failed Directus call into the caller's answer.
func (e *Exchanger) directusError(err error) *Error {
	if definite(err) {
		return &Error{Code: "server_error", Description: "Directus refused the machine user update", Status: 500, Cause: err}
	}
	return unavailable(err)
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

// policyDiff returns the policies to attach and the access rows to delete
// to go from have to exactly want: rows of other policies and second rows
// of a wanted one go.
func policyDiff(have []directus.Access, want []string) (add, remove []string) {
	kept := map[string]bool{}
	for _, a := range have {
		if slices.Contains(want, a.Policy) && !kept[a.Policy] {
			kept[a.Policy] = true
			continue
		}
		if a.ID != "" {
			remove = append(remove, a.ID)
		}
	}
	for _, p := range want {
		if !kept[p] {
			add = append(add, p)
		}
	}
	sort.Strings(remove)
	return add, remove
}
