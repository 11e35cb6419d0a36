#!/usr/bin/env bash
# Two headless Chromium pages with iceTransportPolicy 'relay' and iceServers from
# /v1/ice-servers connect through Switchboard's TURN — once over UDP, once over TCP — and
# exchange DataChannel messages; the selected pair must be relay/relay on that transport.
source "$(dirname "$0")/../lib.sh"

cfg="$WORK/sb.toml"
sb_config "$cfg" "switchboard-signing-secret-0123456789abcdef" "turn-chromium-$RANDOM$RANDOM"
sb_start "$cfg"
[ -n "$SB_TURN_UDP" ] || fail "TURN did not start"

metric() { curl -sf "$SB_URL/metrics" | awk -v m="$1" '$1==m {print $2}'; }
for t in udp tcp; do
  before=$(metric 'switchboard_turn_relayed_packets_total{direction="to_peer"}')
  (cd "$E2E_DIR" && timeout 90 node turn/relay_datachannel.mjs "$SB_URL" "$t") >"$WORK/chromium-$t.log" 2>&1 \
    || { tail -30 "$WORK/chromium-$t.log"; fail "Chromium DataChannel through TURN over $t"; }
  after=$(metric 'switchboard_turn_relayed_packets_total{direction="to_peer"}')
  [ $(( ${after:-0} - ${before:-0} )) -ge 50 ] || fail "TURN relayed only $(( ${after:-0} - ${before:-0} )) packets over $t"
  pass "$(grep '^OK' "$WORK/chromium-$t.log") relayed_to_peer=+$(( after - before ))"
done
