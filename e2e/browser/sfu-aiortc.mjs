// A second, independent WebRTC stack through the SFU: an aiortc peer (e2e/interop/aiortc_sfu.py)
// and a headless-Chromium page (raw RTCPeerConnection, no SDK, speaking docs/sfu-protocol.md)
// join one SFU room. Each publishes video; the page must decode aiortc's video (framesDecoded
// keeps growing) and aiortc must decode the page's fake-camera video.
// Usage: SB_URL=http://127.0.0.1:PORT PY=.venv/bin/python node e2e/browser/sfu-aiortc.mjs
import { launchChromium } from './common.mjs';
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

const SB_URL = process.env.SB_URL;
const PY = process.env.PY || '.venv/bin/python';
const here = path.dirname(new URL(import.meta.url).pathname);
const room = `aio-${Date.now()}`;
const deadline = setTimeout(() => { console.error('FAIL: suite timed out'); process.exit(1); }, 110_000);

function check(cond, msg) {
  if (!cond) { console.error('FAIL:', msg); process.exit(1); }
  console.log('ok -', msg);
}

async function mint() {
  const r = await fetch(`${SB_URL}/v1/token`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ room }),
  });
  if (!r.ok) throw new Error(`mint: ${r.status}`);
  return r.json();
}

const pageTicket = await mint();

// aiortc side.
const py = spawn(PY, [path.join(here, '../interop/aiortc_sfu.py'), '--url', SB_URL, '--room', room,
  '--expect', pageTicket.identity, '--min-frames', '30', '--seconds', '60'], { stdio: ['ignore', 'pipe', 'inherit'] });
const pyDone = new Promise((resolve) => py.on('exit', (code) => resolve(code)));
const lines = readline.createInterface({ input: py.stdout });
let aioIdentity = null;
let pyLast = null;
const gotIdentity = new Promise((resolve) => {
  lines.on('line', (l) => {
    console.log('aiortc:', l);
    try {
      const m = JSON.parse(l);
      if (m.identity) { aioIdentity = m.identity; resolve(); }
      if (m.done) pyLast = m;
    } catch { /* not JSON */ }
  });
});
await gotIdentity;

const browser = await launchChromium();
const ctx = await browser.newContext();
await ctx.grantPermissions(['camera']);
const page = await ctx.newPage();
page.on('pageerror', (e) => console.error('pageerror:', e.message));
await page.goto(`${SB_URL}/healthz`);

await page.evaluate(async ({ url, token, room }) => {
  const w = /** @type {any} */ (window);
  w.st = { mids: {}, errors: [], connected: false };
  const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/signal?access_token=${token}`);
  await new Promise((r, j) => { ws.onopen = r; ws.onerror = j; });
  const send = (m) => ws.send(JSON.stringify(m));
  const pc = new RTCPeerConnection();
  w.pc = pc;
  const cam = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 } });
  pc.addTransceiver(cam.getVideoTracks()[0], { direction: 'sendonly', streams: [cam] });
  pc.onicecandidate = ({ candidate }) => {
    if (candidate) send({ type: 'ice_candidate', target: '$sfu', candidate: candidate.toJSON() });
  };
  let makingOffer = false;
  // Handle signaling strictly in order: an answer must be applied before the next server offer
  // is looked at, or that offer would be mistaken for glare and ignored.
  let queue = Promise.resolve();
  ws.onmessage = (ev) => { queue = queue.then(() => onMessage(JSON.parse(ev.data))).catch((e) => w.st.errors.push(String(e))); };
  const onMessage = async (m) => {
    if (m.type === 'answer' && m.from === '$sfu') await pc.setRemoteDescription(m.answer);
    else if (m.type === 'offer' && m.from === '$sfu') {
      if (makingOffer || pc.signalingState !== 'stable') return; // impolite towards the server
      await pc.setRemoteDescription(m.offer);
      await pc.setLocalDescription();
      send({ type: 'answer', target: '$sfu', answer: pc.localDescription.toJSON() });
    } else if (m.type === 'track_added') w.st.mids[m.mid] = m.publisher;
    else if (m.type === 'sfu_connected') w.st.connected = true;
    else if (m.type === 'error') w.st.errors.push(m);
  };
  send({ type: 'join', room_id: room });
  makingOffer = true;
  await pc.setLocalDescription();
  send({ type: 'offer', target: '$sfu', offer: pc.localDescription.toJSON() });
  makingOffer = false;
}, { url: SB_URL, token: pageTicket.token, room });

async function framesFrom(publisher) {
  return page.evaluate(async (publisher) => {
    const w = /** @type {any} */ (window);
    let n = 0;
    (await w.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video' && w.st.mids[s.mid] === publisher) n += s.framesDecoded || 0;
    });
    return n;
  }, publisher);
}

let first = 0;
for (let i = 0; i < 300 && first < 30; i++) {
  await new Promise((r) => setTimeout(r, 200));
  first = await framesFrom(aioIdentity);
}
if (first < 30) {
  console.log('page state:', JSON.stringify(await page.evaluate(async () => {
    const w = /** @type {any} */ (window);
    const stats = [];
    (await w.pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' || s.type === 'transport') stats.push(s); });
    return { st: w.st, stats, sdp: w.pc.remoteDescription?.sdp, tr: w.pc.getTransceivers().map((t) => [t.mid, t.direction, t.currentDirection]) };
  })));
}
check(first >= 30, `Chromium decoded aiortc's video through the SFU (${first} frames)`);
await new Promise((r) => setTimeout(r, 1500));
const second = await framesFrom(aioIdentity);
check(second > first, `framesDecoded keeps growing (${first} -> ${second})`);
const errors = await page.evaluate(() => /** @type {any} */ (window).st.errors);
check(errors.length === 0, `no signaling errors on the page (${JSON.stringify(errors)})`);

// Leaving tells the aiortc peer (peer_left) that its video was received; it then finishes.
await page.close();
const code = await pyDone;
check(code === 0, `aiortc decoded Chromium's video through the SFU (${JSON.stringify(pyLast?.frames)})`);
await browser.close();
clearTimeout(deadline);
console.log('PASS sfu aiortc interop');
