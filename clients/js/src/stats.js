// Round-trip-time bookkeeping: the ping cadence, the bounded sample buffers a room keeps (all
// recent samples for `stats()`, and those not yet reported to the server), when a report is due,
// and the percentiles `room.stats()` shows. The pings themselves go over each link's "updates"
// channel (peer.js, sfu.js).

/** How often each link is pinged. */
export const RTT_INTERVAL_MS = 1000;
/** Least time between two `rtt_report` messages to the server. */
export const RTT_REPORT_MS = 5000;
/** Samples kept for `stats()`; the oldest go first. */
export const MAX_RTT_SAMPLES = 2048;
/** Samples waiting to be reported; more are dropped until the next report. */
export const MAX_RTT_UNREPORTED = 256;

/** @typedef {{ p50: number|null, p95: number|null, p99: number|null, count: number }} RttStats */

/**
 * Records one sample in both buffers, keeping each within its bound.
 * @param {number[]} samples all recent samples
 * @param {number[]} unreported samples not yet sent to the server
 * @param {number} ms
 */
export function addRttSample(samples, unreported, ms) {
  samples.push(ms);
  if (samples.length > MAX_RTT_SAMPLES) samples.shift();
  if (unreported.length < MAX_RTT_UNREPORTED) unreported.push(ms);
}

/**
 * The samples to report now (taken out of `unreported`), or null when there are none or the last
 * report was under `RTT_REPORT_MS` ago.
 * @param {number[]} unreported
 * @param {number|undefined} lastReport when the last report was sent (ms), if ever
 * @param {number} now
 * @returns {number[]|null}
 */
export function takeRttReport(unreported, lastReport, now) {
  if (!unreported.length || (lastReport && now - lastReport < RTT_REPORT_MS)) return null;
  return unreported.splice(0, MAX_RTT_UNREPORTED);
}

/**
 * Percentiles of `samples` (ms): the sample at index ⌊q·n⌋ of the sorted samples (clamped), null
 * when there are none.
 * @param {number[]} samples
 * @returns {RttStats}
 */
export function rttStats(samples) {
  const s = [...samples].sort((a, b) => a - b);
  /** @param {number} q */
  const pct = (q) => (s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : null);
  return { p50: pct(0.5), p95: pct(0.95), p99: pct(0.99), count: s.length };
}
