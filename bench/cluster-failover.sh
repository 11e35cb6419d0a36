#!/usr/bin/env bash
# Failover: three nodes on one redis-server (started here on a free port), ROOMS rooms of two
# with one member on node 1 and its peer on node 2 or 3, the peers sending to their partner at
# RATE msg/s in total. signal-failover sends SIGKILL to node 1 after BEFORE seconds; each of
# its clients reconnects as the JS SDK does (same node after 200 ms, then the next node of
# joined.nodes 100 ms later) and resumes with its resume token. Prints, per run, the time from
# the SIGKILL to each client's joined{resumed:true} (p50/p95/p99/max), resumed vs failed, and
# what became of the peers' messages. The nodes run with their default heartbeat (1 s),
# node_ttl (3 s) and resume grace (15 s).
#
# Usage:
#   CARGO_TARGET_DIR=target cargo build --release -p switchboard -p signal-load && bench/cluster-failover.sh
# Env: ROOMS (500, so 1,000 clients), RATE (1000), BEFORE (3 s), AFTER (10 s), RUNS (1),
# BIN (target/release/switchboard), KEEP=dir (keep the logs there), QUIET and QUIET_WAIT (before
# each run, wait for the shared machine to be quiet: bench/lib.sh wait_quiet).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${BIN:-target/release/switchboard}
TOOL=${TOOL:-target/release/signal-failover}
ROOMS=${ROOMS:-500}
RATE=${RATE:-1000}
BEFORE=${BEFORE:-3}
AFTER=${AFTER:-10}
RUNS=${RUNS:-1}
SECRET=bench-secret-0123456789abcdef0123456789
WORK=${KEEP:-$(mktemp -d)}
mkdir -p "$WORK"
PIDS=()
stop_all() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && { kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; }; done
  PIDS=()
}
cleanup() { stop_all; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $ROOMS rooms of 2 ($((2 * ROOMS)) clients), $RATE msg/s from the peers, SIGKILL after ${BEFORE}s, ${AFTER}s after it"
for run in $(seq "$RUNS"); do
  wait_quiet
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  URLS=(); NODE_PIDS=()
  for i in 1 2 3; do
    port=$(free_port)
    bench_config "$WORK/n$i.toml" "127.0.0.1:$port" "$REDIS_PORT" "n$i"
    "$BIN" serve --config "$WORK/n$i.toml" >"$WORK/n$i.log" 2>&1 &
    NODE_PIDS+=($!); PIDS+=($!)
    disown $! # its SIGKILL comes from signal-failover; no job notice for it
    URLS+=(--url "ws://127.0.0.1:$port/v1/signal")
  done
  for _ in $(seq 200); do
    [ "$(redis-cli -p "$REDIS_PORT" zcard switchboard:nodes)" -ge 3 ] && break
    sleep 0.05
  done
  sleep 1.5 # one heartbeat more: every node has read the full registry
  echo "== run $run"
  "$TOOL" --label "failover#$run" "${URLS[@]}" --kill-pid "${NODE_PIDS[0]}" --secret "$SECRET" \
    --rooms "$ROOMS" --rate "$RATE" --before "$BEFORE" --after "$AFTER"
  stop_all
done
