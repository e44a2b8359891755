#!/usr/bin/env bash
# demo.sh: the bridge's main job, step by step, on a local stack: real
# Directus 12, a real OIDC provider, the bridge binary, one exchange.
# Run it with `make demo`. Everything is stopped and removed at the end.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# Only what the demo uses: Directus 12 (with PostgreSQL) and the IdP.
only=directus12-postgres,idp
# Every prerequisite first, each missing one named, before anything is installed.
bash "$here/stack.sh" check up --only "$only"
[[ -x "$root/bin/directus-bridge" ]] || { echo "demo: $root/bin/directus-bridge not found (run: make demo)" >&2; exit 1; }
dir="$(mktemp -d "${TMPDIR:-/tmp}/directus-bridge-demo.XXXXXX")"
chmod 0755 "$dir" # the PostgreSQL cluster below runs as the postgres user
bridge_pid=""
cleanup() {
	[[ -n "$bridge_pid" ]] && kill "$bridge_pid" 2>/dev/null && wait "$bridge_pid" 2>/dev/null
	bash "$here/stack.sh" down "$dir/stack" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
json() { "$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{let v=JSON.parse(s);for(const k of process.argv[1].split("."))v=v[k];console.log(typeof v==="object"?JSON.stringify(v):v)})' "$1"; }
api() { curl -sS -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' "$@"; }

step "1. Start Directus 12 (PostgreSQL) and the OIDC provider"
bash "$here/stack.sh" up "$dir/stack" --only "$only"
# Node 22 of the stack runs the little JSON helpers below.
NODE="$(set -a; . "$dir/stack/.node"; printf '%s' "$NODE")"
S="$dir/stack/stack.json"
D=$(json directus.0.url <"$S"); ADMIN=$(json directus.0.admin_token <"$S")
ISS=$(json idp.issuers.auth0.issuer <"$S"); AUD=$(json idp.issuers.auth0.audience <"$S")
REG=$(json idp.issuers.auth0.registration_endpoint <"$S"); TOK=$(json idp.issuers.auth0.token_endpoint <"$S")
echo "Directus: $D   issuer: $ISS"

step "2. In Directus: a collection 'articles' and a role 'Article readers' that may read it"
api -X POST "$D/collections" -d '{"collection":"articles","schema":{},"meta":{},"fields":[{"field":"id","type":"integer","schema":{"is_primary_key":true,"has_auto_increment":true}},{"field":"title","type":"string","schema":{}}]}' >/dev/null
api -X POST "$D/items/articles" -d '{"title":"Hello from Directus"}' >/dev/null
POLICY=$(api -X POST "$D/policies" -d '{"name":"Read articles","icon":"smart_toy"}' | json data.id)
api -X POST "$D/permissions" -d "{\"policy\":\"$POLICY\",\"collection\":\"articles\",\"action\":\"read\",\"fields\":[\"*\"]}" >/dev/null
api -X POST "$D/roles" -d "{\"name\":\"Article readers\",\"icon\":\"smart_toy\",\"policies\":{\"create\":[{\"policy\":\"$POLICY\"}]}}" >/dev/null
echo "created"

step "3. The bridge's configuration"
cat >"$dir/bridge.yaml" <<YAML
listen: 127.0.0.1:0
directus:
  url: $D
state:
  path: $dir/state.db
issuers:
  - name: auth0
    issuer: $ISS
    audiences: [$AUD]
    required_claims: {gty: client-credentials}
rules:
  - name: article readers
    issuer: auth0
    all_scopes: ["articles:read"]
    role: Article readers
YAML
PORT=$("$NODE" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
sed -i "s/127.0.0.1:0/127.0.0.1:$PORT/" "$dir/bridge.yaml"
cat "$dir/bridge.yaml"
export DIRECTUS_BRIDGE_DIRECTUS_TOKEN="$ADMIN"
"$root/bin/directus-bridge" config check -config "$dir/bridge.yaml"

step "4. Start the bridge"
"$root/bin/directus-bridge" serve -config "$dir/bridge.yaml" 2>"$dir/bridge.log" &
bridge_pid=$!
# /healthz answers at once; /readyz once the rules are in force and Directus
# and the IdP answer.
for _ in $(seq 150); do curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -sS "http://127.0.0.1:$PORT/readyz"; echo

step "5. A service gets a client-credentials token from its IdP"
reg=$(curl -sS -X POST "$REG" -H 'content-type: application/json' -d '{"grant_types":["client_credentials"],"scope":"articles:read"}')
CID=$(echo "$reg" | json client_id); CSECRET=$(echo "$reg" | json client_secret)
IDP_TOKEN=$(curl -sS "$TOK" -d grant_type=client_credentials --data-urlencode "client_id=$CID" --data-urlencode "client_secret=$CSECRET" --data-urlencode "scope=articles:read" | json access_token)
echo "client $CID got a JWT; its claims:"
echo "$IDP_TOKEN" | cut -d. -f2 | "$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(Buffer.from(s.trim(),"base64url").toString()))'

step "6. It exchanges the token at the bridge (RFC 8693)"
curl -sS "http://127.0.0.1:$PORT/oauth/token" \
  -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
  -d subject_token_type=urn:ietf:params:oauth:token-type:access_token \
  --data-urlencode "subject_token=$IDP_TOKEN" | tee "$dir/exchange.json" | "$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s);v.access_token=v.access_token.slice(0,8)+"…";console.log(JSON.stringify(v))})'
DIRECTUS_TOKEN=$(json access_token <"$dir/exchange.json")

step "7. The machine user in Directus (id = uuidv5(NIL, sub))"
echo "directus-bridge user-id says: $("$root/bin/directus-bridge" user-id "$CID@clients")"
api "$D/users/$("$root/bin/directus-bridge" user-id "$CID@clients")?fields=id,first_name,last_name,external_identifier,role.name,status,last_access"; echo

step "8. The service reads Directus with its short-lived static token"
curl -sS -H "Authorization: Bearer $DIRECTUS_TOKEN" "$D/items/articles"; echo
echo -n "and may not write: "
curl -sS -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $DIRECTUS_TOKEN" -H 'Content-Type: application/json' -X POST "$D/items/articles" -d '{"title":"nope"}'

step "9. The bridge's audit log line for the exchange"
grep '"event":"exchange"' "$dir/bridge.log" | tail -1
echo; echo "Done: everything is stopped and removed on exit."
