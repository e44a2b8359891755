// check.mjs drives a Directus URL with the official Directus SDK, as a real client would,
// and reports what worked. The URL may be Directus itself (with a Directus static token)
// or directus-bridge's proxy in front of it (with a token of the IdP): the checks are the
// same, which is the point.
//
//   DIRECTUS_SDK_DIR=<stack.json sdk.dir> node check.mjs <config.json
//   DIRECTUS_SDK_DIR=... DIRECTUS_SDK_CHECK='{"url":...}' node check.mjs
//
// It needs Node 22 (the SDK's engines, and the global WebSocket): stack.json's sdk.node.
// The SDK is imported from DIRECTUS_SDK_DIR (or the config's sdk_dir), the folder that
// testdata/stack/stack.sh installs testdata/stack/sdk into; ES modules ignore NODE_PATH.
//
// Configuration (JSON; unknown keys are ignored, so fixture.mjs's output can be passed as is):
//   url                   base URL of Directus or of the proxy (required)
//   token                 the credential sent as the SDK's static token (required)
//   collection            a collection the token may create, read, update and delete in,
//                         with a string field `field` (default "title") (required)
//   forbidden_collection  a collection the token must not read (required)
//   file_bytes            size of the file uploaded and downloaded (default 64 MiB; 0 skips;
//                         the token needs create, read and delete on directus_files)
//   realtime              true: run the websocket checks (default true)
//   realtime_timeout_ms   how long to wait for the create event (default 10000)
//   admin_email, admin_password  a human user who logs in through the URL (else skipped)
//   bad_token             a credential Directus must refuse (else skipped)
//
// Checks (each in the output under its name):
//   items_read, items_write  readItems, createItem + updateItem + readItem on collection
//   items_forbidden          readItems on forbidden_collection: 403 FORBIDDEN
//   graphql                  client.query() on collection (sees what items_write wrote)
//   file                     uploadFiles of file_bytes random bytes, readAssetRaw: size and sha256
//   realtime                 realtime() with authMode "handshake" (first message
//                            {"type":"auth","access_token":...}): subscribe, createItem, create event
//   realtime_query_token     realtime() with authMode "strict" (?access_token= on the upgrade)
//   graphql_ws               GraphQL subscription over /graphql (graphql-transport-ws,
//                            connection_init payload.access_token): create event
//   realtime_bad_token       bad_token in the auth message is refused, and the SDK survives it
//   login                    authentication("json"): login({email, password}) and readMe
//   app                      GET /admin/: 200 text/html
//   bad_token                bad_token as static token: 401 INVALID_CREDENTIALS or TOKEN_EXPIRED
//
// Output: one JSON object on stdout, {ok, checks: {name: {ok, ms, ...}}, skipped, ...};
// exit status 0 when every check passed, 1 when one failed, 2 on a bad configuration.
// Tokens never appear in the output: what the SDK sent is reported with them redacted.
import { createHash, randomBytes } from "node:crypto";
import { openAsBlob } from "node:fs";
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { text } from "node:stream/consumers";
import { pathToFileURL } from "node:url";

const REDACTED = "[redacted]";

function fail(msg) {
  process.stderr.write(`check.mjs: ${msg}\n`);
  process.exit(2);
}

const cfg = JSON.parse(process.env.DIRECTUS_SDK_CHECK ?? (await text(process.stdin)));
for (const k of ["url", "token", "collection", "forbidden_collection"]) {
  if (typeof cfg[k] !== "string" || cfg[k] === "") fail(`config: ${k} is required`);
}
const field = cfg.field ?? "title";
const fileBytes = cfg.file_bytes ?? 64 << 20;
const realtimeOn = cfg.realtime ?? true;
const eventTimeout = cfg.realtime_timeout_ms ?? 10_000;

