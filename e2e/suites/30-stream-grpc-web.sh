#!/usr/bin/env bash
# Headless Chromium consumes StreamPredict over gRPC-Web through clients/js/src/stream.js,
# from a page on another origin (a separate static server), so CORS is exercised too.
source "$(dirname "$0")/../lib.sh"

SITE_PORT=$(free_port)
ORIGIN="http://127.0.0.1:$SITE_PORT"
cfg="$WORK/sb.toml"
sb_config "$cfg" "stream-e2e-signing-secret-0123456789abcdef" "turn-secret"
cat >>"$cfg" <<TOML
[stream]
cors_origins = ["$ORIGIN"]
TOML
sb_start "$cfg"

TOKEN=$(curl -fsS -XPOST "$SB_URL/v1/token" -d '{"room":"r1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
[ -n "$TOKEN" ] || fail "no token"

site="$WORK/site"
mkdir -p "$site"
cp "$ROOT/clients/js/src/stream.js" "$E2E_DIR/stream/page.html" "$site/"
python3 -m http.server "$SITE_PORT" --bind 127.0.0.1 --directory "$site" >"$WORK/site.log" 2>&1 &
track_pid $!
for _ in $(seq 1 100); do curl -fsS "$ORIGIN/page.html" >/dev/null 2>&1 && break; sleep 0.05; done

# A foreign origin is refused at preflight.
code=$(curl -s -o /dev/null -w '%{http_code}' -X OPTIONS "$SB_URL/inference.Inference/StreamPredict" \
  -H "Origin: http://evil.example" -H "Access-Control-Request-Method: POST")
[ "$code" = 403 ] || fail "foreign origin preflight answered $code"
pass "foreign origin refused at preflight"

(cd "$E2E_DIR" && timeout 90 node stream/chromium.mjs "$ORIGIN/page.html?sb=$SB_URL&token=$TOKEN") \
  || { tail -20 "$SB_LOG"; fail "Chromium gRPC-Web stream"; }
pass "Chromium streams over gRPC-Web cross-origin (chunks, bytes, abort, statuses, deadline)"

m=$(curl -fsS "$SB_URL/metrics")
grep -q '^switchboard_stream_resets_total [1-9]' <<<"$m" || fail "abort not counted as reset"
grep -q 'switchboard_stream_finished_total{code="deadline_exceeded"} [1-9]' <<<"$m" || fail "deadline not counted"
pass "metrics: reset and deadline counted"
