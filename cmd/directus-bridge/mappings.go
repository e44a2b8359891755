package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// Exit codes of mappings explain and mappings check, for scripts.
const (
	exitAllow      = 0 // explain: ALLOW; check: the rules are ok
	exitDeny       = 1 // explain: DENY; check: Directus refuses the rules
	exitUsage      = 2
	exitNoDecision = 3 // invalid configuration, Directus unreachable (or refusing the rules, explain)
)

const explainUsage = `usage: directus-bridge mappings explain -issuer NAME [-client ID] [-scopes "a b"]
         [-audience AUD] [-claim name=value]... [-offline] [-config FILE]

Prints which rule the bridge applies to a token from the issuer with these
claims, and why: each rule skipped before it with the reason, then the
decision. Online (the default) the rules are first checked against Directus
as when the bridge starts, and the role and policies are shown with their
ids: this needs Directus and its token (directus.token_env). With -offline
nothing is asked of Directus and its token need not be set: the role and
policy names are shown as written in the rules, unchecked, and only the
issuers and rules of the file are validated.

Lines starting "warning:" point out input that cannot match: an issuer that
is not configured, an audience the issuer does not accept, a scope or claim
that no rule names. They do not change the decision.

flags:
`

const explainExitCodes = `
exit codes:
  0  ALLOW: a rule grants a role
  1  DENY: a deny rule matched, no rule matched, the matching rule is
     blocked (its role or a policy has admin access without allow_admin),
     or the bridge refuses such a token before any rule (an issuer that is
     not configured, an audience it does not accept, no -client)
  2  usage error: a flag is missing or malformed
  3  no decision: the configuration is invalid, or Directus is unreachable
     or refuses the token or the rules (a role or policy does not exist)
`

const checkUsage = `usage: directus-bridge mappings check [-config FILE]

Checks the rules against Directus as the bridge does when it starts: every
role and policy exists (by name or id) and its name is not ambiguous, and a
role or policy with admin access is handed out only by a rule with
allow_admin: true. A role or policy with app access gets a warning: on
Directus 12 its machine users take licensed seats.

flags:
`

const checkExitCodes = `
exit codes:
  0  the rules are ok (warnings may be printed)
  1  Directus refuses the rules: every problem is listed
  2  usage error
  3  no check: the configuration is invalid, or Directus is unreachable or
     refuses the token
`

// claimFlags collects repeated -claim name=value flags, in order. A value
// that is valid JSON is that JSON value (a number, true, a list, an object,
// "a quoted string"); any other value is a string. A name starting with "/"
// is a JSON Pointer: the value is set at that place in nested claims.
type claimFlags struct {
	names  []string
	values map[string][]any
}

func (c *claimFlags) String() string { return "" }
func (c *claimFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want name=value, got %q", v)
	}
	p, err := mapping.ParsePath(k)
	if err != nil {
		return err
	}
	if c.values == nil {
		c.values = map[string][]any{}
	}
	key := p.Key()
	if _, seen := c.values[key]; !seen {
		c.names = append(c.names, k)
	}
	c.values[key] = append(c.values[key], flagValue(val))
	return nil
}

// flagValue reads a -claim value: JSON when it is valid JSON (numbers as
// json.Number, as in a token), else the string as given.
func flagValue(s string) any {
	if !json.Valid([]byte(s)) {
		return s
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return s
	}
	return v
}

// raw builds the claims the flags give: a name given once has its value, a
// name repeated the list of its values. A value set inside another (a
// pointer into a claim given as a string, say) is an error.
func (c *claimFlags) raw() (map[string]any, error) {
	if len(c.names) == 0 {
		return nil, nil
	}
	out := map[string]any{}
	for _, name := range c.names {
		p := mapping.MustPath(name)
		vals := c.values[p.Key()]
		var v any = vals[0]
		if len(vals) > 1 {
			v = vals
		}
		if err := setClaim(out, p, v, true); err != nil {
			return nil, fmt.Errorf("-claim %s: %w", name, err)
		}
	}
	return out, nil
}

