#!/usr/bin/env python3
"""Counts how often each JetStream consumer's state file is rewritten.

nats-server keeps a durable consumer's state (delivered, acknowledged,
pending) in one file per replica, rewritten whole (a temp file and a rename)
at most ten times a second while the state changes. On CPU-capped servers
those rewrites are a cost that grows with the number of consumers
(docs/benchmarks.md, "Consumer state files"). This watches the o.dat files
under the given JetStream store directories (on the host: a container's /data
volume, found with `docker inspect`; reading it needs root) and prints one
JSON object: rewrites per second of each stream's consumer, summed over the
replicas, and the total.

Usage: consumer-state-writes.py SECONDS STORE_DIR...
"""
import collections
import glob
import json
import os
import sys
import time


def main():
    seconds, roots = float(sys.argv[1]), sys.argv[2:]
    files = []
    for root in roots:
        for f in glob.glob(os.path.join(root, "jetstream", "*", "streams", "*", "obs", "*", "o.dat")):
            parts = f.split(os.sep)
            files.append((parts[-4] + "/" + parts[-2], f))
    last, counts = {}, collections.Counter()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for name, f in files:
            try:
                m = os.stat(f).st_mtime_ns
            except FileNotFoundError:
                continue
            if f in last and last[f] != m:
                counts[name] += 1
            last[f] = m
        time.sleep(0.002)  # a rewrite is at most every 100 ms per file
    dur = time.monotonic() - t0
    per = {k: round(counts[k] / dur, 1) for k in sorted({n for n, _ in files})}
    print(json.dumps({"files": len(files), "per_s": per, "total_per_s": round(sum(counts.values()) / dur, 1)}))


if __name__ == "__main__":
    main()
