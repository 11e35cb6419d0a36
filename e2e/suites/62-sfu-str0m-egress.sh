#!/usr/bin/env bash
# SFU egress (decision 0047): the SFU browser suite and the aiortc interop again with
# `[sfu] egress = "str0m"` (every forwarded frame written into the subscriber's str0m session),
# the path the SFU takes when bandwidth estimation is on. 60 and 61 run the default (own egress).
set -euo pipefail
here=$(dirname "$0")
SFU_EGRESS=str0m bash "$here/60-sfu-browser.sh"
SFU_EGRESS=str0m bash "$here/61-sfu-aiortc.sh"
SFU_EGRESS=str0m bash "$here/63-sfu-lossy-browser.sh"
echo "PASS: sfu suites with egress = str0m"
