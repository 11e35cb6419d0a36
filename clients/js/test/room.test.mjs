// room.js against a fake signaling connection and fake RTCPeerConnections: joining (mesh and
// SFU), membership events on room_peers/peer_joined/peer_left, routing offers, answers, ICE and
// bye to mesh peers, mode_changed to SFU, SFU down-tracks and session restarts, stream_progress
// dedup, subscriptions, RTT pings/reports and stats, sending, publishing and leaving.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Room } from '../src/room.js';
import { Peer } from '../src/peer.js';
import { SfuLink } from '../src/sfu.js';
import { encodeChunks } from '../src/chunking.js';
import {
  FakePeerConnection, FakeSignaling, FakeTrack, installGlobals, settle,
} from '../test-support/fakes.mjs';

installGlobals();

const EVENTS = ['joined', 'resumed', 'peer_joined', 'peer_left', 'peer_connected', 'message', 'update',
  'track', 'track_ended', 'stream_progress', 'mode_changed', 'sfu_connected', 'sfu_closed', 'error', 'custom'];

function setup(t) {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_000_000 });
  FakePeerConnection.instances = [];
  const client = new FakeSignaling();
  const room = new Room(client, 'r1');
  const events = [];
  for (const e of EVENTS) room.on(e, (...args) => events.push([e, ...args]));
  /** Delivers a signaling message the way the Client does: `signal` listeners, then the room. */
  const deliver = (msg) => {
    client.emit('signal', msg);
    room._onSignal(msg);
  };
  const of = (name) => events.filter((e) => e[0] === name).map((e) => e.slice(1));
  t.after(() => room.leave());
  return { client, room, events, deliver, of };
}

/** Joins r1 as "me" with `peers` already there. */
async function joinMesh(s, peers = [], extra = {}) {
  const p = s.room.join();
  s.deliver({ type: 'room_peers', peers });
  s.deliver({ type: 'joined', peer_id: 'me', mode: 'mesh', ice_servers: [{ urls: 'stun:stun.example' }], ...extra });
  return p;
}

const openChannels = (link) => { link.updates.open(); link.reliable.open(); };

test('join sends join (sfu_capable) and resolves with joined; peers in room_peers become members and mesh peers', async (t) => {
  const s = setup(t);
  const j = await joinMesh(s, ['alice', 'zed']);
  assert.deepEqual(s.client.sent[0], { type: 'join', room_id: 'r1', sfu_capable: true });
  assert.equal(j.peer_id, 'me');
  assert.equal(s.room.peerId, 'me');
  assert.equal(s.room.mode, 'mesh');
  assert.deepEqual([...s.room.members], ['alice', 'zed']);
  assert.deepEqual([...s.room.peers.keys()], ['alice', 'zed']);
  // Politeness by id order: "me" > "alice" is polite towards alice, not towards zed.
  assert.equal(s.room.peers.get('alice').polite, true);
  assert.equal(s.room.peers.get('zed').polite, false);
  assert.ok(s.room.peers.get('alice') instanceof Peer);
  assert.deepEqual(FakePeerConnection.instances[0].config.iceServers, [{ urls: 'stun:stun.example' }]);
  assert.deepEqual(s.of('joined').map((e) => e[0].peer_id), ['me']);
});

test('join with mode "sfu" asks for it', async (t) => {
  const s = setup(t);
  s.room.join({ mode: 'sfu' });
  assert.deepEqual(s.client.sent[0], { type: 'join', room_id: 'r1', sfu_capable: true, mode: 'sfu' });
});

test('join rejects with the server error', async (t) => {
  const s = setup(t);
  const p = s.room.join();
  s.deliver({ type: 'error', code: 'room_full', message: 'the room is full' });
  await assert.rejects(p, { message: 'room_full: the room is full' });
  assert.deepEqual(s.of('error').map((e) => e[0].code), ['room_full']);
});

