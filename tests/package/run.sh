#!/usr/bin/env bash
# Package test: builds herald's .deb, installs it into a Debian root booted with
# `systemd-nspawn -b`, and checks the service the way an operator uses it: install, connect with
# the generated password, restart, reload, stop, upgrade, remove, purge.
#
# Run as root: bash tests/package/run.sh   (a few minutes; the Debian root is cached)
#
# The container shares the host's network, and herald listens on a free loopback port only.
# Where this machine cannot boot a container, it prints a "SKIPPED:" line and exits 0.
#
# Environment:
#   HERALD_TEST_ROOT_CACHE  where the pristine Debian root is cached [/var/cache/herald-test-root]
#   HERALD_TEST_KEEP=1      keep the run's root and container log for inspection
#   CARGO_TARGET_DIR        cargo's build directory, as usual
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLIENT="$REPO/tests/package/client.py"
CACHE_DIR=${HERALD_TEST_ROOT_CACHE:-/var/cache/herald-test-root}
# Debian packages the root needs beyond minbase: an init to boot, and what herald depends on.
ROOT_PACKAGES=systemd,systemd-sysv,dbus,adduser
# What the host needs: the tools to build, check and boot, and the websocket client.
HOST_PACKAGES=(debootstrap systemd-container lintian python3-websocket)
CARGO_DEB_VERSION=^3.8
# herald's shutdown_timeout default, and the slack allowed on top of it for `systemctl stop`.
SHUTDOWN_TIMEOUT=10
STOP_SLACK=3
# Worst systemd-analyze security exposure accepted (packaging/README.md gives the current one).
MAX_EXPOSURE=2.0
DEFAULT_PASSWORD=r0cketsk8ts

passed=0
failed=0
started=$SECONDS

say() { echo "# $*"; }
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
# check NAME COMMAND...: one test line from a command's exit status.
check() {
    local name=$1
    shift
    if "$@" >/dev/null; then ok "$name"; else not_ok "$name"; fi
}
summary() { echo "$passed passed, $failed failed"; }
skip() {
    echo "SKIPPED: tests/package/run.sh: $*"
    echo "0 passed, 0 failed, 1 skipped"
    exit 0
}
# A setup step failed: the remaining checks cannot run.
fatal() {
    not_ok "$*"
    summary
    exit 1
}

# Nothing may end the run without a verdict.
trap 'fatal "unexpected failure at line $LINENO: $BASH_COMMAND"' ERR

# --- the host ------------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || skip "needs root to debootstrap and boot a container (run it with sudo)"
[ "$(uname -s)" = Linux ] || skip "needs Linux"
. /etc/os-release
[ "${ID:-}" = debian ] || skip "builds a root for the host's Debian release; this host is ${ID:-unknown}"
CODENAME=${VERSION_CODENAME:?/etc/os-release names no codename}

missing=()
for tool in debootstrap systemd-nspawn lintian; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
/usr/bin/python3 -c 'import websocket' 2>/dev/null || missing+=(python3-websocket)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${HOST_PACKAGES[*]} (missing: ${missing[*]})"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${HOST_PACKAGES[@]}"; } \
        >/tmp/herald-package-apt.log 2>&1; then
        tail -5 /tmp/herald-package-apt.log
        skip "cannot install ${HOST_PACKAGES[*]} with apt-get"
    fi
fi
unshare --mount --pid --uts --ipc --fork true 2>/dev/null \
    || skip "cannot create namespaces here (no CAP_SYS_ADMIN?), so systemd-nspawn cannot run"
[ -e /sys/fs/cgroup/cgroup.controllers ] || [ -d /sys/fs/cgroup/systemd ] \
    || skip "no cgroup2 and no name=systemd cgroup hierarchy: systemd cannot boot in a container"

