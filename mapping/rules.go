package mapping

import (
	"encoding/json"
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
	// Claims maps a claim to a glob; for a list claim any element may
	// match. A name starting with "/" is a JSON Pointer into nested claims
	// ("/realm_access/roles"); any other name is a top-level claim.
	Claims map[string]string `yaml:"claims"`
	// Condition is a CEL expression that must be true, for what the other
	// conditions cannot say (see CompileCondition for its variables).
	Condition string `yaml:"condition"`

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
	Issuer    string   // configured issuer name
	Audiences []string // the token's aud
	Client    string   // the client id claim
	Scopes    []string // normalised scopes (after any narrowing by the request)
	// Raw are the token's claims as decoded JSON (numbers as json.Number):
	// claim conditions and CEL conditions read them. When Raw is nil they
	// read Claims instead, where only top-level names can be found.
	Raw map[string]any
	// Claims are the claims normalised to lists of strings (string, number
	// and boolean claims, and the strings of list claims), as records of
	// earlier versions kept them.
	Claims map[string][]string
}

// claim returns the value of the claim at path (as written in a rule).
func (in Input) claim(path string) (any, bool) {
	if in.Raw != nil {
		return lookup(in.Raw, path)
	}
	if path != "" && path[0] == '/' {
		if strings.Count(path, "/") > 1 {
			return nil, false
		}
		path = unescape(path[1:])
	}
	v, ok := in.Claims[path]
	return v, ok
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
	// Trace is, from Explain, every rule looked at (those before the
	// match and the match) with each of its written conditions.
	Trace []RuleTrace
}

// RuleTrace is how one rule's conditions turned out for an Input.
type RuleTrace struct {
	Index  int
	Rule   string // its label
	Checks []Check
}

