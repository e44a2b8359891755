// Package bridge owns the token exchange: it verifies client-credentials
// access tokens from trusted OAuth 2.0 / OIDC issuers (go-oidc, per-issuer
// JWKS, algorithm allow-lists, exact issuer and audience), maps their scopes
// to Directus roles and policies (package mapping), upserts the machine user
// in Directus (package directus) and hands out a short-lived Directus static
// token, as an RFC 8693 token-exchange endpoint (POST /oauth/token).
//
// Security rules the package keeps:
//   - A token that fails any check MUST NOT cause a Directus write.
//   - Issued tokens MUST come from crypto/rand and MUST NOT look like a JWT.
//   - A token or secret MUST NOT reach a log line or an error body; logs
//     carry Fingerprint values instead.
//   - Every issued token is recorded (sealed) in the state store before it
//     is written to Directus, so that it is revoked on expiry even after a
//     crash.
//   - The bridge only reactivates users that it suspended itself: a user a
//     Directus administrator suspended stays suspended.
//
// Directus holds one static token per user, so all instances of one client
// share a token: the bridge hands out the live token while at least
// tokens.rotate_before of its lifetime is left (or while a new one would not
// live longer), and mints a new one otherwise.
package bridge
