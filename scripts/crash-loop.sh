#!/bin/sh
# Runs a SIGKILL crash test (tests/crash.rs) N times, default 20, and prints one line per run
# and a summary. A failed run's output is kept in a file named in its line.
#
#   scripts/crash-loop.sh [N] [sync|batched]
#
# `sync` (the default) checks that no acknowledged event is lost; `batched` that no Seq handed
# out before the kill is given to another event and that every resume is exact or not recovered.
#
# HERALD_CRASH_LOAD_MS and HERALD_CRASH_PUBLISHERS are passed on to the test; CARGO_TARGET_DIR
# and MONOIO_FORCE_LEGACY_DRIVER are honoured as usual.
set -u

runs=${1:-20}
case "$runs" in
    '' | *[!0-9]*) echo "usage: $0 [RUNS] [sync|batched]  (RUNS is a whole number, default 20)" >&2; exit 2 ;;
esac
case "${2:-sync}" in
    sync) test=every_acknowledged_event_survives_a_sigkill_under_load; prefix='crash run: ' ;;
    batched) test=after_a_sigkill_under_batched_no_seq_is_reused_and_every_resume_is_exact_or_not_recovered; prefix='batched crash run: ' ;;
    *) echo "usage: $0 [RUNS] [sync|batched]  (durability: sync or batched, default sync)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 2

if ! cargo test --test crash --no-run >/dev/null 2>&1; then
    echo "the crash test does not build; run: cargo test --test crash --no-run" >&2
    exit 2
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/herald-crash-loop.XXXXXX")
passed=0
failed=0
total_acknowledged=0
run=1
while [ "$run" -le "$runs" ]; do
    log="$logs/run-$run.log"
    if cargo test -q --test crash -- --exact "$test" --nocapture >"$log" 2>&1; then
        passed=$((passed + 1))
        result=ok
    else
        failed=$((failed + 1))
        result="FAILED (output in $log)"
    fi
    figures=$(sed -n "s/^$prefix//p" "$log" | tail -n 1)
    acknowledged=$(printf '%s\n' "$figures" | sed -n 's/^acknowledged=\([0-9]*\).*/\1/p')
    total_acknowledged=$((total_acknowledged + ${acknowledged:-0}))
    echo "run $run/$runs: $result ${figures:-(no figures)}"
    [ "$result" = ok ] && rm -f "$log"
    run=$((run + 1))
done

echo "summary: $passed passed, $failed failed of $runs runs; $total_acknowledged events acknowledged in all"
if [ "$failed" -eq 0 ]; then
    rmdir "$logs" 2>/dev/null
    exit 0
fi
exit 1
