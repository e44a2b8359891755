package directus

import (
	"context"
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
	var out []role
	err := c.do(ctx, request{op: "list_roles", method: http.MethodGet, path: "/roles",
		query: url.Values{"fields": {"id,name,parent,policies.policy"}, "limit": {"-1"}, "sort": {"name"}}, out: &out})
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
