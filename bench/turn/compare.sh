#!/usr/bin/env bash
# coturn vs Switchboard's TURN, same machine, same session, same load: coturn's own
# turnutils_uclient (with turnutils_peer as the UDP echo peer) with identical flags against
# both. Reports server CPU µs per echoed message (from its threads' /proc schedstat, in ns),
# echoed msgs/s, loss,
# and memory per idle allocation (alloc_mem.py).
#
# usage: bench/turn/compare.sh [SWITCHBOARD_BIN]     (default: target/release/switchboard)
#        QUICK=1 for a shorter run; N=messages per session (20000)
#        ONLY=REGEX runs only the scenarios whose label matches (e.g. ONLY='flood')
#        ALT='udp_gso = false' also runs a second Switchboard with these extra [turn] lines
#        (same load, same run), labelled ALT_LABEL (default sb-alt)
#        ALT_BIN=/path runs that second Switchboard from another binary (e.g. a build with
#        other cargo features), with ALT's extra lines if given, else the same config
#        LADDER='10 20 40 80 2x60 3x60 3x80' (the default) sets the paced ladder: an entry
#        M is M sessions, KxM is K uclients of M sessions each at once
#        ALLOCS=0 skips the memory measurement
#        PAR=K runs K uclient processes at once per scenario, each with its own echo peer,
#        and sums their figures (one uclient tops out near 25-30k echoed msgs/s)
#        FLOOR=1 also runs bench/tools/turn_floor.c (a relay with no TURN logic at all, same
#        I/O shape) on the UDP rows: what any server must at least pay on this machine;
#        FLOOR_YIELD=1 makes it yield after work as Switchboard does
#        KEEP=1 keeps the work directory (uclient logs, configs) for a look afterwards
#        PERF_DIR=DIR also records a `perf record -g` profile of each server per scenario
#        (PERF_ARGS overrides the perf subcommand and options, e.g. "stat -e ...")
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SB_BIN=${1:-$ROOT/target/release/switchboard}
[ -x "$SB_BIN" ] || { echo "build first: cargo build --release --bin switchboard"; exit 1; }
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
. "$ROOT/bench/lib.sh"
SECRET="bench-$RANDOM$RANDOM"
CO_PORT=$(free_port); SB_PORT=$(free_port); PEER_PORT=$(free_port)

turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$CO_PORT" \
  --min-port=49152 --max-port=57343 --use-auth-secret --static-auth-secret="$SECRET" \
  --realm=bench --no-tls --no-dtls --no-cli --allow-loopback-peers --no-software-attribute \
  --userdb="$W/turndb" --pidfile="$W/coturn.pid" --log-file="$W/coturn.log" --no-stdout-log \
  >/dev/null 2>&1 &
CO_PID=$!; PIDS+=("$CO_PID")
cat >"$W/sb.toml" <<TOML
[http]
bind = "127.0.0.1:0"
[auth]
database = ":memory:"
[[auth.keys]]
kid = "k1"
secret = "bench-signing-secret-0123456789abcdef"
[turn]
listen = "127.0.0.1:$SB_PORT"
realm = "bench"
static_auth_secret = "$SECRET"
allow_loopback_peers = true
min_port = 57344
max_port = 65535
# One credential drives every session (up to 640) and alloc_mem.py's 2,000 allocations; coturn
# above runs with its default, no user quota, so this one has none either.
user_quota = 0
[sfu]
mode = "mesh"
[log]
level = "warn"
TOML
RUST_LOG=warn "$SB_BIN" serve --config "$W/sb.toml" >"$W/sb.log" 2>&1 &
SB_PID=$!; PIDS+=("$SB_PID")
HAS_ALT=""
[ -z "${ALT:-}${ALT_BIN:-}" ] || HAS_ALT=1
if [ -n "$HAS_ALT" ]; then
  ALT_SB_BIN=${ALT_BIN:-$SB_BIN}
  [ -x "$ALT_SB_BIN" ] || { echo "ALT_BIN $ALT_SB_BIN: not an executable"; exit 1; }
  NG_PORT=$(free_port)
  sed -e "s/^listen = .*/listen = \"127.0.0.1:$NG_PORT\"/" -e 's/^min_port = .*/min_port = 40960/' \
      -e 's/^max_port = .*/max_port = 49151/' "$W/sb.toml" >"$W/sb-alt.toml"
  [ -z "${ALT:-}" ] || python3 - "$W/sb-alt.toml" "$ALT" <<'PY'
import sys
p, extra = sys.argv[1], sys.argv[2].replace("\\n", "\n")
s = open(p).read().replace("[sfu]", extra + "\n[sfu]", 1)
open(p, "w").write(s)
PY
  env ${ALT_ENV:-} RUST_LOG=warn "$ALT_SB_BIN" serve --config "$W/sb-alt.toml" >"$W/sb-alt.log" 2>&1 &
  NG_PID=$!; PIDS+=("$NG_PID")