test('peer_joined and peer_left update members, emit events and drop the mesh peer', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice']);
  s.deliver({ type: 'peer_joined', peer_id: 'bob' });
  assert.deepEqual([...s.room.members], ['alice', 'bob']);
  assert.equal(s.room.peers.has('bob'), false, 'the newcomer offers; no peer until then');
  const alice = s.room.peers.get('alice');
  s.deliver({ type: 'peer_left', peer_id: 'alice' });
  assert.deepEqual([...s.room.members], ['bob']);
  assert.equal(s.room.peers.has('alice'), false);
  assert.equal(alice.closed, true);
  assert.equal(alice.pc.signalingState, 'closed');
  assert.deepEqual(s.events.filter((e) => e[0].startsWith('peer_')), [['peer_joined', 'bob'], ['peer_left', 'alice']]);
});

test('an offer from a new peer creates it and is answered; bye drops it', async (t) => {
  const s = setup(t);
  await joinMesh(s);
  s.deliver({ type: 'peer_joined', peer_id: 'bob' });
  s.deliver({ type: 'offer', from: 'bob', offer: { type: 'offer', sdp: 'remote-offer' } });
  await settle();
  const bob = s.room.peers.get('bob');
  assert.ok(bob);
  assert.equal(bob.pc.remoteDescription.sdp, 'remote-offer');
  const answers = s.client.sentOf('answer');
  assert.equal(answers.length, 1);
  assert.equal(answers[0].target, 'bob');
  assert.equal(answers[0].answer.type, 'answer');
  s.deliver({ type: 'ice_candidate', from: 'bob', candidate: { candidate: 'candidate:1', sdpMid: '0' } });
  await settle();
  assert.deepEqual(bob.pc.candidates, [{ candidate: 'candidate:1', sdpMid: '0' }]);
  s.deliver({ type: 'bye', from: 'bob' });
  assert.equal(s.room.peers.has('bob'), false);
  assert.equal(bob.closed, true);
});

test('the newcomer offers to the peers it found; their answer completes it', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice']);
  const alice = s.room.peers.get('alice');
  alice.pc.onnegotiationneeded();
  await settle();
  const offers = s.client.sentOf('offer');
  assert.deepEqual(offers.map((o) => [o.target, o.offer.type]), [['alice', 'offer']]);
  s.deliver({ type: 'answer', from: 'alice', answer: { type: 'answer', sdp: 'a' } });
  await settle();
  assert.equal(alice.pc.signalingState, 'stable');
  // Messages for peers the room does not know are ignored.
  s.deliver({ type: 'answer', from: 'nobody', answer: { type: 'answer', sdp: 'x' } });
  s.deliver({ type: 'ice_candidate', from: 'nobody', candidate: { candidate: 'c' } });
  assert.deepEqual([...s.room.peers.keys()], ['alice']);
});

test('mode_changed to sfu closes the mesh peers and connects to the SFU, once', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice', 'bob']);
  const meshPeers = [...s.room.peers.values()];
  s.deliver({ type: 'mode_changed', mode: 'sfu' });
  assert.equal(s.room.mode, 'sfu');
  assert.equal(s.room.peers.size, 0);
  assert.ok(meshPeers.every((p) => p.closed));
  assert.ok(s.room.sfu instanceof SfuLink);
  assert.equal(s.room.sfu.pc.config.bundlePolicy, 'max-bundle');
  assert.deepEqual([...s.room.members], ['alice', 'bob']);
  const link = s.room.sfu;
  s.deliver({ type: 'mode_changed', mode: 'sfu' });
  assert.equal(s.room.sfu, link);
  assert.deepEqual(s.of('mode_changed'), [['sfu']]);
  // In SFU mode, peer offers are not for a mesh connection.
  s.deliver({ type: 'offer', from: 'carol', offer: { type: 'offer', sdp: 'x' } });
  assert.equal(s.room.peers.size, 0);
});

test('joined in SFU mode connects to the SFU; a resumed joined keeps the link and members', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice'], { mode: 'sfu' });
  assert.equal(s.room.mode, 'sfu');
  assert.equal(s.room.peers.size, 0);
  const link = s.room.sfu;
  assert.ok(link);
  s.deliver({ type: 'peer_joined', peer_id: 'bob' });
  s.deliver({ type: 'joined', peer_id: 'me', mode: 'sfu', resumed: true });
  assert.equal(s.room.sfu, link);
  assert.deepEqual([...s.room.members], ['alice', 'bob']);
  assert.equal(s.of('resumed').length, 1);
  assert.equal(s.of('joined').length, 1);
  // A resumed session reported as mesh does not take an SFU room back to mesh.
  s.deliver({ type: 'joined', peer_id: 'me', mode: 'mesh', resumed: true });
  assert.equal(s.room.mode, 'sfu');
  assert.equal(s.room.sfu, link);
});

