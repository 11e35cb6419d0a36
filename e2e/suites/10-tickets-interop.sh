#!/usr/bin/env bash
# Ticket interop: PyJWT both ways, and coturn accepting /v1/ice-servers credentials.
source "$(dirname "$0")/../lib.sh"

DJANGO_SECRET="django-shared-secret-rotate-me-0123456789"
SB_SECRET="switchboard-signing-secret-0123456789abcdef"
TURN_SECRET="shared-with-coturn-$(date +%s)"
COTURN_PORT=$(free_port)
PEER_PORT=$(free_port)

cfg="$WORK/sb.toml"
sb_config "$cfg" "$SB_SECRET" "$TURN_SECRET"
# The Django app's secret as a second key (no kid in its tokens), its issuer accepted, and the
# advertised TURN URIs pointing at the coturn started below.
python3 - "$cfg" "$DJANGO_SECRET" "$COTURN_PORT" <<'PY'
import sys
p, secret, port = sys.argv[1], sys.argv[2], sys.argv[3]
s = open(p).read()
s = s.replace('[turn]', f'[[auth.keys]]\nkid = "django"\nsecret = "{secret}"\n\n[turn]', 1)
s = s.replace('allow_anonymous_tokens = true', 'allow_anonymous_tokens = true\naccepted_issuers = ["your-service"]', 1)
uris = f'uris = ["stun:127.0.0.1:{port}", "turn:127.0.0.1:{port}?transport=udp", "turn:127.0.0.1:{port}?transport=tcp"]'
s = s.replace('[turn]\n', '[turn]\nenabled = false\n' + uris + '\n', 1)
open(p, "w").write(s)
PY
sb_start "$cfg"
echo "switchboard at $SB_URL"

SB_URL=$SB_URL DJANGO_SECRET=$DJANGO_SECRET SB_SECRET=$SB_SECRET "$PY" "$E2E_DIR/interop/pyjwt_interop.py" \
  || fail "PyJWT interop"
pass "PyJWT interop both ways"

# CLI-minted token verified by PyJWT too.
TOKEN=$(SWITCHBOARD_CONFIG="$cfg" "$SB_BIN" token create --identity cli-user --room r9 --scope webrtc --ttl 2m)
"$PY" -c "
import jwt,sys
c = jwt.decode(sys.argv[1], sys.argv[2], algorithms=['HS256'], audience='realtime-clients', issuer='switchboard')
assert c['sub']=='cli-user' and c['room']=='r9' and c['scope']==['webrtc'] and c['exp']-c['iat']==120, c
" "$TOKEN" "$SB_SECRET" || fail "CLI token not verified by PyJWT"
pass "switchboard token create → PyJWT"

# coturn with the same static auth secret accepts credentials from /v1/ice-servers.
turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$COTURN_PORT" \
  --min-port=40000 --max-port=40999 --use-auth-secret --static-auth-secret="$TURN_SECRET" \
  --realm=switchboard --no-tls --no-dtls --no-cli --allow-loopback-peers --fingerprint \
  --userdb="$WORK/turndb" --pidfile="$WORK/turn.pid" --log-file=stdout --simple-log \
  >"$WORK/coturn.log" 2>&1 &
track_pid $!
turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >"$WORK/peer.log" 2>&1 &
track_pid $!
sleep 0.7

ICE=$(curl -sf -H "Authorization: Bearer $(SWITCHBOARD_CONFIG="$cfg" "$SB_BIN" token create --identity turn-user)" "$SB_URL/v1/ice-servers")
U=$(python3 -c 'import json,sys; s=[x for x in json.loads(sys.argv[1])["iceServers"] if "username" in x][0]; print(s["username"])' "$ICE")
P=$(python3 -c 'import json,sys; s=[x for x in json.loads(sys.argv[1])["iceServers"] if "username" in x][0]; print(s["credential"])' "$ICE")
[[ "$U" == *":turn-user" ]] || fail "unexpected TURN username $U"

timeout 30 turnutils_uclient -p "$COTURN_PORT" -e 127.0.0.1 -r "$PEER_PORT" -u "$U" -w "$P" \
  -m 2 -n 20 -l 120 -z 5 -X 127.0.0.1 >"$WORK/uclient.log" 2>&1 || { cat "$WORK/uclient.log" | tail -20; fail "uclient with ice-servers credentials"; }
grep -q 'Total lost packets 0 (0.000000%)' "$WORK/uclient.log" || { tail -20 "$WORK/uclient.log"; fail "coturn relay lost packets"; }
recv=$(grep -o 'tot_recv_msgs=[0-9]*' "$WORK/uclient.log" | tail -1 | cut -d= -f2)
[ "${recv:-0}" -ge 40 ] || { tail -20 "$WORK/uclient.log"; fail "coturn relayed only ${recv:-0} messages"; }
pass "coturn accepted /v1/ice-servers credentials and relayed $recv messages"

# A wrong credential is refused by coturn.
if timeout 15 turnutils_uclient -p "$COTURN_PORT" -e 127.0.0.1 -r "$PEER_PORT" -u "$U" -w "wrong$P" \
  -m 1 -n 2 -l 50 -X 127.0.0.1 >"$WORK/uclient-bad.log" 2>&1 && grep -q 'Total lost packets 0' "$WORK/uclient-bad.log"; then
  fail "coturn accepted a wrong credential"
fi
pass "coturn refused a wrong credential"
