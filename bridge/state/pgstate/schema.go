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
)

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
}

// SchemaVersion is the version of the tables this code writes.
var SchemaVersion = len(migrations)

// migrate brings the tables to SchemaVersion in one transaction, with the
// lock held; a newer schema is refused. It returns the version found.
func migrate(ctx context.Context, conn *pgx.Conn) (int, error) {
	var found int
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
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