test('SFU down-tracks: track is emitted once both track_added and the transceiver are known, in either order', async (t) => {
  const s = setup(t);
  await joinMesh(s, [], { mode: 'sfu' });
  const pc = s.room.sfu.pc;
  const cam = new FakeTrack('video');
  s.deliver({ type: 'track_added', from: '$sfu', mid: '1', publisher: 'bob', track: 't1', kind: 'video' });
  assert.equal(s.of('track').length, 0);
  pc.remoteTrack('1', cam);
  assert.deepEqual(s.of('track'), [['bob', cam, { kind: 'video', trackId: 't1', mid: '1' }]]);
  const mic = new FakeTrack('audio');
  pc.remoteTrack('2', mic);
  s.deliver({ type: 'track_added', from: '$sfu', mid: '2', publisher: 'alice', track: 't2', kind: 'audio' });
  assert.deepEqual(s.of('track')[1], ['alice', mic, { kind: 'audio', trackId: 't2', mid: '2' }]);
  s.deliver({ type: 'track_ended', from: '$sfu', mid: '1' });
  assert.deepEqual(s.of('track_ended'), [['bob', 't1']]);
  assert.deepEqual([...s.room.remoteTracks.keys()], ['$sfu/2']);
  // A new track on a reused mid ends the old one first.
  s.deliver({ type: 'track_added', from: '$sfu', mid: '2', publisher: 'carol', track: 't3', kind: 'audio' });
  assert.deepEqual(s.of('track_ended')[1], ['alice', 't2']);
  assert.equal(s.of('track').at(-1)[0], 'carol');
});

test('sfu_closed by the server restarts the SFU session after 500 ms; "bye" does not', async (t) => {
  const s = setup(t);
  await joinMesh(s, [], { mode: 'sfu' });
  const first = s.room.sfu;
  first.pc.remoteTrack('1', new FakeTrack('video'));
  s.deliver({ type: 'track_added', from: '$sfu', mid: '1', publisher: 'bob', track: 't1', kind: 'video' });
  s.deliver({ type: 'sfu_closed', from: '$sfu', reason: 'ice_failed' });
  assert.deepEqual(s.of('sfu_closed'), [['ice_failed']]);
  assert.equal(s.room.sfu, null);
  assert.equal(first.closed, true);
  assert.equal(s.client.sentOf('bye').length, 0, 'the server ended it: no bye');
  assert.deepEqual(s.of('track_ended'), [['bob', 't1']]);
  t.mock.timers.tick(499);
  assert.equal(s.room.sfu, null);
  t.mock.timers.tick(1);
  assert.ok(s.room.sfu && s.room.sfu !== first);
  const second = s.room.sfu;
  s.deliver({ type: 'sfu_closed', from: '$sfu', reason: 'bye' });
  t.mock.timers.tick(1000);
  assert.equal(s.room.sfu, second);
});

test('subscriptions are sent in SFU mode, remembered in mesh mode, and re-sent on sfu_connected', async (t) => {
  const s = setup(t);
  await joinMesh(s);
  s.room.subscribe('bob', { maxLayer: 0 });
  assert.equal(s.client.sentOf('subscribe').length, 0);
  s.deliver({ type: 'mode_changed', mode: 'sfu' });
  s.room.subscribe('alice', { video: false });
  assert.deepEqual(s.client.sentOf('subscribe'), [{ type: 'subscribe', publisher: 'alice', video: false, max_layer: 2 }]);
  s.deliver({ type: 'sfu_connected', from: '$sfu' });
  assert.deepEqual(s.client.sentOf('subscribe').slice(1), [
    { type: 'subscribe', publisher: 'bob', video: true, max_layer: 0 },
    { type: 'subscribe', publisher: 'alice', video: false, max_layer: 2 },
  ]);
  assert.equal(s.of('sfu_connected').length, 1);
});

