package directus

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Role is a directus_roles row with the ids of the policies attached to it.
type Role struct {
	ID       string
	Name     string
	Parent   string   // parent role id, "" when none
	Policies []string // policy ids attached to the role
}

// Policy is a directus_policies row with its two access flags.
type Policy struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	AdminAccess bool   `json:"admin_access"`
	AppAccess   bool   `json:"app_access"`
}

type role struct {
	ID       string  `json:"id"`
	Name     string  `json:"name"`
	Parent   *string `json:"parent"`
	Policies []struct {
		Policy string `json:"policy"`
	} `json:"policies"`
}

// Roles lists every role.
func (c *Client) Roles(ctx context.Context) ([]Role, error) {
	return c.listRoles(ctx, url.Values{"sort": {"name"}})
}

// listRoles lists the roles query selects, with their policies.
func (c *Client) listRoles(ctx context.Context, query url.Values) ([]Role, error) {
	query.Set("fields", "id,name,parent,policies.policy")
	query.Set("limit", "-1")
	var out []role
	err := c.do(ctx, request{op: "list_roles", method: http.MethodGet, path: "/roles", query: query, out: &out})
	if err != nil {
		return nil, fmt.Errorf("directus: list roles: %w", err)
	}
	roles := make([]Role, len(out))
	for i, r := range out {
		roles[i] = Role{ID: r.ID, Name: r.Name, Parent: deref(r.Parent)}
		for _, p := range r.Policies {
			roles[i].Policies = append(roles[i].Policies, p.Policy)
		}
	}
	return roles, nil
}

// Policies lists every policy.
func (c *Client) Policies(ctx context.Context) ([]Policy, error) {
	var out []Policy
	err := c.do(ctx, request{op: "list_policies", method: http.MethodGet, path: "/policies",
		query: url.Values{"fields": {"id,name,admin_access,app_access"}, "limit": {"-1"}, "sort": {"name"}}, out: &out})
	if err != nil {
		return nil, fmt.Errorf("directus: list policies: %w", err)
	}
	return out, nil
}

// CreatePolicy creates a policy and returns it with its id. Operators
// normally manage policies in Directus; tests and setup tools use this.
func (c *Client) CreatePolicy(ctx context.Context, p Policy) (Policy, error) {
	body := map[string]any{"name": p.Name, "icon": "smart_toy", "admin_access": p.AdminAccess, "app_access": p.AppAccess}
	var out Policy
	err := c.do(ctx, request{op: "create_policy", method: http.MethodPost, path: "/policies",
		query: url.Values{"fields": {"id,name,admin_access,app_access"}}, body: body, out: &out})
	if err != nil {
		return Policy{}, fmt.Errorf("directus: create policy: %w", err)
	}
	return out, nil
}

// CreateRole creates a role with the given policies attached and returns it
// with its id.
func (c *Client) CreateRole(ctx context.Context, r Role) (Role, error) {
	body := map[string]any{"name": r.Name, "icon": "smart_toy"}
	if r.Parent != "" {
		body["parent"] = r.Parent
	}
	if len(r.Policies) > 0 {
		body["policies"] = map[string]any{"create": policyRows(r.Policies), "update": []any{}, "delete": []any{}}
	}
	var out role
	err := c.do(ctx, request{op: "create_role", method: http.MethodPost, path: "/roles",
		query: url.Values{"fields": {"id,name,parent,policies.policy"}}, body: body, out: &out})
	if err != nil {
		return Role{}, fmt.Errorf("directus: create role: %w", err)
	}
	created := Role{ID: out.ID, Name: out.Name, Parent: deref(out.Parent)}
	for _, p := range out.Policies {
		created.Policies = append(created.Policies, p.Policy)
	}
	return created, nil
}

// AccessUsers maps access row ids to the user each attaches a policy to
// ("" for a role's row); ids that do not exist are left out.
func (c *Client) AccessUsers(ctx context.Context, ids []string) (map[string]string, error) {
	out := map[string]string{}
	if len(ids) == 0 {
		return out, nil
	}
	filter, _ := json.Marshal(map[string]any{"id": map[string]any{"_in": ids}})
	var rows []struct {
		ID   string  `json:"id"`
		User *string `json:"user"`
	}
	err := c.do(ctx, request{op: "list_access", method: http.MethodGet, path: "/access",
		query: url.Values{"fields": {"id,user"}, "filter": {string(filter)}, "limit": {"-1"}}, out: &rows})
	if err != nil {
		return nil, fmt.Errorf("directus: list access: %w", err)
	}
	for _, r := range rows {
		out[r.ID] = deref(r.User)
	}
	return out, nil
}

