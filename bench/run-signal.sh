#!/usr/bin/env bash
# Signaling benchmark: Switchboard (release) vs the reference Python signaling server
# (bench/reference_signaling_server.py, asyncio + `websockets`), same load, same machine, one
# after the other. Prints one summary line per scenario.
# Usage: cargo build --release -p switchboard -p signal-load && bench/run-signal.sh
# Env: CLIENTS_IDLE (10000), CLIENTS (1000), ROOM (4), RATES ("20000 50000": Switchboard's relay
# rates), SEED_RATES ("1000 2500 5000": the Python server's relay rates; the name bench/RESULTS.md's
# commands use), DURATION (10), PIN (unset; PIN=1 runs each server on CPU 0 and the load
# generator on CPU 1, as if on separate machines, so neither preempts the other).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${BIN:-target/release/switchboard}
LOAD=target/release/signal-load
PY=${PY:-.venv/bin/python}
CLIENTS_IDLE=${CLIENTS_IDLE:-10000}
CLIENTS=${CLIENTS:-1000}
ROOM=${ROOM:-4}
RATES=${RATES:-"20000 50000"}
SEED_RATES=${SEED_RATES:-"1000 2500 5000"}
DURATION=${DURATION:-10}
SRV_PIN=(); LOAD_PIN=()
if [ -n "${PIN:-}" ]; then SRV_PIN=(taskset -c 0); LOAD_PIN=(taskset -c 1); fi
SECRET=bench-secret-0123456789abcdef0123456789
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

start_switchboard() {
  bench_config "$WORK/sb.toml" "127.0.0.1:0"
  "${SRV_PIN[@]}" "$BIN" serve --config "$WORK/sb.toml" >"$WORK/sb.log" 2>&1 &
  SB_PID=$!; PIDS+=("$SB_PID")
  for _ in $(seq 100); do grep -q '^switchboard listening' "$WORK/sb.log" && break; sleep 0.05; done
  SB_ADDR=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' "$WORK/sb.log" | head -1)
}

start_reference() {
  REF_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${SRV_PIN[@]}" "$PY" bench/reference_signaling_server.py "$REF_PORT" >"$WORK/reference.log" 2>&1 &
  REF_PID=$!; PIDS+=("$REF_PID")
  for _ in $(seq 100); do grep -q 'listening' "$WORK/reference.log" && break; sleep 0.05; done
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

echo "== idle: $CLIENTS_IDLE clients in rooms of $ROOM (joins/s, memory per idle joined connection)"
start_switchboard
"${LOAD_PIN[@]}" "$LOAD" --label switchboard --url "ws://$SB_ADDR/v1/signal" --secret "$SECRET" --server-pid "$SB_PID" \
  --clients "$CLIENTS_IDLE" --room-size "$ROOM" --rate 0
stop "$SB_PID"
start_reference
"${LOAD_PIN[@]}" "$LOAD" --label reference-python --url "ws://127.0.0.1:$REF_PORT" --server-pid "$REF_PID" \
  --clients "$CLIENTS_IDLE" --room-size "$ROOM" --rate 0
stop "$REF_PID"

echo "== relay: $CLIENTS clients in rooms of $ROOM, offers (1 KiB) and candidates, ${DURATION}s each"
for rate in $RATES; do
  start_switchboard
  "${LOAD_PIN[@]}" "$LOAD" --label "switchboard@$rate" --url "ws://$SB_ADDR/v1/signal" --secret "$SECRET" --server-pid "$SB_PID" \
    --clients "$CLIENTS" --room-size "$ROOM" --rate "$rate" --duration "$DURATION" | grep relay
  stop "$SB_PID"
done
for rate in $SEED_RATES; do
  start_reference
  "${LOAD_PIN[@]}" "$LOAD" --label "reference-python@$rate" --url "ws://127.0.0.1:$REF_PORT" --server-pid "$REF_PID" \
    --clients "$CLIENTS" --room-size "$ROOM" --rate "$rate" --duration "$DURATION" | grep relay
  stop "$REF_PID"
done
