#!/usr/bin/env python3
"""Load generators for bench/soak.sh (python3 standard library only).

  soak.py normal          timed normal users; prints one line per INTERVAL, writes normal.json
  soak.py attack-signal   WebSocket floods, large offers to silent receivers, slowloris
  soak.py attack-login    failed logins from many loopback addresses
  soak.py attack-turn     Allocate flood with one TURN REST credential
  soak.py attack-gateway  gateway streams opened and abandoned
  soak.py summary         reads the JSON files and prints the table and the verdict

Everything comes from the environment soak.sh sets: SOAK_HOST, SOAK_HTTP_PORT, SOAK_TURN_PORT,
SOAK_SECRET (TURN REST), SOAK_APIKEY (id:secret), SOAK_USER, SOAK_PASS, SOAK_PID,
SOAK_SECONDS, SOAK_INTERVAL, SOAK_DIR (where the JSON goes), SOAK_NORMAL_RATE, SOAK_LOGIN_RATE.
Each attacker writes attack-KIND.json: what it got back, counted by outcome.
"""

import asyncio
import base64
import collections
import hashlib
import hmac
import json
import math
import os
import random
import resource
import socket
import struct
import sys
import time

E = os.environ
HOST = E.get("SOAK_HOST", "127.0.0.1")
HTTP_PORT = int(E.get("SOAK_HTTP_PORT", "0"))
TURN_PORT = int(E.get("SOAK_TURN_PORT", "0"))
SECONDS = float(E.get("SOAK_SECONDS", "60"))
INTERVAL = float(E.get("SOAK_INTERVAL", "5"))
OUT = E.get("SOAK_DIR", ".")
NORMAL_IP = "127.0.0.2"  # the normal client's own source address; attackers never use 127.0.x.y
TIMEOUT = 5.0

try:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except (ValueError, OSError):
    pass


def ip_pool(second_octet, n):
    """n loopback source addresses 127.<second_octet>.x.y (any 127/8 address is local on Linux)."""
    return [f"127.{second_octet}.{1 + i // 250}.{1 + i % 250}" for i in range(n)]


# ---------------------------------------------------------------- HTTP/1.1 (one connection per request)

class HttpResult:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


