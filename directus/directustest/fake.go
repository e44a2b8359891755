package directustest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options shape a fake Directus.
type Options struct {
	// Version is reported by /server/info (default "12.4.0"). From major
	// version 12 on, a custom provider is refused like an unlicensed Directus.
	Version string
	// AdminToken is the admin's static token (default: random).
	AdminToken string
}

// Server is an in-memory Directus that speaks the REST subset the bridge
// uses. Its zero value is not usable: call NewServer.
type Server struct {
	URL        string
	AdminToken string
	version    string
	srv        *httptest.Server

	mu       sync.Mutex
	users    map[string]*userRow
	roles    map[string]*roleRow
	policies map[string]*policyRow
	access   map[string]*accessRow
	requests map[string]int // "METHOD /path" -> count
	total    int
	times    []time.Time // arrival of every counted request
	fault    func(r *http.Request) Fault
}

type userRow struct {
	ID                 string
	Status             string
	Role               *string
	Provider           string
	ExternalIdentifier *string
	FirstName          *string
	LastName           *string
	Email              *string
	LastAccess         *string
	Token              *string
}

type roleRow struct {
	ID, Name string
	Parent   *string
}

type policyRow struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	AdminAccess bool   `json:"admin_access"`
	AppAccess   bool   `json:"app_access"`
}

type accessRow struct {
	ID, Policy string
	User, Role *string
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
	s := &Server{
		AdminToken: o.AdminToken,
		version:    o.Version,
		users:      map[string]*userRow{},
		roles:      map[string]*roleRow{},
		policies:   map[string]*policyRow{},
		access:     map[string]*accessRow{},
		requests:   map[string]int{},
	}
	admin := &userRow{ID: randomUUID(), Status: "active", Provider: "default", Token: &o.AdminToken}
	s.users[admin.ID] = admin
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	if t != nil {
		t.Cleanup(s.Close)
	}
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

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
	// LoseAnswer serves the request, then holds the answer back for Delay:
	// Directus did the write, the caller never hears of it.
	LoseAnswer bool
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

// ResetRequests sets the request counters to zero.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = map[string]int{}
	s.total = 0
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
	if f.LoseAnswer {
		rec := httptest.NewRecorder()
		s.serveLocked(rec, r, route)
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
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		if f.Body != "" {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(f.Status)
			_, _ = w.Write([]byte(f.Body))
			return
		}
		writeError(w, f.Status, "SERVICE_UNAVAILABLE", "injected fault")
		return
	}
	s.serveLocked(w, r, route)
}

// serveLocked serves one request under the server's lock.
func (s *Server) serveLocked(w http.ResponseWriter, r *http.Request, route string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	caller := s.authenticate(r)
	if caller == nil {
		writeError(w, http.StatusUnauthorized, "INVALID_CREDENTIALS", "Invalid user credentials.")
		return
	}
	if r.URL.Path == "/users/me" && r.Method == http.MethodGet {
		writeData(w, map[string]any{"id": caller.ID, "status": caller.Status, "role": caller.Role})
		return
	}
	if *caller.Token != s.AdminToken {
		writeError(w, http.StatusForbidden, "FORBIDDEN", "You don't have permission to access this.")
		return
	}
	switch {
	case route == "GET /server/info":
		writeData(w, map[string]any{"version": s.version})
	case route == "GET /users":
		s.listUsers(w, r)
	case route == "POST /users":
		s.createUser(w, r)
	case route == "PATCH /users":
		s.updateUsers(w, r)
	case route == "PATCH /users/:id":
		s.updateUser(w, r, strings.TrimPrefix(r.URL.Path, "/users/"))
	case route == "DELETE /users":
		s.deleteUsers(w, r)
	case route == "GET /roles":
		s.listRoles(w)
	case route == "POST /roles":
		s.createRole(w, r)
	case route == "GET /policies":
		s.listPolicies(w)
	case route == "POST /policies":
		s.createPolicy(w, r)
	default:
		writeError(w, http.StatusNotFound, "ROUTE_NOT_FOUND", "Route "+r.URL.Path+" doesn't exist.")
	}
}

func routeName(r *http.Request) string {
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, "/users/"); ok && rest != "me" {
		p = "/users/:id"
	}
	return r.Method + " " + p
}

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
	return nil
}

func (s *Server) majorVersion() int {
	n, _ := strconv.Atoi(strings.SplitN(s.version, ".", 2)[0])
	return n
}

