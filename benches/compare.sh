#!/usr/bin/env bash
# herald side by side with NATS: runs every load generator workload (firehose, selective, idle,
# replay) against herald (--plain, --durability batched and sync) and nats-server in one
# invocation, and prints one table with herald/NATS ratios at the end.
#
#   benches/compare.sh            # the full run: 2 rounds, about 7 minutes on 2 cores
#   benches/compare.sh --smoke    # 50 connections, 2 s phases: a few seconds per workload
#   benches/compare.sh --workloads firehose --targets herald-batched,nats --duration 10s
#
# Extra arguments go to the load generator (`cargo bench --bench loadgen -- --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
if ! command -v nats-server >/dev/null; then
    echo "installing nats-server (Debian package)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nats-server >/dev/null
fi

# The idle workload holds 20,000 sockets on each side of loopback, one descriptor each, in the
# load generator and in the server (a child, which inherits this limit).
idle=20000
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge $((idle + 500)) ]; then
    ulimit -n $((idle + 500))
else
    ulimit -n "$hard"
    idle=$((hard - 500))
    echo "note: the open-file limit is at most $hard here, so idle uses $idle connections" >&2
fi

# The bench profile is the release profile: this builds herald and the load generator optimized.
cargo build --release --bin herald
exec cargo bench --bench loadgen -- --rounds 2 --idle-conns "$idle" "$@"
