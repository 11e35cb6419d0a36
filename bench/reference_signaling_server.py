"""The reference Python signaling server (asyncio + `websockets`), the server the browser
classes in e2e/browser/reference_client.js were written for. Verbatim except where today's
`websockets` API differs: handler(websocket) has no `path` argument, and serve() is used as an
async context manager. Used as the reference in bench/RESULTS.md ("## Signaling"), whose
entries predate this file's name: there it is `bench/seed_signaling_server.py`, "the seed".

Usage: .venv/bin/python bench/reference_signaling_server.py PORT
"""
import asyncio
import websockets
import json
from typing import Dict, Set

class SignalingServer:
    """
    Simple signaling server for WebRTC.
    Routes offers, answers, and ICE candidates between peers.
    """

    def __init__(self):
        self.rooms: Dict[str, Set[str]] = {}  # room_id -> set of peer_ids
        self.peers: Dict[str, websockets.WebSocketServerProtocol] = {}
        self.peer_rooms: Dict[str, str] = {}  # peer_id -> room_id

    async def register(self, websocket, peer_id: str, room_id: str):
        """Register peer in room."""
        self.peers[peer_id] = websocket
        self.peer_rooms[peer_id] = room_id

        if room_id not in self.rooms:
            self.rooms[room_id] = set()

        # Notify existing peers about new peer
        for existing_peer in self.rooms[room_id]:
            await self.send_to_peer(existing_peer, {
                'type': 'peer_joined',
                'peer_id': peer_id
            })

        # Send list of existing peers to new peer
        await self.send_to_peer(peer_id, {
            'type': 'room_peers',
            'peers': list(self.rooms[room_id])
        })

        self.rooms[room_id].add(peer_id)

    async def unregister(self, peer_id: str):
        """Remove peer from room."""
        if peer_id in self.peer_rooms:
            room_id = self.peer_rooms[peer_id]
            self.rooms[room_id].discard(peer_id)

            # Notify other peers
            for other_peer in self.rooms[room_id]:
                await self.send_to_peer(other_peer, {
                    'type': 'peer_left',
                    'peer_id': peer_id
                })

            del self.peer_rooms[peer_id]

        self.peers.pop(peer_id, None)

    async def send_to_peer(self, peer_id: str, message: dict):
        """Send message to specific peer."""
        if peer_id in self.peers:
            try:
                await self.peers[peer_id].send(json.dumps(message))
            except websockets.ConnectionClosed:
                await self.unregister(peer_id)

    async def handle_message(self, peer_id: str, message: dict):
        """Route signaling messages between peers."""
        msg_type = message.get('type')
        target = message.get('target')

        if msg_type == 'offer':
            # Forward offer to target peer
            await self.send_to_peer(target, {
                'type': 'offer',
                'offer': message['offer'],
                'from': peer_id
            })

        elif msg_type == 'answer':
            # Forward answer to target peer
            await self.send_to_peer(target, {
                'type': 'answer',
                'answer': message['answer'],
                'from': peer_id
            })

        elif msg_type == 'ice_candidate':
            # Forward ICE candidate to target peer
            await self.send_to_peer(target, {
                'type': 'ice_candidate',
                'candidate': message['candidate'],
                'from': peer_id
            })

    async def handler(self, websocket):  # websockets >= 13: no `path` argument
        """WebSocket connection handler."""
        peer_id = None

        try:
            async for message in websocket:
                data = json.loads(message)

                if data['type'] == 'join':
                    peer_id = data['peer_id']
                    room_id = data['room_id']
                    await self.register(websocket, peer_id, room_id)

                elif peer_id:
                    await self.handle_message(peer_id, data)

        finally:
            if peer_id:
                await self.unregister(peer_id)


async def main(port):
    server = SignalingServer()
    async with websockets.serve(server.handler, "127.0.0.1", port, max_size=2**20):
        print(f"reference signaling listening on {port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    import sys
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
