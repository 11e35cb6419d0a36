/**
 * Splits a JSON-serializable value into frames.
 * @param {unknown} value
 * @param {number} msgId 32-bit message id
 * @returns {ArrayBuffer[]}
 */
export function encodeChunks(value: unknown, msgId: number): ArrayBuffer[];
/**
 * The `data` values carrying `value`: one `{m: value}` when small, else `{k: [id, i, n, S]}` pieces.
 * @param {unknown} value any JSON value
 * @param {number} msgId message id, unique per sender
 * @param {number} [maxBytes] budget per piece
 * @returns {({m: unknown} | {k: [number, number, number, string]})[]}
 */
export function encodePieces(value: unknown, msgId: number, maxBytes?: number): ({
    m: unknown;
} | {
    k: [number, number, number, string];
})[];
/** Largest frame put on a DataChannel, header included. */
export const CHUNK_BYTES: number;
/** Largest reassembled message accepted from a peer. */
export const MAX_MESSAGE_BYTES: number;
/** Rebuilds messages from frames of one peer. */
export class Reassembler {
    /** @type {Map<number, {parts: Uint8Array[], got: number, count: number, bytes: number}>} */
    partials: Map<number, {
        parts: Uint8Array[];
        got: number;
        count: number;
        bytes: number;
    }>;
    /**
     * Feeds one frame; returns the decoded value when a message is complete.
     * @param {ArrayBuffer} buf
     * @returns {{done: true, value: unknown} | {done: false}}
     */
    push(buf: ArrayBuffer): {
        done: true;
        value: unknown;
    } | {
        done: false;
    };
}
/** Largest escaped UTF-8 size of one piece's text slice. */
export const PIECE_BYTES: number;
/** Rebuilds `{k}` messages, per sender and id, with bounded memory. */
export class PieceAssembler {
    /** @param {number} [maxBytes] largest message accepted */
    constructor(maxBytes?: number);
    maxBytes: number;
    /** @type {Map<string, Map<number, {parts: string[], got: number, count: number, bytes: number}>>} */
    bySender: Map<string, Map<number, {
        parts: string[];
        got: number;
        count: number;
        bytes: number;
    }>>;
    /**
     * Feeds one `k` array from `from`; returns the value when its message is complete.
     * Throws on a malformed piece (the caller reports it; nothing else is affected).
     * @param {string} from
     * @param {unknown} k
     * @returns {{done: true, value: unknown} | {done: false}}
     */
    push(from: string, k: unknown): {
        done: true;
        value: unknown;
    } | {
        done: false;
    };
    /** Forgets a sender's partial messages (it left). @param {string} from */
    forget(from: string): void;
}
