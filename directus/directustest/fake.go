package directustest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Databases a fake can behave like (Options.Database).
const (
	// PostgreSQL answers json columns as JSON values, timestamps with a zone,
	// enforces varchar lengths and names the field of a bad foreign key.
	PostgreSQL = "postgres"
	// SQLite answers json columns as strings holding the JSON text,
	// timestamps of user fields without a zone and to the second, does not
	// enforce varchar lengths and names nothing in foreign-key errors.
	SQLite = "sqlite"
)

// Options shape a fake Directus.
type Options struct {
	// Version is reported by /server/info (default "12.4.0"). From major
	// version 12 on, a custom provider is refused like an unlicensed Directus
	// and activity older than 30 days is hidden.
	Version string
	// Database is PostgreSQL or SQLite. The default follows the test stack:
	// PostgreSQL for Directus 12 and later, SQLite before.
	Database string
	// AdminToken is the admin's static token (default: random).
	AdminToken string
	// Now stamps activity rows (default time.Now).
	Now func() time.Time
	// AdminEmail and AdminPassword, when both set, let the bootstrap admin
	// log in (POST /auth/login), as Directus's ADMIN_EMAIL and
	// ADMIN_PASSWORD do.
	AdminEmail, AdminPassword string
}

// Server is an in-memory Directus that speaks the REST subset the bridge
// uses. Its zero value is not usable: call NewServer.
type Server struct {
	URL        string
	AdminToken string
	version    string
	database   string
	now        func() time.Time
	srv        *httptest.Server

	mu        sync.Mutex
	users     map[string]*userRow
	roles     map[string]*roleRow
	policies  map[string]*policyRow
	access    map[string]*accessRow
	accessSeq int64
	sessions  map[string]string // login access token -> user id
	activity  []activityRow
	requests  map[string]int // "METHOD /path" -> count
	total     int
	writes    int
	times     []time.Time // arrival of every counted request
	fault     func(r *http.Request) Fault
}

// NewServer starts a fake Directus on a loopback port; it is closed by
// t.Cleanup when t is given (pass nil to close it yourself).
func NewServer(t interface{ Cleanup(func()) }, o Options) *Server {
	if o.Version == "" {
		o.Version = "12.4.0"
	}
	if o.AdminToken == "" {
		o.AdminToken = "admin-" + randomID()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{
		AdminToken: o.AdminToken,
		version:    o.Version,
		database:   o.Database,
		now:        o.Now,
		users:      map[string]*userRow{},
		roles:      map[string]*roleRow{},
		policies:   map[string]*policyRow{},
		access:     map[string]*accessRow{},
		sessions:   map[string]string{},
		requests:   map[string]int{},
	}
	if s.database == "" {
		s.database = SQLite
		if s.majorVersion() >= 12 {
			s.database = PostgreSQL
		}
	}
	admin := s.addAdmin(o.AdminToken)
	if o.AdminEmail != "" && o.AdminPassword != "" {
		admin.Email, admin.password = &o.AdminEmail, &o.AdminPassword
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	if t != nil {
		t.Cleanup(s.Close)
	}
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// NewAdmin adds another administrator with its own static token, as an
// operator would create in Directus; tests act as a human administrator with
// it, so that activity rows name someone other than the bridge. It writes no
// activity row.
func (s *Server) NewAdmin() (token string) {
	token = "admin-" + randomID()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addAdmin(token)
	return token
}

func (s *Server) addAdmin(token string) *userRow {
	admin := &userRow{ID: randomUUID(), Status: "active", Provider: "default", Token: &token, admin: true}
	s.users[admin.ID] = admin
	return admin
}

// Fault is what an injected fault does to one request; the zero Fault does
// nothing.
type Fault struct {
	// Delay holds the answer back (a slow Directus).
	Delay time.Duration
	// Status, when set, answers with it instead of serving the request:
	// with Body verbatim when given (malformed answers), else with a
	// Directus error body.
	Status     int
	Body       string
	RetryAfter string // Retry-After header, when set
	// LoseAnswer serves the request first: Directus did the write. With
	// Status 0 the real answer is held back for Delay (the caller gives up
	// and never hears of it); with a Status the caller gets that answer at
	// once instead, Delay ignored (Directus applied the write, the caller
	// saw a 502).
	LoseAnswer bool
	// Drop serves the request, then closes the connection without an
	// answer: what a caller sees when Directus applied a write and the
	// connection died, or its own deadline passed.
	Drop bool
}

// SetFault applies f to every request (ping excluded); nil clears it.
func (s *Server) SetFault(f func(r *http.Request) Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Requests returns how many requests reached the server (ping excluded).
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Writes returns how many POST, PATCH and DELETE requests the fake served,
// whatever it answered; requests that an injected fault answered without
// serving are not counted, those it served first (LoseAnswer) are.
func (s *Server) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// RequestsBy returns the request counts by "METHOD /path" (ids as ":id").
func (s *Server) RequestsBy() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.requests))
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}

// ResetRequests sets the request counters, Writes included, to zero.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = map[string]int{}
	s.total = 0
	s.writes = 0
	s.times = nil
}

