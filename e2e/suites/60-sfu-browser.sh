#!/usr/bin/env bash
# SFU rooms with real browsers (headless Chromium, fake cameras) through the SDK:
# media forwarded to every subscriber, DataChannel relay (targeted, broadcast, 1 MiB intact),
# late join, leave + session gauge, auto mode (mesh -> SFU on the third join), demo video grid.
source "$(dirname "$0")/../lib.sh"
# [sfu] egress under test (decision 0047): the default ("auto", which is "own" here) unless
# SFU_EGRESS says otherwise; 62-sfu-str0m-egress.sh runs these suites again with "str0m".
EGRESS=${SFU_EGRESS:-auto}

# Server 1: every room is an SFU room.
cfg="$WORK/sb-sfu.toml"
sb_config "$cfg" "sfu-e2e-secret-0123456789abcdef" "sfu-e2e-turn"
# Browsers reach the SFU directly on loopback; TURN has its own suites.
sed -i 's/^\[turn\]$/[turn]\nenabled = false/' "$cfg"
sed -i "s/^\\[sfu\\]\$/[sfu]\\nmode = \"sfu\"\\negress = \"$EGRESS\"/" "$cfg"
sb_start "$cfg"
SFU_URL=$SB_URL
echo "switchboard (sfu mode, egress $EGRESS) at $SFU_URL"

# Server 2: auto mode, mesh up to two peers.
cfg2="$WORK/sb-auto.toml"
sb_config "$cfg2" "sfu-e2e-secret-0123456789abcdef" "sfu-e2e-turn"
sed -i 's/^\[turn\]$/[turn]\nenabled = false/' "$cfg2"
sed -i "s/^\\[sfu\\]\$/[sfu]\\nmode = \"auto\"\\nmesh_max_peers = 2\\negress = \"$EGRESS\"/" "$cfg2"
sb_start "$cfg2"
AUTO_URL=$SB_URL
echo "switchboard (auto mode) at $AUTO_URL"

SFU_URL=$SFU_URL AUTO_URL=$AUTO_URL ARTIFACTS=$ARTIFACTS timeout 170 node "$E2E_DIR/browser/sfu.mjs" \
  || fail "SFU browser suite"
if [ "$EGRESS" != str0m ]; then
  # The browsers' media really took the own path.
  metrics=$(curl -fsS "$SFU_URL/metrics")
  own=$(sed -n 's/^switchboard_sfu_egress_packets_total \([0-9]*\)$/\1/p' <<<"$metrics")
  reports=$(sed -n 's/^switchboard_sfu_egress_reports_total \([0-9]*\)$/\1/p' <<<"$metrics")
  echo "own egress: $own packets, $reports sender reports rewritten"
  [ "${own:-0}" -gt 1000 ] || fail "own egress sent ${own:-0} packets"
  [ "${reports:-0}" -gt 0 ] || fail "no sender report rewritten"
fi
pass "SFU browser suite"
