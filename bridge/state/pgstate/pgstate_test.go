package pgstate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/conformance"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate/pgstatetest"
)

func quick(t *testing.T) {
	old := HoldTimeout
	HoldTimeout = 500 * time.Millisecond
	t.Cleanup(func() { HoldTimeout = old })
}

func TestConformance(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	conformance.Run(t, func(t *testing.T) conformance.Opener {
		dsn := s.Fresh(t)
		return func() (state.Backend, error) { return Open(t.Context(), dsn) }
	})
}

func mustOpen(t *testing.T, dsn string) *Backend {
	t.Helper()
	b, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// versions lists the applied schema versions in the schema of dsn.
func versions(t *testing.T, dsn string) (vs []int, applied []time.Time) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `SELECT version, applied_at FROM `+versionTable+` ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int
		var at time.Time
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		vs, applied = append(vs, v), append(applied, at)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return vs, applied
}

func keysOf(t *testing.T, b *Backend) string {
	t.Helper()
	var ks []string
	if err := b.Load(t.Context(), func(k string, _ []byte) error { ks = append(ks, k); return nil }); err != nil {
		t.Fatalf("load: %v", err)
	}
	slices.Sort(ks)
	return strings.Join(ks, ",")
}

func put(t *testing.T, b *Backend, keys ...string) error {
	t.Helper()
	var es []state.Entry
	for _, k := range keys {
		es = append(es, state.Entry{Key: k, Value: []byte("v-" + k)})
	}
	return b.Put(t.Context(), es)
}

func TestPGMigrate(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	t.Run("FromEmptyThenNoOp", func(t *testing.T) {
		dsn := s.Fresh(t)
		b, err := Open(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		if err := put(t, b, "a"); err != nil {
			t.Fatal(err)
		}
		b.Close()
		vs, at := versions(t, dsn)
		if fmt.Sprint(vs) != fmt.Sprint([]int{1, 2}) || SchemaVersion != 2 {
			t.Fatalf("versions after the first open: %v, want [1 2]", vs)
		}
		// The versions' sequence is the state's own, in its schema.
		if got := mustQuery(t, dsn, `SELECT coalesce(to_regclass(quote_ident(current_schema()) || '.`+versionSeq+`')::text, 'none')`); got != versionSeq {
			t.Fatalf("the versions' sequence in the state's schema: %s, want %s", got, versionSeq)
		}
		b = mustOpen(t, dsn)
		vs2, at2 := versions(t, dsn)
		if fmt.Sprint(vs2) != fmt.Sprint(vs) || !at2[0].Equal(at[0]) || !at2[1].Equal(at[1]) {
			t.Fatalf("re-opening migrated again: %v %v, was %v %v", vs2, at2, vs, at)
		}
		if got := keysOf(t, b); got != "a" {
			t.Fatalf("records after re-opening: %q", got)
		}
		if g := b.generation(); g != 2 {
			t.Fatalf("generation after the second open: %d, want 2", g)
		}
	})
	t.Run("NewerIsRefused", func(t *testing.T) {
		dsn := s.Fresh(t)
		b := mustOpen(t, dsn)
		if err := put(t, b, "a"); err != nil {
			t.Fatal(err)
		}
		b.Close()
		schema := mustQuery(t, dsn, `SELECT current_schema()`)
		s.Exec(t, `INSERT INTO `+schema+`.`+versionTable+` (version) VALUES ($1)`, SchemaVersion+1)
		_, err := Open(t.Context(), dsn)
		if err == nil {
			t.Fatal("a schema of a newer version was opened")
		}
		want := fmt.Sprintf("schema version %d, newer than this directus-bridge knows (%d)", SchemaVersion+1, SchemaVersion)
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
		// Nothing was changed, and the lock was released.
		if g := mustQuery(t, dsn, `SELECT generation::text FROM `+holderTable); g != "1" {
			t.Fatalf("the refused open changed the generation to %s", g)
		}
		s.Exec(t, `DELETE FROM `+schema+`.`+versionTable+` WHERE version > $1`, SchemaVersion)
		if got := keysOf(t, mustOpen(t, dsn)); got != "a" {
			t.Fatalf("records: %q", got)
		}
	})
	t.Run("NoSchema", func(t *testing.T) {
		_, err := Open(t.Context(), pgstatetest.WithParam(t, s.DSN, "search_path", "pgstate_no_such_schema"))
		if err == nil || !strings.Contains(err.Error(), "no schema of the search_path exists") {
			t.Fatalf("open without a schema: %v", err)
		}
	})
}

func mustQuery(t *testing.T, dsn, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(t.Context(), sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// kill terminates the server process of b's connection, as a restarted
// server or a cut network would.
func kill(t *testing.T, s *pgstatetest.Schemas, b *Backend) {
	t.Helper()
	pid := b.backendPID()
	if pid == 0 {
		t.Fatal("no connection to kill")
	}
	s.Mu.Lock()
	var ok bool
	err := s.Admin.QueryRow(t.Context(), `SELECT pg_terminate_backend($1, 5000)`, int32(pid)).Scan(&ok)
	s.Mu.Unlock()
	if err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v %v", pid, ok, err)
	}
}

func TestPGConnectionKilledThenRecovery(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	b := mustOpen(t, dsn)
	if err := put(t, b, "a"); err != nil {
		t.Fatal(err)
	}
	pid := b.backendPID()
	kill(t, s, b)
	// The operation that meets the broken connection fails...
	err := put(t, b, "b")
	if err == nil || !strings.Contains(err.Error(), "the connection broke") {
		t.Fatalf("put on a killed connection: %v, want an error", err)
	}
	// ...and the next one reconnects, with the same hold.
	start := time.Now()
	if err := put(t, b, "b"); err != nil {
		t.Fatalf("put after the break: %v", err)
	}
	t.Logf("reconnected and wrote in %s", time.Since(start))
	if got := keysOf(t, b); got != "a,b" {
		t.Fatalf("records: %q", got)
	}
	if p := b.backendPID(); p == pid || p == 0 {
		t.Fatalf("server process %d after reconnecting, was %d", p, pid)
	}
	if g := b.generation(); g != 1 {
		t.Fatalf("generation %d after a reconnection, want 1", g)
	}
	// The lock is held again: a second process is refused.
	if _, err := Open(t.Context(), dsn); !errors.Is(err, state.ErrHeld) {
		t.Fatalf("second open after the reconnection: %v, want ErrHeld", err)
	}
	// A break during a read too.
	kill(t, s, b)
	if _, _, err := b.Meta(t.Context(), "m"); err == nil {
		t.Fatal("meta on a killed connection succeeded")
	}
	if _, _, err := b.Meta(t.Context(), "m"); err != nil {
		t.Fatalf("meta after the break: %v", err)
	}
}

func TestPGTakeoverWhileDisconnected(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	for _, stillOpen := range []bool{false, true} {
		t.Run(fmt.Sprintf("OtherStillOpen=%v", stillOpen), func(t *testing.T) {
			dsn := s.Fresh(t)
			a := mustOpen(t, dsn)
			if err := put(t, a, "from-a"); err != nil {
				t.Fatal(err)
			}
			kill(t, s, a)
			other, err := Open(t.Context(), dsn) // the hold was released with the connection
			if err != nil {
				t.Fatalf("another process could not take the released hold: %v", err)
			}
			if err := put(t, other, "from-other"); err != nil {
				t.Fatal(err)
			}
			if err := put(t, a, "a-after-break"); err == nil {
				t.Fatal("a put on a broken connection succeeded")
			}
			if stillOpen {
				// a cannot take the lock back, and the generation shows
				// another process took it: a must stop now, not serve its
				// records in memory for as long as the other runs.
				err := put(t, a, "a-while-held")
				if !errors.Is(err, ErrTakenOver) {
					t.Fatalf("a's put while the other holds the state: %v, want ErrTakenOver", err)
				}
			}
			if err := other.Close(); err != nil {
				t.Fatal(err)
			}
			// a reconnects, sees the generation moved on and refuses for good.
			for i, op := range []func() error{
				func() error { return put(t, a, "a-after-takeover") },
				func() error { return a.Delete(t.Context(), "from-other") },
				func() error { return a.SetMeta(t.Context(), "m", []byte("x")) },
				func() error { _, _, err := a.Meta(t.Context(), "m"); return err },
				func() error { return a.Load(t.Context(), func(string, []byte) error { return nil }) },
			} {
				err := op()
				if !errors.Is(err, ErrTakenOver) {
					t.Fatalf("operation %d after the takeover: %v, want ErrTakenOver", i, err)
				}
				if i == 0 && !strings.Contains(err.Error(), "restart") {
					t.Fatalf("the refusal does not say to restart: %v", err)
				}
			}
			b := mustOpen(t, dsn) // a does not hold the state any more
			if got := keysOf(t, b); got != "from-a,from-other" {
				t.Fatalf("records: %q, want only those written while holding", got)
			}
			if g := b.generation(); g != 3 {
				t.Fatalf("generation %d, want 3", g)
			}
		})
	}
}

func TestPGHeldMessageNamesTheHolder(t *testing.T) {
	quick(t)
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	b := mustOpen(t, dsn)
	_, err := Open(t.Context(), dsn)
	if !errors.Is(err, state.ErrHeld) {
		t.Fatalf("second open: %v", err)
	}
	for _, want := range []string{"schema \"pgstate_test_", fmt.Sprintf("server process %d", b.backendPID()), `application "directus-bridge"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

// A wait for a held state that its context ends is that context's end (a
// SIGTERM to a bridge that waits stops it gracefully).
func TestPGHeldWaitEndsWithItsContext(t *testing.T) {
	s := pgstatetest.NewSchemas(t)
	dsn := s.Fresh(t)
	for _, open := range []func(ctx context.Context) error{
		func(ctx context.Context) error { _, err := Open(ctx, dsn); return err },
		func(ctx context.Context) error { _, err := OpenShared(ctx, dsn); return err },
	} {
		b := mustOpen(t, dsn)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(200*time.Millisecond, cancel)
		err := open(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("open while held, its context ended: %v; want context.Canceled", err)
		}
		b.Close()
	}
}

const password = "pw-7Hq2-secret"

// noPassword fails when err's message (or its detailed form) holds the
// password.
func noPassword(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err.Error())} {
		if strings.Contains(s, password) || strings.Contains(s, url.QueryEscape(password)) {
			t.Fatalf("%s: the password is in the error: %s", what, s)
		}
	}
	t.Logf("%s: %v", what, err)
}

