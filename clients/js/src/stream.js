// Heavy results over gRPC-Web: `inference.Inference/StreamPredict` from a browser.
//
// A standalone ES module with no dependencies (served as is by the switchboard binary; no
// bundler). It speaks gRPC-Web binary (`application/grpc-web+proto`) over fetch and reads the
// response with a ReadableStream reader, so each chunk reaches `onChunk` as soon as its bytes
// arrive. The two tiny messages of `inference.Inference/StreamPredict` are encoded by hand (see
// docs/decisions/0030-grpc-web-sdk-framing.md for why this is not Connect-web + protobuf-es).
//
//   import { streamPredict } from "/sdk/stream.js";
//   const ac = new AbortController();
//   const { chunks, bytes } = await streamPredict("http://127.0.0.1:7880", token, "task-1",
//       { chunks: 8 }, { onChunk: (c) => console.log(c.index, c.partial.length), signal: ac.signal });

/**
 * One `inference.PredictChunk`.
 * @typedef {{ index: number, partial: Uint8Array, done: boolean }} PredictChunk
 */

/**
 * Options for {@link streamPredict}.
 * @typedef {Object} StreamOptions
 * @property {(chunk: PredictChunk) => void} [onChunk] called for every chunk, in order
 * @property {AbortSignal} [signal] aborting cancels the call (and the server cancels upstream)
 * @property {number} [timeoutMs] deadline sent as `grpc-timeout`
 */

/**
 * How a stream ended.
 * @typedef {{ chunks: number, bytes: number }} StreamResult
 */

/** gRPC status names by code, for error messages. */
export const GRPC_CODES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
  "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

