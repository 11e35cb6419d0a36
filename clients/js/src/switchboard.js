// @switchboard/client: the browser SDK for Switchboard signaling, DataChannels and media, in
// mesh (peer-to-peer) and SFU (through the server) rooms with the same API.
//
//   const client = await connect('https://host', token, { getToken });
//   const room = client.room('r1');
//   room.on('message', (from, obj) => ...);      // reliable channel, any size (chunked)
//   room.on('update', (from, obj) => ...);       // "updates" channel: ordered, maxRetransmits 0
//   await room.join();
//   await room.send({ hello: 'world' });         // to everyone; { to: peerId } for one peer
//   room.sendUpdate({ x, y });
//   room.stats();                                // { mode, rtt: { p50, p95, p99, count }, peers }
//   room.publish(cameraTrack, { simulcast: true });  // media, both modes
//   room.on('track', (publisher, track, { kind, trackId }) => ...);
//   room.on('track_ended', (publisher, trackId) => ...);
//
// Signaling is the seed's JSON dialect over WebSocket. Every message the server delivers to a
// joined session carries `seq`; when the socket drops, the SDK reconnects with the resume token
// from `joined` and `last_seq`, and the server replays what it missed. The SDK keeps its own
// relay messages until the server confirms them (`joined.received`) and re-sends the rest.
// Mesh: one RTCPeerConnection per remote peer, trickle ICE, perfect negotiation (both sides may
// offer at once; the polite side rolls back), ICE restart when connectivity fails or the network
// changes. The newcomer makes the first offer to each peer in `room_peers`.
// SFU (docs/sfu-protocol.md): one RTCPeerConnection to the server (peer "$sfu") with in-band
// channels "reliable" and "updates" carrying JSON envelopes; the server relays them and forwards
// media. The room's mode comes from `joined.mode` and switches on `mode_changed`.

import { encodeChunks, Reassembler, CHUNK_BYTES, encodePieces, PieceAssembler } from './chunking.js';

/** Buffered bytes under which a waiting `send` resumes. */
export const LOW_WATERMARK = 64 * 1024;
/** Buffered bytes at which `send` waits for the channel to drain. */
export const HIGH_WATERMARK = 1024 * 1024;
const RTT_INTERVAL_MS = 1000;
const RTT_REPORT_MS = 5000;
const MAX_RTT_SAMPLES = 2048;
const MAX_OUTBOX = 1024;
/** Buffered bytes at which an SFU-mode `send` waits (the server's relay queues are bounded). */
const SFU_HIGH_WATERMARK = 256 * 1024;
/** The SFU's peer name in signaling. */
export const SFU_ID = '$sfu';
/** The server's name in SFU DataChannel envelopes. */
export const SERVER_ID = '$server';

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
    /** SFU-bound messages held while the socket is down. @type {SignalMessage[]} */
    this.heldForSfu = [];
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

/**
 * What the SDK knows about one remote media track.
 * @typedef {{ publisher: string, trackId: string, kind: string, mid: string|null,
 *             track: MediaStreamTrack|null, emitted: boolean }} RemoteTrack
 * @typedef {{ video?: boolean, maxLayer?: number }} SubscribeOptions
 * @typedef {{ simulcast?: boolean }} PublishOptions
 */

/**
 * One published local track: `track` is what is sent now (it changes with `replaceTrack` and
 * screen sharing), `senders` holds its RTCRtpSender on each connection (mesh peer or the SFU).
 * @typedef {{ track: MediaStreamTrack, simulcast: boolean,
 *             senders: Map<Peer|SfuLink, RTCRtpSender> }} Publication
 */

/** Simulcast encodings for SFU publishing: quarter, half and full resolution. */
export const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4 },
  { rid: 'h', scaleResolutionDownBy: 2 },
  { rid: 'f', scaleResolutionDownBy: 1 },
];

