#!/usr/bin/env bash
# Stream gateway benchmark, one run, release builds:
#   (a) the reference Python grpcio ML servicer (examples/python-ml-worker/server.py) directly
#   (b) Switchboard in front of that same Python server
#   (c) Switchboard's local:digest worker
#   (d) a bare tonic server with the same chunking and work
#   (e) Switchboard in front of (d)  — the gateway's own cost against (d)
# Every server computes the same SHA-256 counter-mode chunks. Load: crates/stream/examples/stream_load.rs.
#
#   cargo build --release -p switchboard -p switchboard-stream --bins --examples
#   bench/stream.sh            # env: CONC, STREAMS_FAST, STREAMS_PY, CHUNKS, CHUNK_BYTES, PIN, SB_BIN, AB
#
# AB=1 also starts a second Switchboard (same binary) with write coalescing and upstream
# read-ahead off (`[http] coalesce_writes = false`, upstream `coalesce_io = false`) and runs the
# (e) rows against it right after the default ones: e_off, e_off_c1 (decision 0033).
#
# AB_BIN=PATH does the same with another Switchboard binary and the default config instead:
# its rows are the e_off ones (for comparing two builds in one run).
#
# AB_HTTP='threads = 1' does the same with the same binary and these extra [http] lines instead
# (for comparing one setting in one run).
#
# ROUNDS=N runs only (d), (e) and, with AB=1, (e) off, interleaved N times, each also at one
# stream (c1), and prints the median (e)/(d) throughput ratios and the median time to first
# chunk the gateway adds at one stream: the gateway's two costs with less drift between rows.
#
# PIN chooses where the processes run on a 2-core machine (docs/decisions/0034 and
# bench/RESULTS.md, "Stream gateway" → "the upstream on its own core", say what each layout
# distorts):
#   0 (default) no pinning: every process shares both cores, so (e)/(d) mostly measures the
#     gateway's CPU cost, taken from the CPU that tonic and the load generator need;
#   1 Switchboard on CPU 1, everything else (load generator, Python, tonic) on CPU 0: the
#     gateway has a core of its own, but in (d) the client reaches tonic without crossing CPUs
#     while in (e) every hop crosses;
#   2 the upstream servers (Python, tonic) on CPU 0, Switchboard and the load generator on
#     CPU 1: the upstream gets the same core in (d) and (e), and both cross CPUs only between
#     the client side and the upstream, the way the upstream runs on its own machine.
#
# Server CPU is utime+stime of the server process(es) from /proc/PID/stat over the run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REL=$ROOT/target/release
PY=${PY:-$ROOT/.venv/bin/python}
CONC=${CONC:-32}
SB_BIN=${SB_BIN:-$REL/switchboard}
PIN_SB=() PIN_UP=() PIN_LOAD=()
case "${PIN:-0}" in
  0) ;;
  1) PIN_SB=(taskset -c 1); PIN_UP=(taskset -c 0); PIN_LOAD=(taskset -c 0) ;;
  2) PIN_SB=(taskset -c 1); PIN_UP=(taskset -c 0); PIN_LOAD=(taskset -c 1) ;;
  *) echo "PIN must be 0, 1 or 2" >&2; exit 2 ;;
esac
STREAMS_FAST=${STREAMS_FAST:-1600}
STREAMS_PY=${STREAMS_PY:-160}
CHUNKS=${CHUNKS:-200}
CHUNK_BYTES=${CHUNK_BYTES:-1024}
PAYLOAD="{\"chunks\":$CHUNKS,\"chunk_bytes\":$CHUNK_BYTES}"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1"; return 1; }
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
HZ=$(getconf CLK_TCK)

PY="$PY" "$ROOT/examples/python-ml-worker/generate.sh" "$WORK/gen" >/dev/null
PY_PORT=$(port)
INFERENCE_STUBS=$WORK/gen "${PIN_UP[@]}" "$PY" "$ROOT/examples/python-ml-worker/server.py" --port "$PY_PORT" --workers 64 >"$WORK/py.log" 2>&1 &
PY_PID=$!; PIDS+=($PY_PID)
"${PIN_UP[@]}" "$REL/examples/tonic_digest_server" 127.0.0.1:0 >"$WORK/tonic.log" 2>&1 &
TONIC_PID=$!; PIDS+=($TONIC_PID)
wait_line "$WORK/py.log" listening
wait_line "$WORK/tonic.log" listening
TONIC_ADDR=$(sed -n 's/.*listening //p' "$WORK/tonic.log")

