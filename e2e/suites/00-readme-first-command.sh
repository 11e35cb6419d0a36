#!/usr/bin/env bash
# The README's first command, run exactly as written from the repository root, as a newcomer
# would: it must start Switchboard (not another binary of the workspace), answer /healthz, serve
# the demo page and the SDK, print a demo URL that loads, and that URL opened in two Chromium
# tabs must put both in the room on the first try. Editing the README or the manifests so that
# the command breaks fails this suite.
#
# The command runs with environment overrides that move every listener to an ephemeral
# loopback port (the server's documented SWITCHBOARD_<SECTION>_<KEY> variables), so a server
# already running on the default ports does not break the check; the command itself is the
# README's, character for character.
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"

# The first line of the README's first ```sh block, without its comment.
cmd=$(awk '/^```sh/{inblock=1; next} /^```/{if (inblock) exit} inblock && NF {print; exit}' README.md \
  | sed 's/[[:space:]]#.*$//; s/[[:space:]]*$//')
[ -n "$cmd" ] || fail "no command found in the README's first sh block"
echo "README's first command: $cmd"

log="$WORK/first-command.log"
# setsid: the command and everything it starts form one process group, stopped together below.
SWITCHBOARD_HTTP_BIND=127.0.0.1:0 \
SWITCHBOARD_TURN_LISTEN=127.0.0.1:0 \
SWITCHBOARD_TURN_TLS_LISTEN=127.0.0.1:0 \
SWITCHBOARD_SFU_UDP_PORT=0 \
SWITCHBOARD_SFU_TCP_PORT=0 \
  setsid bash -c "$cmd" >"$log" 2>&1 &
pgid=$!
stop_group() { kill -TERM -- "-$pgid" 2>/dev/null || true; }
trap 'stop_group; _cleanup' EXIT

# The first run builds the release binary; allow for that on a 2-core machine.
for _ in $(seq 1 2400); do
  grep -q '^  demo page:' "$log" && break
  if ! kill -0 "$pgid" 2>/dev/null; then
    echo "--- output of the command:"; tail -n 40 "$log"; fail "the README's first command exited"
  fi
  sleep 0.5
done
grep -q '^  demo page:' "$log" || { tail -n 40 "$log"; fail "no demo URL printed within 20 minutes"; }
grep -q '^switchboard listening http=' "$log" || { tail -n 40 "$log"; fail "no listening line"; }

http=$(sed -n 's/^switchboard listening http=\([^ ]*\).*/\1/p' "$log" | head -1)
demo=$(sed -n 's/^  demo page:  *\([^ ]*\).*/\1/p' "$log" | head -1)
ticket=$(sed -n 's/^  ticket:  *\([^ ]*\).*/\1/p' "$log" | head -1)
echo "listening on $http; demo URL $demo"

# get URL: the body, or the suite fails naming the URL (no `curl | grep -q`: with pipefail,
# grep closing the pipe early would fail curl).
get() { curl -sf --max-time 10 "$@" || fail "GET ${*: -1} failed"; }

code=$(curl -s -o /dev/null -w '%{http_code}' "http://$http/healthz")
[ "$code" = 200 ] || fail "/healthz answered $code"
pass "/healthz"
grep -q '<title>' <<<"$(get "http://$http/")" || fail "/ is not the demo page"
pass "/ serves the demo page"
grep -Eq '^export \{ connect\b' <<<"$(get "http://$http/sdk/switchboard.js")" \
  || fail "/sdk/switchboard.js is not the SDK's entry point (it re-exports connect)"
grep -q 'export async function connect' <<<"$(get "http://$http/sdk/connection.js")" \
  || fail "/sdk/connection.js, which the entry point imports, is not served"
pass "/sdk/switchboard.js serves the SDK (and the modules it imports)"
case "$demo" in "http://$http/"*) ;; *) fail "demo URL $demo is not on $http" ;; esac
grep -q '<title>' <<<"$(get "$demo")" || fail "the printed demo URL does not load the demo page"
pass "the printed demo URL loads"
# The printed ticket works as the banner says: Bearer or ?access_token= on the HTTP API.
grep -q iceServers <<<"$(get -H "Authorization: Bearer $ticket" "http://$http/v1/ice-servers")" \
  || fail "printed ticket as Bearer on /v1/ice-servers"
grep -q iceServers <<<"$(get "http://$http/v1/ice-servers?access_token=$ticket")" \
  || fail "printed ticket as ?access_token= on /v1/ice-servers"
pass "the printed ticket works on /v1/ice-servers (Bearer and ?access_token=)"
if grep -q $'\e\[' "$log"; then fail "log written to a file carries ANSI colour codes"; fi
pass "no colour codes in a log written to a file"

DEMO_URL=$demo TICKET=$ticket timeout 120 node "$E2E_DIR/browser/demo-tabs.mjs" || fail "demo tabs"
pass "two tabs from the printed URL are both in the room"

stop_group
for _ in $(seq 1 100); do kill -0 "$pgid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pgid" 2>/dev/null; then fail "the server did not stop on SIGTERM within 10 s"; fi
pass "stopped on SIGTERM"