const sdkDir = process.env.DIRECTUS_SDK_DIR ?? cfg.sdk_dir;
if (!sdkDir) fail("set DIRECTUS_SDK_DIR to the folder the SDK is installed in (stack.json: sdk.dir)");
const sdkPkgDir = join(sdkDir, "node_modules", "@directus", "sdk");
const sdkPkg = JSON.parse(await readFile(join(sdkPkgDir, "package.json"), "utf8"));
const sdk = await import(pathToFileURL(join(sdkPkgDir, sdkPkg.exports["."].import)).href);
const {
  createDirectus, staticToken, authentication, rest, graphql, realtime,
  readItems, readItem, createItem, updateItem, deleteItem, uploadFiles, readAssetRaw, deleteFile, readMe,
} = sdk;

// within rejects when promise has not settled after ms.
function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer after ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

// describe turns an SDK error (RequestError: response + Directus errors) or any other
// error into reportable fields.
function describe(err) {
  if (err?.response || err?.errors) {
    const errors = Array.isArray(err.errors) ? err.errors : [];
    return {
      status: err.response?.status ?? null,
      codes: errors.map((e) => e?.extensions?.code ?? null),
      message: err.message || (typeof err.errors === "string" ? err.errors.slice(0, 200) : ""),
    };
  }
  if (err instanceof Event) return { message: `websocket ${err.type} event` };
  return { message: String(err?.message ?? err) };
}

// redactMessage summarises a websocket message: its JSON with credentials replaced.
function redactMessage(data) {
  if (typeof data !== "string") return { binary: true };
  try {
    const m = JSON.parse(data);
    for (const k of ["access_token", "refresh_token", "password"]) if (k in m) m[k] = REDACTED;
    if (m.payload && typeof m.payload === "object" && "access_token" in m.payload) m.payload.access_token = REDACTED;
    if (Array.isArray(m.data)) m.data = `[${m.data.length} item(s)]`;
    return m;
  } catch {
    return { text: data.slice(0, 200) };
  }
}

function redactURL(u) {
  const url = new URL(String(u));
  for (const k of [...url.searchParams.keys()]) if (k === "access_token") url.searchParams.set(k, REDACTED);
  return url.toString();
}

// recordingWebSocket is the global WebSocket, recording what the SDK opens, sends and gets.
function recordingWebSocket(log) {
  return class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      log.push({ open: redactURL(url) });
      this.addEventListener("message", (e) => log.push({ received: redactMessage(e.data) }));
      this.addEventListener("close", (e) => log.push({ closed: { code: e.code, reason: e.reason } }));
    }
    send(data) {
      log.push({ sent: redactMessage(data) });
      super.send(data);
    }
  };
}

const checks = {};
const skipped = {};
const started = performance.now();

// The SDK's realtime() closes the socket from inside its error listener; with Node 22's
// WebSocket a refused upgrade (any answer but 101) then recurses until the stack
// overflows, outside any promise. Such errors are recorded here (a check that
// sees one fails) instead of ending the process.
const uncaught = [];
process.on("uncaughtException", (err) => uncaught.push(`${err?.name}: ${err?.message}`));

async function check(name, timeoutMs, fn) {
  const t0 = performance.now();
  let result;
  try {
    result = await within(timeoutMs, fn(), name);
  } catch (err) {
    result = { ok: false, error: describe(err) };
  }
  checks[name] = { ok: result.ok === true, ms: Math.round(performance.now() - t0), ...result };
}

const client = createDirectus(cfg.url).with(staticToken(cfg.token)).with(rest()).with(graphql());
let writtenId = null;
let writtenValue = null;

await check("items_read", 30_000, async () => {
  const items = await client.request(readItems(cfg.collection, { fields: ["id"], limit: 5 }));
  return { ok: Array.isArray(items), count: items.length };
});

await check("items_write", 30_000, async () => {
  const created = await client.request(createItem(cfg.collection, { [field]: "sdk-check create" }));
  writtenId = created.id;
  writtenValue = `sdk-check update ${randomBytes(4).toString("hex")}`;
  const updated = await client.request(updateItem(cfg.collection, created.id, { [field]: writtenValue }));
  const read = await client.request(readItem(cfg.collection, created.id, { fields: ["id", field] }));
  return {
    ok: created.id != null && updated[field] === writtenValue && read[field] === writtenValue,
    id: created.id, created: created[field] === "sdk-check create",
    updated: updated[field] === writtenValue, read_back: read[field] === writtenValue,
  };
});

