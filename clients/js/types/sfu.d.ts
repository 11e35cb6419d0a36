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
export class SfuLink extends Link<SfuHost> {
    /** @param {SfuHost} room */
    constructor(room: SfuHost);
    assembler: PieceAssembler;
    /** Mids whose `ontrack` fired. @type {Set<string>} */
    seenMids: Set<string>;
    /** @param {Publication} pub */
    addPublication(pub: Publication): void;
    /** @param {RTCSessionDescriptionInit} desc */
    onDescription(desc: RTCSessionDescriptionInit): Promise<void>;
    /**
     * @param {unknown} value
     * @param {string} [to] one participant; everyone else when absent
     */
    sendReliable(value: unknown, to?: string): Promise<void>;
    /**
     * @param {string} text `{"u": ...}` JSON text
     * @param {string} [to]
     */
    sendUpdate(text: string, to?: string): void;
    ping(): void;
    /** @param {unknown} raw */
    _onData(raw: unknown): void;
    /** @param {boolean} [bye] tell the server to end the session (not when it already did) */
    close(bye?: boolean): void;
}
export type LinkHost = import("./link.js").LinkHost;
export type Publication = import("./media.js").Publication;
/**
 * What the SFU link uses of its room, besides what every link does.
 */
export type SfuRoom = {
    /**
     * the stream local tracks are sent in
     */
    localStream: MediaStream | null;
    /**
     * local tracks to send from the start
     */
    publications: Publication[];
    /**
     * emits `track` for a down-track once it is complete
     */
    _sfuTryEmit: (mid: string) => void;
    _rttSample: (ms: number) => void;
    /**
     * emits `stream_progress` once per event
     */
    _progress: (ev: any) => void;
};
/**
 * What the SFU link uses of its room, besides what every link does.
 */
export type SfuHost = LinkHost & SfuRoom;
import { Link } from './link.js';
import { PieceAssembler } from './chunking.js';
