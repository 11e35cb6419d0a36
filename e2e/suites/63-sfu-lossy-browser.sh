#!/usr/bin/env bash
# SFU retransmission (decision 0047): Chromium receiving through loss. The suite runs in a network namespace
# of its own (unshare -n: loopback only, nothing else sees its rules), where nftables drops
# LOSS % (default 5) of the SFU's UDP datagrams at random as they arrive (the input hook: a
# drop on output would fail the SFU's send, which a real network never does). Two pages publish
# fake cameras in one SFU room; every lost video packet must come back as a retransmission,
# which on the default (own) egress means an RFC 4588 RTX packet built by the SFU. A GSO batch
# crosses the hook as one unit, so a drop can take several packets of a frame at once.
if [ -z "${SB_LOSSY_NETNS:-}" ]; then
  # Making a network namespace needs root (as CI runs); otherwise through sudo.
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  exec $SUDO unshare -n env SB_LOSSY_NETNS=1 SB_BIN="${SB_BIN:-}" SFU_EGRESS="${SFU_EGRESS:-}" \
    LOSS="${LOSS:-}" bash "$(readlink -f "$0")" "$@"
fi
source "$(dirname "$0")/../lib.sh"
LOSS=${LOSS:-5}
# [sfu] egress under test: the default (own) unless SFU_EGRESS says otherwise (62 runs "str0m").
EGRESS=${SFU_EGRESS:-auto}
ip link set lo up

cfg="$WORK/sb-lossy.toml"
sb_config "$cfg" "sfu-e2e-secret-0123456789abcdef" "sfu-e2e-turn"
sed -i 's/^\[turn\]$/[turn]\nenabled = false/' "$cfg"
sed -i "s/^\\[sfu\\]\$/[sfu]\\nmode = \"sfu\"\\negress = \"$EGRESS\"/" "$cfg"
sb_start "$cfg"
port=$(grep '^switchboard listening' "$SB_LOG" | sed -n 's/.* sfu_udp=[^ ]*:\([0-9]*\).*/\1/p')
[ -n "$port" ] || fail "no sfu_udp in the listening line"
nft -f - <<NFT
table inet sb_loss {
  chain in {
    type filter hook input priority 0;
    udp sport $port counter
    udp sport $port numgen random mod 100 < $LOSS counter drop
  }
}
NFT
grep "^switchboard listening" "$SB_LOG"
echo "switchboard (sfu mode, egress $EGRESS) at $SB_URL; dropping $LOSS % of UDP from port $port"

ok=0
SFU_URL=$SB_URL LOSS=$LOSS timeout 120 node "$E2E_DIR/browser/sfu-lossy.mjs" || ok=$?
nft list table inet sb_loss
dropped=$(nft list table inet sb_loss | sed -n 's/.*counter packets \([0-9]*\).* drop$/\1/p')
[ "$ok" = 0 ] || fail "SFU lossy browser suite (nftables dropped ${dropped:-0} datagrams)"
metrics=$(curl -fsS "$SB_URL/metrics")
resent=$(sed -n 's/^switchboard_sfu_egress_retransmissions_total \([0-9]*\)$/\1/p' <<<"$metrics")
own=$(sed -n 's/^switchboard_sfu_egress_packets_total \([0-9]*\)$/\1/p' <<<"$metrics")
echo "nftables dropped ${dropped:-0} datagrams; own egress sent ${own:-0} packets and ${resent:-0} retransmissions"
[ "${dropped:-0}" -ge 20 ] || fail "only ${dropped:-0} datagrams dropped"
if [ "$EGRESS" != str0m ]; then
  [ "${resent:-0}" -ge 15 ] || fail "the own egress resent only ${resent:-0} packets"
fi
pass "SFU lossy browser suite"
