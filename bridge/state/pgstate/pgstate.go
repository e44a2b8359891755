package pgstate

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/directus-bridge/directus-bridge/bridge/state"
)

// HoldTimeout is how long Open (and a reconnection) waits for another
// process to release the state before it gives up with state.ErrHeld.
var HoldTimeout = 5 * time.Second

// holdPoll is the pause between two attempts at the lock.
var holdPoll = 100 * time.Millisecond

// ErrTakenOver is state.ErrTakenOver.
var ErrTakenOver = state.ErrTakenOver

// ErrClosed is returned by an operation after Close.
var ErrClosed = errors.New("pgstate: the backend is closed")

// lockKey is the advisory lock's key: one per database and schema.
const lockKey = `hashtextextended('directus-bridge state ' || current_database() || '.' || current_schema(), 0)`

// Batch bounds of one INSERT of Put: a batch is split into statements of at
// most this many rows or bytes, in one transaction.
const (
	batchRows  = 1000
	batchBytes = 8 << 20
)

// Backend is a PostgreSQL state held through one connection.
type Backend struct {
	cfg    *pgx.ConnConfig // password inside: never printed
	secret []string        // the password as it may appear in a message

	mu     sync.Mutex // serialises every use of conn
	conn   *pgx.Conn  // nil after a break, until the next operation
	gen    int64      // the holder generation this process took
	where  string     // "database d, schema s", for messages
	lost   error      // ErrTakenOver (wrapped) once taken over
	closed bool
}

var _ state.Backend = (*Backend)(nil)

// DefaultConnectTimeout bounds one connection attempt when the DSN sets no
// connect_timeout.
var DefaultConnectTimeout = 3 * time.Second

// Open connects with dsn (a postgres:// URL or key=value string), takes the
// hold on the state of the connection's database and current schema,
// waiting up to HoldTimeout, creates or migrates the tables, and increments
// the holder generation.
func Open(ctx context.Context, dsn string) (*Backend, error) {
	cfg, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	tune(cfg)
	b := &Backend{cfg: cfg, secret: secrets(cfg.Password)}
	conn, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.hold(ctx, conn); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	if _, err := migrate(ctx, conn); err != nil {
		conn.Close(context.Background())
		return nil, b.scrub(fmt.Errorf("pgstate: %s: %w", b.where, err))
	}
	err = conn.QueryRow(ctx, `UPDATE `+holderTable+` SET generation = generation + 1, exclusive_opens = exclusive_opens + 1, taken_at = now(), backend_pid = pg_backend_pid() RETURNING generation`).Scan(&b.gen)
	if err != nil {
		conn.Close(context.Background())
		return nil, b.scrub(fmt.Errorf("pgstate: %s: take the hold: %w", b.where, err))
	}
	b.conn = conn
	return b, nil
}

// errDSN: pgx's message quotes the DSN (its password masked); ours does
// not quote it at all.
var errDSN = errors.New("pgstate: the DSN does not parse (want postgres://user:password@host:port/database?options, or key=value pairs)")

// tune sets what a DSN leaves unset: the application name, TCP keepalives
// and the connect timeout.
func tune(cfg *pgx.ConnConfig) {
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "directus-bridge"
	}
	// A bridge that vanished without closing its connection keeps the lock
	// until the server notices: let it notice within about a minute.
	for k, v := range map[string]string{"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"} {
		if _, ok := cfg.RuntimeParams[k]; !ok {
			cfg.RuntimeParams[k] = v
		}
	}
	// A server that accepts and never answers must not hold an exchange
	// for the whole state timeout on every reconnect.
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
}

func parseDSN(dsn string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errDSN
	}
	return cfg, nil
}

// CheckDSN reports whether dsn parses, without connecting (for the
// configuration's validation); its error never quotes dsn.
func CheckDSN(dsn string) error {
	_, err := parseDSN(dsn)
	return err
}

// secrets lists the forms in which password may appear in a message.
func secrets(password string) []string {
	if password == "" {
		return nil
	}
	s := []string{password, url.QueryEscape(password), url.PathEscape(password), url.UserPassword("u", password).String()[2:]}
	return s
}

// scrub masks the password in err's message, keeping err for errors.Is.
func (b *Backend) scrub(err error) error { return scrub(b.secret, err) }

