package bridge

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Token exchange vocabulary (RFC 8693).
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
)

// MaxRequestBytes bounds a token request body; larger ones get 413.
const MaxRequestBytes = 64 << 10

// Server is the bridge's HTTP front: POST /oauth/token, GET /healthz,
// GET /readyz and, when MetricsHandler is set, GET /metrics.
type Server struct {
	Exchanger *Exchanger
	Logger    *slog.Logger
	// Ready, when set, adds checks to /readyz (name -> error or nil).
	// Concurrent probes share one call, never two at a time; its answer is
	// awaited at most ReadyTimeout (then the check "ready" fails), and its
	// errors are logged, never shown.
	Ready func(ctx context.Context) map[string]error
	// MetricsHandler serves GET /metrics (e.g. promhttp.HandlerFor).
	MetricsHandler http.Handler
	// TrustedProxies are the peers whose X-Forwarded-For is believed when
	// telling the client's address (for logs and the per-IP limit).
	TrustedProxies []netip.Prefix
	// DirectusCheckInterval is the least time between two Directus pings
	// made for /readyz (default 5s): probes in between get the last
	// result and concurrent probes share one ping, so that however often
	// /readyz is probed it costs Directus at most one request per interval.
	DirectusCheckInterval time.Duration
	// ReadyTimeout bounds /readyz (default 2s): a check that has not
	// answered by then is reported failing ("timed out") and goes on in
	// the background, one at a time.
	ReadyTimeout time.Duration

	// ReuseSummaryInterval is how long a reused exchange may wait to be
	// logged in its user's reuse summary (default 1m; see audit.go).
	ReuseSummaryInterval time.Duration
	// ReuseSummaryClients bounds the users with an open reuse summary
	// (default 10000): past it, every open summary is written at once.
	ReuseSummaryClients int

	readiness readiness // what /readyz last learnt; see ready.go
	reuseOnce sync.Once
	reuseLog  *reuseLog
	hooked    atomic.Pointer[http.Server] // the last server Close was registered with
	hookMu    sync.Mutex
	hookedAll map[*http.Server]bool
}

type ctxKey int

const (
	requestIDKey ctxKey = iota
	viaKey              // "proxy" on the proxy's exchanges
)

// WithRequestID returns ctx carrying the request id id (see RequestID),
// for the proxy's requests, which Handler does not wrap.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

// NewRequestID returns a new request id, or id itself when it is a sane
// one (what Handler takes from X-Request-Id).
func NewRequestID(id string) string {
	if saneRequestID(id) {
		return id
	}
	return newRequestID()
}

// RequestID returns the request id of ctx, or "".
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey).(string)
	return s
}

// Handler returns the routes, wrapped so that every request has a request id
// (taken from X-Request-Id when sane, else generated) that is returned in
// X-Request-Id and logged on every line.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) { s.token(r.Context(), w, r) })
	mux.HandleFunc("/oauth/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, &Error{Code: "invalid_request", Description: "use POST", Status: http.StatusMethodNotAllowed})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	if s.MetricsHandler != nil {
		mux.Handle("GET /metrics", s.MetricsHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := headerValue(r.Header, "X-Request-Id")
		if !saneRequestID(id) {
			id = newRequestID()
		}
		w.Header()["X-Request-Id"] = []string{id} // canonical already
		ctx := context.WithValue(r.Context(), requestIDKey, id)
		if r.Method == http.MethodPost && r.URL.Path == "/oauth/token" && r.URL.RawPath == "" {
			// The hot path: what the mux would do, without matching its
			// patterns or copying the request for its new context.
			s.token(ctx, w, r)
			return
		}
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
}

// newRequestID returns 16 random hex digits. A request id needs to be
// unique, not secret: it comes from the runtime's ChaCha8 generator
// (math/rand/v2), which costs no system call, rather than crypto/rand.
func newRequestID() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	var h [16]byte
	hex.Encode(h[:], b[:])
	return string(h[:])
}

func saneRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// token answers POST /oauth/token. ctx is the request's context with its
// request id (r.Context() may lack it).
func (s *Server) token(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ip := s.clientIP(r)
	if e := s.limitIP(ctx, ip, start); e != nil {
		writeError(w, e)
		return
	}
	req, perr := parseRequest(w, r)
	if perr != nil {
		s.refusedEarly(ctx, ip, perr, perr.Code, start)
		writeError(w, perr)
		return
	}
	res, err := s.Exchanger.Exchange(ctx, req)
	if err != nil {
		writeError(w, s.refused(ctx, ip, req, err, start))
		return
	}
	now := s.Exchanger.now()
	expiresIn := int64(res.Expiry.Sub(now) / time.Second)
	if expiresIn < 1 {
		expiresIn = 1
	}
	s.granted(ctx, r, ip, res, now, start)
	writeToken(w, res.Token, expiresIn, res.Scopes)
}

