package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/directus-bridge/directus-bridge/directus"
)

// Reconciler runs reconciliations one at a time with the reconcile settings
// in force: the scheduled runs and the ones asked for on the admin listener
// share it, so that two runs never overlap (they would plan from the same
// view and apply twice).
type Reconciler struct {
	ex  *Exchanger
	sem chan struct{} // holds one token while a run is in progress
	cfg atomic.Pointer[ReconcileConfig]
}

// NewReconciler returns a Reconciler for ex with rc in force.
func NewReconciler(ex *Exchanger, rc ReconcileConfig) *Reconciler {
	r := &Reconciler{ex: ex, sem: make(chan struct{}, 1)}
	r.SetConfig(rc)
	return r
}

// SetConfig puts rc in force for the next run (a reload); a run in progress
// finishes with the settings it started with.
func (r *Reconciler) SetConfig(rc ReconcileConfig) { r.cfg.Store(&rc) }

// Config returns the reconcile settings in force.
func (r *Reconciler) Config() ReconcileConfig { return *r.cfg.Load() }

// Run waits for the run in progress, if any, then reconciles (see
// Exchanger.Reconcile). When ctx ends while it waits, nothing runs: it
// returns a nil report and ctx's error.
func (r *Reconciler) Run(ctx context.Context, dryRun bool) (*Report, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-r.sem }()
	if err := ctx.Err(); err != nil { // ended while both were ready
		return nil, err
	}
	return r.ex.Reconcile(ctx, r.Config(), dryRun)
}

// TryRun reconciles unless a run is in progress: then it returns at once
// with ran false. The schedule uses it: a run that an operator has just
// started does the scheduled run's work.
func (r *Reconciler) TryRun(ctx context.Context, dryRun bool) (rep *Report, ran bool, err error) {
	select {
	case r.sem <- struct{}{}:
	default:
		return nil, false, nil
	}
	defer func() { <-r.sem }()
	rep, err = r.ex.Reconcile(ctx, r.Config(), dryRun)
	return rep, true, err
}

// AdminRunTimeout bounds one admin request, the wait for a run in progress
// included: a reconcile of many thousand users takes minutes.
const AdminRunTimeout = 30 * time.Minute

// MaxAdminWaiting bounds the admin requests in progress (running or
// waiting for the run in progress); past it a request gets 503 at once.
const MaxAdminWaiting = 4

// MinAdminTokenLength is the shortest admin token NewAdminServer accepts.
const MinAdminTokenLength = 32

// maxAdminBody bounds an admin request's body: none is needed.
const maxAdminBody = 1 << 10

// AdminServer is the operator's HTTP API, served on its own listener (never
// on the exchange listener, which clients reach). Every request MUST carry
// "Authorization: Bearer <token>"; without it nothing runs. Routes:
//
//	POST /v1/reconcile[?dry_run=true|false]   reconcile now; the report as JSON
//
// Every call is logged (event "admin"); the token never is.
type AdminServer struct {
	Reconciler *Reconciler
	Logger     *slog.Logger
	// RunTimeout bounds one request (default AdminRunTimeout).
	RunTimeout time.Duration

	tokenHash [sha256.Size]byte // the token itself is not kept
	waiting   atomic.Int32      // requests in Reconciler.Run
}

// NewAdminServer returns the admin API over r, accepting token (at least
// MinAdminTokenLength characters).
func NewAdminServer(r *Reconciler, token string, log *slog.Logger) (*AdminServer, error) {
	if len(token) < MinAdminTokenLength {
		return nil, fmt.Errorf("admin: the token must hold at least %d characters (has %d)", MinAdminTokenLength, len(token))
	}
	return &AdminServer{Reconciler: r, Logger: log, tokenHash: sha256.Sum256([]byte(token))}, nil
}

// authorized reports whether r carries the token. The hashes are compared,
// in constant time, so that neither the token's bytes nor its length leak
// through timing.
func (a *AdminServer) authorized(r *http.Request) bool {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return false
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	tok = strings.TrimSpace(tok)
	h := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) == 1 && tok != ""
}

// adminOutcome is what one admin call came to, for its log line.
type adminOutcome struct {
	status  int
	outcome string
	attrs   []any
}

// ServeHTTP answers the admin API and logs the call.
func (a *AdminServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w.Header().Set("Cache-Control", "no-store")
	o := a.serve(w, r)
	level := slog.LevelInfo
	if o.status >= 400 {
		level = slog.LevelWarn
	}
	if a.Logger == nil {
		return
	}
	attrs := append([]any{"event", "admin", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr,
		"status", o.status, "outcome", o.outcome, "duration", time.Since(start).Round(time.Millisecond).String()}, o.attrs...)
	a.Logger.Log(r.Context(), level, "admin", attrs...)
}

