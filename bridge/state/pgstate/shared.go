package pgstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/directus-bridge/directus-bridge/bridge/state"
)

// SharedMaxConns bounds the connections of a Shared's pool for reads and
// writes; SharedMaxLockConns bounds those that Lock holds, a pool of their
// own so that Locks (held, or waiting) never starve the Read and Write that
// their holders go on to make.
var (
	SharedMaxConns     int32 = 10
	SharedMaxLockConns int32 = 10
)

// PingInterval is the pause between two heartbeats of a Shared's listener
// (see CoherentAt).
var PingInterval = 250 * time.Millisecond

// StaleAfter is how long a listener waits for its own heartbeat before it
// takes its connection for broken (a network that drops packets silently
// breaks no connection for minutes).
var StaleAfter = 10 * time.Second

// Reconnection backoff of the listener.
var (
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 2 * time.Second
)

// notifyBytes bounds one notification's payload (the server's limit is
// 8000 bytes).
const notifyBytes = 7000

// Shared is the PostgreSQL state shared by several bridge processes on one
// database and schema (see the package documentation). It implements
// state.Shared.
type Shared struct {
	secret   []string
	where    string // "database d, schema s", for messages
	channel  string // the notification channel of the state
	instance string // random, names this Shared's writes in notifications
	lockBase string // what every key's lock hash starts with
	lcfg     *pgx.ConnConfig
	exclOpen int64 // exclusive_opens when this Shared opened

	pool     *pgxpool.Pool
	lockPool *pgxpool.Pool

	base context.Context // ends with Close
	stop context.CancelFunc
	done chan struct{} // closed when the listener has stopped

	coherent atomic.Pointer[time.Time] // nil: not known
	lpid     atomic.Uint32             // the listener's server process (tests)

	mu     sync.Mutex
	fn     func(state.Change)
	lost   error // ErrTakenOver (wrapped) once taken over
	closed bool
	held   map[*heldLock]struct{}
}

var _ state.Shared = (*Shared)(nil)

// heldLock is one Lock's connection, until unlock (or Close) claims it.
type heldLock struct {
	conn *pgxpool.Conn
}

// OpenShared connects with dsn (as Open), takes the state's advisory lock
// in shared mode on a dedicated listening connection, waiting up to
// HoldTimeout while an exclusive process (Open) holds it (then it fails
// with state.ErrHeld), creates or migrates the tables, and starts listening
// for the other processes' writes.
func OpenShared(ctx context.Context, dsn string) (*Shared, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, errDSN
	}
	tune(pcfg.ConnConfig)
	s := &Shared{secret: secrets(pcfg.ConnConfig.Password), instance: randomID(), held: map[*heldLock]struct{}{}}
	// The listener waits for notifications with a deadline: the deadline
	// handler interrupts the wait without a cancel request, which could
	// reach the server while the next heartbeat's statement runs.
	s.lcfg = pcfg.ConnConfig.Copy()
	s.lcfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: pc.Conn()}
	}
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Shared, error) {
		conn.Close(context.Background())
		return nil, s.scrub(err)
	}
	var db string
	var schema *string
	if err := conn.QueryRow(ctx, `SELECT current_database(), current_schema(), 'directus_bridge_' || left(md5(current_database() || '.' || current_schema()), 16)`).Scan(&db, &schema, &s.channel); err != nil {
		return fail(fmt.Errorf("pgstate: %w", err))
	}
	if schema == nil {
		return fail(fmt.Errorf("pgstate: database %q: no schema of the search_path exists (create one, or set search_path)", db))
	}
	s.where = fmt.Sprintf("database %q, schema %q", db, *schema)
	s.lockBase = "directus-bridge lock\x00" + db + "\x00" + *schema + "\x00"
	if err := s.holdShared(ctx, conn); err != nil {
		return fail(err)
	}
	if _, err := migrate(ctx, conn); err != nil {
		return fail(fmt.Errorf("pgstate: %s: %w", s.where, err))
	}
	// The generation rises with every open of either mode: an exclusive
	// process that lost its connection and finds it changed knows that
	// others wrote meanwhile.
	if err := conn.QueryRow(ctx, `UPDATE `+holderTable+` SET generation = generation + 1 RETURNING exclusive_opens`).Scan(&s.exclOpen); err != nil {
		return fail(fmt.Errorf("pgstate: %s: raise the holder generation: %w", s.where, err))
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return fail(fmt.Errorf("pgstate: %s: listen: %w", s.where, err))
	}
	pcfg.MaxConns = SharedMaxConns
	lpcfg := pcfg.Copy()
	lpcfg.MaxConns = SharedMaxLockConns
	if s.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return fail(fmt.Errorf("pgstate: %s: connection pool: %w", s.where, err))
	}
	if s.lockPool, err = pgxpool.NewWithConfig(ctx, lpcfg); err != nil {
		s.pool.Close()
		return fail(fmt.Errorf("pgstate: %s: connection pool: %w", s.where, err))
	}
	s.base, s.stop = context.WithCancel(context.Background())
	s.done = make(chan struct{})
	s.lpid.Store(conn.PgConn().PID())
	go s.listen(conn)
	return s, nil
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Shared) scrub(err error) error { return scrub(s.secret, err) }