WORK=$(mktemp -d /var/tmp/herald-package-test.XXXXXX)
ROOT="$WORK/root"
NSPAWN_PID=
cleanup() {
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        # nspawn turns SIGTERM into an orderly poweroff of the container.
        kill -TERM "$NSPAWN_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    if [ "${HERALD_TEST_KEEP:-}" = 1 ]; then
        echo "# kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# --- the package ---------------------------------------------------------------------------

phase=$SECONDS
if ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb"
    cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" >"$WORK/cargo-install.log" 2>&1 \
        || { tail -20 "$WORK/cargo-install.log"; fatal "cargo install cargo-deb"; }
fi
mkdir -p "$WORK/deb" "$WORK/deb-next"
(cd "$REPO" && cargo deb --output "$WORK/deb/") >"$WORK/cargo-deb.log" 2>&1 \
    || { tail -30 "$WORK/cargo-deb.log"; fatal "cargo deb builds the package"; }
DEB=$(ls "$WORK"/deb/herald_*.deb)
VERSION=$(dpkg-deb --field "$DEB" Version)
# The same build under the next revision stands in for an upgrade.
NEXT_VERSION="${VERSION%-*}-$((${VERSION##*-} + 1))"
(cd "$REPO" && cargo deb --no-build --deb-version "$NEXT_VERSION" --output "$WORK/deb-next/") \
    >>"$WORK/cargo-deb.log" 2>&1 || { tail -30 "$WORK/cargo-deb.log"; fatal "cargo deb builds the next revision"; }
NEXT_DEB=$(ls "$WORK"/deb-next/herald_*.deb)
ok "cargo deb builds $(basename "$DEB"): $(stat -c %s "$DEB") bytes, in $((SECONDS - phase))s"

lintian --fail-on error "$DEB" >"$WORK/lintian.log" 2>&1 && lintian_status=0 || lintian_status=$?
sed 's/^/#   /' "$WORK/lintian.log" | grep -v 'root privileges' || true
check "lintian reports no errors" test "$lintian_status" = 0
# packaging/README.md states lintian's warnings and describes the debug-symbol package: keep it true.
WARNINGS=$(sed -n 's/^W: herald: \([a-z0-9-]*\).*/\1/p' "$WORK/lintian.log" | sort -u | xargs)
documented() {
    local tag
    grep -q "no errors and $(wc -w <<<"$WARNINGS") warnings" "$REPO/packaging/README.md" || return 1
    for tag in $WARNINGS; do grep -q "\`$tag\`" "$REPO/packaging/README.md" || return 1; done
}
check "packaging/README.md names lintian's warnings (${WARNINGS:-none})" documented
DDEB=$(ls "$WORK"/deb/herald-dbgsym_*.ddeb 2>/dev/null || true)
check "cargo deb writes the herald-dbgsym .ddeb that packaging/README.md describes" \
    test -n "$DDEB" -a -n "$(grep -l 'herald-dbgsym' "$REPO/packaging/README.md")"

# --- the Debian root -----------------------------------------------------------------------

MIRROR=$(apt-get indextargets --format '$(SITE) $(RELEASE)' 'Identifier: Packages' 2>/dev/null \
    | awk -v suite="$CODENAME" '$2 == suite { print $1; exit }')
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHED="$CACHE_DIR/$CODENAME-$(echo "$ROOT_PACKAGES" | sha256sum | cut -c1-12)"
mkdir -p "$CACHE_DIR"
phase=$SECONDS
(
    flock 9
    if [ ! -d "$CACHED" ]; then
        rm -rf "$CACHED.tmp"
        debootstrap --variant=minbase --include="$ROOT_PACKAGES" "$CODENAME" "$CACHED.tmp" "$MIRROR" \
            >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; exit 1; }
        mv "$CACHED.tmp" "$CACHED"
    fi
) 9>"$CACHE_DIR/.lock" || fatal "debootstrap $CODENAME from $MIRROR into $CACHED"
cp -a "$CACHED" "$ROOT"
say "Debian $CODENAME root ready in $((SECONDS - phase))s (cache: $CACHED)"

PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADDR="127.0.0.1:$PORT"
cp "$DEB" "$NEXT_DEB" "$ROOT/root/"
# The operator's drop-in, in place before the package arrives: loopback only, on a free port,
# since the container shares the host's network. The shipped conffile stays untouched.
mkdir -p "$ROOT/etc/systemd/system/herald.service.d"
cat >"$ROOT/etc/systemd/system/herald.service.d/test.conf" <<EOF
[Service]
Environment=HERALD_LISTEN=$ADDR
EOF
MACHINE="herald-test-$$"
echo "$MACHINE" >"$ROOT/etc/hostname"

# --- boot ----------------------------------------------------------------------------------

phase=$SECONDS
# The open-files ceiling a booted host's init has, so the unit's LimitNOFILE can take effect.
systemd-nspawn --quiet --directory="$ROOT" --machine="$MACHINE" --register=no --keep-unit \
    --rlimit=RLIMIT_NOFILE=1048576 --boot --console=read-only >"$WORK/console.log" 2>&1 &
