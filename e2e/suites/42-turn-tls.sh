#!/usr/bin/env bash
# TURN over TLS (rustls) with a certificate from config, and reload on SIGHUP:
# an independent client (Python ssl + a stdlib TURN client) allocates over TLS, the cert
# files are replaced, SIGHUP is sent, and new connections see the new certificate. Then
# coturn's uclient relays over RFC 6062 TCP relays with every connection in TLS.
source "$(dirname "$0")/../lib.sh"

mkcert() { # CN → $WORK/cert.pem + $WORK/key.pem (self-signed, also used as the CA file)
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" \
    -keyout "$WORK/key.pem.new" -out "$WORK/cert.pem.new" >/dev/null 2>&1 || fail "openssl"
  mv "$WORK/key.pem.new" "$WORK/key.pem"; mv "$WORK/cert.pem.new" "$WORK/cert.pem"
  cp "$WORK/cert.pem" "$WORK/ca-$1.pem"
}
mkcert turn-one.test

TURN_SECRET="turn-tls-$RANDOM$RANDOM"
cfg="$WORK/sb.toml"
sb_config "$cfg" "switchboard-signing-secret-0123456789abcdef" "$TURN_SECRET"
python3 - "$cfg" "$WORK" <<'PY'
import sys
p, w = sys.argv[1], sys.argv[2]
s = open(p).read().replace('[turn]\n', f'[turn]\ntls_listen = "127.0.0.1:0"\ncert = "{w}/cert.pem"\npkey = "{w}/key.pem"\n', 1)
open(p, "w").write(s)
PY
sb_start "$cfg"
[ -n "$SB_TURN_TLS" ] || fail "listening line has no turn_tls"
TLS_PORT=${SB_TURN_TLS##*:}

TOKEN=$(curl -sf -XPOST "$SB_URL/v1/token" -d '{"room":"tls"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
ICE=$(curl -sf -H "Authorization: Bearer $TOKEN" "$SB_URL/v1/ice-servers")
[[ "$ICE" == *"turns:127.0.0.1:$TLS_PORT?transport=tcp"* ]] || fail "ice-servers lacks the turns: URI: $ICE"
read -r U P < <(python3 -c 'import json,sys; s=[x for x in json.loads(sys.argv[1])["iceServers"] if "username" in x][0]; print(s["username"], s["credential"])' "$ICE")
pass "/v1/ice-servers advertises turns: on $TLS_PORT"

out=$("$PY" "$E2E_DIR/turn/turn_probe.py" tls 127.0.0.1 "$TLS_PORT" "$U" "$P" "$WORK/ca-turn-one.test.pem") || fail "TLS allocate: $out"
[[ "$out" == *"cn=turn-one.test allocate=ok"* ]] || fail "unexpected: $out"
pass "Allocate over TLS ($out)"

mkcert turn-two.test
kill -HUP "$SB_PID"
for _ in $(seq 1 50); do grep -q "certificate reloaded" "$SB_LOG" && break; sleep 0.1; done
grep -q "certificate reloaded" "$SB_LOG" || { cat "$SB_LOG"; fail "no reload logged after SIGHUP"; }
kill -0 "$SB_PID" || fail "switchboard died on SIGHUP"
out=$("$PY" "$E2E_DIR/turn/turn_probe.py" tls 127.0.0.1 "$TLS_PORT" "$U" "$P" "$WORK/ca-turn-two.test.pem") || fail "TLS after reload: $out"
[[ "$out" == *"cn=turn-two.test allocate=ok"* ]] || fail "unexpected after reload: $out"
pass "SIGHUP reloaded the certificate ($out)"

# RFC 6062 over TLS: coturn's uclient pairs TCP-relay allocations made over TLS control
# connections, and its ConnectionBind data connections are TLS too.
log="$WORK/uclient-tls-tcp-relay.log"
timeout 60 turnutils_uclient -p "$TLS_PORT" -S -T -u "$U" -w "$P" -m 3 -n 100 -l 170 -z 2 127.0.0.1 \
  >"$log" 2>&1 || { tail -20 "$log"; fail "uclient -S -T exited non-zero"; }
grep -q 'Total lost packets 0 (0.000000%)' "$log" || { tail -20 "$log"; fail "uclient -S -T lost packets"; }
recv=$(grep -o 'tot_recv_msgs=[0-9]*' "$log" | tail -1 | cut -d= -f2)
[ "${recv:-0}" -ge 300 ] || { tail -20 "$log"; fail "uclient -S -T relayed only ${recv:-0}"; }
pass "uclient over TLS with RFC 6062 TCP relays: $recv messages, zero loss"
