#!/usr/bin/env python3
"""The fixed workload of benches/callgrind/run.sh: connect, register, instrument, publish, drain.

Waits for herald's `listening on` line in its stderr file, takes a token, opens SUBSCRIBERS
websockets registered for every event, then switches callgrind's instrumentation on
(`callgrind_control -i on PID`), publishes SINGLE one-event POSTs and BATCHES POSTs of BATCH
events, waits until every subscriber has received every event, and switches it off again.
"""
import argparse
import json
import re
import subprocess
import threading
import time

import requests
import websocket

SUBSCRIBERS = 8
SINGLE = 400
BATCHES = 40
BATCH = 20
DEADLINE = 600.0


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", required=True)
    ap.add_argument("--stderr", required=True)
    args = ap.parse_args()
    addr = listening_address(args.stderr)
    base = f"http://{addr}/api/v3"
    auth = ("rocketskates", "callgrind-bench")
    token = requests.get(f"{base}/users/rocketskates/token", auth=auth, timeout=DEADLINE).json()["Token"]
    header = {"Authorization": f"Bearer {token}"}

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

    subprocess.run(["callgrind_control", "-i", "on", args.pid], check=True, capture_output=True)
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
    subprocess.run(["callgrind_control", "-i", "off", args.pid], check=True, capture_output=True)
    if counts != [total] * SUBSCRIBERS:
        raise SystemExit(f"subscribers received {counts}, expected {total} each")
    print(f"{SUBSCRIBERS} subscribers x {total} events ({SINGLE} single POSTs, {BATCHES} of {BATCH})")


if __name__ == "__main__":
    main()
