package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/directus"
)

// setupNamespace is the UUIDv5 namespace of the bridge's own Directus user:
// its id is UUIDv5(setupNamespace, name). Machine users' ids are UUIDv5 in
// the NIL namespace (or the one configured in users.namespace), so the
// bridge's own user can never take a machine user's id.
var setupNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/directus-bridge/directus-bridge#setup"))

// setupTokenPrefix marks the bridge's own static token (opaque: not a JWT).
const setupTokenPrefix = "dbsvc_"

// bridgeTokenEnv is the configuration's default directus.token_env.
const bridgeTokenEnv = "DIRECTUS_BRIDGE_DIRECTUS_TOKEN"

// setupCmd prepares a Directus for the bridge: a policy with admin access
// and no app access, a role holding it, and a user of that role with a
// static token, each created only where missing. A second run finds them
// and changes nothing.
func setupCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("setup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseURL := fs.String("directus", "", "Directus base URL (required)")
	tokenEnv := fs.String("admin-token-env", "DIRECTUS_ADMIN_TOKEN", "env var holding an administrator's static token or access token")
	email := fs.String("admin-email", "", "log in with this email and a password instead of a token")
	passwordEnv := fs.String("admin-password-env", "DIRECTUS_ADMIN_PASSWORD", "env var holding the password, with -admin-email")
	name := fs.String("name", "directus-bridge", "name of the bridge's policy, role and user")
	tokenFile := fs.String("token-file", "", "write the bridge user's new static token to this file (0600; never overwritten unless -rotate-token)")
	rotate := fs.Bool("rotate-token", false, "give an existing bridge user a new token (the old one stops working at once)")
	dry := fs.Bool("dry-run", false, "print what would be done, change nothing")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: directus-bridge setup -directus URL [flags]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "setup: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("unexpected argument %q", fs.Arg(0))
	case *baseURL == "":
		return usageErr("-directus URL is required")
	case strings.TrimSpace(*name) == "":
		return usageErr("-name must not be empty")
	}
	var token, password string
	if *email != "" {
		if password = os.Getenv(*passwordEnv); password == "" {
			return usageErr("set %s to the password of %s", *passwordEnv, *email)
		}
	} else if token = os.Getenv(*tokenEnv); token == "" {
		return usageErr("set %s to an administrator's static token or access token, or use -admin-email", *tokenEnv)
	}
	anon, err := directus.New(*baseURL, "", directus.Options{})
	if err != nil {
		return usageErr("-directus: %v", err)
	}
	s := &setup{
		url: strings.TrimSuffix(*baseURL, "/"), name: *name, tokenFile: *tokenFile, rotate: *rotate, dry: *dry,
		stdout: stdout, stderr: stderr, credentials: "the token in " + *tokenEnv,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := anon.Ping(ctx); err != nil {
		return s.fail(err)
	}
	if *email != "" {
		s.credentials = "the email and password of " + *email + " (" + *passwordEnv + ")"
		if token, err = anon.Login(ctx, *email, password); err != nil {
			if directus.Code(err) == directus.CodeInvalidCredentials {
				fmt.Fprintf(stderr, "setup: Directus refused the email or password (401): check -admin-email %s and %s\n", *email, *passwordEnv)
				return 1
			}
			return s.fail(err)
		}
	}
	if s.dc, err = directus.New(*baseURL, token, directus.Options{}); err != nil {
		return usageErr("-directus: %v", err)
	}
	return s.run(ctx)
}

// setup is one run of the setup command.
type setup struct {
	dc          *directus.Client
	url, name   string
	tokenFile   string
	rotate, dry bool
	credentials string // what the admin credentials are, for messages
	stdout      io.Writer
	stderr      io.Writer
}

// fail writes one line that names what to fix and returns exit code 1.
func (s *setup) fail(err error) int {
	var e *directus.APIError
	errors.As(err, &e)
	switch {
	case e != nil && e.Status == 0 && e.Code == directus.CodeUnreachable:
		fmt.Fprintf(s.stderr, "setup: cannot reach Directus at %s: check -directus and that Directus is running (%v)\n", s.url, err)
	case e != nil && e.Status == http.StatusUnauthorized:
		fmt.Fprintf(s.stderr, "setup: Directus refused %s (401 %s): use a live administrator's token\n", s.credentials, e.Code)
	case e != nil && e.Code == "LIMIT_EXCEEDED":
		fmt.Fprintf(s.stderr, "setup: Directus has no free seat for the bridge's user (403 LIMIT_EXCEEDED): suspend or remove a user with app or admin access, or add seats to the license\n")
	case e != nil && e.Status == http.StatusForbidden:
		fmt.Fprintf(s.stderr, "setup: Directus refused %s (403 %s): they need admin access\n", s.credentials, e.Code)
	default:
		fmt.Fprintf(s.stderr, "setup: %v\n", err)
	}
	return 1
}