// setClaim sets the claim at p in claims, making the objects on the way.
// Without replace, a claim already there is kept.
func setClaim(claims map[string]any, p mapping.Path, v any, replace bool) error {
	tokens := p.Tokens()
	m := claims
	for i, t := range tokens[:len(tokens)-1] {
		next, ok := m[t]
		if !ok {
			n := map[string]any{}
			m[t], m = n, n
			continue
		}
		if m, ok = next.(map[string]any); !ok {
			return fmt.Errorf("/%s is not an object", strings.Join(tokens[:i+1], "/"))
		}
	}
	last := tokens[len(tokens)-1]
	if _, there := m[last]; there && !replace {
		return nil
	}
	if _, isObj := m[last].(map[string]any); isObj && replace {
		return fmt.Errorf("%s is given as a whole and inside", p)
	}
	m[last] = v
	return nil
}

func mappings(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprintln(stdout, "usage: directus-bridge mappings explain|check [flags]; -h after either lists its flags and exit codes")
		return 0
	}
	if len(args) > 0 {
		switch args[0] {
		case "explain":
			return mappingsExplain(args[1:], stdout, stderr)
		case "check":
			return mappingsCheck(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintln(stderr, "usage: directus-bridge mappings explain|check [flags]")
	return exitUsage
}

// newFlagSet is a subcommand's flag set whose -h text ends with its exit
// codes.
func newFlagSet(name, usage, exitCodes string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), exitCodes)
	}
	return fs
}

// usageError reports a usage problem on stderr.
func usageError(stderr io.Writer, cmd, format string, a ...any) int {
	fmt.Fprintf(stderr, "%s: %s (-h for help)\n", cmd, fmt.Sprintf(format, a...))
	return exitUsage
}

func mappingsCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("mappings check", checkUsage, checkExitCodes, stderr)
	path := configFlag(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "mappings check", "unexpected argument %q", fs.Arg(0))
	}
	cfg, ok := loadOrReport(*path, stderr, "admin.token_env")
	if !ok {
		return exitNoDecision
	}
	m, warnings, err := checkAgainstDirectus(cfg)
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	switch {
	case errors.Is(err, errNoDirectus):
		fmt.Fprintln(stderr, err)
		return exitNoDecision
	case err != nil || m == nil:
		fmt.Fprintf(stderr, "rules refused:\n%v\n", err)
		return exitDeny
	}
	fmt.Fprintf(stdout, "%d rules ok against %s\n", len(cfg.Rules), cfg.Directus.URL)
	return exitAllow
}

// errNoDirectus marks a failure to read Directus's roles and policies: the
// rules were not checked.
var errNoDirectus = errors.New("could not be read")

