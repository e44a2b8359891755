package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
)

// serveEnv is runServer against the fake Directus, an issuer that works and
// one whose IdP never answers.
type serveEnv struct {
	t      *testing.T
	fake   *directustest.Server
	cfg    string
	base   string
	good   string // JWKS URL of the issuer that works
	hang   string // issuer URL whose discovery never answers
	cancel context.CancelFunc
	done   chan error
	extra  string // appended to the configuration
}

func newServeEnv(t *testing.T) *serveEnv {
	e := &serveEnv{t: t, done: make(chan error, 1)}
	e.fake = directustest.NewServer(t, directustest.Options{})
	dc, err := directus.New(e.fake.URL, e.fake.AdminToken, directus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.CreateRole(context.Background(), directus.Role{Name: "Reader"}); err != nil {
		t.Fatal(err)
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	goodIdP := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(jwks) }))
	t.Cleanup(goodIdP.Close)
	stop := make(chan struct{})
	hangIdP := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hangIdP.Close)
	t.Cleanup(func() { close(stop) })
	e.good, e.hang = goodIdP.URL+"/jwks", hangIdP.URL
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e.base = "http://" + addr
	dir := t.TempDir()
	e.cfg = filepath.Join(dir, "bridge.yaml")
	t.Setenv("SERVE_TEST_DIRECTUS_TOKEN", e.fake.AdminToken)
	e.write(addr, dir, true)
	return e
}

var mtimeBump atomic.Int64

// write writes the configuration, with the hanging issuer when withHang.
func (e *serveEnv) write(addr, dir string, withHang bool) {
	hang := ""
	if withHang {
		hang = fmt.Sprintf("\n  - name: hang\n    issuer: %s\n    audiences: [api]\n    user_ids: issuer", e.hang)
	}
	y := fmt.Sprintf(`listen: %s
directus: {url: %s, token_env: SERVE_TEST_DIRECTUS_TOKEN, timeout: 2s, retries: -1}
state: {path: %s, key_file: %s}
issuers:
  - name: good
    issuer: https://good.example/
    jwks_url: %s
    audiences: [api]%s
rules:
  - {name: readers, any_scopes: [read], role: Reader}
`, addr, e.fake.URL, filepath.Join(dir, "state.db"), filepath.Join(dir, "state.key"), e.good, hang) + e.extra
	if err := os.WriteFile(e.cfg, []byte(y), 0o600); err != nil {
		e.t.Fatal(err)
	}
	later := time.Now().Add(time.Duration(mtimeBump.Add(1)) * time.Second) // beyond the mtime resolution
	_ = os.Chtimes(e.cfg, later, later)
}

