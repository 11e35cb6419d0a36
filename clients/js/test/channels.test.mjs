// channels.js: the channel plans of each mode, sending with backpressure (waits above the high
// watermark until `bufferedamountlow`, fails when the channel closes), and JSON text parsing.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  HIGH_WATERMARK, LOW_WATERMARK, MESH_CHANNELS, SFU_CHANNELS, SFU_HIGH_WATERMARK,
  parseJsonText, sendWithBackpressure,
} from '../src/channels.js';
import { FakeDataChannel, settle } from '../test-support/fakes.mjs';

test('watermarks', () => {
  assert.equal(LOW_WATERMARK, 64 * 1024);
  assert.equal(HIGH_WATERMARK, 1024 * 1024);
  assert.equal(SFU_HIGH_WATERMARK, 256 * 1024);
});

test('mesh channels are negotiated with fixed ids; "updates" never retransmits', () => {
  assert.deepEqual(MESH_CHANNELS, [
    ['updates', { negotiated: true, id: 0, ordered: true, maxRetransmits: 0 }],
    ['reliable', { negotiated: true, id: 1, ordered: true }],
  ]);
});

test('SFU channels are in-band, "reliable" first', () => {
  assert.deepEqual(SFU_CHANNELS, [
    ['reliable', { ordered: true }],
    ['updates', { ordered: true, maxRetransmits: 0 }],
  ]);
});

function openChannel() {
  const ch = new FakeDataChannel('reliable');
  ch.open();
  return ch;
}

test('under the high watermark every frame is sent at once, in order', async () => {
  const ch = openChannel();
  await sendWithBackpressure(ch, ['a', 'b', 'c'], 'bob', 100);
  assert.deepEqual(ch.sent, ['a', 'b', 'c']);
});

test('above the high watermark sending waits for bufferedamountlow, then goes on', async () => {
  const ch = openChannel();
  ch.bufferPerSend = 60; // "b" finds 60 buffered (goes), "c" finds 120 > 100 (waits)
  let done = false;
  const p = sendWithBackpressure(ch, ['a', 'b', 'c', 'd'], 'bob', 100).then(() => { done = true; });
  await settle();
  assert.deepEqual(ch.sent, ['a', 'b']);
  assert.equal(done, false);
  ch.drain(0);
  await p;
  assert.deepEqual(ch.sent, ['a', 'b', 'c', 'd']);
});

test('a channel that closes while sending is waited on fails the send, naming the peer', async () => {
  const ch = openChannel();
  ch.bufferPerSend = 200;
  const p = sendWithBackpressure(ch, ['a', 'b'], 'bob', 100);
  await settle();
  ch.closeNow();
  await assert.rejects(p, /channel to bob closed/);
  assert.deepEqual(ch.sent, ['a']);
});

test('a closed channel fails the send without sending', async () => {
  const ch = new FakeDataChannel('reliable');
  await assert.rejects(sendWithBackpressure(ch, ['a'], '$sfu', 100), /channel to \$sfu closed/);
  assert.deepEqual(ch.sent, []);
});

test('the wait removes its listeners afterwards', async () => {
  const ch = openChannel();
  ch.bufferPerSend = 200;
  const added = [];
  const removed = [];
  const add = ch.addEventListener.bind(ch);
  const remove = ch.removeEventListener.bind(ch);
  ch.addEventListener = (type, fn) => { added.push(type); add(type, fn); };
  ch.removeEventListener = (type, fn) => { removed.push(type); remove(type, fn); };
  const p = sendWithBackpressure(ch, ['a', 'b'], 'bob', 100);
  await settle();
  ch.drain(0);
  await p;
  assert.deepEqual(added.sort(), ['bufferedamountlow', 'close']);
  assert.deepEqual(removed.sort(), ['bufferedamountlow', 'close']);
});

test('parseJsonText: JSON text parses; binary data and bad JSON are undefined', () => {
  assert.deepEqual(parseJsonText('{"u":{"x":1}}'), { u: { x: 1 } });
  assert.equal(parseJsonText('42'), 42);
  assert.equal(parseJsonText('{nope'), undefined);
  assert.equal(parseJsonText(new ArrayBuffer(4)), undefined);
  assert.equal(parseJsonText(undefined), undefined);
});