// AttachPolicy attaches a policy to a user with POST /access, as an
// administrator may do directly, and returns the access row's id.
func (c *Client) AttachPolicy(ctx context.Context, user, policy string) (string, error) {
	return c.createAccess(ctx, map[string]string{"user": user, "policy": policy})
}

// createAccess creates an access row (POST /access) and returns its id.
func (c *Client) createAccess(ctx context.Context, row map[string]string) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	err := c.do(ctx, request{op: "create_access", method: http.MethodPost, path: "/access",
		query: url.Values{"fields": {"id"}}, body: row, out: &out})
	if err != nil {
		return "", fmt.Errorf("directus: create access: %w", err)
	}
	return out.ID, nil
}

// DeleteAccess deletes an access row (DELETE /access/:id).
func (c *Client) DeleteAccess(ctx context.Context, id string) error {
	if err := c.do(ctx, request{op: "delete_access", method: http.MethodDelete, path: "/access/" + url.PathEscape(id)}); err != nil {
		return fmt.Errorf("directus: delete access: %w", err)
	}
	return nil
}

// nameFilter selects rows whose name is exactly name.
func nameFilter(name string) string {
	b, _ := json.Marshal(map[string]any{"name": map[string]any{"_eq": name}})
	return string(b)
}

// PoliciesNamed lists the policies called name (Directus does not keep
// policy names unique: there may be several, or none).
func (c *Client) PoliciesNamed(ctx context.Context, name string) ([]Policy, error) {
	var out []Policy
	err := c.do(ctx, request{op: "list_policies", method: http.MethodGet, path: "/policies",
		query: url.Values{"fields": {"id,name,admin_access,app_access"}, "filter": {nameFilter(name)}, "limit": {"-1"}, "sort": {"id"}}, out: &out})
	if err != nil {
		return nil, fmt.Errorf("directus: list policies: %w", err)
	}
	return out, nil
}

// RolesNamed lists the roles called name, with their policies (role names
// are not unique either).
func (c *Client) RolesNamed(ctx context.Context, name string) ([]Role, error) {
	return c.listRoles(ctx, url.Values{"filter": {nameFilter(name)}, "sort": {"id"}})
}

// SetPolicyAccess sets a policy's two access flags (PATCH /policies/:id)
// and returns the policy as stored; a policy that does not exist is
// ErrNotFound.
func (c *Client) SetPolicyAccess(ctx context.Context, id string, f AccessFlags) (Policy, error) {
	var out Policy
	err := c.do(ctx, request{op: "update_policy", method: http.MethodPatch, path: "/policies/" + url.PathEscape(id),
		query: url.Values{"fields": {"id,name,admin_access,app_access"}}, body: f, out: &out})
	if err != nil {
		return Policy{}, fmt.Errorf("directus: update policy: %w", err)
	}
	return out, nil
}

// AttachRolePolicy attaches a policy to a role with POST /access and
// returns the access row's id.
func (c *Client) AttachRolePolicy(ctx context.Context, role, policy string) (string, error) {
	return c.createAccess(ctx, map[string]string{"role": role, "policy": policy})
}

// Grant is a directus_access row: a policy attached to a user or a role.
type Grant struct {
	ID   string
	User string // "" for a role's row
	Role string // "" for a user's row
}

// PolicyGrants lists the access rows that attach policy to users or roles.
func (c *Client) PolicyGrants(ctx context.Context, policy string) ([]Grant, error) {
	filter, _ := json.Marshal(map[string]any{"policy": map[string]any{"_eq": policy}})
	var rows []struct {
		ID   string  `json:"id"`
		User *string `json:"user"`
		Role *string `json:"role"`
	}
	err := c.do(ctx, request{op: "list_access", method: http.MethodGet, path: "/access",
		query: url.Values{"fields": {"id,user,role"}, "filter": {string(filter)}, "limit": {"-1"}, "sort": {"id"}}, out: &rows})
	if err != nil {
		return nil, fmt.Errorf("directus: list access: %w", err)
	}
	out := make([]Grant, len(rows))
	for i, r := range rows {
		out[i] = Grant{ID: r.ID, User: deref(r.User), Role: deref(r.Role)}
	}
	return out, nil
}