await check("items_forbidden", 30_000, async () => {
  try {
    const items = await client.request(readItems(cfg.forbidden_collection, { limit: 1 }));
    return { ok: false, unexpected: `read ${items.length} item(s)` };
  } catch (err) {
    const d = describe(err);
    return { ok: d.status === 403 && d.codes.includes("FORBIDDEN"), ...d };
  }
});

await check("graphql", 30_000, async () => {
  const filter = writtenId != null ? `(filter: {id: {_eq: ${JSON.stringify(String(writtenId))}}})` : "(limit: 1)";
  const data = await client.query(`query { ${cfg.collection}${filter} { id ${field} } }`);
  const rows = data?.[cfg.collection];
  const ok = Array.isArray(rows) && (writtenId == null || rows[0]?.[field] === writtenValue);
  return { ok, rows: Array.isArray(rows) ? rows.length : null, matches_rest: writtenId != null && ok };
});

if (fileBytes > 0) {
  await check("file", 600_000, async () => {
    // Written to a temporary file 1 MiB at a time and hashed on the way; the Blob reads
    // from the file, so that no copy of the content is held in memory.
    const tmp = await mkdtemp(join(tmpdir(), "sdk-check-"));
    const path = join(tmp, "sdk-check.bin");
    const hash = createHash("sha256");
    const fh = await open(path, "w");
    try {
      for (let left = fileBytes; left > 0; left -= 1 << 20) {
        const part = randomBytes(Math.min(1 << 20, left));
        hash.update(part);
        await fh.write(part);
      }
    } finally {
      await fh.close();
    }
    const want = hash.digest("hex");
    const blob = await openAsBlob(path, { type: "application/octet-stream" });
    const form = new FormData();
    form.append("title", "sdk-check");
    form.append("file", blob, "sdk-check.bin");
    let t = performance.now();
    let file;
    try {
      file = await client.request(uploadFiles(form, { fields: ["id", "filesize", "type"] }));
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    const uploadMs = performance.now() - t;
    t = performance.now();
    const body = await client.request(readAssetRaw(file.id));
    const got = createHash("sha256");
    let size = 0;
    for await (const chunk of body) {
      size += chunk.length;
      got.update(chunk);
    }
    const downloadMs = performance.now() - t;
    const sha = got.digest("hex");
    let deleted = false;
    try {
      await client.request(deleteFile(file.id));
      deleted = true;
    } catch {}
    const mib = fileBytes / (1 << 20);
    return {
      ok: size === fileBytes && sha === want && Number(file.filesize) === fileBytes,
      bytes: fileBytes, filesize: Number(file.filesize), downloaded: size, sha256_match: sha === want,
      upload_ms: Math.round(uploadMs), download_ms: Math.round(downloadMs),
      upload_mib_s: +(mib / (uploadMs / 1000)).toFixed(1), download_mib_s: +(mib / (downloadMs / 1000)).toFixed(1),
      deleted,
    };
  });
} else {
  skipped.file = "file_bytes is 0";
}

if (realtimeOn) {
  await check("realtime", eventTimeout + 30_000, async () => {
    const log = [];
    const rt = createDirectus(cfg.url, { globals: { WebSocket: recordingWebSocket(log) } })
      .with(staticToken(cfg.token)).with(rest())
      .with(realtime({ authMode: "handshake", reconnect: false }));
    try {
      await within(15_000, rt.connect(), "connect");
      const { subscription, unsubscribe } = await rt.subscribe(cfg.collection, { event: "create", query: { fields: ["id", field] } });
      const marker = `sdk-check realtime ${randomBytes(4).toString("hex")}`;
      const events = [];
      const heard = (async () => {
        for await (const m of subscription) {
          events.push(m.event);
          if (m.event === "create" && m.data?.some((d) => d[field] === marker)) return m;
        }
        throw new Error("subscription ended");
      })();
      // Create only once the subscription is confirmed (its init message).
      const deadline = Date.now() + 5_000;
      while (!events.includes("init") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const t = performance.now();
      const created = await rt.request(createItem(cfg.collection, { [field]: marker }));
      const event = await within(eventTimeout, heard, "create event");
      const latency = performance.now() - t;
      unsubscribe();
      try { await rt.request(deleteItem(cfg.collection, created.id)); } catch {}
      const first = log.find((l) => l.sent)?.sent;
      return {
        ok: event.data.some((d) => String(d.id) === String(created.id)),
        event_ms: Math.round(latency), // from sending the create request
        events,
        auth_first_message: first?.type === "auth" && first?.access_token === REDACTED,
        wire: log.slice(0, 6),
      };
    } finally {
      rt.disconnect();
    }
  });
  // authMode "strict": the token goes in the upgrade's access_token query parameter,
  // and no auth message is sent; Directus accepts that in its default (handshake) mode.
  await check("realtime_query_token", 30_000, async () => {
    const log = [];
    const rt = createDirectus(cfg.url, { globals: { WebSocket: recordingWebSocket(log) } })
      .with(staticToken(cfg.token)).with(realtime({ authMode: "strict", reconnect: false }));
    const before = uncaught.length;
    try {
      await within(15_000, rt.connect(), "connect");
      const { subscription, unsubscribe } = await rt.subscribe(cfg.collection, { query: { fields: ["id"], limit: 1 } });
      const first = await within(10_000, subscription.next(), "subscription init");
      unsubscribe();
      return {
        ok: first.value?.event === "init" && uncaught.length === before,
        query_token: log[0]?.open?.includes(`access_token=${encodeURIComponent(REDACTED)}`) ?? false,
        sent_auth: log.some((l) => l.sent?.type === "auth"), wire: log.slice(0, 4),
      };
    } catch (err) {
      return { ok: false, error: describe(err), sdk_uncaught: uncaught.slice(before), wire: log };
    } finally {
      rt.disconnect();
    }
  });

  // GraphQL subscriptions (graphql-transport-ws on /graphql; the SDK has no client for
  // them): the token goes in connection_init's payload.access_token.
  await check("graphql_ws", eventTimeout + 30_000, async () => {
    const u = new URL(cfg.url);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    u.pathname = `${u.pathname.replace(/\/+$/, "")}/graphql`;
    const log = [];
    const ws = new (recordingWebSocket(log))(u, "graphql-transport-ws");
    const queue = [];
    let wake = () => {};
    ws.addEventListener("message", (e) => { queue.push(JSON.parse(e.data)); wake(); });
    ws.addEventListener("close", () => { queue.push({ type: "closed" }); wake(); });
    const next = () => queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => { wake = () => r(queue.shift()); });
    try {
      await within(15_000, new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error("websocket error")); }), "open");
      ws.send(JSON.stringify({ type: "connection_init", payload: { access_token: cfg.token } }));
      const ack = await within(10_000, next(), "connection_ack");
      if (ack.type !== "connection_ack") return { ok: false, got: ack, wire: log };
      ws.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query: `subscription { ${cfg.collection}_mutated(event: create) { event key } }` } }));
      // No message confirms a subscription, and Directus registers it a moment after
      // the subscribe message: create an item every second until an event arrives.
      const created = [];
      const until = performance.now() + eventTimeout;
      let msg = null, latency = 0;
      try {
        while (msg === null && performance.now() < until) {
          const t = performance.now();
          created.push((await client.request(createItem(cfg.collection, { [field]: "sdk-check graphql_ws" }))).id);
          const waitFor = Math.min(1000, Math.max(0, until - performance.now()));
          msg = await within(waitFor, (async () => {
            let m;
            do m = await next();
            while (m.type === "ping");
            return m;
          })(), "subscription event").catch(() => null);
          latency = performance.now() - t;
        }
      } finally {
        for (const id of created) try { await client.request(deleteItem(cfg.collection, id)); } catch {}
      }
      if (msg === null) return { ok: false, error: `no subscription event after ${created.length} create(s)`, wire: log.slice(0, 5) };
      const got = msg.payload?.data?.[`${cfg.collection}_mutated`];
      return {
        ok: msg.type === "next" && got?.event === "create" && created.map(String).includes(String(got?.key)),
        event_ms: Math.round(latency), creates: created.length, wire: log.slice(0, 5),
      };
    } finally {
      ws.close();
    }
  });

  if (cfg.bad_token) {
    await check("realtime_bad_token", 30_000, async () => {
      const log = [];
      const rt = createDirectus(cfg.url, { globals: { WebSocket: recordingWebSocket(log) } })
        .with(staticToken(cfg.bad_token)).with(realtime({ authMode: "handshake", reconnect: false }));
      const before = uncaught.length;
      let connected = false;
      try {
        await within(15_000, rt.connect(), "connect");
        connected = true;
      } catch (err) {
        // Let the close arrive, to report it.
        for (let i = 0; i < 50 && !log.some((l) => l.closed); i++) await new Promise((r) => setTimeout(r, 20));
        // Directus accepts the upgrade and refuses the auth message, which the SDK
        // survives; a refused upgrade crashes it (see uncaught).
        const crashed = uncaught.length > before;
        return { ok: !crashed, refused: describe(err).message, sdk_uncaught: uncaught.slice(before), wire: log };
      } finally {
        rt.disconnect();
      }
      return { ok: !connected, wire: log };
    });
  } else {
    skipped.realtime_bad_token = "no bad_token";
  }
} else {
  skipped.realtime = "realtime is false";
}

