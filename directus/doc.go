// Package directus is a small client for the parts of the Directus REST API
// that the bridge needs: users (create with a chosen id, read, update one or
// many with PATCH /users, list with a filter and paging, delete), roles,
// policies and the access rows that attach policies to users, the activity
// log (GET /activity, to notice what administrators changed), the server
// endpoints /server/ping and /server/info, and what a setup tool needs:
// login with email and password (POST /auth/login) and the access flags of
// the caller (GET /policies/me/globals).
//
// It knows nothing of identity providers or of the bridge's tokens: it moves
// typed values to and from Directus 11 and 12 and turns Directus error bodies
// ({"errors":[{"message","extensions":{"code"}}]}) into *APIError values.
//
// Directus answers every static-token read of a user's token with
// "**********", so a User only tells whether a token is set (HasToken).
// A user's auth_data is free JSON that the caller may keep its own data in
// (User.AuthData); the client hides that SQLite answers it as a string.
// Error messages from Directus can echo a written token (a duplicate token
// fails with the value in the message): the client removes every secret it
// sent from error messages before they reach the caller, and it MUST NOT
// return raw response bodies.
//
// The conformance sub-package holds the test suite that the real Directus
// versions and the in-memory fake in directustest must both pass.
package directus
