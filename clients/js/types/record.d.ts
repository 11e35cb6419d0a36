/**
 * A running local recording.
 * @typedef {{ recorder: MediaRecorder, chunks: Blob[], mimeType: string,
 *             stop: () => Promise<Blob>, download: (filename?: string) => Promise<Blob> }} Recording
 */
/**
 * Records a stream or a track locally with MediaRecorder; data arrives in `chunks` every
 * `timesliceMs` (so a long recording is not one buffer at the end).
 * @param {MediaStream|MediaStreamTrack} source
 * @param {{ timesliceMs?: number, mimeType?: string }} [opts]
 * @returns {Recording}
 */
export function record(source: MediaStream | MediaStreamTrack, opts?: {
    timesliceMs?: number;
    mimeType?: string;
}): Recording;
/**
 * A running local recording.
 */
export type Recording = {
    recorder: MediaRecorder;
    chunks: Blob[];
    mimeType: string;
    stop: () => Promise<Blob>;
    download: (filename?: string) => Promise<Blob>;
};
