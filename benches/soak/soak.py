#!/usr/bin/env python3
"""A day of load, compressed: herald under a mixed workload for an hour, sampled every minute.

    python3 benches/soak/soak.py --herald target/release/herald [--minutes 60] [--out DIR]

herald runs on its defaults (TLS with its self-signed certificate, `sync` durability, two cores)
with a retention small enough that trimming runs all along. The workload, all at once:

- publishers: one event per POST (50/s) and batches of 20 (100 events/s);
- object writers: profiles created, patched and deleted (5 writes/s), each emitting its event;
- firehose subscribers (8) registered for `*.*.*`, each checking that every `Seq` arrives once
  and in order (a missing `Seq` is a lost event);
- selective subscribers (50) registered for one machine each, counting their events;
- reconnecting clients (10) that read for 5-20 s, hang up and come back with `replay SEQ EPOCH`,
  checking that the stream resumes at exactly the next `Seq`;
- a catch-up reader that replays everything retained every two minutes.

Every minute it records herald's RSS, open file descriptors, the data directory's size on disk and
the delivery ratio (events the firehose subscribers received / events stored, times subscribers).
At the end publishers stop, every subscriber must reach the last acknowledged `Seq`, and every
selective subscriber must hold exactly the events published for its machine.

Fails (exit 1) on any lost or duplicated event, on file descriptors growing after the first ten
minutes, or on RSS growing more than 10 % after them. Writes `soak.csv` and `soak.svg` (the four
curves) to --out.
"""
import argparse
import csv
import json
import os
import random
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import urllib3
import websocket

PASSWORD = "soak-password"
FIREHOSE = 8
SELECTIVE = 50
RECONNECTING = 10
MACHINES = 500
SINGLE_RATE = 50.0
BATCH_EVERY = 0.2
BATCH = 20
OBJECT_RATE = 5.0
RETAIN_EVENTS = 40_000  # full in under 5 minutes, so the log is at its retention well before minute 10
TIMEOUT = 30.0
SETTLE_MINUTES = 10
RSS_GROWTH_LIMIT = 0.10
FD_GROWTH_LIMIT = 8

urllib3.disable_warnings()
SSLOPT = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}


