package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The hook row of the proxy table: the common client-credentials hook
// extension (testdata/stack/hook, a port of it to plain JavaScript),
// installed into the stack's Directus 11 for the proxy rows and removed
// after them. The same kind of IdP client (its own, so that the hook's user
// and the bridge's never meet) sends its IdP token straight to Directus,
// where the hook verifies it and reads and writes the user on every
// request.

// hookExtension is the folder the hook gets in the extensions folder.
const hookExtension = "bridge-bench-hook"

// hookEnvMarker opens the extra.env this program writes: one without it is
// someone else's and is left alone.
const hookEnvMarker = "# written by bridge-bench for the hook row; removed after it\n"

// hookScope is the scope the hook requires: the one the bench's IdP
// clients are registered with.
const hookScope = "items:read"

// hookUnavailable says why the hook cannot be installed into e's Directus,
// or "" when it can.
func hookUnavailable(e *env) string {
	switch {
	case !strings.HasPrefix(e.d.Version, "11."):
		return "the common hook sets a custom provider, which Directus 12 Core refuses: Directus 11 only"
	case e.st.Hook == nil || e.st.Hook.Dir == "":
		return "stack.json has no hook (testdata/stack/hook is not installed)"
	case e.st.Dir == "" || e.st.Script == "":
		return "stack.json has no dir or stack_script: cannot restart Directus"
	case e.st.IdP.Issuers["auth0"].Alg != "RS256":
		return "the stack's auth0 issuer does not sign with RS256, the only algorithm the hook accepts"
	}
	return ""
}

// hookUserID is the Directus user the hook makes for a client: UUIDv5 of
// the token's sub in the NIL namespace.
func hookUserID(subject string) string { return uuid.NewSHA1(uuid.Nil, []byte(subject)).String() }

