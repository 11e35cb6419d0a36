/**
 * The `/v1/signal` WebSocket URL for a base URL (http(s)://host) or a ws(s) URL.
 * @param {string} url
 * @returns {URL}
 */
export function signalUrl(url: string): URL;
/**
 * Opens a signaling connection.
 * @param {string|string[]} url base URL (`https://host`) or the `wss://host/v1/signal` endpoint;
 *   or several (the nodes of a cluster): the first is used, the others when it cannot be reached
 * @param {string} token a ticket with scope `webrtc`
 * @param {ConnectOptions} [options]
 * @returns {Promise<Client>}
 */
export function connect(url: string | string[], token: string, options?: ConnectOptions): Promise<Client>;
/**
 * @typedef {import('./protocol.js').SignalMessage} SignalMessage
 * @typedef {{ getToken?: () => Promise<string>, WebSocket?: typeof WebSocket,
 *             reconnect?: boolean, log?: (...args: unknown[]) => void }} ConnectOptions
 */
/** Relay messages kept for re-sending, and SFU messages held while the socket is down. */
export const MAX_OUTBOX: 1024;
/** Ids (`relay_id`) of relayed messages remembered per sender, to drop ones sent again. */
export const MAX_MIDS_PER_PEER: 1024;
/** One signaling connection (one joined room at a time). */
export class Client extends Emitter {
    /**
     * @param {string|string[]} url
     * @param {string} token
     * @param {ConnectOptions} options
     */
    constructor(url: string | string[], token: string, options: ConnectOptions);
    /** Servers to try, in order. @type {URL[]} */
    urls: URL[];
    urlIndex: number;
    url: URL;
    token: string;
    options: ConnectOptions;
    /** @type {WebSocket|null} */
    ws: WebSocket | null;
    /** @type {Room|null} */
    currentRoom: Room | null;
    /** Highest `seq` received from the server. */
    lastSeq: number;
    /** @type {string|null} */
    resumeToken: string | null;
    /** Relay messages since join, until the server confirms them. @type {{n: number, msg: SignalMessage, sent: boolean}[]} */
    outbox: {
        n: number;
        msg: SignalMessage;
        sent: boolean;
    }[];
    sentCount: number;
    /** SFU-bound messages held while the socket is down. @type {SignalMessage[]} */
    heldForSfu: SignalMessage[];
    /** True while the session is attached and may send. */
    ready: boolean;
    closed: boolean;
    /** True while a reconnect loop runs: a socket closing meanwhile must not start another. */
    reconnecting: boolean;
    reconnects: number;
    /** @type {SignalMessage|null} */
    joined: SignalMessage | null;
    /** Recent `relay_id`s per sender. @type {Map<string, Set<string>>} */
    mids: Map<string, Set<string>>;
    /**
     * Whether a relayed message was seen already. In a cluster, messages forwarded to a node
     * just before it died are sent again where the session resumes, with the same `relay_id`.
     * @param {string} from
     * @param {string} mid
     * @returns {boolean}
     */
    _seenMid(from: string, mid: string): boolean;
    /** Moves on to the next server of the list (wrapping around). */
    _nextUrl(): void;
    /**
     * Learns the cluster's live nodes from `joined.nodes` (`[{id, url}]`): the current server
     * first, then the others, then servers given to connect() that the cluster did not name.
     * @param {unknown} nodes
     */
    _learnNodes(nodes: unknown): void;
    /**
     * @param {Record<string, string>} params
     * @returns {Promise<void>}
     */
    _open(params: Record<string, string>): Promise<void>;
    /** @param {SignalMessage} msg */
    _onMessage(msg: SignalMessage): void;
    /**
     * Sends a signaling message. Relay messages are numbered and kept until confirmed.
     * @param {SignalMessage} msg
     */
    send(msg: SignalMessage): void;
    /** @param {number} code */
    _reconnect(code: number): Promise<void>;
    /** @param {number} code */
    _reconnectLoop(code: number): Promise<void>;
    /**
     * The room this connection joins.
     * @param {string} roomId
     * @returns {Room}
     */
    room(roomId: string): Room;
    /**
     * Heavy results over gRPC-Web server streaming (`inference.Inference/StreamPredict`).
     * Implemented in ./stream.js by the stream gateway; loaded on first use.
     * @param {string} taskId
     * @param {Uint8Array|string} payload
     * @param {{ onChunk?: (chunk: unknown) => void, signal?: AbortSignal }} [opts]
     * @returns {Promise<unknown>}
     */
    stream(taskId: string, payload: Uint8Array | string, opts?: {
        onChunk?: (chunk: unknown) => void;
        signal?: AbortSignal;
    }): Promise<unknown>;
    /** Leaves and closes for good. */
    close(): void;
    /** Test hook: drops the socket without a goodbye, as a network cut would. */
    _dropSocket(): void;
}
export type SignalMessage = import("./protocol.js").SignalMessage;
export type ConnectOptions = {
    getToken?: () => Promise<string>;
    WebSocket?: typeof WebSocket;
    reconnect?: boolean;
    log?: (...args: unknown[]) => void;
};
import { Emitter } from './emitter.js';
import { Room } from './room.js';
