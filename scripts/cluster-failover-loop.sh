#!/bin/sh
# Runs the cluster's three failover checks of tests/cluster.rs N times (default 20) under
# publish load and prints one line per run and a summary: a herald node SIGKILLed (its client
# replays on another node), the NATS server leading the stream SIGKILLed, and that server
# stopped (SIGSTOP) for 10 s then continued. Each run fails if an acknowledged event is lost,
# repeated or out of order, or a replay is not recovered. Needs nats-server on the PATH.
#
#   scripts/cluster-failover-loop.sh [RUNS]
set -u

runs=${1:-20}
case "$runs" in
    '' | *[!0-9]*) echo "usage: $0 [RUNS]  (RUNS is a whole number, default 20)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 2
command -v nats-server >/dev/null || { echo "nats-server is needed: apt-get install nats-server" >&2; exit 2; }
cargo test --locked --test cluster --no-run >/dev/null 2>&1 || { echo "building the cluster tests failed" >&2; exit 1; }

failed=0
for check in clients_of_a_killed_node_replay_on_another_and_lose_no_acknowledged_event \
    killing_the_nats_server_that_leads_the_stream_loses_no_acknowledged_event \
    a_nats_server_stalled_for_ten_seconds_loses_no_acknowledged_event_and_clients_stay; do
    passed=0 acked=0 refused=0
    run=1
    while [ "$run" -le "$runs" ]; do
        out=$(cargo test --locked --test cluster -- --exact "$check" --include-ignored --nocapture 2>&1)
        line=$(printf '%s\n' "$out" | grep '^failover:' | tail -n 1)
        if printf '%s\n' "$out" | grep -q '^test result: ok. 1 passed'; then
            passed=$((passed + 1))
            a=$(printf '%s\n' "$line" | sed -n 's/.*acknowledged \([0-9]*\).*/\1/p')
            r=$(printf '%s\n' "$line" | sed -n 's/.*refused \([0-9]*\).*/\1/p')
            acked=$((acked + ${a:-0})) refused=$((refused + ${r:-0}))
            echo "$check run $run: ok; $line"
        else
            failed=$((failed + 1))
            echo "$check run $run: FAILED"
            printf '%s\n' "$out" | grep -A 5 'panicked' | head -n 12
        fi
        run=$((run + 1))
    done
    echo "== $check: $passed/$runs passed; $acked events acknowledged, $refused refused (503), 0 lost in the runs that passed"
done
[ "$failed" -eq 0 ]
