// link.js and peer.js against a fake RTCPeerConnection and a fake room: the negotiated channels,
// peer_connected once both are open, offers on negotiationneeded, perfect negotiation in glare
// (the impolite side ignores the crossing offer, the polite side rolls back and answers), trickle
// ICE, chunked messages, updates and RTT pings, remote tracks, ICE restarts, and falling back to
// no ICE servers when the browser rejects them.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Peer } from '../src/peer.js';
import { HIGH_WATERMARK, LOW_WATERMARK } from '../src/channels.js';
import { encodeChunks, Reassembler } from '../src/chunking.js';
import { newPublication } from '../src/media.js';
import { FakeMediaStream, FakePeerConnection, FakeTrack, fakeRoom, installGlobals, settle } from '../test-support/fakes.mjs';

installGlobals();

function peer({ polite = false, iceServers = [] } = {}) {
  const room = fakeRoom({ iceServers });
  const p = new Peer(room, 'bob', polite);
  return { room, p, pc: /** @type {FakePeerConnection} */ (p.pc) };
}

test('two negotiated channels: "updates" (id 0, no retransmits) then "reliable" (id 1, binary)', () => {
  const { p, pc } = peer({ iceServers: [{ urls: 'turn:t.example' }] });
  assert.deepEqual(pc.channels.map((c) => [c.label, c.init]), [
    ['updates', { negotiated: true, id: 0, ordered: true, maxRetransmits: 0 }],
    ['reliable', { negotiated: true, id: 1, ordered: true }],
  ]);
  assert.equal(p.reliable, pc.channel('reliable'));
  assert.equal(p.reliable.binaryType, 'arraybuffer');
  assert.equal(p.reliable.bufferedAmountLowThreshold, LOW_WATERMARK);
  assert.deepEqual(pc.config, { iceServers: [{ urls: 'turn:t.example' }] });
});

test('peer_connected once both channels are open; isOpen follows "reliable"', () => {
  const { room, p } = peer();
  p.updates.open();
  assert.deepEqual(room.of('peer_connected'), []);
  assert.equal(p.isOpen(), false);
  p.reliable.open();
  assert.deepEqual(room.of('peer_connected'), [['bob']]);
  assert.equal(p.isOpen(), true);
});

test('negotiationneeded sends an offer to the peer', async () => {
  const { room, p, pc } = peer();
  pc.onnegotiationneeded();
  await settle();
  assert.equal(p.makingOffer, false);
  assert.deepEqual(room.client.sent, [{ type: 'offer', target: 'bob', offer: pc.localDescription.toJSON() }]);
  assert.equal(pc.signalingState, 'have-local-offer');
});

test('a closed peer does not offer', async () => {
  const { room, p, pc } = peer();
  p.close();
  pc.onnegotiationneeded();
  await settle();
  assert.deepEqual(room.client.sent, []);
});

test('glare, impolite side: the crossing offer is ignored and so are its candidates', async () => {
  const { room, p, pc } = peer({ polite: false });
  pc.onnegotiationneeded();
  await settle();
  p.onDescription({ type: 'offer', sdp: 'theirs' });
  p.onCandidate({ candidate: 'candidate:theirs' });
  await settle();
  assert.equal(p.ignoreOffer, true);
  assert.equal(pc.signalingState, 'have-local-offer');
  assert.equal(pc.remoteDescription, null);
  assert.deepEqual(room.client.sent.map((m) => m.type), ['offer']);
  // Their answer to our offer settles it.
  p.onDescription({ type: 'answer', sdp: 'their-answer' });
  await settle();
  assert.equal(pc.signalingState, 'stable');
});

test('glare, polite side: rolls back, takes the offer and answers', async () => {
  const { room, p, pc } = peer({ polite: true });
  pc.onnegotiationneeded();
  await settle();
  p.onDescription({ type: 'offer', sdp: 'theirs' });
  await settle();
  assert.equal(p.ignoreOffer, false);
  assert.equal(pc.rollbacks, 1);
  assert.equal(pc.signalingState, 'stable');
  assert.deepEqual(room.client.sent.map((m) => [m.type, m.target]), [['offer', 'bob'], ['answer', 'bob']]);
  assert.equal(room.client.sent[1].answer.type, 'answer');
});

test('trickle ICE: local candidates go to the peer; remote ones are added in order', async () => {
  const { room, p, pc } = peer();
  pc.onicecandidate({ candidate: { candidate: 'candidate:1', toJSON: () => ({ candidate: 'candidate:1', sdpMid: '0' }) } });
  pc.onicecandidate({ candidate: null }); // end of candidates: nothing to send
  pc.onicecandidate({ candidate: { candidate: '', toJSON: () => ({}) } });
  assert.deepEqual(room.client.sent, [{ type: 'ice_candidate', target: 'bob', candidate: { candidate: 'candidate:1', sdpMid: '0' } }]);
  p.onDescription({ type: 'offer', sdp: 'o' });
  p.onCandidate({ candidate: 'candidate:a' });
  p.onCandidate({ candidate: '' });
  p.onCandidate({ candidate: 'candidate:b' });
  await settle();
  assert.deepEqual(pc.candidates.map((c) => c.candidate), ['candidate:a', 'candidate:b']);
});

