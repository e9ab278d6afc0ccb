#!/usr/bin/python3
"""A herald client for tests/package/run.sh: talks to the installed service from the host.

Each subcommand prints one line for the script to read and exits non-zero with the reason on
stderr when herald does not behave. The server's certificate is self-signed, so it is not
verified: these checks are about the package, not about TLS.
"""

import argparse
import base64
import json
import ssl
import sys
import time
import urllib.error
import urllib.request

import websocket

INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE

# Events this test publishes all have this type, so its filters see nothing else.
EVENT_TYPE = "herald-package-test"


def basic(user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


def request(args, method, path, body=None):
    """Sends one request; answers (status, headers, body), whatever the status."""
    req = urllib.request.Request(
        f"https://{args.addr}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": basic(args.user, args.password),
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(req, context=INSECURE, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def publish(args, key):
    """Publishes one event and answers its Seq from the Herald-Seq header."""
    event = {"Type": EVENT_TYPE, "Action": "create", "Key": key, "Object": {"key": key}}
    status, headers, body = request(args, "POST", "/api/v3/events", event)
    if status != 204:
        sys.exit(f"publish answered {status}: {body[:300]!r}")
    return int(headers["Herald-Seq"])


def connect(args):
    """Opens the websocket and registers for this test's events, waiting for the reply."""
    ws = websocket.create_connection(
        f"wss://{args.addr}/api/v3/ws",
        header=[f"Authorization: {basic(args.user, args.password)}"],
        sslopt={"context": INSECURE},
        timeout=10,
    )
    ws.send(f"register {EVENT_TYPE}.*.*")
    reply = json.loads(ws.recv())
    if (reply.get("Type"), reply.get("Action")) != ("websocket", "register"):
        sys.exit(f"register was answered with {reply}")
    return ws


def cmd_wait(args):
    """Waits until herald answers HTTPS at all, within the deadline."""
    deadline = time.monotonic() + args.timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status, _, _ = request(args, "GET", "/api/v3/info")
            print(status)
            return
        except OSError as error:
            last = error
            time.sleep(0.2)
    sys.exit(f"herald did not answer on {args.addr} within {args.timeout}s: {last}")


def cmd_status(args):
    """Prints the status of an authenticated read, e.g. 403 for a wrong password."""
    status, _, _ = request(args, "GET", "/api/v3/events?since=0&limit=1")
    print(status)


def cmd_publish(args):
    print(publish(args, args.key))


def cmd_key_at(args):
    """Prints the Key of the stored event with this Seq, read back over REST."""
    status, _, body = request(args, "GET", f"/api/v3/events?since={args.seq - 1}&limit=1")
    events = json.loads(body) if status == 200 else []
    if not events or events[0].get("Seq") != args.seq:
        sys.exit(f"no event with Seq {args.seq} in the log (status {status}): {body[:300]!r}")
    print(events[0]["Key"])


def cmd_epoch(args):
    """Prints the log's Epoch from /api/v3/info."""
    status, _, body = request(args, "GET", "/api/v3/info")
    if status != 200:
        sys.exit(f"/api/v3/info answered {status}")
    print(json.loads(body)["Epoch"])


def cmd_deliver(args):
    """Publishes an event and prints its Seq once the websocket delivered the same event."""
    ws = connect(args)
    seq = publish(args, args.key)
    while True:
        event = json.loads(ws.recv())
        if event.get("Key") == args.key:
            break
    ws.close()
    if event.get("Seq") != seq:
        sys.exit(f"delivered Seq {event.get('Seq')} but publish answered Herald-Seq {seq}")
    print(seq)


def cmd_await_close(args):
    """Connects, touches the ready file, then prints the server's close as JSON."""
    ws = connect(args)
    ws.settimeout(args.timeout)
    open(args.ready_file, "w").close()
    started = time.monotonic()
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
    except websocket.WebSocketTimeoutException:
        sys.exit(f"no close frame within {args.timeout}s")
    except websocket.WebSocketConnectionClosedException:
        sys.exit("the connection was dropped without a close frame")
    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
    reason = data[2:].decode("utf-8", "replace")
    print(json.dumps({"code": code, "reason": reason,
                      "seconds": round(time.monotonic() - started, 3)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", required=True, help="host:port of herald")
    parser.add_argument("--user", default="rocketskates")
    parser.add_argument("--password-file", required=True, help="file holding the password")
    sub = parser.add_subparsers(dest="command", required=True)
    wait = sub.add_parser("wait")
    wait.add_argument("--timeout", type=float, default=30)
    sub.add_parser("status")
    sub.add_parser("epoch")
    sub.add_parser("key-at").add_argument("seq", type=int)
    for name in ("publish", "deliver"):
        sub.add_parser(name).add_argument("key")
    close = sub.add_parser("await-close")
    close.add_argument("ready_file")
    close.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    with open(args.password_file) as file:
        args.password = file.read().strip()
    {
        "wait": cmd_wait,
        "status": cmd_status,
        "publish": cmd_publish,
        "key-at": cmd_key_at,
        "epoch": cmd_epoch,
        "deliver": cmd_deliver,
        "await-close": cmd_await_close,
    }[args.command](args)


if __name__ == "__main__":
    main()
