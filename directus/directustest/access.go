package directustest

import (
	"encoding/json"
	"net/http"
	"sort"
)

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

// accessRow is a directus_access row. seq is its place in the order Directus
// lists a user's or role's policies in (the sort field, creation order).
type accessRow struct {
	ID, Policy string
	User, Role *string
	seq        int64
}

func (s *Server) sortedAccess() []*accessRow {
	out := make([]*accessRow, 0, len(s.access))
	for _, a := range s.access {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func (s *Server) newAccess(policy string, user, role *string) *accessRow {
	s.accessSeq++
	a := &accessRow{ID: randomUUID(), Policy: policy, User: user, Role: role, seq: s.accessSeq}
	s.access[a.ID] = a
	return a
}

// commitPolicies attaches and detaches a user's policies the way Directus's
// nested writes do: creates first, then deletes, each logged. Attaching a
// policy the user already has adds a second access row, as Directus does.
func (s *Server) commitPolicies(caller *userRow, userID string, add, del []string) {
	for _, p := range add {
		uid := userID
		a := s.newAccess(p, &uid, nil)
		s.logActivity(caller, "create", "directus_access", a.ID)
	}
	for _, id := range del {
		delete(s.access, id)
		s.logActivity(caller, "delete", "directus_access", id)
	}
}

// nameFilterFields are the fields GET /roles and GET /policies can filter on.
var nameFilterFields = map[string]fieldKind{"id": kindString, "name": kindString}

func (s *Server) listRoles(w http.ResponseWriter, req *http.Request) {
	match, ferr := compileFilter(req.URL.Query().Get("filter"), nameFilterFields)
	if ferr != nil {
		writeError(w, ferr)
		return
	}
	out := []map[string]any{}
	for _, r := range s.roles {
		if !match(func(f string) any { return map[string]any{"id": r.ID, "name": r.Name}[f] }) {
			continue
		}
		pol := []map[string]any{}
		for _, a := range s.sortedAccess() {
			if a.Role != nil && *a.Role == r.ID {
				pol = append(pol, map[string]any{"policy": a.Policy})
			}
		}
		out = append(out, map[string]any{"id": r.ID, "name": r.Name, "parent": r.Parent, "policies": pol})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i]["name"] != out[j]["name"] {
			return out[i]["name"].(string) < out[j]["name"].(string)
		}
		return out[i]["id"].(string) < out[j]["id"].(string)
	})
	writeData(w, out)
}

