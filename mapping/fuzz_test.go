package mapping_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/directus-bridge/directus-bridge/mapping"
)

// chooser is the randomness the generators need: *rand.Rand for property
// tests, *byteSource for fuzzing.
type chooser interface {
	IntN(n int) int
}

// byteSource turns fuzz bytes into choices; once the bytes run out every
// choice is 0, which keeps generated values small.
type byteSource struct{ b []byte }

func (s *byteSource) IntN(n int) int {
	if n <= 1 || len(s.b) == 0 {
		return 0
	}
	v := int(s.b[0])
	s.b = s.b[1:]
	return v % n
}

func pick(c chooser, xs ...string) string { return xs[c.IntN(len(xs))] }

// genString draws up to max characters from a small alphabet that is rich in
// glob syntax, so that patterns and values overlap often.
func genString(c chooser, max int) string {
	alphabet := []rune(`sv-ab*?\é`)
	n := c.IntN(max + 1)
	out := make([]rune, n)
	for i := range out {
		out[i] = alphabet[c.IntN(len(alphabet))]
	}
	return string(out)
}

// genList draws up to max elements from xs (repeats allowed); nil when none.
func genList(c chooser, max int, xs ...string) []string {
	var out []string
	for range c.IntN(max + 1) {
		out = append(out, pick(c, xs...))
	}
	return out
}

var (
	genScopes    = []string{"read", "write", "admin"}
	genClaimKeys = []string{"team", "groups"}
)

func genRule(c chooser) mapping.Rule {
	r := mapping.Rule{
		Name:      pick(c, "", "", "named"),
		Issuer:    pick(c, "", "", "corp", "partner"),
		Audience:  pick(c, "", "", "directus", "api"),
		AllScopes: genList(c, 2, genScopes...),
		AnyScopes: genList(c, 2, genScopes...),
		Deny:      c.IntN(4) == 0,
		Role:      pick(c, "", "r0", "r1", "r2"),
		Policies:  genList(c, 2, "p0", "p1"),
	}
	if c.IntN(4) == 0 {
		r.Client = genString(c, 5)
	} else {
		r.Client = pick(c, "", "", "*", "svc-a", "svc-*", "svc-?", "*-a", `svc-\*`)
	}
	for _, k := range genClaimKeys {
		if c.IntN(3) == 0 {
			if r.Claims == nil {
				r.Claims = map[string]string{}
			}
			r.Claims[k] = pick(c, "*", "", "ops", "o*", "dev", "?ev", "7", "true")
		}
	}
	if c.IntN(10) == 0 {
		if r.Claims == nil {
			r.Claims = map[string]string{}
		}
		r.Claims[pick(c, "/org/team", "/org/id", "/team/0", "/a~1b")] = pick(c, "*", "ops", "7")
	}
	if c.IntN(10) == 0 {
		r.Condition = pick(c, genConditions...)
	}
	return r
}

// genConditions are CEL conditions over the generated inputs: holding,
// failing, and failing by an evaluation error.
var genConditions = []string{
	`true`,
	`issuer == "corp"`,
	`"read" in scopes`,
	`has(claims.team)`,
	`claims.team == "ops"`, // an error when team is a list or absent
	`"ops" in claims.groups`,
	`has(claims.org) && claims.org.id == 7`,
	`claims.exists(k, k.startsWith("g"))`,
	`size(audiences) > 1 || client.startsWith("svc")`,
}

func genInput(c chooser) mapping.Input {
	in := mapping.Input{
		Issuer:    pick(c, "", "corp", "partner"),
		Audiences: genList(c, 2, "directus", "api", "web"),
		Scopes:    genList(c, 3, append(slices.Clone(genScopes), "extra")...),
	}
	if c.IntN(4) == 0 {
		in.Client = genString(c, 5)
	} else {
		in.Client = pick(c, "svc-a", "svc-b", "svc-*", "x-a", "", "svc-ab")
	}
	for _, k := range genClaimKeys {
		switch c.IntN(3) {
		case 0: // absent
		case 1:
			if in.Claims == nil {
				in.Claims = map[string][]string{}
			}
			in.Claims[k] = genList(c, 2, "ops", "dev", "", "o*", "eng")
		case 2:
			if in.Claims == nil {
				in.Claims = map[string][]string{}
			}
			in.Claims[k] = []string{}
		}
	}
	if c.IntN(2) == 0 {
		// The raw claims, as the bridge gives them, with nested members,
		// numbers and booleans.
		in.Raw = map[string]any{}
		for k, vs := range in.Claims {
			list := make([]any, len(vs))
			for i, v := range vs {
				list[i] = v
			}
			in.Raw[k] = list
			if len(vs) == 1 && c.IntN(2) == 0 {
				in.Raw[k] = vs[0]
			}
		}
		if c.IntN(2) == 0 {
			in.Raw["org"] = map[string]any{"team": pick(c, "ops", "dev"), "id": json.Number(pick(c, "7", "7.0", "8"))}
		}
		if c.IntN(3) == 0 {
			in.Raw["a/b"] = pick(c, "ops", "x")
		}
		if c.IntN(3) == 0 {
			in.Raw["groups"] = []any{json.Number("7"), true, nil, map[string]any{"x": "ops"}, "ops"}
		}
	}
	return in
}