// scrub masks every form of the password (secret) in err's message.
func scrub(secret []string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	masked := msg
	for _, s := range secret {
		masked = strings.ReplaceAll(masked, s, "xxxxx")
	}
	if masked == msg {
		return err
	}
	return &scrubbed{msg: masked, err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// connect opens a connection.
func (b *Backend) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, b.cfg.Copy())
	if err != nil {
		return nil, b.scrub(fmt.Errorf("pgstate: connect: %w", err))
	}
	return conn, nil
}

// hold takes the advisory lock on conn, trying for HoldTimeout (bounded
// by ctx), and sets b.where.
func (b *Backend) hold(ctx context.Context, conn *pgx.Conn) error {
	var db string
	var schema *string
	if err := conn.QueryRow(ctx, `SELECT current_database(), current_schema()`).Scan(&db, &schema); err != nil {
		return b.scrub(fmt.Errorf("pgstate: %w", err))
	}
	if schema == nil {
		return fmt.Errorf("pgstate: database %q: no schema of the search_path exists (create one, or set search_path)", db)
	}
	b.where = fmt.Sprintf("database %q, schema %q", db, *schema)
	deadline := time.Now().Add(HoldTimeout)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+lockKey+`)`).Scan(&ok); err != nil {
			return b.scrub(fmt.Errorf("pgstate: %s: take the lock: %w", b.where, err))
		}
		if ok {
			return nil
		}
		if !time.Now().Add(holdPoll).Before(deadline) {
			return fmt.Errorf("pgstate: %s: %w%s (waited %s)", b.where, state.ErrHeld, holder(ctx, conn), HoldTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgstate: %s: %w%s (%w)", b.where, state.ErrHeld, holder(ctx, conn), ctx.Err())
		case <-time.After(holdPoll):
		}
	}
}

// holder describes the session that holds the lock, when the server shows
// it.
func holder(ctx context.Context, conn *pgx.Conn) string {
	var pid int32
	var app, addr *string
	err := conn.QueryRow(ctx, `SELECT l.pid, a.application_name, host(a.client_addr)
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid::bigint = (`+lockKey+` >> 32) & 4294967295 AND l.objid::bigint = `+lockKey+` & 4294967295 AND l.objsubid = 1
		LIMIT 1`).Scan(&pid, &app, &addr)
	if err != nil {
		return ""
	}
	s := fmt.Sprintf(": server process %d", pid)
	if app != nil && *app != "" {
		s += fmt.Sprintf(", application %q", *app)
	}
	if addr != nil {
		s += ", client " + *addr
	}
	return s
}

// do runs fn on the connection, with the lock held: after a break it
// reconnects, takes the lock again and checks the holder generation first.
func (b *Backend) do(ctx context.Context, fn func(conn *pgx.Conn) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.lost != nil {
		return b.lost
	}
	if b.conn == nil || b.conn.IsClosed() {
		if err := b.reconnect(ctx); err != nil {
			return err
		}
	}
	err := fn(b.conn)
	if err != nil && b.conn.IsClosed() {
		b.conn = nil
		err = fmt.Errorf("pgstate: %s: the connection broke (the next operation reconnects): %w", b.where, err)
	}
	return b.scrub(err)
}

// reconnect replaces a broken connection; b.mu is held.
func (b *Backend) reconnect(ctx context.Context) error {
	if b.conn != nil {
		b.conn.Close(ctx)
		b.conn = nil
	}
	conn, err := b.connect(ctx)
	if err != nil {
		return err
	}
	var gen int64
	if err := b.hold(ctx, conn); err != nil {
		// Held: by this process's old session, which the server has not
		// dropped yet, or by another process that took the state over. A
		// read needs no lock: a generation that moved on says which.
		if errors.Is(err, state.ErrHeld) && conn.QueryRow(ctx, `SELECT generation FROM `+holderTable).Scan(&gen) == nil && gen != b.gen {
			conn.Close(context.Background())
			b.lost = fmt.Errorf("pgstate: %s: %w (holder generation %d, this process took %d)", b.where, ErrTakenOver, gen, b.gen)
			return b.lost
		}
		conn.Close(context.Background())
		return fmt.Errorf("%w (reconnecting)", err)
	}
	if err := conn.QueryRow(ctx, `SELECT generation FROM `+holderTable).Scan(&gen); err != nil {
		conn.Close(context.Background())
		return b.scrub(fmt.Errorf("pgstate: %s: read the holder generation: %w", b.where, err))
	}
	if gen != b.gen {
		conn.Close(context.Background())
		b.lost = fmt.Errorf("pgstate: %s: %w (holder generation %d, this process took %d)", b.where, ErrTakenOver, gen, b.gen)
		return b.lost
	}
	b.conn = conn
	return nil
}

