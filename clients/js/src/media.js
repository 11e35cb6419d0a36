// Local media a room sends and what it knows of remote media: the publication record (one local
// track and its sender on each connection), simulcast encodings and the SFU's sendonly
// transceiver, withdrawing and swapping a published track without renegotiation, screen sharing
// in place of the camera, and subscription limits. The room fans publications out to its links.

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
export const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4 },
  { rid: 'h', scaleResolutionDownBy: 2 },
  { rid: 'f', scaleResolutionDownBy: 1 },
];

/**
 * A new publication of `track` (on no connection yet); simulcast applies to video only.
 * @param {MediaStreamTrack} track
 * @param {PublishOptions} opts
 * @returns {Publication}
 */
export function newPublication(track, opts) {
  return { track, simulcast: !!opts.simulcast && track.kind === 'video', senders: new Map() };
}

/**
 * The transceiver that sends `pub` to the SFU: sendonly, in `stream` (when there is one), with
 * the simulcast encodings (fresh copies) when `pub` asks for them.
 * @param {Publication} pub
 * @param {MediaStream|null} stream
 * @returns {RTCRtpTransceiverInit}
 */
export function sfuTransceiverInit(pub, stream) {
  /** @type {RTCRtpTransceiverInit} */
  const init = { direction: 'sendonly' };
  if (stream) init.streams = [stream];
  if (pub.simulcast) init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
  return init;
}

/**
 * Stops sending `pub` on every connection (the others see the track end) and forgets its senders.
 * @param {Publication} pub
 */
export function withdrawPublication(pub) {
  for (const [link, sender] of pub.senders) link.removeSender(sender);
  pub.senders.clear();
}

/**
 * Sends `next` in place of `pub`'s current track on every sender (no renegotiation) and in
 * `stream`.
 * @param {Publication} pub
 * @param {MediaStreamTrack} next
 * @param {MediaStream|null} stream
 */
export async function swapPublishedTrack(pub, next, stream) {
  const prev = pub.track;
  pub.track = next;
  if (stream) {
    stream.removeTrack(prev);
    stream.addTrack(next);
  }
  await Promise.all([...pub.senders.values()].map((s) => s.replaceTrack(next)));
}

/**
 * Starts sharing the screen in place of the published camera; resolves with the screen track
 * (the one already shared, if any). The camera comes back when the screen track ends.
 * @param {ScreenHost} room
 * @param {DisplayMediaStreamOptions} constraints
 * @returns {Promise<MediaStreamTrack>}
 */
export async function startScreenShare(room, constraints) {
  const camera = room.publications.find((p) => p.track.kind === 'video')?.track;
  if (!camera) throw new Error('publish a camera track first');
  if (room._screen) return room._screen.screen;
  const stream = await navigator.mediaDevices.getDisplayMedia(constraints);
  const screen = stream.getVideoTracks()[0];
  if (!screen) throw new Error('no screen track');
  await room.replaceTrack(camera, screen);
  room._screen = { screen, camera };
  screen.addEventListener('ended', () => { room.stopScreenShare(); });
  return screen;
}

/**
 * Ends a screen share: stops the screen track and sends the camera again if the screen is still
 * published.
 * @param {ScreenHost} room
 */
export async function endScreenShare(room) {
  const s = room._screen;
  if (!s) return;
  room._screen = null;
  s.screen.stop();
  if (room.publications.some((p) => p.track === s.screen)) await room.replaceTrack(s.screen, s.camera);
}

/**
 * Subscription limits with defaults filled in (video on, top layer).
 * @param {SubscribeOptions} opts
 * @returns {SubscribeOptions}
 */
export function subscription(opts) {
  return { video: opts.video ?? true, maxLayer: opts.maxLayer ?? 2 };
}

/**
 * The `subscribe` signaling message for `publisher` (layer clamped to 0..2).
 * @param {string} publisher
 * @param {SubscribeOptions} o
 * @returns {{ type: 'subscribe', publisher: string, video: boolean, max_layer: number }}
 */
export function subscribeMessage(publisher, o) {
  return { type: 'subscribe', publisher, video: o.video !== false, max_layer: Math.max(0, Math.min(2, o.maxLayer ?? 2)) };
}
