package directustest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"time"
)

type userRow struct {
	ID                 string
	Status             string
	Role               *string
	Provider           string
	ExternalIdentifier *string
	FirstName          *string
	LastName           *string
	Email              *string
	LastAccess         *time.Time
	Token              *string
	// AuthData is the JSON value written to auth_data, compacted; nil for
	// null. (On SQLite Directus hands back objects and arrays as their text.)
	AuthData json.RawMessage
	admin    bool    // bootstrap admin or NewAdmin
	password *string // never answered, as Directus conceals it
}

// userFilterFields are the fields GET /users can filter on.
var userFilterFields = map[string]fieldKind{
	"id": kindString, "status": kindString, "role": kindString, "provider": kindString,
	"external_identifier": kindString, "email": kindString, "token": kindConcealed,
}

func (u *userRow) field(name string) any {
	str := func(p *string) any {
		if p == nil {
			return nil
		}
		return *p
	}
	switch name {
	case "id":
		return u.ID
	case "status":
		return u.Status
	case "role":
		return str(u.Role)
	case "provider":
		return u.Provider
	case "external_identifier":
		return str(u.ExternalIdentifier)
	case "email":
		return str(u.Email)
	case "token":
		return str(u.Token)
	}
	return nil
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
	var lastAccess any
	if u.LastAccess != nil {
		if s.database == SQLite {
			lastAccess = u.LastAccess.Format("2006-01-02T15:04:05")
		} else {
			lastAccess = u.LastAccess.Format("2006-01-02T15:04:05.000Z")
		}
	}
	var authData any
	if u.AuthData != nil {
		authData = u.AuthData
		if s.database == SQLite && (u.AuthData[0] == '{' || u.AuthData[0] == '[') {
			authData = string(u.AuthData)
		}
	}
	return map[string]any{
		"id": u.ID, "status": u.Status, "role": u.Role, "provider": u.Provider,
		"external_identifier": u.ExternalIdentifier, "first_name": u.FirstName, "last_name": u.LastName,
		"email": u.Email, "last_access": lastAccess, "token": tok, "auth_data": authData, "policies": pol,
	}
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	match, ferr := compileFilter(q.Get("filter"), userFilterFields)
	if ferr != nil {
		writeError(w, ferr)
		return
	}
	limit, offset, lerr := paging(r)
	if lerr != nil {
		writeError(w, lerr)
		return
	}
	var ids []string
	for id, u := range s.users {
		if match(u.field) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	ids = ids[min(offset, len(ids)):]
	if limit >= 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.render(s.users[id]))
	}
	writeData(w, out)
}

// paging reads limit (default 100, -1 for all) and offset.
func paging(r *http.Request) (limit, offset int, e *apiError) {
	limit = 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < -1 {
			return 0, 0, invalidQuery("\"limit\" has to be a number")
		}
		limit = n
	}
	if v := r.URL.Query().Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, invalidQuery("\"offset\" has to be a number")
		}
		offset = n
	}
	return limit, offset, nil
}

// fieldsPayload is the writable part of a user payload.
type fieldsPayload map[string]json.RawMessage

