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
`, addr, e.fake.URL, filepath.Join(dir, "state.db"), filepath.Join(dir, "state.key"), e.good, hang)
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