func (a *AdminServer) serve(w http.ResponseWriter, r *http.Request) adminOutcome {
	if !a.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="directus-bridge admin"`)
		return adminError(w, http.StatusUnauthorized, "unauthorized", "unauthorized", "a valid bearer token is required", 0)
	}
	if r.URL.Path != "/v1/reconcile" {
		return adminError(w, http.StatusNotFound, "not_found", "not_found", "no such endpoint", 0)
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return adminError(w, http.StatusMethodNotAllowed, "method_not_allowed", "invalid_request", "use POST", 0)
	}
	dry, err := dryRunParam(r.URL.RawQuery)
	if err != nil {
		return adminError(w, http.StatusBadRequest, "bad_request", "invalid_request", err.Error(), 0)
	}
	if r.ContentLength > maxAdminBody {
		return adminError(w, http.StatusRequestEntityTooLarge, "too_large", "invalid_request", "no request body is needed", 0)
	}
	if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxAdminBody)); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return adminError(w, http.StatusRequestEntityTooLarge, "too_large", "invalid_request", "no request body is needed", 0)
		}
		return adminError(w, http.StatusBadRequest, "bad_request", "invalid_request", "the request body could not be read", 0)
	}
	attrs := []any{"dry_run", dry}
	if !a.Reconciler.ex.Loaded() {
		o := adminError(w, http.StatusServiceUnavailable, "not_ready", "unavailable",
			"the bridge is starting: its rules are not in force yet", 5*time.Second)
		o.attrs = attrs
		return o
	}
	timeout := a.RunTimeout
	if timeout <= 0 {
		timeout = AdminRunTimeout
	}
	if n := a.waiting.Add(1); n > MaxAdminWaiting {
		a.waiting.Add(-1)
		o := adminError(w, http.StatusServiceUnavailable, "busy", "unavailable",
			fmt.Sprintf("%d reconcile requests are in progress already: retry when they are done", MaxAdminWaiting), 30*time.Second)
		o.attrs = attrs
		return o
	}
	defer a.waiting.Add(-1)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	rep, err := a.Reconciler.Run(ctx, dry)
	if rep == nil {
		o := adminError(w, http.StatusServiceUnavailable, "canceled", "unavailable",
			"no reconcile ran: the request ended while waiting for the run in progress (the caller gave up, its time ran out, or the server is stopping)", 5*time.Second)
		o.attrs = append(attrs, "err", err)
		return o
	}
	attrs = append(attrs, "scanned", rep.Scanned, "managed", rep.Managed, "changes", len(rep.Changes), "skipped", rep.Skipped)
	status, outcome := http.StatusOK, "ok"
	if err != nil {
		attrs = append(attrs, "err", err)
		status, outcome = http.StatusInternalServerError, "failed"
		var apiErr *directus.APIError
		switch {
		case errors.Is(err, ErrNotLeader):
			// A replica that does not run the jobs: ask the one that does.
			status, outcome = http.StatusConflict, "not_leader"
		case errors.Is(err, directus.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			status, outcome = http.StatusServiceUnavailable, "unavailable"
			retry := 30 * time.Second
			if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
				retry = apiErr.RetryAfter
			}
			setRetryAfter(w, retry)
		}
	}
	writeIndented(w, status, rep)
	return adminOutcome{status: status, outcome: outcome, attrs: attrs}
}

// dryRunParam parses the query: dry_run alone, at most once, a boolean. Any
// other parameter is refused, so that a misspelt dry_run never runs for real.
func dryRunParam(rawQuery string) (bool, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return false, errors.New("malformed query")
	}
	for k := range q {
		if k != "dry_run" {
			return false, fmt.Errorf("unknown parameter %q (only dry_run)", k)
		}
	}
	v := q["dry_run"]
	switch len(v) {
	case 0:
		return false, nil
	case 1:
	default:
		return false, errors.New("dry_run given more than once")
	}
	dry, err := strconv.ParseBool(v[0])
	if err != nil {
		return false, errors.New("dry_run: want true or false")
	}
	return dry, nil
}

// adminError writes a JSON error body {"error": code, "error_description":
// descr}, with Retry-After when retry is set.
func adminError(w http.ResponseWriter, status int, outcome, code, descr string, retry time.Duration) adminOutcome {
	if retry > 0 {
		setRetryAfter(w, retry)
	}
	writeJSON(w, status, map[string]string{"error": code, "error_description": descr})
	return adminOutcome{status: status, outcome: outcome}
}

func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
}

// writeIndented writes v as `directus-bridge reconcile -json` prints it.
func writeIndented(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