// checkAgainstDirectus is LoadMapper with the configured Directus. An
// error that is errNoDirectus means Directus could not be read; any other
// means it refuses the rules, and when that is a *bridge.AdminAccessError
// the Mapper is usable, with the blocked rules denying.
func checkAgainstDirectus(cfg *Config) (*bridge.Mapper, []string, error) {
	dc, err := directus.New(cfg.Directus.URL, os.Getenv(cfg.Directus.TokenEnv),
		directus.Options{Timeout: cfg.Directus.Timeout.D(), Retries: cfg.Directus.Retries, UserAgent: "directus-bridge/" + version})
	if err != nil {
		return nil, nil, fmt.Errorf("Directus at %s %w: %w", cfg.Directus.URL, errNoDirectus, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, warnings, err := bridge.LoadMapper(ctx, dc, cfg.Rules)
	if _, ok := errors.AsType[*directus.APIError](err); ok {
		return nil, warnings, fmt.Errorf("Directus at %s %w: %w", cfg.Directus.URL, errNoDirectus, err)
	}
	return m, warnings, err
}

func mappingsExplain(args []string, stdout, stderr io.Writer) int {
	const cmd = "mappings explain"
	fs := newFlagSet(cmd, explainUsage, explainExitCodes, stderr)
	path := configFlag(fs)
	issuer := fs.String("issuer", "", "the issuer's `NAME`, as in issuers[].name (required)")
	client := fs.String("client", "", "the client `ID` (the issuer's client_claim, default sub)")
	scopes := fs.String("scopes", "", "the token's scopes, space-separated, as in `\"a b\"`")
	audience := fs.String("audience", "", "the token's audience `AUD` (aud)")
	claims := &claimFlags{}
	fs.Var(claims, "claim", "another claim as `name=value`, repeatable (repeat a name for a list claim); "+
		"a value that is JSON is read as JSON (123, true, [\"a\"], {\"roles\": [\"admin\"]}, \"123\" for a string); "+
		"a name starting with / is a JSON Pointer into nested claims (/realm_access/roles=admin)")
	offline := fs.Bool("offline", false, "ask nothing of Directus, need no Directus token; role and policy names shown as written, unchecked")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, cmd, "unexpected argument %q", fs.Arg(0))
	}
	if *issuer == "" {
		return usageError(stderr, cmd, "-issuer is required (the issuer's name in the configuration): every token has one")
	}
	raw, err := claims.raw()
	if err != nil {
		return usageError(stderr, cmd, "%v", err)
	}
	in := mapping.Input{Issuer: *issuer, Client: *client, Scopes: strings.Fields(*scopes), Raw: raw}
	if *audience != "" {
		in.Audiences = []string{*audience}
	}
	var m *bridge.Mapper
	var warnings []string
	var issuers []bridge.IssuerConfig
	var refusal string // why the bridge refuses such a token before any rule
	if *offline {
		cfg, ok := loadForExplain(*path, stderr)
		if !ok {
			return exitNoDecision
		}
		var err error
		if m, err = bridge.NewOfflineMapper(cfg.Rules); err != nil {
			fmt.Fprintf(stderr, "%s: invalid:\n%v\n", *path, err) // validated above; kept for safety
			return exitNoDecision
		}
		warnings, refusal = inputWarnings(cfg.Issuers, cfg.Rules, in)
		issuers = cfg.Issuers
	} else {
		cfg, ok := loadOrReport(*path, stderr, "admin.token_env")
		if !ok {
			return exitNoDecision
		}
		var err error
		m, warnings, err = checkAgainstDirectus(cfg)
		var adminErr *bridge.AdminAccessError
		switch {
		case errors.Is(err, errNoDirectus):
			fmt.Fprintf(stderr, "%v\nno decision; to explain without Directus, add -offline (names are then not checked)\n", err)
			return exitNoDecision
		case errors.As(err, &adminErr) && m != nil:
			for _, i := range slices.Sorted(maps.Keys(adminErr.Rules)) {
				warnings = append(warnings, adminErr.Rules[i]+"; the rule denies")
			}
		case err != nil:
			fmt.Fprintf(stderr, "rules refused by Directus:\n%v\nno decision; to explain without checking names against Directus, add -offline\n", err)
			return exitNoDecision
		}
		var more []string
		more, refusal = inputWarnings(cfg.Issuers, cfg.Rules, in)
		warnings = append(warnings, more...)
		issuers = cfg.Issuers
	}
	return explainAs(stdout, m, in, asToken(issuers, in), refusal, warnings...)
}

// asToken is in as the exchange sees a token with that issuer, client and
// audience: the rules see every claim of the token, so a rule naming the
// client claim (sub by default), aud or iss matches them as they are in
// the token. A claim given with -claim wins.
func asToken(issuers []bridge.IssuerConfig, in mapping.Input) mapping.Input {
	claims := deepCopy(in.Raw)
	for k, vs := range in.Claims {
		if _, given := claims[k]; !given {
			claims[k] = stringsToAny(vs)
		}
	}
	set := func(k string, v any) {
		if s, ok := v.(string); ok && s == "" {
			return
		}
		if p, err := mapping.ParsePath(k); err == nil {
			_ = setClaim(claims, p, v, false) // where -claim gave another shape, it is kept
		}
	}
	clientClaim := "sub"
	for _, is := range issuers {
		if is.Name == in.Issuer {
			if is.ClientClaim != "" {
				clientClaim = is.ClientClaim
			}
			set("iss", is.Issuer)
			// A token the bridge accepts carries the required claims.
			for _, k := range slices.Sorted(maps.Keys(is.RequiredClaims)) {
				set(k, yamlToJSON(is.RequiredClaims[k]))
			}
		}
	}
	set(clientClaim, in.Client)
	if len(in.Audiences) == 1 {
		set("aud", in.Audiences[0])
	}
	in.Raw = claims
	return in
}

