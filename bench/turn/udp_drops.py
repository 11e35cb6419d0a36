#!/usr/bin/env python3
"""Whose UDP receive buffer overflowed during a run: samples `ss -Huanpme` every 0.25 s until
SIGTERM (or LIMIT seconds), keeps per socket (by inode) the growth of its drop counter (skmem
`d<N>`) since the socket was first seen, and prints the sums per process name on one line:

    udp_drops switchboard=0 turnutils_peer=1520 turnutils_uclient=0

usage: udp_drops.py [LIMIT_SECONDS]
"""
import re
import signal
import subprocess
import sys
import time

PROC = re.compile(r'users:\(\("([^"]+)"')
DROPS = re.compile(r"\bd(\d+)\)")
INODE = re.compile(r"\bino:(\d+)")
first_seen = {}  # socket key -> drop counter when first seen
growth = {}  # socket key -> highest growth seen


def report(*_):
    per_proc = {}
    for (proc, _inode), d in growth.items():
        per_proc[proc] = per_proc.get(proc, 0) + d
    print("udp_drops " + " ".join(f"{p}={n}" for p, n in sorted(per_proc.items())), flush=True)
    sys.exit(0)


def sample(baseline):
    lines = subprocess.run(["ss", "-Huanpme"], capture_output=True, text=True).stdout.splitlines()
    # ss prints each socket on two lines: the socket, then its skmem counters.
    for head, mem in zip(lines[0::2], lines[1::2]):
        proc, inode, drops = PROC.search(head), INODE.search(head), DROPS.search(mem)
        if not proc or not inode or not drops:
            continue
        key, d = (proc.group(1), inode.group(1)), int(drops.group(1))
        # Sockets present at the first sample count from there; later ones from zero.
        first_seen.setdefault(key, d if baseline else 0)
        growth[key] = max(growth.get(key, 0), d - first_seen[key])


signal.signal(signal.SIGTERM, report)
limit = float(sys.argv[1]) if len(sys.argv) > 1 else 600
start = time.time()
sample(True)
while time.time() - start < limit:
    time.sleep(0.25)
    sample(False)
report()
