#!/usr/bin/env python3
"""Memory per idle TURN allocation: opens N allocations (one UDP socket = one 5-tuple each,
REST credentials), keeps them open, and reports the server's RSS growth per allocation.

usage: alloc_mem.py HOST PORT SECRET SERVER_PID N
"""
import base64, hashlib, hmac, os, socket, struct, sys, time

from stun import attr, message as msg, parse as stun_parse


def parse(b):
    _, _, code, attrs = stun_parse(b)
    return code, attrs


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    host, port, secret, pid, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    user = f"{int(time.time()) + 3600}:mem"
    pw = base64.b64encode(hmac.new(secret.encode(), user.encode(), hashlib.sha1).digest()).decode()
    rt = [attr(0x0019, bytes([17, 0, 0, 0])), attr(0x000D, struct.pack("!I", 3600))]
    socks = []
    # Warm up (first allocation pays for lazily created tables/buffers), then measure.
    stale = []

    def alloc():
        while True:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            s.connect((host, port))
            s.send(msg(0x0003, os.urandom(12), rt))
            code, a = parse(s.recv(2000))
            if code == 437:  # the kernel reused a source port the server still has an allocation for
                stale.append(s)
                continue
            assert code == 401, code
            break
        realm, nonce = a[0x0014], a[0x0015]
        key = hashlib.md5(f"{user}:{realm.decode()}:{pw}".encode()).digest()
        auth = [attr(0x0006, user.encode()), attr(0x0014, realm), attr(0x0015, nonce)]
        s.send(msg(0x0003, os.urandom(12), rt + auth, key))
        code, a = parse(s.recv(2000))
        assert code is None and 0x0016 in a, f"allocate failed: {code}"
        socks.append((s, auth, key))
    for _ in range(50):
        alloc()
    time.sleep(0.5)
    before = rss_kb(pid)
    t0 = time.time()
    for _ in range(n):
        alloc()
    time.sleep(1.0)
    after = rss_kb(pid)
    per = (after - before) * 1024 / n
    print(f"allocations={n} rss_before_kb={before} rss_after_kb={after} bytes_per_allocation={per:.0f} setup_s={time.time()-t0:.1f}")
    # Delete them (Refresh with LIFETIME 0) so later runs do not meet stale 5-tuples.
    for s, auth, key in socks:
        s.send(msg(0x0004, os.urandom(12), [attr(0x000D, struct.pack("!I", 0))] + auth, key))
        try:
            s.recv(2000)
        except OSError:
            pass


if __name__ == "__main__":
    main()
