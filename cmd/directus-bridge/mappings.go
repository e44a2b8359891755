package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

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
		fmt.Fprintln(stdout, "usage: directus-bridge mappings explain|check [flags]; -h after either lists its flags")
		return 0
	}
	if len(args) == 0 || (args[0] != "explain" && args[0] != "check") {
		fmt.Fprintln(stderr, "usage: directus-bridge mappings explain|check [flags]")
		return 2
	}
	fs := flag.NewFlagSet("mappings "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	issuer := fs.String("issuer", "", "issuer name (explain)")
	client := fs.String("client", "", "client id (explain)")
	scopes := fs.String("scopes", "", "space-separated scopes (explain)")
	audience := fs.String("audience", "", "token audience (explain)")
	claims := claimFlags{}
	fs.Var(claims, "claim", "other claim as name=value, repeatable (explain)")
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	cfg, ok := loadOrReport(*path, stderr)
	if !ok {
		return 1
	}
	dc, err := directus.New(cfg.Directus.URL, os.Getenv(cfg.Directus.TokenEnv), directus.Options{Timeout: cfg.Directus.Timeout.D()})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, warnings, err := bridge.LoadMapper(ctx, dc, cfg.Rules)
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if err != nil {
		fmt.Fprintf(stderr, "rules refused:\n%v\n", err)
		return 1
	}
	if args[0] == "check" {
		fmt.Fprintf(stdout, "%d rules ok against %s\n", len(cfg.Rules), cfg.Directus.URL)
		return 0
	}
	in := mapping.Input{Issuer: *issuer, Client: *client, Scopes: strings.Fields(*scopes), Claims: claims}
	if *audience != "" {
		in.Audiences = []string{*audience}
	}
	explain(stdout, m, in)
	return 0
}

// explain prints the decision for in: the rule that matched (or why none
// did), the role and policies by name and id, and the scopes that counted.
func explain(w io.Writer, m *bridge.Mapper, in mapping.Input) {
	d := m.Evaluate(in)
	scopes := append([]string(nil), in.Scopes...)
	sort.Strings(scopes)
	fmt.Fprintf(w, "input: issuer=%q client=%q scopes=%q\n", in.Issuer, in.Client, strings.Join(scopes, " "))
	for _, r := range d.Reasons {
		fmt.Fprintf(w, "  skipped %s\n", r)
	}
	switch {
	case !d.Matched:
		fmt.Fprintln(w, "decision: DENY (no rule matched; deny by default)")
		return
	case d.Deny:
		fmt.Fprintf(w, "decision: DENY by %s\n", d.Rule)
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
}