// apply validates p into u (a copy) and returns the policy changes to make;
// it changes nothing in s. Like Directus it ignores fields it does not know
// (and the primary key), and an update that carries external_identifier or
// provider clears auth_data, even one written in the same payload.
func (s *Server) apply(u *userRow, p fieldsPayload, creating bool) (add []string, del []string, e *apiError) {
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
		case "status", "provider":
			v, ok := str(raw)
			if !ok || v == nil {
				return nil, nil, invalidPayload("\"" + k + "\" must be a string")
			}
			if k == "status" {
				u.Status = *v
			} else {
				if *v != "default" && s.majorVersion() >= 12 {
					return nil, nil, invalidPayload("Setting a custom \"provider\" isn't included in the current license")
				}
				u.Provider = *v
			}
		case "password":
			v, ok := str(raw)
			if !ok {
				return nil, nil, invalidPayload("\"password\" must be a string or null")
			}
			u.password = v
		case "role", "external_identifier", "first_name", "last_name", "email", "last_access", "token":
			v, ok := str(raw)
			if !ok {
				return nil, nil, invalidPayload("\"" + k + "\" must be a string or null")
			}
			switch k {
			case "role":
				if v != nil && s.roles[*v] == nil {
					return nil, nil, s.invalidForeignKey("directus_users", "role", *v)
				}
				u.Role = v
			case "external_identifier":
				if e := s.varchar(v, 255); e != nil {
					return nil, nil, e
				}
				u.ExternalIdentifier = v
			case "first_name":
				u.FirstName = v
			case "last_name":
				u.LastName = v
			case "email":
				u.Email = v
			case "last_access":
				u.LastAccess = nil
				if v != nil {
					t, err := time.Parse(time.RFC3339Nano, *v)
					if err != nil {
						return nil, nil, invalidPayload("\"last_access\" must be a date")
					}
					t = t.UTC().Truncate(time.Millisecond)
					if s.database == SQLite {
						t = t.Truncate(time.Second)
					}
					u.LastAccess = &t
				}
			case "token":
				if e := s.varchar(v, 255); e != nil {
					return nil, nil, e
				}
				u.Token = v
			}
		case "auth_data":
			v, e := s.jsonColumn(raw)
			if e != nil {
				return nil, nil, e
			}
			u.AuthData = v
		case "policies":
			var rel struct {
				Create []struct {
					Policy string `json:"policy"`
				} `json:"create"`
				Delete []string `json:"delete"`
			}
			if err := json.Unmarshal(raw, &rel); err != nil {
				return nil, nil, invalidPayload("\"policies\" must be {create,update,delete}")
			}
			for _, c := range rel.Create {
				if s.policies[c.Policy] == nil {
					return nil, nil, s.invalidForeignKey("directus_access", "policy", c.Policy)
				}
				add = append(add, c.Policy)
			}
			for _, id := range rel.Delete {
				// Directus deletes the user's access rows among the ids; an id
				// that is gone or another user's deletes nothing and is no error.
				if a := s.access[id]; a != nil && a.User != nil && *a.User == u.ID {
					del = append(del, id)
				}
			}
		}
	}
	if !creating {
		if _, ok := p["external_identifier"]; ok {
			u.AuthData = nil
		}
		if _, ok := p["provider"]; ok {
			u.AuthData = nil
		}
	}
	return add, del, nil
}

// varchar enforces a varchar(n) column: PostgreSQL refuses longer values,
// SQLite stores them.
func (s *Server) varchar(v *string, n int) *apiError {
	if v == nil || len(*v) <= n || s.database == SQLite {
		return nil
	}
	return &apiError{status: http.StatusBadRequest, code: "VALUE_TOO_LONG",
		msg: "Value in collection \"directus_users\" is too long.",
		ext: map[string]any{"collection": "directus_users", "field": nil, "value": nil}}
}

// jsonColumn is what a json column holds after a write of raw. PostgreSQL
// parses a string as JSON text (and fails on one that is not); SQLite keeps
// the string.
func (s *Server) jsonColumn(raw json.RawMessage) (json.RawMessage, *apiError) {
	if string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '"' && s.database == PostgreSQL {
		var text string
		_ = json.Unmarshal(raw, &text)
		if !json.Valid([]byte(text)) {
			return nil, &apiError{status: http.StatusInternalServerError, code: "INTERNAL_SERVER_ERROR",
				msg: "update \"directus_users\" set \"auth_data\" = $1 - invalid input syntax for type json"}
		}
		raw = []byte(text)
	}
	var b bytes.Buffer
	_ = json.Compact(&b, raw)
	if b.String() == "null" {
		return nil, nil
	}
	return b.Bytes(), nil
}