// render returns the user as Directus returns it with the bridge's fields.
func (s *Server) render(u *userRow) map[string]any {
	var tok any
	if u.Token != nil {
		tok = "**********"
	}
	pol := []map[string]any{}
	for _, a := range s.sortedAccess() {
		if a.User != nil && *a.User == u.ID {
			pol = append(pol, map[string]any{"id": a.ID, "policy": a.Policy})
		}
	}
	return map[string]any{
		"id": u.ID, "status": u.Status, "role": u.Role, "provider": u.Provider,
		"external_identifier": u.ExternalIdentifier, "first_name": u.FirstName, "last_name": u.LastName,
		"email": u.Email, "last_access": u.LastAccess, "token": tok, "policies": pol,
	}
}

func (s *Server) sortedAccess() []*accessRow {
	out := make([]*accessRow, 0, len(s.access))
	for _, a := range s.access {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	match, err := parseFilter(r.URL.Query().Get("filter"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_QUERY", err.Error())
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil {
			writeError(w, http.StatusBadRequest, "INVALID_QUERY", "bad limit")
			return
		}
	}
	var ids []string
	for id, u := range s.users {
		if match(u) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	if offset, _ := strconv.Atoi(r.URL.Query().Get("offset")); offset > 0 {
		ids = ids[min(offset, len(ids)):]
	}
	if limit >= 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.render(s.users[id]))
	}
	writeData(w, out)
}

// parseFilter understands the filters directus.UserFilter produces:
// {"_and":[{field:{op:value}}...]} with _eq, _in, _null, _nnull.
func parseFilter(raw string) (func(*userRow) bool, error) {
	if raw == "" {
		return func(*userRow) bool { return true }, nil
	}
	var f struct {
		And []map[string]map[string]json.RawMessage `json:"_and"`
	}
	if err := json.Unmarshal([]byte(raw), &f); err != nil {
		return nil, fmt.Errorf("fake: unsupported filter: %v", err)
	}
	var preds []func(*userRow) bool
	for _, cond := range f.And {
		for field, ops := range cond {
			get, ok := map[string]func(*userRow) *string{
				"id":                  func(u *userRow) *string { return &u.ID },
				"external_identifier": func(u *userRow) *string { return u.ExternalIdentifier },
				"token":               func(u *userRow) *string { return u.Token },
				"status":              func(u *userRow) *string { return &u.Status },
			}[field]
			if !ok {
				return nil, fmt.Errorf("fake: unsupported filter field %q", field)
			}
			for op, v := range ops {
				p, err := predicate(get, op, v)
				if err != nil {
					return nil, err
				}
				preds = append(preds, p)
			}
		}
	}
	return func(u *userRow) bool {
		for _, p := range preds {
			if !p(u) {
				return false
			}
		}
		return true
	}, nil
}

func predicate(get func(*userRow) *string, op string, raw json.RawMessage) (func(*userRow) bool, error) {
	switch op {
	case "_null", "_nnull":
		want := op == "_nnull"
		return func(u *userRow) bool { return (get(u) != nil) == want }, nil
	case "_eq":
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("fake: %s wants a string", op)
		}
		return func(u *userRow) bool { g := get(u); return g != nil && *g == v }, nil
	case "_in":
		var vs []string
		if err := json.Unmarshal(raw, &vs); err != nil {
			return nil, fmt.Errorf("fake: _in wants a list of strings")
		}
		set := map[string]bool{}
		for _, v := range vs {
			set[v] = true
		}
		return func(u *userRow) bool { g := get(u); return g != nil && set[*g] }, nil
	}
	return nil, fmt.Errorf("fake: unsupported filter operator %q", op)
}

// fieldsPayload is the writable part of a user payload.
type fieldsPayload map[string]json.RawMessage

