package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
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

// claimFlags collects repeated -claim k=v flags.
type claimFlags map[string][]string

func (c claimFlags) String() string { return "" }
func (c claimFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want name=value, got %q", v)
	}
	c[k] = append(c[k], val)
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
	claims := claimFlags{}
	fs.Var(claims, "claim", "another claim as `name=value`, repeatable (repeat a name for a list claim)")
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
	in := mapping.Input{Issuer: *issuer, Client: *client, Scopes: strings.Fields(*scopes), Claims: claims}
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
	claims := maps.Clone(in.Claims)
	if claims == nil {
		claims = map[string][]string{}
	}
	set := func(k, v string) {
		if _, given := claims[k]; !given && v != "" {
			claims[k] = []string{v}
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
				set(k, fmt.Sprint(is.RequiredClaims[k]))
			}
		}
	}
	set(clientClaim, in.Client)
	if len(in.Audiences) == 1 {
		set("aud", in.Audiences[0])
	}
	in.Claims = claims
	return in
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
			want := fmt.Sprint(is.RequiredClaims[k])
			if got, given := in.Claims[k]; given && !slices.Contains(got, want) {
				refuse("claim %q is %q, but issuer %q requires %q: the bridge refuses such a token before any rule",
					k, strings.Join(got, " "), is.Name, want)
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
		for k := range r.Claims {
			namedClaims[k] = true
		}
	}
	seen := map[string]bool{}
	for _, s := range in.Scopes {
		if !namedScopes[s] && !seen[s] {
			warn("scope %q is named by no rule: it cannot change the decision", s)
		}
		seen[s] = true
	}
	for _, k := range slices.Sorted(maps.Keys(in.Claims)) {
		if namedClaims[k] {
			continue
		}
		if is != nil {
			if _, required := is.RequiredClaims[k]; required {
				continue // checked before any rule (above)
			}
		}
		hint := ""
		switch {
		case slices.Contains(scopeClaims, k):
			hint = "; scopes are given with -scopes"
		case k == clientClaim:
			hint = "; the client id is given with -client"
		}
		warn("claim %q is named by no rule: it cannot change the decision%s", k, hint)
	}
	return out, refusal
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

// explainAs is explain printing in and deciding for eval (in as the
// exchange sees it, see asToken). A refusal (the bridge refuses such a
// token before any rule) makes the decision DENY, whatever the rules say.
func explainAs(w io.Writer, m *bridge.Mapper, in, eval mapping.Input, refusal string, warnings ...string) int {
	d := m.Evaluate(eval)
	scopes := append([]string(nil), in.Scopes...)
	sort.Strings(scopes)
	fmt.Fprintf(w, "input: issuer=%q client=%q scopes=%q", in.Issuer, in.Client, strings.Join(scopes, " "))
	if len(in.Audiences) > 0 {
		fmt.Fprintf(w, " audience=%q", strings.Join(in.Audiences, " "))
	}
	if len(in.Claims) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(in.Claims)) {
			for _, v := range in.Claims[k] {
				kv = append(kv, k+"="+v)
			}
		}
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
	for _, r := range reasons {
		fmt.Fprintf(w, "  skipped %s\n", r)
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
