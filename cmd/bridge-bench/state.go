package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/boltstate"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate"
)

// stateNames are the backends -state accepts.
var stateNames = []string{"bbolt", "postgres"}

// parseStates reads -state: a comma-separated list of backends, each once.
// Empty means bbolt, and postgres too when the stack has a DSN for it.
func parseStates(value string, hasPG bool) ([]string, error) {
	if strings.TrimSpace(value) == "" {
		if hasPG {
			return []string{"bbolt", "postgres"}, nil
		}
		return []string{"bbolt"}, nil
	}
	var out []string
	for _, s := range strings.Split(value, ",") {
		s = strings.TrimSpace(s)
		switch {
		case !slices.Contains(stateNames, s):
			return nil, fmt.Errorf("-state: unknown backend %q (want %s)", s, strings.Join(stateNames, ", "))
		case slices.Contains(out, s):
			return nil, fmt.Errorf("-state: %s given twice", s)
		case s == "postgres" && !hasPG:
			return nil, errors.New("-state: postgres needs postgres.dsn in stack.json (the stack starts it with Directus 12 on PostgreSQL)")
		}
		out = append(out, s)
	}
	return out, nil
}

// withSearchPath returns dsn with search_path set to schema, in the DSN's
// own form (a postgres:// URL or key=value pairs).
func withSearchPath(dsn, schema string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", errors.New("the postgres DSN does not parse as a URL") // never quote it: it holds a password
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return dsn + " search_path=" + schema, nil
}

// countingBackend counts the writes (Put, Delete, SetMeta: one transaction
// each) that the Store makes to the backend it wraps, and the time they
// take.
type countingBackend struct {
	state.Backend
	writes atomic.Int64
	busy   atomic.Int64 // nanoseconds
}

func (c *countingBackend) count(t0 time.Time) {
	c.writes.Add(1)
	c.busy.Add(int64(time.Since(t0)))
}

func (c *countingBackend) Put(ctx context.Context, es []state.Entry) error {
	defer c.count(time.Now())
	return c.Backend.Put(ctx, es)
}

func (c *countingBackend) Delete(ctx context.Context, key string) error {
	defer c.count(time.Now())
	return c.Backend.Delete(ctx, key)
}

func (c *countingBackend) SetMeta(ctx context.Context, key string, value []byte) error {
	defer c.count(time.Now())
	return c.Backend.SetMeta(ctx, key, value)
}

// benchState is one state backend of the exchange rows: a fresh bbolt file
// or a fresh PostgreSQL schema, behind a write counter.
type benchState struct {
	name   string
	store  *bridge.Store
	writes *countingBackend
	drop   func() error // removes the schema (PostgreSQL), after Close
}

// openState opens a fresh state of the named backend for e: a new file in
// e.dir, or a new schema bridge_bench_<run>_<name> in the stack's state
// database, reached through search_path.
func openState(ctx context.Context, e *env, name string) (*benchState, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	bs := &benchState{name: name, drop: func() error { return nil }}
	var b state.Backend
	switch name {
	case "bbolt":
		bb, err := boltstate.Open(filepath.Join(e.dir, "state-"+name+".db"))
		if err != nil {
			return nil, err
		}
		b = bb
	case "postgres":
		dsn := e.st.Postgres.DSN
		schema := "bridge_bench_" + e.run + "_" + name
		ident := pgx.Identifier{schema}.Sanitize()
		if err := pgExec(ctx, dsn, "CREATE SCHEMA "+ident); err != nil {
			return nil, fmt.Errorf("postgres: create schema %s: %w", schema, err)
		}
		bs.drop = func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := pgExec(ctx, dsn, "DROP SCHEMA "+ident+" CASCADE"); err != nil {
				return fmt.Errorf("postgres: drop schema %s: %w", schema, err)
			}
			return nil
		}
		sdsn, err := withSearchPath(dsn, schema)
		if err == nil {
			b, err = pgstate.Open(ctx, sdsn)
		}
		if err != nil {
			return nil, errors.Join(err, bs.drop())
		}
	default:
		return nil, fmt.Errorf("unknown state backend %q", name)
	}
	bs.writes = &countingBackend{Backend: b}
	store, err := bridge.NewStore(bs.writes, key)
	if err != nil {
		_ = b.Close()
		return nil, errors.Join(err, bs.drop())
	}
	bs.store = store
	return bs, nil
}

// close closes the store and drops what openState created.
func (bs *benchState) close(stderr io.Writer) {
	if err := bs.store.Close(); err != nil {
		fmt.Fprintf(stderr, "bridge-bench: cleanup: %s state: %v\n", bs.name, err)
	}
	if err := bs.drop(); err != nil {
		fmt.Fprintln(stderr, "bridge-bench: cleanup:", err)
	}
}

// pgExec runs one statement on its own connection.
func pgExec(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return errors.New("cannot connect to the state database") // pgx's message may quote connection settings
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}
