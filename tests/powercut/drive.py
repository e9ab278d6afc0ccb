#!/usr/bin/env python3
"""Load and check for scripts/powercut-loop.sh (standard library only).

  drive.py load  HERALD DATA_DIR DURABILITY FS_PID ACKED_JSON
      starts herald on DATA_DIR, runs 4 publishers and 3 object writers (2 creating machines,
      1 creating roles), cuts the power (SIGUSR1 to FS_PID) after the load time, SIGKILLs
      herald, and writes every acknowledged event (Seq, id, when) and write to ACKED_JSON.
  drive.py check HERALD DATA_DIR DURABILITY ACKED_JSON
      restarts herald on DATA_DIR, and prints one line of what was lost; exits 1 when anything
      acknowledged is lost under sync, or when herald does not come back.

HERALD_POWERCUT_LOAD_MS (default 1500) sets how long the load runs, from its first
acknowledgement, before the cut.
"""

import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

PASSWORD = "powercut-admin-password"
AUTH = "Basic " + base64.b64encode(("rocketskates:" + PASSWORD).encode()).decode()
PUBLISHERS = 4
MACHINE_WRITERS = 2
ROLE_WRITERS = 1
MIN_ACKNOWLEDGED = 50
STARTUP_DEADLINE = 60.0


def start(herald, data_dir, durability, log_path):
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [herald, "serve", "--plain", "--listen", "127.0.0.1:0", "--cores", "2",
         "--data-dir", data_dir, "--durability", durability, "--admin-password", PASSWORD],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.PIPE)
    found = {}
    ready = threading.Event()

    def drain():
        for line in proc.stderr:
            log.write(line)
            log.flush()
            if not ready.is_set():
                m = re.search(rb"listening on https?://([0-9.]+):([0-9]+)", line)
                if m:
                    found["port"] = int(m.group(2))
                    ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(STARTUP_DEADLINE) or "port" not in found:
        proc.kill()
        proc.wait()
        raise SystemExit(f"herald did not start on {data_dir} (exit {proc.poll()}); see {log_path}")
    return proc, found["port"]


def request(conn, method, path, body=None):
    headers = {"Authorization": AUTH}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.getheader("Herald-Seq"), response.read()


def load(herald, data_dir, durability, fs_pid, out):
    load_s = int(os.environ.get("HERALD_POWERCUT_LOAD_MS", "1500")) / 1000
    proc, port = start(herald, data_dir, durability, out + ".herald-load.log")
    stop = threading.Event()
    lock = threading.Lock()
    acked = {"events": [], "machines": [], "roles": []}
    kind = "powercut" + uuid.uuid4().hex[:8]

    def publisher(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = 0
        while not stop.is_set():
            event_id = f"p{n}-{i}"
            i += 1
            body = {"Type": kind, "Action": "save", "Key": event_id, "Object": {"Id": event_id}}
            try:
                status, seq, _ = request(conn, "POST", "/api/v3/events", body)
            except (OSError, http.client.HTTPException):
                return  # cut off: this one may or may not be stored
            if status == 204:
                with lock:
                    acked["events"].append([int(seq), event_id, time.time()])

    def writer(kind_of, n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = 0
        while not stop.is_set():
            i += 1
            if kind_of == "machines":
                key = str(uuid.uuid4())
                body = {"Uuid": key, "Name": f"m{n}-{i}"}
            else:
                key = f"r{n}-{i}-{uuid.uuid4().hex[:6]}"
                body = {"Name": key, "Claims": [{"Scope": "profiles", "Action": "get", "Specific": "*"}]}
            try:
                status, _, _ = request(conn, "POST", f"/api/v3/{kind_of}", body)
            except (OSError, http.client.HTTPException):
                return
            if status == 201:
                with lock:
                    acked[kind_of].append([key, time.time()])

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(PUBLISHERS)]
    threads += [threading.Thread(target=writer, args=("machines", n)) for n in range(MACHINE_WRITERS)]
    threads += [threading.Thread(target=writer, args=("roles", n)) for n in range(ROLE_WRITERS)]
    for t in threads:
        t.start()
    # The load time counts from the first acknowledgement: the first login (argon2) may be slow.
    deadline = time.time() + STARTUP_DEADLINE
    while not acked["events"] and time.time() < deadline:
        time.sleep(0.01)
    started = time.time()
    while time.time() - started < load_s or len(acked["events"]) < MIN_ACKNOWLEDGED:
        if time.time() > deadline + load_s:
            break
        time.sleep(0.01)
    os.kill(fs_pid, signal.SIGUSR1)  # the power goes ...
    cut_at = time.time()
    proc.send_signal(signal.SIGKILL)  # ... and herald with it
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    with open(out, "w") as f:
        json.dump({"kind": kind, "cut_at": cut_at, **acked}, f)
    print(f"acknowledged events={len(acked['events'])} machines={len(acked['machines'])} "
          f"roles={len(acked['roles'])}")


def check(herald, data_dir, durability, acked_path):
    with open(acked_path) as f:
        acked = json.load(f)
    proc, port = start(herald, data_dir, durability, acked_path + ".herald-check.log")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        stored = {}
        since = 0
        while True:
            status, _, body = request(conn, "GET", f"/api/v3/events?since={since}&limit=10000")
            if status != 200:
                raise SystemExit(f"reading the log answered {status}: {body[:200]!r}")
            page = json.loads(body)
            if not page:
                break
            for event in page:
                stored[event["Seq"]] = event
            since = page[-1]["Seq"]
        lost = []
        for seq, event_id, at in acked["events"]:
            event = stored.get(seq)
            if not (event and event.get("Type") == acked["kind"]
                    and (event.get("Object") or {}).get("Id") == event_id):
                lost.append((seq, at))
        lost_writes = {}
        for kind_of in ("machines", "roles"):
            lost_writes[kind_of] = []
            for key, at in acked[kind_of]:
                status, _, _ = request(conn, "GET", f"/api/v3/{kind_of}/{key}")
                if status != 200:
                    lost_writes[kind_of].append(at)
        cut_at = acked["cut_at"]
        all_lost = [at for _, at in lost] + lost_writes["machines"] + lost_writes["roles"]
        window = f" oldest_lost_ms_before_cut={round((cut_at - min(all_lost)) * 1000)}" if all_lost else ""
        seqs = sorted(stored)
        print(f"acknowledged={len(acked['events'])} lost={len(lost)} "
              f"machines={len(acked['machines'])} machines_lost={len(lost_writes['machines'])} "
              f"roles={len(acked['roles'])} roles_lost={len(lost_writes['roles'])}"
              f" last_seq_after={seqs[-1] if seqs else 0}{window}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if durability == "sync" and all_lost:
        sys.exit(1)


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "load":
        load(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
    elif len(sys.argv) == 6 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
