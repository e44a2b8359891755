// Package e2e holds the end-to-end tests: the bridge against real Directus
// 12 (PostgreSQL) and 11 (SQLite) and a real OIDC provider (oidc-provider),
// all started by testdata/stack/stack.sh. The tests read the running stack
// from the file named by DIRECTUS_BRIDGE_STACK. Without it they skip, except
// in CI (CI set), where a missing stack fails the run.
package e2e