// apply validates p against u (a copy) and returns the policy changes to
// make; it changes nothing in s. status and code describe a refusal.
func (s *Server) apply(u *userRow, p fieldsPayload, creating bool) (add []string, del []string, status int, code, msg string) {
	str := func(raw json.RawMessage) (*string, bool) {
		if string(raw) == "null" {
			return nil, true
		}
		var v string
		if json.Unmarshal(raw, &v) != nil {
			return nil, false
		}
		return &v, true
	}
	for k, raw := range p {
		switch k {
		case "id":
			if !creating {
				return nil, nil, 400, "INVALID_PAYLOAD", "id cannot be changed"
			}
		case "status", "provider":
			v, ok := str(raw)
			if !ok || v == nil {
				return nil, nil, 400, "INVALID_PAYLOAD", "\"" + k + "\" must be a string"
			}
			if k == "status" {
				u.Status = *v
			} else {
				if *v != "default" && s.majorVersion() >= 12 {
					return nil, nil, 400, "INVALID_PAYLOAD", "Setting a custom \"provider\" isn't included in the current license."
				}
				u.Provider = *v
			}
		case "role", "external_identifier", "first_name", "last_name", "email", "last_access", "token":
			v, ok := str(raw)
			if !ok {
				return nil, nil, 400, "INVALID_PAYLOAD", "\"" + k + "\" must be a string or null"
			}
			switch k {
			case "role":
				if v != nil && s.roles[*v] == nil {
					return nil, nil, 400, "INVALID_FOREIGN_KEY", "Invalid foreign key for field \"role\"."
				}
				u.Role = v
			case "external_identifier":
				u.ExternalIdentifier = v
			case "first_name":
				u.FirstName = v
			case "last_name":
				u.LastName = v
			case "email":
				u.Email = v
			case "last_access":
				if v != nil {
					t, err := time.Parse(time.RFC3339Nano, *v)
					if err != nil {
						return nil, nil, 400, "INVALID_PAYLOAD", "\"last_access\" must be a date"
					}
					*v = t.UTC().Format("2006-01-02T15:04:05.000Z")
				}
				u.LastAccess = v
			case "token":
				if v != nil && len(*v) > 255 {
					return nil, nil, 400, "VALUE_TOO_LONG", "Value for field \"token\" is too long."
				}
				u.Token = v
			}
		case "policies":
			var rel struct {
				Create []struct {
					Policy string `json:"policy"`
				} `json:"create"`
				Delete []string `json:"delete"`
			}
			if err := json.Unmarshal(raw, &rel); err != nil {
				return nil, nil, 400, "INVALID_PAYLOAD", "\"policies\" must be {create,update,delete}"
			}
			for _, c := range rel.Create {
				if s.policies[c.Policy] == nil {
					return nil, nil, 400, "INVALID_FOREIGN_KEY", "Invalid foreign key for field \"policy\"."
				}
				add = append(add, c.Policy)
			}
			for _, id := range rel.Delete {
				if a := s.access[id]; a == nil || a.User == nil || *a.User != u.ID {
					return nil, nil, 403, "FORBIDDEN", "You don't have permission to access this."
				}
				del = append(del, id)
			}
		default:
			return nil, nil, 400, "INVALID_PAYLOAD", "unknown field \"" + k + "\""
		}
	}
	if status, code, msg := s.unique(u); status != 0 {
		return nil, nil, status, code, msg
	}
	return add, del, 0, "", ""
}

// unique enforces the unique columns of directus_users. Like Directus, the
// message echoes the duplicate value.
func (s *Server) unique(u *userRow) (int, string, string) {
	for _, o := range s.users {
		if o.ID == u.ID {
			continue
		}
		if u.Token != nil && o.Token != nil && *o.Token == *u.Token {
			return 400, "RECORD_NOT_UNIQUE", "Value \"" + *u.Token + "\" for field \"token\" in collection \"directus_users\" has to be unique."
		}
		if u.ExternalIdentifier != nil && o.ExternalIdentifier != nil && *o.ExternalIdentifier == *u.ExternalIdentifier {
			return 400, "RECORD_NOT_UNIQUE", "Value \"" + *u.ExternalIdentifier + "\" for field \"external_identifier\" in collection \"directus_users\" has to be unique."
		}
	}
	return 0, "", ""
}

func (s *Server) commitPolicies(userID string, add, del []string) {
	for _, id := range del {
		delete(s.access, id)
	}
	for _, p := range add {
		id := randomUUID()
		uid := userID
		s.access[id] = &accessRow{ID: id, Policy: p, User: &uid}
	}
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) {
	var p fieldsPayload
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		writeError(w, 400, "INVALID_PAYLOAD", "body must be a JSON object")
		return
	}
	var id string
	if raw, ok := p["id"]; ok {
		if json.Unmarshal(raw, &id) != nil || id == "" {
			writeError(w, 400, "INVALID_PAYLOAD", "\"id\" must be a string")
			return
		}
	} else {
		id = randomUUID()
	}
	if s.users[id] != nil {
		writeError(w, 400, "RECORD_NOT_UNIQUE", "Value \""+id+"\" for field \"id\" in collection \"directus_users\" has to be unique.")
		return
	}
	u := &userRow{ID: id, Status: "active", Provider: "default"}
	add, _, status, code, msg := s.apply(u, p, true)
	if status != 0 {
		writeError(w, status, code, msg)
		return
	}
	s.users[id] = u
	s.commitPolicies(id, add, nil)
	writeData(w, s.render(u))
}