test('a failing step is logged and does not stop the queue', async () => {
  const { room, p, pc } = peer();
  const logged = [];
  room.client.options.log = (...a) => logged.push(a);
  p.onCandidate({ candidate: 'candidate:early' }); // no remote description yet: fails
  p.onDescription({ type: 'offer', sdp: 'o' });
  await settle();
  assert.ok(logged.some((a) => a[0] === 'negotiation' && a[1] === 'bob'));
  assert.equal(pc.signalingState, 'stable');
});

test('reliable: frames are reassembled into message events; bad frames are errors', () => {
  const { room, p } = peer();
  for (const f of encodeChunks({ n: 1 }, 5)) p.reliable.receive(f);
  p.reliable.receive(new ArrayBuffer(3));
  assert.deepEqual(room.of('message'), [['bob', { n: 1 }]]);
  assert.deepEqual(room.of('error').map((e) => [e[0].code, e[0].from]), [['bad_chunk', 'bob']]);
});

test('sendReliable sends chunk frames with increasing message ids and waits when full', async () => {
  const { p } = peer();
  p.reliable.open();
  await p.sendReliable({ a: 1 });
  await p.sendReliable({ a: 2 });
  const r = new Reassembler();
  assert.deepEqual(p.reliable.sent.map((f) => [new DataView(f).getUint32(0, true), r.push(f).value]), [[1, { a: 1 }], [2, { a: 2 }]]);
  p.reliable.bufferedAmount = HIGH_WATERMARK + 1;
  let done = false;
  const sending = p.sendReliable({ a: 3 }).then(() => { done = true; });
  await settle();
  assert.equal(done, false);
  p.reliable.drain();
  await sending;
  assert.equal(p.reliable.sent.length, 3);
});

test('updates: pings are echoed, echoes are RTT samples, {u} is an update event, junk is ignored', () => {
  const { room, p } = peer();
  p.updates.open();
  p.updates.receive('{"p":123.5}');
  assert.deepEqual(p.updates.sent, ['{"q":123.5}']);
  p.updates.receive(JSON.stringify({ q: performance.now() - 40 }));
  assert.equal(room.samples.length, 1);
  assert.ok(room.samples[0] >= 40 && room.samples[0] < 1000, `sample ${room.samples[0]}`);
  p.updates.receive('{"u":{"x":1}}');
  p.updates.receive('not json');
  p.updates.receive(new ArrayBuffer(2));
  assert.deepEqual(room.of('update'), [['bob', { x: 1 }]]);
  p.ping();
  assert.equal(typeof JSON.parse(p.updates.sent[1]).p, 'number');
});

test('ping does nothing while "updates" is not open', () => {
  const { p } = peer();
  p.ping();
  assert.deepEqual(p.updates.sent, []);
});

test('remote tracks: emitted once, ended when the stream loses them or they end', () => {
  const { room, pc } = peer();
  const track = new FakeTrack('video');
  const stream = new FakeMediaStream([track]);
  pc.ontrack({ track, streams: [stream] });
  pc.ontrack({ track, streams: [stream] }); // a second ontrack for the same track
  assert.deepEqual(room.of('track'), [['bob', track, { kind: 'video', trackId: track.id, mid: null }]]);
  assert.deepEqual(room.remoteTracks.get(`bob/${track.id}`), { publisher: 'bob', trackId: track.id, kind: 'video', mid: null, track, emitted: true });
  const other = new FakeTrack('audio');
  stream.dispatchEvent(Object.assign(new Event('removetrack'), { track: other }));
  assert.deepEqual(room.ended, []);
  stream.dispatchEvent(Object.assign(new Event('removetrack'), { track }));
  track.end();
  assert.deepEqual(room.ended, [`bob/${track.id}`, `bob/${track.id}`]);
});

test('publications are added as tracks in the room stream', () => {
  const { room, p, pc } = peer();
  const pub = newPublication(new FakeTrack('video'), {});
  p.addPublication(pub);
  assert.equal(pub.senders.get(p).track, pub.track);
  assert.equal(pc.transceivers[0].stream, room.localStream);
  p.removeSender(pub.senders.get(p));
  assert.deepEqual(pc.removed, [pub.senders.get(p)]);
  p.close();
  p.removeSender(pub.senders.get(p)); // closed: nothing to remove
  assert.equal(pc.removed.length, 1);
});

test('ICE: restart at once when failed, after 2 s when still disconnected', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { pc } = peer();
  pc.setIceState('failed');
  assert.equal(pc.restarts, 1);
  pc.setIceState('disconnected');
  pc.setIceState('disconnected'); // one timer only
  t.mock.timers.tick(1999);
  assert.equal(pc.restarts, 1);
  t.mock.timers.tick(1);
  assert.equal(pc.restarts, 2);
  pc.setIceState('disconnected');
  pc.setIceState('connected'); // recovered: no restart
  t.mock.timers.tick(2000);
  assert.equal(pc.restarts, 2);
});

test('connection state changes are peer_state events', () => {
  const { room, pc } = peer();
  pc.connectionState = 'connected';
  pc.onconnectionstatechange();
  assert.deepEqual(room.of('peer_state'), [['bob', 'connected']]);
});

test('ICE servers the browser rejects are dropped, with an error event', () => {
  FakePeerConnection.rejectIceServers = true;
  try {
    const { room, pc } = peer({ iceServers: [{ urls: 'turn:bad' }] });
    assert.deepEqual(pc.config.iceServers, []);
    assert.deepEqual(room.of('error').map((e) => e[0].code), ['bad_ice_servers']);
  } finally {
    FakePeerConnection.rejectIceServers = false;
  }
});
