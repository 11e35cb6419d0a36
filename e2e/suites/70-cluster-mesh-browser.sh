#!/usr/bin/env bash
# A mesh call across a three-node cluster with real browsers (headless Chromium, fake cameras,
# the SDK served by the nodes): page A on node 1 and page B on node 2 see each other's video
# and exchange DataChannel messages; node 1 is killed with SIGKILL; page A resumes its session
# on node 3 while the peer-to-peer media and DataChannels keep flowing, and signaling between
# A (now on node 3) and B (on node 2) still works, also after node 1's resume grace has passed.
# Prints how long the resume took after the kill.
source "$(dirname "$0")/../lib.sh"

SECRET="cluster-e2e-secret-0123456789abcdef"

# One Redis for the cluster; no persistence. Stopped with everything else on exit.
redis_start
echo "redis-server on 127.0.0.1:$REDIS_PORT"

# HTTP ports: joined.nodes lists the other nodes sorted by URL, and the SDK tries the nodes the
# cluster named before the extra ones given to connect(). Node 3 gets the port whose URL sorts
# first, so page A's next node after node 1 is node 3 (it is also in page A's own list).
read -r P1 P2 P3 <<<"$(free_ports 3)"
if [[ "http://127.0.0.1:$P2" < "http://127.0.0.1:$P3" ]]; then tmp=$P2; P2=$P3; P3=$tmp; fi

# node_config FILE NODE_ID PORT: mesh rooms, no TURN, the shared key and Redis, fast failure
# detection (heartbeat 200 ms, gone after 600 ms), 15 s resume grace.
node_config() {
  cluster_node_config "$1" "$2" "$3" "$SECRET" mesh
  cat >>"$1" <<TOML
[limits]
signal_resume_grace = "15s"
TOML
}

declare -a URLS PIDS LOGS
for i in 1 2 3; do
  port_var=P$i
  node_config "$WORK/node$i.toml" "node$i" "${!port_var}"
  sb_start "$WORK/node$i.toml"
  URLS[$i]=$SB_URL
  PIDS[$i]=$SB_PID
  LOGS[$i]=$SB_LOG
  echo "node$i at $SB_URL (pid $SB_PID)"
done

# The driver kills node 1 with SIGKILL; out of the job table, bash does not report its death.
# (It stays in the list lib.sh stops on exit.)
disown "${PIDS[1]}"

# Every node has heartbeated into the registry and read it.
cluster_wait_nodes "$WORK/node1.toml" 3
pass "three nodes in the cluster"

# Single-use tickets (any room), minted with the shared key.
TICKET_A=$(SWITCHBOARD_CONFIG="$WORK/node1.toml" "$SB_BIN" token create --identity alice --scope webrtc)
TICKET_B=$(SWITCHBOARD_CONFIG="$WORK/node2.toml" "$SB_BIN" token create --identity bob --scope webrtc)

dump_logs() {
  for i in 1 2 3; do echo "--- node$i log (tail)"; tail -n 40 "${LOGS[$i]}"; done
}

N1_URL=${URLS[1]} N2_URL=${URLS[2]} N3_URL=${URLS[3]} N1_PID=${PIDS[1]} \
  TICKET_A=$TICKET_A TICKET_B=$TICKET_B GRACE_MS=15000 NODE_TTL_MS=600 ARTIFACTS=$ARTIFACTS \
  timeout 100 node "$E2E_DIR/browser/cluster-mesh.mjs" || { dump_logs; fail "cluster mesh browser suite"; }

# Node 1 is gone; node 3 took over page A's session, and the cluster counted node 1's loss.
kill -0 "${PIDS[1]}" 2>/dev/null && fail "node 1 is still running"
adopted=$(curl -fsS "${URLS[3]}/metrics" | sed -n 's/^switchboard_cluster_sessions_adopted_total \([0-9]*\)$/\1/p')
[ "${adopted:-0}" -eq 1 ] || { dump_logs; fail "node 3 adopted ${adopted:-0} sessions, expected 1"; }
failovers=$(curl -fsS "${URLS[2]}/metrics" | sed -n 's/^switchboard_cluster_failovers_total \([0-9]*\)$/\1/p')
[ "${failovers:-0}" -ge 1 ] || { dump_logs; fail "node 2 did not see node 1 fail"; }
live=$("$SB_BIN" nodes --config "$WORK/node2.toml" | tail -n +2 | cut -f1 | sort | tr '\n' ' ')
[ "$live" = "node2 node3 " ] || fail "live nodes after the kill: $live"
pass "node 3 adopted page A's session; the registry lists node2 and node3"
pass "cluster mesh browser suite"