NSPAWN_PID=$!
# Runs a command inside the booted container, with a clean environment.
in_root() {
    nsenter --target "$LEADER" --mount --uts --ipc --pid --cgroup -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}
# nspawn's child is at first a short-lived helper, so the leader (the container's init) is looked
# up again until the container answers.
LEADER=
booted=
for _ in $(seq 240); do
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    LEADER=$(ps -o pid= --ppid "$NSPAWN_PID" | tr -d ' ' | head -1 || true)
    if [ -n "$LEADER" ]; then
        state=$(in_root systemctl is-system-running 2>/dev/null || true)
        case "$state" in running | degraded) booted=$state; break ;; esac
    fi
    sleep 0.25
done
if [ -z "$booted" ]; then
    tail -20 "$WORK/console.log"
    # Nothing of herald has run yet: this is the machine, not the package.
    skip "systemd-nspawn could not boot a Debian root on this machine (see the console above)"
fi
say "container booted ($booted) in $((SECONDS - phase))s, leader pid $LEADER"

# --- install -------------------------------------------------------------------------------

client() { /usr/bin/python3 "$CLIENT" --addr "$ADDR" --password-file "$ROOT/etc/herald/admin-password" "$@"; }
main_pid() { in_root systemctl show --property=MainPID --value herald; }
# Waits until the service is active and answers HTTPS.
ready() { in_root systemctl is-active --quiet herald && client wait --timeout 30 >/dev/null; }
# Whether the service is active with this main pid.
running_as() { in_root systemctl is-active --quiet herald && [ "$(main_pid)" = "$1" ]; }
# log_carried_on EPOCH BEFORE AFTER KEY: the log kept its Epoch, numbering and the event at BEFORE.
log_carried_on() {
    [ "$2" -gt 0 ] && [ "$3" -gt "$2" ] && [ "$(client epoch)" = "$1" ] && [ "$(client key-at "$2")" = "$4" ]
}
journal_says() { in_root journalctl --no-pager -u herald -o cat | grep -qF "$1"; }
not_journal_says() { ! journal_says "$1"; }
secret_hidden() {
    local proc
    proc="/proc/$(main_pid)"
    # /proc files report size 0: reading one proves it is readable, so a miss means something.
    [ -n "$(in_root cat "$proc/environ" | tr -d '\0')" ] \
        && ! in_root grep -qaF "$1" "$proc/cmdline" "$proc/environ"
}
reloaded_in_place() { [ "$reloaded" = yes ] && running_as "$1"; }
stopped() { ! in_root systemctl is-active --quiet herald; }
open_files_limit_is() { in_root grep -Eq "^Max open files +$1 +$1 " "/proc/$(main_pid)/limits"; }
show_journal() { in_root journalctl --no-pager -u herald -n "${1:-30}" | sed 's/^/#   /'; }

phase=$SECONDS
in_root dpkg -i "/root/$(basename "$DEB")" >"$WORK/dpkg-install.log" 2>&1 \
    || { cat "$WORK/dpkg-install.log"; fatal "dpkg -i installs the package"; }
ok "dpkg -i installs $(basename "$DEB") in $((SECONDS - phase))s"

if in_root systemctl is-active --quiet herald; then
    ok "the service is active after install"
else
    not_ok "the service is active after install ($(in_root systemctl is-active herald || true))"
    show_journal 40
