// Package pgstate is the state.Backend on PostgreSQL, for a bridge whose
// state must live outside its machine. One bridge process holds a state at
// a time, as with the bbolt file: Open takes a session-level advisory lock
// (pg_try_advisory_lock) keyed by the database and schema, on one dedicated
// connection through which every read and write goes, so that nothing is
// written without the lock.
//
// The bridge creates and migrates its own tables (prefixed
// directus_bridge_, in the connection's current schema), under the lock, in
// a transaction; a schema newer than this code is refused.
//
// A holder row carries a generation, incremented by every Open. When the
// connection breaks, the operation fails; the next one reconnects, takes
// the lock again and compares the generation: if another process held the
// state in between, the Backend refuses every further operation with
// ErrTakenOver, as the process's records in memory may be stale.
//
// The DSN's password never reaches an error message.
//
// # Shared mode
//
// OpenShared opens the same tables for several bridge processes (replicas)
// at once, as a state.Shared. Each takes the state's advisory lock in
// shared mode (pg_advisory_lock_shared) on a dedicated listening
// connection: replicas do not exclude each other, but they and an
// exclusive process (Open) do, both ways (state.ErrHeld). Every write
// transaction of a replica also takes the lock in shared mode for the
// transaction, so that no write slips through in the moments after the
// listening connection broke, when an exclusive process may hold the
// state; such a write, and every operation after the listener finds the
// state held (or finds that an exclusive process opened it while it was
// disconnected, by the holder row's count of exclusive opens), fails with
// state.ErrTakenOver. Every open of either mode raises the holder
// generation, so an exclusive process that lost its connection while
// replicas wrote stops too. Migrations run in a transaction under a
// transaction-level advisory lock of their own: replicas that start
// together migrate one at a time.
//
// Locks. Lock takes session-level advisory locks, one per key: FNV-64a of
// the database, schema and key, computed in Go so that the ids are sorted
// and deduplicated before one statement takes them in that order (two
// Locks never deadlock). Each Lock holds a connection of a pool of its own
// (SharedMaxLockConns) until unlock, so two Locks of one key exclude each
// other even in one process, and a process that dies releases its locks
// with its sessions. A wait that its context ends leaves nothing held:
// the connection's locks are all released, or the connection closed.
//
// Versions. Every record has a version, a new one with every write of
// either mode (Put, and Write's inserts and updates), taken from one
// sequence of the schema (directus_bridge_record_versions): never reused,
// so a record deleted and written again never matches a version it had
// before, which a replica may hold in memory. Write applies its
// writes in one transaction with conditional statements (an update or
// delete matches the expected version, an insert finds the key absent),
// and rolls back with a *state.ConflictError naming every key that did not
// match. A key given twice in one Write is refused.
//
// Notifications. Write, Put and Delete announce their keys with pg_notify
// in their transaction, on a channel named after the database and schema
// ("directus_bridge_" and 16 hex digits of an MD5), as "<instance> <key>
// <key>..." (keys query-escaped, payloads under 7000 bytes); the instance
// is random per OpenShared, so that a replica ignores its own writes.
// The listening connection receives them and calls OnChange's function,
// one at a time, in order.
//
// Heartbeat. Every PingInterval the listening connection sends its own
// ping through the same channel, noting the local time just before. The
// server delivers notifications in the order their transactions committed,
// and a listener receives them in that order: when a ping comes back, the
// notifications of every write committed before it was sent have been
// received, and handed to OnChange's function before it. CoherentAt is the
// send time of the latest ping that came back. It is zero while the
// listening connection is down: it reconnects with backoff (100 ms to
// 2 s), listens again, takes the shared lock again, and delivers a
// Change with Reset before any other, as changes may have been missed
// meanwhile. A connection whose pings stop coming back for StaleAfter is
// taken for broken.
//
// Leases. Lease takes or renews a named lease in one statement by the
// database's clock (now()): it passes to another holder once expired, its
// fencing token rising by one each time it does. Release expires it at
// once, so another may take it.
//
// The other operations (Read, Write, Load, Meta...) use a pool of
// SharedMaxConns connections; a broken connection fails the operation
// with a plain error, and the pool connects anew for the next.
package pgstate