// RequestTimes returns when each counted request arrived.
func (s *Server) RequestTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/server/ping" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("pong"))
		return
	}
	s.mu.Lock()
	route := routeName(r)
	s.requests[route]++
	s.total++
	s.times = append(s.times, time.Now())
	var f Fault
	if s.fault != nil {
		f = s.fault(r)
	}
	s.mu.Unlock()
	if f.Drop {
		s.serveLocked(httptest.NewRecorder(), r, route)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler) // closes the connection without an answer
	}
	if f.LoseAnswer {
		rec := httptest.NewRecorder()
		s.serveLocked(rec, r, route)
		if f.Status != 0 {
			writeFault(w, f)
			return
		}
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if f.Status != 0 {
		writeFault(w, f)
		return
	}
	s.serveLocked(w, r, route)
}

// writeFault answers with an injected fault's status.
func writeFault(w http.ResponseWriter, f Fault) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.Body != "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(f.Status)
		_, _ = w.Write([]byte(f.Body))
		return
	}
	code := "SERVICE_UNAVAILABLE"
	switch {
	case f.Status == http.StatusTooManyRequests:
		code = "REQUESTS_EXCEEDED"
	case f.Status == http.StatusInternalServerError:
		code = "INTERNAL_SERVER_ERROR"
	}
	writeError(w, &apiError{status: f.Status, code: code, msg: "injected fault"})
}

// serveLocked serves one request under the server's lock.
func (s *Server) serveLocked(w http.ResponseWriter, r *http.Request, route string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.Method {
	case http.MethodPost, http.MethodPatch, http.MethodDelete:
		s.writes++
	}
	if route == "POST /auth/login" {
		s.login(w, r)
		return
	}
	if route == "GET /policies/me/globals" && r.Header.Get("Authorization") == "" {
		// The public: Directus answers its flags, not an error.
		writeData(w, map[string]any{"app_access": false})
		return
	}
	caller := s.authenticate(r)
	if caller == nil {
		writeError(w, &apiError{status: http.StatusUnauthorized, code: "INVALID_CREDENTIALS", msg: "Invalid user credentials."})
		return
	}
	if r.URL.Path == "/users/me" && r.Method == http.MethodGet {
		// Directus shows a user its own status and role only when a policy
		// lets it read them: admin access, or app access (whose minimal
		// permissions include them). Anyone else gets its id alone.
		me := map[string]any{"id": caller.ID}
		if s.isAdmin(caller) || s.hasAccess(caller, func(p *policyRow) bool { return p.AppAccess }) {
			me["status"], me["role"] = caller.Status, caller.Role
		}
		writeData(w, me)
		return
	}
	if route == "GET /policies/me/globals" {
		// Directus reports admin access as app access too.
		admin := s.isAdmin(caller)
		writeData(w, map[string]any{"admin_access": admin, "enforce_tfa": false,
			"app_access": admin || s.hasAccess(caller, func(p *policyRow) bool { return p.AppAccess })})
		return
	}
	if !s.isAdmin(caller) {
		writeError(w, errForbidden())
		return
	}
	for k := range r.URL.Query() {
		if strings.HasPrefix(k, "filter[") {
			writeError(w, invalidQuery("fake: only JSON filters are supported, not "+k))
			return
		}
	}
	switch route {
	case "GET /server/info":
		writeData(w, map[string]any{"version": s.version})
	case "GET /users":
		s.listUsers(w, r)
	case "POST /users":
		s.createUser(w, r, caller)
	case "PATCH /users":
		s.updateUsers(w, r, caller)
	case "PATCH /users/:id":
		s.updateUser(w, r, caller, strings.TrimPrefix(r.URL.Path, "/users/"))
	case "DELETE /users":
		s.deleteUsers(w, r, caller)
	case "GET /roles":
		s.listRoles(w, r)
	case "POST /roles":
		s.createRole(w, r, caller)
	case "GET /policies":
		s.listPolicies(w, r)
	case "PATCH /policies/:id":
		s.updatePolicy(w, r, caller, strings.TrimPrefix(r.URL.Path, "/policies/"))
	case "POST /policies":
		s.createPolicy(w, r, caller)
	case "GET /activity":
		s.listActivity(w, r)
	case "GET /access":
		s.listAccess(w, r)
	case "POST /access":
		s.createAccess(w, r, caller)
	case "DELETE /access/:id":
		s.deleteAccess(w, caller, strings.TrimPrefix(r.URL.Path, "/access/"))
	default:
		writeError(w, &apiError{status: http.StatusNotFound, code: "ROUTE_NOT_FOUND", msg: "Route " + r.URL.Path + " doesn't exist."})
	}
}

