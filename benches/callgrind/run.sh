#!/usr/bin/env bash
# Instruction counts of one fixed publish + fan-out run, under callgrind, which counts the same on
# a busy machine and a quiet one (wall times do not). Compares herald builds, not servers.
#
#   benches/callgrind/run.sh [HERALD_BINARY...]   (default: target/release/herald, built here)
#   MODE=selective benches/callgrind/run.sh ...    the loadgen's selective shape, one event per
#                                                  POST; also prints Ir per delivered event
#
# For each binary: herald starts uninstrumented on one core (epoll: valgrind does not know
# io_uring) with the durable log on a temporary directory; the subscribers connect and register;
# then instrumentation goes on for exactly the workload (workload.py: single-event POSTs, batched
# POSTs, every event fanned out to every subscriber) and off again once every subscriber holds
# every event. Prints the instructions executed (Ir) in that window, per binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
    cargo build --release --locked --bin herald >&2
    bins=(target/release/herald)
fi
for bin in "${bins[@]}"; do
    dir=$(mktemp -d)
    out="$dir/callgrind.out"
    MONOIO_FORCE_LEGACY_DRIVER=1 valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$out" \
        "$bin" serve --plain --listen 127.0.0.1:0 --cores 1 --data-dir "$dir/data" \
        --admin-password callgrind-bench >"$dir/stdout" 2>"$dir/stderr" &
    pid=$!
    if ! python3 benches/callgrind/workload.py --mode "${MODE:-mixed}" --pid "$pid" \
        --stderr "$dir/stderr" >"$dir/workload" 2>&1; then
        cat "$dir/workload" >&2
        kill -TERM "$pid"; wait "$pid" || true
        tail -20 "$dir/stderr" >&2
        exit 1
    fi
    cat "$dir/workload" >&2
    kill -TERM "$pid"
    wait "$pid" || true
    ir=$(grep -E '^totals:' "$out" | tail -1 | awk '{print $2}')
    deliveries=$(awk '/^deliveries / {print $2}' "$dir/workload")
    if [ -n "$deliveries" ]; then
        printf '%s\t%s\t%s per delivered event\n' "$bin" "$ir" "$((ir / deliveries))"
    else
        printf '%s\t%s\n' "$bin" "$ir"
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$dir"
done