// Swap exchanges subject for a request that the proxy forwards (package
// proxy) as POST /oauth/token would: the same verification, mapping,
// token reuse, metrics and audit lines (with via=proxy), under the same
// rate limits, which count only subject tokens not verified before (see
// Request.Proxied). The error is what the exchange endpoint would answer;
// the proxy words it as Directus would.
func (s *Server) Swap(ctx context.Context, r *http.Request, subject string) (*Result, *Error) {
	start := time.Now()
	ip := s.clientIP(r)
	ctx = context.WithValue(ctx, viaKey, "proxy")
	if !s.Exchanger.verifier.cached(subject) {
		if e := s.limitIP(ctx, ip, start); e != nil {
			return nil, e
		}
	}
	req := Request{SubjectToken: subject, Proxied: true}
	res, err := s.Exchanger.Exchange(ctx, req)
	if err != nil {
		return nil, s.refused(ctx, ip, req, err, start)
	}
	s.granted(ctx, r, ip, res, s.Exchanger.now(), start)
	return res, nil
}

// Trusts reports whether raw looks like a JWT of a trusted issuer (see
// Exchanger.Trusts).
func (s *Server) Trusts(raw string) bool { return s.Exchanger.Trusts(raw) }

// limitIP applies the per-address limit, logging and counting a refusal.
func (s *Server) limitIP(ctx context.Context, ip string, start time.Time) *Error {
	ok, wait := s.Exchanger.perIP.allow(ip)
	if ok {
		return nil
	}
	s.Exchanger.metrics.limited("ip")
	e := &Error{Code: "temporarily_unavailable", Description: "rate limit exceeded for this address",
		Status: http.StatusTooManyRequests, RetryAfter: wait}
	s.refusedEarly(ctx, ip, e, "rate_limited", start)
	return e
}

// granted counts and logs a successful exchange.
func (s *Server) granted(ctx context.Context, r *http.Request, ip string, res *Result, now, start time.Time) {
	m := s.Exchanger.metrics
	m.exchange(res.Issuer, string(res.Outcome), "", time.Since(start))
	// A reuse is counted in its user's reuse summary, not logged on its
	// own line (see audit.go); anything else is logged now, after the
	// summary of the token it replaces.
	level := slog.LevelInfo
	reuses := s.reuses()
	if res.Outcome != Reused {
		reuses.before(res.UserID)
	} else if counted, opened := reuses.add(res, ip, now); counted {
		level = slog.LevelDebug
		if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok && opened {
			s.closeOnShutdown(srv) // a summary is open: a shutdown must write it
		}
	}
	if s.log().Enabled(ctx, level) {
		s.exchanged(ctx, level, ip, res, start)
	}
}

// refusedEarly logs and counts a request refused before its subject
// token is looked at, under the error code logged.
func (s *Server) refusedEarly(ctx context.Context, ip string, e *Error, logged string, start time.Time) {
	s.Exchanger.metrics.exchange("", "refused", logged, time.Since(start))
	attrs := []slog.Attr{slog.String("event", "exchange"), slog.String("outcome", "refused"), slog.String("error", logged)}
	if logged == e.Code {
		attrs = append(attrs, slog.String("reason", e.Description))
	}
	s.audit(ctx, slog.LevelInfo, "exchange refused", ip, attrs...)
}

// refused logs and counts an exchange that failed and returns the error to
// answer. (The logging of token's rare paths is kept out of its frame: the
// hot path's stack stays small.)
func (s *Server) refused(ctx context.Context, ip string, req Request, err error, start time.Time) *Error {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: "server_error", Description: "internal error", Status: 500, Cause: err}
	}
	attrs := []slog.Attr{slog.String("event", "exchange"), slog.String("outcome", "refused"), slog.String("error", e.Code),
		slog.String("reason", e.Description), slog.String("subject_fp", Fingerprint(req.SubjectToken)),
		slog.Int64("duration_ms", time.Since(start).Milliseconds())}
	if e.Cause != nil {
		attrs = append(attrs, slog.String("err", e.Cause.Error()))
	}
	m := s.Exchanger.metrics
	if e.Status >= 500 {
		m.exchange(e.Issuer, "failed", e.Code, time.Since(start))
		attrs[1] = slog.String("outcome", "failed")
		s.audit(ctx, slog.LevelWarn, "exchange failed", ip, attrs...)
	} else {
		m.exchange(e.Issuer, "refused", e.Code, time.Since(start))
		s.audit(ctx, slog.LevelInfo, "exchange refused", ip, attrs...)
	}
	return e
}