test('stream_progress is emitted once per event, from signaling or the SFU channel', async (t) => {
  const s = setup(t);
  await joinMesh(s);
  const ev = { type: 'stream_progress', task_id: 'k', chunks: 3, bytes: 30, state: 'running' };
  s.deliver(ev);
  s.deliver({ ...ev });
  s.room._progress({ task_id: 'k', chunks: 3, bytes: 30, state: 'running' });
  s.room._progress({ task_id: 'k', chunks: 4, bytes: 40, state: 'done' });
  s.room._progress(null);
  assert.deepEqual(s.of('stream_progress').map((e) => e[0].chunks), [3, 4]);
});

test('other messages are emitted under their type', async (t) => {
  const s = setup(t);
  await joinMesh(s);
  s.deliver({ type: 'custom', x: 1 });
  s.deliver({ type: 'custom', from: '$sfu', x: 2 });
  assert.deepEqual(s.of('custom').map((e) => e[0].x), [1, 2]);
});

test('RTT: each tick pings open links; samples are reported at most every 5 s', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice']);
  const alice = s.room.peers.get('alice');
  openChannels(alice);
  s.room._rttSample(12);
  s.room._rttSample(8);
  t.mock.timers.tick(1000);
  assert.equal(alice.updates.sent.length, 1);
  assert.equal(typeof JSON.parse(alice.updates.sent[0]).p, 'number');
  assert.deepEqual(s.client.sentOf('rtt_report'), [{ type: 'rtt_report', rtt_ms: [12, 8] }]);
  s.room._rttSample(20);
  t.mock.timers.tick(4000);
  assert.equal(s.client.sentOf('rtt_report').length, 1);
  t.mock.timers.tick(1000);
  assert.deepEqual(s.client.sentOf('rtt_report')[1], { type: 'rtt_report', rtt_ms: [20] });
  assert.equal(alice.updates.sent.length, 6);
});

test('stats: mode, RTT percentiles, connection states and reconnects', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice']);
  for (const ms of [10, 40, 20, 30]) s.room._rttSample(ms);
  s.room.peers.get('alice').pc.connectionState = 'connected';
  s.client.reconnects = 2;
  assert.deepEqual(s.room.stats(), {
    mode: 'mesh',
    rtt: { p50: 30, p95: 40, p99: 40, count: 4 },
    peers: [{ id: 'alice', state: 'connected' }],
    reconnects: 2,
  });
  s.deliver({ type: 'mode_changed', mode: 'sfu' });
  assert.deepEqual(s.room.stats().peers, [{ id: '$sfu', state: 'new' }]);
  assert.equal(s.room.stats().mode, 'sfu');
});

test('mesh send goes to open peers (or the one named); a chunked message arrives as one', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice', 'bob', 'carol']);
  const [alice, bob, carol] = ['alice', 'bob', 'carol'].map((id) => s.room.peers.get(id));
  openChannels(alice);
  openChannels(bob);
  await s.room.send({ hi: 1 });
  assert.equal(alice.reliable.sent.length, 1);
  assert.equal(bob.reliable.sent.length, 1);
  assert.equal(carol.reliable.sent.length, 0);
  await s.room.send({ hi: 2 }, { to: 'bob' });
  await s.room.send({ hi: 3 }, { to: 'nobody' });
  assert.equal(alice.reliable.sent.length, 1);
  assert.equal(bob.reliable.sent.length, 2);
  for (const f of encodeChunks({ big: 'x'.repeat(40000) }, 1)) alice.reliable.receive(f);
  assert.deepEqual(s.of('message'), [['alice', { big: 'x'.repeat(40000) }]]);
  assert.deepEqual(s.of('peer_connected'), [['alice'], ['bob']]);
});

test('sendUpdate: {u} text to open peers; more than 16 KiB is refused', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice', 'bob']);
  openChannels(s.room.peers.get('alice'));
  s.room.sendUpdate({ x: 0.5 });
  assert.deepEqual(s.room.peers.get('alice').updates.sent, ['{"u":{"x":0.5}}']);
  assert.deepEqual(s.room.peers.get('bob').updates.sent, []);
  assert.throws(() => s.room.sendUpdate('x'.repeat(16 * 1024)), /limited to 16 KiB/);
});

