package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStandbyTakesOverAndRevokes: two serve processes with state.standby on
// one PostgreSQL state. The second waits as a standby (alive, not ready,
// exchanges 503); when the holder is killed (-9) the standby takes over
// within seconds, hands out the holder's live token, and revokes it in
// Directus when it expires: revocation survives the loss of the process
// that issued the token.
func TestStandbyTakesOverAndRevokes(t *testing.T) {
	base := postgresSchemas(t)
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		f := newFixture(t, d)
		auth0 := stack.IdP.Issuers["auth0"]
		newPGState(t, base)
		const ttl = 12 * time.Second
		config := func(port int) string {
			return pgConfig(t, d, port, "12s", fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.reader.Name), "standby: true")
		}
		portA, portB := freePort(t), freePort(t)
		a := startBinary(t, d, config(portA), portA)
		pathB := filepath.Join(t.TempDir(), "bridge.yaml")
		if err := os.WriteFile(pathB, []byte(config(portB)), 0o600); err != nil {
			t.Fatal(err)
		}
		b := startBinaryUntil(t, d, pathB, fmt.Sprintf("http://127.0.0.1:%d", portB), http.DefaultClient, "/healthz")
		select {
		case err := <-a.done:
			t.Fatalf("the holder exited: %v\n%s", err, a.logs.String())
		case err := <-b.done:
			t.Fatalf("the standby exited: %v\n%s", err, b.logs.String())
		default:
		}
		status := func(p *process, method, path string) (int, http.Header) {
			t.Helper()
			req, _ := http.NewRequest(method, p.url+path, strings.NewReader("grant_type=x"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return 0, nil
			}
			resp.Body.Close()
			return resp.StatusCode, resp.Header
		}
		if st, _ := status(b, "GET", "/readyz"); st != http.StatusServiceUnavailable {
			t.Fatalf("the standby's /readyz: %d, want 503", st)
		}
		if st, h := status(b, "POST", "/oauth/token"); st != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
			t.Fatalf("an exchange at the standby: %d (Retry-After %q), want 503 with Retry-After", st, h.Get("Retry-After"))
		}

		id, secret := auth0.registerClient(t, "", "items:read", 600)
		subject := auth0.token(t, id, secret, "", "")
		first := a.exchange(t, subject)
		if first.status != 200 || first.token() == "" {
			t.Fatalf("exchange at the holder: %d %v", first.status, first.body)
		}
		issued := time.Now()
		if raw(t, d, first.token(), "GET", "/users/me", nil, nil) != 200 {
			t.Fatal("the token does not work")
		}

		// The holder dies without a word.
		if err := a.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-a.done
		a.done <- nil
		killed := time.Now()
		for {
			if st, _ := status(b, "GET", "/readyz"); st == http.StatusOK {
				break
			}
			if time.Since(killed) > 20*time.Second {
				t.Fatalf("the standby did not take over within 20s:\n%s", b.logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("the standby was ready %s after the holder was killed", time.Since(killed).Round(time.Millisecond))
		// A standby stops gracefully on SIGTERM (a rolling update).
		portC := freePort(t)
		pathC := filepath.Join(t.TempDir(), "bridge.yaml")
		if err := os.WriteFile(pathC, []byte(config(portC)), 0o600); err != nil {
			t.Fatal(err)
		}
		c := startBinaryUntil(t, d, pathC, fmt.Sprintf("http://127.0.0.1:%d", portC), http.DefaultClient, "/healthz")
		if st, _ := status(c, "GET", "/readyz"); st != http.StatusServiceUnavailable {
			t.Fatalf("a second standby's /readyz: %d, want 503", st)
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-c.done:
			if err != nil {
				t.Fatalf("a standby stopped by SIGTERM: %v\n%s", err, c.logs.String())
			}
			c.done <- nil
		case <-time.After(15 * time.Second):
			t.Fatalf("a standby did not stop on SIGTERM:\n%s", c.logs.String())
		}
		// It knows the holder's token: the returning client gets it again.
		again := b.exchange(t, subject)
		if again.status != 200 || again.token() != first.token() {
			t.Fatalf("exchange at the new holder: %d, same token %v", again.status, again.token() == first.token())
		}
		// And it revokes it in Directus when it expires.
		deadline := issued.Add(ttl + 10*time.Second)
		for raw(t, d, first.token(), "GET", "/users/me", nil, nil) == 200 {
			if time.Now().After(deadline) {
				t.Fatalf("the token still works %s after it was issued (ttl %s): nobody revoked it\n%s", time.Since(issued).Round(time.Second), ttl, b.logs.String())
			}
			time.Sleep(300 * time.Millisecond)
		}
		if left := time.Until(issued.Add(ttl)); left > time.Second {
			t.Fatalf("the token was revoked %s before its expiry", left)
		}
	})
}
