#!/usr/bin/env bash
# Issue 6: SFU rooms with real browsers (headless Chromium, fake cameras) through the SDK:
# media forwarded to every subscriber, DataChannel relay (targeted, broadcast, 1 MiB intact),
# late join, leave + session gauge, auto mode (mesh -> SFU on the third join), demo video grid.
source "$(dirname "$0")/../lib.sh"

# Server 1: every room is an SFU room.
cfg="$WORK/sb-sfu.toml"
sb_config "$cfg" "sfu-e2e-secret-0123456789abcdef" "sfu-e2e-turn"
# Browsers reach the SFU directly on loopback; TURN has its own suites.
sed -i 's/^\[turn\]$/[turn]\nenabled = false/' "$cfg"
sed -i 's/^\[sfu\]$/[sfu]\nmode = "sfu"/' "$cfg"
sb_start "$cfg"
SFU_URL=$SB_URL
echo "switchboard (sfu mode) at $SFU_URL"

# Server 2: auto mode, mesh up to two peers.
cfg2="$WORK/sb-auto.toml"
sb_config "$cfg2" "sfu-e2e-secret-0123456789abcdef" "sfu-e2e-turn"
sed -i 's/^\[turn\]$/[turn]\nenabled = false/' "$cfg2"
sed -i 's/^\[sfu\]$/[sfu]\nmode = "auto"\nmesh_max_peers = 2/' "$cfg2"
sb_start "$cfg2"
AUTO_URL=$SB_URL
echo "switchboard (auto mode) at $AUTO_URL"

SFU_URL=$SFU_URL AUTO_URL=$AUTO_URL ARTIFACTS=$ARTIFACTS timeout 170 node "$E2E_DIR/browser/sfu.mjs" \
  || fail "SFU browser suite"
pass "SFU browser suite"
