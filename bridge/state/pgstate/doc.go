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
package pgstate