// Load streams every record to fn. fn must not call b.
func (b *Backend) Load(ctx context.Context, fn func(key string, value []byte) error) error {
	return b.do(ctx, func(conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT key, value FROM `+recordsTable)
		if err != nil {
			return fmt.Errorf("pgstate: load: %w", err)
		}
		defer rows.Close()
		var k string
		var v []byte
		for rows.Next() {
			if err := rows.Scan(&k, &v); err != nil {
				return fmt.Errorf("pgstate: load: %w", err)
			}
			if err := fn(k, v); err != nil {
				return err
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("pgstate: load: %w", err)
		}
		return nil
	})
}

// Put writes the entries in one transaction; of a key given twice the last
// value is kept.
func (b *Backend) Put(ctx context.Context, es []state.Entry) error {
	if err := checkAll(es); err != nil || len(es) == 0 {
		return err
	}
	return b.do(ctx, func(conn *pgx.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			_, err := putTx(ctx, tx, es)
			return err
		})
	})
}

// checkAll checks every entry's bounds.
func checkAll(es []state.Entry) error {
	for _, e := range es {
		if err := state.Check(e); err != nil {
			return err
		}
	}
	return nil
}

// putTx writes es (checked) in tx, each written key with a new version of
// the sequence, and returns the keys written, each once.
func putTx(ctx context.Context, tx pgx.Tx, es []state.Entry) ([]string, error) {
	// One statement may not change a row twice: keep each key's last entry.
	last := make(map[string]int, len(es))
	for i, e := range es {
		last[e.Key] = i
	}
	written := make([]string, 0, len(last))
	keys, values, size := make([]string, 0, min(len(es), batchRows)), make([][]byte, 0, min(len(es), batchRows)), 0
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+recordsTable+` (key, value, version, updated_at)
			SELECT k, v, `+nextVersion+`, now() FROM unnest($1::text[], $2::bytea[]) AS e(k, v)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, version = `+nextVersion, keys, values)
		keys, values, size = keys[:0], values[:0], 0
		if err != nil {
			return fmt.Errorf("pgstate: put: %w", err)
		}
		return nil
	}
	for i, e := range es {
		if last[e.Key] != i {
			continue
		}
		if len(keys) == batchRows || size+len(e.Value) > batchBytes {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		v := e.Value
		if v == nil {
			v = []byte{} // NOT NULL: an empty value is not an absent one
		}
		keys, values, size = append(keys, e.Key), append(values, v), size+len(e.Key)+len(v)
		written = append(written, e.Key)
	}
	return written, flush()
}

// Delete removes the record of key.
func (b *Backend) Delete(ctx context.Context, key string) error {
	return b.do(ctx, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, `DELETE FROM `+recordsTable+` WHERE key = $1`, key); err != nil {
			return fmt.Errorf("pgstate: delete: %w", err)
		}
		return nil
	})
}

// Meta returns a meta value.
func (b *Backend) Meta(ctx context.Context, key string) ([]byte, bool, error) {
	var v []byte
	found := false
	err := b.do(ctx, func(conn *pgx.Conn) error {
		err := conn.QueryRow(ctx, `SELECT value FROM `+metaTable+` WHERE key = $1`, key).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("pgstate: meta: %w", err)
		}
		found = true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if found && v == nil {
		v = []byte{}
	}
	return v, found, nil
}

// SetMeta writes a meta value.
func (b *Backend) SetMeta(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	return b.do(ctx, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `INSERT INTO `+metaTable+` (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		if err != nil {
			return fmt.Errorf("pgstate: set meta: %w", err)
		}
		return nil
	})
}

// Close closes the connection, which releases the lock.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Unlocked before the connection goes, so that the next process need
	// not wait for the server to end this session.
	_, _ = b.conn.Exec(ctx, `SELECT pg_advisory_unlock(`+lockKey+`)`)
	err := b.conn.Close(ctx)
	b.conn = nil
	return b.scrub(err)
}

// generation returns the holder generation this process took (tests).
func (b *Backend) generation() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gen
}

// backendPID returns the server process of the connection, 0 when there is
// none (tests).
func (b *Backend) backendPID() uint32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return 0
	}
	return b.conn.PgConn().PID()
}
