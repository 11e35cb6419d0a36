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

# sb_start CONFIG_FILE [extra args]: starts switchboard, waits for its "listening" line and
# exports SB_HTTP (host:port), SB_URL, and SB_TURN_UDP / SB_TURN_TCP / SB_TURN_TLS when present.
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
  export SB_HTTP SB_URL SB_TURN_UDP SB_TURN_TCP SB_TURN_TLS SB_PID SB_LOG
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

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; exit 1; }
