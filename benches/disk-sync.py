#!/usr/bin/env python3
"""What one acknowledged publish costs the disk under herald's default `sync` durability.

Every flush herald makes under `sync` is one write to its journal and one `fdatasync`
(docs/protocol.md §4.5). This writes records of the journal's size into a file in DIR and
syncs each, the way herald does, with the disk left idle for GAP between syncs, and prints the
sync's latency for each gap. Run it in the data directory's file system:

    python3 benches/disk-sync.py /var/lib/herald

Some disks (virtual ones especially) sync far faster back to back than after a short pause:
a publisher that waits for each answer meets the slower figure.
"""

import os
import sys
import tempfile
import time

GAPS_US = [0, 20, 50, 100, 200, 500, 2000]
SYNCS = 400
RECORD_BYTES = 4096
FILE_BYTES = 8 << 20


def measure(fd, gap_s):
    latencies = []
    offset = 0
    record = b"h" * RECORD_BYTES
    for _ in range(SYNCS):
        until = time.perf_counter() + gap_s
        # A busy wait: a sleep's own wake-up would blur gaps this short.
        while time.perf_counter() < until:
            pass
        start = time.perf_counter()
        os.pwrite(fd, record, offset)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - start)
        offset = (offset + RECORD_BYTES) % FILE_BYTES
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[len(latencies) * 9 // 10]


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    with tempfile.NamedTemporaryFile(dir=directory, prefix="herald-disk-sync-") as file:
        fd = file.fileno()
        # Written once in full, as a journal that has filled once: syncs then change no size.
        os.pwrite(fd, b"\0" * FILE_BYTES, 0)
        os.fsync(fd)
        print(f"{SYNCS} syncs of {RECORD_BYTES}-byte writes in {directory}, per idle gap")
        print("| gap before each sync | sync p50 | sync p90 | syncs/s at that gap |")
        print("|---:|---:|---:|---:|")
        for gap_us in GAPS_US:
            p50, p90 = measure(fd, gap_us / 1e6)
            rate = 1 / (gap_us / 1e6 + p50)
            print(f"| {gap_us} µs | {p50 * 1e6:.0f} µs | {p90 * 1e6:.0f} µs | {rate:,.0f} |")


if __name__ == "__main__":
    main()