func (s *Server) createRole(w http.ResponseWriter, r *http.Request, caller *userRow) {
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
		writeError(w, invalidPayload("\"name\" is required"))
		return
	}
	if body.Parent != nil && s.roles[*body.Parent] == nil {
		writeError(w, s.invalidForeignKey("directus_roles", "parent", *body.Parent))
		return
	}
	for _, c := range body.Policies.Create {
		if s.policies[c.Policy] == nil {
			writeError(w, s.invalidForeignKey("directus_access", "policy", c.Policy))
			return
		}
	}
	role := &roleRow{ID: randomUUID(), Name: body.Name, Parent: body.Parent}
	s.roles[role.ID] = role
	pol := []map[string]any{}
	for _, c := range body.Policies.Create {
		rid := role.ID
		a := s.newAccess(c.Policy, nil, &rid)
		s.logActivity(caller, "create", "directus_access", a.ID)
		pol = append(pol, map[string]any{"policy": c.Policy})
	}
	s.logActivity(caller, "create", "directus_roles", role.ID)
	writeData(w, map[string]any{"id": role.ID, "name": role.Name, "parent": role.Parent, "policies": pol})
}

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request) {
	match, ferr := compileFilter(r.URL.Query().Get("filter"), nameFilterFields)
	if ferr != nil {
		writeError(w, ferr)
		return
	}
	out := make([]*policyRow, 0, len(s.policies))
	for _, p := range s.policies {
		if match(func(f string) any { return map[string]any{"id": p.ID, "name": p.Name}[f] }) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	writeData(w, out)
}

// updatePolicy changes a policy's access flags (PATCH /policies/:id), as an
// administrator does in the app.
func (s *Server) updatePolicy(w http.ResponseWriter, r *http.Request, caller *userRow, id string) {
	var body struct {
		AdminAccess *bool `json:"admin_access"`
		AppAccess   *bool `json:"app_access"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, invalidPayload("body must be a JSON object"))
		return
	}
	p := s.policies[id]
	if p == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if body.AdminAccess != nil {
		p.AdminAccess = *body.AdminAccess
	}
	if body.AppAccess != nil {
		p.AppAccess = *body.AppAccess
	}
	s.logActivity(caller, "update", "directus_policies", id)
	writeData(w, p)
}

func (s *Server) createPolicy(w http.ResponseWriter, r *http.Request, caller *userRow) {
	var p policyRow
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil || p.Name == "" {
		writeError(w, invalidPayload("\"name\" is required"))
		return
	}
	p.ID = randomUUID()
	s.policies[p.ID] = &p
	s.logActivity(caller, "create", "directus_policies", p.ID)
	writeData(w, p)
}

// accessFilterFields are the fields GET /access can filter on.
var accessFilterFields = map[string]fieldKind{"id": kindString, "user": kindString, "policy": kindString}

// listAccess serves GET /access with a filter on id, user or policy.
func (s *Server) listAccess(w http.ResponseWriter, r *http.Request) {
	match, ferr := compileFilter(r.URL.Query().Get("filter"), accessFilterFields)
	if ferr != nil {
		writeError(w, ferr)
		return
	}
	out := []map[string]any{}
	for _, a := range s.sortedAccess() {
		rec := func(field string) any {
			switch field {
			case "id":
				return a.ID
			case "policy":
				return a.Policy
			case "user":
				if a.User != nil {
					return *a.User
				}
			}
			return nil
		}
		if match(rec) {
			out = append(out, map[string]any{"id": a.ID, "user": a.User, "role": a.Role, "policy": a.Policy})
		}
	}
	writeData(w, out)
}

// createAccess serves POST /access {"user","policy"} or {"role","policy"}:
// Directus logs a directus_access row only, not a directus_users one.
func (s *Server) createAccess(w http.ResponseWriter, r *http.Request, caller *userRow) {
	var body struct{ User, Role, Policy string }
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, invalidPayload("body must be a JSON object"))
		return
	}
	if body.Role != "" && body.User == "" {
		if s.roles[body.Role] == nil || s.policies[body.Policy] == nil {
			writeError(w, &apiError{status: http.StatusBadRequest, code: "INVALID_FOREIGN_KEY", msg: "Invalid foreign key."})
			return
		}
		rid := body.Role
		a := s.newAccess(body.Policy, nil, &rid)
		s.logActivity(caller, "create", "directus_access", a.ID)
		writeData(w, map[string]any{"id": a.ID, "user": nil, "role": rid, "policy": a.Policy})
		return
	}
	if s.users[body.User] == nil || s.policies[body.Policy] == nil {
		writeError(w, &apiError{status: http.StatusBadRequest, code: "INVALID_FOREIGN_KEY", msg: "Invalid foreign key."})
		return
	}
	uid := body.User
	a := s.newAccess(body.Policy, &uid, nil)
	s.logActivity(caller, "create", "directus_access", a.ID)
	writeData(w, map[string]any{"id": a.ID, "user": uid, "policy": a.Policy})
}

// deleteAccess serves DELETE /access/:id.
func (s *Server) deleteAccess(w http.ResponseWriter, caller *userRow, id string) {
	if s.access[id] == nil {
		writeError(w, errForbidden())
		return
	}
	delete(s.access, id)
	s.logActivity(caller, "delete", "directus_access", id)
	w.WriteHeader(http.StatusNoContent)
}
