/**
 * A new publication of `track` (on no connection yet); simulcast applies to video only.
 * @param {MediaStreamTrack} track
 * @param {PublishOptions} opts
 * @returns {Publication}
 */
export function newPublication(track: MediaStreamTrack, opts: PublishOptions): Publication;
/**
 * The transceiver that sends `pub` to the SFU: sendonly, in `stream` (when there is one), with
 * the simulcast encodings (fresh copies) when `pub` asks for them.
 * @param {Publication} pub
 * @param {MediaStream|null} stream
 * @returns {RTCRtpTransceiverInit}
 */
export function sfuTransceiverInit(pub: Publication, stream: MediaStream | null): RTCRtpTransceiverInit;
/**
 * Stops sending `pub` on every connection (the others see the track end) and forgets its senders.
 * @param {Publication} pub
 */
export function withdrawPublication(pub: Publication): void;
/**
 * Sends `next` in place of `pub`'s current track on every sender (no renegotiation) and in
 * `stream`.
 * @param {Publication} pub
 * @param {MediaStreamTrack} next
 * @param {MediaStream|null} stream
 */
export function swapPublishedTrack(pub: Publication, next: MediaStreamTrack, stream: MediaStream | null): Promise<void>;
/**
 * Starts sharing the screen in place of the published camera; resolves with the screen track
 * (the one already shared, if any). The camera comes back when the screen track ends.
 * @param {ScreenHost} room
 * @param {DisplayMediaStreamOptions} constraints
 * @returns {Promise<MediaStreamTrack>}
 */
export function startScreenShare(room: ScreenHost, constraints: DisplayMediaStreamOptions): Promise<MediaStreamTrack>;
/**
 * Ends a screen share: stops the screen track and sends the camera again if the screen is still
 * published.
 * @param {ScreenHost} room
 */
export function endScreenShare(room: ScreenHost): Promise<void>;
/**
 * Subscription limits with defaults filled in (video on, top layer).
 * @param {SubscribeOptions} opts
 * @returns {SubscribeOptions}
 */
export function subscription(opts: SubscribeOptions): SubscribeOptions;
/**
 * The `subscribe` signaling message for `publisher` (layer clamped to 0..2).
 * @param {string} publisher
 * @param {SubscribeOptions} o
 * @returns {{ type: 'subscribe', publisher: string, video: boolean, max_layer: number }}
 */
export function subscribeMessage(publisher: string, o: SubscribeOptions): {
    type: "subscribe";
    publisher: string;
    video: boolean;
    max_layer: number;
};
/**
 * What the SDK knows about one remote media track.
 * @typedef {{ publisher: string, trackId: string, kind: string, mid: string|null,
 *             track: MediaStreamTrack|null, emitted: boolean }} RemoteTrack
 * @typedef {{ video?: boolean, maxLayer?: number }} SubscribeOptions
 * @typedef {{ simulcast?: boolean }} PublishOptions
 */
/**
 * A connection that carries senders (a mesh peer or the SFU link).
 * @typedef {{ removeSender: (sender: RTCRtpSender) => void }} MediaLink
 */
/**
 * One published local track: `track` is what is sent now (it changes with `replaceTrack` and
 * screen sharing), `senders` holds its RTCRtpSender on each connection (mesh peer or the SFU).
 * @typedef {{ track: MediaStreamTrack, simulcast: boolean,
 *             senders: Map<MediaLink, RTCRtpSender> }} Publication
 */
/**
 * A screen share in progress: the screen track is sent in place of the camera.
 * @typedef {{ screen: MediaStreamTrack, camera: MediaStreamTrack }} ScreenShare
 */
/**
 * What screen sharing uses of the room.
 * @typedef {object} ScreenHost
 * @property {Publication[]} publications
 * @property {ScreenShare|null} _screen
 * @property {(prev: MediaStreamTrack, next: MediaStreamTrack) => Promise<void>} replaceTrack
 * @property {() => Promise<void>} stopScreenShare
 */
/** Simulcast encodings for SFU publishing: quarter, half and full resolution. */
export const SIMULCAST_ENCODINGS: {
    rid: string;
    scaleResolutionDownBy: number;
}[];
/**
 * What the SDK knows about one remote media track.
 */
export type RemoteTrack = {
    publisher: string;
    trackId: string;
    kind: string;
    mid: string | null;
    track: MediaStreamTrack | null;
    emitted: boolean;
};
/**
 * What the SDK knows about one remote media track.
 */
export type SubscribeOptions = {
    video?: boolean;
    maxLayer?: number;
};
/**
 * What the SDK knows about one remote media track.
 */
export type PublishOptions = {
    simulcast?: boolean;
};
/**
 * A connection that carries senders (a mesh peer or the SFU link).
 */
export type MediaLink = {
    removeSender: (sender: RTCRtpSender) => void;
};
/**
 * One published local track: `track` is what is sent now (it changes with `replaceTrack` and
 * screen sharing), `senders` holds its RTCRtpSender on each connection (mesh peer or the SFU).
 */
export type Publication = {
    track: MediaStreamTrack;
    simulcast: boolean;
    senders: Map<MediaLink, RTCRtpSender>;
};
/**
 * A screen share in progress: the screen track is sent in place of the camera.
 */
export type ScreenShare = {
    screen: MediaStreamTrack;
    camera: MediaStreamTrack;
};
/**
 * What screen sharing uses of the room.
 */
export type ScreenHost = {
    publications: Publication[];
    _screen: ScreenShare | null;
    replaceTrack: (prev: MediaStreamTrack, next: MediaStreamTrack) => Promise<void>;
    stopScreenShare: () => Promise<void>;
};
