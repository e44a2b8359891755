package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A reload applies every setting a running server can change: a removed
// issuer is distrusted at once (its cached verifications dropped), new
// token lifetimes and rate limits apply to the next exchange, and the
// settings that need a restart are named in the log and left as they were.
func TestBinaryReloadAppliesEverySetting(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		f := newFixture(t, d)
		auth0, ed := stack.IdP.Issuers["auth0"], stack.IdP.Issuers["eddsa"]
		port := freePort(t)
		state := filepath.Join(t.TempDir(), "state.db")
		config := func(ttl, perClient, listen string, withEd bool) string {
			c := fmt.Sprintf(`listen: %s
directus: {url: %q, retries: -1, timeout: 5s}
state: {path: %q}
tokens: {ttl: %s}
limits: {per_ip: {rate: -1}, per_client: %s}
reconcile: {schedule: "off"}
issuers:
  - name: auth0
    issuer: %q
    audiences: [%q]
    required_claims: {gty: client-credentials}
`, listen, d.URL, state, ttl, perClient, auth0.Issuer, auth0.Audience)
			if withEd {
				c += fmt.Sprintf(`  - name: eddsa
    issuer: %q
    audiences: [%q]
    algorithms: [EdDSA]
    user_ids: issuer
`, ed.Issuer, ed.Audience)
			}
			return c + fmt.Sprintf("rules:\n  - {any_scopes: [items:read], role: %q}\nlog: {level: info}\n", f.reader.Name)
		}
		path := filepath.Join(t.TempDir(), "bridge.yaml")
		listen := fmt.Sprintf("127.0.0.1:%d", port)
		if err := os.WriteFile(path, []byte(config("10m", "{rate: -1}", listen, true)), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startBinaryFile(t, d, path, port)
		edID, edSecret := ed.registerClient(t, "", "items:read", 600)
		edSubject := ed.token(t, edID, edSecret, "", "")
		if r := p.exchange(t, edSubject); r.status != 200 {
			t.Fatalf("eddsa exchange: %d %v", r.status, r.body)
		}

		// eddsa removed, a shorter TTL, a per-client limit of one a minute,
		// and a new listen address (restart only).
		if err := os.WriteFile(path, []byte(config("2m", "{rate: 0.0167, burst: 1}", fmt.Sprintf("127.0.0.1:%d", freePort(t)), false)), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Process.Signal(syscall.SIGHUP)
		p.waitLog(t, "configuration reloaded")
		if logs := p.logs.String(); !strings.Contains(logs, "need a restart") || !strings.Contains(logs, "listen") {
			t.Errorf("the restart-only change was not named in the log:\n%s", logs)
		}
		// The same subject token, verified and cached before: refused now.
		if r := p.exchange(t, edSubject); r.status != 400 || !strings.Contains(fmt.Sprint(r.body), "not trusted") {
			t.Errorf("removed issuer's client: %d %v, want 400 (issuer is not trusted)", r.status, r.body)
		}
		id, secret := auth0.registerClient(t, "", "items:read", 600)
		r := p.exchange(t, auth0.token(t, id, secret, "", ""))
		if r.status != 200 {
			t.Fatalf("auth0 exchange after reload: %d %v", r.status, r.body)
		}
		if exp, _ := r.body["expires_in"].(float64); exp > 120 || exp < 100 {
			t.Errorf("expires_in %v after the TTL was reloaded to 2m", r.body["expires_in"])
		}
		start := time.Now()
		if r := p.exchange(t, auth0.token(t, id, secret, "", "")); r.status != 429 && time.Since(start) < time.Minute {
			t.Errorf("second exchange within the reloaded per-client limit: %d, want 429", r.status)
		}
		// The listener did not move.
		if r := p.exchange(t, auth0.token(t, id, secret, "", "")); r.status == 0 {
			t.Errorf("the old listener stopped answering")
		}
	})
}
