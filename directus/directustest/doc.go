// Package directustest provides an in-memory fake Directus for unit tests: an
// httptest server that speaks the subset of the REST API that package
// directus uses (users, roles, policies, access rows, /server/ping and
// /server/info, static-token authentication), with request counters and
// fault injection.
//
// The fake is only trusted because it passes the same conformance suite
// (package conformance) as real Directus 12 and 11; a behaviour the suite
// does not pin down is not a behaviour to rely on.
package directustest
