// sfu.js (SfuLink) against a fake RTCPeerConnection and a fake room: in-band channels and
// max-bundle, publications as sendonly transceivers, the client as the impolite side, answers
// only in have-local-offer, down-tracks reported by mid, JSON envelopes both ways (messages,
// pieces, updates, pings to "$server", server messages) and closing with or without bye.
import test from 'node:test';
import assert from 'node:assert/strict';
import { SfuLink } from '../src/sfu.js';
import { SFU_HIGH_WATERMARK } from '../src/channels.js';
import { encodePieces } from '../src/chunking.js';
import { newPublication } from '../src/media.js';
import { FakeTrack, fakeRoom, installGlobals, settle } from '../test-support/fakes.mjs';

installGlobals();

function link(setup = () => {}) {
  const room = fakeRoom();
  setup(room);
  const l = new SfuLink(room);
  return { room, l, pc: l.pc };
}

test('connects to "$sfu" with max-bundle and in-band channels, "reliable" first', () => {
  const { l, pc } = link();
  assert.equal(l.id, '$sfu');
  assert.equal(pc.config.bundlePolicy, 'max-bundle');
  assert.deepEqual(pc.channels.map((c) => [c.label, c.init]), [
    ['reliable', { ordered: true }],
    ['updates', { ordered: true, maxRetransmits: 0 }],
  ]);
});

test('publications already in the room are sent from the start, sendonly, simulcast when asked', () => {
  const cam = new FakeTrack('video');
  const mic = new FakeTrack('audio');
  const { room, l, pc } = link((r) => {
    r.publications.push(newPublication(cam, { simulcast: true }), newPublication(mic, { simulcast: true }));
  });
  assert.deepEqual(pc.transceivers.map((t) => [t.sender.track, t.init.direction, t.init.streams[0] === room.localStream]),
    [[cam, 'sendonly', true], [mic, 'sendonly', true]]);
  assert.deepEqual(pc.transceivers[0].init.sendEncodings.map((e) => e.rid), ['q', 'h', 'f']);
  assert.equal(pc.transceivers[1].init.sendEncodings, undefined);
  assert.equal(room.publications[0].senders.get(l), pc.transceivers[0].sender);
});

test('offers go to "$sfu"; the server\'s answer is taken only after our offer', async () => {
  const { room, l, pc } = link();
  const logged = [];
  room.client.options.log = (...a) => logged.push(a[0]);
  l.onDescription({ type: 'answer', sdp: 'stray' });
  await settle();
  assert.equal(pc.remoteDescription, null);
  assert.deepEqual(logged, ['sfu description'], 'an answer in stable is ignored, not tried');
  pc.onnegotiationneeded();
  await settle();
  assert.deepEqual(room.client.sent.map((m) => [m.type, m.target]), [['offer', '$sfu']]);
  l.onDescription({ type: 'answer', sdp: 'server-answer' });
  await settle();
  assert.equal(pc.signalingState, 'stable');
  assert.equal(pc.remoteDescription.sdp, 'server-answer');
});

test('a server offer is answered; one crossing ours is ignored (the client is impolite)', async () => {
  const { room, l, pc } = link();
  l.onDescription({ type: 'offer', sdp: 'server-offer' });
  await settle();
  assert.deepEqual(room.client.sent.map((m) => [m.type, m.target, m.answer?.type]), [['answer', '$sfu', 'answer']]);
  pc.onnegotiationneeded();
  await settle();
  l.onDescription({ type: 'offer', sdp: 'crossing' });
  await settle();
  assert.equal(l.ignoreOffer, true);
  assert.equal(pc.signalingState, 'have-local-offer');
  assert.equal(pc.rollbacks, 0);
  // Descriptions without SDP are ignored.
  l.onDescription({ type: 'offer' });
  await settle();
  assert.equal(room.client.sent.length, 2);
});

test('down-tracks: mids are reported to the room on ontrack and after each description', async () => {
  const { room, l, pc } = link();
  pc.remoteTrack('3', new FakeTrack('video'));
  assert.deepEqual(room.tried, ['3']);
  pc.remoteTrack(null, new FakeTrack('audio')); // no mid yet: nothing to report
  pc.transceivers.push({ mid: '4', receiver: { track: new FakeTrack('audio') }, sender: null });
  l.onDescription({ type: 'offer', sdp: 'o' });
  await settle();
  assert.deepEqual([...l.seenMids], ['3', '4']);
  assert.deepEqual(room.tried, ['3', '3', '4']);
});