/**
 * A joined room, in mesh or SFU mode (from `joined.mode`; switched by `mode_changed`).
 * Events: joined, resumed, peer_joined, peer_left, peer_connected (a peer id, or "$sfu"),
 * peer_state, message (from, value), update (from, value), track (publisher, track, info),
 * track_ended (publisher, trackId), server_message (topic, data), stream_progress (event),
 * mode_changed (mode), sfu_connected, sfu_closed (reason), error.
 */
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
    /** "mesh" or "sfu". */
    this.mode = 'mesh';
    /** Mesh peer connections. @type {Map<string, Peer>} */
    this.peers = new Map();
    /** The connection to the SFU (SFU mode). @type {SfuLink|null} */
    this.sfu = null;
    /** Everyone else in the room, in both modes. @type {Set<string>} */
    this.members = new Set();
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
    /** Local tracks being sent. @type {Publication[]} */
    this.publications = [];
    /** The MediaStream local tracks are sent in (its id is the MSID stream id in mesh mode). */
    this.localStream = typeof MediaStream !== 'undefined' ? new MediaStream() : null;
    /** Remote tracks by key (mesh: "peer/trackId"; SFU: "$sfu/mid"). @type {Map<string, RemoteTrack>} */
    this.remoteTracks = new Map();
    /** Subscription limits to re-send when the SFU session restarts. @type {Map<string, SubscribeOptions>} */
    this._subs = new Map();
    /** @type {{ screen: MediaStreamTrack, camera: MediaStreamTrack }|null} */
    this._screen = null;
    this._left = false;
    /** Recent stream_progress events (dedup). @type {string[]} */
    this._progressSeen = [];
  }

  /**
   * Joins the room; resolves with the `joined` message.
   * @param {{ mode?: 'sfu' }} [opts] `mode: "sfu"` asks for an SFU room when this join creates it
   * @returns {Promise<SignalMessage>}
   */
  join(opts = {}) {
    this._joinOpts = opts;
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
      /** @type {SignalMessage} */
      // sfu_capable: this SDK can follow an `auto` room to the SFU (the seed's client cannot,
      // and the server keeps rooms with such members in mesh mode).
      const msg = { type: 'join', room_id: this.id, sfu_capable: true };
      if (opts.mode) msg.mode = opts.mode;
      this.client.send(msg);
      if (!this._timer) {
        this._timer = setInterval(() => this._tick(), RTT_INTERVAL_MS);
        if (typeof window !== 'undefined') {
          window.addEventListener('online', this._onNetworkChange);
          /** @type {any} */ (navigator).connection?.addEventListener?.('change', this._onNetworkChange);
        }
      }
    });
  }
  /** @type {{ mode?: 'sfu' }|undefined} */
  _joinOpts;

  async _rejoin() {
    this._closePeers();
    await this.join(this._joinOpts);
  }

  /** @param {SignalMessage} msg */
  _onSignal(msg) {
    // Everything from the SFU side of the server.
    if (msg.from === SFU_ID) {
      this._onSfuSignal(msg);
      return;
    }
    switch (msg.type) {
      case 'room_peers':
        // Peers are created once `joined` tells us our id (politeness), mode and ICE servers.
        this._pendingPeers = Array.isArray(msg.peers) ? msg.peers : [];
        break;
      case 'joined': {
        this.peerId = msg.peer_id;
        this.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
        const mode = msg.mode === 'sfu' ? 'sfu' : 'mesh';
        if (!msg.resumed) this.members = new Set(this._pendingPeers);
        if (mode === 'sfu') {
          this.mode = 'sfu';
          if (!msg.resumed || !this.sfu) this._connectSfu();
        } else if (this.mode === 'sfu' && msg.resumed) {
          // A room never goes back to mesh while it has members; keep what we have.
        } else {
          this.mode = 'mesh';
          for (const p of this._pendingPeers) this._peer(p);
        }
        this._pendingPeers = [];
        if (msg.resumed) this.emit('resumed', msg);
        else this.emit('joined', msg);
        if (this._joinWaiter) {
          this._joinWaiter(msg);
          this._joinWaiter = null;
        }
        break;
      }
      case 'mode_changed':
        if (msg.mode === 'sfu' && this.mode !== 'sfu') {
          this.mode = 'sfu';
          for (const p of this.peers.values()) this._dropPeer(p);
          this._connectSfu();
          this.emit('mode_changed', 'sfu');
        }
        break;
      case 'peer_joined':
        // The newcomer offers (it learned of us from room_peers); we answer when its offer
        // arrives. Initial glare is thus avoided, and perfect negotiation still covers the
        // later cases where both sides renegotiate at once (ICE restarts).
        this.members.add(msg.peer_id);
        this.emit('peer_joined', msg.peer_id);
        break;
      case 'peer_left': {
        this.members.delete(msg.peer_id);
        const p = this.peers.get(msg.peer_id);
        if (p) this._dropPeer(p);
        this.sfu?.assembler.forget(msg.peer_id);
        this.emit('peer_left', msg.peer_id);
        break;
      }
      case 'offer':
        if (this.mode === 'mesh') this._peer(msg.from).onDescription(msg.offer);
        break;
      case 'answer':
        this.peers.get(msg.from)?.onDescription(msg.answer);
        break;
      case 'ice_candidate':
        this.peers.get(msg.from)?.onCandidate(msg.candidate);
        break;
      case 'bye': {
        const p = this.peers.get(msg.from);
        if (p) this._dropPeer(p);
        break;
      }
      case 'stream_progress':
        this._progress(msg);
        break;
      case 'error':
        this.emit('error', msg);
        break;
      default:
        this.emit(msg.type, msg);
    }
  }

  /**
   * Emits `stream_progress` once per event: in SFU rooms the server sends each one both over
   * signaling and over the DataChannel, whichever arrives first wins.
   * @param {any} ev
   */
  _progress(ev) {
    if (!ev || typeof ev !== 'object') return;
    const key = `${ev.task_id}|${ev.chunks}|${ev.bytes}|${ev.state}`;
    if (this._progressSeen.includes(key)) return;
    this._progressSeen.push(key);
    if (this._progressSeen.length > 64) this._progressSeen.shift();
    this.emit('stream_progress', ev);
  }

  /** @param {SignalMessage} msg a message with `from: "$sfu"` */
  _onSfuSignal(msg) {
    const link = this.sfu;
    switch (msg.type) {
      case 'answer':
        link?.onDescription(msg.answer);
        break;
      case 'offer':
        link?.onDescription(msg.offer);
        break;
      case 'ice_candidate':
        link?.onCandidate(msg.candidate);
        break;
      case 'track_added': {
        if (typeof msg.mid !== 'string' || typeof msg.publisher !== 'string') return;
        const key = `${SFU_ID}/${msg.mid}`;
        const old = this.remoteTracks.get(key);
        if (old && old.trackId !== String(msg.track)) this._endRemote(key);
        if (!this.remoteTracks.has(key)) {
          this.remoteTracks.set(key, {
            publisher: msg.publisher, trackId: String(msg.track), kind: String(msg.kind ?? ''),
            mid: msg.mid, track: null, emitted: false,
          });
        }
        this._sfuTryEmit(msg.mid);
        break;
      }
      case 'track_ended':
        if (typeof msg.mid === 'string') this._endRemote(`${SFU_ID}/${msg.mid}`);
        break;
      case 'sfu_connected':
        for (const [publisher, o] of this._subs) this._sendSubscribe(publisher, o);
        this.emit('sfu_connected', msg);
        break;
      case 'sfu_closed': {
        this.emit('sfu_closed', msg.reason);
        // The server's session is gone: start a fresh one (new connection, same tracks).
        // "bye" only confirms a close this client asked for.
        if (this.mode === 'sfu' && !this._left && link && msg.reason !== 'bye') {
          this._closeSfu(false);
          this._endRemotes((r) => r.mid !== null);
          setTimeout(() => {
            if (this.mode === 'sfu' && !this._left && !this.sfu) this._connectSfu();
          }, 500);
        }
        break;
      }
      case 'error':
        this.emit('error', msg);
        break;
      default:
        this.emit(msg.type, msg);
    }
  }

  _connectSfu() {
    this._closeSfu();
    this.sfu = new SfuLink(this);
  }

  /** Closes the SFU connection (if any) and forgets its senders.
   * @param {boolean} [bye] tell the server (not when it already ended the session) */
  _closeSfu(bye = true) {
    const link = this.sfu;
    if (!link) return;
    link.close(bye);
    for (const pub of this.publications) pub.senders.delete(link);
    this.sfu = null;
  }

  /**
   * Emits `track` for the SFU down-track on `mid` once both its `track_added` message and its
   * transceiver (from the server's offer) are known; they may come in either order.
   * @param {string} mid
   */
  _sfuTryEmit(mid) {
    const r = this.remoteTracks.get(`${SFU_ID}/${mid}`);
    if (!r || r.emitted || !this.sfu) return;
    const tr = this.sfu.pc.getTransceivers().find((t) => t.mid === mid);
    if (!tr || !this.sfu.seenMids.has(mid)) return;
    r.track = tr.receiver.track;
    r.emitted = true;
    this.emit('track', r.publisher, r.track, { kind: r.kind || r.track.kind, trackId: r.trackId, mid });
  }

  /** @param {string} key */
  _endRemote(key) {
    const r = this.remoteTracks.get(key);
    if (!r) return;
    this.remoteTracks.delete(key);
    if (r.emitted) this.emit('track_ended', r.publisher, r.trackId);
  }

  /** @param {(r: RemoteTrack) => boolean} pred */
  _endRemotes(pred) {
    for (const [k, r] of [...this.remoteTracks]) if (pred(r)) this._endRemote(k);
  }

  /** @param {Peer} p */
  _dropPeer(p) {
    p.close();
    this.peers.delete(p.id);
    for (const pub of this.publications) pub.senders.delete(p);
    this._endRemotes((r) => r.mid === null && r.publisher === p.id);
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
      for (const pub of this.publications) p.addPublication(pub);
    }
    return p;
  }

  _tick() {
    for (const p of this.peers.values()) p.ping();
    this.sfu?.ping();
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
   * Sends `value` (any JSON) reliably: chunked, with backpressure. Mesh: over each peer's
   * "reliable" channel; SFU: through the server (one participant with `to`, else everyone).
   * Resolves when every piece is handed to the channel(s).
   * @param {unknown} value
   * @param {{ to?: string }} [opts]
   */
  async send(value, opts = {}) {
    if (this.mode === 'sfu') {
      if (!this.sfu || !this.sfu.isOpen()) throw new Error('not connected to the SFU yet');
      await this.sfu.sendReliable(value, opts.to);
      return;
    }
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
    if (this.mode === 'sfu') {
      this.sfu?.sendUpdate(text, opts.to);
      return;
    }
    for (const p of opts.to ? [this.peers.get(opts.to)] : this.peers.values()) {
      if (p && p.updates.readyState === 'open') p.updates.send(text);
    }
  }

  /** ICE restart on every peer connection (network change). */
  restartIce() {
    for (const p of this.peers.values()) p.pc.restartIce();
    this.sfu?.pc.restartIce();
  }

  // ---- media --------------------------------------------------------------------------------

  /**
   * Sends a local track to everyone: to each mesh peer (now and later), or once to the SFU,
   * which forwards it. `simulcast` (SFU mode, video) sends three encodings q/h/f at 1/4, 1/2 and
   * full resolution so each subscriber gets the layer it can take.
   * @param {MediaStreamTrack} track
   * @param {PublishOptions} [opts]
   */
  publish(track, opts = {}) {
    if (this.publications.some((p) => p.track === track)) return;
    /** @type {Publication} */
    const pub = { track, simulcast: !!opts.simulcast && track.kind === 'video', senders: new Map() };
    this.publications.push(pub);
    this.localStream?.addTrack(track);
    for (const p of this.peers.values()) p.addPublication(pub);
    this.sfu?.addPublication(pub);
  }

  /**
   * Stops sending a track (the others get `track_ended`). The track itself keeps running.
   * @param {MediaStreamTrack} track
   */
  unpublish(track) {
    const i = this.publications.findIndex((p) => p.track === track);
    if (i < 0) return;
    const [pub] = this.publications.splice(i, 1);
    this.localStream?.removeTrack(track);
    for (const [link, sender] of pub.senders) link.removeSender(sender);
    pub.senders.clear();
  }

  /**
   * Mutes or unmutes a local track (`track.enabled`): a muted camera sends black frames, a muted
   * microphone silence, without renegotiation.
   * @param {MediaStreamTrack} track
   * @param {boolean} muted
   */
  setMuted(track, muted) {
    track.enabled = !muted;
  }

  /**
   * Narrows what this client receives of `publisher`'s video (SFU mode; no-op in mesh mode):
   * `video: false` pauses it (off-screen tile), `maxLayer` caps the simulcast layer (0..2).
   * @param {string} publisher
   * @param {SubscribeOptions} [opts]
   */
  subscribe(publisher, opts = {}) {
    const o = { video: opts.video ?? true, maxLayer: opts.maxLayer ?? 2 };
    this._subs.set(publisher, o);
    if (this.mode === 'sfu') this._sendSubscribe(publisher, o);
  }

  /**
   * @param {string} publisher
   * @param {SubscribeOptions} o
   */
  _sendSubscribe(publisher, o) {
    this.client.send({ type: 'subscribe', publisher, video: o.video !== false, max_layer: Math.max(0, Math.min(2, o.maxLayer ?? 2)) });
  }

  /**
   * Sends `next` in place of the published `prev` on every connection (no renegotiation).
   * @param {MediaStreamTrack} prev
   * @param {MediaStreamTrack} next
   */
  async replaceTrack(prev, next) {
    const pub = this.publications.find((p) => p.track === prev);
    if (!pub) throw new Error('track is not published');
    pub.track = next;
    if (this.localStream) {
      this.localStream.removeTrack(prev);
      this.localStream.addTrack(next);
    }
    await Promise.all([...pub.senders.values()].map((s) => s.replaceTrack(next)));
  }

  /**
   * Shares the screen in place of the published camera (RTCRtpSender.replaceTrack, no
   * renegotiation); the camera comes back when sharing ends (the browser's "stop" button or
   * `track.stop()` then `room.stopScreenShare()`). Resolves with the screen track.
   * @param {DisplayMediaStreamOptions} [constraints]
   * @returns {Promise<MediaStreamTrack>}
   */
  async shareScreen(constraints = { video: true, audio: false }) {
    const camera = this.publications.find((p) => p.track.kind === 'video')?.track;
    if (!camera) throw new Error('publish a camera track first');
    if (this._screen) return this._screen.screen;
    const stream = await navigator.mediaDevices.getDisplayMedia(constraints);
    const screen = stream.getVideoTracks()[0];
    if (!screen) throw new Error('no screen track');
    await this.replaceTrack(camera, screen);
    this._screen = { screen, camera };
    screen.addEventListener('ended', () => { this.stopScreenShare(); });
    return screen;
  }

  /** Puts the camera back after `shareScreen`. */
  async stopScreenShare() {
    const s = this._screen;
    if (!s) return;
    this._screen = null;
    s.screen.stop();
    if (this.publications.some((p) => p.track === s.screen)) await this.replaceTrack(s.screen, s.camera);
  }

  /**
   * RTT percentiles over DataChannel pings (ms; to peers in mesh mode, to the server in SFU
   * mode) and connection states.
   * @returns {{ mode: string, rtt: RttStats, peers: {id: string, state: string}[], reconnects: number }}
   */
  stats() {
    const s = [...this.rtt].sort((a, b) => a - b);
    /** @param {number} q */
    const pct = (q) => (s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : null);
    const peers = [...this.peers.values()].map((p) => ({ id: p.id, state: p.pc.connectionState }));
    if (this.sfu) peers.push({ id: SFU_ID, state: this.sfu.pc.connectionState });
    return {
      mode: this.mode,
      rtt: { p50: pct(0.5), p95: pct(0.95), p99: pct(0.99), count: s.length },
      peers,
      reconnects: this.client.reconnects,
    };
  }

  /** Leaves the room and closes the connection. */
  leave() {
    this._left = true;
    if (this._timer) clearInterval(this._timer);
    if (typeof window !== 'undefined') window.removeEventListener('online', this._onNetworkChange);
    this.client.close();
  }

  _closePeers() {
    for (const p of [...this.peers.values()]) this._dropPeer(p);
    this.peers.clear();
    if (this.sfu) {
      this._closeSfu();
      this._endRemotes(() => true);
    }
  }
}

