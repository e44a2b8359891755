package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/directus-bridge/directus-bridge/bridge/state/boltstate"
	"github.com/directus-bridge/directus-bridge/directus"
)

// TestStateCopyBboltToPostgresAndBack: a bridge on a state file hands out a
// token; stopped, its state is copied into PostgreSQL with `state copy`,
// and serve on PostgreSQL hands out the same token again without writing to
// Directus; copied back into a new file, the same again.
func TestStateCopyBboltToPostgresAndBack(t *testing.T) {
	base := postgresSchemas(t)
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		ctx := context.Background()
		f := newFixture(t, d)
		auth0 := stack.IdP.Issuers["auth0"]
		pg := newPGState(t, base)
		dsn, schema, password := pg.dsn, pg.schema, pg.password

		dir := t.TempDir()
		boltPath, backPath := filepath.Join(dir, "state.db"), filepath.Join(dir, "back", "state.db")
		port := freePort(t)
		rules := fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.reader.Name)
		write := func(name, config string) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(config), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}
		boltYAML := write("bolt.yaml", binaryConfig(d, port, boltPath, "10m", rules))
		pgConfig := strings.Replace(binaryConfig(d, port, "", "10m", rules), `state: {path: ""}`, `state: {driver: postgres}`, 1)
		if !strings.Contains(pgConfig, "driver: postgres") {
			t.Fatal("binaryConfig has no state line to replace")
		}
		pgYAML := write("pg.yaml", pgConfig)
		backYAML := write("back.yaml", binaryConfig(d, port, backPath, "10m", rules))

		running := func(p *process) {
			t.Helper()
			select {
			case err := <-p.done:
				t.Fatalf("bridge exited: %v\n%s", err, p.logs.String())
			default:
			}
		}
		stop := func(p *process) {
			t.Helper()
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			if err := <-p.done; err != nil {
				t.Fatalf("serve after SIGTERM: %v\n%s", err, p.logs.String())
			}
			p.done <- nil
		}

		p := startBinaryFile(t, d, boltYAML, port)
		running(p)
		id, secret := auth0.registerClient(t, "", "items:read", 600)
		subject := auth0.token(t, id, secret, "", "")
		first := p.exchange(t, subject)
		if first.status != 200 || first.token() == "" {
			t.Fatalf("exchange on bbolt: %d %v", first.status, first.body)
		}
		user := userID(id + "@clients")
		writes := func() int {
			t.Helper()
			acts, err := f.admin.Activity(ctx, directus.ActivityFilter{Item: user}, 1000)
			if err != nil {
				t.Fatal(err)
			}
			return len(acts)
		}
		waitWatchStarted(t, p)

		// While the server holds the state, the copy is refused.
		if code, out, errOut := stateCopy(t, boltYAML, pgYAML); code != 1 || !strings.Contains(errOut, "stop the server first") {
			t.Fatalf("copy of a held state: exit %d, %q, %q", code, out, errOut)
		}
		stop(p)
		cursor := boltCursor(t, boltPath)
		before := writes()
		if before == 0 {
			t.Fatal("Directus logged no activity for the user: the check below would prove nothing")
		}

		code, out, errOut := stateCopy(t, boltYAML, pgYAML)
		want := fmt.Sprintf("copied 1 record and the activity cursor from bbolt (%s) to postgres (DSN from DIRECTUS_BRIDGE_STATE_DSN)\n", boltPath)
		if code != 0 || out != want {
			t.Fatalf("copy to postgres: exit %d, stdout %q (want %q), stderr %q", code, out, want, errOut)
		}
		if strings.Contains(out+errOut, dsn) || (password != "" && strings.Contains(out+errOut, password)) || strings.Contains(out+errOut, first.token()) {
			t.Fatal("the DSN, its password or a token was printed")
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		var pgCursor []byte
		err = conn.QueryRow(ctx, `SELECT value FROM `+schema+`.directus_bridge_meta WHERE key = 'activity_cursor'`).Scan(&pgCursor)
		conn.Close(ctx)
		if err != nil || string(pgCursor) != cursor {
			t.Fatalf("cursor in PostgreSQL: %q, %v; want %q", pgCursor, err, cursor)
		}

		p = startBinaryFile(t, d, pgYAML, port)
		running(p)
		if r := p.exchange(t, subject); r.status != 200 || r.token() != first.token() {
			t.Fatalf("exchange on the copied PostgreSQL state: %d, same token %v", r.status, r.token() == first.token())
		}
		// A second copy into the now used PostgreSQL state is refused.
		stop(p)
		if code, _, errOut := stateCopy(t, boltYAML, pgYAML); code != 1 || !strings.Contains(errOut, "is not empty") {
			t.Fatalf("second copy into postgres: exit %d, %q", code, errOut)
		}

		// And back into a new file.
		code, out, errOut = stateCopy(t, pgYAML, backYAML)
		want = fmt.Sprintf("copied 1 record and the activity cursor from postgres (DSN from DIRECTUS_BRIDGE_STATE_DSN) to bbolt (%s)\n", backPath)
		if code != 0 || out != want {
			t.Fatalf("copy back to bbolt: exit %d, stdout %q (want %q), stderr %q", code, out, want, errOut)
		}
		p = startBinaryFile(t, d, backYAML, port)
		running(p)
		if r := p.exchange(t, subject); r.status != 200 || r.token() != first.token() {
			t.Fatalf("exchange on the state copied back: %d, same token %v", r.status, r.token() == first.token())
		}
		stop(p)
		if after := writes(); after != before {
			t.Fatalf("Directus logged %d activity rows for the user after the copies, want none (reuse writes nothing)", after-before)
		}
	})
}

// stateCopy runs `directus-bridge state copy -from from -config to`
// without the Directus token: the copy needs none.
func stateCopy(t *testing.T, from, to string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binary(t), "state", "copy", "-from", from, "-config", to)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "DIRECTUS_BRIDGE_DIRECTUS_TOKEN=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// waitWatchStarted waits until serve read Directus's last activity (the
// watcher's first run, which sets the activity cursor), then a moment for
// the cursor to be written.
func waitWatchStarted(t *testing.T, p *process) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.url + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `op="last_activity"`) {
				time.Sleep(time.Second)
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("serve never read Directus's last activity:\n%s", p.logs.String())
}

// boltCursor reads the activity cursor of a stopped bridge's state file.
func boltCursor(t *testing.T, path string) string {
	t.Helper()
	b, err := boltstate.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	v, ok, err := b.Meta(context.Background(), "activity_cursor")
	if err != nil || !ok {
		t.Fatalf("the state file has no activity cursor: %v", err)
	}
	return string(v)
}
