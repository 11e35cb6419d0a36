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
export class Peer extends Link<PeerHost> {
    /**
     * @param {PeerHost} room
     * @param {string} id
     * @param {boolean} polite
     */
    constructor(room: PeerHost, id: string, polite: boolean);
    polite: boolean;
    reassembler: Reassembler;
    /** @param {Publication} pub */
    addPublication(pub: Publication): void;
    /** @param {RTCSessionDescriptionInit} desc */
    onDescription(desc: RTCSessionDescriptionInit): Promise<void>;
    /** @param {unknown} value */
    sendReliable(value: unknown): Promise<void>;
    ping(): void;
    /** @param {unknown} data */
    _onUpdate(data: unknown): void;
    close(): void;
}
export type LinkHost = import("./link.js").LinkHost;
export type Publication = import("./media.js").Publication;
export type RemoteTrack = import("./media.js").RemoteTrack;
/**
 * What a mesh peer uses of its room, besides what every link does.
 */
export type PeerRoom = {
    /**
     * the stream local tracks are sent in
     */
    localStream: MediaStream | null;
    remoteTracks: Map<string, RemoteTrack>;
    /**
     * ends a remote track (`track_ended`)
     */
    _endRemote: (key: string) => void;
    _rttSample: (ms: number) => void;
};
/**
 * What a mesh peer uses of its room, besides what every link does.
 */
export type PeerHost = LinkHost & PeerRoom;
import { Link } from './link.js';
import { Reassembler } from './chunking.js';
