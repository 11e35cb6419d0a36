// Client: the signaling connection. It owns the WebSocket to `/v1/signal`, the session's `seq`
// bookkeeping (duplicates dropped), numbering relay messages and keeping them until the server
// confirms them, resuming a dropped session with its resume token and re-sending what the server
// did not get, falling back to a fresh session from `getToken` when a resume is refused, and
// closing. With several servers (a list of URLs, and in a cluster the live nodes named by
// `joined.nodes`) a reconnect that cannot reach one server tries the next, and resumes there.
// It hands every message to its one Room (room.js).

import { Emitter } from './emitter.js';
import { Room } from './room.js';
import { SFU_ID } from './protocol.js';

/**
 * @typedef {import('./protocol.js').SignalMessage} SignalMessage
 * @typedef {{ getToken?: () => Promise<string>, WebSocket?: typeof WebSocket,
 *             reconnect?: boolean, log?: (...args: unknown[]) => void }} ConnectOptions
 */

/** Relay messages kept for re-sending, and SFU messages held while the socket is down. */
export const MAX_OUTBOX = 1024;

/** Ids (`relay_id`) of relayed messages remembered per sender, to drop ones sent again. */
export const MAX_MIDS_PER_PEER = 1024;

/** The signaling message types relayed to a peer: numbered and kept until confirmed. */
const RELAY_TYPES = ['offer', 'answer', 'ice_candidate', 'bye'];

/**
 * The `/v1/signal` WebSocket URL for a base URL (http(s)://host) or a ws(s) URL.
 * @param {string} url
 * @returns {URL}
 */
export function signalUrl(url) {
  const u = new URL(url, typeof location !== 'undefined' ? location.href : undefined);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/v1/signal';
  return u;
}

/**
 * Opens a signaling connection.
 * @param {string|string[]} url base URL (`https://host`) or the `wss://host/v1/signal` endpoint;
 *   or several (the nodes of a cluster): the first is used, the others when it cannot be reached
 * @param {string} token a ticket with scope `webrtc`
 * @param {ConnectOptions} [options]
 * @returns {Promise<Client>}
 */
export async function connect(url, token, options = {}) {
  const c = new Client(url, token, options);
  for (;;) {
    try {
      await c._open({ access_token: token });
      return c;
    } catch (e) {
      // Another server of the list may be up; the ticket was not used on a server that
      // could not be reached.
      if (c.urlIndex + 1 >= c.urls.length) throw e;
      c._nextUrl();
    }
  }
}

/** One signaling connection (one joined room at a time). */
export class Client extends Emitter {
  /**
   * @param {string|string[]} url
   * @param {string} token
   * @param {ConnectOptions} options
   */
  constructor(url, token, options) {
    super();
    const list = Array.isArray(url) ? url : [url];
    if (list.length === 0) throw new Error('connect: no server URL');
    /** Servers to try, in order. @type {URL[]} */
    this.urls = list.map(signalUrl);
    this.urlIndex = 0;
    this.url = this.urls[0];
    this.token = token;
    this.options = options;
    /** @type {WebSocket|null} */
    this.ws = null;
    /** @type {Room|null} */
    this.currentRoom = null;
    /** Highest `seq` received from the server. */
    this.lastSeq = 0;
    /** @type {string|null} */
    this.resumeToken = null;
    /** Relay messages since join, until the server confirms them. @type {{n: number, msg: SignalMessage, sent: boolean}[]} */
    this.outbox = [];
    this.sentCount = 0;
    /** SFU-bound messages held while the socket is down. @type {SignalMessage[]} */
    this.heldForSfu = [];
    /** True while the session is attached and may send. */
    this.ready = false;
    this.closed = false;
    /** True while a reconnect loop runs: a socket closing meanwhile must not start another. */
    this.reconnecting = false;
    this.reconnects = 0;
    /** @type {SignalMessage|null} */
    this.joined = null;
    /** Recent `relay_id`s per sender. @type {Map<string, Set<string>>} */
    this.mids = new Map();
  }

  /**
   * Whether a relayed message was seen already. In a cluster, messages forwarded to a node
   * just before it died are sent again where the session resumes, with the same `relay_id`.
   * @param {string} from
   * @param {string} mid
   * @returns {boolean}
   */
  _seenMid(from, mid) {
    let seen = this.mids.get(from);
    if (!seen) {
      seen = new Set();
      this.mids.set(from, seen);
    }
    if (seen.has(mid)) return true;
    seen.add(mid);
    if (seen.size > MAX_MIDS_PER_PEER) {
      const oldest = seen.values().next().value;
      if (oldest !== undefined) seen.delete(oldest);
    }
    return false;
  }