// checkUnique enforces the unique columns of directus_users over the users
// as they would be with next applied. Like Directus, the error echoes the
// duplicate value.
func (s *Server) checkUnique(next map[string]*userRow) *apiError {
	state := make(map[string]*userRow, len(s.users))
	for id, u := range s.users {
		state[id] = u
	}
	for id, u := range next {
		state[id] = u
	}
	ids := make([]string, 0, len(next))
	for id := range next {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		u := next[id]
		for _, o := range state {
			if o.ID == u.ID {
				continue
			}
			if u.Token != nil && o.Token != nil && *o.Token == *u.Token {
				return notUnique("directus_users", "token", *u.Token)
			}
			if u.ExternalIdentifier != nil && o.ExternalIdentifier != nil && *o.ExternalIdentifier == *u.ExternalIdentifier {
				return notUnique("directus_users", "external_identifier", *u.ExternalIdentifier)
			}
			if u.Email != nil && o.Email != nil && *o.Email == *u.Email {
				return notUnique("directus_users", "email", *u.Email)
			}
		}
	}
	return nil
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, caller *userRow) {
	var p fieldsPayload
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		writeError(w, invalidPayload("fake: body must be a JSON object"))
		return
	}
	var id string
	if raw, ok := p["id"]; ok {
		if json.Unmarshal(raw, &id) != nil || id == "" {
			writeError(w, invalidPayload("\"id\" must be a string"))
			return
		}
	} else {
		id = randomUUID()
	}
	if old := s.users[id]; old != nil {
		// PostgreSQL reports the primary key; SQLite reports the first
		// other unique column the new row shares with the existing one.
		if s.database == SQLite {
			u := &userRow{ID: id}
			if _, _, e := s.apply(u, p, true); e == nil {
				switch {
				case u.Token != nil && old.Token != nil && *u.Token == *old.Token:
					writeError(w, notUnique("directus_users", "token", *u.Token))
					return
				case u.ExternalIdentifier != nil && old.ExternalIdentifier != nil && *u.ExternalIdentifier == *old.ExternalIdentifier:
					writeError(w, notUnique("directus_users", "external_identifier", *u.ExternalIdentifier))
					return
				}
			}
		}
		writeError(w, notUnique("directus_users", "id", id))
		return
	}
	u := &userRow{ID: id, Status: "active", Provider: "default"}
	add, _, e := s.apply(u, p, true)
	if e == nil {
		e = s.checkUnique(map[string]*userRow{id: u})
	}
	if e != nil {
		writeError(w, e)
		return
	}
	s.users[id] = u
	s.commitPolicies(caller, id, add, nil)
	s.logActivity(caller, "create", "directus_users", id)
	writeData(w, s.render(u))
}

func (s *Server) updateUser(w http.ResponseWriter, r *http.Request, caller *userRow, id string) {
	var p fieldsPayload
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		writeError(w, invalidPayload("fake: body must be a JSON object"))
		return
	}
	cur := s.users[id]
	if cur == nil {
		// Directus updates no row, logs the update all the same and answers
		// 204 without a body.
		s.logActivity(caller, "update", "directus_users", id)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	next := *cur
	add, del, e := s.apply(&next, p, false)
	if e == nil {
		e = s.checkUnique(map[string]*userRow{id: &next})
	}
	if e != nil {
		writeError(w, e)
		return
	}
	*cur = next
	s.commitPolicies(caller, id, add, del)
	s.logActivity(caller, "update", "directus_users", id)
	writeData(w, s.render(cur))
}

func (s *Server) updateUsers(w http.ResponseWriter, r *http.Request, caller *userRow) {
	var body struct {
		Keys []string      `json:"keys"`
		Data fieldsPayload `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Keys == nil {
		writeError(w, invalidPayload("fake: body must be {keys, data}"))
		return
	}
	// Directus sorts the keys, updates the rows that exist in one
	// transaction (all or nothing) and logs an update for every key.
	keys := append([]string(nil), body.Keys...)
	sort.Strings(keys)
	next := map[string]*userRow{}
	for _, id := range keys {
		cur := s.users[id]
		if cur == nil {
			continue
		}
		n := *cur
		add, del, e := s.apply(&n, body.Data, false)
		if e == nil && (len(add) > 0 || len(del) > 0) {
			e = invalidPayload("fake: policies in a batch are not supported")
		}
		if e != nil {
			writeError(w, e)
			return
		}
		next[id] = &n
	}
	if e := s.checkUnique(next); e != nil {
		writeError(w, e)
		return
	}
	out := []map[string]any{}
	for _, id := range keys {
		if n := next[id]; n != nil {
			*s.users[id] = *n
			out = append(out, map[string]any{"id": id})
		}
		s.logActivity(caller, "update", "directus_users", id)
	}
	writeData(w, out)
}

func (s *Server) deleteUsers(w http.ResponseWriter, r *http.Request, caller *userRow) {
	var ids []string
	if err := json.NewDecoder(r.Body).Decode(&ids); err != nil {
		writeError(w, invalidPayload("fake: body must be a list of ids"))
		return
	}
	// Directus deletes what exists, logs a delete for every id and answers
	// 204. Access rows go with the user (a foreign-key cascade, unlogged).
	for _, id := range ids {
		delete(s.users, id)
		for aid, a := range s.access {
			if a.User != nil && *a.User == id {
				delete(s.access, aid)
			}
		}
		s.logActivity(caller, "delete", "directus_users", id)
	}
	w.WriteHeader(http.StatusNoContent)
}
