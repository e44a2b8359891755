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
}

// Rules is an ordered list of rules. The zero value denies everything.
type Rules []Rule

// Validate reports every problem in the rules at once: missing outcomes,
// conflicting outcomes, malformed globs, and rules that can never match
// because an earlier rule matches everything they do.
func (rs Rules) Validate() error {
	var errs []string
	for i, r := range rs {
		name := r.label(i)
		switch {
		case r.Deny && (r.Role != "" || len(r.Policies) > 0):
			errs = append(errs, fmt.Sprintf("%s: deny rules grant nothing: remove role and policies", name))
		case !r.Deny && r.Role == "":
			errs = append(errs, fmt.Sprintf("%s: needs a role (or deny: true)", name))
		}
		if r.Client != "" && !validGlob(r.Client) {
			errs = append(errs, fmt.Sprintf("%s: client pattern %q ends in an unfinished escape", name, r.Client))
		}
		for _, k := range slices.Sorted(maps.Keys(r.Claims)) {
			v := r.Claims[k]
			if k == "" {
				errs = append(errs, fmt.Sprintf("%s: empty claim name", name))
			}
			if !validGlob(v) {
				errs = append(errs, fmt.Sprintf("%s: claim %q pattern %q ends in an unfinished escape", name, k, v))
			}
		}
		for _, s := range append(slices.Clone(r.AllScopes), r.AnyScopes...) {
			if s == "" || strings.ContainsAny(s, " \t\n") {
				errs = append(errs, fmt.Sprintf("%s: scope %q is empty or has white space", name, s))
			}
		}
		for j := range i {
			if rs[j].covers(r) {
				errs = append(errs, fmt.Sprintf("%s: never matches: %s matches every token it does", name, rs[j].label(j)))
				break
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("mapping: %s", strings.Join(errs, "; "))
	}
	return nil
}

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
// match denies.
func (rs Rules) Evaluate(in Input) Decision {
	d := Decision{Index: -1, Deny: true}
	have := map[string]bool{}
	for _, s := range in.Scopes {
		have[s] = true
	}
	for i, r := range rs {
		counted, why := r.match(in, have)
		if why != "" {
			d.Reasons = append(d.Reasons, r.label(i)+": "+why)
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

// match returns the scopes that counted, or why the rule does not match.
func (r Rule) match(in Input, have map[string]bool) ([]string, string) {
	if r.Issuer != "" && r.Issuer != in.Issuer {
		return nil, fmt.Sprintf("issuer is %q, rule wants %q", in.Issuer, r.Issuer)
	}
	if r.Audience != "" && !slices.Contains(in.Audiences, r.Audience) {
		return nil, fmt.Sprintf("audience %q not in token", r.Audience)
	}
	if r.Client != "" && !Glob(r.Client, in.Client) {
		return nil, fmt.Sprintf("client %q does not match %q", in.Client, r.Client)
	}
	var counted []string
	var missing []string
	for _, s := range r.AllScopes {
		if have[s] {
			counted = append(counted, s)
		} else {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Sprintf("missing scopes %s", strings.Join(missing, " "))
	}
	if len(r.AnyScopes) > 0 {
		n := len(counted)
		for _, s := range r.AnyScopes {
			if have[s] {
				counted = append(counted, s)
			}
		}
		if len(counted) == n {
			return nil, fmt.Sprintf("none of the scopes %s", strings.Join(r.AnyScopes, " "))
		}
	}
	keys := make([]string, 0, len(r.Claims))
	for k := range r.Claims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		pat := r.Claims[k]
		if !slices.ContainsFunc(in.Claims[k], func(v string) bool { return Glob(pat, v) }) {
			return nil, fmt.Sprintf("claim %s does not match %q", k, pat)
		}
	}
	return counted, ""
}