SECRET=bench-signing-secret-0123456789abcdef0123
cat >"$WORK/sb.toml" <<TOML
[http]
bind = "127.0.0.1:0"
[auth]
database = ":memory:"
max_token_ttl = "2h"
[[auth.keys]]
kid = "k1"
secret = "$SECRET"
[turn]
enabled = false
[log]
level = "warn"
[stream]
max_streams_per_identity = 100000
[[stream.upstreams]]
name = "py"
url = "http://127.0.0.1:$PY_PORT"
[[stream.upstreams]]
name = "tonic"
url = "http://$TONIC_ADDR"
[[stream.routes]]
task_prefix = "py-"
backend = "py"
[[stream.routes]]
task_prefix = "tonic-"
backend = "tonic"
[[stream.routes]]
task_prefix = ""
backend = "local:digest"
TOML
"${PIN_SB[@]}" "$SB_BIN" serve --config "$WORK/sb.toml" >"$WORK/sb.log" 2>&1 &
SB_PID=$!; PIDS+=($SB_PID)
wait_line "$WORK/sb.log" "^switchboard listening"
SB=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' "$WORK/sb.log" | head -1)
if [ -n "${AB_BIN:-}" ] || [ -n "${AB_HTTP:-}" ] || [ "${AB:-0}" = 1 ]; then
  # The second server: AB_BIN is another binary with the same config; AB_HTTP is the same
  # binary with extra [http] lines; AB=1 is the same binary with coalescing off. Either way its
  # SFU is off (one UDP port per host) and its (e) rows are the e_off ones.
  OFF_BIN=${AB_BIN:-$SB_BIN}
  OFF_SED=()
  if [ -n "${AB_HTTP:-}" ]; then OFF_SED=(-e "s/^bind = .*/&\n$AB_HTTP/")
  elif [ -z "${AB_BIN:-}" ]; then OFF_SED=(-e 's/^bind = .*/&\ncoalesce_writes = false/' -e 's/^url = .*/&\ncoalesce_io = false/'); fi
  sed "${OFF_SED[@]}" -e 's/^\[turn\]/[sfu]\nmode = "mesh"\n&/' "$WORK/sb.toml" >"$WORK/sb-off.toml"
  "${PIN_SB[@]}" "$OFF_BIN" serve --config "$WORK/sb-off.toml" >"$WORK/sb-off.log" 2>&1 &
  SB_OFF_PID=$!; PIDS+=($SB_OFF_PID)
  wait_line "$WORK/sb-off.log" "^switchboard listening"
  SB_OFF=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' "$WORK/sb-off.log" | head -1)
fi
TOKEN=$(SWITCHBOARD_CONFIG="$WORK/sb.toml" "$REL/switchboard" token create --identity bench --scope grpc --ttl 1h)

run() { # label target task streams pids...
  local label=$1 target=$2 task=$3 streams=$4; shift 4
  local c0 t0; c0=$(ticks "$@"); t0=$(ticks "$TONIC_PID")
  local out
  out=$("${PIN_LOAD[@]}" "$REL/examples/stream_load" --target "$target" --token "$TOKEN" --concurrency "$CONC" \
    --streams "$streams" --task "$task" --payload "$PAYLOAD" --label "$label")
  local c1 t1; c1=$(ticks "$@"); t1=$(ticks "$TONIC_PID")
  python3 - "$out" "$((c1 - c0))" "$HZ" "$((t1 - t0))" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); ticks = int(sys.argv[2]); hz = int(sys.argv[3])
