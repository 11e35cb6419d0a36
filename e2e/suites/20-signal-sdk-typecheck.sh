#!/usr/bin/env bash
# The browser SDK (clients/js, plain ES modules with JSDoc types) type-checks
# under `tsc --noEmit --checkJs --strict`.
source "$(dirname "$0")/../lib.sh"
cd "$ROOT/clients/js"
if [ ! -x node_modules/.bin/tsc ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/tsc -p jsconfig.json || fail "SDK type check"
pass "SDK type check (tsc --checkJs --strict)"
node --test test/ >/dev/null || { node --test test/; fail "SDK unit tests (node --test clients/js/test)"; }
pass "SDK unit tests (node --test clients/js/test)"
