#!/usr/bin/env bash
# with-stack.sh CMD [ARGS...]: bring the test stack up in a fresh folder, run
# CMD with DIRECTUS_BRIDGE_STACK pointing at its stack.json, and take the
# stack down again whatever happens (failure, Ctrl-C, TERM).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(mktemp -d "${TMPDIR:-/tmp}/directus-bridge-stack.XXXXXX")"
down() {
	local rc=$?
	trap - EXIT INT TERM
	bash "$here/stack.sh" down "$dir" || rc=1
	exit "$rc"
}
trap down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
bash "$here/stack.sh" up "$dir"
rc=0
DIRECTUS_BRIDGE_STACK="$dir/stack.json" DIRECTUS_BRIDGE_E2E_SUMMARY="$dir/e2e-summary.txt" "$@" || rc=$?
if [[ -f "$dir/e2e-summary.txt" ]]; then
	cat "$dir/e2e-summary.txt"
elif [[ -n "${DIRECTUS_BRIDGE_REQUIRE_E2E:-}" ]]; then
	echo "e2e summary: missing (the e2e package did not run)"
	[[ $rc -ne 0 ]] || rc=1
fi
exit "$rc"
