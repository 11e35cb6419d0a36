// emitter.js: handlers get the emitted arguments, `on` returns a working unsubscribe, events are
// kept apart, and a throwing handler is logged without stopping the others.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Emitter } from '../src/emitter.js';

test('on: handlers receive the emitted arguments, in subscription order', () => {
  const e = new Emitter();
  const calls = [];
  e.on('x', (a, b) => calls.push(['first', a, b]));
  e.on('x', (a, b) => calls.push(['second', a, b]));
  e.emit('x', 1, 'two');
  assert.deepEqual(calls, [['first', 1, 'two'], ['second', 1, 'two']]);
});

test('the function `on` returns unsubscribes that handler only', () => {
  const e = new Emitter();
  const calls = [];
  const off = e.on('x', () => calls.push('a'));
  e.on('x', () => calls.push('b'));
  e.emit('x');
  off();
  e.emit('x');
  off(); // twice is harmless
  e.emit('x');
  assert.deepEqual(calls, ['a', 'b', 'b', 'b']);
});

test('events are kept apart, and emitting one nobody listens to is a no-op', () => {
  const e = new Emitter();
  const calls = [];
  e.on('a', (v) => calls.push(`a:${v}`));
  e.on('b', (v) => calls.push(`b:${v}`));
  e.emit('b', 1);
  e.emit('nobody', 2);
  e.emit('a', 3);
  assert.deepEqual(calls, ['b:1', 'a:3']);
});

test('a throwing handler is logged and the next handler still runs', (t) => {
  const logged = t.mock.method(console, 'error', () => {});
  const e = new Emitter();
  const calls = [];
  e.on('x', () => { throw new Error('boom'); });
  e.on('x', () => calls.push('after'));
  e.emit('x');
  assert.deepEqual(calls, ['after']);
  assert.equal(logged.mock.callCount(), 1);
  assert.equal(logged.mock.calls[0].arguments[0], 'switchboard: x handler failed');
  assert.equal(logged.mock.calls[0].arguments[1].message, 'boom');
});

test('a handler may unsubscribe itself while the event is being emitted', () => {
  const e = new Emitter();
  const calls = [];
  const off = e.on('x', () => { calls.push('once'); off(); });
  e.on('x', () => calls.push('always'));
  e.emit('x');
  e.emit('x');
  assert.deepEqual(calls, ['once', 'always', 'always']);
});
