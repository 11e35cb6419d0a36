#!/usr/bin/env bash
# Hostile-load soak: one release Switchboard, on its default limits, under mixed hostile and
# normal load for a bounded time; shows whether normal users keep working while the attack runs.
#
# usage: bench/soak.sh [SWITCHBOARD_BIN]        (default: target/release/switchboard; not rebuilt)
#   env: SECONDS_RUN (60) run length, INTERVAL (5) seconds between progress lines,
#        NORMAL_RATE (10) normal requests per second per kind, LOGIN_RATE (2) normal logins per
#        second, KEEP=1 keeps the work directory (config, server log, JSON reports),
#        ATTACKS ("signal login turn gateway") the attackers to run; ATTACKS= runs the normal
#        load alone (a baseline for the same machine); PRIOR_LOGIN=0 skips the normal user's
#        one login before the attack (it then logs in from an address the server has not seen).
#   Attack sizes (bench/soak/soak.py reads them): SOAK_WS_IDLE (400), SOAK_WS_FLOOD (40),
#   SOAK_WS_BIG (10), SOAK_SLOWLORIS (300), SOAK_LOGIN_CONC (64), SOAK_TURN_CONC (32),
#   SOAK_GW_IDS (32) x SOAK_GW_PER_ID (12).
#
# The server runs from a temporary config on free loopback ports (HTTP, TURN UDP+TCP; SFU off,
# `[sfu] mode = "mesh"`) with only what it needs to run set: signing key, TURN secret and realm,
# ports, a users database holding one user (added with `switchboard user add`) and one API key
# (the app's backend, which mints tickets for everybody, attackers included). Every limit is the
# default. Load generators are bench/soak/soak.py (python3 standard library only), all at once
# for the whole run, each bounded:
#   hostile (run at nice 10 so that on a small machine the server, not the load generators, is
#   what the normal client measures):
#     signal   400 idle joined WebSockets, 40 flooding messages (expect rate_limited, close 4029),
#              10 pairs sending 60 KB offers at 50/s to a receiver that never reads, 300
#              half-open requests (slowloris: a request head that never ends)
#     login    64 concurrent failed logins (the real user with wrong passwords and unknown users)
#              from 2,000 loopback source addresses
#     turn     32 concurrent Allocate floods with one TURN REST credential, allocations held
#     gateway  32 identities x 12 streams opened, read to the first chunk, abandoned (reset)
#   normal (own source address 127.0.0.2, open loop, every request timed, 5 s timeout):
#     login (right password, expect 200), POST /v1/token with the API key, GET /v1/ice-servers
#     with the ticket, a signaling offer/answer round trip between two peers in one room, a TURN
#     Allocate + Refresh(0) with its own credential, a gateway stream of 4 x 64-byte chunks (time
#     to first chunk reported too).
# Every INTERVAL: elapsed, server RSS, open fds, server CPU % over the interval (utime+stime;
# 200 % = both cores), 1-min load average, normal success % / p99 so far per kind. At the end: a
# table per normal kind, the attackers' outcome counts, a few server counters, and a verdict
# against success > 99.9 % and p99 < 10 ms per normal kind. A login costs one Argon2id hash
# (tens of ms here), so for login the target is success only; its p99 is reported, not held to
# 10 ms.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SB_BIN=${1:-$ROOT/target/release/switchboard}
[ -x "$SB_BIN" ] || { echo "no binary at $SB_BIN: cargo build --release --bin switchboard" >&2; exit 1; }
SECONDS_RUN=${SECONDS_RUN:-60}
INTERVAL=${INTERVAL:-5}
W=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

. "$ROOT/bench/lib.sh"
HTTP_PORT=$(free_port)
TURN_PORT=$(free_port)
TURN_SECRET="soak-turn-$RANDOM$RANDOM"
USER_NAME=alice
USER_PASS="soak-pass-$RANDOM$RANDOM"
cat >"$W/sb.toml" <<TOML
[http]
bind = "127.0.0.1:$HTTP_PORT"
[auth]
database = "$W/users.db"
[[auth.keys]]
kid = "k1"
secret = "soak-signing-secret-0123456789abcdef$RANDOM"
[turn]
listen = "127.0.0.1:$TURN_PORT"
realm = "soak"
static_auth_secret = "$TURN_SECRET"
[sfu]
mode = "mesh"
TOML
export SWITCHBOARD_CONFIG="$W/sb.toml"
printf '%s\n' "$USER_PASS" | "$SB_BIN" user add "$USER_NAME" -c "$W/sb.toml" >/dev/null
APIKEY=$("$SB_BIN" apikey create --name soak-app -c "$W/sb.toml" 2>/dev/null | tail -1)