// exchanged writes the line of a successful exchange.
func (s *Server) exchanged(ctx context.Context, level slog.Level, ip string, res *Result, start time.Time) {
	s.audit(ctx, level, "exchange", ip, slog.String("event", "exchange"), slog.String("outcome", string(res.Outcome)),
		slog.String("issuer", res.Issuer), slog.String("client", res.Client), slog.String("user_id", res.UserID),
		slog.String("role", res.Role), slog.Any("policies", res.Policies), slog.String("rule", res.Rule),
		slog.String("scopes", strings.Join(res.Scopes, " ")), slog.String("token_fp", Fingerprint(res.Token)),
		slog.String("subject_fp", res.SubjectFP), slog.String("expires_at", res.Expiry.UTC().Format(time.RFC3339)),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()))
}

// audit writes one line about an exchange, with the request id and the
// caller's address first.
func (s *Server) audit(ctx context.Context, level slog.Level, msg, remote string, attrs ...slog.Attr) {
	log := s.log()
	if !log.Enabled(ctx, level) {
		return
	}
	all := make([]slog.Attr, 0, len(attrs)+3)
	all = append(all, slog.String("request_id", RequestID(ctx)), slog.String("remote", remote))
	if via, ok := ctx.Value(viaKey).(string); ok {
		all = append(all, slog.String("via", via))
	}
	log.LogAttrs(ctx, level, msg, append(all, attrs...)...)
}

// reuses returns the reuse summaries (made on first use).
func (s *Server) reuses() *reuseLog {
	s.reuseOnce.Do(func() {
		s.reuseLog = newReuseLog(s.log(), s.ReuseSummaryInterval, s.ReuseSummaryClients)
	})
	return s.reuseLog
}

// Close writes the reuse summaries still open (see audit.go); an exchange
// answered after Close is logged on its own line, reuses included, so no
// reuse goes unlogged. The handler registers Close with every http.Server
// that serves it (RegisterOnShutdown, when it opens a summary), so a
// graceful Shutdown starts writing them at once; call Close again after
// Shutdown returned, before the process exits: it returns when they are
// written.
func (s *Server) Close() {
	s.reuses().close()
}

// closeOnShutdown registers Close with srv once.
func (s *Server) closeOnShutdown(srv *http.Server) {
	if s.hooked.Load() == srv {
		return
	}
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	if s.hookedAll == nil {
		s.hookedAll = map[*http.Server]bool{}
	}
	if !s.hookedAll[srv] {
		s.hookedAll[srv] = true
		srv.RegisterOnShutdown(s.Close)
	}
	s.hooked.Store(srv)
}

// writeToken writes the successful token response (RFC 8693 §2.2.1), the
// same bytes json.Encoder writes for the map of its members, without
// reflection: this is the returning client's answer.
func writeToken(w http.ResponseWriter, token string, expiresIn int64, scopes []string) {
	h := w.Header()
	h["Cache-Control"], h["Pragma"], h["Content-Type"] = noStore, noCache, jsonType
	bp := answerPool.Get().(*[]byte)
	b := append((*bp)[:0], `{"access_token":`...)
	b = appendJSONString(b, token)
	b = append(b, `,"expires_in":`...)
	b = strconv.AppendInt(b, expiresIn, 10)
	b = append(b, `,"issued_token_type":"`+TokenTypeAccessToken+`","scope":`...)
	b = appendJSONString(b, strings.Join(scopes, " "))
	b = append(b, `,"token_type":"Bearer"}`+"\n"...)
	_, _ = w.Write(b) // 200 OK
	if cap(b) <= 4<<10 {
		*bp = b
		answerPool.Put(bp)
	}
}

// Header values of the token response, shared by every response: net/http
// only reads them, and with len == cap an append by anyone copies.
var (
	noStore  = []string{"no-store"}
	noCache  = []string{"no-cache"}
	jsonType = []string{"application/json; charset=utf-8"}
)

var answerPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// appendJSONString appends s as a JSON string, as encoding/json writes it
// (HTML characters escaped): printable ASCII other than the escaped
// characters is copied, anything else goes through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// parseRequest reads a token-exchange request from a form-encoded or JSON
// body. Parameters may appear once each (RFC 6749 §3.2); unknown ones are
// ignored.
func parseRequest(w http.ResponseWriter, r *http.Request) (Request, *Error) {
	bad := func(format string, a ...any) (Request, *Error) {
		return Request{}, &Error{Code: "invalid_request", Description: fmt.Sprintf(format, a...), Status: 400}
	}
	body, err := readBody(w, r)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Request{}, &Error{Code: "invalid_request", Description: fmt.Sprintf("request body over %d bytes", MaxRequestBytes), Status: http.StatusRequestEntityTooLarge}
		}
		return bad("could not read the request body")
	}
	mt := headerValue(r.Header, "Content-Type")
	if mt != "application/x-www-form-urlencoded" { // what every client sends: nothing to parse
		mt, _, _ = mime.ParseMediaType(mt)
	}
	var small [8]param // a token request has a handful: no allocation
	var ps params
	switch mt {
	case "application/x-www-form-urlencoded":
		ps, err = parseForm(body, small[:0])
		if err != nil {
			return bad("malformed form body")
		}
	case "application/json":
		vals, err := jsonParams(body)
		if err != nil {
			return bad("malformed JSON body: %v", err)
		}
		for k, v := range vals { // one value each: jsonParams refuses repeated keys
			ps = append(ps, param{k, v[0]})
		}
	default:
		return Request{}, &Error{Code: "invalid_request", Status: http.StatusUnsupportedMediaType,
			Description: "Content-Type must be application/x-www-form-urlencoded or application/json"}
	}
	if len(r.URL.RawQuery) > 0 {
		return bad("parameters belong in the body, not the URL")
	}
	if k, ok := ps.repeated(); ok {
		return bad("parameter %s is repeated", k)
	}
	for _, p := range ps {
		if !utf8.ValidString(p.key) || !utf8.ValidString(p.value) {
			return bad("parameters must be UTF-8")
		}
	}
	get := ps.get
	switch get("grant_type") {
	case GrantTypeTokenExchange:
	case "":
		return bad("grant_type is required")
	default:
		return Request{}, &Error{Code: "unsupported_grant_type", Status: 400,
			Description: "only " + GrantTypeTokenExchange + " is supported"}
	}
	if get("subject_token") == "" {
		return bad("subject_token is required")
	}
	switch get("subject_token_type") {
	case TokenTypeAccessToken, TokenTypeJWT:
	case "":
		return bad("subject_token_type is required")
	default:
		return bad("subject_token_type must be %s or %s", TokenTypeAccessToken, TokenTypeJWT)
	}
	if get("actor_token") != "" || get("actor_token_type") != "" {
		return bad("delegation (actor_token) is not supported")
	}
	if t := get("requested_token_type"); t != "" && t != TokenTypeAccessToken {
		return bad("requested_token_type must be %s", TokenTypeAccessToken)
	}
	req := Request{SubjectToken: get("subject_token")}
	if ps.has("scope") {
		req.Scopes = strings.Fields(get("scope"))
		if len(req.Scopes) == 0 {
			return Request{}, &Error{Code: "invalid_scope", Description: "scope is empty", Status: 400}
		}
	}
	return req, nil
}

// param is one parameter of a token request.
type param struct{ key, value string }

// params are a request's parameters in the order given.
type params []param

// get returns the first value of key, or "".
func (ps params) get(key string) string {
	for _, p := range ps {
		if p.key == key {
			return p.value
		}
	}
	return ""
}

func (ps params) has(key string) bool {
	for _, p := range ps {
		if p.key == key {
			return true
		}
	}
	return false
}

// repeated returns a key given more than once. Work is linear in the
// parameters: pairs are compared only while there are few of them.
func (ps params) repeated() (string, bool) {
	if len(ps) <= 16 {
		for i := 1; i < len(ps); i++ {
			for j := range i {
				if ps[i].key == ps[j].key {
					return ps[i].key, true
				}
			}
		}
		return "", false
	}
	seen := make(map[string]bool, len(ps))
	for _, p := range ps {
		if seen[p.key] {
			return p.key, true
		}
		seen[p.key] = true
	}
	return "", false
}