cpu_s = ticks / hz
r["server_cpu_s"] = round(cpu_s, 2)
r["server_cpu_us_per_chunk"] = round(cpu_s * 1e6 / max(1, r["chunks"]), 2)
# The bare tonic server's CPU over the same row: the upstream's cost in (d) and (e).
r["tonic_cpu_us_per_chunk"] = round(int(sys.argv[4]) / hz * 1e6 / max(1, r["chunks"]), 2)
print(json.dumps(r))
PY
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg); conc=$CONC chunks/stream=$CHUNKS chunk_bytes=$CHUNK_BYTES pin=${PIN:-0}"
# Warm-up (connections, Python imports).
run warmup "http://127.0.0.1:$PY_PORT" w 8 "$PY_PID" >/dev/null
run warmup "http://$SB" py-w 8 "$SB_PID" >/dev/null
run warmup "http://$SB" tonic-w 32 "$SB_PID" >/dev/null
if [ -n "${ROUNDS:-}" ]; then
  [ -z "${SB_OFF:-}" ] || run warmup "http://$SB_OFF" tonic-w 32 "$SB_OFF_PID" >/dev/null
  for _ in $(seq 1 "$ROUNDS"); do
    run "d_tonic_direct" "http://$TONIC_ADDR" d "$STREAMS_FAST" "$TONIC_PID"
    run "e_switchboard_to_tonic" "http://$SB" tonic-e "$STREAMS_FAST" "$SB_PID"
    [ -z "${SB_OFF:-}" ] || run "e_off_switchboard_to_tonic" "http://$SB_OFF" tonic-e "$STREAMS_FAST" "$SB_OFF_PID"
    CONC=1 run "d_tonic_direct_c1" "http://$TONIC_ADDR" d 300 "$TONIC_PID"
    CONC=1 run "e_switchboard_to_tonic_c1" "http://$SB" tonic-e 300 "$SB_PID"
    [ -z "${SB_OFF:-}" ] || CONC=1 run "e_off_switchboard_to_tonic_c1" "http://$SB_OFF" tonic-e 300 "$SB_OFF_PID"
  done | tee "$WORK/rounds.jsonl"
  python3 - "$WORK/rounds.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
d = [r for r in rows if r["label"] == "d_tonic_direct"]
d1 = [r for r in rows if r["label"] == "d_tonic_direct_c1"]
for label in ("e_switchboard_to_tonic", "e_off_switchboard_to_tonic"):
    e = [r for r in rows if r["label"] == label]
    e1 = [r for r in rows if r["label"] == label + "_c1"]
    if e:
        ratios = [x["chunks_per_s"] / y["chunks_per_s"] for x, y in zip(e, d)]
        cpu = [x["server_cpu_us_per_chunk"] for x in e]
        # Added time to first chunk at one stream, (e) - (d) p50, per round.
        added = [x["ttfc_p50_ms"] - y["ttfc_p50_ms"] for x, y in zip(e1, d1)]
        print(json.dumps({"label": label, "ratio_to_d_per_round": [round(r, 3) for r in ratios],
                          "median_ratio": round(statistics.median(ratios), 3),
                          "median_gateway_us_per_chunk": statistics.median(cpu),
                          "added_ttfc_p50_ms_per_round": [round(a, 3) for a in added],
                          "median_added_ttfc_p50_ms": round(statistics.median(added), 3)}))
PY
  exit 0
fi
run "a_python_direct" "http://127.0.0.1:$PY_PORT" py-a "$STREAMS_PY" "$PY_PID"
run "b_switchboard_to_python" "http://$SB" py-b "$STREAMS_PY" "$SB_PID"
run "b_python_side" "http://$SB" py-b2 "$STREAMS_PY" "$PY_PID"
run "c_switchboard_local" "http://$SB" local-c "$STREAMS_FAST" "$SB_PID"
run "d_tonic_direct" "http://$TONIC_ADDR" d "$STREAMS_FAST" "$TONIC_PID"
run "e_switchboard_to_tonic" "http://$SB" tonic-e "$STREAMS_FAST" "$SB_PID"
run "e_tonic_side" "http://$SB" tonic-e2 "$STREAMS_FAST" "$TONIC_PID"
if [ -n "${SB_OFF:-}" ]; then
  run warmup "http://$SB_OFF" tonic-w 32 "$SB_OFF_PID" >/dev/null
  run "e_off_switchboard_to_tonic" "http://$SB_OFF" tonic-e "$STREAMS_FAST" "$SB_OFF_PID"
fi
# Time to first chunk at low load (one stream at a time): the gateway's added latency.
CONC=1 run "d_tonic_direct_c1" "http://$TONIC_ADDR" d 300 "$TONIC_PID"
CONC=1 run "e_switchboard_to_tonic_c1" "http://$SB" tonic-e 300 "$SB_PID"
[ -z "${SB_OFF:-}" ] || CONC=1 run "e_off_switchboard_to_tonic_c1" "http://$SB_OFF" tonic-e 300 "$SB_OFF_PID"
CONC=1 run "a_python_direct_c1" "http://127.0.0.1:$PY_PORT" py-a 100 "$PY_PID"
CONC=1 run "b_switchboard_to_python_c1" "http://$SB" py-b 100 "$SB_PID"
CONC=1 run "c_switchboard_local_c1" "http://$SB" local-c 300 "$SB_PID"