"$SB_BIN" serve -c "$W/sb.toml" >"$W/sb.log" 2>&1 &
SB_PID=$!; PIDS+=("$SB_PID")
for _ in $(seq 1 100); do grep -q '^switchboard listening' "$W/sb.log" && break; sleep 0.1; done
grep -q '^switchboard listening' "$W/sb.log" || { tail -20 "$W/sb.log"; exit 1; }

export SOAK_HOST=127.0.0.1 SOAK_HTTP_PORT=$HTTP_PORT SOAK_TURN_PORT=$TURN_PORT SOAK_SECRET=$TURN_SECRET \
  SOAK_APIKEY=$APIKEY SOAK_USER=$USER_NAME SOAK_PASS=$USER_PASS SOAK_PID=$SB_PID \
  SOAK_SECONDS=$SECONDS_RUN SOAK_INTERVAL=$INTERVAL SOAK_DIR=$W \
  SOAK_NORMAL_RATE=${NORMAL_RATE:-10} SOAK_LOGIN_RATE=${LOGIN_RATE:-2}
echo "# soak $(date -u '+%F %T UTC'), $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $SB_BIN ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')), ${SECONDS_RUN}s, defaults except ports/keys/users"
RSS0=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$SB_PID/status")
echo "# server idle before the run: RSS ${RSS0} MiB, $(find "/proc/$SB_PID/fd" -mindepth 1 | wc -l) fds"
# Host-wide TCP counters (not only this server's listener): SYNs dropped for a full accept
# queue show up as one-second SYN retransmits in the normal client's latencies.
tcpx() { awk '/^TcpExt:/ { if (!h) { split($0, k); h = 1 } else { for (i = 2; i <= NF; i++) if (k[i] ~ /^(ListenOverflows|ListenDrops|SyncookiesSent)$/) printf "%s=%s ", k[i], $i } }' /proc/net/netstat; }
TCP0=$(tcpx)
# The normal user has used the app before: one login from its address before the attack starts
# (an address a login succeeded from keeps its own share of the server-wide login budget;
# PRIOR_LOGIN=0 skips this, for a user on an address the server has not seen).
if [ "${PRIOR_LOGIN:-1}" != 0 ]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.2 -H 'content-type: application/json' \
    -d "{\"username\":\"$USER_NAME\",\"password\":\"$USER_PASS\"}" "http://127.0.0.1:$HTTP_PORT/v1/login")
  echo "# prior login of the normal user from 127.0.0.2: HTTP $code"
fi
ATTACKERS=()
ATTACKS=${ATTACKS-signal login turn gateway}
echo "# attackers: ${ATTACKS:-none (baseline)}"
for a in $ATTACKS; do
  nice -n 10 python3 "$ROOT/bench/soak/soak.py" "attack-$a" 2>"$W/attack-$a.err" &
  ATTACKERS+=("$!"); PIDS+=("$!")
done
python3 "$ROOT/bench/soak/soak.py" normal 2>"$W/normal.err" || { echo "normal client failed:"; tail -5 "$W/normal.err"; }
for p in "${ATTACKERS[@]:-}"; do [ -n "$p" ] || continue; wait "$p" || echo "an attacker exited with $?: $(tail -2 "$W"/attack-*.err)"; done
kill -0 "$SB_PID" 2>/dev/null || { echo "SERVER DIED"; tail -20 "$W/sb.log"; }
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# host TCP counters before: $TCP0"
echo "#                    after: $(tcpx)"
SOAK_ATTACKS=$ATTACKS python3 "$ROOT/bench/soak/soak.py" summary
echo "server counters (/metrics, nonzero):"
python3 - "$HTTP_PORT" <<'PY' || true
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
want = re.compile(r"^switchboard_(limit_rejections_total|logins_total|signal_closes_total|signal_errors_total|"
                  r"http_connections_refused_total|turn_quota_rejections_total|turn_allocations |"
                  r"turn_auth_failures_total|stream_\w+_total)")
for line in text.splitlines():
    if want.match(line) and not line.endswith(" 0"):
        print("  " + line)
PY
echo "server log: $(wc -l <"$W/sb.log") lines, $(grep -c ' WARN ' "$W/sb.log" || true) WARN, $(grep -c ' ERROR ' "$W/sb.log" || true) ERROR"
