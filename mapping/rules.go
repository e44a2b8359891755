package mapping

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Rule is one mapping rule as written in the configuration file. A condition
// that is not written always holds; a written claim condition needs the
// claim to be present.
type Rule struct {
	// Name identifies the rule in logs and explanations (default "rule N").
	Name string `yaml:"name"`

	// Issuer is the configured name of the issuer that must have signed the token.
	Issuer string `yaml:"issuer"`
	// Audience must be one of the token's audiences (exact).
	Audience string `yaml:"audience"`
	// Client is a glob the client id must match.
	Client string `yaml:"client"`
	// AllScopes must all be present.
	AllScopes []string `yaml:"all_scopes"`
	// AnyScopes: at least one must be present.
	AnyScopes []string `yaml:"any_scopes"`
	// Claims maps a claim name to a glob; for a list claim any element may match.
	Claims map[string]string `yaml:"claims"`

	// Role is the Directus role (name or id) granted. Required unless Deny.
	Role string `yaml:"role"`
	// Policies are extra Directus policies (names or ids) attached to the user.
	Policies []string `yaml:"policies"`
	// Deny refuses the client outright.
	Deny bool `yaml:"deny"`
	// AllowAdmin permits a role or policy with admin access. Without it such a
	// rule is refused when the rules are checked against Directus.
	AllowAdmin bool `yaml:"allow_admin"`
}

// Input is what the rules see of a verified token.
type Input struct {
	Issuer    string              // configured issuer name
	Audiences []string            // the token's aud
	Client    string              // the client id claim
	Scopes    []string            // normalised scopes (after any narrowing by the request)
	Claims    map[string][]string // other claims, string-or-list normalised to lists
}

// Decision is the outcome of Evaluate.
type Decision struct {
	Matched  bool   // a rule matched (it may still deny)
	Index    int    // index of the matching rule, -1 when none
	Rule     string // its name
	Deny     bool   // refused: by a deny rule or because no rule matched
	Role     string // as written in the rule
	Policies []string
	// Counted are the scopes that made the rule match (sorted).
	Counted []string
	// Reasons explain, for each rule before the match, why it did not match.
	Reasons []string
	// Blocked: the matching rule grants, but its grant is withheld (its
	// role or a policy has admin access in Directus without allow_admin).
	Blocked bool
}

// Rules is an ordered list of rules. The zero value denies everything.
type Rules []Rule

// Validate reports every problem in the rules at once: missing outcomes,
// conflicting outcomes, malformed globs, and rules that can never match
// because an earlier rule matches everything they do. The error is a
// *RulesError, which lists each problem with the rule and key it is about.
func (rs Rules) Validate() error {
	var errs []*RuleError
	for i, r := range rs {
		bad := func(field, format string, a ...any) {
			errs = append(errs, &RuleError{Index: i, Label: r.label(i), Field: field, Reason: fmt.Sprintf(format, a...), ShadowedBy: -1})
		}
		switch {
		case r.Deny && (r.Role != "" || len(r.Policies) > 0):
			bad("deny", "deny rules grant nothing: remove role and policies")
		case !r.Deny && r.Role == "":
			bad("role", "needs a role (or deny: true)")
		}
		if r.Client != "" && !validGlob(r.Client) {
			bad("client", "client pattern %q ends in an unfinished escape", r.Client)
		}
		for _, k := range slices.Sorted(maps.Keys(r.Claims)) {
			v := r.Claims[k]
			if k == "" {
				bad("claims", "empty claim name")
			}
			if !validGlob(v) {
				bad("claims."+k, "claim %q pattern %q ends in an unfinished escape", k, v)
			}
		}
		for _, list := range []struct {
			field  string
			scopes []string
		}{{"all_scopes", r.AllScopes}, {"any_scopes", r.AnyScopes}} {
			for _, s := range list.scopes {
				if s == "" || strings.ContainsAny(s, " \t\n") {
					bad(list.field, "scope %q is empty or has white space", s)
				}
			}
		}
		for j := range i {
			if rs[j].covers(r) {
				bad("", "never matches: %s matches every token it does", rs[j].label(j))
				errs[len(errs)-1].ShadowedBy = j
				break
			}
		}
	}
	if len(errs) > 0 {
		return &RulesError{Problems: errs}
	}
	return nil
}

// RulesError is every problem Validate found, in the order of the rules.
type RulesError struct {
	Problems []*RuleError
}

func (e *RulesError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Error()
	}
	return "mapping: " + strings.Join(parts, "; ")
}

// RuleError is one problem with one rule. Index and Field say where it is
// (for a configuration check to point at the line); Label and Reason say
// what it is.
type RuleError struct {
	// Index is the rule's position in Rules, from 0.
	Index int
	// Field is the rule's YAML key the problem is about ("claims.team" for
	// one claim), or "" for the rule as a whole.
	Field string
	// Label names the rule as messages do: "rule 2" or "rule 2 (name)",
	// counted from 1.
	Label string
	// Reason is what is wrong, without the label.
	Reason string
	// ShadowedBy is, for a rule that never matches, the index of the
	// earlier rule that matches every token it does; -1 otherwise.
	ShadowedBy int
}

func (e *RuleError) Error() string { return e.Label + ": " + e.Reason }

