// record.js: picks the first supported container, records a track in a stream of its own,
// collects non-empty timeslices, stops once into one Blob, and downloads it through a link.
import test from 'node:test';
import assert from 'node:assert/strict';
import { record } from '../src/record.js';
import { FakeMediaStream, FakeTrack } from '../test-support/fakes.mjs';

class FakeRecorder extends EventTarget {
  static supported = ['video/webm', 'audio/webm'];
  static last = null;
  static isTypeSupported(t) {
    return FakeRecorder.supported.includes(t);
  }
  constructor(stream, opts) {
    super();
    this.stream = stream;
    this.opts = opts;
    this.mimeType = opts.mimeType ?? '';
    this.state = 'inactive';
    this.timeslice = null;
    this.stops = 0;
    this.ondataavailable = null;
    FakeRecorder.last = this;
  }
  start(timeslice) {
    this.state = 'recording';
    this.timeslice = timeslice;
  }
  stop() {
    this.stops++;
    this.state = 'inactive';
    queueMicrotask(() => this.dispatchEvent(new Event('stop')));
  }
  data(text) {
    this.ondataavailable?.({ data: new Blob([text]) });
  }
}

test.beforeEach(() => {
  globalThis.MediaRecorder = FakeRecorder;
  globalThis.MediaStream = FakeMediaStream;
  FakeRecorder.supported = ['video/webm', 'audio/webm'];
});

test('a track is recorded in a stream of its own, with the first supported type', () => {
  const track = new FakeTrack('video');
  const r = record(track);
  const rec = FakeRecorder.last;
  assert.ok(rec.stream instanceof FakeMediaStream);
  assert.deepEqual(rec.stream.getTracks(), [track]);
  assert.deepEqual(rec.opts, { mimeType: 'video/webm' });
  assert.equal(r.mimeType, 'video/webm');
  assert.equal(rec.timeslice, 1000);
  r.stop();
});

test('a stream is recorded as is; the timeslice is at least 10 ms; a given type wins', () => {
  const stream = new FakeMediaStream([new FakeTrack('audio')]);
  record(stream, { timesliceMs: 1, mimeType: 'audio/ogg' });
  assert.equal(FakeRecorder.last.stream, stream);
  assert.equal(FakeRecorder.last.timeslice, 10);
  assert.deepEqual(FakeRecorder.last.opts, { mimeType: 'audio/ogg' });
});

test('no supported type: the browser picks, and the result falls back to video/webm', () => {
  FakeRecorder.supported = [];
  const r = record(new FakeTrack('video'));
  assert.deepEqual(FakeRecorder.last.opts, {});
  assert.equal(r.mimeType, 'video/webm');
});

test('stop: one Blob of the non-empty chunks, stopping the recorder once', async () => {
  const r = record(new FakeTrack('video'), { timesliceMs: 300 });
  const rec = FakeRecorder.last;
  rec.data('ab');
  rec.data('');
  rec.data('cd');
  assert.equal(r.chunks.length, 2);
  const blob = await r.stop();
  assert.equal(blob.type, 'video/webm');
  assert.equal(await blob.text(), 'abcd');
  assert.equal(await r.stop(), blob);
  assert.equal(rec.stops, 1);
});

test('download: the Blob is offered as a file through a temporary link', async (t) => {
  const clicks = [];
  const body = [];
  globalThis.document = {
    createElement: () => ({ href: '', download: '', click() { clicks.push([this.href, this.download]); }, remove() { body.splice(body.indexOf(this), 1); } }),
    body: { append: (a) => body.push(a) },
  };
  t.mock.method(URL, 'createObjectURL', () => 'blob:fake');
  t.mock.method(URL, 'revokeObjectURL', () => {});
  t.mock.timers.enable({ apis: ['setTimeout'] });
  t.after(() => { delete globalThis.document; });
  const r = record(new FakeTrack('video'));
  FakeRecorder.last.data('xyz');
  const blob = await r.download('take1.webm');
  assert.equal(await blob.text(), 'xyz');
  assert.deepEqual(clicks, [['blob:fake', 'take1.webm']]);
  assert.equal(body.length, 0);
  assert.equal(URL.revokeObjectURL.mock.callCount(), 0);
  t.mock.timers.tick(10_000);
  assert.deepEqual(URL.revokeObjectURL.mock.calls.map((c) => c.arguments[0]), ['blob:fake']);
});
