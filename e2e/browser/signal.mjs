// Real browsers against Switchboard signaling (headless Chromium via playwright-core):
//  1. two pages join one room through the SDK, connect peer-to-peer, exchange DataChannel
//     messages both ways, including one 1 MiB message delivered intact;
//  2. a third page joins and meshes with both;
//  3. a page whose signaling socket is cut (TCP proxy kills it) resumes without losing a
//     message: signaling messages buffered meanwhile (an ICE restart offer) arrive with
//     contiguous seq numbers, and no peer sees it leave;
//  4. two pages running the reference WebRTCClient/DataChannelClient classes (no SDK,
//     reference_client.js) connect;
//  5. the demo page, with two people in it, is screenshotted.
// Usage: SB_URL=http://127.0.0.1:PORT ARTIFACTS=dir node e2e/browser/signal.mjs
import { cuttableProxy, launchChromium, openPage } from './common.mjs';
import fs from 'node:fs';
import path from 'node:path';

const SB_URL = process.env.SB_URL;
const ARTIFACTS = process.env.ARTIFACTS || 'e2e/artifacts';
const here = path.dirname(new URL(import.meta.url).pathname);
const deadline = setTimeout(() => { console.error('FAIL: suite timed out'); process.exit(1); }, 150_000);

function check(cond, msg) {
  if (!cond) { console.error('FAIL:', msg); process.exit(1); }
  console.log('ok -', msg);
}

// A TCP proxy in front of the server whose connections can be cut (no close frame).
const proxy = await cuttableProxy(SB_URL);
const proxyUrl = proxy.url;

const browser = await launchChromium(['--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost']);

const allPages = [];
const newPage = () => openPage(browser, SB_URL, allPages);

/** Joins `room` through the SDK in `page`; signaling via `via` (default: the server). */
async function sdkJoin(page, room, via = SB_URL) {
  return page.evaluate(async ({ room, via }) => {
    const { connect } = await import('/sdk/switchboard.js');
    const mint = async () => (await (await fetch('/v1/token', { method: 'POST', body: JSON.stringify({ room }) })).json()).token;
    const log = [];
    const client = await connect(via, await mint(), { getToken: mint, log: (...a) => log.push(a.map(String).join(' ')) });
    const r = client.room(room);
    const t = { client, room: r, got: [], connected: new Set(), left: [], seqs: [], resumed: 0, log };
    client.on('signal', (m) => { if (m.type !== 'pong') log.push('<' + m.type + (m.from ? ' ' + m.from : '') + (m.offer ? ' ' + m.offer.type : '')); });
    window.t = t;
    r.on('message', (from, m) => t.got.push({ from, m }));
    r.on('peer_connected', (id) => t.connected.add(id));
    r.on('peer_left', (id) => t.left.push(id));
    r.on('resumed', () => t.resumed++);
    client.on('signal', (m) => { if (typeof m.seq === 'number') t.seqs.push(m.seq); });
    const j = await r.join();
    return j.peer_id;
  }, { room, via });
}

async function waitFor(page, fn, arg, what, timeout = 20000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
    console.log('ok -', what);
  } catch (e) {
    for (const pg of allPages) {
    const diag = await pg.evaluate(() => window.t ? {
      me: window.t.room.peerId,
      peers: [...window.t.room.peers.values()].map((p) => ({ id: p.id, polite: p.polite, sig: p.pc.signalingState,
        ice: p.pc.iceConnectionState, conn: p.pc.connectionState, up: p.updates.readyState, rel: p.reliable.readyState })),
      log: window.t.log,
    } : null).catch(() => null);
    console.error('diagnostics:', JSON.stringify(diag));
    }
    check(false, `${what} (timed out)`);
  }
}

const [A, B, C] = [await newPage(), await newPage(), await newPage()];
const idA = await sdkJoin(A, 'mesh', proxyUrl);
const idB = await sdkJoin(B, 'mesh');
await waitFor(A, (id) => window.t.connected.has(id), idB, 'A connected to B');
await waitFor(B, (id) => window.t.connected.has(id), idA, 'B connected to A');
check(true, `two SDK pages connected peer-to-peer (${idA}, ${idB})`);

