// Package state is the port through which the bridge keeps its state
// durably: a Backend stores opaque, already sealed records by key, and a few
// meta values, and is held by one bridge process at a time.
//
// The bridge's Store (package bridge) keeps every record in memory, seals
// tokens before they reach a Backend and decides what a record means; a
// Backend only makes bytes durable. Adapters: boltstate (a bbolt file, the
// default), pgstate (PostgreSQL), memstate (nothing durable, for tests).
// Every adapter passes the suite in package conformance. Copy moves a state
// from one Backend to another as it is, sealed.
package state
