/**
 * `PredictRequest { string task_id = 1; bytes payload = 2; }`
 * @param {string} taskId @param {Uint8Array} payload @returns {Uint8Array}
 */
export function encodePredictRequest(taskId: string, payload: Uint8Array): Uint8Array;
/**
 * `PredictChunk { int32 index = 1; bytes partial = 2; bool done = 3; }`
 * @param {Uint8Array} b @returns {PredictChunk}
 */
export function decodePredictChunk(b: Uint8Array): PredictChunk;
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
export function streamPredict(baseUrl: string, token: string, taskId: string, payload: Uint8Array | string | object, opts?: StreamOptions): Promise<StreamResult>;
/**
 * Binds {@link streamPredict} to a server and a token (or an async token getter), giving the
 * SDK's `client.stream(taskId, payload, {onChunk, signal})` shape.
 * @param {string} baseUrl
 * @param {string | (() => string | Promise<string>)} token
 * @returns {{ stream: (taskId: string, payload: Uint8Array|string|object, opts?: StreamOptions) => Promise<StreamResult> }}
 */
export function streamClient(baseUrl: string, token: string | (() => string | Promise<string>)): {
    stream: (taskId: string, payload: Uint8Array | string | object, opts?: StreamOptions) => Promise<StreamResult>;
};
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
export const GRPC_CODES: string[];
/** A call that ended with a gRPC status other than OK. */
export class GrpcError extends Error {
    /** @param {number} code @param {string} message */
    constructor(code: number, message: string);
    /** @type {number} */
    code: number;
    /** @type {string} */
    grpcMessage: string;
}
/**
 * One `inference.PredictChunk`.
 */
export type PredictChunk = {
    index: number;
    partial: Uint8Array;
    done: boolean;
};
/**
 * Options for {@link streamPredict}.
 */
export type StreamOptions = {
    /**
     * called for every chunk, in order
     */
    onChunk?: ((chunk: PredictChunk) => void) | undefined;
    /**
     * aborting cancels the call (and the server cancels upstream)
     */
    signal?: AbortSignal | undefined;
    /**
     * deadline sent as `grpc-timeout`
     */
    timeoutMs?: number | undefined;
};
/**
 * How a stream ended.
 */
export type StreamResult = {
    chunks: number;
    bytes: number;
};
