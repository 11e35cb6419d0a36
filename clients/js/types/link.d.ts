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
export class Link<H extends LinkHost = LinkHost> {
    /**
     * @param {H} room
     * @param {string} id signaling target
     * @param {RTCConfiguration} config everything but `iceServers` (they come from the room)
     * @param {ChannelPlan} channels created in this order
     */
    constructor(room: H, id: string, config: RTCConfiguration, channels: ChannelPlan);
    room: H;
    id: string;
    makingOffer: boolean;
    ignoreOffer: boolean;
    closed: boolean;
    msgId: number;
    /** Serializes signaling work per connection. @type {Promise<void>} */
    queue: Promise<void>;
    pc: RTCPeerConnection;
    reliable: RTCDataChannel;
    updates: RTCDataChannel;
    /** @param {RTCRtpSender} sender */
    removeSender(sender: RTCRtpSender): void;
    /** @param {() => Promise<void>} fn */
    _do(fn: () => Promise<void>): Promise<void>;
    /** @param {RTCIceCandidateInit} c */
    onCandidate(c: RTCIceCandidateInit): Promise<void>;
    isOpen(): boolean;
}
export type Signaling = import("./protocol.js").Signaling;
export type ChannelPlan = import("./channels.js").ChannelPlan;
/**
 * What every link uses of its room.
 */
export type LinkHost = {
    client: Signaling;
    /**
     * from `joined`
     */
    iceServers: RTCIceServer[];
    emit: (event: string, ...args: unknown[]) => void;
};