class Soak:
    def __init__(self, addr: str, token: str):
        self.addr = addr
        self.base = f"https://{addr}/api/v3"
        self.header = {"Authorization": f"Bearer {token}"}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.last_acked = 0
        self.published_per_machine = [0] * MACHINES
        self.firehose_seq = [0] * FIREHOSE
        self.selective_count = [0] * SELECTIVE
        self.reconnects = 0
        self.replays = 0
        self.slow_closes = 0
        self.epoch = ""
        self.registered = threading.Semaphore(0)

    def fail(self, why: str) -> None:
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(why)
        print(f"FAIL: {why}", file=sys.stderr, flush=True)

    def session(self) -> requests.Session:
        s = requests.Session()
        s.verify = False
        s.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides verify=False
        s.headers.update(self.header)
        return s

    def connect(self, filters: list[str]) -> websocket.WebSocket:
        ws = websocket.create_connection(
            f"wss://{self.addr}/api/v3/ws", header=self.header, sslopt=SSLOPT, timeout=TIMEOUT
        )
        for f in filters:
            ws.send(f"register {f}")
            while True:
                frame = json.loads(ws.recv())
                if frame.get("Type") == "websocket" and frame.get("Action") == "register":
                    break
        return ws

    def acked(self, response: requests.Response, machines: list[int]) -> None:
        response.raise_for_status()
        seq = int(response.headers["Herald-Seq"])
        with self.lock:
            self.last_acked = max(self.last_acked, seq)
            for m in machines:
                self.published_per_machine[m] += 1

    # --- publishers -------------------------------------------------------------------------

    def single_publisher(self) -> None:
        s, i = self.session(), 0
        while not self.stop.is_set():
            m = i % MACHINES
            body = {"Type": "machines", "Action": "update", "Key": f"m{m}",
                    "Object": {"Name": f"m{m}", "Step": i, "Pad": "x" * 300}}
            self.acked(s.post(f"{self.base}/events", json=body, timeout=TIMEOUT), [m])
            i += 1
            time.sleep(1.0 / SINGLE_RATE)

    def batch_publisher(self) -> None:
        s, i = self.session(), 0
        while not self.stop.is_set():
            ms = [(i + j * 7) % MACHINES for j in range(BATCH)]
            body = [{"Type": "machines", "Action": "save", "Key": f"m{m}",
                     "Object": {"Name": f"m{m}", "Batch": i, "Pad": "y" * 300}} for m in ms]
            self.acked(s.post(f"{self.base}/events", json=body, timeout=TIMEOUT), ms)
            i += 1
            time.sleep(BATCH_EVERY)

    def object_writer(self) -> None:
        s, i = self.session(), 0
        while not self.stop.is_set():
            name = f"soak-{i % 200}"
            r = s.post(f"{self.base}/profiles", json={"Name": name, "Params": {"n": i}}, timeout=TIMEOUT)
            if r.status_code == 409:
                s.delete(f"{self.base}/profiles/{name}", timeout=TIMEOUT).raise_for_status()
            else:
                r.raise_for_status()
                patch = [{"op": "replace", "path": "/Params", "value": {"n": i + 1}}]
                s.patch(f"{self.base}/profiles/{name}", json=patch, timeout=TIMEOUT).raise_for_status()
            i += 1
            time.sleep(1.0 / OBJECT_RATE)

    # --- subscribers ------------------------------------------------------------------------

    def firehose(self, k: int) -> None:
        """Every Seq once and in order, across reconnects (slow-consumer closes resume)."""
        last = 0
        first = True
        while not self.stop.is_set() or last < self.last_acked:
            try:
                ws = self.connect(["*.*.*"])
                if first:
                    self.registered.release()
                    first = False
                if last:
                    ws.send(f"replay {last} {self.epoch}")
                replied = not last
                while True:
                    frame = json.loads(ws.recv())
                    if frame.get("Type") == "websocket":
                        if frame.get("Action") == "replay":
                            replied = True
                            if not frame["Object"].get("Recovered"):
                                self.fail(f"firehose {k}: replay after {last} not recovered")
                        continue
                    seq = frame.get("Seq")
                    if not replied or seq is None or seq <= last:
                        continue
                    if seq != last + 1 and last:
                        self.fail(f"firehose {k}: Seq {seq} after {last}")
                    last = seq
                    self.firehose_seq[k] = seq
                    if self.stop.is_set() and last >= self.last_acked:
                        ws.close()
                        return
            except websocket.WebSocketConnectionClosedException:
                with self.lock:
                    self.slow_closes += 1
            except (OSError, websocket.WebSocketException) as e:
                if not self.stop.is_set():
                    self.fail(f"firehose {k}: {e!r}")
                time.sleep(0.5)

    def selective(self, k: int) -> None:
        ws = self.connect([f"machines.*.m{k}"])
        self.registered.release()
        ws.settimeout(1.0)
        while True:
            try:
                frame = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                if self.stop.is_set() and self.selective_count[k] >= self.published_per_machine[k]:
                    ws.close()
                    return
                continue
            if frame.get("Type") == "machines":
                self.selective_count[k] += 1

    def reconnecting(self, k: int) -> None:
        """Hangs up and resumes with `replay`: the next event is exactly the next Seq."""
        rng = random.Random(k)
        last = 0
        while not self.stop.is_set():
            ws = self.connect(["*.*.*"])
            if last:
                ws.send(f"replay {last} {self.epoch}")
            replied = not last
            until = time.monotonic() + rng.uniform(5, 20)
            while time.monotonic() < until and not self.stop.is_set():
                frame = json.loads(ws.recv())
                if frame.get("Type") == "websocket":
                    if frame.get("Action") == "replay":
                        replied = True
                        if not frame["Object"].get("Recovered"):
                            self.fail(f"reconnecting {k}: replay after {last} not recovered")
                    continue
                seq = frame.get("Seq")
                if not replied or seq is None or seq <= last:
                    continue
                if last and seq != last + 1:
                    self.fail(f"reconnecting {k}: Seq {seq} after {last}")
                last = seq
            ws.close()
            with self.lock:
                self.reconnects += 1

    def catch_up(self) -> None:
        """Every two minutes, replays everything retained from the start."""
        while not self.stop.wait(120):
            ws = self.connect(["*.*.*"])
            ws.send("replay 0")
            target, count, replied = self.last_acked, 0, False
            while True:
                raw = ws.recv()
                if not raw:  # closed: a reader this slow is a slow consumer (4008), by design
                    with self.lock:
                        self.slow_closes += 1
                    break
                frame = json.loads(raw)
                if frame.get("Type") == "websocket":
                    replied = replied or frame.get("Action") == "replay"
                    continue
                if replied and frame.get("Seq"):
                    count += 1
                    if frame["Seq"] >= target:
                        break
            ws.close()
            with self.lock:
                self.replays += 1