func routeName(r *http.Request) string {
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, "/users/"); ok && rest != "me" {
		p = "/users/:id"
	}
	if rest, ok := strings.CutPrefix(p, "/policies/"); ok && rest != "me/globals" {
		p = "/policies/:id"
	}
	if _, ok := strings.CutPrefix(p, "/access/"); ok {
		p = "/access/:id"
	}
	return r.Method + " " + p
}

// authenticate is Directus's static-token lookup: WHERE token = ? AND
// status = 'active', on every request.
func (s *Server) authenticate(r *http.Request) *userRow {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return nil
	}
	for _, u := range s.users {
		if u.Token != nil && *u.Token == tok && u.Status == "active" {
			return u
		}
	}
	if u := s.users[s.sessions[tok]]; u != nil && u.Status == "active" {
		return u
	}
	return nil
}

// login serves POST /auth/login {"email","password"} (JSON mode): an
// access token for an active user whose email and password match.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var body struct{ Email, Password string }
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Email == "" || body.Password == "" {
		writeError(w, invalidPayload("\"email\" and \"password\" are required"))
		return
	}
	for _, u := range s.users {
		if u.Email != nil && *u.Email == body.Email && u.password != nil && *u.password == body.Password && u.Status == "active" {
			tok := "fake-access-" + randomID()
			s.sessions[tok] = u.ID
			writeData(w, map[string]any{"access_token": tok, "expires": 900000, "refresh_token": randomID()})
			return
		}
	}
	writeError(w, &apiError{status: http.StatusUnauthorized, code: "INVALID_CREDENTIALS", msg: "Invalid user credentials."})
}

// isAdmin: the bootstrap admin, NewAdmin's users, and users holding a policy
// with admin_access directly or through their role.
func (s *Server) isAdmin(u *userRow) bool {
	return u.admin || s.hasAccess(u, func(p *policyRow) bool { return p.AdminAccess })
}

// hasAccess reports whether u holds a policy for which flag is true,
// directly or through its role.
func (s *Server) hasAccess(u *userRow, flag func(*policyRow) bool) bool {
	for _, a := range s.access {
		mine := (a.User != nil && *a.User == u.ID) || (a.Role != nil && u.Role != nil && *a.Role == *u.Role)
		if p := s.policies[a.Policy]; mine && p != nil && flag(p) {
			return true
		}
	}
	return false
}

func (s *Server) majorVersion() int {
	n, _ := strconv.Atoi(strings.SplitN(s.version, ".", 2)[0])
	return n
}

// apiError is a Directus error answer.
type apiError struct {
	status int
	code   string
	msg    string
	ext    map[string]any // extensions besides code
}

func errForbidden() *apiError {
	return &apiError{status: http.StatusForbidden, code: "FORBIDDEN", msg: "You don't have permission to access this."}
}

func invalidPayload(reason string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "INVALID_PAYLOAD", msg: "Invalid payload. " + reason + ".",
		ext: map[string]any{"reason": reason}}
}

func invalidQuery(reason string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "INVALID_QUERY", msg: "Invalid query. " + reason + ".",
		ext: map[string]any{"reason": reason}}
}

// notUnique is Directus's RECORD_NOT_UNIQUE: the message and the extensions
// echo the value (a token too).
func notUnique(collection, field, value string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "RECORD_NOT_UNIQUE",
		msg: "Value \"" + value + "\" for field \"" + field + "\" in collection \"" + collection + "\" has to be unique.",
		ext: map[string]any{"collection": collection, "field": field, "value": value}}
}

// invalidForeignKey names the field on PostgreSQL; SQLite's error names nothing.
func (s *Server) invalidForeignKey(collection, field, value string) *apiError {
	if s.database == SQLite {
		return &apiError{status: http.StatusBadRequest, code: "INVALID_FOREIGN_KEY", msg: "Invalid foreign key.",
			ext: map[string]any{"collection": nil, "field": nil, "value": nil}}
	}
	return &apiError{status: http.StatusBadRequest, code: "INVALID_FOREIGN_KEY",
		msg: "Invalid foreign key \"" + value + "\" for field \"" + field + "\" in collection \"" + collection + "\".",
		ext: map[string]any{"collection": collection, "field": field, "value": value}}
}

// writeData answers {"data": v}. Like Node's JSON.stringify, it does not
// escape <, > and &, so JSON values come back byte for byte.
func writeData(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(map[string]any{"data": v})
}

func writeError(w http.ResponseWriter, e *apiError) {
	ext := map[string]any{"code": e.code}
	for k, v := range e.ext {
		ext[k] = v
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []any{
		map[string]any{"message": e.msg, "extensions": ext},
	}})
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