// shellQuote quotes s for the bash that reads extra.env.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// installHook links the hook into e's Directus extensions folder, writes
// the variables it reads (role: the role id it hands out) to the Directus's
// extra.env and restarts it. The returned function undoes all of it and
// restarts Directus again; call it once, also after a failure.
func installHook(ctx context.Context, stderr io.Writer, e *env, role string) (uninstall func() error, err error) {
	base := filepath.Join(e.st.Dir, e.d.Name)
	extDir := filepath.Join(base, "extensions")
	if fi, err := os.Stat(extDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("install the hook: no extensions folder %s", extDir)
	}
	link := filepath.Join(extDir, hookExtension)
	envPath := filepath.Join(base, "extra.env")
	if b, err := os.ReadFile(envPath); err == nil && !strings.HasPrefix(string(b), hookEnvMarker) {
		return nil, fmt.Errorf("install the hook: %s exists and is not this program's", envPath)
	}
	restart := func(ctx context.Context) error {
		for _, cmd := range []string{"directus-stop", "directus-start"} {
			c := exec.CommandContext(ctx, "bash", e.st.Script, cmd, e.d.Name, e.st.Dir)
			c.Stdout, c.Stderr = stderr, stderr
			if err := c.Run(); err != nil {
				return fmt.Errorf("stack.sh %s %s: %w", cmd, e.d.Name, err)
			}
		}
		return nil
	}
	done := false
	uninstall = func() error {
		if done {
			return nil
		}
		done = true
		progress(stderr, "%s: removing the hook extension and restarting Directus", e.d.Name)
		errs := []error{}
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		if err := os.Remove(envPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		// Not ctx: after an interrupt Directus must still come back.
		rctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		errs = append(errs, restart(rctx))
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("uninstall the hook: %w", err)
		}
		return nil
	}
	progress(stderr, "%s: installing the hook extension (%s) and restarting Directus", e.d.Name, e.st.Hook.Dir)
	_ = os.Remove(link) // a previous run's, interrupted
	if err := os.Symlink(e.st.Hook.Dir, link); err != nil {
		return nil, fmt.Errorf("install the hook: %w", err)
	}
	is := e.st.IdP.Issuers["auth0"]
	var b strings.Builder
	b.WriteString(hookEnvMarker)
	for _, kv := range [][2]string{{"BCC_AUTH_ISSUER", is.Issuer}, {"BCC_AUTH_AUDIENCE", is.Audience},
		{"BCC_AUTH_ROLE", role}, {"BCC_AUTH_SCOPE", hookScope}} {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
	if err := os.WriteFile(envPath, []byte(b.String()), 0o600); err != nil {
		_ = os.Remove(link)
		return nil, fmt.Errorf("install the hook: %w", err)
	}
	if err := restart(ctx); err != nil {
		return uninstall, fmt.Errorf("install the hook: %w", err)
	}
	return uninstall, nil
}

// hookSetup registers the hook row's IdP client, checks that Directus
// refuses its token, installs the hook (rep.uninstallHook undoes it) and
// checks that Directus then answers the token with the collection's items.
// The client it returns is the hook row's.
func hookSetup(ctx context.Context, stderr io.Writer, e *env, rep *proxyReport, role, directURL string, conc int) (*http.Client, error) {
	clients, err := registerClients(ctx, newHTTPClient(2), "auth0", e.st.IdP.Issuers["auth0"], "bridge-bench-"+e.run+"-hook", 1, 3600, 1)
	if err != nil {
		return nil, err
	}
	c := clients[0]
	rep.hookToken = c.Token
	rep.hookUser = hookUserID(c.Subject)
	e.users = append(e.users, rep.hookUser)
	hc := newHTTPClient(conc)
	if _, err := getItems(ctx, hc, directURL, c.Token); err == nil {
		return hc, fmt.Errorf("before the hook: Directus accepted the IdP token")
	} else if rep.hookBefore = err.Error(); !strings.Contains(rep.hookBefore, "status 401") {
		return hc, fmt.Errorf("before the hook: want 401, got: %w", err)
	}
	rep.uninstallHook, err = installHook(ctx, stderr, e, role)
	if err != nil {
		return hc, err
	}
	hc.CloseIdleConnections() // to the Directus before the restart
	// The first request makes the user, the next ones update it.
	for i := range 3 {
		b, err := getItems(ctx, hc, directURL, c.Token)
		if err != nil {
			return hc, fmt.Errorf("through the hook, request %d: %w (Directus log: %s)", i+1, err, filepath.Join(e.st.Dir, e.d.Name+".log"))
		}
		var items struct {
			Data []json.RawMessage `json:"data"`
		}
		if json.Unmarshal(b, &items) != nil || len(items.Data) != proxyItems {
			return hc, fmt.Errorf("through the hook: want %d items, got %d", proxyItems, len(items.Data))
		}
	}
	progress(stderr, "%s: the hook is loaded: Directus answers the IdP token (401 before it)", e.d.Name)
	return hc, nil
}

// hookUserState reads the user the hook made and checks that it is the
// hook's (its provider, the role it hands out, last_access written): the
// proof that the hook did its per-request work. It returns a summary.
func (e *env) hookUserState(ctx context.Context, id, role string) (string, error) {
	var u struct { // admin.do unwraps "data"
		Provider   string  `json:"provider"`
		Role       *string `json:"role"`
		LastAccess *string `json:"last_access"`
		External   string  `json:"external_identifier"`
	}
	if err := e.admin.do(ctx, http.MethodGet, "/users/"+id+"?fields=provider,role,last_access,external_identifier", nil, &u); err != nil {
		return "", fmt.Errorf("read the hook's user: %w", err)
	}
	if u.Provider != "bcc-client-credentials" || u.Role == nil || *u.Role != role || u.LastAccess == nil {
		return "", fmt.Errorf("the hook's user %s: provider %q, role %v, last_access %v: not what the hook writes", id, u.Provider, u.Role, u.LastAccess)
	}
	return fmt.Sprintf("%s, provider %s, external_identifier %s, the role it hands out, last_access %s", id, u.Provider, u.External, *u.LastAccess), nil
}
