package pgstate

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Table names, in the connection's current schema.
const (
	versionTable = "directus_bridge_schema_version"
	recordsTable = "directus_bridge_records"
	metaTable    = "directus_bridge_meta"
	holderTable  = "directus_bridge_holder"
	leasesTable  = "directus_bridge_leases"
	// versionSeq hands out every record version, of both modes: never
	// reused, so a record deleted and written again never matches a
	// version it had before (which a replica holds in memory).
	versionSeq = "directus_bridge_record_versions"
)

// nextVersion is the SQL of a new record version.
const nextVersion = `nextval('` + versionSeq + `')`

// migrations[i] brings the schema from version i to version i+1. Append
// only: a released migration never changes.
var migrations = []string{
	// v1: records, meta values, and the holder row that fences a process
	// that lost its hold.
	`CREATE TABLE ` + recordsTable + ` (
		key text PRIMARY KEY,
		value bytea NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE ` + metaTable + ` (
		key text PRIMARY KEY,
		value bytea NOT NULL
	);
	CREATE TABLE ` + holderTable + ` (
		id boolean PRIMARY KEY DEFAULT true CHECK (id),
		generation bigint NOT NULL,
		taken_at timestamptz NOT NULL DEFAULT now(),
		backend_pid integer NOT NULL DEFAULT pg_backend_pid()
	);
	INSERT INTO ` + holderTable + ` (generation) VALUES (0);`,
	// v2: shared mode (OpenShared). Every record has a version, taken from
	// one sequence by every write of either mode (the records of v1 each
	// get their own as the column is added: its default is volatile);
	// leases carry a fencing token; the holder row counts the exclusive
	// opens, which a shared process compares after a reconnection to see
	// whether an exclusive one held the state since.
	`CREATE SEQUENCE ` + versionSeq + `;
	ALTER TABLE ` + recordsTable + ` ADD COLUMN version bigint NOT NULL DEFAULT ` + nextVersion + `;
	ALTER SEQUENCE ` + versionSeq + ` OWNED BY ` + recordsTable + `.version;
	CREATE TABLE ` + leasesTable + ` (
		name text PRIMARY KEY,
		holder text NOT NULL,
		token bigint NOT NULL,
		expires_at timestamptz NOT NULL
	);
	ALTER TABLE ` + holderTable + ` ADD COLUMN exclusive_opens bigint NOT NULL DEFAULT 0;`,
}

// migrateKey is the transaction-level advisory lock that serialises
// migrations: shared processes that start together hold the state's lock
// together, and would otherwise create the same tables at once.
const migrateKey = `hashtextextended('directus-bridge migrate ' || current_database() || '.' || current_schema(), 0)`

// SchemaVersion is the version of the tables this code writes.
var SchemaVersion = len(migrations)

// migrate brings the tables to SchemaVersion in one transaction, with the
// state's lock held (exclusive or shared) and, first thing in the
// transaction, the migration lock; a newer schema is refused. It returns
// the version found.
func migrate(ctx context.Context, conn *pgx.Conn) (int, error) {
	var found int
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+migrateKey+`)`); err != nil {
			return fmt.Errorf("take the migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+versionTable+` (
			version integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("create %s: %w", versionTable, err)
		}
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+versionTable).Scan(&found); err != nil {
			return fmt.Errorf("read the schema version: %w", err)
		}
		if found > SchemaVersion {
			return fmt.Errorf("the tables are at schema version %d, newer than this directus-bridge knows (%d): a newer bridge migrated them; run that version (or a newer one), or point state.dsn_env at another database or schema", found, SchemaVersion)
		}
		for v := found; v < SchemaVersion; v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migrate to schema version %d: %w", v+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+versionTable+` (version) VALUES ($1)`, v+1); err != nil {
				return fmt.Errorf("migrate to schema version %d: %w", v+1, err)
			}
		}
		return nil
	})
	return found, err
}
