#!/usr/bin/env bash
# Signaling with real browsers (SDK mesh, 1 MiB DataChannel message, 3-page mesh, socket cut +
# resume, the reference WebRTCClient/DataChannelClient without the SDK) and the demo page
# screenshot.
source "$(dirname "$0")/../lib.sh"

cfg="$WORK/sb.toml"
sb_config "$cfg" "signal-e2e-secret-0123456789abcdef" "signal-e2e-turn"
# Peers meet directly on loopback; TURN has its own suites.
sed -i 's/^\[turn\]$/[turn]\nenabled = false/' "$cfg"
sb_start "$cfg"
echo "switchboard at $SB_URL"
SB_URL=$SB_URL ARTIFACTS=$ARTIFACTS timeout 170 node "$E2E_DIR/browser/signal.mjs" || fail "signal browser suite"
pass "signal browser suite"