// deepCopy copies the objects of nested claims (setClaim writes into them).
func deepCopy(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if o, ok := v.(map[string]any); ok {
			v = deepCopy(o)
		}
		out[k] = v
	}
	return out
}

func stringsToAny(vs []string) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

// yamlToJSON turns a configured value (YAML's types) into the value a
// token would carry: numbers as json.Number.
func yamlToJSON(v any) any {
	switch n := v.(type) {
	case int:
		return json.Number(strconv.Itoa(n))
	case int64:
		return json.Number(strconv.FormatInt(n, 10))
	case uint64:
		return json.Number(strconv.FormatUint(n, 10))
	case float64:
		s, _ := mapping.Scalar(n)
		return json.Number(s)
	}
	return v
}

// loadForExplain reads the configuration for an offline explanation and
// reports the problems of what it reads, the issuers and the rules (and of
// the file as a whole, such as its syntax), as config check reports them,
// and nothing else: no secret need be set, no state path given.
func loadForExplain(path string, stderr io.Writer) (*Config, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "%s: cannot be read: %v\n", path, err)
		return nil, false
	}
	c, ps := checkConfig(b)
	ps = explainProblems(ps)
	if c == nil || len(ps) > 0 {
		report(stderr, path, ps)
		return nil, false
	}
	return c, true
}

// explainProblems keeps the problems an offline explanation depends on.
func explainProblems(ps []Problem) []Problem {
	return slices.DeleteFunc(ps, func(p Problem) bool {
		return p.Path != "" && !under(p.Path, "issuers") && !under(p.Path, "rules")
	})
}

// inputWarnings points out what in has that cannot match as the user
// likely meant: an issuer that is not configured (its tokens are refused
// before any rule), an audience its issuer does not accept (likewise), no
// client id (likewise), and scopes and claims that no rule names (they
// cannot change the decision). refusal is the first reason the bridge
// refuses such a token before any rule, "" when there is none.
func inputWarnings(issuers []bridge.IssuerConfig, rules mapping.Rules, in mapping.Input) (out []string, refusal string) {
	warn := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	refuse := func(format string, a ...any) {
		warn(format, a...)
		if refusal == "" {
			refusal = out[len(out)-1]
		}
	}
	var is *bridge.IssuerConfig
	var names []string
	for i := range issuers {
		names = append(names, issuers[i].Name)
		if issuers[i].Name == in.Issuer {
			is = &issuers[i]
		}
	}
	sort.Strings(names)
	scopeClaims, clientClaim := []string{"scope", "scp"}, "sub" // the issuer defaults
	switch {
	case is == nil:
		byURL := slices.IndexFunc(issuers, func(c bridge.IssuerConfig) bool { return c.Issuer == in.Issuer })
		if byURL >= 0 {
			refuse("issuer %q is not an issuer name but the issuer (iss) of %q: -issuer and rules use the name", in.Issuer, issuers[byURL].Name)
		} else {
			refuse("issuer %q is not configured (configured: %s): the bridge refuses its tokens before any rule", in.Issuer, strings.Join(names, ", "))
		}
	default:
		if len(is.ScopeClaims) > 0 {
			scopeClaims = is.ScopeClaims
		}
		if is.ClientClaim != "" {
			clientClaim = is.ClientClaim
		}
		for _, k := range slices.Sorted(maps.Keys(is.RequiredClaims)) {
			want, _ := mapping.Scalar(yamlToJSON(is.RequiredClaims[k]))
			if want == "" {
				want = fmt.Sprint(is.RequiredClaims[k])
			}
			p, err := mapping.ParsePath(k)
			if err != nil {
				continue
			}
			if got, given := p.Lookup(in.Raw); given && !slices.Contains(scalars(got), want) {
				refuse("claim %q is %s, but issuer %q requires %q: the bridge refuses such a token before any rule",
					k, shownClaim(got), is.Name, want)
			}
		}
		if len(in.Audiences) > 0 && !slices.ContainsFunc(in.Audiences, func(a string) bool { return slices.Contains(is.Audiences, a) }) {
			refuse("audience %q is not accepted by issuer %q (accepts: %s): the bridge refuses such a token before any rule",
				strings.Join(in.Audiences, " "), is.Name, strings.Join(is.Audiences, ", "))
		}
	}
	if in.Client == "" {
		refuse("no -client: the bridge refuses a token without a client id (claim %s)", clientClaim)
	}
	namedScopes, namedClaims := map[string]bool{}, map[string]bool{}
	for _, r := range rules {
		for _, s := range append(slices.Clone(r.AllScopes), r.AnyScopes...) {
			namedScopes[s] = true
		}
	}
	roots, anyClaim := rules.ClaimRoots()
	for _, k := range roots {
		namedClaims[k] = true
	}
	seen := map[string]bool{}
	for _, s := range in.Scopes {
		if !namedScopes[s] && !seen[s] {
			warn("scope %q is named by no rule: it cannot change the decision", s)
		}
		seen[s] = true
	}
	for _, k := range slices.Sorted(maps.Keys(in.Raw)) {
		if namedClaims[k] || anyClaim {
			continue
		}
		if is != nil && slices.ContainsFunc(slices.Collect(maps.Keys(is.RequiredClaims)), func(name string) bool {
			p, err := mapping.ParsePath(name)
			return err == nil && p.Root() == k
		}) {
			continue // checked before any rule (above)
		}
		hint := ""
		switch {
		case slices.ContainsFunc(scopeClaims, func(name string) bool { return rootOf(name) == k }):
			hint = "; scopes are given with -scopes"
		case rootOf(clientClaim) == k:
			hint = "; the client id is given with -client"
		}
		warn("claim %q is named by no rule: it cannot change the decision%s", k, hint)
	}
	return out, refusal
}

