#!/usr/bin/env bash
# Checks that drppy-client, RackN's own Python REST client for DRP, works against herald over
# TLS with herald's self-signed certificate: get_info (and a token's Info), profiles, a user
# with "Roles": null, a machine without a Uuid, post_event without a Time and with an offset,
# and list_connections with every field of DRP's Connection model. It runs once verifying the
# certificate against the generated tls/cert.pem, once with verification off (as most DRP
# scripts run).
#
# Usage: tests/drppy/run.sh   (builds herald unless HERALD names a binary; needs python3 and pip)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/tests/lib/herald.sh"
drppy_version=${DRPPY_VERSION:-4.17.0}
password=drppy-check-pw
work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${HERALD:-}" ]; then
    (cd "$root" && cargo build --quiet --bin herald)
    HERALD=${CARGO_TARGET_DIR:-$root/target}/debug/herald
fi

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "drppy-client==$drppy_version"

start_herald "$work/server.log" --listen 127.0.0.1:0 --data-dir "$work/data" \
    --admin-password "$password" --cores 1

python="$work/venv/bin/python -W ignore::Warning"
$python "$root/tests/drppy/check.py" "$endpoint" rocketskates "$password" "$work/data/tls/cert.pem"
$python "$root/tests/drppy/check.py" "$endpoint" rocketskates "$password"
echo "drppy-client $drppy_version works against herald: 2 passed, 0 failed"