func (s *Shared) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.lcfg.Copy())
	if err != nil {
		return nil, s.scrub(fmt.Errorf("pgstate: connect: %w", err))
	}
	return conn, nil
}

// holdShared takes the state's lock in shared mode on conn, trying for
// HoldTimeout (bounded by ctx): only an exclusive holder keeps it from us.
func (s *Shared) holdShared(ctx context.Context, conn *pgx.Conn) error {
	deadline := time.Now().Add(HoldTimeout)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock_shared(`+lockKey+`)`).Scan(&ok); err != nil {
			return s.scrub(fmt.Errorf("pgstate: %s: take the shared lock: %w", s.where, err))
		}
		if ok {
			return nil
		}
		if !time.Now().Add(holdPoll).Before(deadline) {
			return fmt.Errorf("pgstate: %s: %w in exclusive mode%s (waited %s)", s.where, state.ErrHeld, holder(ctx, conn), HoldTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgstate: %s: %w in exclusive mode%s (%w)", s.where, state.ErrHeld, holder(ctx, conn), ctx.Err())
		case <-time.After(holdPoll):
		}
	}
}

// check refuses an operation after Close or a takeover.
func (s *Shared) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return s.lost
}

// fail wraps a failed operation's error for the operator.
func (s *Shared) fail(what string, err error) error {
	return s.scrub(fmt.Errorf("pgstate: %s: %s: %w", s.where, what, err))
}

// takenOver records that an exclusive process holds the state.
func (s *Shared) takenOver(how string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost == nil {
		s.lost = fmt.Errorf("pgstate: %s: %w (%s)", s.where, ErrTakenOver, how)
	}
	return s.lost
}

// writeTx runs fn in a transaction that holds the state's lock in shared
// mode: the listener's session lock alone would let a write through in the
// moments after the listener lost its connection, when an exclusive
// process may already hold the state.
func (s *Shared) writeTx(ctx context.Context, what string, fn func(tx pgx.Tx) error) error {
	if err := s.check(); err != nil {
		return err
	}
	var taken bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var ok bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock_shared(`+lockKey+`)`).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			taken = true
			return errors.New("held")
		}
		return fn(tx)
	})
	if taken {
		return s.takenOver("an exclusive process holds it")
	}
	var conflict *state.ConflictError
	if errors.As(err, &conflict) {
		return err
	}
	if err != nil {
		return s.fail(what, err)
	}
	return nil
}

// notify announces keys in tx, in payloads under notifyBytes.
func (s *Shared) notify(ctx context.Context, tx pgx.Tx, keys []string) error {
	for _, p := range payloads(s.instance, keys) {
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel, p); err != nil {
			return fmt.Errorf("notify: %w", err)
		}
	}
	return nil
}