// Check is one written condition of a rule and whether it held.
type Check struct {
	// Condition names it as the rule's YAML key does: issuer, audience,
	// client, all_scopes, any_scopes, claims.<name>, condition.
	Condition string
	Held      bool
	// Detail says why it failed (as Decision.Reasons do) or what held.
	Detail string
	// Found is, for a claim condition on a present claim, its value as
	// JSON (capped); claim values are in no Reason, since those are logged.
	Found string
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
		keys := map[string]string{}
		for _, k := range slices.Sorted(maps.Keys(r.Claims)) {
			v := r.Claims[k]
			if k == "" {
				bad("claims", "empty claim name")
			} else if p, err := ParsePath(k); err != nil {
				bad("claims."+k, "%v", err)
			} else if other, dup := keys[p.Key()]; dup {
				bad("claims."+k, "claims %q and %q name the same claim: keep one", other, k)
			} else {
				keys[p.Key()] = k
			}
			if !validGlob(v) {
				bad("claims."+k, "claim %q pattern %q ends in an unfinished escape", k, v)
			}
		}
		if r.Condition != "" {
			if err := CompileCondition(r.Condition); err != nil {
				bad("condition", "%v", err)
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
		// has a condition on k too (spelled either way).
		bv, ok := b.claimPattern(k)
		if !ok || (v != "*" && bv != v) {
			return false
		}
	}
	// A condition is judged by its text alone: a's holds for b's tokens
	// when b has the same.
	return a.Condition == "" || a.Condition == b.Condition
}

// claimPattern is r's pattern for the claim k names, however r spells it.
func (r Rule) claimPattern(k string) (string, bool) {
	if v, ok := r.Claims[k]; ok {
		return v, true
	}
	p, err := ParsePath(k)
	if err != nil {
		return "", false
	}
	for bk, bv := range r.Claims {
		if q, err := ParsePath(bk); err == nil && q.Key() == p.Key() {
			return bv, true
		}
	}
	return "", false
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
func (rs Rules) Evaluate(in Input) Decision { return rs.evaluate(in, withReasons) }

// Decide is Evaluate without Reasons: it builds no explanation strings, so
// it costs little however many rules come before the match.
func (rs Rules) Decide(in Input) Decision { return rs.evaluate(in, decideOnly) }

// Explain is Evaluate with a Trace: every condition of every rule looked
// at, held or failed, for mappings explain. It costs a formatted string per
// condition.
func (rs Rules) Explain(in Input) Decision { return rs.evaluate(in, withTrace) }

// How much evaluate explains.
const (
	decideOnly = iota
	withReasons
	withTrace
)

func (rs Rules) evaluate(in Input, mode int) Decision {
	d := Decision{Index: -1, Deny: true}
	have := make(map[string]bool, len(in.Scopes))
	for _, s := range in.Scopes {
		have[s] = true
	}
	for i, r := range rs {
		counted, ok := r.match(in, have)
		switch {
		case mode == withTrace:
			checks := r.trace(in, have, nil)
			d.Trace = append(d.Trace, RuleTrace{Index: i, Rule: r.label(i), Checks: checks})
			if !ok {
				d.Reasons = append(d.Reasons, r.label(i)+": "+why(checks))
			}
		case mode == withReasons && !ok:
			var first Check
			r.trace(in, have, &first)
			d.Reasons = append(d.Reasons, r.label(i)+": "+first.Detail)
		}
		if !ok {
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
		if v, ok := in.claim(k); !ok || !matchValue(pat, v) {
			return nil, false
		}
	}
	if r.Condition != "" {
		if ok, reason := r.holds(in); !ok && !(r.Deny && reason != "false") {
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

// holds evaluates the rule's CEL condition, compiling it if it is not
// compiled yet (rules that were validated are): whether it is true, and
// why not ("false", or the error that stopped it). A deny rule whose
// condition cannot be evaluated matches (match, trace): a token that a
// deny rule may be about is refused, not let through to a later rule.
func (r Rule) holds(in Input) (bool, string) {
	c, err := compiled(r.Condition)
	if err != nil {
		return false, "does not compile: " + err.Error()
	}
	return c.eval(in)
}

// why says why a rule does not match: its first failing condition, in the
// order match checks them (claims by name).
func why(checks []Check) string {
	for _, c := range checks {
		if !c.Held {
			return c.Detail
		}
	}
	return ""
}

// trace checks each written condition of the rule, in the order match
// checks them (claims by name). With first, it stops at the first that
// fails and sets *first to it instead (what a Reason needs), returning
// nothing.
func (r Rule) trace(in Input, have map[string]bool, first *Check) []Check {
	var out []Check
	full := first == nil
	// add records a check; it reports whether to stop.
	add := func(cond string, held bool, format string, a ...any) bool {
		switch {
		case full:
			out = append(out, Check{Condition: cond, Held: held, Detail: fmt.Sprintf(format, a...)})
			return false
		case held:
			return false
		}
		*first = Check{Condition: cond, Detail: fmt.Sprintf(format, a...)}
		return true
	}
	if r.Issuer != "" {
		if r.Issuer != in.Issuer {
			if add("issuer", false, "issuer is %q, rule wants %q", in.Issuer, r.Issuer) {
				return out
			}
		} else if full {
			add("issuer", true, "issuer is %q", in.Issuer)
		}
	}
	if r.Audience != "" {
		if !slices.Contains(in.Audiences, r.Audience) {
			if add("audience", false, "audience %q not in token", r.Audience) {
				return out
			}
		} else if full {
			add("audience", true, "audience %q in token", r.Audience)
		}
	}
	if r.Client != "" {
		if !Glob(r.Client, in.Client) {
			if add("client", false, "client %q does not match %q", in.Client, r.Client) {
				return out
			}
		} else if full {
			add("client", true, "client %q matches %q", in.Client, r.Client)
		}
	}
	if len(r.AllScopes) > 0 {
		var missing []string
		for _, s := range r.AllScopes {
			if !have[s] {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			if add("all_scopes", false, "missing scopes %s", strings.Join(missing, " ")) {
				return out
			}
		} else if full {
			add("all_scopes", true, "has scopes %s", strings.Join(r.AllScopes, " "))
		}
	}
	if len(r.AnyScopes) > 0 {
		var got []string
		for _, s := range r.AnyScopes {
			if have[s] {
				got = append(got, s)
			}
		}
		if len(got) == 0 {
			if add("any_scopes", false, "none of the scopes %s", strings.Join(r.AnyScopes, " ")) {
				return out
			}
		} else if full {
			add("any_scopes", true, "has scopes %s", strings.Join(got, " "))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.Claims)) {
		pat := r.Claims[k]
		v, ok := in.claim(k)
		held := ok && matchValue(pat, v)
		var stop bool
		switch {
		case !held:
			stop = add("claims."+k, false, "claim %s does not match %q", k, pat)
		case full:
			add("claims."+k, true, "claim %s matches %q", k, pat)
		}
		if ok && full && len(out) > 0 {
			out[len(out)-1].Found = shownValue(v)
		}
		if stop {
			return out
		}
	}
	if r.Condition != "" {
		switch ok, reason := r.holds(in); {
		case ok:
			add("condition", true, "condition is true")
		case reason == "false":
			add("condition", false, "condition is false")
		case r.Deny:
			add("condition", true, "condition cannot be evaluated, so the deny rule refuses: %s", reason)
		default:
			add("condition", false, "condition does not hold: %s", reason)
		}
	}
	return out
}

// maxShownValue caps a claim value in an explanation.
const maxShownValue = 120

// shownValue renders a claim value for an explanation, as JSON, capped.
func shownValue(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	if len(b) > maxShownValue {
		return string(b[:maxShownValue]) + "…"
	}
	return string(b)
}
