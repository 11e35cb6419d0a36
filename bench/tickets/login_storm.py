#!/usr/bin/env python3
"""Resident memory of a switchboard server under a storm of failed logins.

Starts BINARY with a config in a temporary directory (SQLite users database, one real user
added with `switchboard user add`), then runs two phases of failed logins, each request from
one of many loopback source addresses (all of 127/8 is loopback on Linux), with an unknown or
a known username and a wrong password:

  phase 1: --storm requests at --concurrency at once (default 320 at 32-way from 250 addresses)
  phase 2: --settle requests at 4 at once (default 200)

and prints the server's VmRSS after each phase and VmHWM (peak), read from /proc/PID/status,
with the count of each HTTP status. Extra `[auth]` lines go in with --auth 'key = value'.

  python3 bench/tickets/login_storm.py target/release/switchboard
  python3 bench/tickets/login_storm.py target/release/switchboard --auth 'login_attempts_per_second = 100000'
"""

import argparse
import collections
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time


def mem_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out["VmRSS"], out["VmHWM"]


def one_login(host, port, src, user, password):
    c = http.client.HTTPConnection(host, port, timeout=60, source_address=(src, 0))
    try:
        body = json.dumps({"username": user, "password": password})
        c.request("POST", "/v1/login", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        return r.status
    except OSError as e:
        return f"error {e.__class__.__name__}"
    finally:
        c.close()


def phase(host, port, n, concurrency, addrs, tag):
    statuses = collections.Counter()
    lock = threading.Lock()
    next_i = [0]

    def worker():
        while True:
            with lock:
                i = next_i[0]
                if i >= n:
                    return
                next_i[0] += 1
            src = addrs[i % len(addrs)]
            user = "alice" if i % 2 == 0 else f"ghost-{tag}-{i}"
            st = one_login(host, port, src, user, f"wrong-{i}")
            with lock:
                statuses[st] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--storm", type=int, default=320)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--addresses", type=int, default=250)
    ap.add_argument("--settle", type=int, default=200)
    ap.add_argument("--auth", action="append", default=[])
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix="login-storm-")
    cfg = os.path.join(d, "switchboard.toml")
    auth_extra = "\n".join(a.auth)
    with open(cfg, "w") as f:
        f.write(
            f"""[http]
bind = "127.0.0.1:0"
web_ui = false
[auth]
database = "{d}/users.db"
{auth_extra}
[[auth.keys]]
kid = "k1"
secret = "login-storm-secret-0123456789abcdef0123"
[turn]
enabled = false
[sfu]
mode = "mesh"
"""
        )
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("SWITCHBOARD_CONFIG", None)
    subprocess.run(
        [a.binary, "user", "add", "-c", cfg, "alice"],
        input=b"correct horse battery\n",
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    p = subprocess.Popen(
        [a.binary, "serve", "-c", cfg], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        addr = None
        for line in p.stdout:
            line = line.decode()
            if line.startswith("switchboard listening http="):
                addr = line.split("http=")[1].split()[0]
                break
        host, port = addr.rsplit(":", 1)
        port = int(port)
        threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
        addrs = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(a.addresses)]
        c = http.client.HTTPConnection(host, port)
        c.request("GET", "/healthz")
        c.getresponse().read()
        rss0, _ = mem_kib(p.pid)
        print(f"start: RSS {rss0 / 1024:.1f} MiB")
        s1, t1 = phase(host, port, a.storm, a.concurrency, addrs, "a")
        rss1, hwm1 = mem_kib(p.pid)
        print(
            f"phase 1 ({a.storm} at {a.concurrency}-way, {t1:.1f} s): RSS {rss1 / 1024:.1f} MiB, "
            f"peak {hwm1 / 1024:.1f} MiB; {dict(s1)}"
        )
        s2, t2 = phase(host, port, a.settle, 4, addrs, "b")
        time.sleep(1)
        rss2, hwm2 = mem_kib(p.pid)
        print(
            f"phase 2 ({a.settle} at 4-way, {t2:.1f} s): RSS {rss2 / 1024:.1f} MiB, "
            f"peak {hwm2 / 1024:.1f} MiB; {dict(s2)}"
        )
        st = one_login(host, port, "127.0.9.9", "alice", "correct horse battery")
        print(f"alice with the right password from a fresh address: {st}")
    finally:
        p.terminate()
        p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