// say prints one step: done (or, in a dry run, what would be done).
func (s *setup) say(format string, a ...any) {
	if s.dry {
		fmt.Fprint(s.stdout, "would ")
	}
	fmt.Fprintf(s.stdout, format+"\n", a...)
}

// exists prints a step that finds its object in place.
func (s *setup) exists(format string, a ...any) {
	fmt.Fprintf(s.stdout, "exists "+format+"\n", a...)
}

func (s *setup) run(ctx context.Context) int {
	// Admin access first: nothing is read or written for a token that
	// cannot do the rest.
	acc, err := s.dc.MyAccess(ctx)
	if err != nil {
		if e := (*directus.APIError)(nil); errors.As(err, &e) && (e.Status == http.StatusNotFound || e.Code == "ROUTE_NOT_FOUND") {
			fmt.Fprintf(s.stderr, "setup: Directus at %s has no /policies/me/globals: Directus 11 or later is required\n", s.url)
			return 1
		}
		return s.fail(err)
	}
	if !acc.AdminAccess {
		fmt.Fprintf(s.stderr, "setup: %s belong to a user with no admin access: use an administrator's credentials (the bridge's user creates users, roles and policies)\n", s.credentials)
		return 1
	}
	major := 0
	if info, err := s.dc.ServerInfo(ctx); err == nil {
		fmt.Sscanf(info.Version, "%d", &major)
	}

	// Read everything before changing anything.
	policies, err := s.dc.PoliciesNamed(ctx, s.name)
	if err != nil {
		return s.fail(err)
	}
	roles, err := s.dc.RolesNamed(ctx, s.name)
	if err != nil {
		return s.fail(err)
	}
	if len(policies) > 1 || len(roles) > 1 {
		what, ids := "policies", make([]string, 0, len(policies))
		for _, p := range policies {
			ids = append(ids, p.ID)
		}
		if len(policies) <= 1 {
			what, ids = "roles", ids[:0]
			for _, r := range roles {
				ids = append(ids, r.ID)
			}
		}
		fmt.Fprintf(s.stderr, "setup: %d %s are named %q (%s): rename or delete all but one, or choose another -name; nothing was changed\n",
			len(ids), what, s.name, strings.Join(ids, ", "))
		return 1
	}
	userID := uuid.NewSHA1(setupNamespace, []byte(s.name)).String()
	user, err := s.dc.User(ctx, userID)
	exists := err == nil
	if err != nil && !errors.Is(err, directus.ErrNotFound) {
		return s.fail(err)
	}
	if exists {
		if what := notBridges(user); what != "" {
			fmt.Fprintf(s.stderr, "setup: the user with the bridge's id %s is not the bridge's: it has %s; nothing was changed: delete that user, or choose another -name\n", userID, what)
			return 1
		}
	}
	// Giving the policy admin access, or attaching it to the role, gives
	// admin access to whoever else holds them: refused.
	grantPolicy := len(policies) == 1 && !policies[0].AdminAccess
	grantRole := len(roles) == 1 && (len(policies) == 0 || grantPolicy || !contains(roles[0].Policies, policies[0].ID))
	if grantPolicy || grantRole {
		others, err := s.othersGranted(ctx, policies, roles, userID, grantPolicy)
		if err != nil {
			return s.fail(err)
		}
		if len(others) > 0 {
			fmt.Fprintf(s.stderr, "setup: giving the bridge admin access through the policy and role %q would give it to %s too; nothing was changed: detach them, or choose another -name\n",
				s.name, strings.Join(others, ", "))
			return 1
		}
	}
	bridgeRole := ""
	if len(roles) == 1 {
		bridgeRole = roles[0].ID
	}
	// A token is kept only when it already had admin access through the
	// bridge's role: one that gains it now may be anyone's (a user planted
	// at the bridge's id, a suspended user's leaked token).
	gains := exists && (user.Role != bridgeRole || user.Status != "active" || grantPolicy || grantRole)
	newToken := !exists || !user.HasToken || s.rotate || gains

	// The token file: refused before any change when it would be
	// overwritten without -rotate-token.
	var pending *tokenFile
	if newToken && s.tokenFile != "" {
		if _, err := os.Lstat(s.tokenFile); err == nil && !s.rotate {
			fmt.Fprintf(s.stderr, "setup: %s exists and is never overwritten: move it away, or give -rotate-token to replace it and the token; nothing was changed\n", s.tokenFile)
			return 1
		}
	}
	var token string
	if newToken && !s.dry {
		if token, err = newStaticToken(); err != nil {
			return s.fail(err)
		}
		if s.tokenFile != "" {
			if pending, err = prepareTokenFile(s.tokenFile, token); err != nil {
				fmt.Fprintf(s.stderr, "setup: token file: %v; nothing was changed\n", err)
				return 1
			}
			defer pending.discard()
		}
	}

	// Policy: admin access, no app access.
	var policy directus.Policy
	if len(policies) == 0 {
		if !s.dry {
			if policy, err = s.dc.CreatePolicy(ctx, directus.Policy{Name: s.name, AdminAccess: true}); err != nil {
				return s.fail(err)
			}
		}
		s.say("create policy %q (admin access, no app access)", s.name)
	} else {
		policy = policies[0]
		if !policy.AdminAccess || policy.AppAccess {
			if !s.dry {
				if _, err := s.dc.SetPolicyAccess(ctx, policy.ID, directus.AccessFlags{AdminAccess: true}); err != nil {
					return s.fail(err)
				}
			}
			s.say("fix policy %q: admin access on, app access off (was: %s)", s.name, flags(policy))
		} else {
			s.exists("policy %q (id %s, admin access, no app access)", s.name, policy.ID)
		}
	}

	// Role holding the policy.
	var role directus.Role
	if len(roles) == 0 {
		if !s.dry {
			if role, err = s.dc.CreateRole(ctx, directus.Role{Name: s.name, Policies: []string{policy.ID}}); err != nil {
				return s.fail(err)
			}
		}
		s.say("create role %q with policy %q", s.name, s.name)
	} else {
		role = roles[0]
		if policy.ID == "" || !contains(role.Policies, policy.ID) {
			if !s.dry {
				if _, err := s.dc.AttachRolePolicy(ctx, role.ID, policy.ID); err != nil {
					return s.fail(err)
				}
			}
			s.say("fix role %q: attach policy %q", s.name, s.name)
		} else {
			s.exists("role %q (id %s, with policy %q)", s.name, role.ID, s.name)
		}
	}

	// User of the role, active, with a static token.
	if !exists {
		if !s.dry {
			_, err := s.dc.CreateUser(ctx, directus.NewUser{ID: userID, Status: "active", Role: role.ID, FirstName: s.name, Token: token})
			if err != nil {
				return s.fail(err)
			}
		}
		s.say("create user %q (id %s, role %q, active, static token)", s.name, userID, s.name)
	} else {
		var ch directus.UserChange
		var fixes []string
		if user.Role != role.ID || role.ID == "" {
			ch.Role = directus.Ptr(role.ID)
			fixes = append(fixes, fmt.Sprintf("role %s -> %q", s.roleName(ctx, user.Role), s.name))
		}
		if user.Status != "active" {
			ch.Status = directus.Ptr("active")
			fixes = append(fixes, fmt.Sprintf("status %s -> active", user.Status))
		}
		if newToken {
			ch.Token = &token
		}
		if !s.dry && !ch.Empty() {
			if _, err := s.dc.UpdateUser(ctx, userID, ch); err != nil {
				return s.fail(err)
			}
		}
		if len(fixes) > 0 {
			s.say("fix user %q: %s", s.name, strings.Join(fixes, ", "))
		} else {
			s.exists("user %q (id %s, role %q, active)", s.name, userID, s.name)
		}
		switch {
		case !user.HasToken:
			s.say("set a token for user %q (it has none)", s.name)
		case s.rotate:
			s.say("rotate the token of user %q (the old one stops working at once)", s.name)
		case gains:
			s.say("give user %q a new token: it gains admin access, which its old token does not get (the old one stops working at once)", s.name)
		default:
			fmt.Fprintf(s.stdout, "token of user %q: unchanged; Directus conceals it and cannot show it again (for a new one: setup -rotate-token)\n", s.name)
		}
	}
	if major >= 12 {
		fmt.Fprintf(s.stdout, "note: on Directus 12 the bridge's user takes one seat (an active user with admin access; Core has 3)\n")
	}

	fmt.Fprintf(s.stdout, "\ndirectus:\n  url: %s\n  token_env: %s\n\n", s.url, bridgeTokenEnv)
	switch {
	case !newToken:
		if s.tokenFile == "" {
			break
		}
		if _, err := os.Lstat(s.tokenFile); err != nil {
			// E.g. the answer to the user's creation was lost: Directus
			// holds a token that is nowhere else.
			fmt.Fprintf(s.stderr, "setup: %s does not exist, and Directus conceals the user's token: give -rotate-token for a new one in it\n", s.tokenFile)
			return 1
		}
		fmt.Fprintf(s.stdout, "token unchanged: %s left as it is\n", s.tokenFile)
	case s.dry && s.tokenFile != "":
		s.say("write the new token to %s (0600)", s.tokenFile)
	case s.dry:
		s.say("print the new token once")
	case pending != nil:
		if err := pending.commit(s.rotate); err != nil {
			// Directus holds the token now and it is nowhere else.
			fmt.Fprintf(s.stderr, "setup: token file: %v; the token is set in Directus but lost: run setup -rotate-token\n", err)
			return 1
		}
		fmt.Fprintf(s.stdout, "token written to %s (0600); export %s=\"$(cat %s)\"\n", s.tokenFile, bridgeTokenEnv, s.tokenFile)
	default:
		fmt.Fprintf(s.stdout, "export %s=%s\n", bridgeTokenEnv, token)
		fmt.Fprintln(s.stderr, "setup: the token above is printed once and will not be shown again: Directus conceals it (use -token-file to keep it in a file)")
	}
	return 0
}

