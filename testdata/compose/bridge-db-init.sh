#!/bin/sh
# Creates the role and the database that hold the state of the two bridges of
# the standby profile, or of the two replicas of the replicas profile, of
# docker-compose.yml (service bridge-db-init), in the
# compose PostgreSQL, through psql as its superuser (PGHOST, PGUSER,
# PGPASSWORD, PGDATABASE from the service's environment).
#
# Idempotent, and run by every `docker compose --profile standby up` (or `replicas`), not only
# on the first start of an empty database volume: what exists is kept, and
# the password is set again each time, so that a changed
# DIRECTUS_BRIDGE_DB_PASSWORD applies.
#
# The role owns its database, so the bridge can create its tables there (in
# the public schema, which PostgreSQL 15 gives the database owner).
#
# The password reaches psql through the environment (\getenv), never on a
# command line; VERBOSITY terse keeps the statement out of any error message.
set -eu

ROLE=directus_bridge
DATABASE=directus_bridge

if [ -z "${DIRECTUS_BRIDGE_DB_PASSWORD:-}" ]; then
  echo 'bridge-db-init: DIRECTUS_BRIDGE_DB_PASSWORD is not set' >&2
  exit 2
fi

psql -X -q -v ON_ERROR_STOP=1 -v VERBOSITY=terse -v role="$ROLE" -v database="$DATABASE" <<'SQL'
\getenv password DIRECTUS_BRIDGE_DB_PASSWORD
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'role') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
SQL

echo "bridge-db-init: role $ROLE and database $DATABASE ready"
