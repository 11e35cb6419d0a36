#!/usr/bin/env bash
# Issue 6: a second WebRTC stack through the SFU — aiortc publishes and Chromium decodes it,
# Chromium publishes and aiortc decodes it (same SFU room, both directions at once).
source "$(dirname "$0")/../lib.sh"

cfg="$WORK/sb.toml"
sb_config "$cfg" "sfu-aiortc-e2e-secret-0123456789abcdef" "sfu-aiortc-turn"
sed -i 's/^\[turn\]$/[turn]\nenabled = false/; s/^\[sfu\]$/[sfu]\nmode = "sfu"/' "$cfg"
sb_start "$cfg"
echo "switchboard at $SB_URL"
SB_URL=$SB_URL PY=$PY timeout 120 node "$E2E_DIR/browser/sfu-aiortc.mjs" || fail "sfu aiortc interop"
curl -fsS "$SB_URL/metrics" | grep -E '^switchboard_sfu_(sessions|packets_forwarded_total|plis_total|nacks_total)' || true
pass "sfu aiortc interop"
