#!/usr/bin/env bash
# The browser SDK (clients/js, plain ES modules with JSDoc types) type-checks
# under `tsc --noEmit --checkJs --strict`, its committed declarations (clients/js/types) are
# what the sources generate, and its unit tests pass.
source "$(dirname "$0")/../lib.sh"
cd "$ROOT/clients/js"
if [ ! -x node_modules/.bin/tsc ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/tsc -p jsconfig.json || fail "SDK type check"
pass "SDK type check (tsc --checkJs --strict)"
node_modules/.bin/tsc -p jsconfig.types.json --outDir "$WORK/types" || fail "SDK declarations (tsc -p jsconfig.types.json)"
diff -r types "$WORK/types" >"$WORK/types.diff" || {
  cat "$WORK/types.diff"
  fail "clients/js/types/ is out of date with clients/js/src: regenerate it with 'cd clients/js && npm run types' and commit the result"
}
pass "SDK declarations in clients/js/types are up to date"
node --test test/ >/dev/null || { node --test test/; fail "SDK unit tests (node --test clients/js/test)"; }
pass "SDK unit tests (node --test clients/js/test)"