fi
if [ -n "${FLOOR:-}" ]; then
  FL_PORT=$(free_port)
  cc -O2 -o "$W/turn_floor" "$ROOT/bench/tools/turn_floor.c"
  "$W/turn_floor" 127.0.0.1 "$FL_PORT" "${FLOOR_YIELD:-0}" >"$W/floor.log" 2>&1 &
  FL_PID=$!; PIDS+=("$FL_PID")
fi
PAR=${PAR:-1}
MAXPAR=$PAR
LADDER=${LADDER:-10 20 40 80 2x60 3x60 3x80}
for t in $LADDER; do [[ $t == *x* ]] && [ "${t%%x*}" -gt "$MAXPAR" ] && MAXPAR=${t%%x*}; done || true
PEER_PORTS=("$PEER_PORT")
for ((k = 1; k < MAXPAR; k++)); do PEER_PORTS+=("$(free_port)"); done
for pp in "${PEER_PORTS[@]}"; do
  turnutils_peer -L 127.0.0.1 -p "$pp" >/dev/null 2>&1 &
  PIDS+=("$!")
done
sleep 1.5
kill -0 "$CO_PID" && kill -0 "$SB_PID" && { [ -z "$HAS_ALT" ] || kill -0 "$NG_PID"; } && { [ -z "${FLOOR:-}" ] || kill -0 "$FL_PID"; } || { cat "$W/sb.log" "$W/coturn.log" | tail -20; exit 1; }

U="$(( $(date +%s) + 7200 )):bench"
P=$(python3 -c 'import base64,hashlib,hmac,sys; print(base64.b64encode(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha1).digest()).decode())' "$SECRET" "$U")
# A server's CPU time in ns: the sum of its threads' schedstat run times (exact, where
# /proc/PID/stat counts 10 ms ticks; a paced row costs only 20-60 ticks).
ticks() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'; }
HZ=1000000000