def dechunk(data):
    out, i = bytearray(), 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            break
        n = int(data[i:j].split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out += data[j + 2:j + 2 + n]
        i = j + 2 + n + 2
    return bytes(out)


async def http(method, path, src, headers=(), body=b"", timeout=TIMEOUT):
    async def go():
        r, w = await asyncio.open_connection(HOST, HTTP_PORT, local_addr=(src, 0))
        try:
            h = "".join(f"{k}: {v}\r\n" for k, v in headers)
            w.write(f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{HTTP_PORT}\r\nConnection: close\r\n"
                    f"Content-Length: {len(body)}\r\n{h}\r\n".encode() + body)
            data = await r.read(-1)
        finally:
            w.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        status, hdrs = parse_head(head)
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            rest = dechunk(rest)
        return HttpResult(status, hdrs, rest)
    return await asyncio.wait_for(go(), timeout)


def basic(apikey):
    return ("Authorization", "Basic " + base64.b64encode(apikey.encode()).decode())


async def mint(src, identity, scope="webrtc"):
    body = json.dumps({"identity": identity, "scope": scope}).encode()
    r = await http("POST", "/v1/token", src, [basic(E["SOAK_APIKEY"]), ("Content-Type", "application/json")], body)
    if r.status != 200:
        raise RuntimeError(f"mint {r.status}")
    return json.loads(r.body)["token"]


# ---------------------------------------------------------------- WebSocket client (RFC 6455, minimal)

class Refused(Exception):
    def __init__(self, status):
        super().__init__(f"http {status}")
        self.status = status


class Closed(Exception):
    def __init__(self, code):
        super().__init__(f"close {code}")
        self.code = code


def ws_frame(op, data, zero_mask=False):
    n = len(data)
    hdr = bytearray([0x80 | op])
    if n < 126:
        hdr.append(0x80 | n)
    elif n < 65536:
        hdr.append(0x80 | 126)
        hdr += n.to_bytes(2, "big")
    else:
        hdr.append(0x80 | 127)
        hdr += n.to_bytes(8, "big")
    if zero_mask or n == 0:  # a zero masking key is valid framing and costs the client nothing
        return bytes(hdr) + b"\0\0\0\0" + data
    mask = os.urandom(4)
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return bytes(hdr) + mask + (int.from_bytes(data, "big") ^ m).to_bytes(n, "big")


class WS:
    @classmethod
    async def connect(cls, path, src, timeout=TIMEOUT):
        self = cls()
        self.r, self.w = await asyncio.wait_for(
            asyncio.open_connection(HOST, HTTP_PORT, local_addr=(src, 0)), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.w.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{HTTP_PORT}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        try:
            head = await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), timeout)
        except BaseException:
            self.w.close()
            raise
        status, _ = parse_head(head)
        if status != 101:
            self.w.close()
            raise Refused(status)
        return self

    def send(self, text, zero_mask=False):
        self.w.write(ws_frame(1, text.encode() if isinstance(text, str) else text, zero_mask))

    async def recv(self):
        """The next text message (str); answers pings; raises Closed(code) on a close frame or EOF."""
        buf = bytearray()
        while True:
            try:
                h = await self.r.readexactly(2)
                n = h[1] & 0x7F
                if n == 126:
                    n = int.from_bytes(await self.r.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await self.r.readexactly(8), "big")
                if h[1] & 0x80:
                    await self.r.readexactly(4)
                data = await self.r.readexactly(n)
            except (asyncio.IncompleteReadError, ConnectionError):
                raise Closed("eof")
            op = h[0] & 0x0F
            if op == 9:
                self.w.write(ws_frame(10, data))
                continue
            if op == 10:
                continue
            if op == 8:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                try:
                    self.w.write(ws_frame(8, data[:2]))
                except Exception:
                    pass
                raise Closed(code)
            buf += data
            if h[0] & 0x80:
                return buf.decode("utf-8", "replace")

    async def join(self, room, timeout=TIMEOUT):
        self.send(json.dumps({"type": "join", "room_id": room}))
        while True:
            m = json.loads(await asyncio.wait_for(self.recv(), timeout))
            if m.get("type") == "joined":
                return m
            if m.get("type") == "error":
                raise RuntimeError("join " + str(m.get("code")))

    def close(self):
        try:
            self.w.close()
        except Exception:
            pass


# ---------------------------------------------------------------- STUN/TURN

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "turn"))
from stun import attr, message as stun, parse as stun_parse  # noqa: E402


def turn_cred(user):
    name = f"{int(time.time()) + 3600}:{user}"
    pw = base64.b64encode(hmac.new(E["SOAK_SECRET"].encode(), name.encode(), hashlib.sha1).digest()).decode()
    return name, pw


