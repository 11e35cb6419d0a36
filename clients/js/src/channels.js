// The DataChannel layer shared by mesh peers and the SFU link: how the "updates" and "reliable"
// channels are configured in each mode, the buffered-amount watermarks, sending with
// backpressure, and parsing text frames as JSON. Message framing (chunking) is chunking.js.

/** Buffered bytes under which a waiting `send` resumes. */
export const LOW_WATERMARK = 64 * 1024;
/** Buffered bytes at which `send` waits for the channel to drain. */
export const HIGH_WATERMARK = 1024 * 1024;
/** Buffered bytes at which an SFU-mode `send` waits (the server's relay queues are bounded). */
export const SFU_HIGH_WATERMARK = 256 * 1024;

/** @typedef {'reliable'|'updates'} ChannelLabel */
/** @typedef {Array<[ChannelLabel, RTCDataChannelInit]>} ChannelPlan channels in creation order */

/**
 * Mesh: negotiated channels (fixed ids, both sides create them), so both sides may offer at
 * once (glare), which perfect negotiation resolves. "updates" drops rather than retransmits.
 * @type {ChannelPlan}
 */
export const MESH_CHANNELS = [
  ['updates', { negotiated: true, id: 0, ordered: true, maxRetransmits: 0 }],
  ['reliable', { negotiated: true, id: 1, ordered: true }],
];

/**
 * SFU: in-band channels the client opens before its first offer (docs/sfu-protocol.md).
 * @type {ChannelPlan}
 */
export const SFU_CHANNELS = [
  ['reliable', { ordered: true }],
  ['updates', { ordered: true, maxRetransmits: 0 }],
];

/** Sends `frames` on `ch`, waiting for it to drain below the low watermark when it is full.
 * @param {RTCDataChannel} ch
 * @param {Iterable<string|ArrayBuffer>} frames
 * @param {string} what for the error message
 * @param {number} high
 */
export async function sendWithBackpressure(ch, frames, what, high) {
  for (const frame of frames) {
    if (ch.bufferedAmount > high) {
      await new Promise((resolve) => {
        const done = () => {
          ch.removeEventListener('bufferedamountlow', done);
          ch.removeEventListener('close', done);
          resolve(undefined);
        };
        ch.addEventListener('bufferedamountlow', done);
        ch.addEventListener('close', done);
      });
    }
    if (ch.readyState !== 'open') throw new Error(`channel to ${what} closed`);
    ch.send(/** @type {any} */ (frame));
  }
}

/**
 * A DataChannel text message parsed as JSON; `undefined` for binary data or invalid JSON.
 * @param {unknown} raw
 * @returns {any}
 */
export function parseJsonText(raw) {
  if (typeof raw !== 'string') return undefined;
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}