def spawn(target, *args) -> threading.Thread:
    def run():
        try:
            target(*args)
        except Exception as e:  # a client thread's crash is a failed soak, not a silent one
            soak.fail(f"{target.__name__}{args}: {e!r}")
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def sample(pid: int, data: Path) -> tuple[int, int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    disk = sum(f.stat().st_blocks * 512 for f in data.rglob("*") if f.is_file())
    return rss, fds, disk


def svg(rows: list[dict], path: Path) -> None:
    """Four small line charts, one per measure, against minutes."""
    panels = [("rss_mib", "RSS (MiB)"), ("fds", "open file descriptors"),
              ("disk_mib", "data directory on disk (MiB)"), ("delivery", "delivery ratio")]
    w, h, pad = 420, 200, 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{2 * h}" '
           'font-family="sans-serif" font-size="11">']
    for i, (key, title) in enumerate(panels):
        ox, oy = (i % 2) * w, (i // 2) * h
        xs = [r["minute"] for r in rows]
        ys = [float(r[key]) for r in rows]
        lo, hi = (0.0, max(ys) * 1.1 or 1.0) if key != "delivery" else (0.9, 1.02)
        sx = lambda x: ox + pad + (x - xs[0]) / max(xs[-1] - xs[0], 1) * (w - 2 * pad)
        sy = lambda y: oy + h - pad + 10 - (min(max(y, lo), hi) - lo) / (hi - lo) * (h - 2 * pad)
        out.append(f'<text x="{ox + pad}" y="{oy + 20}" font-weight="bold">{title}</text>')
        out.append(f'<line x1="{ox + pad}" y1="{oy + h - pad + 10}" x2="{ox + w - pad}" '
                   f'y2="{oy + h - pad + 10}" stroke="#888"/>')
        out.append(f'<text x="{ox + pad}" y="{oy + h - 12}">minute {xs[0]}</text>')
        out.append(f'<text x="{ox + w - pad - 50}" y="{oy + h - 12}">minute {xs[-1]}</text>')
        out.append(f'<text x="{ox + 2}" y="{oy + pad}">{hi:.3g}</text>')
        out.append(f'<text x="{ox + 2}" y="{oy + h - pad + 10}">{lo:.3g}</text>')
        points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
        out.append(f'<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{points}"/>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def main() -> int:
    global soak
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--herald", required=True, help="the herald binary")
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--out", default="soak-out", help="directory for soak.csv and soak.svg")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="herald-soak-"))
    data = work / "data"
    log = open(work / "herald.log", "w+")
    server = subprocess.Popen(
        [args.herald, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--cores", "2",
         "--admin-password", PASSWORD, "--retain-events", str(RETAIN_EVENTS)],
        stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        addr = None
        while addr is None and time.monotonic() < deadline:
            log.seek(0)
            m = re.search(r"listening on (?:https://)?([0-9.]+:[0-9]+)", log.read())
            addr = m.group(1) if m else time.sleep(0.2)
        if addr is None:
            raise SystemExit(f"herald did not start; see {work / 'herald.log'}")
        token = requests.get(f"https://{addr}/api/v3/users/rocketskates/token?ttl=86400",
                             auth=("rocketskates", PASSWORD), verify=False, timeout=TIMEOUT).json()["Token"]
        soak = Soak(addr, token)
        soak.epoch = requests.get(f"https://{addr}/api/v3/info", headers=soak.header, verify=False,
                                  timeout=TIMEOUT).json()["Epoch"]
        subscribers = [spawn(soak.firehose, k) for k in range(FIREHOSE)]
        subscribers += [spawn(soak.selective, k) for k in range(SELECTIVE)]
        # Every subscriber is registered before the first publish, so each must see all of it.
        for _ in subscribers:
            if not soak.registered.acquire(timeout=120):
                raise SystemExit("the subscribers did not all register within 120 s")
        others = [spawn(soak.reconnecting, k) for k in range(RECONNECTING)] + [spawn(soak.catch_up)]
        writers = [spawn(soak.single_publisher), spawn(soak.batch_publisher), spawn(soak.object_writer)]

        rows, prev_acked, prev_seen = [], 0, 0
        started = time.monotonic()
        for minute in range(1, args.minutes + 1):
            time.sleep(max(0.0, started + 60 * minute - time.monotonic()))
            rss, fds, disk = sample(server.pid, data)
            acked, seen = soak.last_acked, sum(soak.firehose_seq)
            stored = (acked - prev_acked) * FIREHOSE
            row = {"minute": minute, "rss_mib": round(rss / 2**20, 1), "fds": fds,
                   "disk_mib": round(disk / 2**20, 1),
                   "delivery": round((seen - prev_seen) / stored, 4) if stored else 1.0,
                   "last_seq": acked, "reconnects": soak.reconnects, "replays": soak.replays}
            rows.append(row)
            prev_acked, prev_seen = acked, seen
            print(json.dumps(row), flush=True)
            if server.poll() is not None:
                soak.fail(f"herald exited with {server.returncode}")
                break

        soak.stop.set()
        for t in writers:
            t.join(TIMEOUT)
        for t in subscribers:
            t.join(120)
            if t.is_alive():
                soak.fail("a subscriber did not reach the last acknowledged Seq within 120 s")
        for t in others:
            t.join(TIMEOUT)
        short = [k for k in range(SELECTIVE) if soak.selective_count[k] != soak.published_per_machine[k]]
        if short:
            soak.fail(f"selective subscribers {short} hold a different number of events than published")

        with open(out / "soak.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        svg(rows, out / "soak.svg")
        settled = [r for r in rows if r["minute"] >= SETTLE_MINUTES] or rows
        base, end = settled[0], rows[-1]
        rss_growth = end["rss_mib"] / base["rss_mib"] - 1
        if rss_growth > RSS_GROWTH_LIMIT:
            soak.fail(f"RSS grew {rss_growth:.1%} after minute {base['minute']}")
        if end["fds"] > base["fds"] + FD_GROWTH_LIMIT:
            soak.fail(f"file descriptors grew from {base['fds']} to {end['fds']}")
        print(json.dumps({"minutes": len(rows), "events": soak.last_acked,
                          "rss_mib": [base["rss_mib"], end["rss_mib"], max(r["rss_mib"] for r in rows)],
                          "fds": [base["fds"], end["fds"]], "disk_mib": end["disk_mib"],
                          "reconnects": soak.reconnects, "replays": soak.replays,
                          "slow_consumer_closes": soak.slow_closes,
                          "min_delivery": min(r["delivery"] for r in rows[1:] or rows),
                          "failures": soak.failures}))
        return 1 if soak.failures else 0
    finally:
        server.terminate()
        server.wait(60)


if __name__ == "__main__":
    sys.exit(main())
