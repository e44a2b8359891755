package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// Mapper is a set of mapping rules whose role and policy names were resolved
// to Directus ids and checked against Directus. A zero Mapper denies all.
type Mapper struct {
	Rules    mapping.Rules
	roles    map[string]directus.Role   // by id and by name
	policies map[string]directus.Policy // by id and by name
}

// Grant is what a rule hands out, as Directus ids.
type Grant struct {
	Role     string
	Policies []string // sorted
}

// Resolve turns a decision's role and policy names into ids.
func (m *Mapper) Resolve(d mapping.Decision) Grant {
	g := Grant{Role: m.roles[d.Role].ID}
	for _, p := range d.Policies {
		g.Policies = append(g.Policies, m.policies[p].ID)
	}
	sort.Strings(g.Policies)
	g.Policies = slices.Compact(g.Policies)
	return g
}

// RoleName and PolicyName give the Directus names of ids, for explanations.
func (m *Mapper) RoleName(id string) string   { return m.roles[id].Name }
func (m *Mapper) PolicyName(id string) string { return m.policies[id].Name }

// LoadMapper validates rules and checks them against Directus: every role and
// policy must exist (by name or id), a role or policy with admin access
// needs allow_admin on its rule, and one with app access gives a warning
// (on Directus 12 such users take licensed seats). It returns every problem
// at once.
func LoadMapper(ctx context.Context, d Directus, rules mapping.Rules) (*Mapper, []string, error) {
	if err := rules.Validate(); err != nil {
		return nil, nil, err
	}
	roles, err := d.Roles(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("mapping: %w", err)
	}
	policies, err := d.Policies(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("mapping: %w", err)
	}
	return NewMapper(rules, roles, policies)
}

// NewMapper is LoadMapper with the roles and policies already read.
func NewMapper(rules mapping.Rules, roles []directus.Role, policies []directus.Policy) (*Mapper, []string, error) {
	m := &Mapper{Rules: rules, roles: map[string]directus.Role{}, policies: map[string]directus.Policy{}}
	byID := map[string]directus.Policy{}
	for _, p := range policies {
		byID[p.ID] = p
	}
	var errs []error
	var warnings []string
	// Names may repeat in Directus; a name that does is ambiguous.
	ambiguous := map[string]bool{}
	for _, r := range roles {
		if _, dup := m.roles[r.Name]; dup {
			ambiguous["role "+r.Name] = true
		}
		m.roles[r.Name] = r
	}
	for _, r := range roles {
		m.roles[r.ID] = r
	}
	for _, p := range policies {
		if _, dup := m.policies[p.Name]; dup {
			ambiguous["policy "+p.Name] = true
		}
		m.policies[p.Name] = p
	}
	for _, p := range policies {
		m.policies[p.ID] = p
	}
	roleByID := map[string]directus.Role{}
	for _, r := range roles {
		roleByID[r.ID] = r
	}
	for i, r := range rules {
		name := fmt.Sprintf("rule %d", i+1)
		if r.Name != "" {
			name += " (" + r.Name + ")"
		}
		if r.Deny {
			continue
		}
		role, ok := m.roles[r.Role]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s: role %q does not exist in Directus", name, r.Role))
		case ambiguous["role "+r.Role] && role.ID != r.Role:
			errs = append(errs, fmt.Errorf("%s: several Directus roles are named %q: use the role id", name, r.Role))
		default:
			admin, app := roleAccess(role, roleByID, byID)
			if admin && !r.AllowAdmin {
				errs = append(errs, fmt.Errorf("%s: role %q has admin access: refused without allow_admin: true", name, r.Role))
			}
			if app {
				warnings = append(warnings, fmt.Sprintf("%s: role %q has app access: on Directus 12 its machine users take licensed seats", name, r.Role))
			}
		}
		for _, ref := range r.Policies {
			p, ok := m.policies[ref]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("%s: policy %q does not exist in Directus", name, ref))
			case ambiguous["policy "+ref] && p.ID != ref:
				errs = append(errs, fmt.Errorf("%s: several Directus policies are named %q: use the policy id", name, ref))
			case p.AdminAccess && !r.AllowAdmin:
				errs = append(errs, fmt.Errorf("%s: policy %q has admin access: refused without allow_admin: true", name, ref))
			case p.AppAccess:
				warnings = append(warnings, fmt.Sprintf("%s: policy %q has app access: on Directus 12 its machine users take licensed seats", name, ref))
			}
		}
	}
	if len(errs) > 0 {
		return nil, warnings, fmt.Errorf("mapping: %w", errors.Join(errs...))
	}
	return m, warnings, nil
}

// roleAccess reports whether a role, through its own policies or those of
// its ancestors, has admin or app access.
func roleAccess(r directus.Role, roles map[string]directus.Role, policies map[string]directus.Policy) (admin, app bool) {
	seen := map[string]bool{}
	for r.ID != "" && !seen[r.ID] {
		seen[r.ID] = true
		for _, pid := range r.Policies {
			admin = admin || policies[pid].AdminAccess
			app = app || policies[pid].AppAccess
		}
		r = roles[r.Parent]
	}
	return admin, app
}
