// Peer: one remote participant in a mesh room. Perfect negotiation with a fixed politeness,
// chunked messages on the "reliable" channel (chunking.js), updates and RTT pings on "updates",
// the remote peer's media tracks, and ICE restarts when connectivity fails or stalls.

import { Link } from './link.js';
import { HIGH_WATERMARK, MESH_CHANNELS, parseJsonText, sendWithBackpressure } from './channels.js';
import { encodeChunks, Reassembler } from './chunking.js';

/**
 * @typedef {import('./link.js').LinkHost} LinkHost
 * @typedef {import('./media.js').Publication} Publication
 * @typedef {import('./media.js').RemoteTrack} RemoteTrack
 */

/**
 * What a mesh peer uses of its room, besides what every link does.
 * @typedef {object} PeerRoom
 * @property {MediaStream|null} localStream the stream local tracks are sent in
 * @property {Map<string, RemoteTrack>} remoteTracks
 * @property {(key: string) => void} _endRemote ends a remote track (`track_ended`)
 * @property {(ms: number) => void} _rttSample
 * @typedef {LinkHost & PeerRoom} PeerHost
 */

/**
 * One remote peer: an RTCPeerConnection with two negotiated DataChannels.
 * @extends {Link<PeerHost>}
 */
export class Peer extends Link {
  /**
   * @param {PeerHost} room
   * @param {string} id
   * @param {boolean} polite
   */
  constructor(room, id, polite) {
    super(room, id, {}, MESH_CHANNELS);
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
