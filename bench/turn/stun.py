"""STUN/TURN messages for the benchmark clients (RFC 5389 framing, MESSAGE-INTEGRITY with a
long-term key, FINGERPRINT): just enough to Allocate, Refresh and read the answer."""
import hashlib
import hmac
import struct
import zlib

COOKIE = 0x2112A442


def attr(t, v):
    """One attribute, padded to a multiple of 4 bytes."""
    return struct.pack("!HH", t, len(v)) + v + b"\0" * ((4 - len(v) % 4) % 4)


def message(mtype, tid, attrs, key=None):
    """A message with `attrs`; with `key`, MESSAGE-INTEGRITY (HMAC-SHA1); always FINGERPRINT."""
    body = b"".join(attrs)
    if key is not None:
        hdr = struct.pack("!HHI", mtype, len(body) + 24, COOKIE) + tid
        body += attr(0x0008, hmac.new(key, hdr + body, hashlib.sha1).digest())
    hdr = struct.pack("!HHI", mtype, len(body) + 8, COOKIE) + tid
    body += attr(0x8028, struct.pack("!I", (zlib.crc32(hdr + body) ^ 0x5354554E) & 0xFFFFFFFF))
    return struct.pack("!HHI", mtype, len(body), COOKIE) + tid + body


def parse(b):
    """(message type, transaction id, error code or None, {attribute type: first value})."""
    mtype, length = struct.unpack("!HH", b[0:4])
    attrs, i = {}, 20
    while i + 4 <= 20 + length:
        t, n = struct.unpack("!HH", b[i:i + 4])
        attrs.setdefault(t, b[i + 4:i + 4 + n])
        i += 4 + ((n + 3) & ~3)
    code = attrs[0x0009][2] * 100 + attrs[0x0009][3] if 0x0009 in attrs else None
    return mtype, b[8:20], code, attrs