func (r Rule) label(i int) string {
	if r.Name != "" {
		return fmt.Sprintf("rule %d (%s)", i+1, r.Name)
	}
	return fmt.Sprintf("rule %d", i+1)
}

// covers reports whether every token matching b also matches a, judged
// conservatively from the conditions' text: it only says yes when each of
// a's conditions is absent or implied by the same condition of b.
func (a Rule) covers(b Rule) bool {
	if a.Issuer != "" && a.Issuer != b.Issuer {
		return false
	}
	if a.Audience != "" && a.Audience != b.Audience {
		return false
	}
	if a.Client != "" && a.Client != "*" && a.Client != b.Client {
		return false
	}
	for _, s := range a.AllScopes {
		if !slices.Contains(b.AllScopes, s) {
			return false
		}
	}
	if len(a.AnyScopes) > 0 {
		// b must guarantee one of a's scopes.
		ok := slices.ContainsFunc(a.AnyScopes, func(s string) bool { return slices.Contains(b.AllScopes, s) })
		if !ok && (len(b.AnyScopes) == 0 || !subset(b.AnyScopes, a.AnyScopes)) {
			return false
		}
	}
	for k, v := range a.Claims {
		// a needs claim k to be present; b guarantees that only when it
		// has a condition on k too.
		bv, ok := b.Claims[k]
		if !ok || (v != "*" && bv != v) {
			return false
		}
	}
	return true
}

func subset(a, b []string) bool {
	for _, s := range a {
		if !slices.Contains(b, s) {
			return false
		}
	}
	return true
}

// Evaluate returns the decision for in: the first matching rule wins; no
// match denies. Reasons says why each earlier rule did not match; Decide is
// the same without Reasons, for hot paths.
func (rs Rules) Evaluate(in Input) Decision { return rs.evaluate(in, true) }

// Decide is Evaluate without Reasons: it builds no explanation strings, so
// it costs little however many rules come before the match.
func (rs Rules) Decide(in Input) Decision { return rs.evaluate(in, false) }

func (rs Rules) evaluate(in Input, explain bool) Decision {
	d := Decision{Index: -1, Deny: true}
	have := make(map[string]bool, len(in.Scopes))
	for _, s := range in.Scopes {
		have[s] = true
	}
	for i, r := range rs {
		counted, ok := r.match(in, have)
		if !ok {
			if explain {
				d.Reasons = append(d.Reasons, r.label(i)+": "+r.why(in, have))
			}
			continue
		}
		d.Matched, d.Index, d.Rule, d.Deny = true, i, r.label(i), r.Deny
		if !r.Deny {
			d.Role, d.Policies = r.Role, slices.Clone(r.Policies)
		}
		sort.Strings(counted)
		d.Counted = slices.Compact(counted)
		return d
	}
	return d
}

// match returns the scopes that counted and whether the rule matches.
func (r Rule) match(in Input, have map[string]bool) ([]string, bool) {
	if r.Issuer != "" && r.Issuer != in.Issuer {
		return nil, false
	}
	if r.Audience != "" && !slices.Contains(in.Audiences, r.Audience) {
		return nil, false
	}
	if r.Client != "" && !Glob(r.Client, in.Client) {
		return nil, false
	}
	for _, s := range r.AllScopes {
		if !have[s] {
			return nil, false
		}
	}
	anyOK := len(r.AnyScopes) == 0
	for _, s := range r.AnyScopes {
		if have[s] {
			anyOK = true
			break
		}
	}
	if !anyOK {
		return nil, false
	}
	for k, pat := range r.Claims {
		if !slices.ContainsFunc(in.Claims[k], func(v string) bool { return Glob(pat, v) }) {
			return nil, false
		}
	}
	counted := slices.Clone(r.AllScopes)
	for _, s := range r.AnyScopes {
		if have[s] {
			counted = append(counted, s)
		}
	}
	return counted, true
}

// why says why the rule does not match (the first failing condition, in the
// order match checks them; claims by name).
func (r Rule) why(in Input, have map[string]bool) string {
	if r.Issuer != "" && r.Issuer != in.Issuer {
		return fmt.Sprintf("issuer is %q, rule wants %q", in.Issuer, r.Issuer)
	}
	if r.Audience != "" && !slices.Contains(in.Audiences, r.Audience) {
		return fmt.Sprintf("audience %q not in token", r.Audience)
	}
	if r.Client != "" && !Glob(r.Client, in.Client) {
		return fmt.Sprintf("client %q does not match %q", in.Client, r.Client)
	}
	var missing []string
	for _, s := range r.AllScopes {
		if !have[s] {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("missing scopes %s", strings.Join(missing, " "))
	}
	if len(r.AnyScopes) > 0 && !slices.ContainsFunc(r.AnyScopes, func(s string) bool { return have[s] }) {
		return fmt.Sprintf("none of the scopes %s", strings.Join(r.AnyScopes, " "))
	}
	for _, k := range slices.Sorted(maps.Keys(r.Claims)) {
		pat := r.Claims[k]
		if !slices.ContainsFunc(in.Claims[k], func(v string) bool { return Glob(pat, v) }) {
			return fmt.Sprintf("claim %s does not match %q", k, pat)
		}
	}
	return ""
}
