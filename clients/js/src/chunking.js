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

// ---- SFU mode: JSON pieces -------------------------------------------------------------------
// Through the SFU, DataChannel messages are JSON text envelopes (docs/sfu-protocol.md), so a large
// `send` is cut into `{"k":[id, i, n, S]}` pieces, S being a slice of the message's JSON text.
// Slices are cut by their escaped UTF-8 size (what they cost inside the envelope) and never
// between the two halves of a surrogate pair.

/** Largest escaped UTF-8 size of one piece's text slice. */
export const PIECE_BYTES = 16 * 1024;
/** Partial messages kept per sender before the oldest is dropped. */
const MAX_PIECE_PARTIALS = 16;

/**
 * Bytes a UTF-16 code unit costs once JSON-escaped and UTF-8 encoded.
 * @param {number} c code unit
 * @returns {number}
 */
function escapedCost(c) {
  if (c === 0x22 || c === 0x5c) return 2;
  if (c < 0x20) return c === 8 || c === 9 || c === 10 || c === 12 || c === 13 ? 2 : 6;
  if (c < 0x80) return 1;
  if (c < 0x800) return 2;
  if (c >= 0xd800 && c <= 0xdfff) return 2; // half of a 4-byte pair (a lone half is pre-escaped by JSON.stringify)
  return 3;
}

/**
 * The `data` values carrying `value`: one `{m: value}` when small, else `{k: [id, i, n, S]}` pieces.
 * @param {unknown} value any JSON value
 * @param {number} msgId message id, unique per sender
 * @param {number} [maxBytes] budget per piece
 * @returns {({m: unknown} | {k: [number, number, number, string]})[]}
 */
export function encodePieces(value, msgId, maxBytes = PIECE_BYTES) {
  const text = JSON.stringify(value === undefined ? null : value);
  if (text.length * 3 <= maxBytes || enc.encode(text).length <= maxBytes) return [{ m: value === undefined ? null : value }];
  /** @type {string[]} */
  const slices = [];
  let start = 0;
  let cost = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const w = escapedCost(c);
    // Never leave a high surrogate at the end of a slice.
    const pairStart = c >= 0xd800 && c <= 0xdbff;
    if (cost + w + (pairStart ? 2 : 0) > maxBytes && i > start) {
      slices.push(text.slice(start, i));
      start = i;
      cost = 0;
    }
    cost += w;
  }
  slices.push(text.slice(start));
  return slices.map((s, i) => ({ k: /** @type {[number, number, number, string]} */ ([msgId, i, slices.length, s]) }));
}

/** Rebuilds `{k}` messages, per sender and id, with bounded memory. */
export class PieceAssembler {
  /** @param {number} [maxBytes] largest message accepted */
  constructor(maxBytes = MAX_MESSAGE_BYTES) {
    this.maxBytes = maxBytes;
    /** @type {Map<string, Map<number, {parts: string[], got: number, count: number, bytes: number}>>} */
    this.bySender = new Map();
  }

  /**
   * Feeds one `k` array from `from`; returns the value when its message is complete.
   * Throws on a malformed piece (the caller reports it; nothing else is affected).
   * @param {string} from
   * @param {unknown} k
   * @returns {{done: true, value: unknown} | {done: false}}
   */
  push(from, k) {
    if (!Array.isArray(k) || k.length !== 4) throw new Error('bad piece');
    const [id, index, count, s] = k;
    if (!Number.isInteger(id) || !Number.isInteger(index) || !Number.isInteger(count) || typeof s !== 'string' ||
        count < 1 || index < 0 || index >= count || count > this.maxBytes / 1024 + 1) {
      throw new Error('bad piece header');
    }
    let partials = this.bySender.get(from);
    if (!partials) this.bySender.set(from, (partials = new Map()));
    let p = partials.get(id);
    if (!p) {
      if (partials.size >= MAX_PIECE_PARTIALS) {
        const oldest = partials.keys().next().value;
        if (oldest !== undefined) partials.delete(oldest);
      }
      p = { parts: new Array(count), got: 0, count, bytes: 0 };
      partials.set(id, p);
    }
    if (p.count !== count) {
      partials.delete(id);
      throw new Error('piece count changed');
    }
    if (p.parts[index] === undefined) {
      p.parts[index] = s;
      p.got++;
      p.bytes += s.length;
      if (p.bytes > this.maxBytes) {
        partials.delete(id);
        throw new Error('message too large');
      }
    }
    if (p.got < p.count) return { done: false };
    partials.delete(id);
    if (partials.size === 0) this.bySender.delete(from);
    return { done: true, value: JSON.parse(p.parts.join('')) };
  }

  /** Forgets a sender's partial messages (it left). @param {string} from */
  forget(from) {
    this.bySender.delete(from);
  }
}
