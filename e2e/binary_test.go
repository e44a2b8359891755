package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/directus"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/directus-bridge once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "directus-bridge-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "directus-bridge")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/directus-bridge").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is a running directus-bridge binary.
type process struct {
	cmd  *exec.Cmd
	url  string
	logs *lockedBuffer
	done chan error
}

// binaryConfig renders a configuration for the binary against d and the IdP.
func binaryConfig(d DirectusInstance, port int, state, ttl, rules string) string {
	auth0 := stack.IdP.Issuers["auth0"]
	return fmt.Sprintf(`listen: 127.0.0.1:%d
directus: {url: %q, retries: -1, timeout: 5s}
state: {path: %q}
tokens: {ttl: %s, rotate_before: 1s, revoke_interval: 300ms}
limits: {per_ip: {rate: -1}, per_client: {rate: -1}}
reconcile: {schedule: "off"}
issuers:
  - name: auth0
    issuer: %q
    audiences: [%q]
    required_claims: {gty: client-credentials}
    user_ids: hook
rules:
%s
log: {level: debug}
`, port, d.URL, state, ttl, auth0.Issuer, auth0.Audience, rules)
}

// startBinary runs `directus-bridge serve` with the config and waits until
// it answers /healthz, or until it exits (then p.done holds the error).
func startBinary(t *testing.T, d DirectusInstance, config string, port int) *process {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return startBinaryFile(t, d, path, port)
}

func startBinaryFile(t *testing.T, d DirectusInstance, path string, port int) *process {
	t.Helper()
	return startBinaryWith(t, d, path, fmt.Sprintf("http://127.0.0.1:%d", port), http.DefaultClient)
}

// startBinaryWith starts the binary and polls url/readyz with client until
// it answers 200 (rules in force, Directus and the issuers reachable) or the
// process exits.
func startBinaryWith(t *testing.T, d DirectusInstance, path, url string, client *http.Client) *process {
	t.Helper()
	return startBinaryUntil(t, d, path, url, client, "/readyz")
}

// leakMask marks where a token or a JWT stands in a leaking log line.
var leakMask = regexp.MustCompile(`(dbr_|eyJ)[A-Za-z0-9_.-]*`)

// startBinaryUntil starts the binary and polls url+probe until it answers
// 200, or until the process exits (then p.done holds the error).
func startBinaryUntil(t *testing.T, d DirectusInstance, path, url string, client *http.Client, probe string) *process {
	t.Helper()
	p := &process{url: url, logs: &lockedBuffer{b: &bytes.Buffer{}}, done: make(chan error, 1)}
	p.cmd = exec.Command(binary(t), "serve", "-config", path)
	p.cmd.Env = append(os.Environ(), "DIRECTUS_BRIDGE_DIRECTUS_TOKEN="+d.AdminToken)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		// Whatever happened, no secret may have reached the log.
		logs := p.logs.String()
		// [masked]: the log's last mask caught a secret some code path logged.
		if strings.Contains(logs, d.AdminToken) || strings.Contains(logs, "dbr_") || strings.Contains(logs, "eyJ") || strings.Contains(logs, "[masked]") {
			t.Errorf("a token or the admin token reached the bridge's log")
			// Where, with the secret itself masked.
			for _, l := range strings.Split(logs, "\n") {
				if strings.Contains(l, d.AdminToken) || strings.Contains(l, "dbr_") || strings.Contains(l, "eyJ") || strings.Contains(l, "[masked]") {
					l = strings.ReplaceAll(l, d.AdminToken, "<the admin token>")
					t.Logf("leaking line: %.2000s", leakMask.ReplaceAllString(l, "<$1…>"))
				}
			}
		}
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(p.url + probe); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			return p
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("bridge did not start:\n%s", p.logs.String())
	return nil
}

func (p *process) exchange(t *testing.T, subject string) exchanged {
	t.Helper()
	return (&bridgeUnderTest{url: p.url}).exchange(t, subject, "")
}