// notBridges says what the user at the bridge's id has that the bridge's
// user never has ("" when nothing): it is someone else's.
func notBridges(u directus.User) string {
	var has []string
	if u.Email != "" {
		has = append(has, "an email (it may log in with a password)")
	}
	if u.ExternalIdentifier != "" {
		has = append(has, "an external identifier (a machine user of the bridge, or an SSO login)")
	}
	if u.Provider != "" && u.Provider != "default" {
		has = append(has, fmt.Sprintf("the auth provider %q", u.Provider))
	}
	return strings.Join(has, " and ")
}

// othersGranted lists who, besides the bridge's user, would gain admin
// access: the users and roles holding the policy (when it gets admin
// access), and the users of the bridge's role and the roles below it.
func (s *setup) othersGranted(ctx context.Context, policies []directus.Policy, roles []directus.Role, userID string, grantPolicy bool) ([]string, error) {
	all, err := s.dc.Roles(ctx)
	if err != nil {
		return nil, err
	}
	roleName := func(id string) string {
		for _, r := range all {
			if r.ID == id {
				return fmt.Sprintf("role %q", r.Name)
			}
		}
		return "role " + id
	}
	bridgeRole := ""
	if len(roles) == 1 {
		bridgeRole = roles[0].ID
	}
	var others []string
	if grantPolicy {
		grants, err := s.dc.PolicyGrants(ctx, policies[0].ID)
		if err != nil {
			return nil, err
		}
		for _, g := range grants {
			switch {
			case g.User != "" && g.User != userID:
				others = append(others, "user "+g.User)
			case g.Role != "" && g.Role != bridgeRole:
				others = append(others, roleName(g.Role))
			}
		}
	}
	if bridgeRole != "" {
		users, err := s.dc.ListUsers(ctx, directus.UserFilter{Role: bridgeRole}, -1, 0)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			if u.ID != userID {
				others = append(others, "user "+u.ID)
			}
		}
		for _, r := range all {
			if r.Parent == bridgeRole {
				others = append(others, roleName(r.ID)+" (below the role)")
			}
		}
	}
	return others, nil
}

