#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 25), JOBS at a time (default 1), from the
# committed seeds in fuzz/seeds/ plus what earlier runs grew in fuzz/corpus/ (not committed).
# Prints one line per target with its runs and execs/s; exits non-zero when any target crashed,
# leaving the input that did it in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-25}
jobs=${2:-1}

if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked --quiet
fi
# The sanitizer flags cargo fuzz passes are unstable options: this lets a stable toolchain take
# them, so no nightly is needed.
export RUSTC_BOOTSTRAP=1

targets=$(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' Cargo.toml | grep -v '^herald-fuzz$')
cargo fuzz build -O

mkdir -p logs
run_one() {
    local target=$1
    mkdir -p "corpus/$target" "artifacts/$target"
    # -timeout: one input taking 10 s is a finding; -rss_limit_mb: so is one taking 2 GiB.
    if cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"logs/$target.log" 2>&1; then
        status=ok
    else
        status=CRASHED
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$target.log" | tail -1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "logs/$target.log" | tail -1)
    took=${took:-$seconds}
    [ "$took" -gt 0 ] || took=1
    printf '%-18s %-8s %10s runs  %6s execs/s  corpus %s\n' "$target" "$status" "${runs:-?}" \
        "$(( ${runs:-0} / took ))" "$(ls "corpus/$target" | wc -l)"
    if [ "$status" != ok ]; then
        grep -E '^(thread|==[0-9]+==|SUMMARY|panicked|Test unit written)' "logs/$target.log" | head -20
        return 1
    fi
}

failed=0
running=0
for target in $targets; do
    run_one "$target" &
    running=$(( running + 1 ))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || failed=1
        running=$(( running - 1 ))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$(( running - 1 ))
done
if [ "$failed" -ne 0 ]; then
    echo "fuzzing found a crash: see fuzz/artifacts/ and fuzz/logs/" >&2
    exit 1
fi
