#!/usr/bin/env bash
# Runs every e2e suite (e2e/suites/*.sh, in name order); each suite starts and stops its own
# servers and clients. Network traffic stays on loopback.
set -uo pipefail
cd "$(dirname "$0")"
failed=()
for s in suites/*.sh; do
  [ -e "$s" ] || continue
  echo "--- $s"
  t0=$(date +%s)
  if bash "$s"; then
    echo "--- $s ok ($(( $(date +%s) - t0 )) s)"
  else
    echo "--- $s FAILED"
    failed+=("$s")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed suites: ${failed[*]}"
  exit 1
fi
echo "all e2e suites passed"
