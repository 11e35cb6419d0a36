#!/usr/bin/env bash
# The reference Python grpcio ML servicer (examples/python-ml-worker/server.py) as Switchboard's
# upstream, and its Python client (client.py) calling Switchboard (with a Bearer ticket): bytes, cancel reaching the upstream,
# deadlines, auth, and local vs upstream giving the same bytes.
source "$(dirname "$0")/../lib.sh"

EX="$ROOT/examples/python-ml-worker"
export INFERENCE_STUBS="$WORK/gen"
PY="$PY" "$EX/generate.sh" "$INFERENCE_STUBS" >/dev/null

ML_PORT=$(free_port)
"$PY" "$EX/server.py" --port "$ML_PORT" >"$WORK/ml.log" 2>&1 &
ML_PID=$!
track_pid $ML_PID
for _ in $(seq 1 100); do grep -q "listening" "$WORK/ml.log" && break; sleep 0.05; done
grep -q "listening" "$WORK/ml.log" || { cat "$WORK/ml.log"; fail "python server did not start"; }

cfg="$WORK/sb.toml"
sb_config "$cfg" "stream-e2e-signing-secret-0123456789abcdef" "turn-secret"
cat >>"$cfg" <<TOML
[stream]
[[stream.upstreams]]
name = "ml"
url = "http://127.0.0.1:$ML_PORT"
health_check_interval = "200ms"
[[stream.routes]]
task_prefix = "local-"
backend = "local:digest"
[[stream.routes]]
task_prefix = ""
backend = "ml"
TOML
sb_start "$cfg"
minted=$(curl -fsS -XPOST "$SB_URL/v1/token" -d '{}')
TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$minted")
IDENTITY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["identity"])' <<<"$minted")
client() { "$PY" "$EX/client.py" "$@"; }
expect_sha() { # task payload n chunk_bytes seed: prints expected sha256 lines
  "$PY" - "$@" <<'PY'
import hashlib, struct, sys
_, n, cb, seed = sys.argv
for i in range(int(n)):
    out = bytearray(); j = 0
    while len(out) < int(cb):
        out += hashlib.sha256(seed.encode() + struct.pack("<QI", i, j)).digest(); j += 1
    print(hashlib.sha256(bytes(out[:int(cb)])).hexdigest())
PY
}
P='{"seed":"py","chunks":6,"chunk_bytes":5000}'

# 1. The Python client straight to the Python server (the reference bytes), then through
#    Switchboard.
direct=$(client --target "127.0.0.1:$ML_PORT" --task t1 --payload "$P" | grep '"index"' | python3 -c 'import json,sys; [print(json.loads(l)["sha256"]) for l in sys.stdin if json.loads(l)["index"]>=0]')
via=$(client --target "$SB_HTTP" --token "$TOKEN" --task t1 --payload "$P")
tail -1 <<<"$via" | grep -q '"status": "OK", "chunks": 7' || fail "via switchboard: $via"
via_sha=$(grep '"index"' <<<"$via" | python3 -c 'import json,sys; [print(json.loads(l)["sha256"]) for l in sys.stdin if json.loads(l)["index"]>=0]')
want=$(expect_sha 6 5000 py)
[ "$direct" = "$want" ] || fail "python server bytes differ from the digest definition"
[ "$via_sha" = "$want" ] || fail "bytes through switchboard differ"
pass "python client → switchboard → python servicer: 6 chunks + done, bytes identical to direct"

# 2. Same request on the local worker: same bytes.
loc=$(client --target "$SB_HTTP" --token "$TOKEN" --task local-1 --payload "$P" | grep '"index"' | python3 -c 'import json,sys; [print(json.loads(l)["sha256"]) for l in sys.stdin if json.loads(l)["index"]>=0]')
[ "$loc" = "$want" ] || fail "local:digest bytes differ from the python servicer"
pass "local:digest and the python servicer produce the same bytes"

# 3. Auth: no ticket → UNAUTHENTICATED; the ML server never sees the call.
out=$(client --target "$SB_HTTP" --task nope --payload '{}' || true)
grep -q '"UNAUTHENTICATED"' <<<"$out" || fail "no token: $out"
grep -q 'task=nope' "$WORK/ml.log" && fail "unauthenticated call reached the upstream"
pass "no ticket → UNAUTHENTICATED, upstream untouched"

# 4. The client cancels after 2 chunks: the Python servicer sees the cancellation promptly.
t0=$(date +%s%N)
out=$(client --target "$SB_HTTP" --token "$TOKEN" --task cancel-me --payload '{"chunks":1000,"delay_ms":100}' --cancel-after 2)
grep -q CANCELLED_BY_CLIENT <<<"$out" || fail "cancel: $out"
for _ in $(seq 1 40); do grep -q 'cancelled task=cancel-me' "$WORK/ml.log" && break; sleep 0.05; done
grep -q 'cancelled task=cancel-me' "$WORK/ml.log" || { cat "$WORK/ml.log"; fail "upstream did not see the cancel"; }
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
pass "client cancel reached the python servicer (${ms} ms incl. client start)"

# 5. Deadline: the client's 0.5 s timeout ends the stream with DEADLINE_EXCEEDED and the
# upstream is cancelled too.
out=$(client --target "$SB_HTTP" --token "$TOKEN" --task deadline-1 --payload '{"chunks":1000,"delay_ms":100}' --timeout 0.5 || true)
grep -q '"DEADLINE_EXCEEDED"' <<<"$out" || fail "deadline: $out"
for _ in $(seq 1 40); do grep -q 'cancelled task=deadline-1' "$WORK/ml.log" && break; sleep 0.05; done
grep -q 'cancelled task=deadline-1' "$WORK/ml.log" || fail "deadline did not cancel upstream"
pass "deadline propagated: DEADLINE_EXCEEDED, upstream cancelled"

# 6. Bad payload → the servicer's INVALID_ARGUMENT passes through.
out=$(client --target "$SB_HTTP" --token "$TOKEN" --task bad --payload 'not json' || true)
grep -q '"INVALID_ARGUMENT"' <<<"$out" || fail "bad payload: $out"
pass "upstream INVALID_ARGUMENT passes through"

# 7. Identity reached the servicer; health checks count the grpcio server (no health service,
# UNIMPLEMENTED) as healthy; metrics show the traffic.
grep -q "done task=t1 identity=$IDENTITY\$" "$WORK/ml.log" || fail "identity $IDENTITY not forwarded"
sleep 0.5
m=$(curl -fsS "$SB_URL/metrics")
grep -q "switchboard_stream_upstream_healthy{upstream=\"ml\",endpoint=\"http://127.0.0.1:$ML_PORT\"} 1" <<<"$m" || fail "upstream not healthy: $(grep healthy <<<"$m")"
grep -q '^switchboard_stream_resets_total [1-9]' <<<"$m" || fail "reset not counted"
grep -q 'switchboard_stream_upstream_timeouts_total{backend="ml"} [1-9]' <<<"$m" || fail "upstream timeout not counted"
pass "identity forwarded, upstream healthy, resets and upstream timeouts counted"

# 8. The ML server goes away: UNAVAILABLE, counted.
kill "$ML_PID"; wait "$ML_PID" 2>/dev/null || true
sleep 0.3
out=$(client --target "$SB_HTTP" --token "$TOKEN" --task gone --payload '{}' || true)
grep -q '"UNAVAILABLE"' <<<"$out" || fail "upstream down: $out"
pass "upstream down → UNAVAILABLE"
