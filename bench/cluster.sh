#!/usr/bin/env bash
# Signaling across nodes: the same relay load (rooms of two) first with every peer on node 1 of
# a two-node cluster, then with each room split (peer A on node 1, peer B on node 2, so every
# relay goes node -> Redis PUBLISH -> node). Both nodes use one redis-server started here on a
# free port; every layout gets fresh processes. Each layout steps through RATES with the same
# clients and stops after the first rate with loss; then same-node and cross-node alternate
# AB_RUNS times at AB_RATE, because latency at one rate depends on whatever else the cores run.
# Prints each run's lines, then side-by-side tables: highest loss-free rate, loss, p50/p99 and
# server CPU per rate, Redis commands per relayed message (INFO commandstats before and after
# each rate), and the alternating runs with their medians. Finally a floor for the cross-node
# path: redis-benchmark PUBLISH on the same machine, with one subscriber reading.
#
# Usage:
#   CARGO_TARGET_DIR=target cargo build --release -p switchboard -p signal-load && bench/cluster.sh
# Env:
#   CLIENTS (1000); RATES ("5000 10000 20000 30000 ... 100000 120000 150000 180000");
#   DURATION (10 s per rate); BIN (target/release/switchboard);
#   AB_RUNS (3) and AB_RATE (20000): the alternating same-node / cross-node runs;
#   STANDALONE=1: first the same ladder on one node without [cluster] (the cost of cluster mode);
#   FLOOR=0: skip redis-benchmark;
#   JOIN_WAVES (1): every room's first members join, then its second ones, so no two members of
#     a room join at the same moment; 0: all at once, which also exercises concurrent joins;
#   QUIET (0.3), QUIET_WAIT (600): before each run wait up to QUIET_WAIT s for fewer than QUIET
#     cores to be busy (bench/lib.sh wait_quiet); each rate's "machine:" line then says how
#     much CPU other processes took during it;
#   KEEP=dir: keep configurations, logs and outputs there.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${BIN:-target/release/switchboard}
LOAD=${LOAD:-target/release/signal-load}
CLIENTS=${CLIENTS:-1000}
RATES=${RATES:-"5000 10000 20000 30000 40000 50000 60000 70000 80000 90000 100000 120000 150000 180000"}
DURATION=${DURATION:-10}
AB_RUNS=${AB_RUNS:-3}
AB_RATE=${AB_RATE:-20000}
SECRET=bench-secret-0123456789abcdef0123456789
WORK=${KEEP:-$(mktemp -d)}
mkdir -p "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis-server did not start" >&2; exit 1
}

# start_node NAME [cluster]: a node on a free port; NODE_PID, NODE_ADDR.
start_node() {
  local name=$1 port; port=$(free_port)
  if [ "${2:-}" = cluster ]; then
    bench_config "$WORK/$name.toml" "127.0.0.1:$port" "$REDIS_PORT" "$name"
  else
    bench_config "$WORK/$name.toml" "127.0.0.1:$port"
  fi
  "$BIN" serve --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
  NODE_PID=$!; PIDS+=("$NODE_PID")
  for _ in $(seq 200); do grep -q '^switchboard listening' "$WORK/$name.log" && break; sleep 0.05; done
  grep -q '^switchboard listening' "$WORK/$name.log" || { cat "$WORK/$name.log" >&2; exit 1; }
  NODE_ADDR=127.0.0.1:$port
}

# Waits until `n` nodes are in the registry, then one heartbeat more so every node has read it.
wait_nodes() {
  for _ in $(seq 200); do
    [ "$(redis-cli -p "$REDIS_PORT" zcard switchboard:nodes)" -ge "$1" ] && { sleep 1.5; return; }
    sleep 0.05
  done
  echo "the nodes did not register" >&2; exit 1
}

stop_all() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && { kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; }; done
  PIDS=()
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $CLIENTS clients in rooms of 2, ${DURATION}s per rate, rates $RATES, then $AB_RUNS x (same-node, cross-node) at $AB_RATE msg/s; JOIN_WAVES=${JOIN_WAVES:-1}"

