package bridge

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// Mapper is a set of mapping rules whose role and policy names were resolved
// to Directus ids and checked against Directus. A zero Mapper denies all.
type Mapper struct {
	Rules    mapping.Rules
	roles    map[string]directus.Role   // by id and by name
	policies map[string]directus.Policy // by id and by name
	// blocked are the rules whose grant has admin access in Directus
	// without allow_admin (rule index -> why): they deny. Set when the
	// rules load and again by CheckAdminAccess.
	blocked atomic.Pointer[map[int]string]
	// offline: built by NewOfflineMapper, names not resolved.
	offline bool
}

// AdminAccessError lists rules that would hand out admin access without
// allow_admin. NewMapper returns it with a usable Mapper in which those
// rules deny, so that a reload can keep every other rule working.
type AdminAccessError struct{ Rules map[int]string }

func (e *AdminAccessError) Error() string {
	idx := slices.Sorted(maps.Keys(e.Rules))
	msgs := make([]string, len(idx))
	for i, k := range idx {
		msgs[i] = e.Rules[k]
	}
	return strings.Join(msgs, "; ")
}

// Blocked reports whether rule i denies because its grant has admin access
// in Directus, and why.
func (m *Mapper) Blocked(i int) (string, bool) {
	b := m.blocked.Load()
	if b == nil {
		return "", false
	}
	why, ok := (*b)[i]
	return why, ok
}

// BlockedCount is the number of blocked rules, for metrics.
func (m *Mapper) BlockedCount() int {
	if b := m.blocked.Load(); b != nil {
		return len(*b)
	}
	return 0
}

// Decide is Rules.Decide with blocked rules denying.
func (m *Mapper) Decide(in mapping.Input) mapping.Decision {
	d := m.Rules.Decide(in)
	return m.block(d)
}

// Evaluate is Rules.Evaluate (with reasons) with blocked rules denying.
func (m *Mapper) Evaluate(in mapping.Input) mapping.Decision {
	return m.block(m.Rules.Evaluate(in))
}

// Explain is Rules.Explain (reasons and a trace of every condition) with
// blocked rules denying.
func (m *Mapper) Explain(in mapping.Input) mapping.Decision {
	return m.block(m.Rules.Explain(in))
}

func (m *Mapper) block(d mapping.Decision) mapping.Decision {
	if d.Matched && !d.Deny {
		if why, ok := m.Blocked(d.Index); ok {
			d.Deny, d.Role, d.Policies = true, "", nil
			d.Reasons = append(d.Reasons, why)
			d.Blocked = true
		}
	}
	return d
}

// Grant is what a rule hands out, as Directus ids.
type Grant struct {
	Role     string
	Policies []string // sorted
}

