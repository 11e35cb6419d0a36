// stats.js: percentiles over known samples, the bounds of both sample buffers, and when an
// rtt_report is due and what it carries.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  addRttSample, rttStats, takeRttReport, MAX_RTT_SAMPLES, MAX_RTT_UNREPORTED, RTT_REPORT_MS,
} from '../src/stats.js';

test('no samples: null percentiles, count 0', () => {
  assert.deepEqual(rttStats([]), { p50: null, p95: null, p99: null, count: 0 });
});

test('percentiles are the sample at index floor(q * n) of the sorted samples', () => {
  // 1..100 shuffled: index 50 -> 51, index 95 -> 96, index 99 -> 100.
  const samples = Array.from({ length: 100 }, (_, i) => ((i * 37) % 100) + 1);
  assert.deepEqual(rttStats(samples), { p50: 51, p95: 96, p99: 100, count: 100 });
  // Few samples: the index is clamped to the last one.
  assert.deepEqual(rttStats([30, 10, 20]), { p50: 20, p95: 30, p99: 30, count: 3 });
  assert.deepEqual(rttStats([7]), { p50: 7, p95: 7, p99: 7, count: 1 });
});

test('percentiles sort numerically, not as strings, and leave the input alone', () => {
  const samples = [100, 9, 20, 3];
  assert.deepEqual(rttStats(samples), { p50: 20, p95: 100, p99: 100, count: 4 });
  assert.deepEqual(samples, [100, 9, 20, 3]);
});

test('addRttSample keeps the newest MAX_RTT_SAMPLES and stops queueing for report at the cap', () => {
  const all = [];
  const unreported = [];
  for (let i = 0; i < MAX_RTT_SAMPLES + 10; i++) addRttSample(all, unreported, i);
  assert.equal(all.length, MAX_RTT_SAMPLES);
  assert.equal(all[0], 10);
  assert.equal(all[all.length - 1], MAX_RTT_SAMPLES + 9);
  assert.equal(unreported.length, MAX_RTT_UNREPORTED);
  assert.deepEqual(unreported.slice(0, 3), [0, 1, 2]);
});

test('takeRttReport: nothing to report, not yet due, then due', () => {
  assert.equal(takeRttReport([], undefined, 1_000_000), null);
  const unreported = [5, 6, 7];
  // Never reported: due at once, and the samples are taken out.
  assert.deepEqual(takeRttReport(unreported, undefined, 1_000_000), [5, 6, 7]);
  assert.deepEqual(unreported, []);
  unreported.push(8);
  assert.equal(takeRttReport(unreported, 1_000_000, 1_000_000 + RTT_REPORT_MS - 1), null);
  assert.deepEqual(unreported, [8]);
  assert.deepEqual(takeRttReport(unreported, 1_000_000, 1_000_000 + RTT_REPORT_MS), [8]);
});

test('takeRttReport takes at most MAX_RTT_UNREPORTED samples', () => {
  const unreported = Array.from({ length: MAX_RTT_UNREPORTED + 4 }, (_, i) => i);
  const report = takeRttReport(unreported, undefined, 1);
  assert.equal(report.length, MAX_RTT_UNREPORTED);
  assert.deepEqual(unreported, [256, 257, 258, 259]);
});
