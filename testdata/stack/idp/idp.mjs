// Local OAuth2/OIDC identity provider for the directus-bridge end-to-end tests.
//
//   node idp.mjs --host 127.0.0.1 --port <port> --out <file.json>
//
// One HTTP server hosts oidc-provider issuers under path prefixes, each
// imitating a real IdP's or workload platform's JWT access tokens (see
// README.md).
// Keys are generated at every start; everything lives in memory; no outbound
// network. <file.json> is written (atomically) only once the server is ready.
import { createHash, randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import { calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' }, // 0 = pick a free port (see "url" in the out file)
    out: { type: 'string' },
  },
});

const AUDIENCE = 'https://directus-bridge.test/api'; // default resource (aud) of every issuer
const DEFAULT_TOKEN_TTL = 600; // seconds, unless the client registered "token_ttl"
const ENTRA_TENANT = '8f1b2d3c-4e5f-4a6b-9c7d-0e1f2a3b4c5d'; // the entra issuer's tenant id (tid)

// name -> path (the auth0 issuer ends with "/" like real Auth0 tenants), alg,
// and how its access tokens differ from oidc-provider's default payload
// { jti, sub: client_id, iat, exp, scope: "a b", client_id, iss, aud }.
const ISSUERS = {
  auth0: {
    path: '/auth0/',
    alg: 'RS256',
    // Auth0-like endpoint paths (only cosmetic; everything is in discovery).
    routes: { token: '/oauth/token', jwks: '/.well-known/jwks.json', registration: '/oidc/register' },
    shape(p) {
      p.azp = p.client_id;
      p.sub = `${p.client_id}@clients`;
      p.gty = 'client-credentials';
      delete p.client_id; // real Auth0 tokens carry azp, not client_id
    },
  },
  supertokens: {
    path: '/supertokens',
    alg: 'ES256',
    shape(p) {
      p.scp = p.scope ? p.scope.split(' ') : [];
      delete p.scope;
      p.stt = 1;
    },
  },
  eddsa: {
    path: '/eddsa',
    alg: 'EdDSA', // Ed25519 key
    shape() {}, // default payload: scope string, sub = client_id, client_id
  },
  // Keycloak (realm "machines"): a service account's access token.
  keycloak: {
    path: '/keycloak/realms/machines',
    alg: 'RS256',
    header: { typ: 'JWT' },
    shape(p) {
      const client = p.client_id;
      p.sub = uuidFrom('keycloak-service-account', client); // the service-account user's id
      p.typ = 'Bearer';
      p.azp = client;
      p.acr = '1';
      p.preferred_username = `service-account-${client}`.toLowerCase();
      p.realm_access = { roles: ['default-roles-machines', 'offline_access', 'uma_authorization'] };
      p.resource_access = { account: { roles: ['manage-account', 'view-profile'] } };
      p.clientHost = '127.0.0.1';
      p.clientAddress = '127.0.0.1';
      // client_id stays: Keycloak 24 and later send it too (earlier: clientId).
      if (!p.scope) delete p.scope;
    },
  },
  // Okta custom authorization server "default".
  okta: {
    path: '/okta/oauth2/default',
    alg: 'RS256',
    header: { typ: undefined },
    shape(p) {
      p.ver = 1;
      p.jti = `AT.${p.jti}`;
      p.cid = p.client_id;
      p.scp = p.scope ? p.scope.split(' ') : [];
      delete p.scope;
      delete p.client_id;
      // sub = the client id; a machine's token has no uid (a user's has).
    },
  },
  // Microsoft Entra ID, v2.0 access token of an app (client credentials).
  entra: {
    path: `/entra/${ENTRA_TENANT}/v2.0`,
    alg: 'RS256',
    header: { typ: 'JWT' },
    shape(p) {
      const client = p.client_id;
      p.aio = 'k2BgYDi4Gfwp1oH3d3uNnJgoAA==';
      p.azp = client;
      p.azpacr = '1';
      p.idtyp = 'app';
      p.nbf = p.iat;
      p.oid = uuidFrom('entra-service-principal', client);
      p.rh = '0.AAAA.';
      p.sub = p.oid; // app-only tokens: sub is the service principal's oid
      p.tid = ENTRA_TENANT;
      p.uti = p.jti;
      p.ver = '2.0';
      // Client credentials: app roles in "roles" (set per client), no scp.
      delete p.scope;
      delete p.client_id;
      delete p.jti;
    },
  },
  // Kubernetes projected service-account token (TokenRequest API).
  kubernetes: {
    path: '/kubernetes',
    alg: 'RS256',
    header: { typ: undefined },
    shape(p, claims) {
      const k = claims['kubernetes.io'] ?? {};
      const ns = k.namespace ?? 'default';
      const name = k.serviceaccount?.name ?? p.client_id;
      p.aud = [p.aud];
      p.nbf = p.iat;
      p.sub = `system:serviceaccount:${ns}:${name}`;
      p['kubernetes.io'] = {
        namespace: ns,
        node: { name: 'node-1', uid: uuidFrom('k8s-node', 'node-1') },
        pod: { name: `${name}-7d4b9c6f5-x2x8q`, uid: uuidFrom('k8s-pod', `${ns}/${name}`) },
        serviceaccount: { name, uid: uuidFrom('k8s-sa', `${ns}/${name}`) },
        warnafter: p.iat + Math.max(1, Math.floor((p.exp - p.iat) * 0.8)),
      };
      delete p.scope;
      delete p.client_id;
    },
  },
  // GitHub Actions OIDC token of a workflow job.
  github: {
    path: '/github',
    alg: 'RS256',
    header: { typ: 'JWT', x5t: 'ykNaY4qM_ta4k2TgZOCEYLkcYlA' },
    shape(p, claims) {
      const repository = claims.repository ?? `octo-org/${p.client_id}`;
      const owner = claims.repository_owner ?? repository.split('/')[0];
      const ref = claims.ref ?? 'refs/heads/main';
      const environment = claims.environment;
      const event = claims.event_name ?? 'push';
      let sub = `repo:${repository}:ref:${ref}`;
      if (environment) sub = `repo:${repository}:environment:${environment}`;
      else if (event === 'pull_request') sub = `repo:${repository}:pull_request`;
      const workflow = `${repository}/.github/workflows/deploy.yml@${ref}`;
      Object.assign(p, {
        sub,
        ref,
        sha: hex('sha', repository + ref, 40),
        repository,
        repository_owner: owner,
        repository_owner_id: digits('owner', owner), // strings, as GitHub sends them
        run_id: digits('run', p.jti, 10),
        run_number: '42',
        run_attempt: '1',
        repository_visibility: 'private',
        repository_id: digits('repository', repository),
        actor_id: digits('actor', owner),
        actor: owner,
        workflow: 'deploy',
        head_ref: '',
        base_ref: '',
        event_name: event,
        ref_protected: 'true',
        ref_type: ref.startsWith('refs/tags/') ? 'tag' : 'branch',
        workflow_ref: workflow,
        workflow_sha: hex('sha', repository + ref, 40),
        job_workflow_ref: workflow,
        job_workflow_sha: hex('sha', repository + ref, 40),
        runner_environment: 'github-hosted',
        nbf: p.iat - 5,
      });
      if (environment) p.environment = environment;
      delete p.scope;
      delete p.client_id;
    },
  },
  // SPIFFE JWT-SVID (SPIRE with jwt_issuer set): sub, aud, exp, iat, iss only.
  spiffe: {
    path: '/spiffe',
    alg: 'ES256',
    header: { typ: 'JWT' },
    shape(p) {
      p.sub = `spiffe://example.org/ns/default/sa/${p.client_id}`;
      p.aud = [p.aud];
      delete p.jti;
      delete p.scope;
      delete p.client_id;
    },
  },
};

