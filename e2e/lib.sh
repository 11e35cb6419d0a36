# Shared by e2e suites (source it). Starts processes on ephemeral loopback ports and stops
# exactly the processes it started, by PID, when the suite exits.
set -euo pipefail
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$E2E_DIR/.." && pwd)
SB_BIN=${SB_BIN:-$ROOT/target/debug/switchboard}
PY=${PY:-$ROOT/.venv/bin/python}
ARTIFACTS=${ARTIFACTS:-$E2E_DIR/artifacts}
mkdir -p "$ARTIFACTS"
WORK=$(mktemp -d)
_PIDS=()

_cleanup() {
  for p in "${_PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${_PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap _cleanup EXIT

track_pid() { _PIDS+=("$1"); }

# A free TCP+UDP port on 127.0.0.1 (bind to 0, read it back, release it).
free_port() {
  python3 - <<'PY'
import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        u.close(); t.close()
PY
}

# free_ports N: N distinct ports, each free for TCP and UDP on 127.0.0.1, on one line. All are
# held until the last is found, so none is handed out twice.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        u.close(); t.close(); continue
    held += [t, u]; ports.append(p)
print(" ".join(map(str, ports)))
for s in held: s.close()
PY
}

# sb_start CONFIG_FILE [extra args]: starts switchboard, waits for its "listening" line and
# exports SB_HTTP (host:port), SB_URL, and SB_TURN_UDP / SB_TURN_TCP / SB_TURN_TLS /
# SB_SFU_UDP / SB_SFU_TCP (host:port) when present.
sb_start() {
  local cfg=$1; shift
  local log="$WORK/switchboard.$RANDOM.log"
  "$SB_BIN" serve --config "$cfg" "$@" >"$log" 2>&1 &
  local pid=$!
  track_pid "$pid"
  SB_PID=$pid
  SB_LOG=$log
  for _ in $(seq 1 200); do
    if grep -q '^switchboard listening' "$log"; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "switchboard exited:"; cat "$log"; return 1; fi
    sleep 0.05
  done
  local line
  line=$(grep '^switchboard listening' "$log" | head -1)
  [ -n "$line" ] || { echo "switchboard did not start:"; cat "$log"; return 1; }
  SB_HTTP=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' <<<"$line")
  SB_URL="http://$SB_HTTP"
  SB_TURN_UDP=$(sed -n 's/.* turn_udp=\([^ ]*\).*/\1/p' <<<"$line")
  SB_TURN_TCP=$(sed -n 's/.* turn_tcp=\([^ ]*\).*/\1/p' <<<"$line")
  SB_TURN_TLS=$(sed -n 's/.* turn_tls=\([^ ]*\).*/\1/p' <<<"$line")
  SB_SFU_UDP=$(sed -n 's/.* sfu_udp=\([^ ]*\).*/\1/p' <<<"$line")
  SB_SFU_TCP=$(sed -n 's/.* sfu_tcp=\([^ ]*\).*/\1/p' <<<"$line")
  export SB_HTTP SB_URL SB_TURN_UDP SB_TURN_TCP SB_TURN_TLS SB_SFU_UDP SB_SFU_TCP SB_PID SB_LOG
}

# A config on loopback with ephemeral ports. Extra TOML may be appended by the caller.
# Usage: sb_config FILE SIGNING_SECRET TURN_SECRET
sb_config() {
  cat >"$1" <<TOML
[http]
bind = "127.0.0.1:0"
shutdown_grace = "2s"
[auth]
database = ":memory:"
allow_anonymous_tokens = true
[[auth.keys]]
kid = "k1"
secret = "$2"
[turn]
listen = "127.0.0.1:0"
static_auth_secret = "$3"
allow_loopback_peers = true
[sfu]
bind_ip = "127.0.0.1"
udp_port = 0
tcp_port = 0
TOML
}

# redis_start: a redis-server for a cluster on a free loopback port, without persistence;
# exports REDIS_PORT. Stopped with everything else on exit.
redis_start() {
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    >"$WORK/redis.log" 2>&1 &
  track_pid $!
  for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
    sleep 0.05
  done
  redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG || { cat "$WORK/redis.log"; fail "redis-server did not start"; }
  export REDIS_PORT
}

# cluster_node_config FILE NODE_ID HTTP_PORT SECRET SFU_MODE [SFU_UDP_PORT SFU_TCP_PORT]: a
# cluster node on loopback (HTTP on HTTP_PORT, which it advertises) using the Redis of
# redis_start and the shared key SECRET; no TURN; the SFU on the given ports (ephemeral when
# absent); fast failure detection (heartbeat 200 ms, gone after 600 ms); on SIGTERM the node
# waits at most 2 s for sessions to resume elsewhere (clients of a failed run never do), so a
# suite's exit stays quick. Callers may append TOML.
cluster_node_config() {
  cat >"$1" <<TOML
[http]
bind = "127.0.0.1:$3"
shutdown_grace = "2s"
[auth]
database = ":memory:"
[[auth.keys]]
kid = "k1"
secret = "$4"
[turn]
enabled = false
[sfu]
mode = "$5"
bind_ip = "127.0.0.1"
udp_port = ${6:-0}
tcp_port = ${7:-0}
[cluster]
redis_url = "redis://127.0.0.1:$REDIS_PORT/"
node_id = "$2"
advertise_url = "http://127.0.0.1:$3"
heartbeat = "200ms"
node_ttl = "600ms"
drain_timeout = "2s"
TOML
}

# cluster_wait_nodes CONFIG N: waits until `switchboard nodes` lists N live nodes, then one more
# heartbeat or two (0.5 s) so that every node has read the full registry.
cluster_wait_nodes() {
  local n=0
  for _ in $(seq 1 100); do
    n=$("$SB_BIN" nodes --config "$1" 2>/dev/null | tail -n +2 | grep -c . || true)
    [ "$n" -ge "$2" ] && break
    sleep 0.1
  done
  [ "$n" -ge "$2" ] || { "$SB_BIN" nodes --config "$1"; fail "the cluster listed $n nodes, expected $2"; }
  sleep 0.5
}

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; exit 1; }