// checkDecision asserts what must hold for any rules and any input.
func checkDecision(t *testing.T, rules mapping.Rules, in mapping.Input) {
	t.Helper()
	d := rules.Evaluate(in)
	describe := func() string { return fmt.Sprintf("rules: %+v\ninput: %+v\ndecision: %+v", rules, in, d) }
	fast := d
	fast.Reasons = nil
	explained := rules.Explain(in)
	checkTrace(t, rules, explained, describe)
	explained.Trace = nil
	if diff := cmp.Diff(d, explained); diff != "" {
		t.Fatalf("Explain differs from Evaluate but for its Trace (-Evaluate +Explain):\n%s\n%s", diff, describe())
	}
	if diff := cmp.Diff(fast, rules.Decide(in)); diff != "" {
		t.Fatalf("Decide differs from Evaluate without Reasons (-Evaluate +Decide):\n%s\n%s", diff, describe())
	}

	if d.Role != "" && !slices.ContainsFunc(rules, func(r mapping.Rule) bool { return r.Role == d.Role }) {
		t.Fatalf("Role %q is not one of the configured roles\n%s", d.Role, describe())
	}
	if d.Deny && (d.Role != "" || len(d.Policies) > 0) {
		t.Fatalf("a denial grants Role %q, Policies %q\n%s", d.Role, d.Policies, describe())
	}
	if !d.Matched {
		if d.Index != -1 || !d.Deny || d.Rule != "" || len(d.Counted) > 0 {
			t.Fatalf("no match must be Index -1, Deny, no rule and nothing counted\n%s", describe())
		}
		if len(d.Reasons) != len(rules) {
			t.Fatalf("no match: got %d reasons, want one per rule (%d)\n%s", len(d.Reasons), len(rules), describe())
		}
		return
	}
	if d.Index < 0 || d.Index >= len(rules) {
		t.Fatalf("Matched with Index %d out of range [0, %d)\n%s", d.Index, len(rules), describe())
	}
	r := rules[d.Index]
	if d.Deny != r.Deny {
		t.Fatalf("Deny = %v, rule %d has Deny %v\n%s", d.Deny, d.Index, r.Deny, describe())
	}
	if !d.Deny && (d.Role != r.Role || !slices.Equal(d.Policies, r.Policies)) {
		t.Fatalf("grant (%q, %q) is not rule %d's (%q, %q)\n%s", d.Role, d.Policies, d.Index, r.Role, r.Policies, describe())
	}
	if len(d.Reasons) != d.Index {
		t.Fatalf("got %d reasons, want one per rule before the match (%d)\n%s", len(d.Reasons), d.Index, describe())
	}
	if !slices.IsSorted(d.Counted) || len(slices.Compact(slices.Clone(d.Counted))) != len(d.Counted) {
		t.Fatalf("Counted %q is not sorted and unique\n%s", d.Counted, describe())
	}
	for _, s := range d.Counted {
		if !slices.Contains(in.Scopes, s) {
			t.Fatalf("Counted scope %q is not in the input\n%s", s, describe())
		}
		if !slices.Contains(r.AllScopes, s) && !slices.Contains(r.AnyScopes, s) {
			t.Fatalf("Counted scope %q is not named by rule %d\n%s", s, d.Index, describe())
		}
	}
	alone := mapping.Rules{r}.Evaluate(in)
	if !alone.Matched || alone.Index != 0 {
		t.Fatalf("rule %d does not match on its own: %+v\n%s", d.Index, alone, describe())
	}
	if diff := cmp.Diff(d, rules.Evaluate(in)); diff != "" {
		t.Fatalf("Evaluate is not deterministic (-first +second):\n%s\n%s", diff, describe())
	}
}

// checkTrace asserts that Trace agrees with the decision: one entry per
// rule looked at, every check of the match held, a skipped rule's first
// failing check is its reason.
func checkTrace(t *testing.T, rules mapping.Rules, d mapping.Decision, describe func() string) {
	t.Helper()
	looked := len(rules)
	if d.Matched {
		looked = d.Index + 1
	}
	if len(d.Trace) != looked {
		t.Fatalf("trace has %d rules, want %d\n%s", len(d.Trace), looked, describe())
	}
	skipped := 0
	for i, rt := range d.Trace {
		if rt.Index != i {
			t.Fatalf("trace %d is of rule index %d\n%s", i, rt.Index, describe())
		}
		failed := slices.IndexFunc(rt.Checks, func(c mapping.Check) bool { return !c.Held })
		if d.Matched && i == d.Index {
			if failed >= 0 {
				t.Fatalf("the matching rule's check %+v failed\n%s", rt.Checks[failed], describe())
			}
			continue
		}
		if failed < 0 {
			t.Fatalf("skipped %s has no failing check\n%s", rt.Rule, describe())
		}
		if want := rt.Rule + ": " + rt.Checks[failed].Detail; d.Reasons[skipped] != want {
			t.Fatalf("reason %q, trace says %q\n%s", d.Reasons[skipped], want, describe())
		}
		skipped++
	}
}

