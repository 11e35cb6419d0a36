// Chunking and reassembly for DataChannel messages: a JSON value is encoded as UTF-8 and cut
// into binary frames of at most CHUNK_BYTES (12-byte header + payload), so large messages never
// exceed what every browser's SCTP stack accepts, and the receiver rebuilds them in order.

/** Largest frame put on a DataChannel, header included. */
export const CHUNK_BYTES = 16 * 1024;
const HEADER = 12;
/** Largest reassembled message accepted from a peer. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Partial messages kept per peer before the oldest is dropped. */
const MAX_PARTIALS = 16;

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Splits a JSON-serializable value into frames.
 * @param {unknown} value
 * @param {number} msgId 32-bit message id
 * @returns {ArrayBuffer[]}
 */
export function encodeChunks(value, msgId) {
  const bytes = enc.encode(JSON.stringify(value));
  const body = CHUNK_BYTES - HEADER;
  const count = Math.max(1, Math.ceil(bytes.length / body));
  /** @type {ArrayBuffer[]} */
  const frames = [];
  for (let i = 0; i < count; i++) {
    const piece = bytes.subarray(i * body, Math.min(bytes.length, (i + 1) * body));
    const buf = new ArrayBuffer(HEADER + piece.length);
    const view = new DataView(buf);
    view.setUint32(0, msgId >>> 0, true);
    view.setUint32(4, i, true);
    view.setUint32(8, count, true);
    new Uint8Array(buf, HEADER).set(piece);
    frames.push(buf);
  }
  return frames;
}

/** Rebuilds messages from frames of one peer. */
export class Reassembler {
  constructor() {
    /** @type {Map<number, {parts: Uint8Array[], got: number, count: number, bytes: number}>} */
    this.partials = new Map();
  }

  /**
   * Feeds one frame; returns the decoded value when a message is complete.
   * @param {ArrayBuffer} buf
   * @returns {{done: true, value: unknown} | {done: false}}
   */
  push(buf) {
    if (!(buf instanceof ArrayBuffer) || buf.byteLength < HEADER) throw new Error('bad frame');
    const view = new DataView(buf);
    const id = view.getUint32(0, true);
    const index = view.getUint32(4, true);
    const count = view.getUint32(8, true);
    if (count === 0 || index >= count || count > MAX_MESSAGE_BYTES / (CHUNK_BYTES - HEADER) + 1) {
      throw new Error('bad chunk header');
    }
    let p = this.partials.get(id);
    if (!p) {
      if (this.partials.size >= MAX_PARTIALS) {
        const oldest = this.partials.keys().next().value;
        if (oldest !== undefined) this.partials.delete(oldest);
      }
      p = { parts: new Array(count), got: 0, count, bytes: 0 };
      this.partials.set(id, p);
    }
    if (p.count !== count) throw new Error('chunk count changed');
    if (!p.parts[index]) {
      p.parts[index] = new Uint8Array(buf, HEADER);
      p.got++;
      p.bytes += buf.byteLength - HEADER;
      if (p.bytes > MAX_MESSAGE_BYTES) {
        this.partials.delete(id);
        throw new Error('message too large');
      }
    }
    if (p.got < p.count) return { done: false };
    this.partials.delete(id);
    const all = new Uint8Array(p.bytes);
    let off = 0;
    for (const part of p.parts) {
      all.set(part, off);
      off += part.length;
    }
    return { done: true, value: JSON.parse(dec.decode(all)) };
  }
}
