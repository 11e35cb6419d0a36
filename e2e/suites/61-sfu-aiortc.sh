#!/usr/bin/env bash
# A second WebRTC stack through the SFU — aiortc publishes and Chromium decodes it,
# Chromium publishes and aiortc decodes it (same SFU room, both directions at once).
source "$(dirname "$0")/../lib.sh"
# [sfu] egress under test (decision 0047): the default ("auto", which is "own" here) unless
# SFU_EGRESS says otherwise; 62-sfu-str0m-egress.sh runs these suites again with "str0m".
EGRESS=${SFU_EGRESS:-auto}

cfg="$WORK/sb.toml"
sb_config "$cfg" "sfu-aiortc-e2e-secret-0123456789abcdef" "sfu-aiortc-turn"
sed -i 's/^\[turn\]$/[turn]\nenabled = false/; s/^\[sfu\]$/[sfu]\nmode = "sfu"\negress = "'"$EGRESS"'"/' "$cfg"
sb_start "$cfg"
echo "switchboard at $SB_URL"
SB_URL=$SB_URL PY=$PY timeout 120 node "$E2E_DIR/browser/sfu-aiortc.mjs" || fail "sfu aiortc interop"
metrics=$(curl -fsS "$SB_URL/metrics")
grep -E '^switchboard_sfu_(sessions|packets_forwarded_total|plis_total|nacks_total|egress_[a-z]+_total)' <<<"$metrics" || true
if [ "$EGRESS" != str0m ]; then
  # The media really took the own path (and str0m's reports were rewritten for it).
  own=$(sed -n 's/^switchboard_sfu_egress_packets_total \([0-9]*\)$/\1/p' <<<"$metrics")
  [ "${own:-0}" -gt 50 ] || fail "own egress sent ${own:-0} packets"
fi
pass "sfu aiortc interop"