func (s *Server) updateUser(w http.ResponseWriter, r *http.Request, id string) {
	var p fieldsPayload
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		writeError(w, 400, "INVALID_PAYLOAD", "body must be a JSON object")
		return
	}
	cur := s.users[id]
	if cur == nil {
		// Directus answers a PATCH of a missing item with 204 and no body.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	next := *cur
	add, del, status, code, msg := s.apply(&next, p, false)
	if status != 0 {
		writeError(w, status, code, msg)
		return
	}
	*cur = next
	s.commitPolicies(id, add, del)
	writeData(w, s.render(cur))
}

func (s *Server) updateUsers(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Keys []string      `json:"keys"`
		Data fieldsPayload `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Keys == nil {
		writeError(w, 400, "INVALID_PAYLOAD", "body must be {keys, data}")
		return
	}
	// Missing keys are skipped; the rest is all or nothing, like Directus's
	// transaction.
	var keys []string
	for _, id := range body.Keys {
		if s.users[id] != nil {
			keys = append(keys, id)
		}
	}
	next := make([]userRow, len(keys))
	for i, id := range keys {
		next[i] = *s.users[id]
		add, del, status, code, msg := s.apply(&next[i], body.Data, false)
		if status == 0 && (len(add) > 0 || len(del) > 0) {
			status, code, msg = 400, "INVALID_PAYLOAD", "fake: policies in a batch are not supported"
		}
		if status != 0 {
			writeError(w, status, code, msg)
			return
		}
	}
	out := make([]map[string]any, len(keys))
	for i, id := range keys {
		*s.users[id] = next[i]
		out[i] = map[string]any{"id": id}
	}
	writeData(w, out)
}

func (s *Server) deleteUsers(w http.ResponseWriter, r *http.Request) {
	var ids []string
	if err := json.NewDecoder(r.Body).Decode(&ids); err != nil {
		writeError(w, 400, "INVALID_PAYLOAD", "body must be a list of ids")
		return
	}
	for _, id := range ids {
		if s.users[id] == nil {
			writeError(w, 403, "FORBIDDEN", "You don't have permission to access this.")
			return
		}
	}
	for _, id := range ids {
		delete(s.users, id)
		for aid, a := range s.access {
			if a.User != nil && *a.User == id {
				delete(s.access, aid)
			}
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listRoles(w http.ResponseWriter) {
	out := []map[string]any{}
	for _, r := range s.roles {
		pol := []map[string]any{}
		for _, a := range s.sortedAccess() {
			if a.Role != nil && *a.Role == r.ID {
				pol = append(pol, map[string]any{"policy": a.Policy})
			}
		}
		out = append(out, map[string]any{"id": r.ID, "name": r.Name, "parent": r.Parent, "policies": pol})
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["name"].(string) < out[j]["name"].(string) })
	writeData(w, out)
}

func (s *Server) createRole(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name     string  `json:"name"`
		Parent   *string `json:"parent"`
		Policies struct {
			Create []struct {
				Policy string `json:"policy"`
			} `json:"create"`
		} `json:"policies"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Name == "" {
		writeError(w, 400, "INVALID_PAYLOAD", "\"name\" is required")
		return
	}
	for _, c := range body.Policies.Create {
		if s.policies[c.Policy] == nil {
			writeError(w, 400, "INVALID_FOREIGN_KEY", "Invalid foreign key for field \"policy\".")
			return
		}
	}
	role := &roleRow{ID: randomUUID(), Name: body.Name, Parent: body.Parent}
	s.roles[role.ID] = role
	pol := []map[string]any{}
	for _, c := range body.Policies.Create {
		id, rid := randomUUID(), role.ID
		s.access[id] = &accessRow{ID: id, Policy: c.Policy, Role: &rid}
		pol = append(pol, map[string]any{"policy": c.Policy})
	}
	writeData(w, map[string]any{"id": role.ID, "name": role.Name, "parent": role.Parent, "policies": pol})
}

func (s *Server) listPolicies(w http.ResponseWriter) {
	out := make([]*policyRow, 0, len(s.policies))
	for _, p := range s.policies {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeData(w, out)
}

func (s *Server) createPolicy(w http.ResponseWriter, r *http.Request) {
	var p policyRow
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil || p.Name == "" {
		writeError(w, 400, "INVALID_PAYLOAD", "\"name\" is required")
		return
	}
	p.ID = randomUUID()
	s.policies[p.ID] = &p
	writeData(w, p)
}

func writeData(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": v})
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []any{
		map[string]any{"message": msg, "extensions": map[string]any{"code": code}},
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