# run LABEL RATES URL...: signal-load against the nodes started for it.
run() {
  local label=$1 rates; rates=$(echo "$2" | tr ' ' ','); shift 2
  local urls=()
  for u in "$@"; do urls+=(--url "ws://$u/v1/signal"); done
  local pids=()
  for p in "${NODE_PIDS[@]}"; do pids+=(--server-pid "$p"); done
  local redis=()
  [ -n "${REDIS_PORT:-}" ] && redis=(--redis-url "redis://127.0.0.1:$REDIS_PORT/")
  local waves=()
  [ "${JOIN_WAVES:-1}" != 0 ] && waves=(--join-waves)
  echo "== $label ($(cut -d' ' -f1 /proc/loadavg) load average)"
  "$LOAD" --label "$label" "${urls[@]}" --secret "$SECRET" "${pids[@]}" "${redis[@]}" "${waves[@]}" \
    --clients "$CLIENTS" --room-size 2 --rate "$rates" --duration "$DURATION" | tee "$WORK/$label.out"
}

# layout same|cross LABEL RATES: a fresh Redis and two fresh nodes, one run, all stopped after.
layout() {
  wait_quiet
  start_redis
  start_node n1 cluster; local a=$NODE_ADDR; NODE_PIDS=("$NODE_PID")
  start_node n2 cluster; local b=$NODE_ADDR; NODE_PIDS+=("$NODE_PID")
  wait_nodes 2
  if [ "$1" = same ]; then run "$2" "$3" "$a"; else run "$2" "$3" "$a" "$b"; fi
  stop_all
}

if [ -n "${STANDALONE:-}" ]; then
  REDIS_PORT=
  wait_quiet
  start_node solo; NODE_PIDS=("$NODE_PID")
  run standalone "$RATES" "$NODE_ADDR"
  stop_all
fi
layout same same-node "$RATES"
layout cross cross-node "$RATES"
# Latency at one rate is sensitive to whatever else the two cores run: same-node and
# cross-node alternate, each on fresh processes.
for i in $(seq "$AB_RUNS"); do
  layout same "ab-same-$i" "$AB_RATE"
  layout cross "ab-cross-$i" "$AB_RATE"
done

if [ "${FLOOR:-1}" != 0 ]; then
  # The floor for the cross-node path: Redis alone relaying PUBLISHes (480-byte payloads,
  # about the mean of the relayed frames) to one subscriber, on the same two cores.
  start_redis
  redis-cli -p "$REDIS_PORT" config set client-output-buffer-limit "pubsub 0 0 0" >/dev/null
  redis-cli -p "$REDIS_PORT" subscribe floor >/dev/null 2>&1 &
  PIDS+=($!)
  sleep 0.3
  payload=$(head -c 480 /dev/zero | tr '\0' x)
  echo "== floor: redis-benchmark PUBLISH, one subscriber, two connections pipelining"
  for p in 16 512; do
    printf 'pipeline %-4s ' "$p"
    redis-benchmark -p "$REDIS_PORT" -c 2 -n 1000000 -P "$p" -q publish floor "$payload" \
      | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | tee -a "$WORK/floor.out"
  done
  stop_all
fi

python3 - "$WORK" "$AB_RATE" "$AB_RUNS" "$RATES" <<'PY'
import re, sys, os, statistics
work, ab_rate, ab_runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ladder = [int(r) for r in sys.argv[4].split()]
# signal-load tags its lines label@rate only when it steps through several rates.
one_rate = ladder[0] if len(ladder) == 1 else None
TAG = r"\[[^\]@]+(?:@(\d+))?\] "

def parse(label, nominal=None):
    """Per nominal rate: relay figures, Redis figures, what clients were told, other load."""
    p = os.path.join(work, label + ".out")
    if not os.path.exists(p):
        return None
    steps, redis, told, other, best = {}, {}, {}, {}, None
    for line in open(p):
        m = re.match(TAG + r"relay: sent \d+ in [\d.]+ s \((\d+)/s offered\), received \d+ \((\d+)/s\), loss (-?[\d.]+)%, latency p50 ([\d.]+) ms p99 ([\d.]+) ms .*server CPU ([\d.?]+) us/msg", line)
        if m:
            rate = int(m[1]) if m[1] else nominal
            steps[rate] = dict(offered=int(m[2]), loss=float(m[4]), p50=float(m[5]), p99=float(m[6]), cpu=m[7])
            continue
        m = re.match(TAG + r"redis: \d+ commands = ([\d.]+) per relayed message \((.*)\), Redis CPU ([\d.]+) us/msg", line)
        if m:
            redis[int(m[1]) if m[1] else nominal] = dict(per=float(m[2]), detail=m[3], cpu=float(m[4]))
            continue
        m = re.match(TAG + r"clients were told: (.*)", line)
        if m:
            told[int(m[1]) if m[1] else nominal] = m[2].strip()
            continue
        m = re.match(TAG + r"machine: .* other processes ([\d.]+)", line)
        if m:
            other[int(m[1]) if m[1] else nominal] = float(m[2])
            continue
    ok = [s["offered"] for s in steps.values() if s["loss"] <= 0]
    lossy = [s for s in steps.values() if s["loss"] > 0]
    best = (str(max(ok)) if ok else "none",
            f"{lossy[0]['offered']} msg/s offered, {lossy[0]['loss']:.3f} % lost" if lossy else "no rate tried had loss")
    return dict(steps=steps, redis=redis, told=told, other=other, best=best)

