#!/usr/bin/env bash
# Three Switchboard nodes and one Redis on this machine: HTTP on 7880, 7890, 7900 (loopback).
# Every node gets the same key ring and TURN secret, and the same [cluster] redis_url.
# Stop everything with Ctrl-C.
#
#   BIN=target/release/switchboard examples/cluster/run.sh
set -euo pipefail
BIN=${BIN:-target/release/switchboard}
REDIS_PORT=${REDIS_PORT:-6390}
SECRET=${SECRET:-$(head -c 32 /dev/urandom | base64)}
TURN_SECRET=${TURN_SECRET:-$(head -c 24 /dev/urandom | base64)}
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$dir/redis.log" &
pids+=($!)

for i in 0 1 2; do
  http=$((7880 + 10 * i))
  cat >"$dir/node$i.toml" <<TOML
[http]
bind = "127.0.0.1:$http"
[auth]
database = ":memory:"
[[auth.keys]]
kid = "k1"
secret = "$SECRET"
[turn]
enabled = false
[sfu]
mode = "mesh"
[cluster]
redis_url = "redis://127.0.0.1:$REDIS_PORT/"
node_id = "node$i"
advertise_url = "http://127.0.0.1:$http"
TOML
  "$BIN" serve --config "$dir/node$i.toml" >"$dir/node$i.log" 2>&1 &
  pids+=($!)
done

sleep 2
"$BIN" nodes --config "$dir/node0.toml"
echo "signing secret (mint tickets for any node with it): $SECRET"
echo "logs in $dir; Ctrl-C stops the cluster"
wait
