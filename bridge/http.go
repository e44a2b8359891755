package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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

	readiness readiness // what /readyz last learnt; see ready.go
}

type ctxKey int

const requestIDKey ctxKey = 0

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
	mux.HandleFunc("POST /oauth/token", s.token)
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
		id := r.Header.Get("X-Request-Id")
		if !saneRequestID(id) {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			id = hex.EncodeToString(b)
		}
		w.Header().Set("X-Request-Id", id)
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
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

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx := r.Context()
	ip := s.clientIP(r)
	log := s.log().With("request_id", RequestID(ctx), "remote", ip)
	m := s.Exchanger.metrics
	if ok, wait := s.Exchanger.perIP.allow(ip); !ok {
		m.limited("ip")
		m.exchange("", "refused", "rate_limited", time.Since(start))
		log.InfoContext(ctx, "exchange refused", "event", "exchange", "outcome", "refused", "error", "rate_limited")
		writeError(w, &Error{Code: "temporarily_unavailable", Description: "rate limit exceeded for this address",
			Status: http.StatusTooManyRequests, RetryAfter: wait})
		return
	}
	req, perr := parseRequest(w, r)
	if perr != nil {
		m.exchange("", "refused", perr.Code, time.Since(start))
		log.InfoContext(ctx, "exchange refused", "event", "exchange", "outcome", "refused", "error", perr.Code, "reason", perr.Description)
		writeError(w, perr)
		return
	}
	res, err := s.Exchanger.Exchange(ctx, req)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Code: "server_error", Description: "internal error", Status: 500, Cause: err}
		}
		attrs := []any{"event", "exchange", "outcome", "refused", "error", e.Code, "reason", e.Description,
			"subject_fp", Fingerprint(req.SubjectToken), "duration_ms", time.Since(start).Milliseconds()}
		if e.Cause != nil {
			attrs = append(attrs, "err", e.Cause.Error())
		}
		if e.Status >= 500 {
			m.exchange(e.Issuer, "failed", e.Code, time.Since(start))
			log.WarnContext(ctx, "exchange failed", attrs...)
		} else {
			m.exchange(e.Issuer, "refused", e.Code, time.Since(start))
			log.InfoContext(ctx, "exchange refused", attrs...)
		}
		writeError(w, e)
		return
	}
	now := s.Exchanger.now()
	expiresIn := int64(res.Expiry.Sub(now) / time.Second)
	if expiresIn < 1 {
		expiresIn = 1
	}
	m.exchange(res.Issuer, string(res.Outcome), "", time.Since(start))
	log.InfoContext(ctx, "exchange", "event", "exchange", "outcome", string(res.Outcome), "issuer", res.Issuer,
		"client", res.Client, "user_id", res.UserID, "role", res.Role, "policies", res.Policies, "rule", res.Rule,
		"scopes", strings.Join(res.Scopes, " "), "token_fp", Fingerprint(res.Token), "subject_fp", res.SubjectFP,
		"expires_at", res.Expiry.UTC().Format(time.RFC3339), "duration_ms", time.Since(start).Milliseconds())
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":      res.Token,
		"issued_token_type": TokenTypeAccessToken,
		"token_type":        "Bearer",
		"expires_in":        expiresIn,
		"scope":             strings.Join(res.Scopes, " "),
	})
}

// parseRequest reads a token-exchange request from a form-encoded or JSON
// body. Parameters may appear once each (RFC 6749 §3.2); unknown ones are
// ignored.
func parseRequest(w http.ResponseWriter, r *http.Request) (Request, *Error) {
	bad := func(format string, a ...any) (Request, *Error) {
		return Request{}, &Error{Code: "invalid_request", Description: fmt.Sprintf(format, a...), Status: 400}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Request{}, &Error{Code: "invalid_request", Description: fmt.Sprintf("request body over %d bytes", MaxRequestBytes), Status: http.StatusRequestEntityTooLarge}
		}
		return bad("could not read the request body")
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var params url.Values
	switch mt {
	case "application/x-www-form-urlencoded":
		params, err = url.ParseQuery(string(body))
		if err != nil {
			return bad("malformed form body")
		}
	case "application/json":
		params, err = jsonParams(body)
		if err != nil {
			return bad("malformed JSON body: %v", err)
		}
	default:
		return Request{}, &Error{Code: "invalid_request", Status: http.StatusUnsupportedMediaType,
			Description: "Content-Type must be application/x-www-form-urlencoded or application/json"}
	}
	if len(r.URL.RawQuery) > 0 {
		return bad("parameters belong in the body, not the URL")
	}
	for k, v := range params {
		if len(v) > 1 {
			return bad("parameter %s is repeated", k)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v[0]) {
			return bad("parameters must be UTF-8")
		}
	}
	get := params.Get
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
	if params.Has("scope") {
		req.Scopes = strings.Fields(get("scope"))
		if len(req.Scopes) == 0 {
			return Request{}, &Error{Code: "invalid_scope", Description: "scope is empty", Status: 400}
		}
	}
	return req, nil
}

// jsonParams reads a flat JSON object of strings (a scope may also be a
// list) into form values. Duplicate keys are refused.
func jsonParams(body []byte) (url.Values, error) {
	dec := json.NewDecoder(strings.NewReader(string(body)))
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
