package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// hangingListener accepts connections and never answers: an IdP or a
// Directus that hangs.
func hangingListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

// gate is a reverse proxy to Directus that holds every request until opened.
type gate struct {
	once sync.Once
	open chan struct{}
	url  string
}

func newGate(t *testing.T, upstream string) *gate {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{open: make(chan struct{})}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-g.open:
		case <-r.Context().Done():
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { g.release(); srv.Close() })
	g.url = srv.URL
	return g
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// The binary listens at once and answers liveness while Directus is not
// answering yet and one issuer's discovery hangs; exchanges answer 503 with
// Retry-After meanwhile; once Directus answers, the healthy issuer's
// clients are served at once while the hanging issuer's are refused with 503
// within the IdP timeout.
func TestBinaryListensWhileDependenciesHang(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		f := newFixture(t, d)
		g := newGate(t, d.URL)
		hang := hangingListener(t) + "/tenant"
		auth0 := stack.IdP.Issuers["auth0"]
		port := freePort(t)
		config := fmt.Sprintf(`listen: 127.0.0.1:%d
directus: {url: %q, retries: -1, timeout: 5s}
state: {path: %q}
limits: {per_ip: {rate: -1}, per_client: {rate: -1}}
reconcile: {schedule: "off"}
issuers:
  - name: auth0
    issuer: %q
    audiences: [%q]
    required_claims: {gty: client-credentials}
  - name: hanging
    issuer: %q
    audiences: [x]
    user_ids: issuer
rules:
  - {any_scopes: [items:read], role: %q}
`, port, g.url, filepath.Join(t.TempDir(), "state.db"), auth0.Issuer, auth0.Audience, hang, f.reader.Name)
		path := filepath.Join(t.TempDir(), "bridge.yaml")
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		p := startBinaryUntil(t, d, path, fmt.Sprintf("http://127.0.0.1:%d", port), http.DefaultClient, "/healthz")
		if took := time.Since(started); took > 10*time.Second {
			t.Errorf("liveness answered after %v, want at once", took)
		}
		select {
		case err := <-p.done:
			t.Fatalf("the bridge exited while Directus was slow: %v\n%s", err, p.logs.String())
		default:
		}
		if resp, err := http.Get(p.url + "/readyz"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("readyz while waiting: %v %v, want 503", resp, err)
		} else {
			resp.Body.Close()
		}
		id, secret := auth0.registerClient(t, "", "items:read", 600)
		subject := auth0.token(t, id, secret, "", "")
		if r := p.exchange(t, subject); r.status != 503 || r.retryAfter == "" {
			t.Errorf("exchange while Directus is not answering: %d %v (Retry-After %q), want 503 with Retry-After", r.status, r.body, r.retryAfter)
		}
		g.release()
		deadline := time.Now().Add(30 * time.Second)
		var r exchanged
		for {
			r = p.exchange(t, subject)
			if r.status == 200 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if r.status != 200 {
			t.Fatalf("exchange after Directus answered: %d %v\n%s", r.status, r.body, p.logs.String())
		}
		if read, _ := f.can(t, r.token()); !read {
			t.Errorf("the token does not read")
		}
		// The hanging issuer does not delay the healthy one...
		start := time.Now()
		if r := p.exchange(t, subject); r.status != 200 || time.Since(start) > 2*time.Second {
			t.Errorf("healthy issuer's exchange: %d in %v", r.status, time.Since(start))
		}
		// ...and its own clients get 503 within the IdP timeout.
		forged := forgeUnsigned(t, map[string]any{"iss": hang, "sub": "svc", "aud": "x",
			"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
		start = time.Now()
		c := &http.Client{Timeout: 30 * time.Second} // a bridge that hangs too fails here, not at the test's deadline
		resp, err := c.PostForm(p.url+"/oauth/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token": {forged}, "subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}})
		if err != nil {
			t.Fatalf("hanging issuer's exchange: %v after %v, want 503 within the IdP timeout", err, time.Since(start))
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || time.Since(start) > 20*time.Second {
			t.Errorf("hanging issuer's exchange: %d (Retry-After %q) in %v, want 503 with Retry-After within the IdP timeout",
				resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(start))
		}
	})
}

// forgeUnsigned builds a JWT with a junk signature: enough to make the
// bridge look up the issuer's keys.
func forgeUnsigned(t *testing.T, claims map[string]any) string {
	t.Helper()
	b64 := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return strings.Join([]string{b64(map[string]string{"alg": "RS256", "typ": "at+jwt", "kid": "k"}),
		b64(claims), base64.RawURLEncoding.EncodeToString([]byte("not a signature"))}, ".")
}
