// Package directustest provides an in-memory fake Directus for unit tests: an
// httptest server that speaks the subset of the REST API that package
// directus uses (users, roles, policies, access rows, the activity log,
// /server/ping and /server/info, static-token authentication, login with
// email and password, /policies/me/globals), with request
// counters, fault injection, extra administrators (NewAdmin) and the ground
// truth of its users (Snapshot) for model-based tests.
//
// It behaves like Directus on PostgreSQL or on SQLite (Options.Database),
// where the two differ in what the bridge sees: json columns answered as
// values or as text, timestamps with or without a zone, varchar limits.
//
// The fake is only trusted because it passes the same conformance suite
// (package conformance) as real Directus 12 and 11; a behaviour the suite
// does not pin down is not a behaviour to rely on.
package directustest
