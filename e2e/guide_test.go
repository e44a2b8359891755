package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// guideSection is the README section a newcomer follows to run the bridge
// against their own Directus and IdP.
const guideSection = "## Run it against your own Directus"

// guideBlocks returns the sh blocks of the README's guide section, in order.
func guideBlocks(t *testing.T, readme string) []string {
	t.Helper()
	var blocks []string
	var cur *strings.Builder
	in := false
	sc := bufio.NewScanner(strings.NewReader(readme))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, guideSection):
			in = true
			continue
		case in && strings.HasPrefix(line, "## "):
			in = false
		}
		if !in {
			continue
		}
		switch {
		case cur == nil && (line == "```sh" || line == "```bash"):
			cur = &strings.Builder{}
		case cur != nil && line == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("README has no sh blocks under %q", guideSection)
	}
	return blocks
}

var exportRE = regexp.MustCompile(`(?m)^export ([A-Z_][A-Z0-9_]*)=`)

// TestGuideOnOwnDirectus follows the README's "Run it against your own
// Directus" section literally, as a newcomer would: the first block (the
// reader's own values) is replaced by the stack's values, every other block
// runs as written, in order, in one bash session in a fresh copy of the
// repository. Only the listen port is moved to a free one.
func TestGuideOnOwnDirectus(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		root, err := filepath.Abs("..")
		if err != nil {
			t.Fatal(err)
		}
		readme, err := os.ReadFile(filepath.Join(root, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		blocks := guideBlocks(t, string(readme))
		values := blocks[0]
		if !strings.HasPrefix(values, "# Your values") {
			t.Fatalf("the guide's first block must start with \"# Your values\"; it is:\n%s", values)
		}

		f := newFixture(t, d)
		is := stack.IdP.Issuers["auth0"]
		scope := "guide:read"
		cid, secret := is.registerClient(t, "", scope, 600)
		ours := map[string]string{
			"DIRECTUS_URL":         d.URL,
			"DIRECTUS_ADMIN_TOKEN": d.AdminToken,
			"ISSUER_URL":           is.Issuer,
			"AUDIENCE":             is.Audience,
			"ROLE":                 f.reader.Name,
			"SCOPE":                scope,
			"TOKEN_ENDPOINT":       is.TokenEndpoint,
			"CLIENT_ID":            cid,
			"CLIENT_SECRET":        secret,
		}
		var named []string
		for _, m := range exportRE.FindAllStringSubmatch(values, -1) {
			named = append(named, m[1])
		}
		var want []string
		for k := range ours {
			want = append(want, k)
		}
		sort.Strings(named)
		sort.Strings(want)
		if strings.Join(named, " ") != strings.Join(want, " ") {
			t.Fatalf("the guide asks for %v; this test provides %v: keep them in step", named, want)
		}
		removeSetupObjects(t, d, "directus-bridge") // a fresh Directus, as the reader's
		t.Cleanup(func() { removeSetupObjects(t, d, "directus-bridge") })

		work := copyRepo(t, root)
		port := fmt.Sprint(freePort(t))
		var script strings.Builder
		script.WriteString("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n")
		for k, v := range ours {
			fmt.Fprintf(&script, "export %s=%q\n", k, v)
		}
		for i, b := range blocks[1:] {
			fmt.Fprintf(&script, "echo '--- guide block %d'\n", i+2)
			script.WriteString(strings.ReplaceAll(b, "127.0.0.1:8080", "127.0.0.1:"+port))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(goBinary(t))+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("following the guide failed: %v\n%s", err, out)
		}
		// The last block reads the machine user with the exchanged token.
		if id := userID(cid + "@clients"); !strings.Contains(string(out), id) {
			t.Fatalf("the guide's last step did not show the machine user %s:\n%s", id, out)
		}
		for _, secret := range []string{d.AdminToken, secret} {
			if strings.Contains(string(out), secret) {
				t.Errorf("the guide printed a secret")
			}
		}
	})
}

// removeSetupObjects deletes what `directus-bridge setup -name NAME` creates:
// the users with the role NAME, the role and the policy NAME.
func removeSetupObjects(t *testing.T, d DirectusInstance, name string) {
	t.Helper()
	var roles, policies, users []struct {
		ID string `json:"id"`
	}
	raw(t, d, d.AdminToken, "GET", "/roles?"+url.Values{"fields": {"id"}, "filter[name][_eq]": {name}}.Encode(), nil, &roles)
	for _, r := range roles {
		raw(t, d, d.AdminToken, "GET", "/users?"+url.Values{"fields": {"id"}, "filter[role][_eq]": {r.ID}}.Encode(), nil, &users)
		for _, u := range users {
			raw(t, d, d.AdminToken, "DELETE", "/users/"+u.ID, nil, nil)
		}
		raw(t, d, d.AdminToken, "DELETE", "/roles/"+r.ID, nil, nil)
	}
	raw(t, d, d.AdminToken, "GET", "/policies?"+url.Values{"fields": {"id"}, "filter[name][_eq]": {name}}.Encode(), nil, &policies)
	for _, p := range policies {
		raw(t, d, d.AdminToken, "DELETE", "/policies/"+p.ID, nil, nil)
	}
}

// copyRepo copies the repository's tracked files (as a clone would have
// them) into a temporary folder.
func copyRepo(t *testing.T, root string) string {
	t.Helper()
	dst := t.TempDir()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		b, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(filepath.Join(root, f))
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// goBinary is the go command that runs the tests, for the guide's make build.
func goBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		p = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("no go command for the guide's build step")
		}
	}
	return p
}
