// Room: one joined room, in mesh or SFU mode. It owns the membership (room_peers, peer_joined,
// peer_left), the mode (from `joined.mode`, switched by `mode_changed`), the links (a mesh Peer
// per remote participant, or the one SfuLink), routing signaling to them, remote track
// bookkeeping, the RTT ping timer and reports, and the public send/publish/stats API. It
// reaches the signaling connection only through the `Signaling` view (protocol.js).

import { Emitter } from './emitter.js';
import { Peer } from './peer.js';
import { SfuLink } from './sfu.js';
import { CHUNK_BYTES } from './chunking.js';
import { SFU_ID } from './protocol.js';
import { RTT_INTERVAL_MS, addRttSample, rttStats, takeRttReport } from './stats.js';
import {
  endScreenShare, newPublication, startScreenShare, subscribeMessage, subscription,
  swapPublishedTrack, withdrawPublication,
} from './media.js';

/**
 * @typedef {import('./protocol.js').Signaling} Signaling
 * @typedef {import('./protocol.js').SignalMessage} SignalMessage
 * @typedef {import('./stats.js').RttStats} RttStats
 * @typedef {import('./media.js').Publication} Publication
 * @typedef {import('./media.js').PublishOptions} PublishOptions
 * @typedef {import('./media.js').RemoteTrack} RemoteTrack
 * @typedef {import('./media.js').ScreenShare} ScreenShare
 * @typedef {import('./media.js').SubscribeOptions} SubscribeOptions
 */

/**
 * A joined room, in mesh or SFU mode (from `joined.mode`; switched by `mode_changed`).
 * Events: joined, resumed, peer_joined, peer_left, peer_connected (a peer id, or "$sfu"),
 * peer_state, message (from, value), update (from, value), track (publisher, track, info),
 * track_ended (publisher, trackId), server_message (topic, data), stream_progress (event),
 * mode_changed (mode), sfu_connected, sfu_closed (reason), error.
 */
export class Room extends Emitter {
  /**
   * @param {Signaling} client
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
    /** @type {ScreenShare|null} */
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
      // sfu_capable: this SDK can follow an `auto` room to the SFU (a plain mesh client cannot,
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
    const samples = takeRttReport(this.rttUnreported, this._lastReport, now);
    if (samples) {
      this._lastReport = now;
      this.client.send({ type: 'rtt_report', rtt_ms: samples });
    }
  }
  /** @type {number|undefined} */
  _lastReport;

  /** @param {number} ms */
  _rttSample(ms) {
    addRttSample(this.rtt, this.rttUnreported, ms);
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

  // ---- media (the work is in media.js) -------------------------------------------------------

  /**
   * Sends a local track to everyone: to each mesh peer (now and later), or once to the SFU,
   * which forwards it. `simulcast` (SFU mode, video) sends three encodings q/h/f at 1/4, 1/2 and
   * full resolution so each subscriber gets the layer it can take.
   * @param {MediaStreamTrack} track
   * @param {PublishOptions} [opts]
   */
  publish(track, opts = {}) {
    if (this.publications.some((p) => p.track === track)) return;
    const pub = newPublication(track, opts);
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
    withdrawPublication(pub);
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
    const o = subscription(opts);
    this._subs.set(publisher, o);
    if (this.mode === 'sfu') this._sendSubscribe(publisher, o);
  }

  /**
   * @param {string} publisher
   * @param {SubscribeOptions} o
   */
  _sendSubscribe(publisher, o) {
    this.client.send(subscribeMessage(publisher, o));
  }

  /**
   * Sends `next` in place of the published `prev` on every connection (no renegotiation).
   * @param {MediaStreamTrack} prev
   * @param {MediaStreamTrack} next
   */
  async replaceTrack(prev, next) {
    const pub = this.publications.find((p) => p.track === prev);
    if (!pub) throw new Error('track is not published');
    await swapPublishedTrack(pub, next, this.localStream);
  }

  /**
   * Shares the screen in place of the published camera (RTCRtpSender.replaceTrack, no
   * renegotiation); the camera comes back when sharing ends (the browser's "stop" button or
   * `track.stop()` then `room.stopScreenShare()`). Resolves with the screen track.
   * @param {DisplayMediaStreamOptions} [constraints]
   * @returns {Promise<MediaStreamTrack>}
   */
  async shareScreen(constraints = { video: true, audio: false }) {
    return startScreenShare(this, constraints);
  }

  /** Puts the camera back after `shareScreen`. */
  async stopScreenShare() {
    await endScreenShare(this);
  }

  /**
   * RTT percentiles over DataChannel pings (ms; to peers in mesh mode, to the server in SFU
   * mode) and connection states.
   * @returns {{ mode: string, rtt: RttStats, peers: {id: string, state: string}[], reconnects: number }}
   */
  stats() {
    const peers = [...this.peers.values()].map((p) => ({ id: p.id, state: p.pc.connectionState }));
    if (this.sfu) peers.push({ id: SFU_ID, state: this.sfu.pc.connectionState });
    return {
      mode: this.mode,
      rtt: rttStats(this.rtt),
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
