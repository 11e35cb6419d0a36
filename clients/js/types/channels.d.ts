/** Sends `frames` on `ch`, waiting for it to drain below the low watermark when it is full.
 * @param {RTCDataChannel} ch
 * @param {Iterable<string|ArrayBuffer>} frames
 * @param {string} what for the error message
 * @param {number} high
 */
export function sendWithBackpressure(ch: RTCDataChannel, frames: Iterable<string | ArrayBuffer>, what: string, high: number): Promise<void>;
/**
 * A DataChannel text message parsed as JSON; `undefined` for binary data or invalid JSON.
 * @param {unknown} raw
 * @returns {any}
 */
export function parseJsonText(raw: unknown): any;
/** Buffered bytes under which a waiting `send` resumes. */
export const LOW_WATERMARK: number;
/** Buffered bytes at which `send` waits for the channel to drain. */
export const HIGH_WATERMARK: number;
/** Buffered bytes at which an SFU-mode `send` waits (the server's relay queues are bounded). */
export const SFU_HIGH_WATERMARK: number;
/** @typedef {'reliable'|'updates'} ChannelLabel */
/** @typedef {Array<[ChannelLabel, RTCDataChannelInit]>} ChannelPlan channels in creation order */
/**
 * Mesh: negotiated channels (fixed ids, both sides create them), so both sides may offer at
 * once (glare), which perfect negotiation resolves. "updates" drops rather than retransmits.
 * @type {ChannelPlan}
 */
export const MESH_CHANNELS: ChannelPlan;
/**
 * SFU: in-band channels the client opens before its first offer (docs/sfu-protocol.md).
 * @type {ChannelPlan}
 */
export const SFU_CHANNELS: ChannelPlan;
export type ChannelLabel = "reliable" | "updates";
/**
 * channels in creation order
 */
export type ChannelPlan = Array<[ChannelLabel, RTCDataChannelInit]>;
