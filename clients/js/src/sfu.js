// SfuLink: the one RTCPeerConnection to the server in an SFU room (peer "$sfu"). It sends JSON
// envelopes on the in-band channels (reliable messages cut into pieces by chunking.js, updates,
// pings to "$server"), hands what arrives to the room as message/update/server_message events,
// publishes with sendonly transceivers, and reports the server's down-tracks by mid.

import { Link } from './link.js';
import { SFU_CHANNELS, SFU_HIGH_WATERMARK, parseJsonText, sendWithBackpressure } from './channels.js';
import { encodePieces, PieceAssembler } from './chunking.js';
import { sfuTransceiverInit } from './media.js';
import { SFU_ID, SERVER_ID } from './protocol.js';

/**
 * @typedef {import('./link.js').LinkHost} LinkHost
 * @typedef {import('./media.js').Publication} Publication
 */

/**
 * What the SFU link uses of its room, besides what every link does.
 * @typedef {object} SfuRoom
 * @property {MediaStream|null} localStream the stream local tracks are sent in
 * @property {Publication[]} publications local tracks to send from the start
 * @property {(mid: string) => void} _sfuTryEmit emits `track` for a down-track once it is complete
 * @property {(ms: number) => void} _rttSample
 * @property {(ev: any) => void} _progress emits `stream_progress` once per event
 * @typedef {LinkHost & SfuRoom} SfuHost
 */

/**
 * SFU mode: the one RTCPeerConnection to the server (peer "$sfu"). The client creates the
 * in-band channels "reliable" and "updates" before its first offer, publishes with sendonly
 * transceivers, and receives the server's down-tracks on m-lines the server offers. In glare the
 * client is the impolite side (the server rolls back and offers again after answering).
 * @extends {Link<SfuHost>}
 */
export class SfuLink extends Link {
  /** @param {SfuHost} room */
  constructor(room) {
    super(room, SFU_ID, { bundlePolicy: 'max-bundle' }, SFU_CHANNELS);
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
    pub.senders.set(this, this.pc.addTransceiver(pub.track, sfuTransceiverInit(pub, this.room.localStream)).sender);
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
