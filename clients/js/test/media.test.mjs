// media.js: publications (simulcast for video only), the SFU's sendonly transceiver init with
// fresh simulcast encodings, withdrawing and swapping a published track on every sender, screen
// sharing in place of the camera and back, and subscription defaults and clamping.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  SIMULCAST_ENCODINGS, endScreenShare, newPublication, sfuTransceiverInit, startScreenShare,
  subscribeMessage, subscription, swapPublishedTrack, withdrawPublication,
} from '../src/media.js';
import { FakeMediaStream, FakeSender, FakeTrack, settle } from '../test-support/fakes.mjs';

test('simulcast encodings: q, h, f at 1/4, 1/2 and full resolution', () => {
  assert.deepEqual(SIMULCAST_ENCODINGS.map((e) => [e.rid, e.scaleResolutionDownBy]), [['q', 4], ['h', 2], ['f', 1]]);
});

test('newPublication: simulcast only when asked and only for video; no senders yet', () => {
  const video = new FakeTrack('video');
  const audio = new FakeTrack('audio');
  assert.equal(newPublication(video, { simulcast: true }).simulcast, true);
  assert.equal(newPublication(video, {}).simulcast, false);
  assert.equal(newPublication(audio, { simulcast: true }).simulcast, false);
  const pub = newPublication(video, {});
  assert.equal(pub.track, video);
  assert.equal(pub.senders.size, 0);
});

test('sfuTransceiverInit: sendonly in the local stream, simulcast encodings as copies', () => {
  const stream = new FakeMediaStream();
  const plain = sfuTransceiverInit(newPublication(new FakeTrack('video'), {}), stream);
  assert.deepEqual(plain, { direction: 'sendonly', streams: [stream] });
  const sim = sfuTransceiverInit(newPublication(new FakeTrack('video'), { simulcast: true }), null);
  assert.deepEqual(sim, { direction: 'sendonly', sendEncodings: SIMULCAST_ENCODINGS });
  assert.notEqual(sim.sendEncodings[0], SIMULCAST_ENCODINGS[0]);
  sim.sendEncodings[0].active = false; // a browser may write to them
  assert.equal('active' in SIMULCAST_ENCODINGS[0], false);
});

test('withdrawPublication removes the sender from every link and forgets them', () => {
  const pub = newPublication(new FakeTrack('video'), {});
  const removed = [];
  const linkA = { removeSender: (s) => removed.push(['A', s]) };
  const linkB = { removeSender: (s) => removed.push(['B', s]) };
  const sa = new FakeSender(pub.track);
  const sb = new FakeSender(pub.track);
  pub.senders.set(linkA, sa).set(linkB, sb);
  withdrawPublication(pub);
  assert.deepEqual(removed, [['A', sa], ['B', sb]]);
  assert.equal(pub.senders.size, 0);
});

test('swapPublishedTrack replaces the track on every sender and in the stream', async () => {
  const camera = new FakeTrack('video');
  const next = new FakeTrack('video');
  const stream = new FakeMediaStream([camera]);
  const pub = newPublication(camera, {});
  const s1 = new FakeSender(camera);
  const s2 = new FakeSender(camera);
  pub.senders.set({ removeSender() {} }, s1).set({ removeSender() {} }, s2);
  await swapPublishedTrack(pub, next, stream);
  assert.equal(pub.track, next);
  assert.deepEqual([s1.track, s2.track], [next, next]);
  assert.deepEqual(stream.getTracks(), [next]);
});

/** A room as screen sharing sees it, replacing tracks with swapPublishedTrack. */
function screenRoom(tracks) {
  const room = {
    publications: tracks.map((t) => newPublication(t, {})),
    _screen: null,
    stream: new FakeMediaStream(tracks),
    async replaceTrack(prev, next) {
      const pub = room.publications.find((p) => p.track === prev);
      if (!pub) throw new Error('track is not published');
      await swapPublishedTrack(pub, next, room.stream);
    },
    stopScreenShare: () => endScreenShare(room),
  };
  return room;
}

/** Makes navigator.mediaDevices.getDisplayMedia resolve with `screen` (node has no navigator). */
function fakeDisplay(t, screen) {
  const asked = [];
  const previous = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
  Object.defineProperty(globalThis, 'navigator', {
    configurable: true,
    value: { mediaDevices: { getDisplayMedia: async (c) => { asked.push(c); return new FakeMediaStream(screen ? [screen] : []); } } },
  });
  t.after(() => {
    if (previous) Object.defineProperty(globalThis, 'navigator', previous);
    else delete globalThis.navigator;
  });
  return asked;
}

test('screen share: sent in place of the camera; stopping puts the camera back', async (t) => {
  const camera = new FakeTrack('video');
  const mic = new FakeTrack('audio');
  const screen = new FakeTrack('video', 'screen:0');
  const asked = fakeDisplay(t, screen);
  const room = screenRoom([mic, camera]);
  const got = await startScreenShare(room, { video: true, audio: false });
  assert.equal(got, screen);
  assert.deepEqual(asked, [{ video: true, audio: false }]);
  assert.equal(room.publications[1].track, screen);
  assert.deepEqual(room._screen, { screen, camera });
  // Asking again while sharing returns the same screen without asking the browser.
  assert.equal(await startScreenShare(room, { video: true }), screen);
  assert.equal(asked.length, 1);
  await endScreenShare(room);
  assert.equal(room._screen, null);
  assert.equal(screen.readyState, 'ended');
  assert.equal(room.publications[1].track, camera);
  assert.deepEqual(room.stream.getTracks(), [mic, camera]);
});

test('screen share: the browser ending the screen track puts the camera back', async (t) => {
  const camera = new FakeTrack('video');
  const screen = new FakeTrack('video');
  fakeDisplay(t, screen);
  const room = screenRoom([camera]);
  await startScreenShare(room, { video: true });
  screen.end();
  await settle();
  assert.equal(room._screen, null);
  assert.equal(room.publications[0].track, camera);
});

test('screen share needs a published camera and a screen track', async (t) => {
  fakeDisplay(t, null);
  await assert.rejects(startScreenShare(screenRoom([new FakeTrack('audio')]), {}), /publish a camera track first/);
  await assert.rejects(startScreenShare(screenRoom([new FakeTrack('video')]), {}), /no screen track/);
  await endScreenShare(screenRoom([])); // nothing to stop: no-op
});

test('subscription defaults: video on, top layer', () => {
  assert.deepEqual(subscription({}), { video: true, maxLayer: 2 });
  assert.deepEqual(subscription({ video: false, maxLayer: 0 }), { video: false, maxLayer: 0 });
});

test('subscribeMessage clamps the layer to 0..2', () => {
  assert.deepEqual(subscribeMessage('alice', { video: true, maxLayer: 7 }), { type: 'subscribe', publisher: 'alice', video: true, max_layer: 2 });
  assert.deepEqual(subscribeMessage('bob', { video: false, maxLayer: -3 }), { type: 'subscribe', publisher: 'bob', video: false, max_layer: 0 });
  assert.deepEqual(subscribeMessage('eve', {}), { type: 'subscribe', publisher: 'eve', video: true, max_layer: 2 });
});