fi
check "the unit is enabled" in_root systemctl is-enabled --quiet herald
verify_output=$(in_root systemd-analyze verify herald.service 2>&1) && verify_status=0 || verify_status=$?
[ -z "$verify_output" ] || echo "$verify_output" | sed 's/^/#   /'
check "systemd-analyze verify passes without a warning" test "$verify_status" = 0 -a -z "$verify_output"
exposure=$(in_root systemd-analyze security --no-pager herald.service 2>/dev/null \
    | sed -n 's/.*Overall exposure level for herald.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security rates the unit ${exposure:-?} (at most $MAX_EXPOSURE)" \
    awk -v e="${exposure:-99}" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e <= max) }'

check "the system user herald exists" in_root getent passwd herald
check "/var/lib/herald belongs to herald, mode 0700" \
    test "$(in_root stat -c '%U:%G %a' /var/lib/herald)" = "herald:herald 700"
check "/etc/herald/admin-password belongs to herald, mode 0600" \
    test "$(in_root stat -c '%U:%G %a' /etc/herald/admin-password)" = "herald:herald 600"
password=$(cat "$ROOT/etc/herald/admin-password")
check "the generated password is 32 random characters, not DRP's default" \
    test "${#password}" = 32 -a "$password" != "$DEFAULT_PASSWORD"
check "the conffile is registered with dpkg" \
    grep -qx /etc/herald/herald.toml "$ROOT/var/lib/dpkg/info/herald.conffiles"
check "herald check-config accepts the shipped /etc/herald/herald.toml" \
    in_root herald check-config /etc/herald/herald.toml
# check-config names every key it knows when it meets one it does not.
echo "herald_package_test_probe = 1" >"$ROOT/root/probe.toml"
known_keys=$(in_root herald check-config /root/probe.toml 2>&1 | sed -n 's/.*known keys are: //p' | tr -d ',' || true)
undocumented=$(for key in $known_keys; do
    # The unit hands herald the admin password; it has no place in a world-readable file.
    case "$key" in admin_password | admin_password_file) continue ;; esac
    grep -qE "^(# )?$key = " "$ROOT/etc/herald/herald.toml" || echo "$key"
done)
check "/etc/herald/herald.toml lists every key herald knows${undocumented:+ (missing: ${undocumented//$'\n'/ })}" \
    test -n "$known_keys" -a -z "$undocumented"
# Every commented default, must be a valid configuration too.
sed -E 's/^# ([a-z_]+ = )/\1/' "$ROOT/etc/herald/herald.toml" >"$ROOT/root/all-defaults.toml"
check "herald check-config accepts every documented default uncommented" \
    in_root herald check-config /root/all-defaults.toml
# A sandboxed host may cap open files below the unit's limit; nothing in the container can lift it.
ceiling=$(in_root awk '/^Max open files/ { print $5 }' /proc/1/limits)
want_nofile=$((ceiling < 1048576 ? ceiling : 1048576))
[ "$want_nofile" = 1048576 ] || say "this machine caps open files at $ceiling, so LimitNOFILE=1048576 is checked up to that"
check "the admin password is in neither herald's command line nor its environment" \
    secret_hidden "$password"
check "LimitNOFILE reaches the process: $(in_root grep 'open files' "/proc/$(main_pid)/limits" | tr -s ' ')" \
    open_files_limit_is "$want_nofile"
driver=$(in_root journalctl --no-pager -u herald -o cat | sed -En 's/.*driver="?([a-z_]+).*/\1/p' | tail -1)
say "herald runs the ${driver:-unknown} driver in the container"

# --- use it from the host ------------------------------------------------------------------

if client wait --timeout 30 >/dev/null; then
    ok "herald answers HTTPS on $ADDR"
else
    not_ok "herald answers HTTPS on $ADDR"
    show_journal 40
fi
echo "$DEFAULT_PASSWORD" >"$WORK/default-password"
check "DRP's default password is refused with 403" test \
    "$(/usr/bin/python3 "$CLIENT" --addr "$ADDR" --password-file "$WORK/default-password" status 2>/dev/null)" = 403
check "the generated password is accepted" test "$(client status 2>/dev/null)" = 200
check "the journal says the admin was created with the configured password" \
    journal_says "created the admin user rocketskates with the configured admin password"
# The default password would also keep an unconfigured listen address on loopback.
check "the journal never mentions DRP's default password" not_journal_says "$DEFAULT_PASSWORD"
seq=$(client deliver first 2>"$WORK/client.err") && ok "a websocket client gets the published event (Seq $seq)" \
    || { not_ok "a websocket client gets the published event: $(cat "$WORK/client.err")"; seq=; }

# --- restart, reload, stop -----------------------------------------------------------------

epoch=$(client epoch 2>/dev/null || echo none)
before=$(client publish before-restart 2>/dev/null || echo 0)
pid_before=$(main_pid)
in_root systemctl restart herald || true
ready || show_journal 20
after=$(client publish after-restart 2>/dev/null || echo 0)
check "systemctl restart starts a new process (pid $pid_before -> $(main_pid))" test "$(main_pid)" != "$pid_before"
# Connection events take Seqs too, so later ones need not be consecutive; what matters is that
# the log, its Epoch and its numbering carry on.
check "the log survives a restart: Seq $before then $after, same Epoch, event $before still stored" \
    log_carried_on "$epoch" "$before" "$after" before-restart
check "after a restart the journal says the admin password is unchanged" \
    journal_says "has the configured admin password (unchanged)"

