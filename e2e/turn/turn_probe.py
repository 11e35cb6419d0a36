#!/usr/bin/env python3
"""A minimal, independent TURN client (stdlib only) for the e2e suites.

  turn_probe.py deny HOST PORT USER PASS      -> CreatePermission to internal peers must get 403
  turn_probe.py tls HOST PORT USER PASS CA    -> Allocate over TLS must succeed; prints cert CN
  turn_probe.py expired HOST PORT SECRET      -> an expired REST username must get 401
"""
import base64, hashlib, hmac, os, socket, ssl, struct, sys, time, zlib

COOKIE = 0x2112A442


def attr(t, v):
    pad = (4 - len(v) % 4) % 4
    return struct.pack("!HH", t, len(v)) + v + b"\0" * pad


def xor_addr(ip, port, tid):
    import ipaddress
    a = ipaddress.ip_address(ip)
    xport = port ^ (COOKIE >> 16)
    key = struct.pack("!I", COOKIE) + tid
    raw = a.packed
    x = bytes(b ^ k for b, k in zip(raw, key))
    fam = 1 if a.version == 4 else 2
    return struct.pack("!BBH", 0, fam, xport) + x


def msg(mtype, tid, attrs, key=None):
    body = b"".join(attrs)
    if key is not None:
        hdr = struct.pack("!HHI", mtype, len(body) + 24, COOKIE) + tid
        mac = hmac.new(key, hdr + body, hashlib.sha1).digest()
        body += attr(0x0008, mac)
    hdr = struct.pack("!HHI", mtype, len(body) + 8, COOKIE) + tid
    crc = (zlib.crc32(hdr + body) ^ 0x5354554E) & 0xFFFFFFFF
    body += attr(0x8028, struct.pack("!I", crc))
    return struct.pack("!HHI", mtype, len(body), COOKIE) + tid + body


def parse(b):
    mtype, length, cookie = struct.unpack("!HHI", b[:8])
    attrs, i = {}, 20
    while i + 4 <= 20 + length:
        t, l = struct.unpack("!HH", b[i:i + 4])
        attrs.setdefault(t, b[i + 4:i + 4 + l])
        i += 4 + ((l + 3) & ~3)
    code = None
    if 0x0009 in attrs:
        v = attrs[0x0009]
        code = v[2] * 100 + v[3]
    return mtype, attrs, code


class Client:
    def __init__(self, sock, stream, user, password):
        self.sock, self.stream, self.user, self.password = sock, stream, user, password
        self.realm = self.nonce = self.key = None

    def rt(self, data):
        if self.stream:
            self.sock.sendall(data)
            hdr = self._read(20)
            body = self._read(struct.unpack("!H", hdr[2:4])[0])
            return parse(hdr + body)
        self.sock.send(data)
        return parse(self.sock.recv(4000))

    def _read(self, n):
        b = b""
        while len(b) < n:
            c = self.sock.recv(n - len(b))
            if not c:
                raise RuntimeError("connection closed")
            b += c
        return b

    def request(self, mtype, attrs):
        tid = os.urandom(12)
        if self.nonce is None:
            _, a, code = self.rt(msg(mtype, tid, attrs))
            if code != 401:
                return code, a
            self.realm, self.nonce = a[0x0014], a[0x0015]
            self.key = hashlib.md5(f"{self.user}:{self.realm.decode()}:{self.password}".encode()).digest()
            tid = os.urandom(12)
        auth = [attr(0x0006, self.user.encode()), attr(0x0014, self.realm), attr(0x0015, self.nonce)]
        _, a, code = self.rt(msg(mtype, tid, attrs + auth, self.key))
        return code, a


def allocate(c):
    return c.request(0x0003, [attr(0x0019, bytes([17, 0, 0, 0]))])


def main():
    mode = sys.argv[1]
    if mode == "deny":
        host, port, user, pw = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.connect((host, port))
        c = Client(s, False, user, pw)
        code, _ = allocate(c)
        assert code is None, f"allocate failed: {code}"
        bad = 0
        for peer in ["127.0.0.1", "10.0.0.1", "10.255.1.2", "169.254.169.254", "::ffff:127.0.0.1",
                     "::ffff:10.0.0.1", "::ffff:169.254.169.254", "0.0.0.0", "192.168.0.1"]:
            # XOR-PEER-ADDRESS is XORed with the transaction id, so build per request.
            tid = os.urandom(12)
            auth = [attr(0x0006, c.user.encode()), attr(0x0014, c.realm), attr(0x0015, c.nonce)]
            _, _, code = c.rt(msg(0x0008, tid, [attr(0x0012, xor_addr(peer, 9, tid))] + auth, c.key))
            tid = os.urandom(12)
            _, _, code2 = c.rt(msg(0x0009, tid, [attr(0x000C, struct.pack("!HH", 0x4001, 0)),
                                                 attr(0x0012, xor_addr(peer, 9, tid))] + auth, c.key))
            print(f"peer {peer}: CreatePermission -> {code}, ChannelBind -> {code2}")
            if code != 403 or code2 != 403:
                bad += 1
        sys.exit(1 if bad else 0)
    if mode == "expired":
        host, port, secret = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        user = f"{int(time.time()) - 60}:late"
        pw = base64.b64encode(hmac.new(secret.encode(), user.encode(), hashlib.sha1).digest()).decode()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.connect((host, port))
        code, _ = allocate(Client(s, False, user, pw))
        print(f"expired username {user}: Allocate -> {code}")
        sys.exit(0 if code == 401 else 1)
    if mode == "tls":
        host, port, user, pw, ca = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False
        raw = socket.create_connection((host, port), timeout=5)
        s = ctx.wrap_socket(raw)
        cert = s.getpeercert()
        cn = dict(x[0] for x in cert["subject"]).get("commonName")
        code, a = allocate(Client(s, True, user, pw))
        print(f"tls cn={cn} allocate={code or 'ok'}")
        sys.exit(0 if code is None and 0x0016 in a else 1)
    sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
