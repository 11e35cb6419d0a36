#!/usr/bin/env bash
# coturn vs Switchboard's TURN, same machine, same session, same load: coturn's own
# turnutils_uclient (with turnutils_peer as the UDP echo peer) with identical flags against
# both. Reports server CPU µs per echoed message (from /proc/PID/stat), echoed msgs/s, loss,
# and memory per idle allocation (alloc_mem.py).
#
# usage: bench/turn/compare.sh [SWITCHBOARD_BIN]     (default: target/release/switchboard)
#        QUICK=1 for a shorter run; N=messages per session (20000)
#        ONLY=REGEX runs only the scenarios whose label matches (e.g. ONLY='flood')
#        ALT='udp_gso = false' also runs a second Switchboard with these extra [turn] lines
#        (same load, same run), labelled ALT_LABEL (default sb-alt)
#        ALLOCS=0 skips the memory measurement
#        PERF_DIR=DIR also records a `perf record -g` profile of each server per scenario
#        (PERF_ARGS overrides the perf subcommand and options, e.g. "stat -e ...")
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SB_BIN=${1:-$ROOT/target/release/switchboard}
[ -x "$SB_BIN" ] || { echo "build first: cargo build --release --bin switchboard"; exit 1; }
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket
while True:
    t=socket.socket(); t.bind(("127.0.0.1",0)); p=t.getsockname()[1]
    u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
    try: u.bind(("127.0.0.1",p)); print(p); break
    except OSError: pass'; }
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
[sfu]
mode = "mesh"
[log]
level = "warn"
TOML
RUST_LOG=warn "$SB_BIN" serve --config "$W/sb.toml" >"$W/sb.log" 2>&1 &
SB_PID=$!; PIDS+=("$SB_PID")
if [ -n "${ALT:-}" ]; then
  NG_PORT=$(free_port)
  sed -e "s/^listen = .*/listen = \"127.0.0.1:$NG_PORT\"/" -e 's/^min_port = .*/min_port = 40960/' \
      -e 's/^max_port = .*/max_port = 49151/' "$W/sb.toml" >"$W/sb-alt.toml"
  python3 - "$W/sb-alt.toml" "$ALT" <<'PY'
import sys
p, extra = sys.argv[1], sys.argv[2].replace("\\n", "\n")
s = open(p).read().replace("[sfu]", extra + "\n[sfu]", 1)
open(p, "w").write(s)
PY
  env ${ALT_ENV:-} RUST_LOG=warn "$SB_BIN" serve --config "$W/sb-alt.toml" >"$W/sb-alt.log" 2>&1 &
  NG_PID=$!; PIDS+=("$NG_PID")
fi
turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >/dev/null 2>&1 &
PIDS+=("$!")
sleep 1.5
kill -0 "$CO_PID" && kill -0 "$SB_PID" && { [ -z "${ALT:-}" ] || kill -0 "$NG_PID"; } || { cat "$W/sb.log" "$W/coturn.log" | tail -20; exit 1; }

U="$(( $(date +%s) + 7200 )):bench"
P=$(python3 -c 'import base64,hashlib,hmac,sys; print(base64.b64encode(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha1).digest()).decode())' "$SECRET" "$U")
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

echo "# $(date -u '+%F %T UTC') $(uptime | sed 's/.*load/load/')"
echo "server     scenario           flags                                  echoed    loss      msgs/s   server_cpu_s  us/echoed_msg"
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
  for attempt in 1 2 3; do
    # A stale allocation from an earlier run on a reused source port answers 437; retry.
    c0=$(ticks "$pid"); t0=$(date +%s.%N)
    timeout 180 turnutils_uclient -p "$port" -e 127.0.0.1 -r "$PEER_PORT" -u "$U" -w "$P" -X "$@" 127.0.0.1 >"$log" 2>&1 || true
    grep -q 'error 437' "$log" || break
  done
  c1=$(ticks "$pid"); t1=$(date +%s.%N)
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true; fi
  local recv loss tt
  recv=$(grep -o 'tot_recv_msgs=[0-9]*' "$log" | tail -1 | cut -d= -f2 || true)
  loss=$(grep -o 'Total lost packets [0-9]* ([0-9.]*%' "$log" | sed 's/.*(//' | tail -1 || true)
  tt=$(grep -o 'Total transmit time is [0-9]*' "$log" | awk '{print $5}' | tail -1 || true)
  [ -n "$recv" ] || { echo "$server $label: uclient failed: $(grep -i error "$log" | head -2 | tr '\n' ' ')"; return 0; }
  python3 - "$server" "$label" "$*" "${recv:-0}" "${loss:-NA}" "${tt:-0}" "$c0" "$c1" "$HZ" "$t0" "$t1" <<'PY'
import sys
server, label, flags, recv, loss, tt, c0, c1, hz, t0, t1 = sys.argv[1:]
recv = int(recv); cpu = (int(c1) - int(c0)) / int(hz)
wall = float(t1) - float(t0)
rate = recv / float(tt) if float(tt) > 0 else recv / wall
us = cpu * 1e6 / recv if recv else float("nan")
print(f"{server:10} {label:18} {flags:38} {recv:8d} {loss:>8}  {rate:9.0f}  {cpu:12.2f}  {us:13.2f}")
PY
}
both() { # label flags...  (switchboard first, then coturn, same flags)
  run switchboard "$SB_PID" "$SB_PORT" "$@"
  [ -z "${ALT:-}" ] || run "${ALT_LABEL:-sb-alt}" "$NG_PID" "$NG_PORT" "$@"
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
# Loss-free ladder: M sessions each sending one 170-byte message per ms (offered ≈ M k msg/s).
for m in 10 20 40 80; do
  both "udp-paced-m$m" -m "$m" -n 3000 -l 170 -z 1 -c
done
# Where Switchboard dropped anything (reasons), for the record.
SB_HTTP=$(grep -ao 'http=[^ ]*' "$W/sb.log" | head -1 | cut -d= -f2)
curl -sf "http://$SB_HTTP/metrics" | grep -E '^switchboard_turn_(dropped|quota|malformed)' || true