// waitLog waits until the bridge logged s.
func (p *process) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("bridge never logged %q:\n%s", s, p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestBinary(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		ctx := context.Background()
		f := newFixture(t, d)
		auth0 := stack.IdP.Issuers["auth0"]
		readers := fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.reader.Name)
		writers := fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.writer.Name)

		t.Run("AdminRoleRefusedAtStart", func(t *testing.T) {
			admin, err := f.admin.CreatePolicy(ctx, directus.Policy{Name: "e2e-admin-" + random(), AdminAccess: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { raw(t, d, d.AdminToken, "DELETE", "/policies/"+admin.ID, nil, nil) })
			role, err := f.admin.CreateRole(ctx, directus.Role{Name: "e2e-admins-" + random(), Policies: []string{admin.ID}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { raw(t, d, d.AdminToken, "DELETE", "/roles/"+role.ID, nil, nil) })
			rules := fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", role.Name)
			p := startBinary(t, d, binaryConfig(d, freePort(t), filepath.Join(t.TempDir(), "s.db"), "1m", rules), freePort(t))
			select {
			case err := <-p.done:
				if err == nil {
					t.Fatalf("bridge started with an admin role and no allow_admin")
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("bridge still running with an admin role and no allow_admin")
			}
			if logs := p.logs.String(); !strings.Contains(logs, "admin access") || !strings.Contains(logs, "allow_admin") {
				t.Errorf("the refusal does not say why:\n%s", logs)
			}
			// With allow_admin the same rule is accepted.
			rules = fmt.Sprintf("  - {any_scopes: [items:read], role: %q, allow_admin: true}", role.Name)
			port := freePort(t)
			p = startBinary(t, d, binaryConfig(d, port, filepath.Join(t.TempDir(), "s.db"), "1m", rules), port)
			select {
			case err := <-p.done:
				t.Fatalf("bridge refused allow_admin: %v\n%s", err, p.logs.String())
			default:
			}
		})

		t.Run("ReloadAppliesAtNextExchangeAndBrokenReloadKeepsRules", func(t *testing.T) {
			port := freePort(t)
			path := filepath.Join(t.TempDir(), "bridge.yaml")
			state := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, []byte(binaryConfig(d, port, state, "10m", readers)), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startBinaryFile(t, d, path, port)
			id, secret := auth0.registerClient(t, "", "items:read", 600)
			subject := auth0.token(t, id, secret, "", "")
			if r := p.exchange(t, subject); r.status != 200 {
				t.Fatalf("exchange: %d %v", r.status, r.body)
			}
			if u, _ := f.admin.User(ctx, userID(id+"@clients")); u.Role != f.reader.ID {
				t.Fatalf("role %s, want reader", u.Role)
			}
			if err := os.WriteFile(path, []byte(binaryConfig(d, port, state, "10m", writers)), 0o600); err != nil {
				t.Fatal(err)
			}
			_ = p.cmd.Process.Signal(syscall.SIGHUP)
			p.waitLog(t, "configuration reloaded")
			if r := p.exchange(t, subject); r.status != 200 {
				t.Fatalf("exchange after reload: %d %v", r.status, r.body)
			}
			if u, _ := f.admin.User(ctx, userID(id+"@clients")); u.Role != f.writer.ID {
				t.Errorf("after reload: role %s, want writer", u.Role)
			}
			// A broken file is refused and the writer rules stay.
			if err := os.WriteFile(path, []byte(binaryConfig(d, port, state, "10m", writers)+"unknown_key: 1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_ = p.cmd.Process.Signal(syscall.SIGHUP)
			p.waitLog(t, "reload refused")
			id2, secret2 := auth0.registerClient(t, "", "items:read", 600)
			if r := p.exchange(t, auth0.token(t, id2, secret2, "", "")); r.status != 200 {
				t.Fatalf("exchange after a broken reload: %d %v", r.status, r.body)
			}
			if u, _ := f.admin.User(ctx, userID(id2+"@clients")); u.Role != f.writer.ID {
				t.Errorf("after a broken reload: role %s, want the writer rules still in force", u.Role)
			}
		})

		t.Run("TLSAndMetrics", func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile, pool := selfSigned(t, dir)
			port := freePort(t)
			cfg := binaryConfig(d, port, filepath.Join(dir, "s.db"), "10m", readers) +
				fmt.Sprintf("tls: {cert_file: %q, key_file: %q}\n", certFile, keyFile)
			path := filepath.Join(dir, "bridge.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			p := startBinaryWith(t, d, path, fmt.Sprintf("https://127.0.0.1:%d", port), client)
			id, secret := auth0.registerClient(t, "", "items:read", 600)
			form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token": {auth0.token(t, id, secret, "", "")}, "subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}}
			resp, err := client.PostForm(p.url+"/oauth/token", form)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("exchange over TLS: %v %v", err, resp)
			}
			resp.Body.Close()
			// Go's TLS server answers plain HTTP with 400, never with the page.
			if resp, err := http.Get(strings.Replace(p.url, "https", "http", 1) + "/healthz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					t.Errorf("plain HTTP served on the TLS port")
				}
			}
			resp, err = client.Get(p.url + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, want := range []string{
				`directus_bridge_exchanges_total{error="",issuer="auth0",outcome="issued"} 1`,
				`directus_bridge_directus_request_duration_seconds_count{op="create_user",status="2xx"} 1`,
				`directus_bridge_jwks_fetches_total{issuer="auth0",result="ok"} 1`,
				`directus_bridge_live_tokens 1`,
			} {
				if !strings.Contains(string(body), want) {
					t.Errorf("metrics lack %s", want)
				}
			}
			if strings.Contains(string(body), id) {
				t.Errorf("a client id is a metric label")
			}
		})

		t.Run("SIGKILLLeavesNoOrphanToken", func(t *testing.T) {
			port := freePort(t)
			path := filepath.Join(t.TempDir(), "bridge.yaml")
			state := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, []byte(binaryConfig(d, port, state, "3s", readers)), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startBinaryFile(t, d, path, port)
			var ids []string
			var subjects []string
			for range 20 {
				id, secret := auth0.registerClient(t, "", "items:read", 600)
				ids = append(ids, userID(id+"@clients"))
				subjects = append(subjects, auth0.token(t, id, secret, "", ""))
			}
			var wg sync.WaitGroup
			for _, s := range subjects {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, _ = http.PostForm(p.url+"/oauth/token", map[string][]string{
						"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {s},
						"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}})
				}()
			}
			// Kill as soon as the first users appear in Directus: some
			// exchanges are done, the others are in flight.
			for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(5 * time.Millisecond) {
				if users, _ := f.admin.ListUsers(ctx, directus.UserFilter{IDs: ids, HasToken: directus.Ptr(true)}, -1, 0); len(users) > 0 {
					break
				}
			}
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
			p.done <- nil
			wg.Wait()
			withToken, err := f.admin.ListUsers(ctx, directus.UserFilter{IDs: ids, HasToken: directus.Ptr(true)}, -1, 0)
			if err != nil || len(withToken) == 0 {
				t.Fatalf("no token was written before the kill (%v): the test would prove nothing", err)
			}
			t.Logf("%d of %d users hold a token after the kill", len(withToken), len(ids))
			// Restart on the same state file: it opens cleanly and revokes
			// every token it handed out (or wrote ahead) once expired.
			p = startBinaryFile(t, d, path, port)
			deadline := time.Now().Add(20 * time.Second)
			for {
				users, err := f.admin.ListUsers(ctx, directus.UserFilter{IDs: ids, HasToken: directus.Ptr(true)}, -1, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(users) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d users still hold a token 20s after a 3s TTL: orphaned by the crash\n%s", len(users), p.logs.String())
				}
				time.Sleep(300 * time.Millisecond)
			}
		})

		t.Run("SIGTERMFinishesInFlightExchanges", func(t *testing.T) {
			port := freePort(t)
			path := filepath.Join(t.TempDir(), "bridge.yaml")
			if err := os.WriteFile(path, []byte(binaryConfig(d, port, filepath.Join(t.TempDir(), "s.db"), "10m", readers)), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startBinaryFile(t, d, path, port)
			var subjects []string
			for range 10 {
				id, secret := auth0.registerClient(t, "", "items:read", 600)
				subjects = append(subjects, auth0.token(t, id, secret, "", ""))
			}
			statuses := make([]int, len(subjects))
			var wg sync.WaitGroup
			for i, s := range subjects {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := http.PostForm(p.url+"/oauth/token", map[string][]string{
						"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {s},
						"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}})
					if err == nil {
						statuses[i] = resp.StatusCode
						resp.Body.Close()
					}
				}()
			}
			time.Sleep(20 * time.Millisecond)
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			wg.Wait()
			select {
			case err := <-p.done:
				if err != nil {
					t.Errorf("bridge exited with %v after SIGTERM\n%s", err, p.logs.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("bridge did not stop after SIGTERM")
			}
			for i, s := range statuses {
				if s != 0 && s != 200 {
					t.Errorf("exchange %d answered %d during shutdown; want 200 or a refused connection", i, s)
				}
			}
			if _, err := http.Get(p.url + "/healthz"); err == nil {
				t.Errorf("bridge still answers after shutdown")
			}
			if !strings.Contains(p.logs.String(), "shutting down") {
				t.Errorf("no shutdown log line")
			}
		})
	})
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key, and
// returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
