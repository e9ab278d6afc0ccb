#!/bin/sh
# Cuts the power under herald N times (default 20) and checks what survived; one line per run
# and a summary. Needs root, /dev/fuse and python3; tests/powercut/README.md says how it works
# and what it measured.
#
#   scripts/powercut-loop.sh [RUNS] [sync|batched]
#
# Each run: mounts tests/powercut's filesystem (a disk whose write cache is lost at a power
# cut) over a fresh directory, starts herald with its data directory inside it, runs 4
# publishers and 3 object writers (machines and roles), cuts the power after
# HERALD_POWERCUT_LOAD_MS (default 1500) and kills herald, remounts what the disk kept,
# restarts herald and looks up every acknowledged event (by Seq) and write. Under `sync` (the
# default) a run fails if anything acknowledged is lost; under `batched` the loss is measured.
#
# CARGO_TARGET_DIR and MONOIO_FORCE_LEGACY_DRIVER are honoured as usual.
set -u

runs=${1:-20}
case "$runs" in
    '' | *[!0-9]*) echo "usage: $0 [RUNS] [sync|batched]  (RUNS is a whole number, default 20)" >&2; exit 2 ;;
esac
durability=${2:-sync}
case "$durability" in
    sync | batched) ;;
    *) echo "usage: $0 [RUNS] [sync|batched]  (durability: sync or batched, default sync)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 2
root=$(pwd)

if ! cargo build --locked --bin herald >/dev/null 2>&1; then
    echo "herald does not build; run: cargo build --locked --bin herald" >&2
    exit 2
fi
if ! cargo build --locked --manifest-path tests/powercut/Cargo.toml >/dev/null 2>&1; then
    echo "the fixture does not build; run: cargo build --locked --manifest-path tests/powercut/Cargo.toml" >&2
    exit 2
fi
herald="${CARGO_TARGET_DIR:-$root/target}/debug/herald"
fixture="${CARGO_TARGET_DIR:-$root/tests/powercut/target}/debug/powercut-fs"

logs=$(mktemp -d "${TMPDIR:-/tmp}/herald-powercut-loop.XXXXXX")
fs_pid=
cleanup() {
    [ -n "$fs_pid" ] && kill -TERM "$fs_pid" 2>/dev/null && wait "$fs_pid" 2>/dev/null
    fs_pid=
}
trap 'cleanup; exit 1' INT TERM

# Mounts the fixture over $1 on $2 and waits until it is mounted.
mount_fixture() {
    "$fixture" "$1" "$2" >>"$3" 2>&1 &
    fs_pid=$!
    tries=0
    until mountpoint -q "$2"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ] || ! kill -0 "$fs_pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.1
    done
}

passed=0
failed=0
total_acknowledged=0
total_lost=0
total_writes=0
total_writes_lost=0
run=1
while [ "$run" -le "$runs" ]; do
    dir="$logs/run-$run"
    mkdir -p "$dir/disk" "$dir/mnt"
    log="$dir/run.log"
    result=ok
    if ! mount_fixture "$dir/disk" "$dir/mnt" "$log"; then
        result="FAILED: no mount (output in $log)"
    elif ! python3 tests/powercut/drive.py load "$herald" "$dir/mnt/data" "$durability" "$fs_pid" \
        "$dir/acked.json" >>"$log" 2>&1; then
        result="FAILED: the load did not run (output in $log)"
        cleanup
    else
        cleanup # unmounts after the cut: the disk keeps only what was synced
        if ! mount_fixture "$dir/disk" "$dir/mnt" "$log"; then
            result="FAILED: no remount (output in $log)"
        elif ! python3 tests/powercut/drive.py check "$herald" "$dir/mnt/data" "$durability" \
            "$dir/acked.json" >>"$log" 2>&1; then
            result="FAILED (output in $log)"
        fi
        cleanup
    fi
    figures=$(grep '^acknowledged=' "$log" | tail -n 1)
    number() { printf '%s\n' "$figures" | sed -n "s/.* $1=\([0-9]*\).*/\1/p"; }
    acknowledged=$(printf '%s\n' "$figures" | sed -n 's/^acknowledged=\([0-9]*\).*/\1/p')
    total_acknowledged=$((total_acknowledged + ${acknowledged:-0}))
    total_lost=$((total_lost + $(number lost | grep . || echo 0)))
    total_writes=$((total_writes + $(number machines | grep . || echo 0) + $(number roles | grep . || echo 0)))
    total_writes_lost=$((total_writes_lost + $(number machines_lost | grep . || echo 0) + $(number roles_lost | grep . || echo 0)))
    if [ "$result" = ok ]; then
        passed=$((passed + 1))
        rm -rf "$dir"
    else
        failed=$((failed + 1))
    fi
    echo "run $run/$runs: $result ${figures:-(no figures)}"
    run=$((run + 1))
done

echo "summary ($durability): $passed passed, $failed failed of $runs runs;" \
    "$total_lost of $total_acknowledged acknowledged events lost," \
    "$total_writes_lost of $total_writes acknowledged writes lost"
if [ "$failed" -eq 0 ]; then
    rm -rf "$logs"
    exit 0
fi
exit 1
