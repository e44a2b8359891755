package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate/pgstatetest"
)

// postgresSchemas gives fresh schemas on the stack's state database
// (stack.json's postgres.dsn). Without it the test is skipped outside CI
// and fails in CI.
func postgresSchemas(t *testing.T) *pgstatetest.Schemas {
	t.Helper()
	requireStack(t)
	return pgstatetest.NewSchemas(t)
}

// pgState is a fresh PostgreSQL state for the bridge processes a test
// starts: its schema, and the DSN (with its password) and state key set in
// the environment the binaries inherit.
type pgState struct {
	dsn, schema, password string
}

func newPGState(t *testing.T, base *pgstatetest.Schemas) pgState {
	t.Helper()
	dsn, schema := base.FreshSchema(t)
	u, _ := url.Parse(dsn)
	password, _ := u.User.Password()
	key := make([]byte, 32)
	rand.Read(key)
	t.Setenv("DIRECTUS_BRIDGE_STATE_DSN", dsn)
	t.Setenv("DIRECTUS_BRIDGE_STATE_KEY", base64.StdEncoding.EncodeToString(key))
	return pgState{dsn: dsn, schema: schema, password: password}
}

// pgConfig is binaryConfig with its state in PostgreSQL (state is the
// state block's extra keys, e.g. "standby: true").
func pgConfig(t *testing.T, d DirectusInstance, port int, ttl, rules, state string) string {
	t.Helper()
	c := binaryConfig(d, port, "", ttl, rules)
	block := "driver: postgres"
	if state != "" {
		block += ", " + state
	}
	pg := strings.Replace(c, `state: {path: ""}`, "state: {"+block+"}", 1)
	if pg == c {
		t.Fatal("binaryConfig has no state line to replace")
	}
	return pg
}

// TestPostgresStateSurvivesARestartAndIsHeldByOne: serve with the state in
// PostgreSQL hands out a token, a second serve on the same database and
// schema refuses to start, and after a restart the first token is handed
// out again.
func TestPostgresStateSurvivesARestartAndIsHeldByOne(t *testing.T) {
	base := postgresSchemas(t)
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		ctx := context.Background()
		f := newFixture(t, d)
		auth0 := stack.IdP.Issuers["auth0"]
		pg := newPGState(t, base)
		dsn, schema, password := pg.dsn, pg.schema, pg.password
		config := func(port int) string {
			return pgConfig(t, d, port, "10m", fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.reader.Name), "")
		}
		noPassword := func(p *process) {
			t.Helper()
			if password == "" || strings.Contains(p.logs.String(), password) {
				t.Fatalf("the DSN's password reached the bridge's output (or the DSN has none):\n%s", p.logs.String())
			}
		}
		running := func(p *process) {
			t.Helper()
			select {
			case err := <-p.done:
				t.Fatalf("bridge exited: %v\n%s", err, p.logs.String())
			default:
			}
		}

		port := freePort(t)
		p := startBinary(t, d, config(port), port)
		running(p)
		id, secret := auth0.registerClient(t, "", "items:read", 600)
		subject := auth0.token(t, id, secret, "", "")
		first := p.exchange(t, subject)
		if first.status != 200 || first.token() == "" {
			t.Fatalf("exchange: %d %v", first.status, first.body)
		}
		user := userID(id + "@clients")
		if u, err := f.admin.User(ctx, user); err != nil || u.Role != f.reader.ID {
			t.Fatalf("user in Directus: %+v %v", u, err)
		}
		// The record is in PostgreSQL, its token sealed.
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		var value []byte
		err = conn.QueryRow(ctx, `SELECT value FROM `+schema+`.directus_bridge_records WHERE key = $1`, user).Scan(&value)
		conn.Close(ctx)
		if err != nil {
			t.Fatalf("the user's record in PostgreSQL: %v", err)
		}
		if strings.Contains(string(value), first.token()) {
			t.Fatal("the token is in PostgreSQL in plaintext")
		}

		// A second serve on the same state refuses to start, naming the hold.
		port2 := freePort(t)
		start := time.Now()
		second := startBinary(t, d, config(port2), port2)
		select {
		case err := <-second.done:
			if err == nil {
				t.Fatalf("the second serve exited 0:\n%s", second.logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("a second serve on a held state still runs:\n%s", second.logs.String())
		}
		for _, want := range []string{"the state is held by another directus-bridge process", schema} {
			if !strings.Contains(second.logs.String(), want) {
				t.Errorf("the second serve's message does not say %q:\n%s", want, second.logs.String())
			}
		}
		t.Logf("the second serve refused after %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(second.logs.String()))
		noPassword(second)
		// The holder is unaffected.
		if r := p.exchange(t, subject); r.status != 200 || r.token() != first.token() {
			t.Fatalf("exchange after the refused start: %d %v", r.status, r.body)
		}

		// A restart loads the state from PostgreSQL: the same token again.
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if err := <-p.done; err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, p.logs.String())
		}
		p.done <- nil
		noPassword(p)
		p = startBinary(t, d, config(port), port)
		running(p)
		again := p.exchange(t, subject)
		if again.status != 200 || again.token() != first.token() {
			t.Fatalf("exchange after the restart: %d, same token %v (the state did not survive in PostgreSQL)", again.status, again.token() == first.token())
		}
		noPassword(p)
	})
}