/** Sends `frames` on `ch`, waiting for it to drain below the low watermark when it is full.
 * @param {RTCDataChannel} ch
 * @param {Iterable<string|ArrayBuffer>} frames
 * @param {string} what for the error message
 * @param {number} high
 */
async function sendWithBackpressure(ch, frames, what, high) {
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
function parseJsonText(raw) {
  if (typeof raw !== 'string') return undefined;
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}

/**
 * What a mesh {@link Peer} and the {@link SfuLink} share: one RTCPeerConnection to `id` with a
 * "reliable" and an "updates" DataChannel (`peer_connected` once both are open), signaling
 * work serialized per connection, offers on `negotiationneeded`, trickle ICE both ways, and
 * `peer_state` events.
 */
class Link {
  /**
   * @param {Room} room
   * @param {string} id signaling target
   * @param {RTCConfiguration} config everything but `iceServers` (they come from the room)
   * @param {Array<['reliable'|'updates', RTCDataChannelInit]>} channels created in this order
   */
  constructor(room, id, config, channels) {
    this.room = room;
    this.id = id;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.closed = false;
    this.msgId = 1;
    /** Serializes signaling work per connection. @type {Promise<void>} */
    this.queue = Promise.resolve();
    /** @type {RTCPeerConnection} */
    let pc;
    try {
      pc = new RTCPeerConnection({ ...config, iceServers: room.iceServers });
    } catch (e) {
      // A server advertising an unusable ICE server must not cost us direct connectivity.
      room.client.options.log?.('iceServers rejected; using none', e);
      room.emit('error', { code: 'bad_ice_servers', message: String(e) });
      pc = new RTCPeerConnection({ ...config, iceServers: [] });
    }
    this.pc = pc;
    /** @type {Record<string, RTCDataChannel>} */
    const dc = {};
    for (const [label, init] of channels) dc[label] = pc.createDataChannel(label, init);
    this.reliable = dc.reliable;
    this.updates = dc.updates;
    this.reliable.bufferedAmountLowThreshold = LOW_WATERMARK;
    let opened = 0;
    const onOpen = () => {
      if (++opened === 2) room.emit('peer_connected', id);
    };
    this.reliable.onopen = onOpen;
    this.updates.onopen = onOpen;
    pc.onnegotiationneeded = () => this._do(async () => {
      if (this.closed) return;
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
      if (candidate && candidate.candidate && !this.closed) {
        room.client.send({ type: 'ice_candidate', target: id, candidate: candidate.toJSON() });
      }
    };
    pc.onconnectionstatechange = () => room.emit('peer_state', id, pc.connectionState);
  }

  /** @param {RTCRtpSender} sender */
  removeSender(sender) {
    if (this.pc.signalingState !== 'closed') this.pc.removeTrack(sender);
  }

  /** @param {() => Promise<void>} fn */
  _do(fn) {
    this.queue = this.queue.then(fn).catch((e) => this.room.client.options.log?.('negotiation', this.id, e));
    return this.queue;
  }

  /** @param {RTCIceCandidateInit} c */
  onCandidate(c) {
    return this._do(async () => {
      if (this.closed || !c || !c.candidate) return;
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
}

/** One remote peer: an RTCPeerConnection with two negotiated DataChannels. */
export class Peer extends Link {
  /**
   * @param {Room} room
   * @param {string} id
   * @param {boolean} polite
   */
  constructor(room, id, polite) {
    // Negotiated channels: both sides create them, so both may offer at once (glare), which
    // perfect negotiation resolves.
    super(room, id, {}, [
      ['updates', { negotiated: true, id: 0, ordered: true, maxRetransmits: 0 }],
      ['reliable', { negotiated: true, id: 1, ordered: true }],
    ]);
    this.polite = polite;
    this.reassembler = new Reassembler();
    const pc = this.pc;
    this.reliable.binaryType = 'arraybuffer';
    this.updates.onmessage = (ev) => this._onUpdate(ev.data);
    this.reliable.onmessage = (ev) => {
      try {
        const r = this.reassembler.push(ev.data);
        if (r.done) room.emit('message', id, r.value);
      } catch (e) {
        room.emit('error', { code: 'bad_chunk', message: String(e), from: id });
      }
    };
    // Remote media: the publisher is this peer; the track ends when its stream loses it
    // (the remote side removed it and renegotiated) or the connection closes.
    pc.ontrack = (ev) => {
      const track = ev.track;
      const key = `${id}/${track.id}`;
      if (room.remoteTracks.get(key)?.emitted) return;
      room.remoteTracks.set(key, { publisher: id, trackId: track.id, kind: track.kind, mid: null, track, emitted: true });
      const onRemove = (/** @type {MediaStreamTrackEvent} */ e) => {
        if (e.track === track) room._endRemote(key);
      };
      for (const s of ev.streams) s.addEventListener('removetrack', onRemove);
      track.addEventListener('ended', () => room._endRemote(key));
      room.emit('track', id, track, { kind: track.kind, trackId: track.id, mid: null });
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
  }

  /** @param {Publication} pub */
  addPublication(pub) {
    if (!this.room.localStream) return;
    pub.senders.set(this, this.pc.addTrack(pub.track, this.room.localStream));
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

  /** @param {unknown} value */
  async sendReliable(value) {
    await sendWithBackpressure(this.reliable, encodeChunks(value, this.msgId++), this.id, HIGH_WATERMARK);
  }

  ping() {
    if (this.updates.readyState === 'open') this.updates.send(JSON.stringify({ p: performance.now() }));
  }

  /** @param {unknown} data */
  _onUpdate(data) {
    const m = parseJsonText(data);
    if (m && typeof m.p === 'number') {
      if (this.updates.readyState === 'open') this.updates.send(JSON.stringify({ q: m.p }));
    } else if (m && typeof m.q === 'number') {
      this.room._rttSample(performance.now() - m.q);
    } else if (m && 'u' in m) {
      this.room.emit('update', this.id, m.u);
    }
  }

  close() {
    this.closed = true;
    this.pc.close();
  }
}

/**
 * SFU mode: the one RTCPeerConnection to the server (peer "$sfu"). The client creates the
 * in-band channels "reliable" and "updates" before its first offer, publishes with sendonly
 * transceivers, and receives the server's down-tracks on m-lines the server offers. In glare the
 * client is the impolite side (the server rolls back and offers again after answering).
 */
export class SfuLink extends Link {
  /** @param {Room} room */
  constructor(room) {
    super(room, SFU_ID, { bundlePolicy: 'max-bundle' }, [
      ['reliable', { ordered: true }],
      ['updates', { ordered: true, maxRetransmits: 0 }],
    ]);
    this.assembler = new PieceAssembler();
    /** Mids whose `ontrack` fired. @type {Set<string>} */
    this.seenMids = new Set();
    const pc = this.pc;
    this.reliable.onmessage = (ev) => this._onData(ev.data);
    this.updates.onmessage = (ev) => this._onData(ev.data);
    pc.ontrack = (ev) => {
      const mid = ev.transceiver.mid;
      if (mid === null) return;
      this.seenMids.add(mid);
      room._sfuTryEmit(mid);
    };
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === 'failed' && !this.closed) pc.restartIce();
    };
    for (const pub of room.publications) this.addPublication(pub);
  }

  /** @param {Publication} pub */
  addPublication(pub) {
    /** @type {RTCRtpTransceiverInit} */
    const init = { direction: 'sendonly' };
    if (this.room.localStream) init.streams = [this.room.localStream];
    if (pub.simulcast) init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
    pub.senders.set(this, this.pc.addTransceiver(pub.track, init).sender);
  }


  /** @param {RTCSessionDescriptionInit} desc */
  onDescription(desc) {
    return this._do(async () => {
      const pc = this.pc;
      if (this.closed || !desc || typeof desc.sdp !== 'string') return;
      const collision = desc.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
      // The client is impolite towards the server: a crossing server offer is ignored.
      this.ignoreOffer = collision;
      this.room.client.options.log?.('sfu description', desc.type, pc.signalingState, collision ? 'ignored' : '');
      if (this.ignoreOffer) return;
      if (desc.type === 'answer' && pc.signalingState !== 'have-local-offer') return;
      await pc.setRemoteDescription(desc);
      if (desc.type === 'offer') {
        await pc.setLocalDescription();
        this.room.client.send({ type: 'answer', target: SFU_ID, answer: pc.localDescription?.toJSON() });
      }
      // Transceivers for down-tracks exist now; emit any whose track_added came first.
      for (const t of pc.getTransceivers()) if (t.mid !== null && t.receiver.track) this.seenMids.add(t.mid);
      for (const mid of this.seenMids) this.room._sfuTryEmit(mid);
    });
  }

  /**
   * @param {unknown} value
   * @param {string} [to] one participant; everyone else when absent
   */
  async sendReliable(value, to) {
    const pieces = encodePieces(value, this.msgId++);
    const frames = pieces.map((data) => JSON.stringify(to ? { to, data } : { data }));
    await sendWithBackpressure(this.reliable, frames, SFU_ID, SFU_HIGH_WATERMARK);
  }

  /**
   * @param {string} text `{"u": ...}` JSON text
   * @param {string} [to]
   */
  sendUpdate(text, to) {
    if (this.updates.readyState !== 'open') return;
    this.updates.send(to ? `{"to":${JSON.stringify(to)},"data":${text}}` : `{"data":${text}}`);
  }

  ping() {
    if (this.updates.readyState === 'open') {
      this.updates.send(JSON.stringify({ to: SERVER_ID, data: { p: performance.now() } }));
    }
  }

  /** @param {unknown} raw */
  _onData(raw) {
    const env = parseJsonText(raw);
    if (!env || typeof env.from !== 'string') return;
    const room = this.room;
    const { from, data } = env;
    if (from === SERVER_ID) {
      const topic = typeof env.topic === 'string' ? env.topic : '';
      if (topic === 'pong' && data && typeof data.q === 'number') room._rttSample(performance.now() - data.q);
      room.emit('server_message', topic, data);
      if (topic === 'stream_progress') room._progress(data);
      return;
    }
    if (!data || typeof data !== 'object') return;
    if ('m' in data) {
      room.emit('message', from, data.m);
    } else if ('k' in data) {
      try {
        const r = this.assembler.push(from, data.k);
        if (r.done) room.emit('message', from, r.value);
      } catch (e) {
        room.emit('error', { code: 'bad_chunk', message: String(e), from });
      }
    } else if ('u' in data) {
      room.emit('update', from, data.u);
    }
  }

  /** @param {boolean} [bye] tell the server to end the session (not when it already did) */
  close(bye = true) {
    if (this.closed) return;
    this.closed = true;
    if (bye && this.room.client.ws?.readyState === 1) this.room.client.send({ type: 'bye', target: SFU_ID });
    this.pc.close();
  }
}

// ---- local recording ---------------------------------------------------------------------------

/**
 * A running local recording.
 * @typedef {{ recorder: MediaRecorder, chunks: Blob[], mimeType: string,
 *             stop: () => Promise<Blob>, download: (filename?: string) => Promise<Blob> }} Recording
 */

/**
 * Records a stream or a track locally with MediaRecorder; data arrives in `chunks` every
 * `timesliceMs` (so a long recording is not one buffer at the end).
 * @param {MediaStream|MediaStreamTrack} source
 * @param {{ timesliceMs?: number, mimeType?: string }} [opts]
 * @returns {Recording}
 */
export function record(source, opts = {}) {
  const stream = source instanceof MediaStream ? source : new MediaStream([source]);
  const wanted = opts.mimeType ?? ['video/webm;codecs=vp8', 'video/webm', 'audio/webm'].find((t) => MediaRecorder.isTypeSupported(t));
  const recorder = new MediaRecorder(stream, wanted ? { mimeType: wanted } : {});
  /** @type {Blob[]} */
  const chunks = [];
  recorder.ondataavailable = (ev) => {
    if (ev.data && ev.data.size > 0) chunks.push(ev.data);
  };
  const stopped = new Promise((resolve) => recorder.addEventListener('stop', () => resolve(undefined), { once: true }));
  recorder.start(Math.max(10, opts.timesliceMs ?? 1000));
  const mimeType = recorder.mimeType || wanted || 'video/webm';
  /** @type {Blob|null} */
  let result = null;
  const stop = async () => {
    if (result) return result;
    if (recorder.state !== 'inactive') recorder.stop();
    await stopped;
    result = new Blob(chunks, { type: mimeType });
    return result;
  };
  return {
    recorder,
    chunks,
    mimeType,
    stop,
    async download(filename = 'recording.webm') {
      const blob = await stop();
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = filename;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      return blob;
    },
  };
}
