// chunking.js. Mesh mode: binary frames of at most CHUNK_BYTES round-trip any JSON value, in or
// out of order, and malformed frames are rejected. SFU mode: the piece codec round-trips any JSON
// value with every envelope under the budget, never splitting a surrogate pair, and rejects bad
// pieces.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  CHUNK_BYTES, encodeChunks, encodePieces, PieceAssembler, PIECE_BYTES, Reassembler,
} from '../src/chunking.js';

const enc = new TextEncoder();

function roundTrip(value, budget = PIECE_BYTES) {
  const pieces = encodePieces(value, 7, budget);
  for (const p of pieces) {
    const bytes = enc.encode(JSON.stringify({ to: 'someone', data: p })).length;
    assert.ok(bytes <= budget + 64, `piece of ${bytes} bytes`);
    if ('k' in p) {
      const s = p.k[3];
      const last = s.charCodeAt(s.length - 1);
      assert.ok(!(last >= 0xd800 && last <= 0xdbff), 'slice ends in a high surrogate');
    }
  }
  const a = new PieceAssembler();
  let out;
  // Deliver in order (the channel is ordered), wrapped the way the SDK sends them.
  for (const p of pieces.map((p) => JSON.parse(JSON.stringify(p)))) {
    if ('m' in p) out = { done: true, value: p.m };
    else out = a.push('alice', p.k);
  }
  assert.ok(out.done);
  assert.deepEqual(out.value, value);
  return pieces.length;
}

test('small values are one {m}', () => {
  assert.equal(roundTrip({ hello: 'world' }), 1);
  assert.equal(roundTrip(null), 1);
});

test('1 MiB of ASCII is cut into ≤16 KiB pieces', () => {
  const n = roundTrip({ big: 'x'.repeat(1 << 20) });
  assert.ok(n >= 64 && n <= 70, `${n} pieces`);
});

test('escapes, multibyte and astral characters stay within budget', () => {
  let s = '';
  for (let i = 0; i < 30000; i++) s += ['"', '\\', '\u0001', '\n', 'é', '€', '😀', 'a'][i % 8];
  roundTrip({ s }, 1000);
  roundTrip({ s });
  roundTrip('😀'.repeat(20000), 999);
});

test('bad pieces are rejected', () => {
  const a = new PieceAssembler();
  for (const k of [null, [], [1, 0, 0, ''], [1, 2, 2, ''], [1, 0, 1, 5], ['x', 0, 1, ''], [1, -1, 2, ''], [1, 0, 1e9, '']]) {
    assert.throws(() => a.push('bob', k));
  }
  a.push('bob', [1, 0, 2, '[1,']);
  assert.throws(() => a.push('bob', [1, 1, 3, '2]']), /count changed/);
});

test('partials per sender are bounded', () => {
  const a = new PieceAssembler();
  for (let id = 0; id < 1000; id++) a.push('eve', [id, 0, 2, '1']);
  assert.ok(a.bySender.get('eve').size <= 16);
  a.forget('eve');
  assert.equal(a.bySender.size, 0);
});

// ---- mesh mode: binary frames ----------------------------------------------------------------

test('a small value is one frame with a 12-byte header (id, index, count)', () => {
  const frames = encodeChunks({ a: 1 }, 9);
  assert.equal(frames.length, 1);
  const v = new DataView(frames[0]);
  assert.deepEqual([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true)], [9, 0, 1]);
  assert.equal(frames[0].byteLength, 12 + '{"a":1}'.length);
  const r = new Reassembler().push(frames[0]);
  assert.deepEqual(r, { done: true, value: { a: 1 } });
});

test('1 MiB is cut into frames of at most CHUNK_BYTES and rebuilt, even out of order', () => {
  const value = { big: 'é'.repeat(1 << 19) }; // 1 MiB of UTF-8
  const frames = encodeChunks(value, 3);
  assert.equal(frames.length, Math.ceil(((1 << 20) + 10) / (CHUNK_BYTES - 12)));
  assert.ok(frames.every((f) => f.byteLength <= CHUNK_BYTES));
  const order = frames.map((_, i) => i).reverse();
  const r = new Reassembler();
  let out;
  for (const i of order) out = r.push(frames[i]);
  assert.equal(out.done, true);
  assert.deepEqual(out.value, value);
  assert.equal(r.partials.size, 0);
});

test('interleaved messages are rebuilt separately; a repeated frame is ignored', () => {
  const a = encodeChunks('a'.repeat(40000), 1);
  const b = encodeChunks('b'.repeat(40000), 2);
  const r = new Reassembler();
  assert.equal(r.push(a[0]).done, false);
  assert.equal(r.push(b[0]).done, false);
  assert.equal(r.push(a[0]).done, false);
  assert.equal(r.push(a[1]).done, false);
  assert.equal(r.push(b[1]).done, false);
  assert.deepEqual(r.push(a[2]), { done: true, value: 'a'.repeat(40000) });
  assert.deepEqual(r.push(b[2]), { done: true, value: 'b'.repeat(40000) });
});

test('malformed frames are rejected', () => {
  const r = new Reassembler();
  const frame = (id, i, n) => {
    const buf = new ArrayBuffer(13);
    const v = new DataView(buf);
    v.setUint32(0, id, true);
    v.setUint32(4, i, true);
    v.setUint32(8, n, true);
    return buf;
  };
  assert.throws(() => r.push('text'), /bad frame/);
  assert.throws(() => r.push(new ArrayBuffer(11)), /bad frame/);
  assert.throws(() => r.push(frame(1, 0, 0)), /bad chunk header/);
  assert.throws(() => r.push(frame(1, 2, 2)), /bad chunk header/);
  assert.throws(() => r.push(frame(1, 0, 1e9)), /bad chunk header/);
  r.push(frame(5, 0, 3));
  assert.throws(() => r.push(frame(5, 1, 4)), /chunk count changed/);
});

test('partial messages per peer are bounded (the oldest is dropped)', () => {
  const r = new Reassembler();
  for (let id = 0; id < 40; id++) r.push(encodeChunks('x'.repeat(20000), id)[0]);
  assert.equal(r.partials.size, 16);
  assert.deepEqual([...r.partials.keys()].slice(0, 2), [24, 25]);
});