// payloads encodes keys as "<instance> <key> <key>...", each key
// query-escaped (a key may hold spaces), each payload under notifyBytes.
func payloads(instance string, keys []string) []string {
	var out []string
	var b strings.Builder
	for _, k := range keys {
		e := url.QueryEscape(k)
		if b.Len() > 0 && b.Len()+1+len(e) > notifyBytes {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString(instance)
		}
		b.WriteByte(' ')
		b.WriteString(e)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// Load streams every record to fn.
func (s *Shared) Load(ctx context.Context, fn func(key string, value []byte) error) error {
	if err := s.check(); err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, `SELECT key, value FROM `+recordsTable)
	if err != nil {
		return s.fail("load", err)
	}
	defer rows.Close()
	var k string
	var v []byte
	for rows.Next() {
		if err := rows.Scan(&k, &v); err != nil {
			return s.fail("load", err)
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return s.fail("load", err)
	}
	return nil
}

// Put writes the entries unconditionally in one transaction (of a key
// given twice the last value is kept), raising their versions, and
// announces them.
func (s *Shared) Put(ctx context.Context, es []state.Entry) error {
	if err := checkAll(es); err != nil || len(es) == 0 {
		return err
	}
	return s.writeTx(ctx, "put", func(tx pgx.Tx) error {
		keys, err := putTx(ctx, tx, es)
		if err != nil {
			return err
		}
		return s.notify(ctx, tx, keys)
	})
}

// Delete removes the record of key unconditionally, and announces it.
func (s *Shared) Delete(ctx context.Context, key string) error {
	return s.writeTx(ctx, "delete", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM `+recordsTable+` WHERE key = $1`, key)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		return s.notify(ctx, tx, []string{key})
	})
}

// Meta returns a meta value.
func (s *Shared) Meta(ctx context.Context, key string) ([]byte, bool, error) {
	if err := s.check(); err != nil {
		return nil, false, err
	}
	var v []byte
	err := s.pool.QueryRow(ctx, `SELECT value FROM `+metaTable+` WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.fail("meta", err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, true, nil
}

// SetMeta writes a meta value (not announced: Changes are of records).
func (s *Shared) SetMeta(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	return s.writeTx(ctx, "set meta", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO `+metaTable+` (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		return err
	})
}

// lockID is the advisory lock of key: FNV-64a of the database, schema and
// key (computed here, so that Lock sorts them as the server will take
// them). Two keys that collide share a lock, which costs waiting, never
// correctness.
func (s *Shared) lockID(key string) int64 {
	h := fnv.New64a()
	h.Write([]byte(s.lockBase))
	h.Write([]byte(key))
	return int64(h.Sum64())
}

// Lock takes the session-level advisory locks of keys on a connection of
// its own, which it keeps until unlock: two Locks of one key exclude each
// other even within one process. The locks are taken in ascending order of
// their ids, so that two Locks never deadlock.
func (s *Shared) Lock(ctx context.Context, keys []string) (func(), error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, s.lockID(k))
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) == 0 {
		return func() {}, nil
	}
	// Close ends a wait too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.base, cancel)()
	ended := func(err error) error {
		switch {
		case s.base.Err() != nil:
			return ErrClosed
		case ctx.Err() != nil:
			return fmt.Errorf("pgstate: %s: lock: %w", s.where, ctx.Err())
		}
		return s.fail("lock", err)
	}
	conn, err := s.lockPool.Acquire(ctx)
	if err != nil {
		return nil, ended(err)
	}
	// The function scan yields the array's elements in order, and the
	// aggregate takes each lock as its row comes: in ascending order.
	_, err = conn.Exec(ctx, `SELECT count(pg_advisory_lock(k)) FROM unnest($1::bigint[]) AS k`, ids)
	if err != nil {
		// The locks taken before the wait ended stay with the session.
		release(conn)
		return nil, ended(err)
	}
	h := &heldLock{conn: conn}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		release(conn)
		return nil, ErrClosed
	}
	s.held[h] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		_, mine := s.held[h]
		delete(s.held, h)
		s.mu.Unlock()
		if mine {
			release(h.conn)
		}
	}, nil
}

// release unlocks every advisory lock of conn's session and gives conn back
// to its pool, or closes it when that fails (the server then drops the
// locks with the session).
func release(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		conn.Hijack().Close(ctx)
		return
	}
	conn.Release()
}

