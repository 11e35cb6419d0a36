#!/usr/bin/env bash
# Issue 6, decision 0047: the SFU browser suite and the aiortc interop again, with the SFU's own
# egress (`[sfu] egress = "own"`: VP8/Opus packetized and SRTP-protected by the SFU itself).
set -euo pipefail
here=$(dirname "$0")
SFU_EGRESS=own bash "$here/60-sfu-browser.sh"
SFU_EGRESS=own bash "$here/61-sfu-aiortc.sh"
echo "PASS: sfu suites with egress = own"