// Deterministic ids for the shapes: the same client gets the same ids at
// every start, so tests can compute them.
function uuidFrom(kind, value) {
  const h = createHash('sha256').update(`${kind}\0${value}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
function hex(kind, value, n) {
  return createHash('sha256').update(`${kind}\0${value}`).digest('hex').slice(0, n);
}
function digits(kind, value, n = 9) { // n decimal digits, no leading zero
  const h = BigInt(`0x${hex(kind, value, 16)}`);
  return String(10n ** BigInt(n - 1) + (h % (9n * 10n ** BigInt(n - 1))));
}

// mergeClaims lays a client's registered `claims` over a shaped payload:
// objects merge member by member, anything else replaces, null removes.
function mergeClaims(target, claims) {
  for (const [k, v] of Object.entries(claims)) {
    if (v === null) delete target[k];
    else if (isObject(v) && isObject(target[k])) mergeClaims(target[k], v);
    else target[k] = structuredClone(v);
  }
}
function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// Minimal per-provider in-memory adapter. oidc-provider's built-in one is a
// single process-wide store (a client registered at one issuer would be
// accepted by the others) capped at 1000 entries, and it warns at startup.
function memoryAdapterFactory() {
  const store = new Map();
  return (model) => {
    const key = (id) => `${model}:${id}`;
    const get = (k) => {
      const e = store.get(k);
      if (e && e.exp && e.exp < Date.now()) { store.delete(k); return undefined; }
      return e?.payload;
    };
    return {
      async upsert(id, payload, expiresIn) {
        store.set(key(id), { payload, exp: expiresIn ? Date.now() + expiresIn * 1000 : 0 });
      },
      async find(id) { return get(key(id)); },
      async findByUid() { return undefined; }, // sessions: not used (no interactive flows)
      async findByUserCode() { return undefined; }, // device flow: not used
      async consume(id) { const p = get(key(id)); if (p) p.consumed = Math.floor(Date.now() / 1000); },
      async destroy(id) { store.delete(key(id)); },
      async revokeByGrantId() {}, // client_credentials tokens have no grant
    };
  };
}

async function signingJwk(alg) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, alg, use: 'sig', kid: await calculateJwkThumbprint(jwk) };
}

async function createProvider(issuer, { alg, routes, shape, header }) {
  const provider = new Provider(issuer, {
    adapter: memoryAdapterFactory(),
    jwks: { keys: [await signingJwk(alg)] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: ['openid'],
    responseTypes: ['none'], // no browser flows; keeps discovery's grant_types_supported short
    routes,
    enabledJWA: { idTokenSigningAlgValues: [alg] },
    // Registration defaults, so that even `{}` registers a client_credentials client.
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: alg,
    },
    extraClientMetadata: {
      properties: ['token_ttl', 'claims'],
      validator(ctx, key, value) {
        if (key === 'token_ttl' && value !== undefined && !(Number.isSafeInteger(value) && value > 0)) {
          throw new errors.InvalidClientMetadata('token_ttl must be a positive integer (seconds)');
        }
        if (key === 'claims' && value !== undefined && !isObject(value)) {
          throw new errors.InvalidClientMetadata('claims must be a JSON object');
        }
      },
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      registration: {
        enabled: true,
        initialAccessToken: false, // open registration
        // A client may choose its own client_id / client_secret at registration;
        // registering the same client_id again replaces that client.
        idFactory: (ctx) => nonEmpty(ctx.oidc.body.client_id) ?? randomBytes(12).toString('base64url'),
        secretFactory: (ctx) => nonEmpty(ctx.oidc.body.client_secret) ?? randomBytes(32).toString('base64url'),
      },
      resourceIndicators: {
        enabled: true,
        // No `resource` parameter: the token is for AUDIENCE.
        defaultResource: () => AUDIENCE,
        // Any absolute URI is accepted as a resource (aud), so tests can mint
        // tokens for a wrong audience. Its allowed scopes are the client's
        // registered `scope`. Called after client authentication, before the
        // requested scopes are evaluated.
        getResourceServerInfo(ctx, resource, client) {
          const allowed = client.scope ? client.scope.split(' ') : [];
          const { params } = ctx.oidc;
          if (!params.scope) {
            // Like Auth0: no scope parameter = every scope the client was granted.
            params.scope = allowed.join(' ') || undefined;
          } else {
            // oidc-provider would silently drop unknown scopes; reject instead.
            const denied = params.scope.split(' ').filter((s) => s && !allowed.includes(s));
            if (denied.length) {
              throw new errors.InvalidScope('requested scope is not allowed for this client', denied.join(' '));
            }
          }
          return {
            scope: allowed.join(' '),
            audience: resource,
            accessTokenFormat: 'jwt', // header typ is "at+jwt" (RFC 9068)
            accessTokenTTL: client.token_ttl ?? DEFAULT_TOKEN_TTL,
            jwt: { sign: { alg } },
          };
        },
      },
    },
    formats: {
      customizers: {
        jwt(ctx, token, jwt) {
          const claims = token.client?.claims ?? {};
          shape(jwt.payload, claims);
          mergeClaims(jwt.payload, claims);
          if (header) jwt.header = { ...header };
        },
      },
    },
    ttl: {
      ClientCredentials: (ctx, token, client) => token.resourceServer?.accessTokenTTL
        ?? client.token_ttl ?? DEFAULT_TOKEN_TTL,
    },
    clientBasedCORS: () => false,
  });

  // oidc-provider only accepts a client `scope` made of the provider's `scopes`
  // (a fixed list). Tests register arbitrary scope strings ("items:read",
  // "my_service#read"), so the registration-time check is reduced to a dedupe;
  // enforcement happens per request in getResourceServerInfo above.
  provider.Client.Schema.prototype.scopes = function scopes() {
    if (this.scope) this.scope = [...new Set(this.scope.split(' ').filter(Boolean))].join(' ');
  };
  return provider;
}

function nonEmpty(value) {
  return typeof value === 'string' && value.length ? value : undefined;
}

// --- HTTP server: route /<prefix>/... to the matching provider ------------------

const mounts = []; // [{ prefix: '/auth0', handle }]
const server = createServer((req, res) => {
  const path = req.url.split('?')[0];
  const mount = mounts.find(({ prefix }) => path === prefix || path.startsWith(`${prefix}/`));
  if (!mount) {
    res.writeHead(mounts.length ? 404 : 503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: mounts.length ? 'not_found' : 'starting' }));
    return;
  }
  // Like express/koa-mount: strip the prefix; oidc-provider derives its
  // endpoint URLs from req.originalUrl minus req.url.
  req.originalUrl = req.url;
  req.url = req.url.slice(mount.prefix.length) || '/';
  mount.handle(req, res);
});

// Listen first so that --port 0 works, then build the issuers from the real port.
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), args.host, resolve);
});
const { port } = server.address();
const hostPart = args.host.includes(':') ? `[${args.host}]` : args.host;
const base = `http://${hostPart}:${port}`;

const issuers = {};
for (const [name, def] of Object.entries(ISSUERS)) {
  const issuer = base + def.path;
  const provider = await createProvider(issuer, def);
  provider.on('server_error', (ctx, err) => console.error(`[${name}] server_error`, err));
  mounts.push({ prefix: def.path.replace(/\/$/, ''), handle: provider.callback() });
  issuers[name] = {
    issuer,
    alg: def.alg,
    discovery: `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`,
    jwks_uri: provider.urlFor('jwks'),
    token_endpoint: provider.urlFor('token'),
    registration_endpoint: provider.urlFor('registration'),
    audience: AUDIENCE,
  };
}

if (args.out) {
  const tmp = `${args.out}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ url: base, issuers }, null, 2)}\n`);
  renameSync(tmp, args.out);
}
console.log(`idp: ready on ${base} (${Object.keys(issuers).join(', ')})`);

function shutdown(signal) {
  console.log(`idp: ${signal}, exiting`);
  server.close(() => process.exit(0));
  server.closeAllConnections(); // don't wait for idle keep-alive sockets
  setTimeout(() => process.exit(0), 2000).unref();
}
process.once('SIGTERM', () => shutdown('SIGTERM'));
process.once('SIGINT', () => shutdown('SIGINT'));
