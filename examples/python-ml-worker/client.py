"""The reference ML servicer's Python client, pointed at Switchboard instead of the ML server:
the only change is the Bearer ticket (scope `grpc`) in the call metadata.

    python client.py --target 127.0.0.1:7880 --token "$TOKEN" --task abc --payload '{"chunks":4}'

Prints one JSON line per chunk ({"index", "len", "sha256", "done"}) and a final
{"status": "OK"|code, "chunks": n}. --cancel-after N cancels the call after N chunks;
--timeout S sets a deadline.
"""
import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.environ.get("INFERENCE_STUBS", os.path.join(os.path.dirname(__file__), "gen")))
import grpc  # noqa: E402
import inference_pb2 as pb  # noqa: E402
import inference_pb2_grpc as rpc  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="127.0.0.1:7880")
    ap.add_argument("--token", default=os.environ.get("SWITCHBOARD_TOKEN", ""))
    ap.add_argument("--task", default="abc")
    ap.add_argument("--payload", default="{}")
    ap.add_argument("--cancel-after", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=None)
    a = ap.parse_args()
    channel = grpc.insecure_channel(a.target)
    stub = rpc.InferenceStub(channel)
    metadata = [("authorization", f"Bearer {a.token}")] if a.token else []
    call = stub.StreamPredict(pb.PredictRequest(task_id=a.task, payload=a.payload.encode()),
                              metadata=metadata, timeout=a.timeout)
    n = 0
    try:
        for chunk in call:
            n += 1
            print(json.dumps({"index": chunk.index, "len": len(chunk.partial),
                              "sha256": hashlib.sha256(chunk.partial).hexdigest(), "done": chunk.done}), flush=True)
            if a.cancel_after and n >= a.cancel_after:
                call.cancel()
                print(json.dumps({"status": "CANCELLED_BY_CLIENT", "chunks": n}), flush=True)
                return 0
        print(json.dumps({"status": "OK", "chunks": n}), flush=True)
        return 0
    except grpc.RpcError as e:
        print(json.dumps({"status": e.code().name, "message": e.details(), "chunks": n}), flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
