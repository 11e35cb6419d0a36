// node --test clients/js/test: the SFU-mode piece codec (chunking.js) round-trips any JSON value
// with every envelope under the budget, never splitting a surrogate pair, and rejects bad pieces.
import test from 'node:test';
import assert from 'node:assert/strict';
import { encodePieces, PieceAssembler, PIECE_BYTES } from '../src/chunking.js';

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
