#!/usr/bin/env bash
# RFC 6455 conformance: the Autobahn|Testsuite (wstest, fuzzingclient mode) against herald over
# plain websocket on loopback. Cases whose expectation needs an echo server are excluded
# (herald answers commands; it does not echo), as listed in exclusions.json and the README.
# Prints "N passed, M failed" and fails on any FAILED, NON-STRICT or UNIMPLEMENTED case.
#
# Usage: tests/autobahn/run.sh   (builds herald unless HERALD names a binary; needs Python 2.7,
# from PYTHON2 or pyenv's 2.7.18, and installs wstest into tests/autobahn/.venv)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/tests/lib/herald.sh"
python2=${PYTHON2:-}
if [ -z "$python2" ]; then
    for candidate in /root/.pyenv/versions/2.7.18/bin/python "$(command -v python2.7 || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            python2=$candidate
            break
        fi
    done
fi
if [ -z "$python2" ]; then
    echo "wstest needs Python 2.7: set PYTHON2 to its interpreter" >&2
    exit 1
fi

venv=$here/.venv
if [ ! -x "$venv/bin/wstest" ]; then
    # virtualenv 20.22 dropped Python 2 environments; the last that makes them is enough.
    "$python2" -m virtualenv --version >/dev/null 2>&1 ||
        "$python2" -m pip install --quiet --disable-pip-version-check 'virtualenv<20.22' 2>&1 |
        grep -v DEPRECATION || true
    "$python2" -m virtualenv --quiet "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" 2>&1 |
        grep -v DEPRECATION || true
fi

if [ -z "${HERALD:-}" ]; then
    (cd "$root" && cargo build --quiet --locked --bin herald)
    HERALD=${CARGO_TARGET_DIR:-$root/target}/debug/herald
fi

password=autobahn-check-pw
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

start_herald "$work/server.log" --plain --listen 127.0.0.1:0 --data-dir "$work/data" \
    --admin-password "$password" --cores 1
port=${endpoint##*:}

reports=$here/reports
rm -rf "$reports"
# wstest sends no credentials but those in the URL: herald takes `token=user:password` there.
python3 - "$here/exclusions.json" "$work/spec.json" "$reports" \
    "ws://127.0.0.1:$port/api/v3/ws?token=rocketskates:$password" <<'EOF'
import json, sys
exclusions, spec, reports, url = sys.argv[1:]
excluded = [case for group in json.load(open(exclusions)) for case in group["cases"]]
json.dump({"outdir": reports, "servers": [{"agent": "herald", "url": url}],
           "cases": ["*"], "exclude-cases": excluded, "exclude-agent-cases": {}},
          open(spec, "w"))
EOF
(cd "$work" && "$venv/bin/wstest" --mode fuzzingclient --spec "$work/spec.json" \
    >"$work/wstest.log" 2>&1) || {
    echo "wstest failed:" >&2
    tail -n 30 "$work/wstest.log" >&2
    exit 1
}
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "herald died during the suite:" >&2
    tail -n 30 "$work/server.log" >&2
    exit 1
fi

python3 - "$reports/index.json" <<'EOF'
import collections, json, sys
results = json.load(open(sys.argv[1]))["herald"]
def key(case):
    return [int(part) for part in case.split(".")]
counts = collections.Counter()
bad = []
for case in sorted(results, key=key):
    result = results[case]
    counts[result["behavior"]] += 1
    counts["close " + result["behaviorClose"]] += 1
    if result["behavior"] not in ("OK", "INFORMATIONAL") or \
            result["behaviorClose"] not in ("OK", "INFORMATIONAL"):
        bad.append(case)
        print("%-8s %s, close %s" % (case, result["behavior"], result["behaviorClose"]))
print("results: " + ", ".join("%s %d" % item for item in sorted(counts.items())))
print("%d passed, %d failed" % (len(results) - len(bad), len(bad)))
sys.exit(1 if bad else 0)
EOF