// parseForm is url.ParseQuery (the same parameters, in order, and an error
// exactly when it has one), appending to ps, with a fast path for what needs
// no unescaping: a subject token is a JWT, hundreds of bytes with neither
// '%' nor '+', which url.QueryUnescape scans byte by byte.
func parseForm(query string, ps params) (params, error) {
	if strings.Count(query, "&")+1 > maxFormParams {
		return ps, errors.New("number of URL query parameters exceeded limit")
	}
	var err error
	for query != "" {
		var key string
		key, query, _ = strings.Cut(query, "&")
		if strings.Contains(key, ";") {
			err = errors.New("invalid semicolon separator in query")
			continue
		}
		if key == "" {
			continue
		}
		key, value, _ := strings.Cut(key, "=")
		key, err1 := queryUnescape(key)
		if err1 != nil {
			if err == nil {
				err = err1
			}
			continue
		}
		value, err1 = queryUnescape(value)
		if err1 != nil {
			if err == nil {
				err = err1
			}
			continue
		}
		ps = append(ps, param{key, value})
	}
	return ps, err
}

// headerValue is h.Get(key) for a key in canonical form, without
// canonicalising it again.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// maxFormParams is url.ParseQuery's default limit of parameters.
const maxFormParams = 10000

// queryUnescape is url.QueryUnescape, which returns s itself when it holds
// neither '%' nor '+', and without allocating for the token-exchange URNs
// as url.Values.Encode writes them.
func queryUnescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, nil
	}
	if strings.HasPrefix(s, "urn%3Aietf%3Aparams%3Aoauth%3A") {
		for _, u := range escapedURNs {
			if s == u.escaped {
				return u.urn, nil
			}
		}
	}
	return url.QueryUnescape(s)
}

var escapedURNs = func() []struct{ escaped, urn string } {
	var out []struct{ escaped, urn string }
	for _, u := range []string{GrantTypeTokenExchange, TokenTypeAccessToken, TokenTypeJWT} {
		out = append(out, struct{ escaped, urn string }{url.QueryEscape(u), u})
	}
	return out
}()

// readBody reads the request body, at most MaxRequestBytes, into a string.
// A body of known length (every client's) is read into one buffer of its
// size that becomes the string without a copy; any other is read through
// http.MaxBytesReader, as before.
func readBody(w http.ResponseWriter, r *http.Request) (string, error) {
	if n := r.ContentLength; n >= 0 && n <= MaxRequestBytes {
		if n == 0 {
			return "", nil
		}
		// net/http's body stops at Content-Length: no more can be read.
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return "", err
		}
		// b is never written again and not kept anywhere else.
		return unsafe.String(unsafe.SliceData(b), len(b)), nil
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 8<<10 { // not the buffer of an unusually large body
			bodyPool.Put(buf)
		}
	}()
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	return buf.String(), err
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// jsonParams reads a flat JSON object of strings (a scope may also be a
// list) into form values. Duplicate keys are refused.
func jsonParams(body string) (url.Values, error) {
	dec := json.NewDecoder(strings.NewReader(body))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, errors.New("want a JSON object")
	}
	out := url.Values{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k := kt.(string)
		if out.Has(k) {
			return nil, fmt.Errorf("key %q is repeated", k)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		var s string
		var list []string
		switch {
		case json.Unmarshal(raw, &s) == nil:
			out.Set(k, s)
		case k == "scope" && json.Unmarshal(raw, &list) == nil:
			out.Set(k, strings.Join(list, " "))
		default:
			return nil, fmt.Errorf("%q must be a string", k)
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	return out, nil
}

// writeError is the one place that writes OAuth 2.0 error responses
// (RFC 6749 §5.2). Only the code and the description reach the caller.
func writeError(w http.ResponseWriter, e *Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, e.Status, map[string]string{"error": e.Code, "error_description": e.Description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// clientIP is the peer's address, or, when the peer is a trusted proxy, the
// right-most address of X-Forwarded-For that is not a trusted proxy.
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if len(s.TrustedProxies) == 0 {
		return host // no proxy to believe: nothing to parse
	}
	trusted := func(a string) bool {
		ip, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil {
			return false
		}
		for _, p := range s.TrustedProxies {
			if p.Contains(ip.Unmap()) {
				return true
			}
		}
		return false
	}
	if !trusted(host) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if h == "" {
			continue
		}
		if _, err := netip.ParseAddr(h); err != nil {
			return host // malformed: do not believe any of it
		}
		if !trusted(h) {
			return h
		}
	}
	return host
}
