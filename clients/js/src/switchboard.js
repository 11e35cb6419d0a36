// @switchboard/client: the browser SDK for Switchboard signaling and mesh DataChannels.
//
//   const client = await connect('https://host', token, { getToken });
//   const room = client.room('r1');
//   room.on('message', (from, obj) => ...);      // reliable channel, any size (chunked)
//   room.on('update', (from, obj) => ...);       // "updates" channel: ordered, maxRetransmits 0
//   await room.join();
//   await room.send({ hello: 'world' });         // to everyone; { to: peerId } for one peer
//   room.sendUpdate({ x, y });
//   room.stats();                                // { rtt: { p50, p95, p99, count }, peers }
//
// Signaling is the seed's JSON dialect over WebSocket. Every message the server delivers to a
// joined session carries `seq`; when the socket drops, the SDK reconnects with the resume token
// from `joined` and `last_seq`, and the server replays what it missed. The SDK keeps its own
// relay messages until the server confirms them (`joined.received`) and re-sends the rest.
// Mesh: one RTCPeerConnection per remote peer, trickle ICE, perfect negotiation (both sides may
// offer at once; the polite side rolls back), ICE restart when connectivity fails or the network
// changes. The newcomer makes the first offer to each peer in `room_peers`.

import { encodeChunks, Reassembler, CHUNK_BYTES } from './chunking.js';

/** Buffered bytes under which a waiting `send` resumes. */
export const LOW_WATERMARK = 64 * 1024;
/** Buffered bytes at which `send` waits for the channel to drain. */
export const HIGH_WATERMARK = 1024 * 1024;
const RTT_INTERVAL_MS = 1000;
const RTT_REPORT_MS = 5000;
const MAX_RTT_SAMPLES = 2048;
const MAX_OUTBOX = 1024;

/**
 * @typedef {{ getToken?: () => Promise<string>, WebSocket?: typeof WebSocket,
 *             reconnect?: boolean, log?: (...args: unknown[]) => void }} ConnectOptions
 * @typedef {{ p50: number|null, p95: number|null, p99: number|null, count: number }} RttStats
 * @typedef {{ type: string, [key: string]: any }} SignalMessage
 */

/** Tiny event emitter. */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
  }
  /**
   * @param {string} event
   * @param {Function} fn
   * @returns {() => void} unsubscribe
   */
  on(event, fn) {
    let set = this._handlers.get(event);
    if (!set) this._handlers.set(event, (set = new Set()));
    set.add(fn);
    return () => set?.delete(fn);
  }
  /**
   * @param {string} event
   * @param {...unknown} args
   */
  emit(event, ...args) {
    for (const fn of this._handlers.get(event) ?? []) {
      try {
        fn(...args);
      } catch (e) {
        console.error(`switchboard: ${event} handler failed`, e);
      }
    }
  }
}

/**
 * The `/v1/signal` WebSocket URL for a base URL (http(s)://host) or a ws(s) URL.
 * @param {string} url
 * @returns {URL}
 */
function signalUrl(url) {
  const u = new URL(url, typeof location !== 'undefined' ? location.href : undefined);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/v1/signal';
  return u;
}

/**
 * Opens a signaling connection.
 * @param {string} url base URL (`https://host`) or the `wss://host/v1/signal` endpoint
 * @param {string} token a ticket with scope `webrtc`
 * @param {ConnectOptions} [options]
 * @returns {Promise<Client>}
 */
export async function connect(url, token, options = {}) {
  const c = new Client(url, token, options);
  await c._open({ access_token: token });
  return c;
}

