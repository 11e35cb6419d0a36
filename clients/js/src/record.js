// Local recording: `record()` wraps MediaRecorder for a stream or a single track, collects its
// data in timeslices, and returns a handle to stop it (one Blob) or download the result.

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
export function record(source, opts = {}) {
  const stream = source instanceof MediaStream ? source : new MediaStream([source]);
  const wanted = opts.mimeType ?? ['video/webm;codecs=vp8', 'video/webm', 'audio/webm'].find((t) => MediaRecorder.isTypeSupported(t));
  const recorder = new MediaRecorder(stream, wanted ? { mimeType: wanted } : {});
  /** @type {Blob[]} */
  const chunks = [];
  recorder.ondataavailable = (ev) => {
    if (ev.data && ev.data.size > 0) chunks.push(ev.data);
  };
  const stopped = new Promise((resolve) => recorder.addEventListener('stop', () => resolve(undefined), { once: true }));
  recorder.start(Math.max(10, opts.timesliceMs ?? 1000));
  const mimeType = recorder.mimeType || wanted || 'video/webm';
  /** @type {Blob|null} */
  let result = null;
  const stop = async () => {
    if (result) return result;
    if (recorder.state !== 'inactive') recorder.stop();
    await stopped;
    result = new Blob(chunks, { type: mimeType });
    return result;
  };
  return {
    recorder,
    chunks,
    mimeType,
    stop,
    async download(filename = 'recording.webm') {
      const blob = await stop();
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = filename;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      return blob;
    },
  };
}
