"""Reference for the ticket benchmark: PyJWT (the library of the Django/PyJWT ticket design,
examples/django) minting and verifying the same kind of token on one core.
Usage: python bench/tickets/pyjwt_verify.py [seconds]"""
import sys
import time
import uuid

import jwt

SECRET = "0123456789abcdef0123456789abcdef"
secs = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0


def claims():
    now = int(time.time())
    return {"iss": "switchboard", "sub": "user-12345", "aud": "realtime-clients", "jti": uuid.uuid4().hex,
            "iat": now, "exp": now + 300, "scope": ["webrtc", "grpc"], "room": "room-42"}


def rate(fn):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs:
        for _ in range(200):
            fn()
        n += 200
    return n / (time.perf_counter() - t0)


tok = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "k1"})
c = claims()
print(f"pyjwt hs256 mint   {rate(lambda: jwt.encode(c, SECRET, algorithm='HS256', headers={'kid': 'k1'})):,.0f}/s")
print(f"pyjwt hs256 verify {rate(lambda: jwt.decode(tok, SECRET, algorithms=['HS256'], audience='realtime-clients', issuer='switchboard')):,.0f}/s")