// Read returns the records of keys with their versions.
func (s *Shared) Read(ctx context.Context, keys []string) ([]state.Versioned, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT key, value, version FROM `+recordsTable+` WHERE key = ANY($1)`, keys)
	if err != nil {
		return nil, s.fail("read", err)
	}
	vs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (state.Versioned, error) {
		var v state.Versioned
		err := r.Scan(&v.Key, &v.Value, &v.Version)
		if err == nil && v.Value == nil {
			v.Value = []byte{}
		}
		return v, err
	})
	if err != nil {
		return nil, s.fail("read", err)
	}
	return vs, nil
}

// Write applies ws in one transaction if every version is still the
// expected one. A key given twice is refused.
func (s *Shared) Write(ctx context.Context, ws []state.Write) ([]int64, error) {
	seen := make(map[string]bool, len(ws))
	for _, w := range ws {
		if err := state.Check(state.Entry{Key: w.Key, Value: w.Value}); err != nil {
			return nil, err
		}
		if w.Expect < 0 {
			return nil, fmt.Errorf("pgstate: write: key %q: expected version %d below 0", w.Key, w.Expect)
		}
		if seen[w.Key] {
			return nil, fmt.Errorf("pgstate: write: key %q given twice in one write", w.Key)
		}
		seen[w.Key] = true
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	if len(ws) == 0 {
		return []int64{}, nil
	}
	var ins, upd, del, absent struct {
		keys   []string
		values [][]byte
		expect []int64
	}
	for _, w := range ws {
		v := w.Value
		if v == nil {
			v = []byte{}
		}
		switch {
		case w.Delete && w.Expect == 0:
			absent.keys = append(absent.keys, w.Key)
		case w.Delete:
			del.keys, del.expect = append(del.keys, w.Key), append(del.expect, w.Expect)
		case w.Expect == 0:
			ins.keys, ins.values = append(ins.keys, w.Key), append(ins.values, v)
		default:
			upd.keys, upd.values, upd.expect = append(upd.keys, w.Key), append(upd.values, v), append(upd.expect, w.Expect)
		}
	}
	versions := make(map[string]int64, len(ws))
	var mismatched []string
	err := s.writeTx(ctx, "write", func(tx pgx.Tx) error {
		clear(versions)
		// Each statement is conditional: a row that another transaction
		// is changing is waited for, then judged by its committed version.
		done := map[string]bool{}
		collect := func(sql string, args ...any) error {
			rows, err := tx.Query(ctx, sql, args...)
			if err != nil {
				return err
			}
			var k string
			var v int64
			_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error {
				done[k], versions[k] = true, v
				return nil
			})
			return err
		}
		if len(ins.keys) > 0 {
			if err := collect(`INSERT INTO `+recordsTable+` (key, value, version, updated_at)
				SELECT k, v, `+nextVersion+`, now() FROM unnest($1::text[], $2::bytea[]) AS e(k, v)
				ON CONFLICT (key) DO NOTHING RETURNING key, version`, ins.keys, ins.values); err != nil {
				return err
			}
		}
		if len(upd.keys) > 0 {
			if err := collect(`UPDATE `+recordsTable+` r SET value = e.v, version = `+nextVersion+`, updated_at = now()
				FROM unnest($1::text[], $2::bytea[], $3::bigint[]) AS e(k, v, x)
				WHERE r.key = e.k AND r.version = e.x RETURNING r.key, r.version`, upd.keys, upd.values, upd.expect); err != nil {
				return err
			}
		}
		if len(del.keys) > 0 {
			if err := collect(`DELETE FROM `+recordsTable+` r USING unnest($1::text[], $2::bigint[]) AS e(k, x)
				WHERE r.key = e.k AND r.version = e.x RETURNING r.key, 0::bigint`, del.keys, del.expect); err != nil {
				return err
			}
		}
		if len(absent.keys) > 0 {
			// A delete of a key expected absent changes nothing; it holds
			// if no committed row has the key.
			present := map[string]bool{}
			rows, err := tx.Query(ctx, `SELECT key FROM `+recordsTable+` WHERE key = ANY($1) FOR SHARE`, absent.keys)
			if err != nil {
				return err
			}
			var k string
			if _, err := pgx.ForEachRow(rows, []any{&k}, func() error { present[k] = true; return nil }); err != nil {
				return err
			}
			for _, k := range absent.keys {
				done[k] = !present[k]
			}
		}
		mismatched = mismatched[:0]
		var changed []string
		for _, w := range ws {
			if !done[w.Key] {
				mismatched = append(mismatched, w.Key)
			} else if !(w.Delete && w.Expect == 0) {
				changed = append(changed, w.Key)
			}
		}
		if len(mismatched) > 0 {
			return &state.ConflictError{Keys: mismatched}
		}
		return s.notify(ctx, tx, changed)
	})
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(ws))
	for i, w := range ws {
		if !w.Delete {
			out[i] = versions[w.Key]
		}
	}
	return out, nil
}

// Lease takes or renews the named lease, by the database's clock, in one
// statement.
func (s *Shared) Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, int64, error) {
	if err := s.check(); err != nil {
		return false, 0, err
	}
	if name == "" || holder == "" || ttl <= 0 {
		return false, 0, fmt.Errorf("pgstate: lease: a name, a holder and a positive ttl are needed (name %q, holder %q, ttl %s)", name, holder, ttl)
	}
	var token int64
	err := s.pool.QueryRow(ctx, `INSERT INTO `+leasesTable+` AS l (name, holder, token, expires_at)
		VALUES ($1, $2, 1, now() + $3 * interval '1 microsecond')
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
			token = l.token + CASE WHEN l.holder = excluded.holder THEN 0 ELSE 1 END,
			expires_at = excluded.expires_at
		WHERE l.holder = excluded.holder OR l.expires_at <= now()
		RETURNING token`, name, holder, ttl.Microseconds()).Scan(&token)
	if err == nil {
		return true, token, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return false, 0, s.fail("lease "+strconv.Quote(name), err)
	}
	err = s.pool.QueryRow(ctx, `SELECT token FROM `+leasesTable+` WHERE name = $1`, name).Scan(&token)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, 0, s.fail("lease "+strconv.Quote(name), err)
	}
	return false, token, nil
}

// Release ends the named lease at once if holder has it; its token rises
// when another takes it.
func (s *Shared) Release(ctx context.Context, name, holder string) error {
	if err := s.check(); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `UPDATE `+leasesTable+` SET expires_at = now() WHERE name = $1 AND holder = $2 AND expires_at > now()`, name, holder)
	if err != nil {
		return s.fail("release lease "+strconv.Quote(name), err)
	}
	return nil
}

// OnChange sets fn (see state.Shared).
func (s *Shared) OnChange(fn func(state.Change)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fn = fn
}

// CoherentAt returns the local time before the listener's latest heartbeat
// that came back to it (see the package documentation), zero while the
// listener is disconnected or before its first heartbeat.
func (s *Shared) CoherentAt() time.Time {
	if t := s.coherent.Load(); t != nil {
		return *t
	}
	return time.Time{}
}

// Close stops the listener, which releases the shared lock, and closes the
// pools; the locks that Lock still holds are released with their
// connections.
func (s *Shared) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	held := s.held
	s.held = nil
	s.mu.Unlock()
	s.stop()
	<-s.done
	for h := range held {
		h.conn.Hijack().Close(context.Background())
	}
	s.lockPool.Close()
	s.pool.Close()
	return nil
}

// deliver calls fn, if set, with c.
func (s *Shared) deliver(c state.Change) {
	s.mu.Lock()
	fn := s.fn
	s.mu.Unlock()
	if fn != nil {
		fn(c)
	}
}

// listen is the listener's goroutine: it serves conn until it breaks, then
// reconnects, until Close or a takeover.
func (s *Shared) listen(conn *pgx.Conn) {
	defer close(s.done)
	for {
		s.serve(conn)
		s.coherent.Store(nil)
		s.lpid.Store(0)
		s.closeListener(conn)
		if conn = s.reconnect(); conn == nil {
			return
		}
		s.lpid.Store(conn.PgConn().PID())
		s.deliver(state.Change{Reset: true})
	}
}

// closeListener releases the shared lock (when the connection still works)
// and closes conn.
func (s *Shared) closeListener(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if !conn.IsClosed() {
		_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock_shared(`+lockKey+`)`)
	}
	conn.Close(ctx)
}