pid_before=$(main_pid)
in_root systemctl reload herald && reloaded=yes || reloaded=no
sleep 1 # let a process that dies of SIGHUP be noticed by systemd
check "systemctl reload succeeds ($reloaded) and keeps the same process running" \
    reloaded_in_place "$pid_before"
ready || show_journal 20

rm -f "$WORK/ws-ready"
client await-close "$WORK/ws-ready" --timeout $((SHUTDOWN_TIMEOUT + 30)) >"$WORK/close.json" 2>"$WORK/close.err" &
closer=$!
for _ in $(seq 100); do [ -e "$WORK/ws-ready" ] && break; sleep 0.1; done
stop_started=$SECONDS
in_root systemctl stop herald || true
stop_seconds=$((SECONDS - stop_started))
wait "$closer" && close=$(cat "$WORK/close.json") || close="none: $(cat "$WORK/close.err")"
check "systemctl stop closes websockets with 1001 \"server shutdown; resume after N\" (got $close)" \
    grep -q '"code": 1001, "reason": "server shutdown; resume after [0-9]' "$WORK/close.json"
check "systemctl stop finishes within shutdown_timeout (${stop_seconds}s <= $((SHUTDOWN_TIMEOUT + STOP_SLACK))s)" \
    test "$stop_seconds" -le $((SHUTDOWN_TIMEOUT + STOP_SLACK))
result=$(in_root systemctl show --property=Result --value herald)
status=$(in_root systemctl show --property=ExecMainStatus --value herald)
check "herald exits 0 on SIGTERM, unkilled (Result=$result, status $status)" \
    test "$result" = success -a "$status" = 0
[ "$result" = success ] || show_journal 20

# Without its password file the service must fail rather than fall back to DRP's default.
mv "$ROOT/etc/herald/admin-password" "$ROOT/root/admin-password"
in_root systemctl start herald >/dev/null 2>&1 && started_without=yes || started_without=no
check "without /etc/herald/admin-password the service does not start (started: $started_without)" \
    test "$started_without" = no
in_root systemctl stop herald || true
in_root systemctl reset-failed herald || true
mv "$ROOT/root/admin-password" "$ROOT/etc/herald/admin-password"

# --- upgrade, remove, purge ----------------------------------------------------------------

in_root systemctl start herald || true
ready || show_journal 20
epoch=$(client epoch 2>/dev/null || echo none)
before=$(client publish before-upgrade 2>/dev/null || echo 0)
password_sum=$(sha256sum <"$ROOT/etc/herald/admin-password")
pid_before=$(main_pid)
in_root dpkg -i "/root/$(basename "$NEXT_DEB")" >"$WORK/dpkg-upgrade.log" 2>&1 \
    || { cat "$WORK/dpkg-upgrade.log"; not_ok "dpkg -i upgrades to $NEXT_VERSION"; }
ready || show_journal 20
after=$(client publish after-upgrade 2>/dev/null || echo 0)
check "an upgrade to $NEXT_VERSION restarts the service (pid $pid_before -> $(main_pid))" \
    test "$(main_pid)" != "$pid_before" -a "$(main_pid)" != 0
check "an upgrade keeps the log: Seq $before then $after, same Epoch, event $before still stored" \
    log_carried_on "$epoch" "$before" "$after" before-upgrade
check "an upgrade keeps the admin password" test "$(sha256sum <"$ROOT/etc/herald/admin-password")" = "$password_sum"

in_root dpkg --remove herald >"$WORK/dpkg-remove.log" 2>&1 || { cat "$WORK/dpkg-remove.log"; not_ok "dpkg --remove"; }
check "dpkg --remove stops the service" stopped
check "dpkg --remove keeps /var/lib/herald and its log" test -d "$ROOT/var/lib/herald/db"
check "dpkg --remove keeps the admin password and the conffile" \
    test -f "$ROOT/etc/herald/admin-password" -a -f "$ROOT/etc/herald/herald.toml"
in_root dpkg --purge herald >"$WORK/dpkg-purge.log" 2>&1 || { cat "$WORK/dpkg-purge.log"; not_ok "dpkg --purge"; }
check "dpkg --purge removes /var/lib/herald" test ! -e "$ROOT/var/lib/herald"
check "dpkg --purge removes /etc/herald" test ! -e "$ROOT/etc/herald"

say "package test took $((SECONDS - started))s"
summary
if [ "$failed" -gt 0 ]; then exit 1; fi
