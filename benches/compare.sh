#!/usr/bin/env bash
# herald with its default settings (durability sync, default cores and cache) side by side with
# NATS, row by row, each row a shape of load: the servers pinned to one CPU, the load generator
# on the others, 600-byte events. Prints one table with the herald/NATS ratio of every number.
#
#   benches/compare.sh               # every row, two rounds: about 12 minutes on 2 cores
#   benches/compare.sh --smoke       # every row once, 50 connections, 2 s phases: 1.5 to 3 minutes
#   benches/compare.sh --memory      # 10 minutes of sustained selective load, RSS at the end
#   benches/compare.sh --rows 'selective 1/POST,firehose 200' --duration 10s
#
# Other arguments go to every load generator run (`cargo bench --bench loadgen -- --help`), e.g.
# `--herald-arg=--cache-bytes=1GiB`. SERVER_CPUS (default 0) names the servers' CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
if ! command -v nats-server >/dev/null; then
    echo "installing nats-server (Debian package)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nats-server >/dev/null
fi

mode=rows
only=""
# Two rounds, the targets in alternating order, keep each server's better one: a slow spell of
# the shared machine does not decide a row. A smoke run checks, once.
rounds=2
targets=herald,nats
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --memory) mode=memory; rounds=1 ;;
        --smoke) rounds=1; extra+=("$1") ;;
        --rows) only="$2"; shift ;;
        --rows=*) only="${1#--rows=}" ;;
        # A list option given twice adds up rather than overrides, so it is taken here.
        --targets) targets="$2"; shift ;;
        --targets=*) targets="${1#--targets=}" ;;
        *) extra+=("$1") ;;
    esac
    shift
done

# The firehose 1000 and storm rows hold a few thousand sockets on each side of loopback, one
# descriptor each, in the load generator and in the server (a child, which inherits this limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The bench profile is the release profile: this builds herald and the load generator optimized.
cargo build --release --locked --bin herald
cargo bench --locked --no-run --bench loadgen

saved=$(mktemp)
trap 'rm -f "$saved"' EXIT
failed=0
common=(--targets "$targets" --server-cpus "${SERVER_CPUS:-0}" --event-bytes 600 --rounds "$rounds"
    --save "$saved")

# row NAME LOADGEN-ARGS...: one row of the table, unless --rows leaves it out (by the name's part
# before the colon).
row() {
    local name=$1
    shift
    if [ -n "$only" ] && [[ ",$only," != *",${name%%:*},"* ]]; then
        return 0
    fi
    echo
    echo "########## $name"
    cargo bench --locked --bench loadgen -- --row "$name" "${common[@]}" "$@" "${extra[@]}" \
        || failed=1
}

selective_2000=(--workloads selective --selective-keys 2000 --selective-watchers 10)
if [ "$mode" = memory ]; then
    # herald's log fills up to its retention meanwhile, so the RSS is that of a full server.
    row "memory: selective 10 min" --workloads selective --duration 600s --selective-rate 0
else
    for tls in "" "TLS "; do
        flag=()
        if [ -n "$tls" ]; then flag=(--tls); fi
        row "${tls}selective 1/POST: 2000 keys + 10 watchers, batch 1, 8 publishers" \
            "${selective_2000[@]}" --batch 1 --paced-batch 1 --publishers 8 "${flag[@]}"
        row "${tls}selective batch 10: 2000 keys + 10 watchers, 2 publishers" \
            "${selective_2000[@]}" --batch 10 --publishers 2 "${flag[@]}"
        row "${tls}selective batch 64: 10000 keys + 10 watchers, 16 publishers" \
            --workloads selective --batch 64 --publishers 16 "${flag[@]}"
        row "${tls}firehose 200: 200 connections on *.*.*, batch 10" \
            --workloads firehose --firehose-conns 200 --batch 10 "${flag[@]}"
        row "${tls}firehose 1000: 1000 connections on *.*.*, batch 10" \
            --workloads firehose --firehose-conns 1000 --batch 10 "${flag[@]}"
    done
    row "storm 1000: 1000 subscribers on *.*.* connecting at once" \
        --workloads storm --storm-conns 1000
    row "storm 3000: 3000 subscribers on *.*.* connecting at once" \
        --workloads storm --storm-conns 3000
fi

echo
echo "########## all rows: herald (defaults) and NATS, servers on CPUs ${SERVER_CPUS:-0}"
cargo bench --locked --bench loadgen -- --table-from "$saved"
exit "$failed"
