// @switchboard/client: the browser SDK for Switchboard signaling, DataChannels and media, in
// mesh (peer-to-peer) and SFU (through the server) rooms with the same API.
//
//   const client = await connect('https://host', token, { getToken });
//   const room = client.room('r1');
//   room.on('message', (from, obj) => ...);      // reliable channel, any size (chunked)
//   room.on('update', (from, obj) => ...);       // "updates" channel: ordered, maxRetransmits 0
//   await room.join();
//   await room.send({ hello: 'world' });         // to everyone; { to: peerId } for one peer
//   room.sendUpdate({ x, y });
//   room.stats();                                // { mode, rtt: { p50, p95, p99, count }, peers }
//   room.publish(cameraTrack, { simulcast: true });  // media, both modes
//   room.on('track', (publisher, track, { kind, trackId }) => ...);
//   room.on('track_ended', (publisher, trackId) => ...);
//
// Signaling is a JSON dialect over WebSocket (docs/sfu-protocol.md and the README). Every message the server delivers to a
// joined session carries `seq`; when the socket drops, the SDK reconnects with the resume token
// from `joined` and `last_seq`, and the server replays what it missed. The SDK keeps its own
// relay messages until the server confirms them (`joined.received`) and re-sends the rest.
// Mesh: one RTCPeerConnection per remote peer, trickle ICE, perfect negotiation (both sides may
// offer at once; the polite side rolls back), ICE restart when connectivity fails or the network
// changes. The newcomer makes the first offer to each peer in `room_peers`.
// SFU (docs/sfu-protocol.md): one RTCPeerConnection to the server (peer "$sfu") with in-band
// channels "reliable" and "updates" carrying JSON envelopes; the server relays them and forwards
// media. The room's mode comes from `joined.mode` and switches on `mode_changed`.
//
// This file is the entry point: it re-exports the public API from the modules beside it.
//   connection.js  Client, connect(): the signaling WebSocket, seq, resume, outbox, reconnect
//   room.js        Room: membership, mode, routing signaling to links, send/publish/stats API
//   link.js        Link: the RTCPeerConnection base shared by mesh peers and the SFU link
//   peer.js        Peer: one mesh peer (perfect negotiation, chunked messages, RTT pings)
//   sfu.js         SfuLink: the connection to the SFU (JSON envelopes, down-tracks by mid)
//   channels.js    DataChannel configs, watermarks, sending with backpressure
//   chunking.js    message framing: binary chunks (mesh) and JSON pieces (SFU)
//   media.js       publications, simulcast encodings, track swaps, screen share, subscriptions
//   stats.js       RTT samples, reports and percentiles
//   record.js      record(): local MediaRecorder recording
//   emitter.js     the event emitter; protocol.js: SFU_ID, SERVER_ID, message and Signaling types
//   stream.js      gRPC-Web StreamPredict, loaded on first use of `client.stream()`

export { connect, Client } from './connection.js';
export { Room } from './room.js';
export { Peer } from './peer.js';
export { SfuLink } from './sfu.js';
export { SIMULCAST_ENCODINGS } from './media.js';
export { LOW_WATERMARK, HIGH_WATERMARK } from './channels.js';
export { SFU_ID, SERVER_ID } from './protocol.js';
export { record } from './record.js';

/**
 * @typedef {import('./connection.js').ConnectOptions} ConnectOptions
 * @typedef {import('./stats.js').RttStats} RttStats
 * @typedef {import('./protocol.js').SignalMessage} SignalMessage
 * @typedef {import('./media.js').RemoteTrack} RemoteTrack
 * @typedef {import('./media.js').SubscribeOptions} SubscribeOptions
 * @typedef {import('./media.js').PublishOptions} PublishOptions
 * @typedef {import('./media.js').Publication} Publication
 * @typedef {import('./record.js').Recording} Recording
 */
