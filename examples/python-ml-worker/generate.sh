#!/usr/bin/env bash
# Generates inference_pb2.py / inference_pb2_grpc.py from the proto Switchboard serves
# (crates/proto/proto/inference.proto, the reference ML servicer's `inference.Inference/StreamPredict`
# contract) into OUT_DIR (default: ./gen).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROTO_DIR=$(cd "$HERE/../../crates/proto/proto" && pwd)
OUT=${1:-$HERE/gen}
PY=${PY:-python3}
mkdir -p "$OUT"
"$PY" -m grpc_tools.protoc -I"$PROTO_DIR" --python_out="$OUT" --grpc_python_out="$OUT" "$PROTO_DIR/inference.proto"
echo "$OUT"
