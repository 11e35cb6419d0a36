#!/usr/bin/env bash
# coturn's own test client (turnutils_uclient, with turnutils_peer as the UDP echo
# peer) against Switchboard's embedded TURN with REST credentials from /v1/ice-servers:
# UDP and TCP, channels and Send indications, RFC 6062 TCP relays (uclient -T: pairs of
# clients Connect to each other's TCP relay address), zero loss at a paced load; wrong password and
# expired username refused; internal peers denied (403) by default, IPv4-mapped included.
source "$(dirname "$0")/../lib.sh"

SB_SECRET="switchboard-signing-secret-0123456789abcdef"
TURN_SECRET="turn-e2e-$(date +%s)-$RANDOM"
PEER_PORT=$(free_port)

HAVE_V6=0
python3 -c 'import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("::1", 0))' 2>/dev/null && HAVE_V6=1
cfg="$WORK/sb.toml"
sb_config "$cfg" "$SB_SECRET" "$TURN_SECRET"
[ "$HAVE_V6" = 1 ] && sed -i 's/^\[turn\]$/[turn]\nrelay_ip6 = "::1"/' "$cfg"
sb_start "$cfg"
[ -n "$SB_TURN_UDP" ] && [ -n "$SB_TURN_TCP" ] || fail "listening line lacks turn_udp/turn_tcp"
UDP_PORT=${SB_TURN_UDP##*:}
TCP_PORT=${SB_TURN_TCP##*:}
echo "switchboard at $SB_URL turn udp=$SB_TURN_UDP tcp=$SB_TURN_TCP"

turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >"$WORK/peer.log" 2>&1 &
track_pid $!
sleep 0.3

TOKEN=$(curl -sf -XPOST "$SB_URL/v1/token" -d '{"room":"turn"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
ICE=$(curl -sf -H "Authorization: Bearer $TOKEN" "$SB_URL/v1/ice-servers")
read -r U P URLS < <(python3 -c '
import json,sys
d = json.loads(sys.argv[1])
s = [x for x in d["iceServers"] if "username" in x][0]
print(s["username"], s["credential"], ",".join(s["urls"]))' "$ICE")
[[ "$URLS" == *"turn:127.0.0.1:$UDP_PORT?transport=udp"* ]] || fail "ice-servers does not advertise the bound UDP port: $URLS"
[[ "$URLS" == *"turn:127.0.0.1:$TCP_PORT?transport=tcp"* ]] || fail "ice-servers does not advertise the bound TCP port: $URLS"
pass "/v1/ice-servers advertises the real TURN ports ($URLS)"

metric() { curl -sf "$SB_URL/metrics" | awk -v m="$1" '$1==m {print $2}'; }

# uclient: -m sessions, -n messages each, -l bytes, -z ms pacing; every message must echo.
run_uclient() {
  local label=$1 port=$2; shift 2
  local log="$WORK/uclient-$label.log"
  timeout 60 turnutils_uclient -p "$port" -e 127.0.0.1 -r "$PEER_PORT" -u "$U" -w "$P" \
    -X -m 5 -n 200 -l 170 -z 2 "$@" 127.0.0.1 >"$log" 2>&1 \
    || { tail -20 "$log"; fail "uclient $label exited non-zero"; }
  grep -q 'Total lost packets 0 (0.000000%)' "$log" || { tail -20 "$log"; fail "uclient $label lost packets"; }
  local recv
  recv=$(grep -o 'tot_recv_msgs=[0-9]*' "$log" | tail -1 | cut -d= -f2)
  [ "${recv:-0}" -ge 1000 ] || { tail -20 "$log"; fail "uclient $label echoed only ${recv:-0}/1000"; }
  pass "uclient $label: $recv/1000 messages echoed through Switchboard, zero loss"
}
before=$(metric 'switchboard_turn_relayed_packets_total{direction="to_peer"}')
run_uclient udp-channels "$UDP_PORT"
run_uclient udp-send "$UDP_PORT" -s
run_uclient tcp-channels "$TCP_PORT" -t
run_uclient tcp-send "$TCP_PORT" -t -s
# RFC 6062: TCP relay allocations. uclient pairs its sessions and Connects each to the other's
# relay address (Connect + ConnectionBind on one side, ConnectionAttempt + ConnectionBind on
# the other); every message crosses two TCP relays.
run_uclient tcp-relay-rfc6062 "$TCP_PORT" -T
peer_tcp=$(metric switchboard_turn_peer_tcp_connections)
[ "${peer_tcp:-1}" = 0 ] || fail "RFC 6062 peer connections left open: ${peer_tcp:-?}"
pass "RFC 6062 peer connections all closed after the run"
if [ "$HAVE_V6" = 1 ]; then
  # RFC 6156: IPv4 client, IPv6 relay (-x), IPv6 echo peer on ::1.
  PEER6_PORT=$(free_port)
  turnutils_peer -L ::1 -p "$PEER6_PORT" >"$WORK/peer6.log" 2>&1 &
  track_pid $!
  sleep 0.3
  timeout 60 turnutils_uclient -p "$UDP_PORT" -e ::1 -r "$PEER6_PORT" -u "$U" -w "$P" \
    -x -m 2 -n 100 -l 170 -z 2 127.0.0.1 >"$WORK/uclient-v6.log" 2>&1 || { tail -20 "$WORK/uclient-v6.log"; fail "uclient IPv6 relay"; }
  grep -q 'Total lost packets 0 (0.000000%)' "$WORK/uclient-v6.log" || { tail -20 "$WORK/uclient-v6.log"; fail "IPv6 relay lost packets"; }
  pass "uclient IPv6 relay (RFC 6156) to [::1]: zero loss"
else
  echo "SKIP: no IPv6 loopback on this machine; IPv6 relay not exercised"
fi
after=$(metric 'switchboard_turn_relayed_packets_total{direction="to_peer"}')
[ $(( ${after:-0} - ${before:-0} )) -ge 4000 ] || fail "relayed_packets_total grew by only $(( ${after:-0} - ${before:-0} ))"
created=$(metric switchboard_turn_allocations_created_total)
[ "${created:-0}" -ge 20 ] || fail "allocations_created_total=${created:-0}"
pass "metrics: relayed packets +$(( after - before )), allocations created $created"

# Wrong password: refused, and counted.
if timeout 20 turnutils_uclient -p "$UDP_PORT" -e 127.0.0.1 -r "$PEER_PORT" -u "$U" -w "wrong$P" \
  -X -m 1 -n 2 -l 50 127.0.0.1 >"$WORK/uclient-bad.log" 2>&1 && grep -q 'Total lost packets 0' "$WORK/uclient-bad.log"; then
  fail "a wrong password was accepted"
fi
bad=$(metric 'switchboard_turn_auth_failures_total{reason="bad_integrity"}')
[ "${bad:-0}" -ge 1 ] || fail "bad_integrity failures not counted"
pass "wrong password refused (auth_failures{bad_integrity}=$bad)"

# Expired REST username (correctly signed): refused with 401, counted as expired.
"$PY" "$E2E_DIR/turn/turn_probe.py" expired 127.0.0.1 "$UDP_PORT" "$TURN_SECRET" || fail "expired username not refused"
EXP_U="$(( $(date +%s) - 30 )):late-uclient"
EXP_P=$(python3 -c 'import base64,hashlib,hmac,sys; print(base64.b64encode(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha1).digest()).decode())' "$TURN_SECRET" "$EXP_U")
if timeout 20 turnutils_uclient -p "$UDP_PORT" -e 127.0.0.1 -r "$PEER_PORT" -u "$EXP_U" -w "$EXP_P" \
  -X -m 1 -n 2 -l 50 127.0.0.1 >"$WORK/uclient-exp.log" 2>&1 && grep -q 'Total lost packets 0' "$WORK/uclient-exp.log"; then
  fail "an expired username was accepted"
fi
expired=$(metric 'switchboard_turn_auth_failures_total{reason="expired"}')
[ "${expired:-0}" -ge 2 ] || fail "expired failures not counted (${expired:-0})"
pass "expired REST username refused (auth_failures{expired}=$expired)"

# Default policy (no allow_loopback_peers): loopback, RFC 1918, metadata and IPv4-mapped → 403.
cfg2="$WORK/sb-default-policy.toml"
sb_config "$cfg2" "$SB_SECRET" "$TURN_SECRET"
sed -i 's/^allow_loopback_peers = true/allow_loopback_peers = false/' "$cfg2"
sb_start "$cfg2"
UDP2=${SB_TURN_UDP##*:}
"$PY" "$E2E_DIR/turn/turn_probe.py" deny 127.0.0.1 "$UDP2" "$U" "$P" || fail "an internal peer was not refused with 403"
denied=$(metric switchboard_turn_denied_peers_total)
[ "${denied:-0}" -ge 18 ] || fail "denied_peers_total=${denied:-0}, expected >= 18"
pass "internal peers denied by default (denied_peers_total=$denied)"
# And coturn's client cannot relay to the loopback echo peer through it.
if timeout 20 turnutils_uclient -p "$UDP2" -e 127.0.0.1 -r "$PEER_PORT" -u "$U" -w "$P" \
  -X -m 1 -n 5 -l 50 127.0.0.1 >"$WORK/uclient-deny.log" 2>&1 && grep -q 'Total lost packets 0' "$WORK/uclient-deny.log"; then
  fail "relay to a loopback peer worked under the default policy"
fi
pass "uclient cannot reach a loopback peer under the default policy"
