// fixture.mjs sets up, in a real Directus and with its admin token, what check.mjs needs
// to run against that Directus directly: two collections, a policy that allows one of
// them (and directus_files) but not the other, a role with that policy, and a user of
// that role with a static token. It speaks plain REST (fetch), not the SDK under test.
//
//   node fixture.mjs up   <instance.json >config.json   # instance: a "directus" entry of stack.json
//   node fixture.mjs down <config.json                  # removes what up created (safe to repeat)
//
// up prints check.mjs's configuration (it holds the new user's static token: keep the
// file private and remove it after down). Names get a random suffix, so that runs do
// not collide. The user's role and policy have no app access: on Directus 12 Core it
// takes no seat.
import { randomBytes } from "node:crypto";
import { text } from "node:stream/consumers";

const [cmd] = process.argv.slice(2);
if (cmd !== "up" && cmd !== "down") {
  process.stderr.write("usage: node fixture.mjs up <instance.json >config.json | down <config.json\n");
  process.exit(2);
}
const input = JSON.parse(await text(process.stdin));

// api calls Directus with the admin token; it returns data, or throws with the status and
// the error codes (never the body: a token write's error can echo the token).
function api(base, adminToken) {
  return async (method, path, body, { allow = [] } = {}) => {
    const res = await fetch(new URL(path, base), {
      method,
      headers: { Authorization: `Bearer ${adminToken}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (allow.includes(res.status)) return null;
    const raw = await res.text();
    const json = raw ? JSON.parse(raw) : null;
    if (!res.ok) {
      const codes = (json?.errors ?? []).map((e) => e.extensions?.code).join(",");
      throw new Error(`${method} ${path}: ${res.status} ${codes}`);
    }
    return json?.data ?? null;
  };
}

const FIELDS = [
  { field: "id", type: "integer", meta: { hidden: true }, schema: { is_primary_key: true, has_auto_increment: true } },
  { field: "title", type: "string", schema: {} },
];

async function up({ url, admin_token, admin_email, admin_password }) {
  if (!url || !admin_token) throw new Error("input needs url and admin_token");
  const call = api(url, admin_token);
  const suffix = randomBytes(4).toString("hex");
  const collection = `sdk_allowed_${suffix}`;
  const forbidden = `sdk_forbidden_${suffix}`;
  const fixture = { collections: [], policy: null, role: null, user: null };
  const out = { url, collection, forbidden_collection: forbidden, field: "title", fixture, admin_token };
  try {
    for (const name of [collection, forbidden]) {
      await call("POST", "/collections", { collection: name, schema: {}, meta: { icon: "box" }, fields: FIELDS });
      fixture.collections.push(name);
    }
    const all = { fields: ["*"], permissions: {}, validation: {} };
    const policy = await call("POST", "/policies", {
      name: `sdk-check ${suffix}`, icon: "key", app_access: false, admin_access: false,
      permissions: [
        ...["create", "read", "update", "delete"].map((action) => ({ collection, action, ...all })),
        ...["create", "read", "update", "delete"].map((action) => ({ collection: "directus_files", action, ...all })),
      ],
    });
    fixture.policy = policy.id;
    const role = await call("POST", "/roles", { name: `sdk-check ${suffix}`, icon: "smart_toy" });
    fixture.role = role.id;
    fixture.role_name = role.name;
    await call("POST", "/access", { role: role.id, policy: policy.id });
    const token = randomBytes(32).toString("hex");
    const user = await call("POST", "/users", {
      first_name: "SDK", last_name: `check ${suffix}`, role: role.id, status: "active", token,
    });
    fixture.user = user.id;
    Object.assign(out, {
      token,
      bad_token: randomBytes(32).toString("hex"),
      admin_email, admin_password,
      file_bytes: 64 << 20,
      realtime: true,
    });
    return out;
  } catch (err) {
    await down(out).catch(() => {});
    throw err;
  }
}

async function down({ url, admin_token, fixture }) {
  if (!url || !admin_token || !fixture) throw new Error("input needs url, admin_token and fixture (what up printed)");
  const call = api(url, admin_token);
  const gone = { allow: [403, 404] }; // Directus answers 403 for a missing record
  if (fixture.user) {
    const files = await call("GET", `/files?filter[uploaded_by][_eq]=${fixture.user}&fields=id&limit=-1`);
    if (files?.length) await call("DELETE", "/files", files.map((f) => f.id));
    await call("DELETE", `/users/${fixture.user}`, null, gone);
  }
  if (fixture.role) await call("DELETE", `/roles/${fixture.role}`, null, gone);
  if (fixture.policy) await call("DELETE", `/policies/${fixture.policy}`, null, gone);
  for (const name of fixture.collections ?? []) await call("DELETE", `/collections/${name}`, null, gone);
  return { removed: fixture };
}

try {
  const result = cmd === "up" ? await up(input) : await down(input);
  process.stdout.write(JSON.stringify(result, null, 2) + "\n");
} catch (err) {
  process.stderr.write(`fixture ${cmd}: ${err.message}\n`);
  process.exit(1);
}
