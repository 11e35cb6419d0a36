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
    constructor(client: Signaling, id: string);
    client: import("./protocol.js").Signaling;
    id: string;
    /** @type {string|null} */
    peerId: string | null;
    /** "mesh" or "sfu". */
    mode: string;
    /** Mesh peer connections. @type {Map<string, Peer>} */
    peers: Map<string, Peer>;
    /** The connection to the SFU (SFU mode). @type {SfuLink|null} */
    sfu: SfuLink | null;
    /** Everyone else in the room, in both modes. @type {Set<string>} */
    members: Set<string>;
    /** @type {RTCIceServer[]} */
    iceServers: RTCIceServer[];
    /** @type {string[]} */
    _pendingPeers: string[];
    /** @type {number[]} */
    rtt: number[];
    /** @type {number[]} */
    rttUnreported: number[];
    /** @type {((v: SignalMessage) => void)|null} */
    _joinWaiter: ((v: SignalMessage) => void) | null;
    /** @type {ReturnType<typeof setInterval>|null} */
    _timer: ReturnType<typeof setInterval> | null;
    _onNetworkChange: () => void;
    /** Local tracks being sent. @type {Publication[]} */
    publications: Publication[];
    /** The MediaStream local tracks are sent in (its id is the MSID stream id in mesh mode). */
    localStream: MediaStream | null;
    /** Remote tracks by key (mesh: "peer/trackId"; SFU: "$sfu/mid"). @type {Map<string, RemoteTrack>} */
    remoteTracks: Map<string, RemoteTrack>;
    /** Subscription limits to re-send when the SFU session restarts. @type {Map<string, SubscribeOptions>} */
    _subs: Map<string, SubscribeOptions>;
    /** @type {ScreenShare|null} */
    _screen: ScreenShare | null;
    _left: boolean;
    /** Recent stream_progress events (dedup). @type {string[]} */
    _progressSeen: string[];
    /**
     * Joins the room; resolves with the `joined` message.
     * @param {{ mode?: 'sfu' }} [opts] `mode: "sfu"` asks for an SFU room when this join creates it
     * @returns {Promise<SignalMessage>}
     */
    join(opts?: {
        mode?: "sfu";
    }): Promise<SignalMessage>;
    /** @type {{ mode?: 'sfu' }|undefined} */
    _joinOpts: {
        mode?: "sfu";
    } | undefined;
    _rejoin(): Promise<void>;
    /** @param {SignalMessage} msg */
    _onSignal(msg: SignalMessage): void;
    /**
     * Emits `stream_progress` once per event: in SFU rooms the server sends each one both over
     * signaling and over the DataChannel, whichever arrives first wins.
     * @param {any} ev
     */
    _progress(ev: any): void;
    /** @param {SignalMessage} msg a message with `from: "$sfu"` */
    _onSfuSignal(msg: SignalMessage): void;
    _connectSfu(): void;
    /** Closes the SFU connection (if any) and forgets its senders.
     * @param {boolean} [bye] tell the server (not when it already ended the session) */
    _closeSfu(bye?: boolean): void;
    /**
     * Emits `track` for the SFU down-track on `mid` once both its `track_added` message and its
     * transceiver (from the server's offer) are known; they may come in either order.
     * @param {string} mid
     */
    _sfuTryEmit(mid: string): void;
    /** @param {string} key */
    _endRemote(key: string): void;
    /** @param {(r: RemoteTrack) => boolean} pred */
    _endRemotes(pred: (r: RemoteTrack) => boolean): void;
    /** @param {Peer} p */
    _dropPeer(p: Peer): void;
    /**
     * The Peer for `id`, created on first use.
     * @param {string} id
     * @returns {Peer}
     */
    _peer(id: string): Peer;
    _tick(): void;
    /** @type {number|undefined} */
    _lastReport: number | undefined;
    /** @param {number} ms */
    _rttSample(ms: number): void;
    /**
     * Sends `value` (any JSON) reliably: chunked, with backpressure. Mesh: over each peer's
     * "reliable" channel; SFU: through the server (one participant with `to`, else everyone).
     * Resolves when every piece is handed to the channel(s).
     * @param {unknown} value
     * @param {{ to?: string }} [opts]
     */
    send(value: unknown, opts?: {
        to?: string;
    }): Promise<void>;
    /**
     * Sends a small update (≤ 16 KiB as JSON) over "updates" (ordered, no retransmits).
     * @param {unknown} value
     * @param {{ to?: string }} [opts]
     */
    sendUpdate(value: unknown, opts?: {
        to?: string;
    }): void;
    /** ICE restart on every peer connection (network change). */
    restartIce(): void;
    /**
     * Sends a local track to everyone: to each mesh peer (now and later), or once to the SFU,
     * which forwards it. `simulcast` (SFU mode, video) sends three encodings q/h/f at 1/4, 1/2 and
     * full resolution so each subscriber gets the layer it can take.
     * @param {MediaStreamTrack} track
     * @param {PublishOptions} [opts]
     */
    publish(track: MediaStreamTrack, opts?: PublishOptions): void;
    /**
     * Stops sending a track (the others get `track_ended`). The track itself keeps running.
     * @param {MediaStreamTrack} track
     */
    unpublish(track: MediaStreamTrack): void;
    /**
     * Mutes or unmutes a local track (`track.enabled`): a muted camera sends black frames, a muted
     * microphone silence, without renegotiation.
     * @param {MediaStreamTrack} track
     * @param {boolean} muted
     */
    setMuted(track: MediaStreamTrack, muted: boolean): void;
    /**
     * Narrows what this client receives of `publisher`'s video (SFU mode; no-op in mesh mode):
     * `video: false` pauses it (off-screen tile), `maxLayer` caps the simulcast layer (0..2).
     * @param {string} publisher
     * @param {SubscribeOptions} [opts]
     */
    subscribe(publisher: string, opts?: SubscribeOptions): void;
    /**
     * @param {string} publisher
     * @param {SubscribeOptions} o
     */
    _sendSubscribe(publisher: string, o: SubscribeOptions): void;
    /**
     * Sends `next` in place of the published `prev` on every connection (no renegotiation).
     * @param {MediaStreamTrack} prev
     * @param {MediaStreamTrack} next
     */
    replaceTrack(prev: MediaStreamTrack, next: MediaStreamTrack): Promise<void>;
    /**
     * Shares the screen in place of the published camera (RTCRtpSender.replaceTrack, no
     * renegotiation); the camera comes back when sharing ends (the browser's "stop" button or
     * `track.stop()` then `room.stopScreenShare()`). Resolves with the screen track.
     * @param {DisplayMediaStreamOptions} [constraints]
     * @returns {Promise<MediaStreamTrack>}
     */
    shareScreen(constraints?: DisplayMediaStreamOptions): Promise<MediaStreamTrack>;
    /** Puts the camera back after `shareScreen`. */
    stopScreenShare(): Promise<void>;
    /**
     * RTT percentiles over DataChannel pings (ms; to peers in mesh mode, to the server in SFU
     * mode) and connection states.
     * @returns {{ mode: string, rtt: RttStats, peers: {id: string, state: string}[], reconnects: number }}
     */
    stats(): {
        mode: string;
        rtt: RttStats;
        peers: {
            id: string;
            state: string;
        }[];
        reconnects: number;
    };
    /** Leaves the room and closes the connection. */
    leave(): void;
    _closePeers(): void;
}
export type Signaling = import("./protocol.js").Signaling;
export type SignalMessage = import("./protocol.js").SignalMessage;
export type RttStats = import("./stats.js").RttStats;
export type Publication = import("./media.js").Publication;
export type PublishOptions = import("./media.js").PublishOptions;
export type RemoteTrack = import("./media.js").RemoteTrack;
export type ScreenShare = import("./media.js").ScreenShare;
export type SubscribeOptions = import("./media.js").SubscribeOptions;
import { Emitter } from './emitter.js';
import { Peer } from './peer.js';
import { SfuLink } from './sfu.js';