test('incoming envelopes: whole messages, pieces, updates; bad pieces are errors', () => {
  const { room, l } = link();
  l.reliable.receive(JSON.stringify({ from: 'alice', data: { m: { hi: 1 } } }));
  const big = { s: 'y'.repeat(50_000) };
  for (const piece of encodePieces(big, 9)) l.reliable.receive(JSON.stringify({ from: 'bob', data: piece }));
  l.updates.receive(JSON.stringify({ from: 'carol', data: { u: { x: 2 } } }));
  l.reliable.receive(JSON.stringify({ from: 'eve', data: { k: [1, 5, 2, 'x'] } }));
  l.reliable.receive(JSON.stringify({ data: { m: 'no sender' } }));
  l.reliable.receive(JSON.stringify({ from: 'dave', data: 'not an object' }));
  l.reliable.receive('garbage');
  assert.deepEqual(room.of('message'), [['alice', { hi: 1 }], ['bob', big]]);
  assert.deepEqual(room.of('update'), [['carol', { x: 2 }]]);
  assert.deepEqual(room.of('error').map((e) => [e[0].code, e[0].from]), [['bad_chunk', 'eve']]);
});

test('server envelopes: pong is an RTT sample, every topic is a server_message, stream_progress goes to the room', () => {
  const { room, l } = link();
  l.updates.receive(JSON.stringify({ from: '$server', topic: 'pong', data: { q: performance.now() - 25 } }));
  l.reliable.receive(JSON.stringify({ from: '$server', topic: 'stream_progress', data: { task_id: 't', chunks: 1 } }));
  l.reliable.receive(JSON.stringify({ from: '$server', data: 'untitled' }));
  assert.equal(room.samples.length, 1);
  assert.ok(room.samples[0] >= 25 && room.samples[0] < 1000);
  assert.deepEqual(room.of('server_message').map((e) => e[0]), ['pong', 'stream_progress', '']);
  assert.deepEqual(room.progress, [{ task_id: 't', chunks: 1 }]);
  assert.deepEqual(room.of('message'), []);
});

test('outgoing: reliable pieces with an optional recipient, updates framed, pings to "$server"', async () => {
  const { l } = link();
  l.sendUpdate('{"u":1}'); // not open: dropped
  l.ping();
  l.reliable.open();
  l.updates.open();
  await l.sendReliable({ a: 1 }, 'bob');
  await l.sendReliable({ a: 2 });
  assert.deepEqual(l.reliable.sentJson(), [{ to: 'bob', data: { m: { a: 1 } } }, { data: { m: { a: 2 } } }]);
  l.sendUpdate('{"u":{"x":1}}', 'bob');
  l.sendUpdate('{"u":{"x":2}}');
  l.ping();
  assert.deepEqual(l.updates.sent.slice(0, 2), ['{"to":"bob","data":{"u":{"x":1}}}', '{"data":{"u":{"x":2}}}']);
  const ping = JSON.parse(l.updates.sent[2]);
  assert.equal(ping.to, '$server');
  assert.equal(typeof ping.data.p, 'number');
});

test('a large send is cut into pieces and waits above the SFU watermark', async () => {
  const { l } = link();
  l.reliable.open();
  l.reliable.bufferPerSend = SFU_HIGH_WATERMARK / 2 + 1;
  let done = false;
  const sending = l.sendReliable({ s: 'z'.repeat(100_000) }).then(() => { done = true; });
  await settle();
  assert.equal(l.reliable.sent.length, 2);
  assert.equal(done, false);
  for (let i = 0; i < 20 && !done; i++) {
    l.reliable.drain();
    await settle();
  }
  assert.equal(done, true);
  assert.ok(l.reliable.sentJson().every((f) => 'k' in f.data));
});

test('close says bye when the signaling socket is open, once; close(false) does not', () => {
  const a = link();
  a.l.close();
  a.l.close();
  assert.deepEqual(a.room.client.sent, [{ type: 'bye', target: '$sfu' }]);
  assert.equal(a.pc.signalingState, 'closed');
  const b = link();
  b.l.close(false);
  assert.deepEqual(b.room.client.sent, []);
  const c = link();
  c.room.client.ws = { readyState: 3 };
  c.l.close();
  assert.deepEqual(c.room.client.sent, []);
});

test('ICE failure restarts ICE unless closed', () => {
  const { l, pc } = link();
  pc.setIceState('failed');
  assert.equal(pc.restarts, 1);
  l.close(false);
  pc.setIceState('failed');
  assert.equal(pc.restarts, 1);
});