// Resolve turns a decision's role and policy names into ids. An offline
// Mapper knows no ids: it gives the zero Grant.
func (m *Mapper) Resolve(d mapping.Decision) Grant {
	if m.offline {
		return Grant{}
	}
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

// NewOfflineMapper is a Mapper over the rules alone, for explaining
// decisions where Directus cannot or should not be asked (mappings explain
// -offline). It decides exactly as the Mapper of LoadMapper, reasons
// included, with one exception it cannot see: a rule whose role or policy
// has admin access in Directus without allow_admin grants here and denies
// there. Its names are not resolved (Resolve gives no ids, RoleName and
// PolicyName nothing): it MUST NOT be put in force in an Exchanger.
func NewOfflineMapper(rules mapping.Rules) (*Mapper, error) {
	if err := rules.Validate(); err != nil {
		return nil, err
	}
	return &Mapper{Rules: rules, offline: true}, nil
}

// Offline reports whether m was built by NewOfflineMapper: its role and
// policy names were not checked against Directus.
func (m *Mapper) Offline() bool { return m.offline }

// NewMapper is LoadMapper with the roles and policies already read.
func NewMapper(rules mapping.Rules, roles []directus.Role, policies []directus.Policy) (*Mapper, []string, error) {
	m := &Mapper{Rules: rules, roles: map[string]directus.Role{}, policies: map[string]directus.Policy{}}
	byID := map[string]directus.Policy{}
	for _, p := range policies {
		byID[p.ID] = p
	}
	var errs []error
	var warnings []string
	admin := map[int]string{}
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
			isAdmin, app := roleAccess(role, roleByID, byID)
			if isAdmin && !r.AllowAdmin {
				admin[i] = fmt.Sprintf("%s: role %q has admin access: refused without allow_admin: true", name, r.Role)
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
				if _, dup := admin[i]; !dup {
					admin[i] = fmt.Sprintf("%s: policy %q has admin access: refused without allow_admin: true", name, ref)
				}
			case p.AppAccess:
				warnings = append(warnings, fmt.Sprintf("%s: policy %q has app access: on Directus 12 its machine users take licensed seats", name, ref))
			}
		}
	}
	if len(errs) > 0 {
		for _, why := range admin {
			errs = append(errs, errors.New(why))
		}
		return nil, warnings, fmt.Errorf("mapping: %w", errors.Join(errs...))
	}
	if len(admin) > 0 {
		m.blocked.Store(&admin)
		return m, warnings, fmt.Errorf("mapping: %w", &AdminAccessError{Rules: admin})
	}
	return m, warnings, nil
}

// CheckAdminAccess checks the rules in force against Directus again: a role
// or policy an administrator gave admin access since the rules loaded is no
// longer handed out by a rule without allow_admin (the rule denies, loudly),
// and one that lost it is handed out again. It returns the blocked rules'
// reasons. The reconciler calls it on every run.
func (e *Exchanger) CheckAdminAccess(ctx context.Context) ([]string, error) {
	m := e.mapper.Load()
	roles, err := e.directus.Roles(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin access check: %w", err)
	}
	policies, err := e.directus.Policies(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin access check: %w", err)
	}
	// The grants in force, as the ids the rules resolved to when they
	// loaded, checked against Directus as it is now: a name that became
	// ambiguous or a policy that disappeared does not turn the check off.
	roleByID := map[string]directus.Role{}
	for _, r := range roles {
		roleByID[r.ID] = r
	}
	polByID := map[string]directus.Policy{}
	for _, p := range policies {
		polByID[p.ID] = p
	}
	blocked := map[int]string{}
	for i, r := range m.Rules {
		if r.Deny || r.AllowAdmin {
			continue
		}
		g := m.Resolve(mapping.Decision{Role: r.Role, Policies: r.Policies})
		name := fmt.Sprintf("rule %d", i+1)
		if r.Name != "" {
			name += " (" + r.Name + ")"
		}
		if role, ok := roleByID[g.Role]; ok {
			if admin, _ := roleAccess(role, roleByID, polByID); admin {
				blocked[i] = fmt.Sprintf("%s: role %q has admin access: refused without allow_admin: true", name, r.Role)
				continue
			}
		}
		for _, pid := range g.Policies {
			if polByID[pid].AdminAccess {
				blocked[i] = fmt.Sprintf("%s: policy %q has admin access: refused without allow_admin: true", name, m.PolicyName(pid))
				break
			}
		}
	}
	old := map[int]string{}
	if b := m.blocked.Load(); b != nil {
		old = *b
	}
	for i, why := range blocked {
		if _, was := old[i]; !was {
			e.log.Error("a rule's grant gained admin access in Directus: the rule denies until allow_admin is set or the access is removed", "rule", i+1, "why", why)
		}
	}
	for i := range old {
		if _, still := blocked[i]; !still {
			e.log.Info("a rule's grant no longer has admin access: the rule grants again", "rule", i+1)
		}
	}
	m.blocked.Store(&blocked)
	out := make([]string, 0, len(blocked))
	for _, i := range slices.Sorted(maps.Keys(blocked)) {
		out = append(out, blocked[i])
	}
	return out, nil
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