func (e *serveEnv) start() {
	cfg, err := loadValid(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { e.done <- runServer(ctx, e.cfg, cfg, log) }()
	e.t.Cleanup(func() { cancel(); <-e.done })
}

func (e *serveEnv) readyz() map[string]string {
	resp, err := http.Get(e.base + "/readyz")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var m map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return m
}

func (e *serveEnv) waitRules(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if m := e.readyz(); m["rules"] == "ok" {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// An IdP that hangs at start must not hold up the rules, and so every other
// issuer's exchanges.
func TestServeRulesDoNotWaitForAHangingIdP(t *testing.T) {
	e := newServeEnv(t)
	start := time.Now()
	e.start()
	if !e.waitRules(20 * time.Second) {
		t.Fatal("rules never in force")
	}
	// The hanging issuer's warm-up alone takes its 10 s timeout.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("rules in force after %v with Directus up: the hanging issuer held them up", d.Round(100*time.Millisecond))
	}
}

// A configuration edited while serve waits for Directus is applied once the
// rules are in force: an issuer removed meanwhile is not trusted afterwards.
func TestServeAppliesAnEditMadeDuringStartUp(t *testing.T) {
	e := newServeEnv(t)
	var down atomic.Bool
	down.Store(true)
	e.fake.SetFault(func(r *http.Request) directustest.Fault {
		if down.Load() {
			return directustest.Fault{Status: http.StatusServiceUnavailable}
		}
		return directustest.Fault{}
	})
	e.start()
	time.Sleep(500 * time.Millisecond)
	e.write(strings.TrimPrefix(e.base, "http://"), filepath.Dir(e.cfg), false)
	down.Store(false)
	if !e.waitRules(30 * time.Second) {
		t.Fatal("rules never in force")
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok := e.readyz()["issuer:hang"]; !ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("the issuer removed during start-up is still trusted: /readyz %v", e.readyz())
}

// A SIGHUP while serve waits for Directus must not end the process.
func TestServeSurvivesSIGHUPDuringStartUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "directus-bridge")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	e := newServeEnv(t)
	e.fake.Close() // Directus not reachable: serve waits for it
	cmd := exec.Command(bin, "serve", "-config", e.cfg)
	cmd.Env = append(os.Environ(), "SERVE_TEST_DIRECTUS_TOKEN=x")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	for range 100 {
		if resp, err := http.Get(e.base + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		t.Errorf("serve died of SIGHUP while waiting for Directus: %v", err)
	case <-time.After(2 * time.Second):
	}
}

const serveAdminToken = "serve-test-admin-token-0123456789abcdef"

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// withAdmin rewrites the configuration with an admin listener on a free
// port (and without the hanging issuer); it returns the admin address.
func (e *serveEnv) withAdmin() string {
	e.t.Helper()
	admin := freeAddr(e.t)
	e.t.Setenv("SERVE_TEST_ADMIN_TOKEN", serveAdminToken)
	e.extra = fmt.Sprintf("admin: {listen: %q, token_env: SERVE_TEST_ADMIN_TOKEN}\n", admin)
	e.write(strings.TrimPrefix(e.base, "http://"), filepath.Dir(e.cfg), false)
	return admin
}

// orphan creates a machine user (its id derived from client) holding a
// token the bridge never issued: a reconcile revokes it.
func (e *serveEnv) orphan(client string) string {
	e.t.Helper()
	dc, err := directus.New(e.fake.URL, e.fake.AdminToken, directus.Options{Retries: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	id := uuid.NewSHA1(uuid.Nil, []byte(client)).String()
	if _, err := dc.CreateUser(context.Background(), directus.NewUser{ID: id, ExternalIdentifier: client, Token: "orphan-token-" + client}); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *serveEnv) hasToken(id string) bool {
	e.t.Helper()
	dc, _ := directus.New(e.fake.URL, e.fake.AdminToken, directus.Options{Retries: -1})
	u, err := dc.User(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return u.HasToken
}

func call(t *testing.T, method, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func reconcileCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut strings.Builder
	code = run(append([]string{"reconcile"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// With admin.listen set, `directus-bridge reconcile` asks the running
// server; nothing admin is served on the exchange listener.
func TestServeAdminListenerAndReconcileCLI(t *testing.T) {
	e := newServeEnv(t)
	admin := e.withAdmin()
	id := e.orphan("serve-orphan")
	e.start()
	if !e.waitRules(20 * time.Second) {
		t.Fatal("rules never in force")
	}
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if got := call(t, m, e.base+"/v1/reconcile", serveAdminToken); got != http.StatusNotFound {
			t.Errorf("%s /v1/reconcile on the exchange listener: %d, want 404", m, got)
		}
	}
	if got := call(t, http.MethodPost, "http://"+admin+"/v1/reconcile", ""); got != http.StatusUnauthorized {
		t.Errorf("admin listener without a token: %d, want 401", got)
	}

	code, out, errOut := reconcileCLI("-config", e.cfg, "-dry-run")
	if code != 0 || !strings.Contains(out, "would do (dry run)") || !strings.Contains(out, "revoke") || !strings.Contains(out, id) {
		t.Errorf("dry run through the server: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if strings.Contains(errOut, "state file") {
		t.Errorf("the CLI did not go through the server: %s", errOut)
	}
	if !e.hasToken(id) {
		t.Errorf("the dry run revoked the token")
	}

	code, out, errOut = reconcileCLI("-config", e.cfg, "-json")
	var rep bridge.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("run through the server: exit %d, %v\nstdout %s\nstderr %s", code, err, out, errOut)
	}
	if rep.DryRun || rep.Actions[bridge.ActRevoke] != 1 || len(rep.Changes) != 1 || rep.Changes[0].UserID != id {
		t.Errorf("report %s, want the orphan's token revoked", out)
	}
	if e.hasToken(id) {
		t.Errorf("the run through the server did not revoke the token")
	}

	// A wrong token: exit 1, naming the variable.
	t.Setenv("SERVE_TEST_ADMIN_TOKEN", strings.Repeat("w", 40))
	code, out, errOut = reconcileCLI("-config", e.cfg)
	if code != 1 || !strings.Contains(errOut, "SERVE_TEST_ADMIN_TOKEN") || !strings.Contains(errOut, "refused the admin token") || out != "" {
		t.Errorf("wrong token: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}

	// The admin listener shuts down with the server.
	e.cancel()
	if err := <-e.done; err != nil {
		t.Errorf("runServer: %v", err)
	}
	e.done <- nil // for the cleanup
	if c, err := net.DialTimeout("tcp", admin, time.Second); err == nil {
		c.Close()
		t.Errorf("the admin listener still accepts connections after the server stopped")
	}
}

// Nothing listens on admin.listen (the server is stopped): the CLI opens
// the state file itself, and says so.
func TestReconcileCLIFallsBackWhenNoServerListens(t *testing.T) {
	e := newServeEnv(t)
	e.withAdmin()
	id := e.orphan("fallback-orphan")
	code, out, errOut := reconcileCLI("-config", e.cfg)
	if code != 0 || !strings.Contains(out, "reconcile did") || !strings.Contains(out, id) {
		t.Errorf("fallback: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if !strings.Contains(errOut, "no server answers on admin.listen") || !strings.Contains(errOut, "opening the state file directly") {
		t.Errorf("the fallback was not said on stderr: %s", errOut)
	}
	if e.hasToken(id) {
		t.Errorf("the local run did not revoke the token")
	}
}

// Without admin.listen the CLI cannot reconcile while the server holds the
// state file; the error says what to do.
func TestReconcileCLIWithoutAdminWhileServing(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the state file's lock")
	}
	e := newServeEnv(t)
	e.start()
	if !e.waitRules(20 * time.Second) {
		t.Fatal("rules never in force")
	}
	code, _, errOut := reconcileCLI("-config", e.cfg, "-dry-run")
	if code != 1 || !strings.Contains(errOut, "the server is running; set admin.listen to reconcile through it") {
		t.Errorf("exit %d, stderr %s", code, errOut)
	}
}

func TestAdminURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:8081": "http://127.0.0.1:8081/v1/reconcile",
		":8081":          "http://127.0.0.1:8081/v1/reconcile",
		"0.0.0.0:8081":   "http://127.0.0.1:8081/v1/reconcile",
		"[::]:8081":      "http://127.0.0.1:8081/v1/reconcile",
		"[::1]:8081":     "http://[::1]:8081/v1/reconcile",
		"admin.lan:9":    "http://admin.lan:9/v1/reconcile",
	} {
		if got, err := adminURL(listen, "/v1/reconcile"); err != nil || got != want {
			t.Errorf("adminURL(%q) = %q, %v; want %q", listen, got, err, want)
		}
	}
}
