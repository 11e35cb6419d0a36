# Shell helpers the benchmark scripts source.

# A loopback port free for both TCP and UDP right now (TURN listens on both).
free_port() { python3 -c 'import socket
while True:
    t=socket.socket(); t.bind(("127.0.0.1",0)); p=t.getsockname()[1]
    u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
    try: u.bind(("127.0.0.1",p)); print(p); break
    except OSError: pass'; }

# Cores busy on the whole machine over 2 s (from /proc/stat).
busy_cores() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat); sleep 2
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  echo "$a $b" | awk '{ printf "%.2f", ($3-$1) / (($3-$1)+($4-$2)) * '"$(nproc)"' }'
}

# Waits (up to QUIET_WAIT s, default 600) until fewer than QUIET (default 0.3) cores are busy:
# on a shared machine other work would otherwise land in the middle of a run.
wait_quiet() {
  local QUIET=${QUIET:-0.3} QUIET_WAIT=${QUIET_WAIT:-600}
  local t0=$SECONDS b
  while :; do
    b=$(busy_cores)
    if awk "BEGIN{exit !($b < $QUIET)}" || [ $((SECONDS - t0)) -ge "$QUIET_WAIT" ]; then
      echo "# machine: $b cores busy before the run (waited $((SECONDS - t0)) s)"; return
    fi
  done
}

# bench_config FILE BIND [REDIS_PORT NODE_ID]: a signaling benchmark node's configuration (auth
# key `k1` with $SECRET, no TURN, mesh rooms, limits that let one load generator's address open
# every client). With REDIS_PORT and NODE_ID it is a cluster node advertising http://BIND.
bench_config() {
  local file=$1 bind=$2
  cat >"$file" <<TOML
[http]
bind = "$bind"
[auth]
database = ":memory:"
[[auth.keys]]
kid = "k1"
secret = "$SECRET"
[turn]
enabled = false
[limits]
# All clients come from one address here; in production they come from many.
signal_connections_per_ip = 50000
signal_joins_per_second_per_ip = 100000
signal_messages_per_second = 10000
signal_max_room_peers = 100
[sfu]
mode = "mesh"
[log]
level = "warn"
TOML
  if [ -n "${3:-}" ]; then
    cat >>"$file" <<TOML
[cluster]
redis_url = "redis://127.0.0.1:$3/"
node_id = "$4"
advertise_url = "http://$bind"
TOML
  fi
}
