"""The reference ML servicer (grpcio `InferenceServicer`), runnable: Switchboard's `upstream`
backend in examples and tests.

    ./generate.sh && python server.py --port 50051

`run_heavy_inference` stands in for a model: it computes the same SHA-256 counter-mode bytes as
Switchboard's built-in `local:digest` worker (so both backends can be checked against each
other), with an optional pause between parts to imitate a model thinking. Payload (JSON,
optional fields): {"seed": str (default task_id), "chunks": 16, "chunk_bytes": 1024,
"delay_ms": 0}. The identity Switchboard verified arrives as metadata `x-switchboard-identity`.
"""
import argparse
import hashlib
import json
import logging
import os
import struct
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.environ.get("INFERENCE_STUBS", os.path.join(os.path.dirname(__file__), "gen")))
import grpc  # noqa: E402
import inference_pb2 as pb  # noqa: E402
import inference_pb2_grpc as rpc  # noqa: E402

log = logging.getLogger("ml-worker")


def digest_part(seed: bytes, index: int, chunk_bytes: int) -> bytes:
    out = bytearray()
    j = 0
    while len(out) < chunk_bytes:
        out += hashlib.sha256(seed + struct.pack("<QI", index, j)).digest()
        j += 1
    return bytes(out[:chunk_bytes])


def run_heavy_inference(task_id: str, payload: bytes):
    """Validates the payload now (ValueError if bad) and returns a generator of parts."""
    p = json.loads(payload or b"{}")
    if not isinstance(p, dict):
        raise ValueError("payload must be a JSON object")
    seed = str(p.get("seed", task_id)).encode()
    chunks, chunk_bytes = int(p.get("chunks", 16)), int(p.get("chunk_bytes", 1024))
    delay = int(p.get("delay_ms", 0)) / 1000.0

    def parts():
        for i in range(chunks):
            if i and delay:
                time.sleep(delay)
            yield digest_part(seed, i, chunk_bytes)
    return parts()


class InferenceServicer(rpc.InferenceServicer):
    def StreamPredict(self, request, context):
        ident = dict(context.invocation_metadata()).get("x-switchboard-identity", "-")
        done = threading.Event()

        def on_end():
            if not done.is_set():
                log.warning("cancelled task=%s identity=%s", request.task_id, ident)
        context.add_callback(on_end)
        try:
            parts = run_heavy_inference(request.task_id, request.payload)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"payload: {e}")
        for i, part in enumerate(parts):
            if not context.is_active():
                return
            yield pb.PredictChunk(index=i, partial=part, done=False)
        done.set()
        log.info("done task=%s identity=%s", request.task_id, ident)
        yield pb.PredictChunk(index=-1, partial=b"", done=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=50051)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--workers", type=int, default=64, help="concurrent streams (threads)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=a.workers),
                         options=[("grpc.max_concurrent_streams", 1000)])
    rpc.add_InferenceServicer_to_server(InferenceServicer(), server)
    port = server.add_insecure_port(f"{a.host}:{a.port}")
    server.start()
    print(f"ml-worker listening {a.host}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