// shownCondition is a rule's condition on one line, capped.
func shownCondition(expr string) string {
	s := strings.Join(strings.Fields(expr), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return s
}

// rootOf is the top-level claim a claim name or pointer starts at.
func rootOf(name string) string {
	p, err := mapping.ParsePath(name)
	if err != nil {
		return name
	}
	return p.Root()
}

// scalars are the values of a claim compared with a pattern: the claim's,
// or each of a list's.
func scalars(v any) []string {
	var out []string
	if list, ok := v.([]any); ok {
		for _, e := range list {
			if s, ok := mapping.Scalar(e); ok {
				out = append(out, s)
			}
		}
		return out
	}
	if s, ok := mapping.Scalar(v); ok {
		out = append(out, s)
	}
	return out
}

// shownClaim renders a claim value as JSON for a message, capped.
func shownClaim(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return capped(strings.TrimSpace(b.String()))
}

// offlineNote says, in an offline explanation, what was not checked.
const offlineNote = "offline: role and policy names as written in the rules, not checked against Directus (that they exist, and have no admin access)"

// explain prints the decision for in and returns its exit code (exitAllow
// or exitDeny): the input, the warnings, the reason each rule before the
// match was skipped, the rule that matched (or none), the role and
// policies (by name and id, or by name only from an offline Mapper), and
// the scopes that counted.
func explain(w io.Writer, m *bridge.Mapper, in mapping.Input, warnings ...string) int {
	return explainAs(w, m, in, in, "", warnings...)
}

// shownClaims are in's claims for the input line: name=value, a list as
// one pair per element, and other values as JSON.
func shownClaims(in mapping.Input) []string {
	var kv []string
	if in.Raw == nil {
		for _, k := range slices.Sorted(maps.Keys(in.Claims)) {
			for _, v := range in.Claims[k] {
				kv = append(kv, k+"="+v)
			}
		}
		return kv
	}
	for _, k := range slices.Sorted(maps.Keys(in.Raw)) {
		vals := []any{in.Raw[k]}
		if list, ok := in.Raw[k].([]any); ok {
			vals = list
		}
		for _, v := range vals {
			if s, ok := v.(string); ok && !json.Valid([]byte(s)) {
				kv = append(kv, k+"="+s) // as -claim takes it
			} else {
				kv = append(kv, k+"="+shownClaim(v))
			}
		}
	}
	return kv
}

// explainAs is explain printing in and deciding for eval (in as the
// exchange sees it, see asToken). A refusal (the bridge refuses such a
// token before any rule) makes the decision DENY, whatever the rules say.
func explainAs(w io.Writer, m *bridge.Mapper, in, eval mapping.Input, refusal string, warnings ...string) int {
	d := m.Explain(eval)
	scopes := append([]string(nil), in.Scopes...)
	sort.Strings(scopes)
	fmt.Fprintf(w, "input: issuer=%q client=%q scopes=%q", in.Issuer, in.Client, strings.Join(scopes, " "))
	if len(in.Audiences) > 0 {
		fmt.Fprintf(w, " audience=%q", strings.Join(in.Audiences, " "))
	}
	if kv := shownClaims(in); len(kv) > 0 {
		fmt.Fprintf(w, " claims=%q", strings.Join(kv, " "))
	}
	fmt.Fprintln(w)
	if m.Offline() {
		fmt.Fprintln(w, offlineNote)
	}
	for _, s := range warnings {
		fmt.Fprintln(w, "warning:", s)
	}
	reasons, withheld := d.Reasons, ""
	if d.Blocked && len(reasons) > 0 {
		// Mapper.block appends why the matching rule's grant is withheld.
		reasons, withheld = reasons[:len(reasons)-1], strings.TrimPrefix(reasons[len(reasons)-1], d.Rule+": ")
	}
	skipped := 0
	for _, rt := range d.Trace {
		if d.Matched && rt.Index == d.Index {
			fmt.Fprintf(w, "  matched %s\n", rt.Rule)
		} else {
			if skipped < len(reasons) {
				fmt.Fprintf(w, "  skipped %s\n", reasons[skipped])
			}
			skipped++
		}
		if len(rt.Checks) == 0 {
			fmt.Fprintln(w, "    (no conditions)")
		}
		for _, c := range rt.Checks {
			state := "held  "
			if !c.Held {
				state = "failed"
			}
			name := c.Condition
			if name == "condition" {
				name = "condition " + shownCondition(m.Rules[rt.Index].Condition)
			}
			detail := c.Detail
			if c.Found != "" {
				detail += " (found " + c.Found + ")"
			}
			fmt.Fprintf(w, "    %s %s: %s\n", state, name, detail)
		}
	}
	switch {
	case refusal != "":
		fmt.Fprintf(w, "decision: DENY before any rule: %s\n", refusal)
		return exitDeny
	case !d.Matched:
		fmt.Fprintln(w, "decision: DENY (no rule matched; deny by default)")
		return exitDeny
	case d.Blocked:
		fmt.Fprintf(w, "decision: DENY by %s: its grant is withheld: %s\n", d.Rule, withheld)
	case d.Deny:
		fmt.Fprintf(w, "decision: DENY by %s\n", d.Rule)
	case m.Offline():
		fmt.Fprintf(w, "decision: ALLOW by %s\n", d.Rule)
		fmt.Fprintf(w, "  role: %s\n", d.Role)
		for _, p := range slices.Compact(slices.Sorted(slices.Values(d.Policies))) {
			fmt.Fprintf(w, "  policy: %s\n", p)
		}
	default:
		g := m.Resolve(d)
		fmt.Fprintf(w, "decision: ALLOW by %s\n", d.Rule)
		fmt.Fprintf(w, "  role: %s (%s)\n", m.RoleName(g.Role), g.Role)
		for _, p := range g.Policies {
			fmt.Fprintf(w, "  policy: %s (%s)\n", m.PolicyName(p), p)
		}
	}
	counted := strings.Join(d.Counted, " ")
	if counted == "" {
		counted = "(none)"
	}
	fmt.Fprintf(w, "  scopes that counted: %s\n", counted)
	if d.Deny {
		return exitDeny
	}
	return exitAllow
}