// TestEvaluateProperties runs the fuzz properties over a fixed random sample
// so that plain `go test` checks them too.
func TestEvaluateProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	matched := 0
	const n = 20000
	for range n {
		rules := make(mapping.Rules, r.IntN(5))
		for i := range rules {
			rules[i] = genRule(r)
		}
		in := genInput(r)
		checkDecision(t, rules, in)
		if rules.Evaluate(in).Matched {
			matched++
		}
	}
	if matched < n/20 {
		t.Errorf("only %d of %d random cases matched; the generator is too weak to test anything", matched, n)
	}
}

func FuzzRules(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte("\x03\x01\x02\x02\x01\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c"))
	f.Add([]byte("rules and an input from a few bytes of noise, long enough for four rules"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &byteSource{b: data}
		rules := make(mapping.Rules, src.IntN(6))
		for i := range rules {
			rules[i] = genRule(src)
		}
		in := genInput(src)
		checkDecision(t, rules, in)
		_ = rules.Validate() // must not panic either
	})
}

func FuzzGlob(f *testing.F) {
	for _, c := range [][2]string{
		{"", ""},
		{"*", ""},
		{"svc-*", "svc-billing"},
		{"*a*b*", "xaybz"},
		{"a?c", "a😀c"},
		{`a\*b`, "a*b"},
		{`a\`, `a\`},
		{`\\`, `\`},
		{"spiffe://example.org/*", "spiffe://example.org/ns/prod"},
		{"*?*?", "ab"},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		// The reference is quadratic; long inputs add time, not coverage.
		if utf8.RuneCountInString(pattern) > 64 || utf8.RuneCountInString(s) > 64 {
			t.Skip()
		}
		if got, want := mapping.Glob(pattern, s), refGlob(pattern, s); got != want {
			t.Fatalf("Glob(%q, %q) = %v, reference says %v", pattern, s, got, want)
		}
	})
}

// FuzzPath: any text is a claim path or a load error, never a panic; a
// path's canonical key names the same members.
func FuzzPath(f *testing.F) {
	for _, s := range []string{"team", "/realm_access/roles", "/kubernetes.io/serviceaccount/name", "/a~1b/~0c",
		"https://example.com/tenant", "/", "//", "/a~", "/a~2", "/groups/0", "/groups/01", "~1"} {
		f.Add(s)
	}
	claims := map[string]any{
		"realm_access": map[string]any{"roles": []any{"a", "b"}},
		"groups":       []any{"x", map[string]any{"y": "z"}},
		"a/b":          map[string]any{"~c": "v"},
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := mapping.ParsePath(s)
		if err != nil {
			return
		}
		q, err := mapping.ParsePath(p.Key())
		if err != nil {
			t.Fatalf("key %q of %q does not parse: %v", p.Key(), s, err)
		}
		if !slices.Equal(p.Tokens(), q.Tokens()) || p.Root() != q.Root() || q.Key() != p.Key() {
			t.Fatalf("%q and its key %q differ: %q %q", s, p.Key(), p.Tokens(), q.Tokens())
		}
		v1, ok1 := p.Lookup(claims)
		v2, ok2 := q.Lookup(claims)
		if ok1 != ok2 || !cmp.Equal(v1, v2) {
			t.Fatalf("%q and %q look up differently", s, p.Key())
		}
	})
}

// FuzzCondition: any text is a condition or a load error, never a panic;
// a condition that compiles evaluates within the cost limit, whatever it
// does over a long claim list.
func FuzzCondition(f *testing.F) {
	for _, s := range append(slices.Clone(genConditions),
		`claims.groups.all(a, claims.groups.all(b, a != b || true))`,
		`claims.groups.map(a, claims.groups.map(b, a + b)).size() > 0`,
		`claims.groups.exists(a, claims.groups.exists(b, claims.groups.exists(c, a + b + c == "")))`,
		`"x".matches("(a+)+$")`,
		`size(claims.groups.filter(g, g.matches("^g1.*"))) > 2`,
		`claims.x.y[0] == 1 ? true : false`,
		`1 +`, `claims[`, `[1,2,3].all(x, x > 0)`, `dyn(claims).foo`, ``,
	) {
		f.Add(s)
	}
	groups := make([]any, 500)
	for i := range groups {
		groups[i] = fmt.Sprint("g", i)
	}
	in := mapping.Input{Issuer: "corp", Client: "svc", Scopes: []string{"read"}, Audiences: []string{"directus"},
		Raw: map[string]any{"groups": groups, "org": map[string]any{"id": json.Number("7")}}}
	f.Fuzz(func(t *testing.T, expr string) {
		if mapping.CompileCondition(expr) != nil {
			return
		}
		rules := mapping.Rules{{Condition: expr, Role: "r"}}
		start := time.Now()
		d := rules.Evaluate(in)
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("%q took %v", expr, took)
		}
		if d.Matched != rules.Decide(in).Matched {
			t.Fatalf("%q: Evaluate and Decide disagree", expr)
		}
	})
}
