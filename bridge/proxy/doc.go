// Package proxy is the bridge's proxy mode: a reverse proxy in front of
// Directus that lets clients send their IdP access token to Directus as they
// would send a Directus token, with no change to the client and no code
// inside Directus.
//
// A request whose credential is a JWT of a trusted issuer (the
// Authorization: Bearer header, or the access_token query parameter that
// Directus also reads) is exchanged in process, as POST /oauth/token
// exchanges it (bridge.Server.Swap: verification, mapping, the machine
// user's upsert, token reuse, limits, audit line), and forwarded with the
// machine user's static token in its place. The realtime protocol's auth
// message on /websocket and the GraphQL websocket's connection_init payload
// are swapped the same way. Everything else (Directus's own JWTs and static
// tokens, cookies, anonymous requests, the Directus app) passes through
// untouched apart from hop-by-hop headers and X-Forwarded-*.
//
// The proxy MUST NOT forward a trusted issuer's token to Directus: a
// refused one is answered by the proxy itself, in Directus's error shape
// (401 INVALID_CREDENTIALS or TOKEN_EXPIRED, 429 REQUESTS_EXCEEDED, 503
// SERVICE_UNAVAILABLE with Retry-After), so that Directus SDKs react as
// they do to a bad Directus token. Bodies stream both ways; a swapped
// request small enough to replay is sent again, once, with the new token
// when Directus refuses the one it carried because it was replaced in the
// meantime (a rotation by a concurrent request).
package proxy
