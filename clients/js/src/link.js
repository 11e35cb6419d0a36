// Link: the base of both kinds of WebRTC connection, a mesh Peer (peer.js) and the SfuLink
// (sfu.js). It owns the RTCPeerConnection and its two DataChannels, the per-connection signaling
// queue, offers and trickle ICE. How a received offer or answer is handled, what arrives on the
// channels and media differ per kind and live in the subclasses.

import { LOW_WATERMARK } from './channels.js';

/**
 * @typedef {import('./protocol.js').Signaling} Signaling
 * @typedef {import('./channels.js').ChannelPlan} ChannelPlan
 */

/**
 * What every link uses of its room.
 * @typedef {object} LinkHost
 * @property {Signaling} client
 * @property {RTCIceServer[]} iceServers from `joined`
 * @property {(event: string, ...args: unknown[]) => void} emit
 */

/**
 * What a mesh Peer and the SfuLink share: one RTCPeerConnection to `id` with a
 * "reliable" and an "updates" DataChannel (`peer_connected` once both are open), signaling
 * work serialized per connection, offers on `negotiationneeded`, trickle ICE both ways, and
 * `peer_state` events.
 * @template {LinkHost} [H=LinkHost]
 */
export class Link {
  /**
   * @param {H} room
   * @param {string} id signaling target
   * @param {RTCConfiguration} config everything but `iceServers` (they come from the room)
   * @param {ChannelPlan} channels created in this order
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