if (cfg.admin_email && cfg.admin_password) {
  await check("login", 30_000, async () => {
    const human = createDirectus(cfg.url).with(authentication("json", { autoRefresh: false })).with(rest());
    const auth = await human.login({ email: cfg.admin_email, password: cfg.admin_password });
    const me = await human.request(readMe({ fields: ["id", "email"] }));
    let loggedOut = false;
    try {
      await human.logout();
      loggedOut = true;
    } catch {}
    return {
      ok: typeof auth.access_token === "string" && me.email?.toLowerCase() === cfg.admin_email.toLowerCase(),
      expires_ms: auth.expires, refresh_token: typeof auth.refresh_token === "string",
      me_email_matches: me.email?.toLowerCase() === cfg.admin_email.toLowerCase(), logged_out: loggedOut,
    };
  });
} else {
  skipped.login = "no admin_email/admin_password";
}

await check("app", 30_000, async () => {
  const res = await fetch(`${cfg.url.replace(/\/+$/, "")}/admin/`, { redirect: "manual" });
  const type = res.headers.get("content-type") ?? "";
  const body = await res.text();
  return {
    ok: res.status === 200 && type.startsWith("text/html") && /<html/i.test(body),
    status: res.status, content_type: type, bytes: body.length,
  };
});

if (cfg.bad_token) {
  await check("bad_token", 30_000, async () => {
    const bad = createDirectus(cfg.url).with(staticToken(cfg.bad_token)).with(rest());
    try {
      const items = await bad.request(readItems(cfg.collection, { limit: 1 }));
      return { ok: false, unexpected: `read ${items.length} item(s)` };
    } catch (err) {
      const d = describe(err);
      return { ok: d.status === 401 && d.codes.some((c) => c === "INVALID_CREDENTIALS" || c === "TOKEN_EXPIRED"), ...d };
    }
  });
} else {
  skipped.bad_token = "no bad_token";
}

if (writtenId != null) {
  try { await client.request(deleteItem(cfg.collection, writtenId)); } catch {}
}

const ok = Object.values(checks).every((c) => c.ok) && uncaught.length === 0;
process.stdout.write(JSON.stringify({
  ok, url: redactURL(cfg.url), sdk: sdkPkg.version, node: process.version,
  ms: Math.round(performance.now() - started), checks, skipped, uncaught,
}, null, 2) + "\n");
process.exit(ok ? 0 : 1);
