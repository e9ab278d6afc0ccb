# Shared by the test scripts that run herald as a process: source it, then call start_herald.
# Needs HERALD (the binary); sets server_pid, for the caller's cleanup, and endpoint.

# start_herald LOG FLAGS...: runs `$HERALD serve FLAGS...` in the background with its stderr in
# LOG, and waits up to 30 s for its start line; endpoint is then scheme://127.0.0.1:PORT.
start_herald() {
    local log=$1
    shift
    "$HERALD" serve "$@" 2>"$log" &
    server_pid=$!
    endpoint=
    for _ in $(seq 1 300); do
        endpoint=$(grep -oE 'listening on https?://127\.0\.0\.1:[0-9]+' "$log" | head -n 1 |
            sed 's/listening on //') || true
        [ -n "$endpoint" ] && return 0
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "herald exited before listening:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "herald did not log 'listening on' within 30 s:" >&2
    cat "$log" >&2
    exit 1
}
