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

// stateNames are the backends -state accepts: a bbolt file, PostgreSQL
// held by one process (pgstate.Open), and PostgreSQL shared by replicas
// (pgstate.OpenShared, bridge.NewSharedStore): one replica, or two in this
// process on one schema with the load spread over both.
var stateNames = []string{"bbolt", "postgres", "postgres-shared", "postgres-shared2"}

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
		case strings.HasPrefix(s, "postgres") && !hasPG:
			return nil, fmt.Errorf("-state: %s needs postgres.dsn in stack.json (the stack starts it with Directus 12 on PostgreSQL)", s)
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

// stateCounter counts the calls that a Store makes to its backend and the
// time its writes take. A write is one transaction: Put, Delete and SetMeta
// of a Backend, Write of a state.Shared. The other calls are reads of the
// backend (Load, Meta, Read), Lock of a state.Shared (one statement to
// lock, one more to unlock) and leases.
type stateCounter struct {
	writes atomic.Int64
	busy   atomic.Int64 // nanoseconds in writes
	reads  atomic.Int64
	locks  atomic.Int64
	leases atomic.Int64
}

func (c *stateCounter) count(t0 time.Time) {
	c.writes.Add(1)
	c.busy.Add(int64(time.Since(t0)))
}

// stateCounts is a snapshot of one or more stateCounters.
type stateCounts struct {
	writes, reads, locks, leases int64
	busy                         time.Duration
}

// calls is every call that reached the backend: on PostgreSQL each is one
// round trip to the database or more (a Write is a transaction of several
// statements, a Lock two statements).
func (s stateCounts) calls() int64 { return s.writes + s.reads + s.locks + s.leases }

func (s stateCounts) sub(o stateCounts) stateCounts {
	return stateCounts{writes: s.writes - o.writes, reads: s.reads - o.reads, locks: s.locks - o.locks,
		leases: s.leases - o.leases, busy: s.busy - o.busy}
}

func (c *stateCounter) snapshot() stateCounts {
	return stateCounts{writes: c.writes.Load(), reads: c.reads.Load(), locks: c.locks.Load(),
		leases: c.leases.Load(), busy: time.Duration(c.busy.Load())}
}

// countingBackend counts the calls that the Store makes to the backend it
// wraps.
type countingBackend struct {
	state.Backend
	stateCounter
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

func (c *countingBackend) Load(ctx context.Context, fn func(key string, value []byte) error) error {
	c.reads.Add(1)
	return c.Backend.Load(ctx, fn)
}

func (c *countingBackend) Meta(ctx context.Context, key string) ([]byte, bool, error) {
	c.reads.Add(1)
	return c.Backend.Meta(ctx, key)
}

// countingShared counts the calls that a replica's Store makes to the
// state.Shared it wraps. OnChange and CoherentAt pass through uncounted:
// they ask the listener that the backend runs anyway, not the database.
type countingShared struct {
	state.Shared
	stateCounter
}

func (c *countingShared) Put(ctx context.Context, es []state.Entry) error {
	defer c.count(time.Now())
	return c.Shared.Put(ctx, es)
}

func (c *countingShared) Delete(ctx context.Context, key string) error {
	defer c.count(time.Now())
	return c.Shared.Delete(ctx, key)
}

func (c *countingShared) SetMeta(ctx context.Context, key string, value []byte) error {
	defer c.count(time.Now())
	return c.Shared.SetMeta(ctx, key, value)
}

func (c *countingShared) Write(ctx context.Context, ws []state.Write) ([]int64, error) {
	defer c.count(time.Now())
	return c.Shared.Write(ctx, ws)
}

func (c *countingShared) Load(ctx context.Context, fn func(key string, value []byte) error) error {
	c.reads.Add(1)
	return c.Shared.Load(ctx, fn)
}

func (c *countingShared) Meta(ctx context.Context, key string) ([]byte, bool, error) {
	c.reads.Add(1)
	return c.Shared.Meta(ctx, key)
}

func (c *countingShared) Read(ctx context.Context, keys []string) ([]state.Versioned, error) {
	c.reads.Add(1)
	return c.Shared.Read(ctx, keys)
}

func (c *countingShared) Lock(ctx context.Context, keys []string) (func(), error) {
	c.locks.Add(1)
	return c.Shared.Lock(ctx, keys)
}

func (c *countingShared) Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, int64, error) {
	c.leases.Add(1)
	return c.Shared.Lease(ctx, name, holder, ttl)
}

