// Package mapping decides which Directus role and policies a machine client
// gets. It is pure logic with no I/O: an Input (issuer name, audiences,
// client id, scopes and other claims of a verified token) goes in, a
// Decision comes out, with the reason.
//
// Rules are evaluated in the order they are written and the first rule whose
// every condition holds wins. A rule either grants one role plus zero or more
// policies, or denies. When no rule matches, the client is refused: deny by
// default. A catch-all is written as an ordinary last rule with no
// conditions.
//
// Patterns in client and claim conditions are globs, not regular
// expressions: '*' matches any run of characters (including none), '?'
// matches one character, and '\' makes the next character literal.
//
// A claim is named by its top-level name or, starting with "/", by a JSON
// Pointer (RFC 6901) into nested claims (Path). A rule may also carry a
// condition in CEL, the Common Expression Language (github.com/google/cel-go),
// over the claims, issuer, audiences, client and scopes, compiled and
// type-checked when the rules are validated and bounded by a cost limit
// when evaluated.
package mapping