// roleName names a role id for a message: its name when it can be read.
func (s *setup) roleName(ctx context.Context, id string) string {
	if id == "" {
		return "(none)"
	}
	if roles, err := s.dc.Roles(ctx); err == nil {
		for _, r := range roles {
			if r.ID == id {
				return fmt.Sprintf("%q", r.Name)
			}
		}
	}
	return id
}

func flags(p directus.Policy) string {
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	return "admin access " + onOff(p.AdminAccess) + ", app access " + onOff(p.AppAccess)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// newStaticToken returns 32 bytes from crypto/rand, base64url, with a
// prefix: opaque, so Directus never takes it for one of its JWTs.
func newStaticToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return setupTokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenFile is a token written to a temporary file beside its path, put in
// place only once Directus holds the token.
type tokenFile struct {
	path, tmp string
}

// prepareTokenFile writes token to a new 0600 file in path's folder; it
// proves the folder writable before Directus changes.
func prepareTokenFile(path, token string) (*tokenFile, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, err
	}
	tf := &tokenFile{path: path, tmp: f.Name()}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		tf.discard()
		return nil, err
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		tf.discard()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		tf.discard()
		return nil, err
	}
	if err := f.Close(); err != nil {
		tf.discard()
		return nil, err
	}
	return tf, nil
}

// commit puts the file in place: replacing an existing one only when
// replace is set (a hard link never overwrites).
func (tf *tokenFile) commit(replace bool) error {
	var err error
	if replace {
		err = os.Rename(tf.tmp, tf.path)
	} else if err = os.Link(tf.tmp, tf.path); err == nil {
		_ = os.Remove(tf.tmp) // the token is in place; a stray name is harmless
	}
	if err == nil {
		tf.tmp = ""
	}
	return err
}

// discard removes the temporary file, if it is still there.
func (tf *tokenFile) discard() {
	if tf.tmp != "" {
		_ = os.Remove(tf.tmp)
		tf.tmp = ""
	}
}