func (c *countingShared) Release(ctx context.Context, name, holder string) error {
	c.leases.Add(1)
	return c.Shared.Release(ctx, name, holder)
}

// benchState is one state backend of the exchange rows: a fresh bbolt file
// or a fresh PostgreSQL schema, behind call counters; one Store, or on
// postgres-shared2 two replicas' Stores on one schema.
type benchState struct {
	name     string
	stores   []*bridge.Store
	counters []*stateCounter // the calls of stores[i]
	drop     func() error    // removes the schema (PostgreSQL), after Close
}

// counts sums the counters of every replica.
func (bs *benchState) counts() stateCounts {
	var sum stateCounts
	for _, c := range bs.counters {
		s := c.snapshot()
		sum.writes += s.writes
		sum.reads += s.reads
		sum.locks += s.locks
		sum.leases += s.leases
		sum.busy += s.busy
	}
	return sum
}

// shared reports whether the backend is a state shared by replicas.
func (bs *benchState) shared() bool { return strings.HasPrefix(bs.name, "postgres-shared") }

// openState opens a fresh state of the named backend for e: a new file in
// e.dir, or a new schema bridge_bench_<run>_<name> in the stack's state
// database, reached through search_path.
func openState(ctx context.Context, e *env, name string) (*benchState, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	bs := &benchState{name: name, drop: func() error { return nil }}
	fail := func(err error) (*benchState, error) {
		for _, s := range bs.stores {
			_ = s.Close()
		}
		return nil, errors.Join(err, bs.drop())
	}
	if name == "bbolt" {
		bb, err := boltstate.Open(filepath.Join(e.dir, "state-"+name+".db"))
		if err != nil {
			return nil, err
		}
		return bs, bs.addStore(&countingBackend{Backend: bb}, key)
	}
	if !slices.Contains(stateNames, name) {
		return nil, fmt.Errorf("unknown state backend %q", name)
	}
	dsn := e.st.Postgres.DSN
	schema := "bridge_bench_" + e.run + "_" + strings.ReplaceAll(name, "-", "_")
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
	if err != nil {
		return fail(err)
	}
	if name == "postgres" {
		b, err := pgstate.Open(ctx, sdsn)
		if err != nil {
			return fail(err)
		}
		if err := bs.addStore(&countingBackend{Backend: b}, key); err != nil {
			return fail(err)
		}
		return bs, nil
	}
	replicas := 1
	if name == "postgres-shared2" {
		replicas = 2
	}
	// Each replica opens the schema on its own, as separate serve
	// processes would: its own pools, its own listener.
	for range replicas {
		b, err := pgstate.OpenShared(ctx, sdsn)
		if err != nil {
			return fail(err)
		}
		if err := bs.addStore(&countingShared{Shared: b}, key); err != nil {
			return fail(err)
		}
	}
	return bs, nil
}

// addStore opens a Store on b (closing b if that fails).
func (bs *benchState) addStore(b state.Backend, key []byte) error {
	var store *bridge.Store
	var err error
	var c *stateCounter
	switch b := b.(type) {
	case *countingShared:
		c = &b.stateCounter
		store, err = bridge.NewSharedStore(b, 0, key)
	case *countingBackend:
		c = &b.stateCounter
		store, err = bridge.NewStore(b, key)
	default:
		return fmt.Errorf("state %s: uncounted backend %T", bs.name, b)
	}
	if err != nil {
		_ = b.Close()
		return err
	}
	bs.stores = append(bs.stores, store)
	bs.counters = append(bs.counters, c)
	return nil
}

// close closes the stores and drops what openState created.
func (bs *benchState) close(stderr io.Writer) {
	for _, s := range bs.stores {
		if err := s.Close(); err != nil {
			fmt.Fprintf(stderr, "bridge-bench: cleanup: %s state: %v\n", bs.name, err)
		}
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