runs = [(l, parse(l, one_rate)) for l in ("standalone", "same-node", "cross-node")]
runs = [(l, r) for l, r in runs if r]
print("\n== ladder (rooms of 2; cross-node: every relay crosses nodes)")
print("| figure | " + " | ".join(l for l, _ in runs) + " |")
print("|---|" + "---|" * len(runs))
def row(name, f):
    print(f"| {name} | " + " | ".join(str(f(r)) for _, r in runs) + " |")
row("highest loss-free rate, msg/s", lambda r: r["best"][0] if r["best"] else "?")
row("first rate with loss", lambda r: r["best"][1] if r["best"] else "?")
def cell(r, rate):
    s = r["steps"].get(rate)
    if not s:
        return "-"
    out = f"{s['loss']:.2f} %, {s['p50']:.2f} / {s['p99']:.2f} ms, {s['cpu']} us"
    if rate in r["redis"]:
        out += f", {r['redis'][rate]['per']:.3f} Redis cmd"
    if rate in r["other"]:
        out += f", others {r['other'][rate]:.2f} cores"
    if rate in r["told"]:
        out += f" ({r['told'][rate]})"
    return out
for rate in sorted(set(k for _, r in runs for k in r["steps"])):
    row(f"{rate} msg/s: loss, p50 / p99, server CPU/msg", lambda r, rate=rate: cell(r, rate))

ab = {"same": [], "cross": []}
for i in range(1, ab_runs + 1):
    for kind in ab:
        r = parse(f"ab-{kind}-{i}", ab_rate)
        if r and ab_rate in r["steps"]:
            ab[kind].append(r)
if ab["same"] and ab["cross"]:
    print(f"\n== {ab_rate} msg/s, same-node and cross-node alternating on fresh processes")
    print("| run | same-node: loss, p50 / p99, server CPU/msg | cross-node: loss, p50 / p99, server CPU/msg |")
    print("|---|---|---|")
    for i, (a, b) in enumerate(zip(ab["same"], ab["cross"]), 1):
        print(f"| {i} | {cell(a, ab_rate)} | {cell(b, ab_rate)} |")
    med = lambda xs, k: statistics.median(x["steps"][ab_rate][k] for x in xs)
    s50, s99, c50, c99 = med(ab["same"], "p50"), med(ab["same"], "p99"), med(ab["cross"], "p50"), med(ab["cross"], "p99")
    print(f"| median | {s50:.2f} / {s99:.2f} ms | {c50:.2f} / {c99:.2f} ms |")
    print(f"cross-node p99 minus same-node p99 (medians): {c99 - s99:+.2f} ms (target: within 1 ms)")
d = dict(runs)
if "same-node" in d and "cross-node" in d:
    try:
        ratio = float(d["cross-node"]["best"][0]) / float(d["same-node"]["best"][0])
        print(f"cross-node / same-node highest loss-free rate: {ratio:.2f} (target: at least 0.5)")
    except (TypeError, ValueError, ZeroDivisionError):
        pass
    if ab_rate in d["cross-node"]["redis"]:
        print(f"cross-node Redis commands per relayed message at {ab_rate} msg/s: {d['cross-node']['redis'][ab_rate]['per']:.3f} ({d['cross-node']['redis'][ab_rate]['detail']})")
if os.path.exists(os.path.join(work, "floor.out")):
    print("floor, redis-benchmark PUBLISH (pipeline 16, 512): " + ", ".join(l.strip() for l in open(os.path.join(work, "floor.out"))))
PY