echo "# $(date -u '+%F %T UTC') $(uptime | sed 's/.*load/load/')"
echo "server     scenario           flags                                  echoed    loss      msgs/s   server_cpu_s  us/echoed_msg  msgs/s_wall"
run() { # server pid port label flags...
  local server=$1 pid=$2 port=$3 label=$4; shift 4
  local log="$W/$server-$label.log" c0 c1 t0 t1 perf_pid=""
  if [ -n "${ONLY:-}" ] && ! [[ $label =~ $ONLY ]]; then return 0; fi
  if [ -n "${PERF_DIR:-}" ]; then
    mkdir -p "$PERF_DIR"
    # shellcheck disable=SC2086
    perf ${PERF_ARGS:-record -F 999 -g} -p "$pid" -o "$PERF_DIR/$server-$label.data" >/dev/null 2>&1 &
    perf_pid=$!; sleep 0.5
  fi
  local k drops_pid
  python3 "$ROOT/bench/turn/udp_drops.py" 600 >"$log.drops" 2>/dev/null &
  drops_pid=$!
  for attempt in 1 2 3; do
    # A stale allocation from an earlier run on a reused source port answers 437; retry.
    # So does uclient's own channel bind when its two random channel numbers (0x4000-0x4FFF)
    # collide: every server must answer 400 (RFC 8656 §12.2: a number already bound to
    # another peer), and uclient exits; about one session in 4,096.
    c0=$(ticks "$pid"); t0=$(date +%s.%N)
    local ucs=()
    for ((k = 0; k < PAR; k++)); do
      timeout 180 turnutils_uclient -p "$port" -e 127.0.0.1 -r "${PEER_PORTS[$k]}" -u "$U" -w "$P" -X "$@" 127.0.0.1 >"$log.$k" 2>&1 &
      ucs+=("$!")
    done
    wait "${ucs[@]}" 2>/dev/null || true
    grep -qE 'error 437|channel bind: error 400' "$log".[0-9]* || break
    [ "$attempt" = 3 ] || rm -f "$log".[0-9]*
  done
  c1=$(ticks "$pid"); t1=$(date +%s.%N)
  sleep 0.3; kill -TERM "$drops_pid" 2>/dev/null; wait "$drops_pid" 2>/dev/null || true
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true; fi
  local recv loss tt sent lost
  # Sums over the K logs: received, lost, sent; the longest transmit time.
  read -r recv sent lost tt < <(awk '
    /tot_recv_msgs=/ { match($0, /tot_recv_msgs=[0-9]+/); r[FILENAME] = substr($0, RSTART + 14, RLENGTH - 14) }
    /tot_send_msgs=/ { match($0, /tot_send_msgs=[0-9]+/); s[FILENAME] = substr($0, RSTART + 14, RLENGTH - 14) }
    /Total lost packets/ { match($0, /Total lost packets [0-9]+/); l[FILENAME] = substr($0, RSTART + 19, RLENGTH - 19) }
    /Total transmit time is/ { match($0, /Total transmit time is [0-9]+/); t = substr($0, RSTART + 23, RLENGTH - 23); if (t + 0 > tt) tt = t + 0 }
    END { n = 0; for (f in r) { R += r[f]; n++ } for (f in s) S += s[f]; for (f in l) L += l[f]
          if (n) printf "%d %d %d %d\n", R, S, L, tt }' "$log".[0-9]*) || true
  loss=""
  [ -n "${sent:-}" ] && [ "${sent:-0}" -gt 0 ] && loss=$(awk -v l="$lost" -v s="$sent" 'BEGIN { printf "%.6f%%", 100 * l / s }')
  local drops
  drops=$(cat "$log.drops" 2>/dev/null || true)
  [ -n "${recv:-}" ] || { echo "$server $label: uclient failed: $(grep -hi error "$log".[0-9]* | head -2 | tr '\n' ' ')"; return 0; }
  python3 - "$server" "$label" "$*" "${recv:-0}" "${loss:-NA}" "${tt:-0}" "$c0" "$c1" "$HZ" "$t0" "$t1" <<'PY'
import sys
server, label, flags, recv, loss, tt, c0, c1, hz, t0, t1 = sys.argv[1:]
recv = int(recv); cpu = (int(c1) - int(c0)) / int(hz)
wall = float(t1) - float(t0)
rate = recv / float(tt) if float(tt) > 0 else recv / wall
us = cpu * 1e6 / recv if recv else float("nan")
print(f"{server:10} {label:18} {flags:38} {recv:8d} {loss:>8}  {rate:9.0f}  {cpu:12.3f}  {us:13.2f}  {recv / wall:9.0f}")
PY
  # Kernel receive-buffer drops during the run, by the process owning the socket.
  case "$loss" in 0.000000%|"") ;; *) echo "           ${drops:-udp_drops: not sampled}" ;; esac
}
both() { # label flags...  (switchboard first, then coturn, same flags)
  run switchboard "$SB_PID" "$SB_PORT" "$@"
  [ -z "$HAS_ALT" ] || run "${ALT_LABEL:-sb-alt}" "$NG_PID" "$NG_PORT" "$@"
  [ -z "${FLOOR:-}" ] || [[ $1 == tcp* ]] || run floor "$FL_PID" "$FL_PORT" "$@"
  run coturn "$CO_PID" "$CO_PORT" "$@"
}
# Memory per idle allocation.
[ "${ALLOCS:-2000}" = 0 ] || for s in switchboard:$SB_PID:$SB_PORT coturn:$CO_PID:$CO_PORT; do
  IFS=: read -r name pid port <<<"$s"
  echo "$name $(python3 "$ROOT/bench/turn/alloc_mem.py" 127.0.0.1 "$port" "$SECRET" "$pid" "${ALLOCS:-2000}")"
done
N=${N:-20000}
[ -n "${QUICK:-}" ] && N=5000
# CPU per echoed message: flood (-z 0), 10 sessions, 170-byte messages, channels / Send / TCP.
both udp-chan-flood  -m 10 -n "$N" -l 170 -z 0 -c
both udp-send-flood  -m 10 -n "$N" -l 170 -z 0 -c -s
both tcp-chan-flood  -t -m 10 -n "$N" -l 170 -z 0 -c
# RFC 6062 TCP relays: uclient pairs its sessions and Connects each to the other's TCP relay
# address, so every message crosses two relayed TCP connections (no echo peer involved).
both tcp-relay-flood -T -m 10 -n "$N" -l 170 -z 0
# Loss-free ladder: M sessions, each sending a 170-byte message every -z 1 tick (uclient
# manages about one per 3 ms, so M sessions offer ≈ M/3 k msgs/s).
# A LADDER entry KxM runs K uclients of M sessions each at once (offered ≈ K·M/3 k msgs/s).
for t in $LADDER; do
  if [[ $t == *x* ]]; then
    PAR=${t%%x*} both "udp-paced-${t%%x*}x${t##*x}" -m "${t##*x}" -n 3000 -l 170 -z 1 -c
  else
    both "udp-paced-m$t" -m "$t" -n 3000 -l 170 -z 1 -c
  fi
done
# Where Switchboard dropped anything (reasons), for the record.
SB_HTTP=$(grep -ao 'http=[^ ]*' "$W/sb.log" | head -1 | cut -d= -f2)
curl -sf "http://$SB_HTTP/metrics" | grep -E '^switchboard_turn_(dropped|quota|malformed)' || true
