"""A Django view that mints tickets Switchboard accepts (the Django/PyJWT design's issue_token,
tightened).

Switchboard config for these tickets (the Django secret as a verification key; tokens carry
no `kid`, which Switchboard accepts for HS256 keys, and the issuer must be accepted):

    [auth]
    audience = "realtime-clients"
    accepted_issuers = ["your-service"]
    [[auth.keys]]
    kid = "django"
    secret = "<same as SWITCHBOARD_TICKET_SECRET>"

The browser then calls Switchboard with `authorization: Bearer <token>` for gRPC(-Web) streams
(scope "grpc") and `?access_token=` for signaling (scope "webrtc").
"""
import os
import uuid
from datetime import datetime, timedelta, timezone

import jwt
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.views.decorators.http import require_POST

SECRET = os.environ.get("SWITCHBOARD_TICKET_SECRET", "")  # from Vault/KMS in production
ISSUER = "your-service"
AUD = "realtime-clients"
TTL = timedelta(minutes=5)


def mint(sub: str, scopes=("webrtc", "grpc"), room=None, now=None) -> str:
    if len(SECRET) < 32:
        raise RuntimeError("SWITCHBOARD_TICKET_SECRET must be set (32+ characters)")
    now = now or datetime.now(timezone.utc)
    payload = {
        "sub": sub,
        "iss": ISSUER,
        "aud": AUD,
        "jti": uuid.uuid4().hex,           # unique: Switchboard refuses a replayed jti for signaling
        "iat": int(now.timestamp()),
        "exp": int((now + TTL).timestamp()),
        "scope": list(scopes),
    }
    if room:
        payload["room"] = room
    return jwt.encode(payload, SECRET, algorithm="HS256")


@login_required
@require_POST
def issue_token(request):
    room = request.POST.get("room") or None
    return JsonResponse({"token": mint(str(request.user.id), room=room), "expires_in": int(TTL.total_seconds())})
