// Seeds the Directus of docker-compose.yml with what the README's example
// exchange needs, through the REST API with the admin token:
//
//   collection "articles" (id, title) with one item,
//   policy "Read articles" (no app access: machine users take no seat on
//   Directus 12 Core) allowed to read it,
//   role "Article readers" holding that policy (the bridge's rule names it).
//
// Idempotent: what exists is left as it is, so `docker compose up` may run it
// again. Node 22 (global fetch), no dependencies.
//
//   DIRECTUS_URL=http://directus:8055 DIRECTUS_TOKEN=... node directus-init.mjs

const base = (process.env.DIRECTUS_URL || 'http://directus:8055').replace(/\/$/, '');
const token = process.env.DIRECTUS_TOKEN;
if (!token) {
  console.error('directus-init: DIRECTUS_TOKEN is not set');
  process.exit(2);
}

const COLLECTION = 'articles';
const POLICY = 'Read articles';
const ROLE = 'Article readers';

async function api(method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

async function must(method, path, body) {
  const r = await api(method, path, body);
  if (r.status < 200 || r.status > 299) {
    throw new Error(`${method} ${path}: HTTP ${r.status}: ${r.text.slice(0, 300)}`);
  }
  return r.json?.data;
}

// Directus answers /server/ping before it accepts requests on every route:
// wait for it (depends_on already waits for the health check).
async function waitForDirectus() {
  const deadline = Date.now() + 120_000;
  for (;;) {
    let status = 0;
    try {
      status = (await api('GET', '/users/me?fields=id')).status;
    } catch {
      // not listening yet
    }
    if (status === 200) return;
    if (status === 401) throw new Error('DIRECTUS_TOKEN is not a valid token of this Directus (401)');
    if (Date.now() > deadline) throw new Error(`${base} did not answer within 120s`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const byName = (collection, name) =>
  must('GET', `/${collection}?fields=id&limit=1&filter[name][_eq]=${encodeURIComponent(name)}`)
    .then((rows) => rows?.[0]?.id);

await waitForDirectus();

// Missing collections answer 403 (Directus does not tell missing from forbidden).
const col = await api('GET', `/collections/${COLLECTION}`);
if (col.status === 200) {
  console.log(`directus-init: collection ${COLLECTION} exists`);
} else {
  await must('POST', '/collections', {
    collection: COLLECTION,
    schema: {},
    meta: { icon: 'article' },
    fields: [
      { field: 'id', type: 'integer', schema: { is_primary_key: true, has_auto_increment: true } },
      { field: 'title', type: 'string', schema: {} },
    ],
  });
  await must('POST', `/items/${COLLECTION}`, { title: 'Hello from Directus' });
  console.log(`directus-init: collection ${COLLECTION} created with one item`);
}

let policy = await byName('policies', POLICY);
if (policy) {
  console.log(`directus-init: policy "${POLICY}" exists`);
} else {
  policy = (await must('POST', '/policies', {
    name: POLICY, icon: 'smart_toy', app_access: false, admin_access: false,
  })).id;
  console.log(`directus-init: policy "${POLICY}" created`);
}

const perms = await must('GET', `/permissions?fields=id&limit=1&filter[policy][_eq]=${policy}`
  + `&filter[collection][_eq]=${COLLECTION}&filter[action][_eq]=read`);
if (!perms?.length) {
  await must('POST', '/permissions', { policy, collection: COLLECTION, action: 'read', fields: ['*'] });
  console.log(`directus-init: read permission on ${COLLECTION} granted to "${POLICY}"`);
}

if (await byName('roles', ROLE)) {
  console.log(`directus-init: role "${ROLE}" exists`);
} else {
  await must('POST', '/roles', { name: ROLE, icon: 'smart_toy', policies: { create: [{ policy }] } });
  console.log(`directus-init: role "${ROLE}" created`);
}
console.log('directus-init: done');
