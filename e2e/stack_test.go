package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// StackEnv names the environment variable with the path of the stack file
// that testdata/stack/stack.sh writes.
const StackEnv = "DIRECTUS_BRIDGE_STACK"

// Stack is the running test stack, as described by stack.json.
type Stack struct {
	Directus    []DirectusInstance `json:"directus"`
	IdP         IdP                `json:"idp"`
	SDK         *SDK               `json:"sdk"`
	StackScript string             `json:"stack_script"`
	Dir         string             `json:"dir"`
}

// DirectusInstance is one real Directus of the stack.
type DirectusInstance struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	Database   string `json:"database"`
	URL        string `json:"url"`
	AdminToken string `json:"admin_token"`
}

// SDK is the official Directus JavaScript SDK as the stack installed it,
// with the Node it needs.
type SDK struct {
	Dir     string `json:"dir"`
	Node    string `json:"node"`
	Version string `json:"version"`
}

// Major returns the major version.
func (d DirectusInstance) Major() int {
	var n int
	fmt.Sscanf(d.Version, "%d", &n)
	return n
}

// IdP is the stack's oidc-provider with its issuers.
type IdP struct {
	URL     string            `json:"url"`
	Issuers map[string]Issuer `json:"issuers"`
}

// Issuer is one issuer of the test IdP.
type Issuer struct {
	Issuer               string `json:"issuer"`
	Alg                  string `json:"alg"`
	TokenEndpoint        string `json:"token_endpoint"`
	RegistrationEndpoint string `json:"registration_endpoint"`
	Audience             string `json:"audience"`
}

var (
	stack     *Stack
	stackErr  error
	statsMu   sync.Mutex
	ranByName = map[string]*counts{}
)

type counts struct{ ran, failed, skipped int }

func TestMain(m *testing.M) {
	removeStaleBinaries(os.TempDir(), time.Hour)
	stack, stackErr = loadStack()
	inCI := os.Getenv("CI") != ""
	if stackErr != nil && inCI {
		fmt.Fprintf(os.Stderr, "e2e: the test stack is required in CI: %v\n", stackErr)
		os.Exit(1)
	}
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath)) // the binary the tests built
	}
	statsMu.Lock()
	names := make([]string, 0, len(ranByName))
	for n := range ranByName {
		names = append(names, n)
	}
	sort.Strings(names)
	var summary strings.Builder
	for _, n := range names {
		c := ranByName[n]
		fmt.Fprintf(&summary, "e2e summary: %s: %d tests ran, %d failed, %d skipped\n", n, c.ran, c.failed, c.skipped)
	}
	statsMu.Unlock()
	if stackErr != nil {
		fmt.Fprintf(&summary, "e2e summary: no stack (%v): e2e tests skipped outside CI\n", stackErr)
	}
	fmt.Print(summary.String())
	// go test hides a passing package's output: with-stack.sh prints this file.
	if path := os.Getenv("DIRECTUS_BRIDGE_E2E_SUMMARY"); path != "" {
		if err := os.WriteFile(path, []byte(summary.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: write summary:", err)
		}
	}
	if inCI && len(names) == 0 && code == 0 {
		fmt.Fprintln(os.Stderr, "e2e: no e2e test ran in CI")
		code = 1
	}
	os.Exit(code)
}

func loadStack() (*Stack, error) {
	path := os.Getenv(StackEnv)
	if path == "" {
		return nil, fmt.Errorf("%s is not set (run: make test, or testdata/stack/stack.sh up)", StackEnv)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Stack
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(s.Directus) == 0 || len(s.IdP.Issuers) == 0 {
		return nil, fmt.Errorf("%s: no Directus or no issuers", path)
	}
	return &s, nil
}

// requireStack returns the stack, or skips the test when there is none
// outside CI (in CI TestMain already failed).
func requireStack(t *testing.T) *Stack {
	t.Helper()
	if stack == nil {
		t.Skipf("e2e: no test stack: %v", stackErr)
	}
	return stack
}

// forEachDirectus runs fn as a subtest for every Directus of the stack and
// counts the leaf tests per instance for the summary.
func forEachDirectus(t *testing.T, fn func(t *testing.T, d DirectusInstance)) {
	s := requireStack(t)
	for _, d := range s.Directus {
		t.Run(d.Name, func(t *testing.T) {
			t.Cleanup(func() { count(d.Name+" ("+d.Version+")", t) })
			fn(t, d)
		})
	}
}

func count(name string, t *testing.T) {
	statsMu.Lock()
	defer statsMu.Unlock()
	c := ranByName[name]
	if c == nil {
		c = &counts{}
		ranByName[name] = c
	}
	switch {
	case t.Skipped():
		c.skipped++
	case t.Failed():
		c.ran++
		c.failed++
	default:
		c.ran++
	}
}

// stackCmd runs stack.sh with args (directus-stop, directus-start).
func stackCmd(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{stack.StackScript}, append(args, stack.Dir)...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("stack.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// registerClient registers a client-credentials client at the issuer.
func (is Issuer) registerClient(t *testing.T, clientID, scope string, ttl int) (id, secret string) {
	t.Helper()
	return is.registerClientWith(t, clientID, map[string]any{"scope": scope, "token_ttl": ttl})
}

// registerClientWith registers a client-credentials client with more
// metadata (scope, token_ttl, claims: see testdata/stack/idp/README.md).
func (is Issuer) registerClientWith(t *testing.T, clientID string, metadata map[string]any) (id, secret string) {
	t.Helper()
	body := map[string]any{
		"grant_types": []string{"client_credentials"}, "response_types": []string{}, "redirect_uris": []string{},
		"token_endpoint_auth_method": "client_secret_post",
	}
	for k, v := range metadata {
		body[k] = v
	}
	if clientID != "" {
		body["client_id"] = clientID
		body["client_secret"] = "secret-" + clientID
	}
	b, _ := json.Marshal(body)
	resp, err := http.Post(is.RegistrationEndpoint, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("register client: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&out) != nil {
		t.Fatalf("register client: status %d", resp.StatusCode)
	}
	return out.ClientID, out.ClientSecret
}

// token gets a client-credentials access token (resource "" = default audience).
func (is Issuer) token(t *testing.T, id, secret, scope, resource string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
	if scope != "" {
		form.Set("scope", scope)
	}
	if resource != "" {
		form.Set("resource", resource)
	}
	resp, err := http.PostForm(is.TokenEndpoint, form)
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		t.Fatalf("token: status %d error %q", resp.StatusCode, out.Error)
	}
	return out.AccessToken
}

// removeStaleBinaries removes the folders of binaries that earlier runs
// built and could not remove (a run stopped by -timeout skips TestMain's
// clean-up): those older than age, so that a concurrent run keeps its own.
func removeStaleBinaries(tmp string, age time.Duration) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, "directus-bridge-bin*"))
	for _, d := range dirs {
		if st, err := os.Stat(d); err == nil && st.IsDir() && time.Since(st.ModTime()) > age {
			_ = os.RemoveAll(d)
		}
	}
}
