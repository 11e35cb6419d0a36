#!/usr/bin/env bash
# Signaling relay on one node (no [cluster]), two Switchboard builds side by side: A and B
# alternate RUNS times at each rate, each run on a fresh server with the same load
# (signal-load: CLIENTS clients in rooms of ROOM, ICE candidates and 1 KiB offers). Prints every
# run's relay line, then per rate the medians of server CPU per message, p50 and p99 for A and
# B, and B/A.
# Usage:
#   A=path/to/old/switchboard B=target/release/switchboard bench/signal-ab.sh
# Env: CLIENTS (1000), ROOM (4), RATES ("20000 50000"), DURATION (10), RUNS (3); QUIET,
#   QUIET_WAIT as in bench/lib.sh wait_quiet (before every run).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
A=${A:?A=path of build A}
B=${B:-target/release/switchboard}
LOAD=${LOAD:-target/release/signal-load}
CLIENTS=${CLIENTS:-1000}
ROOM=${ROOM:-4}
RATES=${RATES:-"20000 50000"}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
SECRET=bench-secret-0123456789abcdef0123456789
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# one LABEL BIN RATE: a fresh server, one signal-load run; its relay line goes to $WORK/LABEL.
one() {
  local label=$1 bin=$2 rate=$3 port
  wait_quiet >/dev/null
  port=$(free_port)
  bench_config "$WORK/sb.toml" "127.0.0.1:$port"
  "$bin" serve --config "$WORK/sb.toml" >"$WORK/sb.log" 2>&1 &
  PID=$!
  for _ in $(seq 200); do grep -q '^switchboard listening' "$WORK/sb.log" && break; sleep 0.05; done
  "$LOAD" --label "$label@$rate" --url "ws://127.0.0.1:$port/v1/signal" --secret "$SECRET" \
    --server-pid "$PID" --clients "$CLIENTS" --room-size "$ROOM" --rate "$rate" \
    --duration "$DURATION" | grep relay | tee -a "$WORK/$label@$rate"
  kill -9 "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; A=$A B=$B"
echo "# $CLIENTS clients in rooms of $ROOM, ${DURATION}s per run, $RUNS x (A, B) per rate"
for rate in $RATES; do
  for _ in $(seq "$RUNS"); do
    one A "$A" "$rate"
    one B "$B" "$rate"
  done
done

# Medians: server CPU us/msg, p50, p99 (and the worst loss) of each build per rate.
med() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
field() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p" "$2"; }
echo
echo "| rate | A: CPU us/msg, p50, p99 | B: CPU us/msg, p50, p99 | B/A CPU | worst loss A / B |"
echo "|---|---|---|---|---|"
for rate in $RATES; do
  row="| $rate"
  for l in A B; do
    f="$WORK/$l@$rate"
    eval "cpu_$l=$(field 'server CPU' "$f" | med)"
    row="$row | $(eval echo "\$cpu_$l") us, $(field p50 "$f" | med) ms, $(field p99 "$f" | med) ms"
  done
  ratio=$(awk "BEGIN{printf \"%.3f\", $cpu_B / $cpu_A}")
  loss="$(field loss "$WORK/A@$rate" | sort -g | tail -1)% / $(field loss "$WORK/B@$rate" | sort -g | tail -1)%"
  echo "$row | $ratio | $loss |"
done