/** One signaling connection (one joined room at a time). */
export class Client extends Emitter {
  /**
   * @param {string} url
   * @param {string} token
   * @param {ConnectOptions} options
   */
  constructor(url, token, options) {
    super();
    this.url = signalUrl(url);
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
    /** True while the session is attached and may send. */
    this.ready = false;
    this.closed = false;
    this.reconnects = 0;
    /** @type {SignalMessage|null} */
    this.joined = null;
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
        if (!this.closed && this.options.reconnect !== false) this._reconnect(ev.code);
      };
    });
  }

  /** @param {SignalMessage} msg */
  _onMessage(msg) {
    if (typeof msg.seq === 'number') {
      if (msg.seq <= this.lastSeq) return; // already seen (never expected; defensive)
      this.lastSeq = msg.seq;
    }
    if (msg.type === 'joined') {
      this.joined = msg;
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
        this.emit('resumed', msg);
      } else {
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
    const relay = ['offer', 'answer', 'ice_candidate', 'bye'].includes(msg.type);
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
    let delay = 200;
    while (!this.closed) {
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
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
          this.resumeToken = null;
          code = 0;
          continue; // fall through to a fresh join next round
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

/** A joined room in mesh mode. Events: peer_joined, peer_left, peer_connected, message, update, joined, resumed. */
export class Room extends Emitter {
  /**
   * @param {Client} client
   * @param {string} id
   */
  constructor(client, id) {
    super();
    this.client = client;
    this.id = id;
    /** @type {string|null} */
    this.peerId = null;
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** @type {string[]} */
    this._pendingPeers = [];
    /** @type {number[]} */
    this.rtt = [];
    /** @type {number[]} */
    this.rttUnreported = [];
    /** @type {((v: SignalMessage) => void)|null} */
    this._joinWaiter = null;
    /** @type {ReturnType<typeof setInterval>|null} */
    this._timer = null;
    this._onNetworkChange = () => this.restartIce();
  }

  /**
   * Joins the room; resolves with the `joined` message.
   * @returns {Promise<SignalMessage>}
   */
  join() {
    return new Promise((resolve, reject) => {
      this._joinWaiter = resolve;
      const off = this.client.on('signal', (/** @type {SignalMessage} */ m) => {
        if (m.type === 'error' && this._joinWaiter) {
          off();
          this._joinWaiter = null;
          reject(new Error(`${m.code}: ${m.message}`));
        }
        if (m.type === 'joined') off();
      });
      this.client.send({ type: 'join', room_id: this.id });
      if (!this._timer) {
        this._timer = setInterval(() => this._tick(), RTT_INTERVAL_MS);
        if (typeof window !== 'undefined') {
          window.addEventListener('online', this._onNetworkChange);
          /** @type {any} */ (navigator).connection?.addEventListener?.('change', this._onNetworkChange);
        }
      }
    });
  }

  async _rejoin() {
    this._closePeers();
    await this.join();
  }

  /** @param {SignalMessage} msg */
  _onSignal(msg) {
    switch (msg.type) {
      case 'room_peers':
        // Peers are created once `joined` tells us our id (politeness) and ICE servers.
        this._pendingPeers = msg.peers;
        break;
      case 'joined':
        this.peerId = msg.peer_id;
        this.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
        for (const p of this._pendingPeers) this._peer(p);
        this._pendingPeers = [];
        if (msg.resumed) this.emit('resumed', msg);
        else this.emit('joined', msg);
        if (this._joinWaiter) {
          this._joinWaiter(msg);
          this._joinWaiter = null;
        }
        break;
      case 'peer_joined':
        // The newcomer offers (it learned of us from room_peers); we answer when its offer
        // arrives. Initial glare is thus avoided, and perfect negotiation still covers the
        // later cases where both sides renegotiate at once (ICE restarts).
        this.emit('peer_joined', msg.peer_id);
        break;
      case 'peer_left': {
        const p = this.peers.get(msg.peer_id);
        p?.close();
        this.peers.delete(msg.peer_id);
        this.emit('peer_left', msg.peer_id);
        break;
      }
      case 'offer':
        this._peer(msg.from).onDescription(msg.offer);
        break;
      case 'answer':
        this.peers.get(msg.from)?.onDescription(msg.answer);
        break;
      case 'ice_candidate':
        this.peers.get(msg.from)?.onCandidate(msg.candidate);
        break;
      case 'bye': {
        this.peers.get(msg.from)?.close();
        this.peers.delete(msg.from);
        break;
      }
      case 'error':
        this.emit('error', msg);
        break;
      default:
        this.emit(msg.type, msg);
    }
  }

  /**
   * The Peer for `id`, created on first use.
   * @param {string} id
   * @returns {Peer}
   */
  _peer(id) {
    let p = this.peers.get(id);
    if (!p) {
      p = new Peer(this, id, /** @type {string} */ (this.peerId ?? this.client.joined?.peer_id ?? '') > id);
      this.peers.set(id, p);
    }
    return p;
  }

  _tick() {
    for (const p of this.peers.values()) p.ping();
    const now = Date.now();
    if (this.rttUnreported.length && (!this._lastReport || now - this._lastReport >= RTT_REPORT_MS)) {
      this._lastReport = now;
      const samples = this.rttUnreported.splice(0, 256);
      this.client.send({ type: 'rtt_report', rtt_ms: samples });
    }
  }
  /** @type {number|undefined} */
  _lastReport;

  /** @param {number} ms */
  _rttSample(ms) {
    this.rtt.push(ms);
    if (this.rtt.length > MAX_RTT_SAMPLES) this.rtt.shift();
    if (this.rttUnreported.length < 256) this.rttUnreported.push(ms);
  }

  /**
   * Sends `value` (any JSON) over the reliable channel: chunked, with backpressure.
   * Resolves when every frame is handed to the channel(s).
   * @param {unknown} value
   * @param {{ to?: string }} [opts]
   */
  async send(value, opts = {}) {
    const targets = opts.to ? [this.peers.get(opts.to)] : [...this.peers.values()];
    await Promise.all(targets.filter((p) => p && p.isOpen()).map((p) => /** @type {Peer} */ (p).sendReliable(value)));
  }

  /**
   * Sends a small update (≤ 16 KiB as JSON) over "updates" (ordered, no retransmits).
   * @param {unknown} value
   * @param {{ to?: string }} [opts]
   */
  sendUpdate(value, opts = {}) {
    const text = JSON.stringify({ u: value });
    if (text.length > CHUNK_BYTES) throw new Error('updates are limited to 16 KiB; use send()');
    for (const p of opts.to ? [this.peers.get(opts.to)] : this.peers.values()) {
      if (p && p.updates.readyState === 'open') p.updates.send(text);
    }
  }

  /** ICE restart on every peer connection (network change). */
  restartIce() {
    for (const p of this.peers.values()) p.pc.restartIce();
  }

  /**
   * RTT percentiles over DataChannel pings (ms) and per-peer state.
   * @returns {{ rtt: RttStats, peers: {id: string, state: string}[], reconnects: number }}
   */
  stats() {
    const s = [...this.rtt].sort((a, b) => a - b);
    /** @param {number} q */
    const pct = (q) => (s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : null);
    return {
      rtt: { p50: pct(0.5), p95: pct(0.95), p99: pct(0.99), count: s.length },
      peers: [...this.peers.values()].map((p) => ({ id: p.id, state: p.pc.connectionState })),
      reconnects: this.client.reconnects,
    };
  }

  /** Leaves the room and closes the connection. */
  leave() {
    if (this._timer) clearInterval(this._timer);
    if (typeof window !== 'undefined') window.removeEventListener('online', this._onNetworkChange);
    this.client.close();
  }

  _closePeers() {
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
  }
}

/** One remote peer: an RTCPeerConnection with two negotiated DataChannels. */
export class Peer {
  /**
   * @param {Room} room
   * @param {string} id
   * @param {boolean} polite
   */
  constructor(room, id, polite) {
    this.room = room;
    this.id = id;
    this.polite = polite;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.msgId = 1;
    this.reassembler = new Reassembler();
    /** Serializes signaling work per peer. @type {Promise<void>} */
    this.queue = Promise.resolve();
    /** @type {RTCPeerConnection} */
    let pc;
    try {
      pc = new RTCPeerConnection({ iceServers: room.iceServers });
    } catch (e) {
      // A server advertising an unusable ICE server must not cost us direct connectivity.
      room.client.options.log?.('iceServers rejected; using none', e);
      room.emit('error', { code: 'bad_ice_servers', message: String(e) });
      pc = new RTCPeerConnection({ iceServers: [] });
    }
    this.pc = pc;
    // Negotiated channels: both sides create them, so both may offer at once (glare), which
    // perfect negotiation resolves.
    this.updates = pc.createDataChannel('updates', { negotiated: true, id: 0, ordered: true, maxRetransmits: 0 });
    this.reliable = pc.createDataChannel('reliable', { negotiated: true, id: 1, ordered: true });
    this.reliable.binaryType = 'arraybuffer';
    this.reliable.bufferedAmountLowThreshold = LOW_WATERMARK;
    let opened = 0;
    const onOpen = () => {
      if (++opened === 2) room.emit('peer_connected', id);
    };
    this.updates.onopen = onOpen;
    this.reliable.onopen = onOpen;
    this.updates.onmessage = (ev) => this._onUpdate(ev.data);
    this.reliable.onmessage = (ev) => {
      try {
        const r = this.reassembler.push(ev.data);
        if (r.done) room.emit('message', id, r.value);
      } catch (e) {
        room.emit('error', { code: 'bad_chunk', message: String(e), from: id });
      }
    };
    pc.onnegotiationneeded = () => this._do(async () => {
      room.client.options.log?.('negotiationneeded', id, pc.signalingState);
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        room.client.send({ type: 'offer', target: id, offer: pc.localDescription?.toJSON() });
      } finally {
        this.makingOffer = false;
      }
    });
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) room.client.send({ type: 'ice_candidate', target: id, candidate: candidate.toJSON() });
    };
    /** @type {ReturnType<typeof setTimeout>|null} */
    let restartTimer = null;
    pc.oniceconnectionstatechange = () => {
      const s = pc.iceConnectionState;
      if (s === 'failed') pc.restartIce();
      if (s === 'disconnected' && !restartTimer) {
        restartTimer = setTimeout(() => {
          restartTimer = null;
          if (pc.iceConnectionState === 'disconnected') pc.restartIce();
        }, 2000);
      }
    };
    pc.onconnectionstatechange = () => room.emit('peer_state', id, pc.connectionState);
  }

  /** @param {() => Promise<void>} fn */
  _do(fn) {
    this.queue = this.queue.then(fn).catch((e) => this.room.client.options.log?.('negotiation', this.id, e));
    return this.queue;
  }

  /** @param {RTCSessionDescriptionInit} desc */
  onDescription(desc) {
    return this._do(async () => {
      const pc = this.pc;
      const collision = desc.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
      this.ignoreOffer = !this.polite && collision;
      this.room.client.options.log?.('description', this.id, desc.type, pc.signalingState, collision ? 'collision' : '', this.ignoreOffer ? 'ignored' : '');
      if (this.ignoreOffer) return;
      await pc.setRemoteDescription(desc);
      if (desc.type === 'offer') {
        await pc.setLocalDescription();
        this.room.client.send({ type: 'answer', target: this.id, answer: pc.localDescription?.toJSON() });
      }
    });
  }

  /** @param {RTCIceCandidateInit} c */
  onCandidate(c) {
    return this._do(async () => {
      try {
        await this.pc.addIceCandidate(c);
      } catch (e) {
        if (!this.ignoreOffer) throw e;
      }
    });
  }

  isOpen() {
    return this.reliable.readyState === 'open';
  }

  /** @param {unknown} value */
  async sendReliable(value) {
    const ch = this.reliable;
    for (const frame of encodeChunks(value, this.msgId++)) {
      if (ch.bufferedAmount > HIGH_WATERMARK) {
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
      if (ch.readyState !== 'open') throw new Error(`channel to ${this.id} closed`);
      ch.send(frame);
    }
  }

  ping() {
    if (this.updates.readyState === 'open') this.updates.send(JSON.stringify({ p: performance.now() }));
  }

  /** @param {unknown} data */
  _onUpdate(data) {
    if (typeof data !== 'string') return;
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (m && typeof m.p === 'number') {
      if (this.updates.readyState === 'open') this.updates.send(JSON.stringify({ q: m.p }));
    } else if (m && typeof m.q === 'number') {
      this.room._rttSample(performance.now() - m.q);
    } else if (m && 'u' in m) {
      this.room.emit('update', this.id, m.u);
    }
  }

  close() {
    this.pc.close();
  }
}