// reconnect connects again with backoff, listens, takes the shared lock and
// checks that no exclusive process held the state meanwhile. It returns nil
// after Close or a takeover.
func (s *Shared) reconnect() *pgx.Conn {
	pause := reconnectMin
	for {
		select {
		case <-s.base.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, reconnectMax)
		conn, taken := s.relisten()
		if taken {
			return nil
		}
		if conn != nil {
			return conn
		}
	}
}

// relisten is one reconnection attempt: a connection, or nil (try again),
// or taken when an exclusive process holds or held the state.
func (s *Shared) relisten() (conn *pgx.Conn, taken bool) {
	ctx, cancel := context.WithTimeout(s.base, 10*time.Second)
	defer cancel()
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, false
	}
	fail := func() (*pgx.Conn, bool) { conn.Close(context.Background()); return nil, false }
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return fail()
	}
	var ok bool
	var excl int64
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock_shared(`+lockKey+`)`).Scan(&ok); err != nil {
		return fail()
	}
	if !ok {
		conn.Close(context.Background())
		s.takenOver("an exclusive process holds it")
		return nil, true
	}
	if err := conn.QueryRow(ctx, `SELECT exclusive_opens FROM `+holderTable).Scan(&excl); err != nil {
		return fail()
	}
	if excl != s.exclOpen {
		conn.Close(context.Background())
		s.takenOver(fmt.Sprintf("an exclusive process held it while this one was disconnected: %d exclusive opens, %d when this one opened", excl, s.exclOpen))
		return nil, true
	}
	return conn, false
}

// ping is one heartbeat: its number and the local time before it was sent.
type ping struct {
	n    int64
	sent time.Time
}

// serve delivers the notifications of conn and sends its heartbeats, until
// conn breaks, its heartbeats stop coming back, or Close.
func (s *Shared) serve(conn *pgx.Conn) {
	var (
		pending  []ping // heartbeats sent, not yet back, in order
		n        int64
		next     = time.Now() // when to send the next heartbeat
		lastBack = time.Now()
		prefix   = "ping " + s.instance + " "
	)
	for {
		if s.base.Err() != nil {
			return
		}
		now := time.Now()
		if !now.Before(next) {
			if now.Sub(lastBack) > StaleAfter {
				return // the heartbeats stopped coming back
			}
			n++
			sent := time.Now()
			ctx, cancel := context.WithTimeout(s.base, StaleAfter)
			_, err := conn.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel, prefix+strconv.FormatInt(n, 10))
			cancel()
			if err != nil {
				return
			}
			pending = append(pending, ping{n, sent})
			if len(pending) > 1000 { // bounded, whatever happens
				pending = pending[1:]
			}
			next = sent.Add(PingInterval)
		}
		ctx, cancel := context.WithDeadline(s.base, next)
		msg, err := conn.WaitForNotification(ctx)
		cancel()
		if msg != nil {
			s.handle(msg, prefix, &pending, &lastBack)
		}
		if err != nil && (conn.IsClosed() || s.base.Err() != nil || !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err)) {
			return
		}
	}
}

// handle delivers one notification: its own heartbeat sets CoherentAt,
// another process's keys go to fn.
func (s *Shared) handle(msg *pgconn.Notification, prefix string, pending *[]ping, lastBack *time.Time) {
	if msg.Channel != s.channel {
		return
	}
	if rest, ok := strings.CutPrefix(msg.Payload, prefix); ok {
		got, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			return
		}
		*lastBack = time.Now()
		for len(*pending) > 0 && (*pending)[0].n <= got {
			if (*pending)[0].n == got {
				t := (*pending)[0].sent
				s.coherent.Store(&t)
			}
			*pending = (*pending)[1:]
		}
		return
	}
	from, keys, ok := strings.Cut(msg.Payload, " ")
	if !ok || from == s.instance || from == "ping" {
		return
	}
	for _, e := range strings.Split(keys, " ") {
		k, err := url.QueryUnescape(e)
		if err != nil || k == "" {
			continue
		}
		s.deliver(state.Change{Key: k})
	}
}

// listenerPID returns the listener's server process, 0 while disconnected
// (tests).
func (s *Shared) listenerPID() uint32 { return s.lpid.Load() }

// lockPIDs returns the server processes of the connections that hold
// Locks (tests).
func (s *Shared) lockPIDs() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pids []uint32
	for h := range s.held {
		pids = append(pids, h.conn.Conn().PgConn().PID())
	}
	return pids
}
