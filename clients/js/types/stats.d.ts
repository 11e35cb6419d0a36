/** @typedef {{ p50: number|null, p95: number|null, p99: number|null, count: number }} RttStats */
/**
 * Records one sample in both buffers, keeping each within its bound.
 * @param {number[]} samples all recent samples
 * @param {number[]} unreported samples not yet sent to the server
 * @param {number} ms
 */
export function addRttSample(samples: number[], unreported: number[], ms: number): void;
/**
 * The samples to report now (taken out of `unreported`), or null when there are none or the last
 * report was under `RTT_REPORT_MS` ago.
 * @param {number[]} unreported
 * @param {number|undefined} lastReport when the last report was sent (ms), if ever
 * @param {number} now
 * @returns {number[]|null}
 */
export function takeRttReport(unreported: number[], lastReport: number | undefined, now: number): number[] | null;
/**
 * Percentiles of `samples` (ms): the sample at index ⌊q·n⌋ of the sorted samples (clamped), null
 * when there are none.
 * @param {number[]} samples
 * @returns {RttStats}
 */
export function rttStats(samples: number[]): RttStats;
/** How often each link is pinged. */
export const RTT_INTERVAL_MS: 1000;
/** Least time between two `rtt_report` messages to the server. */
export const RTT_REPORT_MS: 5000;
/** Samples kept for `stats()`; the oldest go first. */
export const MAX_RTT_SAMPLES: 2048;
/** Samples waiting to be reported; more are dropped until the next report. */
export const MAX_RTT_UNREPORTED: 256;
export type RttStats = {
    p50: number | null;
    p95: number | null;
    p99: number | null;
    count: number;
};
