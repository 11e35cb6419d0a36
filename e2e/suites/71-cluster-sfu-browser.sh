#!/usr/bin/env bash
# An SFU room across a three-node cluster with real browsers (headless Chromium, fake cameras,
# the SDK served by the nodes): a page on node A publishes its camera and creates the room, so
# node A's SFU serves it; pages on node B and node C join and subscribe. Each subscriber decodes
# the publisher's video through a connection whose selected remote candidate is node A's SFU UDP
# port, DataChannel messages pass between all three pages through that SFU, and node A counts
# the three SFU sessions while B and C count none. Prints each subscriber's time from join to
# its first decoded frame.
source "$(dirname "$0")/../lib.sh"

SECRET="cluster-sfu-e2e-secret-0123456789abcdef"

redis_start
echo "redis-server on 127.0.0.1:$REDIS_PORT"

# Per node: an HTTP port (advertised to the cluster) and its own SFU UDP and TCP ports.
read -r HA HB HC UA UB UC TA TB TC <<<"$(free_ports 9)"
declare -A URL SFU_UDP LOG
for n in A B C; do
  h=H$n u=U$n t=T$n
  cluster_node_config "$WORK/node$n.toml" "node$n" "${!h}" "$SECRET" sfu "${!u}" "${!t}"
  sb_start "$WORK/node$n.toml"
  URL[$n]=$SB_URL
  SFU_UDP[$n]=${SB_SFU_UDP##*:}
  LOG[$n]=$SB_LOG
  [ "${SFU_UDP[$n]}" = "${!u}" ] || fail "node$n reports its SFU on UDP port ${SFU_UDP[$n]}, configured ${!u}"
  echo "node$n at $SB_URL, SFU udp=$SB_SFU_UDP tcp=$SB_SFU_TCP (pid $SB_PID)"
done

# The room goes to the least-loaded live node with an SFU, so every node must be in the registry
# (and have read it) before the publisher creates the room.
cluster_wait_nodes "$WORK/nodeA.toml" 3
pass "three nodes in the cluster: $("$SB_BIN" nodes --config "$WORK/nodeA.toml" | tail -n +2 | cut -f1 | sort | tr '\n' ' ')"

# Single-use tickets (any room), minted with the shared key.
ticket() { SWITCHBOARD_CONFIG="$WORK/node$1.toml" "$SB_BIN" token create --identity "$2" --scope webrtc; }
TICKET_A=$(ticket A publisher)
TICKET_B=$(ticket B viewer-b)
TICKET_C=$(ticket C viewer-c)

dump_logs() {
  for n in A B C; do echo "--- node$n log (tail)"; tail -n 40 "${LOG[$n]}"; done
}

A_URL=${URL[A]} B_URL=${URL[B]} C_URL=${URL[C]} \
  A_SFU_UDP=${SFU_UDP[A]} B_SFU_UDP=${SFU_UDP[B]} C_SFU_UDP=${SFU_UDP[C]} \
  TICKET_A=$TICKET_A TICKET_B=$TICKET_B TICKET_C=$TICKET_C \
  timeout 90 node "$E2E_DIR/browser/cluster-sfu.mjs" || { dump_logs; fail "cluster SFU browser suite"; }
pass "cluster SFU browser suite"