/** A call that ended with a gRPC status other than OK. */
export class GrpcError extends Error {
  /** @param {number} code @param {string} message */
  constructor(code, message) {
    super(`${GRPC_CODES[code] || code}: ${message}`);
    this.name = "GrpcError";
    /** @type {number} */
    this.code = code;
    /** @type {string} */
    this.grpcMessage = message;
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** @param {number[]} out @param {number} v non-negative, < 2^32 */
function putVarint(out, v) {
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/**
 * `PredictRequest { string task_id = 1; bytes payload = 2; }`
 * @param {string} taskId @param {Uint8Array} payload @returns {Uint8Array}
 */
export function encodePredictRequest(taskId, payload) {
  const id = enc.encode(taskId);
  /** @type {number[]} */
  const head = [];
  if (id.length) { head.push(0x0a); putVarint(head, id.length); head.push(...id); }
  /** @type {number[]} */
  const mid = [];
  if (payload.length) { mid.push(0x12); putVarint(mid, payload.length); }
  const msg = new Uint8Array(head.length + mid.length + payload.length);
  msg.set(head, 0);
  msg.set(mid, head.length);
  msg.set(payload, head.length + mid.length);
  return msg;
}

/**
 * Reads a varint at `pos`; returns [low 32 bits as int32, next position].
 * @param {Uint8Array} b @param {number} pos @returns {[number, number]}
 */
function readVarint(b, pos) {
  let lo = 0;
  for (let i = 0; i < 10; i++) {
    if (pos >= b.length) throw new GrpcError(13, "truncated varint");
    const x = b[pos++];
    if (i < 5) lo |= (x & 0x7f) << (7 * i);
    if ((x & 0x80) === 0) return [lo | 0, pos];
  }
  throw new GrpcError(13, "varint too long");
}

/**
 * `PredictChunk { int32 index = 1; bytes partial = 2; bool done = 3; }`
 * @param {Uint8Array} b @returns {PredictChunk}
 */
export function decodePredictChunk(b) {
  const c = { index: 0, partial: new Uint8Array(0), done: false };
  let pos = 0;
  while (pos < b.length) {
    let key;
    [key, pos] = readVarint(b, pos);
    const field = key >>> 3, wt = key & 7;
    if (wt === 0) {
      let v;
      [v, pos] = readVarint(b, pos);
      if (field === 1) c.index = v;
      else if (field === 3) c.done = v !== 0;
    } else if (wt === 2) {
      let len;
      [len, pos] = readVarint(b, pos);
      if (len < 0 || pos + len > b.length) throw new GrpcError(13, "truncated field");
      if (field === 2) c.partial = b.slice(pos, pos + len);
      pos += len;
    } else if (wt === 5) pos += 4;
    else if (wt === 1) pos += 8;
    else throw new GrpcError(13, `unsupported wire type ${wt}`);
  }
  return c;
}

/** @param {string} s @returns {string} */
function pctDecode(s) {
  try { return decodeURIComponent(s); } catch { return s; }
}

/**
 * Parses a gRPC-Web trailer block ("grpc-status:0\r\ngrpc-message:...\r\n").
 * @param {Uint8Array} b @returns {{code: number, message: string}}
 */
function parseTrailers(b) {
  let code = 2, message = "";
  for (const line of dec.decode(b).split("\r\n")) {
    const i = line.indexOf(":");
    if (i < 0) continue;
    const k = line.slice(0, i).trim().toLowerCase(), v = line.slice(i + 1).trim();
    if (k === "grpc-status") code = Number.parseInt(v, 10);
    else if (k === "grpc-message") message = pctDecode(v);
  }
  return { code, message };
}

/**
 * Calls `inference.Inference/StreamPredict` over gRPC-Web and hands each chunk to `onChunk`
 * as it arrives. Resolves when the server ends the stream with OK; rejects with a
 * {@link GrpcError} for any other status, or with the fetch AbortError when `signal` aborts.
 *
 * @param {string} baseUrl e.g. "http://127.0.0.1:7880" (CORS applies when cross-origin)
 * @param {string} token a ticket with scope `grpc`
 * @param {string} taskId
 * @param {Uint8Array|string|object} payload bytes, text (UTF-8), or an object sent as JSON
 * @param {StreamOptions} [opts]
 * @returns {Promise<StreamResult>}
 */
export async function streamPredict(baseUrl, token, taskId, payload, opts = {}) {
  const { onChunk, signal, timeoutMs } = opts;
  const body = payload instanceof Uint8Array ? payload
    : enc.encode(typeof payload === "string" ? payload : JSON.stringify(payload ?? {}));
  const msg = encodePredictRequest(taskId, body);
  const framed = new Uint8Array(5 + msg.length);
  new DataView(framed.buffer).setUint32(1, msg.length);
  framed.set(msg, 5);
  /** @type {Record<string,string>} */
  const headers = {
    "content-type": "application/grpc-web+proto",
    "x-grpc-web": "1",
    "authorization": `Bearer ${token}`,
  };
  if (timeoutMs) headers["grpc-timeout"] = `${Math.max(1, Math.ceil(timeoutMs))}m`;
  const resp = await fetch(`${baseUrl.replace(/\/$/, "")}/inference.Inference/StreamPredict`, {
    method: "POST", headers, body: framed, signal, mode: "cors", cache: "no-store",
  });
  const headStatus = resp.headers.get("grpc-status");
  if (headStatus !== null && headStatus !== "0") {
    throw new GrpcError(Number.parseInt(headStatus, 10), pctDecode(resp.headers.get("grpc-message") || ""));
  }
  if (!resp.ok) throw new GrpcError(resp.status === 401 ? 16 : 14, `HTTP ${resp.status}`);
  if (!resp.body) throw new GrpcError(13, "response has no body");
  if (headStatus === "0") return { chunks: 0, bytes: 0 }; // trailers-only OK

  const reader = resp.body.getReader();
  let buf = new Uint8Array(0);
  let chunks = 0, bytes = 0;
  /** @type {{code:number,message:string}|null} */
  let status = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (value && value.length) {
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf, 0);
      joined.set(value, buf.length);
      buf = joined;
      let off = 0;
      while (buf.length - off >= 5) {
        const flags = buf[off];
        const len = new DataView(buf.buffer, buf.byteOffset + off + 1, 4).getUint32(0);
        if (buf.length - off - 5 < len) break;
        const frame = buf.subarray(off + 5, off + 5 + len);
        off += 5 + len;
        if (flags & 0x80) {
          status = parseTrailers(frame);
        } else {
          const c = decodePredictChunk(frame);
          chunks++;
          bytes += c.partial.length;
          if (onChunk) onChunk(c);
        }
      }
      buf = buf.slice(off);
    }
    if (done) break;
  }
  if (!status) throw new GrpcError(14, "stream ended without a status");
  if (status.code !== 0) throw new GrpcError(status.code, status.message);
  return { chunks, bytes };
}

/**
 * Binds {@link streamPredict} to a server and a token (or an async token getter), giving the
 * SDK's `client.stream(taskId, payload, {onChunk, signal})` shape.
 * @param {string} baseUrl
 * @param {string | (() => string | Promise<string>)} token
 * @returns {{ stream: (taskId: string, payload: Uint8Array|string|object, opts?: StreamOptions) => Promise<StreamResult> }}
 */
export function streamClient(baseUrl, token) {
  return {
    async stream(taskId, payload, opts) {
      const t = typeof token === "function" ? await token() : token;
      return streamPredict(baseUrl, t, taskId, payload, opts);
    },
  };
}
