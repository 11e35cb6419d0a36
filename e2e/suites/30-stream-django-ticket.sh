#!/usr/bin/env bash
# A ticket minted by examples/django/views.py (PyJWT) opens a stream through
# Switchboard; the same ticket without the `grpc` scope is PERMISSION_DENIED.
source "$(dirname "$0")/../lib.sh"

DJANGO_SECRET="django-shared-secret-rotate-me-0123456789"
EX="$ROOT/examples/python-ml-worker"
export INFERENCE_STUBS="$WORK/gen"
PY="$PY" "$EX/generate.sh" "$INFERENCE_STUBS" >/dev/null

cfg="$WORK/sb.toml"
sb_config "$cfg" "switchboard-signing-secret-0123456789abcdef" "turn-secret"
python3 - "$cfg" "$DJANGO_SECRET" <<'PY'
import sys
p, secret = sys.argv[1], sys.argv[2]
s = open(p).read()
s = s.replace('[turn]', f'[[auth.keys]]\nkid = "django"\nsecret = "{secret}"\n\n[turn]', 1)
s = s.replace('allow_anonymous_tokens = true', 'allow_anonymous_tokens = true\naccepted_issuers = ["your-service"]', 1)
open(p, "w").write(s)
PY
sb_start "$cfg"

# views.py imports Django; the test needs only mint(), so stand-ins for the three decorators/classes.
mint() {
  SWITCHBOARD_TICKET_SECRET="$DJANGO_SECRET" "$PY" - "$ROOT/examples/django" "$@" <<'PY'
import importlib.util, sys, types
for name in ["django", "django.contrib", "django.contrib.auth", "django.contrib.auth.decorators",
             "django.http", "django.views", "django.views.decorators", "django.views.decorators.http"]:
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules["django.contrib.auth.decorators"].login_required = lambda f: f
sys.modules["django.views.decorators.http"].require_POST = lambda f: f
sys.modules["django.http"].JsonResponse = dict
spec = importlib.util.spec_from_file_location("views", sys.argv[1] + "/views.py")
views = importlib.util.module_from_spec(spec); spec.loader.exec_module(views)
print(views.mint("django-user-7", scopes=sys.argv[2].split(",")))
PY
}
T=$(mint webrtc,grpc)
out=$("$PY" "$EX/client.py" --target "$SB_HTTP" --token "$T" --task dj --payload '{"chunks":3}')
tail -1 <<<"$out" | grep -q '"status": "OK", "chunks": 4' || fail "django ticket: $out"
pass "Django/PyJWT ticket opens a stream"
T2=$(mint webrtc)
out=$("$PY" "$EX/client.py" --target "$SB_HTTP" --token "$T2" --task dj --payload '{}' || true)
grep -q '"PERMISSION_DENIED"' <<<"$out" || fail "webrtc-only ticket: $out"
pass "Django ticket without scope grpc → PERMISSION_DENIED"