test('SFU send: refused until the link is open, then enveloped to the server', async (t) => {
  const s = setup(t);
  await joinMesh(s, [], { mode: 'sfu' });
  await assert.rejects(s.room.send({ a: 1 }), /not connected to the SFU yet/);
  openChannels(s.room.sfu);
  await s.room.send({ a: 1 }, { to: 'bob' });
  s.room.sendUpdate({ y: 2 });
  assert.deepEqual(s.room.sfu.reliable.sentJson(), [{ to: 'bob', data: { m: { a: 1 } } }]);
  assert.deepEqual(s.room.sfu.updates.sentJson(), [{ data: { u: { y: 2 } } }]);
});

test('publish reaches current and later mesh peers; unpublish removes every sender', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice']);
  const cam = new FakeTrack('video');
  s.room.publish(cam);
  s.room.publish(cam); // twice is once
  assert.equal(s.room.publications.length, 1);
  assert.deepEqual(s.room.localStream.getTracks(), [cam]);
  s.deliver({ type: 'offer', from: 'bob', offer: { type: 'offer', sdp: 'o' } });
  const [alice, bob] = ['alice', 'bob'].map((id) => s.room.peers.get(id));
  const pub = s.room.publications[0];
  assert.equal(pub.senders.get(alice).track, cam);
  assert.equal(pub.senders.get(bob).track, cam);
  const senders = [pub.senders.get(alice), pub.senders.get(bob)];
  s.room.unpublish(cam);
  assert.deepEqual(alice.pc.removed, [senders[0]]);
  assert.deepEqual(bob.pc.removed, [senders[1]]);
  assert.equal(s.room.publications.length, 0);
  assert.deepEqual(s.room.localStream.getTracks(), []);
  s.room.setMuted(cam, true);
  assert.equal(cam.enabled, false);
});

test('publish in SFU mode adds a sendonly transceiver with simulcast; replaceTrack swaps it', async (t) => {
  const s = setup(t);
  await joinMesh(s, [], { mode: 'sfu' });
  const cam = new FakeTrack('video');
  s.room.publish(cam, { simulcast: true });
  const [tr] = s.room.sfu.pc.transceivers;
  assert.equal(tr.init.direction, 'sendonly');
  assert.deepEqual(tr.init.sendEncodings.map((e) => e.rid), ['q', 'h', 'f']);
  const next = new FakeTrack('video');
  await s.room.replaceTrack(cam, next);
  assert.equal(tr.sender.track, next);
  await assert.rejects(s.room.replaceTrack(cam, next), /track is not published/);
  // A restarted SFU session sends the same publications.
  s.deliver({ type: 'sfu_closed', from: '$sfu', reason: 'timeout' });
  t.mock.timers.tick(500);
  assert.equal(s.room.sfu.pc.transceivers[0].sender.track, next);
});

test('restartIce restarts every connection', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice', 'bob']);
  s.room.restartIce();
  assert.deepEqual([...s.room.peers.values()].map((p) => p.pc.restarts), [1, 1]);
});

test('leave stops the timer, closes the connection and keeps a closed SFU session closed', async (t) => {
  const s = setup(t);
  await joinMesh(s, [], { mode: 'sfu' });
  openChannels(s.room.sfu);
  s.room.leave();
  assert.equal(s.client.closes, 1);
  const link = s.room.sfu;
  t.mock.timers.tick(5000);
  assert.equal(link.updates.sent.length, 0, 'no pings after leave');
  s.deliver({ type: 'sfu_closed', from: '$sfu', reason: 'timeout' });
  t.mock.timers.tick(1000);
  assert.equal(s.room.sfu, link);
});

test('_closePeers (used on close and rejoin) closes every link and ends remote tracks', async (t) => {
  const s = setup(t);
  await joinMesh(s, ['alice']);
  const alice = s.room.peers.get('alice');
  const track = new FakeTrack('video');
  alice.pc.ontrack({ track, streams: [] });
  assert.equal(s.of('track').length, 1);
  s.room._closePeers();
  assert.equal(s.room.peers.size, 0);
  assert.equal(alice.closed, true);
  assert.deepEqual(s.of('track_ended'), [['alice', track.id]]);
});
