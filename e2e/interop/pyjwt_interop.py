"""PyJWT <-> Switchboard ticket interop.

1. A token minted exactly as the Django/PyJWT design's `issue_token` view does (PyJWT, HS256,
   iss/aud/jti/exp/scope, no kid) is accepted by Switchboard when its secret is a configured key.
2. PyJWT verifies a token Switchboard minted (POST /v1/token).
3. Tampered / wrong-audience / expired PyJWT tokens are refused with the right reason.
"""
import json
import os
import sys
import urllib.request
import urllib.error
from datetime import datetime, timedelta, timezone

import jwt

BASE = os.environ["SB_URL"]
SECRET = os.environ["DJANGO_SECRET"]
SB_SECRET = os.environ["SB_SECRET"]


def http(method, path, token=None, body=None):
    req = urllib.request.Request(BASE + path, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data=data, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def django_issue_token(**overrides):
    # views.issue_token of the Django/PyJWT design, verbatim in substance (its timestamp `jti`
    # included; examples/django/views.py uses a random UUID instead).
    now = datetime.now(timezone.utc)
    payload = {
        "sub": str(42),
        "iss": "your-service",
        "aud": "realtime-clients",
        "jti": str(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "scope": ["webrtc", "grpc"],
    }
    payload.update(overrides)
    return jwt.encode(payload, SECRET, algorithm="HS256")


def main():
    tok = django_issue_token()
    assert "kid" not in jwt.get_unverified_header(tok)
    status, body = http("GET", "/v1/ice-servers", tok)
    assert status == 200, (status, body)
    assert any("username" in s for s in body["iceServers"]), body
    turn = [s for s in body["iceServers"] if "username" in s][0]
    assert turn["username"].endswith(":42"), turn
    print("ok: Django/PyJWT token accepted by /v1/ice-servers")

    status, body = http("GET", "/v1/ice-servers", django_issue_token(aud="someone-else"))
    assert status == 401 and body["error"] == "bad_audience", body
    status, body = http("GET", "/v1/ice-servers", django_issue_token(exp=1))
    assert status == 401 and body["error"] == "expired", body
    forged = jwt.encode(jwt.decode(tok, options={"verify_signature": False}), "not-the-secret", algorithm="HS256")
    status, body = http("GET", "/v1/ice-servers", forged)
    assert status == 401 and body["error"] == "bad_signature", body
    status, body = http("GET", "/v1/ice-servers", django_issue_token(scope=["grpc"]))
    assert status == 403 and body["error"] == "missing_scope", body
    print("ok: bad PyJWT tokens refused with reasons")

    # Switchboard-minted token verified by PyJWT (dev-style anonymous minting is on here).
    status, body = http("POST", "/v1/token", body={"room": "lobby"})
    assert status == 200, (status, body)
    claims = jwt.decode(
        body["token"], SB_SECRET, algorithms=["HS256"], audience="realtime-clients", issuer="switchboard"
    )
    assert claims["room"] == "lobby" and "webrtc" in claims["scope"] and claims["jti"], claims
    assert jwt.get_unverified_header(body["token"])["kid"] == "k1"
    assert claims["exp"] - claims["iat"] == 300
    print("ok: PyJWT verifies Switchboard's ticket")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print("assertion failed:", e)
        sys.exit(1)