// Both ways, then 1 MiB intact (SHA-256 compared).
await A.evaluate((to) => window.t.room.send({ hello: 'from A' }, { to }), idB);
await B.evaluate((to) => window.t.room.send({ hello: 'from B' }, { to }), idA);
await waitFor(B, () => window.t.got.some((g) => g.m.hello === 'from A'), null, 'B got A\'s message');
await waitFor(A, () => window.t.got.some((g) => g.m.hello === 'from B'), null, 'A got B\'s message');
const sentHash = await A.evaluate(async (to) => {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let s = '';
  const rnd = new Uint8Array(1 << 20);
  for (let o = 0; o < rnd.length; o += 65536) crypto.getRandomValues(rnd.subarray(o, o + 65536));
  for (let i = 0; i < rnd.length; i++) s += chars[rnd[i] % chars.length];
  const h = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(s));
  await window.t.room.send({ big: s }, { to });
  return [...new Uint8Array(h)].map((b) => b.toString(16).padStart(2, '0')).join('');
}, idB);
await waitFor(B, () => window.t.got.some((g) => g.m.big), null, 'B got the 1 MiB message', 30000);
const gotHash = await B.evaluate(async () => {
  const s = window.t.got.find((g) => g.m.big).m.big;
  const h = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(s));
  return [s.length, [...new Uint8Array(h)].map((b) => b.toString(16).padStart(2, '0')).join('')];
});
check(gotHash[0] === 1 << 20 && gotHash[1] === sentHash, `1 MiB message intact (sha256 ${sentHash.slice(0, 12)}…)`);

// Third page meshes with both.
const idC = await sdkJoin(C, 'mesh');
for (const [p, ids, name] of [[C, [idA, idB], 'C'], [A, [idC], 'A'], [B, [idC], 'B']]) {
  await waitFor(p, (ids) => ids.every((i) => window.t.connected.has(i)), ids, `${name} meshed with ${ids.join(',')}`);
}
await C.evaluate(() => window.t.room.send({ hi: 'from C' }));
await waitFor(A, () => window.t.got.some((g) => g.m.hi === 'from C'), null, 'A got C\'s broadcast');
await waitFor(B, () => window.t.got.some((g) => g.m.hi === 'from C'), null, 'B got C\'s broadcast');
check(true, 'third page meshed with both');

// Cut A's signaling socket; keep it down ~1.5 s while B restarts ICE (its offer and candidates
// for A are buffered by the server) and B streams 50 numbered DataChannel messages to A.
const seqBefore = await A.evaluate(() => window.t.seqs.length);
proxy.cut();
await waitFor(A, () => !window.t.client.ready, null, 'A noticed the cut');
await B.evaluate(async (to) => {
  window.t.room.peers.get(to).pc.restartIce();
  for (let i = 0; i < 50; i++) await window.t.room.send({ n: i }, { to });
}, idA);
await new Promise((r) => setTimeout(r, 1500));
proxy.restore();
await waitFor(A, () => window.t.resumed >= 1, null, 'A resumed its session');
const seqs = await A.evaluate(() => window.t.seqs);
const contiguous = seqs.every((s, i) => i === 0 || s === seqs[i - 1] + 1);
check(contiguous && seqs.length > seqBefore, `A's signaling seqs contiguous after resume (${seqs[0]}..${seqs[seqs.length - 1]}, ${seqs.length - seqBefore} after the cut)`);
await waitFor(A, () => {
  const ns = window.t.got.filter((g) => typeof g.m.n === 'number').map((g) => g.m.n);
  return ns.length === 50 && ns.every((n, i) => n === i);
}, null, 'A got all 50 messages sent during the cut, in order');
await waitFor(B, (to) => window.t.room.peers.get(to).pc.iceConnectionState === 'connected' ||
  window.t.room.peers.get(to).pc.iceConnectionState === 'completed', idA, 'ICE restart through the resumed session completed');
const leftSeen = await Promise.all([B, C].map((p) => p.evaluate(() => window.t.left)));
check(leftSeen.every((l) => !l.includes(idA)), 'nobody saw A leave during the cut');
await B.evaluate((to) => window.t.room.send({ after: 'restart' }, { to }), idA);
await waitFor(A, () => window.t.got.some((g) => g.m.after === 'restart'), null, 'DataChannel works after the ICE restart');

// Glare: both sides restart ICE at the same moment; perfect negotiation must settle it.
await Promise.all([
  A.evaluate((to) => window.t.room.peers.get(to).pc.restartIce(), idB),
  B.evaluate((to) => window.t.room.peers.get(to).pc.restartIce(), idA),
]);
await new Promise((r) => setTimeout(r, 1500));
await A.evaluate((to) => window.t.room.send({ glare: 'survived' }, { to }), idB);
await waitFor(B, () => window.t.got.some((g) => g.m.glare === 'survived'), null, 'messages flow after simultaneous ICE restarts (glare)');
for (const [p, to] of [[A, idB], [B, idA]]) {
  await waitFor(p, (to) => window.t.room.peers.get(to).pc.signalingState === 'stable' &&
    ['connected', 'completed'].includes(window.t.room.peers.get(to).pc.iceConnectionState), to, 'stable and connected after glare');
}

