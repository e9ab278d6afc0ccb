#!/usr/bin/env python3
"""The fixed workloads of benches/callgrind/run.sh: connect, register, instrument, publish, drain.

Waits for herald's `listening on` line in its stderr file, takes a token and opens the
subscribers, then switches callgrind's instrumentation on (`callgrind_control -i on PID`),
publishes, waits until every subscriber has received every event meant for it, and switches it
off again.

- `mixed` (the default): SUBSCRIBERS websockets registered for every event; SINGLE one-event
  POSTs and BATCHES POSTs of BATCH events.
- `selective`: the loadgen's selective shape with one event per POST: SELECTIVE_KEYS keyed
  websockets (`machines.*.<key>`) and SELECTIVE_WATCHERS registered for every event;
  SELECTIVE_POSTS one-event POSTs of about 600 bytes, each to a key in turn, so every event is
  delivered to 1 + SELECTIVE_WATCHERS connections. Prints the deliveries, which run.sh divides
  the instructions by.
"""
import argparse
import json
import re
import selectors
import subprocess
import threading
import time
import uuid

import requests
import websocket

SUBSCRIBERS = 8
SINGLE = 400
BATCHES = 40
BATCH = 20
DEADLINE = 600.0
SELECTIVE_KEYS = 2000
SELECTIVE_WATCHERS = 10
SELECTIVE_POSTS = 1000
EVENT_BYTES = 600


def listening_address(stderr_path: str) -> str:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        with open(stderr_path, errors="replace") as f:
            m = re.search(r"listening on (?:http://)?([0-9.]+:[0-9]+)", f.read())
        if m:
            return m.group(1)
        time.sleep(0.2)
    raise SystemExit("herald did not say where it listens")


def event(i: int) -> dict:
    return {"Type": "machines", "Action": "update", "Key": f"m{i % 50}",
            "Object": {"Name": f"m{i % 50}", "Stage": "discover", "Step": i}}


def instrument(pid: str, state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, pid], check=True, capture_output=True)


def subscribe(addr: str, header: dict, filter_: str) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://{addr}/api/v3/ws", header=header, timeout=DEADLINE)
    ws.send(f"register {filter_}")
    while "register" not in ws.recv():
        pass
    return ws


def sized_event(key: str, i: int) -> dict:
    event = {"Type": "machines", "Action": "update", "Key": key,
             "Object": {"Name": key, "Step": i, "Pad": ""}}
    pad = EVENT_BYTES - len(json.dumps(event, separators=(",", ":")))
    event["Object"]["Pad"] = "x" * max(pad, 0)
    return event


def selective(pid: str, addr: str, base: str, header: dict) -> None:
    keys = [str(uuid.UUID(int=k + 1)) for k in range(SELECTIVE_KEYS)]
    watchers = [subscribe(addr, header, "*.*.*") for _ in range(SELECTIVE_WATCHERS)]
    keyed = [subscribe(addr, header, f"machines.*.{key}") for key in keys]
    expected = {}
    for ws in watchers:
        expected[ws.sock.fileno()] = SELECTIVE_POSTS
    for k, ws in enumerate(keyed):
        expected[ws.sock.fileno()] = len(range(k, SELECTIVE_POSTS, SELECTIVE_KEYS))
    pending = {fd: n for fd, n in expected.items() if n > 0}
    every = {ws.sock.fileno(): ws for ws in watchers + keyed}
    received = {fd: 0 for fd in every}

    def drain() -> None:
        # One thread for every socket: a thread per connection would cost more than herald.
        sel = selectors.DefaultSelector()
        for fd in pending:
            sel.register(every[fd].sock, selectors.EVENT_READ, fd)
        deadline = time.monotonic() + DEADLINE
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                fd = key.data
                frame = json.loads(every[fd].recv())
                if frame.get("Type") != "machines":
                    continue
                received[fd] += 1
                if received[fd] >= expected[fd]:
                    pending.pop(fd, None)
                    sel.unregister(every[fd].sock)

    instrument(pid, "on")
    reader = threading.Thread(target=drain)
    reader.start()
    session = requests.Session()
    session.headers.update(header)
    for i in range(SELECTIVE_POSTS):
        event = sized_event(keys[i % SELECTIVE_KEYS], i)
        session.post(f"{base}/events", json=event, timeout=DEADLINE).raise_for_status()
    reader.join(DEADLINE)
    instrument(pid, "off")
    if received != expected:
        short = {fd: (received[fd], n) for fd, n in expected.items() if received[fd] != n}
        raise SystemExit(f"subscribers fell short (received, expected): {short}")
    deliveries = sum(expected.values())
    print(f"{SELECTIVE_WATCHERS} watchers + {SELECTIVE_KEYS} keyed subscribers, "
          f"{SELECTIVE_POSTS} one-event POSTs of {EVENT_BYTES} bytes")
    print(f"deliveries {deliveries}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", required=True)
    ap.add_argument("--stderr", required=True)
    ap.add_argument("--mode", choices=["mixed", "selective"], default="mixed")
    args = ap.parse_args()
    addr = listening_address(args.stderr)
    base = f"http://{addr}/api/v3"
    auth = ("rocketskates", "callgrind-bench")
    token = requests.get(f"{base}/users/rocketskates/token", auth=auth, timeout=DEADLINE).json()["Token"]
    header = {"Authorization": f"Bearer {token}"}
    if args.mode == "selective":
        selective(args.pid, addr, base, header)
        return

    subs = []
    for _ in range(SUBSCRIBERS):
        ws = websocket.create_connection(f"ws://{addr}/api/v3/ws", header=header, timeout=DEADLINE)
        ws.send("register *.*.*")
        while "register" not in ws.recv():
            pass
        subs.append(ws)

    total = SINGLE + BATCHES * BATCH
    counts = [0] * SUBSCRIBERS

    def drain(k: int) -> None:
        while counts[k] < total:
            frame = json.loads(subs[k].recv())
            if frame.get("Type") == "machines":
                counts[k] += 1

    instrument(args.pid, "on")
    readers = [threading.Thread(target=drain, args=(k,)) for k in range(SUBSCRIBERS)]
    for t in readers:
        t.start()
    session = requests.Session()
    session.headers.update(header)
    for i in range(SINGLE):
        session.post(f"{base}/events", json=event(i), timeout=DEADLINE).raise_for_status()
    for b in range(BATCHES):
        body = [event(SINGLE + b * BATCH + j) for j in range(BATCH)]
        session.post(f"{base}/events", json=body, timeout=DEADLINE).raise_for_status()
    for t in readers:
        t.join(DEADLINE)
    instrument(args.pid, "off")
    if counts != [total] * SUBSCRIBERS:
        raise SystemExit(f"subscribers received {counts}, expected {total} each")
    print(f"{SUBSCRIBERS} subscribers x {total} events ({SINGLE} single POSTs, {BATCHES} of {BATCH})")


if __name__ == "__main__":
    main()
