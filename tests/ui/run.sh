#!/usr/bin/env bash
# Drives herald's web console in a real browser: installs Debian's Chromium and playwright-core
# (from package-lock.json) when missing, builds herald unless HERALD names a binary, and runs
# check.js, which starts herald over TLS with its generated certificate. Screenshots of every
# page, at 1280x800 and at a phone's size, go to tests/ui/screenshots/ (not committed).
#
# Usage: tests/ui/run.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if ! [ -x /usr/bin/chromium ]; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; })
fi
if ! command -v npm >/dev/null; then
    (apt-get install -y -q nodejs npm >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q nodejs npm >/dev/null; })
fi
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

if [ -z "${HERALD:-}" ]; then
    (cd "$root" && cargo build --locked --quiet --bin herald)
    HERALD=${CARGO_TARGET_DIR:-$root/target}/debug/herald
fi

HERALD=$HERALD node "$here/check.js"