  /** Moves on to the next server of the list (wrapping around). */
  _nextUrl() {
    this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    this.url = this.urls[this.urlIndex];
  }

  /**
   * Learns the cluster's live nodes from `joined.nodes` (`[{id, url}]`): the current server
   * first, then the others, then servers given to connect() that the cluster did not name.
   * @param {unknown} nodes
   */
  _learnNodes(nodes) {
    if (!Array.isArray(nodes)) return;
    /** @type {URL[]} */
    const next = [this.url];
    const add = (/** @type {URL} */ u) => {
      if (!next.some((x) => x.href === u.href)) next.push(u);
    };
    for (const n of nodes) {
      const url = n !== null && typeof n === 'object' ? /** @type {{url?: unknown}} */ (n).url : undefined;
      if (typeof url !== 'string') continue;
      try {
        add(signalUrl(url));
      } catch {
        /* not a URL: ignored */
      }
    }
    for (const u of this.urls) add(u);
    this.urls = next;
    this.urlIndex = 0;
  }

  /**
   * @param {Record<string, string>} params
   * @returns {Promise<void>}
   */
  _open(params) {
    const u = new URL(this.url);
    for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
    const WS = this.options.WebSocket ?? WebSocket;
    return new Promise((resolve, reject) => {
      const ws = new WS(u.toString());
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        resolve();
      };
      ws.onerror = () => {
        if (!opened) reject(new Error('signaling connection failed'));
      };
      ws.onmessage = (ev) => {
        if (typeof ev.data !== 'string') return;
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        this._onMessage(msg);
      };
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this.ready = false;
        this.emit('disconnected', ev.code, ev.reason);
        if (!opened) return;
        if (!this.closed && !this.reconnecting && this.options.reconnect !== false) this._reconnect(ev.code);
      };
    });
  }

  /** @param {SignalMessage} msg */
  _onMessage(msg) {
    if (typeof msg.seq === 'number') {
      if (msg.seq <= this.lastSeq) return; // already seen (never expected; defensive)
      this.lastSeq = msg.seq;
    }
    if (typeof msg.relay_id === 'string' && typeof msg.from === 'string' && this._seenMid(msg.from, msg.relay_id)) return;
    if (msg.type === 'peer_left' && typeof msg.peer_id === 'string') this.mids.delete(msg.peer_id);
    if (msg.type === 'reconnect' && typeof msg.url === 'string') {
      // The server is draining: the session resumes on the node it names once this socket
      // closes.
      try {
        const to = signalUrl(msg.url);
        this.urls = [to, ...this.urls.filter((u) => u.href !== to.href)];
        this.urlIndex = 0;
        this.url = to;
      } catch {
        /* not a URL: the usual reconnect applies */
      }
    }
    if (msg.type === 'joined') {
      this.joined = msg;
      this._learnNodes(msg.nodes);
      this.resumeToken = msg.resume_token;
      const received = typeof msg.received === 'number' ? msg.received : 0;
      this.ready = true;
      if (msg.resumed) {
        // Re-send what the server never got, in order.
        this.outbox = this.outbox.filter((e) => e.n > received);
        for (const e of this.outbox) {
          this.ws?.send(JSON.stringify(e.msg));
          e.sent = true;
        }
        for (const m of this.heldForSfu.splice(0)) this.ws?.send(JSON.stringify(m));
        this.emit('resumed', msg);
      } else {
        this.heldForSfu = [];
        for (const e of this.outbox) {
          if (!e.sent) {
            this.ws?.send(JSON.stringify(e.msg));
            e.sent = true;
          }
        }
      }
    }
    this.emit('signal', msg);
    this.currentRoom?._onSignal(msg);
  }

  /**
   * Sends a signaling message. Relay messages are numbered and kept until confirmed.
   * @param {SignalMessage} msg
   */
  send(msg) {
    if (msg.target === SFU_ID || msg.type === 'subscribe') {
      // For the SFU, not relayed to a peer: not numbered (the server's `received` counts what
      // it relays). Held while the socket is down and sent after a resume; a fresh session
      // starts a fresh SFU connection, so then they are dropped.
      if (this.ws && this.ws.readyState === 1 && this.ready) this.ws.send(JSON.stringify(msg));
      else if (this.heldForSfu.length < MAX_OUTBOX) this.heldForSfu.push(msg);
      return;
    }
    const relay = RELAY_TYPES.includes(msg.type);
    if (relay) {
      this.sentCount++;
      const entry = { n: this.sentCount, msg, sent: false };
      this.outbox.push(entry);
      if (this.outbox.length > MAX_OUTBOX) this.outbox.shift();
      if (this.ws && this.ws.readyState === 1 && this.ready) {
        this.ws.send(JSON.stringify(msg));
        entry.sent = true;
      }
      return;
    }
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(msg));
  }

  /** @param {number} code */
  async _reconnect(code) {
    if (this.reconnecting) return;
    this.reconnecting = true;
    try {
      await this._reconnectLoop(code);
    } finally {
      this.reconnecting = false;
    }
  }

  /** @param {number} code */
  async _reconnectLoop(code) {
    let delay = 200;
    let wait = delay;
    while (!this.closed) {
      await new Promise((r) => setTimeout(r, wait));
      if (this.closed) return;
      wait = delay = Math.min(delay * 2, 5000);
      this.reconnects++;
      const canResume = this.resumeToken && code !== 4001;
      try {
        if (canResume) {
          await this._open({ resume_token: /** @type {string} */ (this.resumeToken), last_seq: String(this.lastSeq) });
          // The server answers joined{resumed} or an error and close 1008.
          const ok = await new Promise((resolve) => {
            const offJ = this.on('resumed', () => { offJ(); offC(); resolve(true); });
            const offC = this.on('disconnected', () => { offJ(); offC(); resolve(false); });
          });
          if (ok) return;
          // The server answered: the session is gone. Start a fresh one at once.
          this.resumeToken = null;
          code = 0;
          wait = 0;
          continue;
        }
        if (!this.options.getToken) {
          this.emit('error', new Error('session lost and no getToken to start a new one'));
          return;
        }
        this.token = await this.options.getToken();
        this.lastSeq = 0;
        this.outbox = [];
        this.sentCount = 0;
        await this._open({ access_token: this.token });
        await this.currentRoom?._rejoin();
        return;
      } catch (e) {
        this.options.log?.('reconnect failed', e);
        if (this.urls.length > 1) {
          // This server cannot be reached: the next one is tried soon, and the backoff grows
          // only once every server has failed.
          this._nextUrl();
          if (this.urlIndex !== 0) {
            wait = 100;
            delay = Math.max(delay / 2, 200);
          }
        }
      }
    }
  }

  /**
   * The room this connection joins.
   * @param {string} roomId
   * @returns {Room}
   */
  room(roomId) {
    if (this.currentRoom && this.currentRoom.id !== roomId) throw new Error('one room per connection');
    if (!this.currentRoom) this.currentRoom = new Room(this, roomId);
    return this.currentRoom;
  }

  /**
   * Heavy results over gRPC-Web server streaming (`inference.Inference/StreamPredict`).
   * Implemented in ./stream.js by the stream gateway; loaded on first use.
   * @param {string} taskId
   * @param {Uint8Array|string} payload
   * @param {{ onChunk?: (chunk: unknown) => void, signal?: AbortSignal }} [opts]
   * @returns {Promise<unknown>}
   */
  async stream(taskId, payload, opts = {}) {
    const path = './stream.js';
    const mod = await import(/* @vite-ignore */ path);
    const base = new URL(this.url);
    base.protocol = base.protocol === 'wss:' ? 'https:' : 'http:';
    base.pathname = '/';
    base.search = '';
    return mod.streamPredict(base.origin, this.token, taskId, payload, opts);
  }

  /** Leaves and closes for good. */
  close() {
    this.closed = true;
    this.currentRoom?._closePeers();
    if (this.ws && this.ws.readyState <= 1) {
      try {
        this.ws.send(JSON.stringify({ type: 'leave' }));
      } catch {
        /* closing anyway */
      }
      this.ws.close(1000);
    }
  }

  /** Test hook: drops the socket without a goodbye, as a network cut would. */
  _dropSocket() {
    const ws = this.ws;
    if (ws) {
      ws.onclose = null;
      this.ready = false;
      try { ws.close(4999); } catch { /* ignore */ }
      this._reconnect(0);
    }
  }
}
