"""An aiortc peer in a Switchboard SFU room (docs/sfu-protocol.md), speaking the signaling
protocol directly: it publishes a synthetic video track (moving gradient, so every frame
differs) and decodes every video it is sent. Prints one JSON line per second with the frames it
decoded per publisher, and a final summary; exits 0 when it decoded at least --min-frames from
every publisher named in --expect.

Usage: aiortc_sfu.py --url http://127.0.0.1:PORT --room R --expect <publisher identity>
(identities are minted anonymously; the first output line is {"identity": ...})
"""

import argparse
import asyncio
import fractions
import json
import sys
import time
import urllib.request

import aioice.ice
import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av import VideoFrame

# aioice skips loopback addresses; the whole test runs on 127.0.0.1.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class Gradient(VideoStreamTrack):
    """320x240 frames at 30 fps whose content shifts every frame."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        self.n += 1
        frame = VideoFrame(320, 240, "yuv420p")
        for i, plane in enumerate(frame.planes):
            w = plane.line_size
            h = plane.buffer_size // w
            if i == 0:
                row = bytes((x + self.n * 4) % 256 for x in range(w))
                plane.update(row * h)
            else:
                plane.update(bytes([128 + (self.n % 64) * (1 if i == 1 else -1)]) * (w * h))
        frame.pts = pts
        frame.time_base = time_base or fractions.Fraction(1, 90000)
        return frame


def mint(url, room):
    req = urllib.request.Request(
        f"{url}/v1/token",
        data=json.dumps({"room": room}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        doc = json.load(r)
        return doc["token"], doc["identity"]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--room", required=True)
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--min-frames", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=40)
    a = ap.parse_args()

    token, identity = mint(a.url, a.room)
    print(json.dumps({"identity": identity}), flush=True)
    ws_url = a.url.replace("http://", "ws://") + f"/v1/signal?access_token={token}"
    pc = RTCPeerConnection()
    pc.addTrack(Gradient())
    frames = {}
    mids = {}  # mid -> publisher, from track_added
    pending_tracks = []  # (mid, track) seen before their track_added

    async def consume(publisher, track):
        while True:
            try:
                await track.recv()
            except Exception:
                return
            frames[publisher] = frames.get(publisher, 0) + 1

    def start_consumer(mid, track):
        asyncio.ensure_future(consume(mids[mid], track))

    @pc.on("track")
    def on_track(track):
        if track.kind != "video":
            return
        mid = next((t.mid for t in pc.getTransceivers() if t.receiver.track is track), None)
        if mid in mids:
            start_consumer(mid, track)
        else:
            pending_tracks.append((mid, track))

    async with websockets.connect(ws_url, max_size=1 << 20) as ws:
        async def send(obj):
            await ws.send(json.dumps(obj))

        await send({"type": "join", "room_id": a.room})
        # aiortc does not trickle: the offer carries its candidates.
        await pc.setLocalDescription(await pc.createOffer())
        await send({"type": "offer", "target": "$sfu",
                    "offer": {"type": "offer", "sdp": pc.localDescription.sdp}})
        errors = []
        left = set()
        start = time.monotonic()
        last_report = start

        async def on_message(m):
            t = m.get("type")
            if t == "answer" and m.get("from") == "$sfu":
                await pc.setRemoteDescription(RTCSessionDescription(m["answer"]["sdp"], "answer"))
            elif t == "offer" and m.get("from") == "$sfu":
                if pc.signalingState != "stable":
                    return  # impolite side: the server re-offers after answering us
                await pc.setRemoteDescription(RTCSessionDescription(m["offer"]["sdp"], "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await send({"type": "answer", "target": "$sfu",
                            "answer": {"type": "answer", "sdp": pc.localDescription.sdp}})
            elif t == "track_added" and m.get("kind") == "video":
                mids[m["mid"]] = m["publisher"]
                for mid, track in list(pending_tracks):
                    if mid == m["mid"]:
                        pending_tracks.remove((mid, track))
                        start_consumer(mid, track)
            elif t == "peer_left":
                left.add(m.get("peer_id"))
            elif t == "error":
                errors.append(m)
                print(json.dumps({"error": m}), flush=True)

        while time.monotonic() - start < a.seconds:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.2)
                await on_message(json.loads(raw))
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            if now - last_report >= 1:
                last_report = now
                print(json.dumps({"t": round(now - start, 1), "frames": frames,
                                  "ice": pc.iceConnectionState}), flush=True)
            if a.expect and all(frames.get(p, 0) >= a.min_frames for p in a.expect) and all(
                    p in left for p in a.expect):
                break  # we decoded enough and the other side is done with our video
        await send({"type": "leave"})
    await pc.close()
    ok = all(frames.get(p, 0) >= a.min_frames for p in a.expect) and not errors
    print(json.dumps({"done": True, "frames": frames, "ok": ok}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