func TestPGPasswordNeverInErrors(t *testing.T) {
	passwordNeverInErrors(t, "open", func(ctx context.Context, dsn string) error {
		_, err := Open(ctx, dsn)
		return err
	})
}

// passwordNeverInErrors checks that open's errors never quote the DSN's
// password, with and without a server to refuse it.
func passwordNeverInErrors(t *testing.T, name string, open func(ctx context.Context, dsn string) error) {
	// Without a server: a malformed DSN, and a port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"postgres://bridge:" + password + "@127.0.0.1:notaport/db",
		"postgres://bridge:" + password + "@" + closed + "/db?sslmode=disable",
		"host=127.0.0.1 port=" + strings.Split(closed, ":")[1] + " user=bridge password=" + password + " dbname=db sslmode=disable",
		"host=127.0.0.1 user=bridge password='" + password + "' sslmode=bogus",
	} {
		noPassword(t, name+" "+strings.ReplaceAll(dsn, password, "PW"), open(ctx, dsn))
	}
	// With the server: a database whose name is the password, so that the
	// server's own message names it.
	if os.Getenv(pgstatetest.StackEnv) == "" && os.Getenv("CI") == "" {
		t.Skipf("%s is not set: the rest needs the test stack", pgstatetest.StackEnv)
	}
	u, err := url.Parse(pgstatetest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	u.Path = "/" + password
	err = open(ctx, u.String())
	noPassword(t, name+" of a database named like the password", err)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("not the server's refusal: %v", err)
	}
}

// BenchmarkPGPut measures one write of one record, as an exchange makes
// (records of 600 bytes, over 1000 keys).
func BenchmarkPGPut(b *testing.B) {
	be, err := Open(b.Context(), pgstatetest.NewSchemas(b).Fresh(b))
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	v := make([]byte, 600)
	for i := 0; b.Loop(); i++ {
		if err := be.Put(b.Context(), []state.Entry{{Key: fmt.Sprint("user-", i%1000), Value: v}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPGLoad measures loading 50,000 records of 600 bytes.
func BenchmarkPGLoad(b *testing.B) {
	be, err := Open(b.Context(), pgstatetest.NewSchemas(b).Fresh(b))
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	var es []state.Entry
	for i := range 50000 {
		es = append(es, state.Entry{Key: fmt.Sprint("user-", i), Value: make([]byte, 600)})
	}
	start := time.Now()
	if err := be.Put(b.Context(), es); err != nil {
		b.Fatal(err)
	}
	b.Logf("one Put of 50,000 records: %s", time.Since(start))
	for b.Loop() {
		n := 0
		if err := be.Load(b.Context(), func(string, []byte) error { n++; return nil }); err != nil || n != 50000 {
			b.Fatalf("load: %d records, %v", n, err)
		}
	}
}