async def transact(sock, msg, tid, rto=0.25, tries=4):
    """Sends msg (retransmitting after rto, doubling) until the response with tid arrives."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + TIMEOUT
    for k in range(tries):
        sock.send(msg)
        end = min(deadline, time.monotonic() + rto * (2 ** k))
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
            except asyncio.TimeoutError:
                break
            if len(data) >= 20 and data[8:20] == tid:
                return stun_parse(data)
    raise TimeoutError("no STUN response")


async def allocate(sock, name, pw, lifetime=600):
    """Allocate (401 then authenticated); returns (code or None on success, auth attrs, key)."""
    rt = [attr(0x0019, bytes([17, 0, 0, 0])), attr(0x000D, struct.pack("!I", lifetime))]
    tid = os.urandom(12)
    _, _, code, a = await transact(sock, stun(0x0003, tid, rt), tid)
    if code != 401:
        return code, None, None
    realm, nonce = a[0x0014], a[0x0015]
    key = hashlib.md5(f"{name}:{realm.decode()}:{pw}".encode()).digest()
    auth = [attr(0x0006, name.encode()), attr(0x0014, realm), attr(0x0015, nonce)]
    tid = os.urandom(12)
    mtype, _, code, a = await transact(sock, stun(0x0003, tid, rt + auth, key), tid)
    if mtype == 0x0103:
        return None, auth, key
    return code, None, None


def udp_sock(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.bind((src, 0))
    s.connect((HOST, TURN_PORT))
    return s


# ---------------------------------------------------------------- gRPC-Web over HTTP/1.1

def predict_request(task_id, payload):
    def field(num, b):
        n, v = len(b), bytearray()
        while True:
            v.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                break
        return bytes([num << 3 | 2]) + bytes(v) + b
    msg = field(1, task_id.encode()) + field(2, json.dumps(payload).encode())
    return b"\0" + struct.pack("!I", len(msg)) + msg


class GrpcWeb:
    """One gRPC-Web (binary) StreamPredict call on its own HTTP/1.1 connection, read as it comes."""

    async def open(self, src, token, task, payload):
        self.r, self.w = await asyncio.open_connection(HOST, HTTP_PORT, local_addr=(src, 0))
        body = predict_request(task, payload)
        self.w.write(f"POST /inference.Inference/StreamPredict HTTP/1.1\r\nHost: {HOST}:{HTTP_PORT}\r\n"
                     f"Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n"
                     f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        self.status, self.headers = parse_head(await self.r.readuntil(b"\r\n\r\n"))
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.left = int(self.headers.get("content-length", "-1"))
        self.buf = bytearray()
        self.eof = False
        return self.status

    async def _more(self):
        if self.eof:
            raise EOFError
        if self.chunked:
            line = await self.r.readuntil(b"\r\n")
            n = int(line.split(b";")[0].strip() or b"0", 16)
            if n == 0:
                self.eof = True
                raise EOFError
            self.buf += await self.r.readexactly(n)
            await self.r.readexactly(2)
        else:
            data = await self.r.read(65536 if self.left < 0 else min(65536, self.left))
            if not data:
                self.eof = True
                raise EOFError
            self.buf += data
            if self.left >= 0:
                self.left -= len(data)
                if self.left == 0:
                    self.eof = True

    async def frame(self):
        """(flags, message) of the next gRPC-Web frame; None at the end of the body."""
        try:
            while len(self.buf) < 5:
                await self._more()
            n = struct.unpack("!I", self.buf[1:5])[0]
            while len(self.buf) < 5 + n:
                await self._more()
        except EOFError:
            return None
        flags, msg = self.buf[0], bytes(self.buf[5:5 + n])
        del self.buf[:5 + n]
        return flags, msg

    def grpc_status(self, trailer=b""):
        for line in trailer.decode("latin-1").split("\r\n"):
            if line.lower().startswith("grpc-status:"):
                return int(line.split(":", 1)[1])
        return int(self.headers["grpc-status"]) if "grpc-status" in self.headers else None

    def abandon(self):
        try:
            sock = self.w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.w.close()
        except Exception:
            pass


# ---------------------------------------------------------------- attackers

async def run_for(workers, name, counts):
    """Runs the workers for SECONDS, writes attack-NAME.json and exits. Cancellation is not
    waited for without bound (asyncio.wait_for in Python < 3.12 may swallow a cancel)."""
    tasks = [asyncio.create_task(w) for w in workers]
    await asyncio.sleep(SECONDS)
    for t in tasks:
        t.cancel()
    await asyncio.wait(tasks, timeout=2)
    with open(os.path.join(OUT, f"attack-{name}.json"), "w") as f:
        json.dump({k: dict(v) if isinstance(v, collections.Counter) else v for k, v in counts.items()}, f)
    sys.stdout.flush()
    os._exit(0)


def exc_name(e):
    if isinstance(e, Refused):
        return f"refused_http_{e.status}"
    if isinstance(e, Closed):
        return f"close_{e.code}"
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    return type(e).__name__ + (f"({e})" if isinstance(e, RuntimeError) else "")


async def attack_signal():
    C = collections.defaultdict(collections.Counter)
    ips = ip_pool(1, 1000)
    ids = iter(range(10 ** 9))

    async def ticket(src, tag):
        return await mint(src, f"att-{tag}-{next(ids)}")

    async def idle(i):  # many open, joined, silent (but live) connections
        while True:
            src = ips[i % len(ips)]
            try:
                ws = await WS.connect(f"/v1/signal?access_token={await ticket(src, 'idle')}", src)
                C["idle"]["connected"] += 1
                await ws.join(f"idle-{i // 40}")
                while True:
                    await ws.recv()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                C["idle"][exc_name(e)] += 1
            await asyncio.sleep(1)

    async def flooder(i):  # messages as fast as the socket takes them: rate_limited, then 4029
        cand = json.dumps({"type": "ice_candidate", "target": f"nobody-{i}", "candidate": {
            "candidate": "candidate:1 1 udp 1 203.0.113.7 9 typ host", "sdpMid": "0"}})
        frame = ws_frame(1, cand.encode(), zero_mask=True)
        while True:
            src = ips[(i * 7 + 500) % len(ips)]
            ws = None
            try:
                ws = await WS.connect(f"/v1/signal?access_token={await ticket(src, 'flood')}", src)
                C["flood"]["connected"] += 1
                await ws.join(f"flood-{i}")

                async def reader():
                    while True:
                        m = await ws.recv()
                        if '"error"' in m:
                            C["flood"]["error_" + json.loads(m).get("code", "?")] += 1
                rt = asyncio.create_task(reader())
                try:
                    while not rt.done():
                        ws.w.write(frame * 50)
                        C["flood"]["sent"] += 50
                        await ws.w.drain()
                        await asyncio.sleep(0.005)
                    rt.result()
                finally:
                    rt.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                C["flood"][exc_name(e)] += 1
            finally:
                if ws:
                    ws.close()
            await asyncio.sleep(0.5)

    async def big_pair(i):  # 60 KB offers, 50/s, to a receiver that never reads
        sdp = "v=0 " + "a" * 60000
        while True:
            src = ips[(i * 13 + 700) % len(ips)]
            rx = tx = None
            try:
                rx = await WS.connect(f"/v1/signal?access_token={await ticket(src, 'rx')}", src)
                j = await rx.join(f"big-{i}")
                tx = await WS.connect(f"/v1/signal?access_token={await ticket(src, 'tx')}", src)
                await tx.join(f"big-{i}")
                target = j.get("peer_id") or j.get("you") or ""
                if not target:
                    raise RuntimeError("no peer id in joined")
                C["big"]["pairs"] += 1
                frame = ws_frame(1, json.dumps({"type": "offer", "target": target,
                                                "offer": {"type": "offer", "sdp": sdp}}).encode(), zero_mask=True)

                async def txreader():
                    while True:
                        m = await tx.recv()
                        if '"error"' in m:
                            C["big"]["sender_error_" + json.loads(m).get("code", "?")] += 1
                rt = asyncio.create_task(txreader())
                try:
                    t_end = time.monotonic() + 8
                    while time.monotonic() < t_end and not rt.done():
                        tx.w.write(frame)
                        C["big"]["offers_sent"] += 1
                        await tx.w.drain()
                        await asyncio.sleep(0.02)
                finally:
                    rt.cancel()
                # The receiver reads now: how did the server end it (4003 slow_consumer?).
                try:
                    t_end = time.monotonic() + 3
                    while True:
                        await asyncio.wait_for(rx.recv(), max(0.01, t_end - time.monotonic()))
                        C["big"]["offers_delivered"] += 1
                except Closed as e:
                    C["big"][f"receiver_close_{e.code}"] += 1
                except asyncio.TimeoutError:
                    C["big"]["receiver_still_open"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as e:
                C["big"][exc_name(e)] += 1
            finally:
                for w in (rx, tx):
                    if w:
                        w.close()
            await asyncio.sleep(0.5)

    async def slowloris(i):  # a request head that never ends, one header line every 5 s
        while True:
            src = ips[(i * 3 + 100) % len(ips)]
            t0 = time.monotonic()
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(HOST, HTTP_PORT, local_addr=(src, 0)), TIMEOUT)
                C["slowloris"]["opened"] += 1
                w.write(f"GET /v1/signal HTTP/1.1\r\nHost: {HOST}\r\n".encode())
                while True:
                    try:
                        data = await asyncio.wait_for(r.read(4096), 5)
                        if not data:
                            break
                        C["slowloris"]["got_response_bytes"] += 1
                    except asyncio.TimeoutError:
                        w.write(b"X-Slow: 1\r\n")
                        await w.drain()
                life = time.monotonic() - t0
                C["slowloris"]["closed_by_server"] += 1
                C["slowloris_life_s"][f"<={5 * math.ceil(life / 5):.0f}s"] += 1
                w.close()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                C["slowloris"][exc_name(e)] += 1
                await asyncio.sleep(0.5)

    n_idle, n_flood, n_big, n_slow = (int(E.get(k, d)) for k, d in (
        ("SOAK_WS_IDLE", "400"), ("SOAK_WS_FLOOD", "40"), ("SOAK_WS_BIG", "10"), ("SOAK_SLOWLORIS", "300")))
    C["config"] = {"idle_ws": n_idle, "flooders": n_flood, "big_offer_pairs": n_big, "slowloris": n_slow}
    await run_for([idle(i) for i in range(n_idle)] + [flooder(i) for i in range(n_flood)]
                  + [big_pair(i) for i in range(n_big)] + [slowloris(i) for i in range(n_slow)], "signal", C)


async def attack_login():
    C = collections.defaultdict(collections.Counter)
    ips = ip_pool(3, 2000)
    user = E["SOAK_USER"]
    conc = int(E.get("SOAK_LOGIN_CONC", "64"))

    async def worker(i):
        k = i
        while True:
            k += conc
            src = random.choice(ips)
            name = user if k % 2 else f"ghost-{random.getrandbits(40):x}"
            body = json.dumps({"username": name, "password": f"wrong-{k}"}).encode()
            try:
                r = await http("POST", "/v1/login", src, [("Content-Type", "application/json")], body)
                C["real_user" if name == user else "unknown_user"][f"http_{r.status}"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as e:
                C["errors"][exc_name(e)] += 1
                await asyncio.sleep(0.1)

    C["config"] = {"concurrency": conc, "source_addresses": len(ips)}
    await run_for([worker(i) for i in range(conc)], "login", C)


async def attack_turn():
    C = collections.defaultdict(collections.Counter)
    ips = ip_pool(4, 500)
    name, pw = turn_cred("attacker")
    held = collections.deque()
    max_held = int(E.get("SOAK_TURN_HELD", "2000"))
    conc = int(E.get("SOAK_TURN_CONC", "32"))

    async def worker(i):
        while True:
            s = udp_sock(random.choice(ips))
            try:
                code, _, _ = await allocate(s, name, pw, lifetime=3600)
                C["allocate"]["ok" if code is None else f"error_{code}"] += 1
                if code is None:  # keep it: the allocation holds a relay port until it expires
                    held.append(s)
                    s = None
                    while len(held) > max_held:
                        held.popleft().close()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                C["allocate"][exc_name(e)] += 1
            finally:
                if s is not None:
                    s.close()

    C["config"] = {"concurrency": conc, "credential": "one TURN REST user", "max_sockets_held": max_held}
    await run_for([worker(i) for i in range(conc)], "turn", C)


async def attack_gateway():
    C = collections.defaultdict(collections.Counter)
    ips = ip_pool(5, 500)
    n_ids = int(E.get("SOAK_GW_IDS", "32"))
    per_id = int(E.get("SOAK_GW_PER_ID", "12"))
    tokens = {}

    async def worker(ident, j):
        while True:
            src = random.choice(ips)
            g = GrpcWeb()
            try:
                if ident not in tokens or tokens[ident][1] < time.monotonic():
                    tokens[ident] = (await mint(src, f"att-gw-{ident}", "grpc"), time.monotonic() + 60)
                st = await asyncio.wait_for(g.open(src, tokens[ident][0], f"att-{ident}-{j}",
                                                   {"chunks": 100000, "chunk_bytes": 1024, "delay_ms": 20}), TIMEOUT)
                if st != 200:
                    C["streams"][f"http_{st}"] += 1
                else:
                    f = await asyncio.wait_for(g.frame(), TIMEOUT)
                    if f is None or f[0] & 0x80:
                        C["streams"][f"grpc_status_{g.grpc_status(f[1] if f else b'')}"] += 1
                    else:
                        C["streams"]["opened_got_chunk"] += 1
                        await asyncio.sleep(random.uniform(0.2, 2.0))  # reads nothing more
                        C["streams"]["abandoned"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as e:
                C["streams"][exc_name(e)] += 1
                await asyncio.sleep(0.1)
            finally:
                g.abandon()

    C["config"] = {"identities": n_ids, "concurrent_per_identity": per_id}
    await run_for([worker(i, j) for i in range(n_ids) for j in range(per_id)], "gateway", C)


# ---------------------------------------------------------------- normal users

KINDS = ["login", "token", "ice", "signal", "turn", "gateway", "gateway_ttfc", "client_lag"]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


class Stats:
    def __init__(self):
        self.ok = collections.defaultdict(list)
        self.fail = collections.defaultdict(collections.Counter)

    def add(self, kind, ok, ms, why=""):
        if ok:
            self.ok[kind].append(ms)
        else:
            self.fail[kind][why] += 1

    def row(self, kind):
        n_ok, n_fail = len(self.ok[kind]), sum(self.fail[kind].values())
        n = n_ok + n_fail
        return n, (100.0 * n_ok / n if n else float("nan")), pct(self.ok[kind], 50), pct(self.ok[kind], 99)


def proc_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    ticks = int(st[11]) + int(st[12])
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return ticks, rss, len(os.listdir(f"/proc/{pid}/fd"))


async def normal():
    S = Stats()
    pid = int(E["SOAK_PID"])
    rate = float(E.get("SOAK_NORMAL_RATE", "10"))
    login_rate = float(E.get("SOAK_LOGIN_RATE", "2"))
    user, password, apikey = E["SOAK_USER"], E["SOAK_PASS"], E["SOAK_APIKEY"]
    src = NORMAL_IP
    state = {"ticket": await mint(src, "normal-user", "webrtc,grpc")}
    clk = os.sysconf("SC_CLK_TCK")

    async def timed(kind, coro):
        t0 = time.perf_counter()
        try:
            ok, why = await asyncio.wait_for(coro, TIMEOUT)
        except asyncio.TimeoutError:
            ok, why = False, "timeout"
        except Exception as e:
            ok, why = False, exc_name(e)
        S.add(kind, ok, (time.perf_counter() - t0) * 1000, why)

    async def login():
        r = await http("POST", "/v1/login", src, [("Content-Type", "application/json")],
                       json.dumps({"username": user, "password": password}).encode())
        return r.status == 200, f"http_{r.status}"

    async def token():
        r = await http("POST", "/v1/token", src, [basic(apikey), ("Content-Type", "application/json")],
                       json.dumps({"identity": "normal-user", "scope": "webrtc,grpc"}).encode())
        if r.status == 200:
            state["ticket"] = json.loads(r.body)["token"]
        return r.status == 200, f"http_{r.status}"

    async def ice():
        r = await http("GET", "/v1/ice-servers", src, [("Authorization", "Bearer " + state["ticket"])])
        return r.status == 200, f"http_{r.status}"

    # Two signaling peers in one room: A sends an offer to B, B answers, A times the round trip.
    a = await WS.connect(f"/v1/signal?access_token={await mint(src, 'normal-a')}", src)
    await a.join("normal-room")
    b = await WS.connect(f"/v1/signal?access_token={await mint(src, 'normal-b')}", src)
    await b.join("normal-room")
    waiting = {}
    sig_closed = collections.Counter()

    async def b_reader():
        try:
            while True:
                m = json.loads(await b.recv())
                if m.get("type") == "offer":
                    b.send(json.dumps({"type": "answer", "target": m["from"],
                                       "answer": {"type": "answer", "sdp": "v=0", "n": m["offer"]["n"]}}))
        except Closed as e:
            sig_closed[f"b_close_{e.code}"] += 1

    async def a_reader():
        try:
            while True:
                m = json.loads(await a.recv())
                if m.get("type") == "answer":
                    fut = waiting.pop(m["answer"]["n"], None)
                    if fut and not fut.done():
                        fut.set_result(True)
        except Closed as e:
            sig_closed[f"a_close_{e.code}"] += 1

    readers = [asyncio.create_task(b_reader()), asyncio.create_task(a_reader())]
    seq = iter(range(10 ** 9))

    async def signal():
        n = next(seq)
        fut = asyncio.get_running_loop().create_future()
        waiting[n] = fut
        a.send(json.dumps({"type": "offer", "target": "normal-b",
                           "offer": {"type": "offer", "sdp": "v=0 o=- 1 1 IN IP4 127.0.0.1", "n": n}}))
        try:
            await fut
        finally:
            waiting.pop(n, None)
        return True, ""

    tname, tpw = turn_cred("normal")

    async def turn():
        s = udp_sock(src)
        try:
            code, auth, key = await allocate(s, tname, tpw)
            if code is not None:
                return False, f"allocate_{code}"
            tid = os.urandom(12)
            mtype, _, code, _ = await transact(s, stun(0x0004, tid, [attr(0x000D, struct.pack("!I", 0))] + auth, key), tid)
            return mtype == 0x0104, f"refresh_{code}"
        finally:
            s.close()

    async def gateway():
        g = GrpcWeb()
        t0 = time.perf_counter()
        try:
            st = await g.open(src, state["ticket"], f"normal-{next(seq)}", {"chunks": 4, "chunk_bytes": 64})
            if st != 200:
                return False, f"http_{st}"
            chunks, first = 0, None
            while True:
                f = await g.frame()
                if f is None:
                    return False, "no_trailer"
                if f[0] & 0x80:
                    code = g.grpc_status(f[1])
                    if code == 0 and chunks >= 4:  # 4 data chunks, then one marked done
                        S.add("gateway_ttfc", True, first)
                        return True, ""
                    return False, f"grpc_status_{code}_chunks_{chunks}"
                chunks += 1
                if first is None:
                    first = (time.perf_counter() - t0) * 1000
        finally:
            g.abandon()

    jobs = {"login": (login, login_rate), "token": (token, rate), "ice": (ice, rate),
            "signal": (signal, rate), "turn": (turn, rate), "gateway": (gateway, rate)}
    inflight = set()

    async def pacer(kind, fn, r):
        t_next = time.monotonic() + random.random() / r
        while True:
            await asyncio.sleep(max(0, t_next - time.monotonic()))
            # How late this client's own event loop woke up: its share of any tail that is the
            # machine's (CPU contention) rather than the server's.
            S.add("client_lag", True, (time.monotonic() - t_next) * 1000)
            t_next += 1 / r
            t = asyncio.create_task(timed(kind, fn()))
            inflight.add(t)
            t.add_done_callback(inflight.discard)

    def line(elapsed, c0, c1, dt, rss, fds):
        cpu = 100.0 * (c1 - c0) / clk / dt
        load = open("/proc/loadavg").read().split()[0]
        parts = []
        for k in KINDS[:-2]:
            n, okp, _, p99 = S.row(k)
            parts.append(f"{k} {okp:.1f}%/{p99:.1f}" if n else f"{k} -")
        return f"t={elapsed:4.0f}s rss={rss:6.1f}MiB fds={fds:5d} cpu={cpu:5.1f}% load={load:>5} | " + "  ".join(parts)

    print("per interval: server RSS, open fds, CPU over the interval, 1-min load average; per normal kind: "
          "success % / p99 ms so far (login p99 includes an Argon2 hash)", flush=True)
    pacers = [asyncio.create_task(pacer(k, fn, r)) for k, (fn, r) in jobs.items()]
    t_start = time.monotonic()
    c_prev, rss, fds = proc_sample(pid)
    t_prev = t_start
    samples = []
    while time.monotonic() - t_start < SECONDS - 1e-3:
        await asyncio.sleep(min(INTERVAL, SECONDS - (time.monotonic() - t_start)))
        now = time.monotonic()
        try:
            c, rss, fds = proc_sample(pid)
        except FileNotFoundError:
            print("server process is gone", flush=True)
            break
        print(line(now - t_start, c_prev, c, now - t_prev, rss, fds), flush=True)
        samples.append({"rss": rss, "fds": fds, "cpu": 100.0 * (c - c_prev) / clk / (now - t_prev)})
        c_prev, t_prev = c, now
    for p in pacers:
        p.cancel()
    if inflight:
        await asyncio.wait(inflight, timeout=TIMEOUT + 1)
    for t in readers:
        t.cancel()
    out = {"kinds": {k: dict(zip(("n", "success", "p50", "p99"), S.row(k))) for k in KINDS},
           "failures": {k: dict(v) for k, v in S.fail.items() if v},
           "signal_peer_closes": dict(sig_closed), "samples": samples, "seconds": SECONDS}
    with open(os.path.join(OUT, "normal.json"), "w") as f:
        json.dump(out, f)
    sys.stdout.flush()
    os._exit(0)


def summary():
    nj = json.load(open(os.path.join(OUT, "normal.json")))
    print("normal users (each request timed; success % over all, latency percentiles over successes):")
    print(f"  {'kind':14} {'count':>7} {'success%':>9} {'p50 ms':>8} {'p99 ms':>8}  target")
    verdict = []
    for k, r in nj["kinds"].items():
        if k == "gateway_ttfc":
            tgt = "(time to first chunk; informational)"
        elif k == "client_lag":
            tgt = "(normal client's own wake-up delay before a request; informational)"
        elif k == "login":
            tgt = "success > 99.9 % (p99 is an Argon2 hash, not held to 10 ms)"
            verdict.append((k, r["success"] > 99.9))
        else:
            tgt = "success > 99.9 %, p99 < 10 ms"
            verdict.append((k, r["success"] > 99.9 and r["p99"] < 10))
        succ = f"{r['success']:9.2f}" if k != "client_lag" else f"{'':9}"
        print(f"  {k:14} {r['n']:7d} {succ} {r['p50']:8.2f} {r['p99']:8.2f}  {tgt}")
    if nj["failures"]:
        print("  failures: " + "; ".join(f"{k}: {dict(v)}" for k, v in nj["failures"].items()))
    if nj["signal_peer_closes"]:
        print(f"  normal signaling peers closed: {nj['signal_peer_closes']}")
    s = nj["samples"]
    if s:
        rng = lambda key, fmt: f"{fmt.format(min(x[key] for x in s))}–{fmt.format(max(x[key] for x in s))}"
        print(f"server over the run: RSS {rng('rss', '{:.1f}')} MiB, open fds {rng('fds', '{}')}, "
              f"CPU {rng('cpu', '{:.0f}')} % per interval")
    print("attackers (what they got back):")
    ran = E.get("SOAK_ATTACKS", "signal login turn gateway").split()
    if not ran:
        print("  none (baseline run)")
    for kind in ran:
        p = os.path.join(OUT, f"attack-{kind}.json")
        if not os.path.exists(p):
            print(f"  {kind}: no report (attacker failed?)")
            continue
        for sub, counts in json.load(open(p)).items():
            items = ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))
            print(f"  {kind}/{sub}: {items}")
    bad = [k for k, ok in verdict if not ok]
    print("VERDICT: " + ("PASS" if not bad else "FAIL (" + ", ".join(bad) + ")")
          + " — target: success > 99.9 % and p99 < 10 ms for every normal kind; login held to success only "
            f"(p99 {nj['kinds']['login']['p99']:.1f} ms, one Argon2 hash per login)")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "summary":
        summary()
    else:
        fn = {"normal": normal, "attack-signal": attack_signal, "attack-login": attack_login,
              "attack-turn": attack_turn, "attack-gateway": attack_gateway}[cmd]
        asyncio.run(fn())