// RTT reports reach /metrics (SDK reports every 5 s).
await new Promise((r) => setTimeout(r, 5500));
const stats = await A.evaluate(() => window.t.room.stats());
check(stats.rtt.count > 0 && stats.rtt.p50 !== null, `room.stats() RTT p50=${stats.rtt.p50?.toFixed(2)} p95=${stats.rtt.p95?.toFixed(2)} p99=${stats.rtt.p99?.toFixed(2)} ms`);
const metrics = await (await fetch(`${SB_URL}/metrics`)).text();
const rttCount = Number((metrics.match(/^switchboard_client_rtt_seconds_count (\d+)/m) || [])[1] || 0);
check(rttCount > 0, `switchboard_client_rtt_seconds_count = ${rttCount}`);
for (const p of [A, B, C]) await p.context().close();

// The reference client classes, no SDK: token in the URL, peer_id = the token's identity.
const referenceCode = fs.readFileSync(path.join(here, 'reference_client.js'), 'utf8');
async function referenceJoin(page, room) {
  await page.addScriptTag({ content: referenceCode + '\nwindow.DataChannelClient = DataChannelClient;' });
  return page.evaluate(async (room) => {
    const r = await (await fetch('/v1/token', { method: 'POST', body: JSON.stringify({ room }) })).json();
    const url = `ws://${location.host}/v1/signal?access_token=${encodeURIComponent(r.token)}`;
    const c = new window.DataChannelClient(url, r.identity, room);
    window.reference = { c, got: [], connected: [] };
    c.on('onPeerConnected', (id) => window.reference.connected.push(id));
    c.onMessage((from, m) => window.reference.got.push({ from, m }));
    await c.start({ video: true, audio: false });
    return r.identity;
  }, room);
}
const [S1, S2] = [await newPage(), await newPage()];
const s1 = await referenceJoin(S1, 'reference-room');
const s2 = await referenceJoin(S2, 'reference-room');
await waitFor(S1, (id) => window.reference.connected.includes(id), s2, 'reference client 1 connected');
await waitFor(S2, (id) => window.reference.connected.includes(id), s1, 'reference client 2 connected');
await waitFor(S2, (id) => window.reference.c.dataChannels.has(id), s1, 'reference client data channel open');
await S2.evaluate(() => window.reference.c.broadcast({ type: 'player_move', position: [1, 2] }));
await waitFor(S1, () => window.reference.got.some((g) => g.m.type === 'player_move'), null, 'reference client DataChannel message delivered');
check(true, 'the reference WebRTCClient connects through Switchboard with only a token added');
for (const p of [S1, S2]) await p.context().close();

// Demo page screenshot with two people, chat and cursors.
const D1 = await newPage();
const D2 = await newPage();
await D1.goto(`${SB_URL}/?room=demo`);
await D2.goto(`${SB_URL}/?room=demo`);
await waitFor(D1, () => window.sb && window.sb.room.peers.size === 1 && [...window.sb.room.peers.values()][0].isOpen(), null, 'demo pages connected');
await D2.fill('#text', 'Hello from the other tab!');
await D2.press('#text', 'Enter');
await D1.fill('#text', 'Cursors and chat go peer-to-peer over DataChannels.');
await D1.press('#text', 'Enter');
const box = await D2.locator('#stage').boundingBox();
for (let i = 0; i < 30; i++) {
  await D2.mouse.move(box.x + box.width * (0.3 + i / 100), box.y + box.height * (0.4 + Math.sin(i / 5) / 8));
  await new Promise((r) => setTimeout(r, 40));
}
// The heavy-result panel: chunks over gRPC-Web from the binary's local worker, progress events
// for the same task over D1's signaling session.
await D1.fill('#chunks', '120');
await D1.click('#run');
await waitFor(D1, () => document.getElementById('got').dataset.final === '120' && document.getElementById('prog').dataset.final === 'done', null, 'demo heavy stream: 120 chunks over gRPC-Web and a final progress event over signaling');
check(true, 'demo panel streamed 120 chunks over gRPC-Web with progress over signaling');
await new Promise((r) => setTimeout(r, 2500));
const shot = path.join(ARTIFACTS, 'demo.png');
await D1.screenshot({ path: shot });
check(fs.statSync(shot).size > 10000, `demo screenshot at ${shot}`);

await browser.close();
proxy.close();
clearTimeout(deadline);
console.log('PASS: signal browser suite');
