// A mesh call across cluster nodes with real browsers (headless Chromium via playwright-core):
//  1. page A joins through node 1 (given the list [node 1, node 3]) and page B through node 2,
//     one room, mesh mode; each publishes a fake camera; each decodes the other's video and
//     DataChannel messages pass both ways; A's `joined.nodes` names the three nodes;
//  2. A restarts ICE, and right after its answer node 1 is killed with SIGKILL; A's SDK resumes the same session on node 3 (the
//     `resumed` event, its client URL); the peer-to-peer video keeps being decoded and the
//     DataChannels keep carrying messages through the kill; a round trip works after the
//     resume;
//  3. signaling between A (node 3) and B (node 2) after the resume: A publishes a second camera
//     (renegotiation: offer A→B, answer B→A) and B decodes it; B restarts ICE (offer B→A,
//     answer A→B);
//  4. once node 1's resume grace has passed: nobody saw a `peer_left`, both still list each
//     other, and an ICE restart from A and a DataChannel round trip still work.
// Prints the measured times from the kill.
// Usage: N1_URL=.. N2_URL=.. N3_URL=.. N1_PID=.. TICKET_A=.. TICKET_B=.. GRACE_MS=.. NODE_TTL_MS=..
//        node e2e/browser/cluster-mesh.mjs
import { launchChromium, openPage } from './common.mjs';

const { N1_URL, N2_URL, N3_URL, N1_PID, TICKET_A, TICKET_B } = process.env;
const GRACE_MS = Number(process.env.GRACE_MS || 15000);
const NODE_TTL_MS = Number(process.env.NODE_TTL_MS || 600);
if (!N1_URL || !N2_URL || !N3_URL || !N1_PID || !TICKET_A || !TICKET_B) {
  console.error('FAIL: N1_URL N2_URL N3_URL N1_PID TICKET_A TICKET_B are required');
  process.exit(1);
}
const ROOM = 'cluster-call';
const deadline = setTimeout(() => { console.error('FAIL: suite timed out'); process.exit(1); }, 90_000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(cond, msg) {
  if (!cond) { console.error('FAIL:', msg); process.exit(1); }
  console.log('ok -', msg);
}

const browser = await launchChromium(['--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost']);
const allPages = [];

/** Per-page diagnostics: peers, connection states, signaling log. */
async function diagnostics() {
  for (const pg of allPages) {
    const diag = await pg.evaluate(() => window.t ? {
      me: window.t.room.peerId,
      url: window.t.client.url.href,
      urls: window.t.client.urls.map((u) => u.href),
      members: [...window.t.room.members],
      peers: [...window.t.room.peers.values()].map((p) => ({ id: p.id, polite: p.polite, sig: p.pc.signalingState,
        ice: p.pc.iceConnectionState, conn: p.pc.connectionState, rel: p.reliable.readyState })),
      resumed: window.t.resumed, errors: window.t.errors, left: window.t.left,
      log: window.t.log.slice(-60),
    } : null).catch((e) => String(e));
    console.error('diagnostics:', JSON.stringify(diag));
  }
}

async function waitFor(page, fn, arg, what, timeout = 20000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
    console.log('ok -', what);
  } catch (e) {
    await diagnostics();
    check(false, `${what} (timed out)`);
  }
}

/**
 * Joins ROOM through the SDK served by the page's node, signaling via `urls`, with a fake
 * camera published. Records in `window.t`: resumes, signaling received, DataChannel messages
 * (answering pings), the arrival times of the peer's ticks on "updates", the decoded-frame
 * counts of every remote video track (getStats, every 100 ms) and frames rendered in <video>.
 */
async function sdkJoin(page, urls, ticket) {
  return page.evaluate(async ({ urls, ticket, room }) => {
    const { connect } = await import('/sdk/switchboard.js');
    const log = [];
    const stamp = (s) => log.push(`${Date.now() % 100000} ${s}`);
    const t = {
      log, resumed: [], joinedFresh: 0, errors: [], left: [], signals: [], got: [], pongs: new Map(),
      ticks: [], tracks: [], frames: new Map(), stats: [], tickN: 0,
    };
    window.t = t;
    const cam = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
    // No getToken: a refused resume must surface as an error, not as a quiet fresh session.
    const client = await connect(urls, ticket, { log: (...a) => stamp(a.map(String).join(' ')) });
    t.client = client;
    client.on('signal', (m) => {
      if (m.type === 'pong') return;
      t.signals.push({ at: Date.now(), type: m.type, from: m.from ?? null, seq: m.seq ?? null });
      stamp(`<${m.type}${m.from ? ' ' + m.from : ''}${m.seq ? ' #' + m.seq : ''}`);
    });
    client.on('disconnected', (code) => stamp(`disconnected ${code}`));
    client.on('resumed', (m) => {
      t.resumed.push({ at: Date.now(), url: client.url.href, peerId: m.peer_id, nodes: m.nodes, received: m.received });
      stamp(`resumed on ${client.url.href}`);
    });
    client.on('error', (e) => { t.errors.push(String(e?.message ?? e)); stamp(`error ${e}`); });
    const r = client.room(room);
    t.room = r;
    r.on('joined', () => t.joinedFresh++);
    r.on('error', (e) => { t.errors.push(JSON.stringify(e)); stamp(`room error ${JSON.stringify(e)}`); });
    r.on('peer_left', (id) => { t.left.push(id); stamp(`peer_left ${id}`); });
    r.on('message', (from, m) => {
      t.got.push({ at: Date.now(), from, m });
      if (m && typeof m.ping === 'number') r.send({ pong: m.ping }, { to: from });
      if (m && typeof m.pong === 'number') t.pongs.set(m.pong, Date.now());
    });
    r.on('update', (from, u) => { if (u && typeof u.tick === 'number') t.ticks.push(Date.now()); });
    r.on('track', (publisher, track, info) => {
      if (info.kind !== 'video') return;
      const v = document.createElement('video');
      v.autoplay = true; v.muted = true; v.playsInline = true;
      v.srcObject = new MediaStream([track]);
      document.body.appendChild(v);
      t.tracks.push({ publisher, id: track.id, video: v });
      t.frames.set(track.id, 0);
      const onFrame = () => { t.frames.set(track.id, t.frames.get(track.id) + 1); v.requestVideoFrameCallback(onFrame); };
      v.requestVideoFrameCallback(onFrame);
      v.play().catch(() => {});
    });
    r.publish(cam.getVideoTracks()[0]);
    // Every 100 ms: a tick to the peer on "updates", and the decoded frames per remote track.
    setInterval(async () => {
      r.sendUpdate({ tick: t.tickN++ });
      const decoded = {};
      for (const p of r.peers.values()) {
        (await p.pc.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video' && s.trackIdentifier) decoded[s.trackIdentifier] = s.framesDecoded ?? 0;
        });
      }
      t.stats.push({ at: Date.now(), decoded });
      if (t.stats.length > 2000) t.stats.shift();
    }, 100);
    const j = await r.join();
    return { peerId: j.peer_id, nodes: j.nodes, url: client.url.href, urls: client.urls.map((u) => u.href) };
  }, { urls, ticket, room: ROOM });
}

/** Decoded frames of `publisher`'s first video track as seen by `page`, over time. */
async function decodedSeries(page, publisher, trackIndex = 0) {
  return page.evaluate(({ publisher, trackIndex }) => {
    const tr = window.t.tracks.filter((x) => x.publisher === publisher)[trackIndex];
    if (!tr) return [];
    return window.t.stats.filter((s) => tr.id in s.decoded).map((s) => [s.at, s.decoded[tr.id]]);
  }, { publisher, trackIndex });
}

/** Waits until `page` decodes and renders `publisher`'s video (track `trackIndex`). */
async function waitVideo(page, publisher, what, trackIndex = 0) {
  await waitFor(page, ({ publisher, trackIndex }) => {
    const tr = window.t.tracks.filter((x) => x.publisher === publisher)[trackIndex];
    if (!tr || tr.video.videoWidth === 0 || window.t.frames.get(tr.id) < 10) return false;
    const s = window.t.stats.filter((x) => tr.id in x.decoded);
    return s.length > 5 && s[s.length - 1].decoded[tr.id] > s[s.length - 6].decoded[tr.id];
  }, { publisher, trackIndex }, what);
  const info = await page.evaluate(({ publisher, trackIndex }) => {
    const tr = window.t.tracks.filter((x) => x.publisher === publisher)[trackIndex];
    return { w: tr.video.videoWidth, h: tr.video.videoHeight, rendered: window.t.frames.get(tr.id) };
  }, { publisher, trackIndex });
  console.log(`   ${info.w}x${info.h}, ${info.rendered} frames rendered`);
}

/** A reliable DataChannel ping from `from` to `to` (peer id), answered; returns the RTT (ms). */
async function roundTrip(from, to, n, what) {
  const sent = await from.evaluate(({ to, n }) => { window.t.room.send({ ping: n }, { to }); return Date.now(); }, { to, n });
  await waitFor(from, (n) => window.t.pongs.has(n), n, what, 10000);
  return (await from.evaluate((n) => window.t.pongs.get(n), n)) - sent;
}

/** The longest time (ms) within [t0, t1] during which `series` ([at, count]) did not grow. */
function longestStall(series, t0, t1) {
  const s = series.filter(([at]) => at >= t0 && at <= t1);
  if (s.length < 2) return Infinity;
  let lastGrow = s[0][0];
  let worst = 0;
  for (let i = 1; i < s.length; i++) {
    if (s[i][1] > s[i - 1][1]) {
      worst = Math.max(worst, s[i][0] - lastGrow);
      lastGrow = s[i][0];
    }
  }
  return Math.max(worst, s[s.length - 1][0] - lastGrow);
}

/** The longest gap (ms) between arrivals within [t0, t1], edges included. */
function longestGap(times, t0, t1) {
  const s = [t0, ...times.filter((x) => x > t0 && x < t1), t1];
  let worst = 0;
  for (let i = 1; i < s.length; i++) worst = Math.max(worst, s[i] - s[i - 1]);
  return worst;
}

const host = (u) => new URL(u).host;
const nodeOf = (u) => ({ [host(N1_URL)]: 'node 1', [host(N2_URL)]: 'node 2', [host(N3_URL)]: 'node 3' })[host(u)] ?? u;

// ---- 1. the call ------------------------------------------------------------------------------
const A = await openPage(browser, N1_URL, allPages);
const B = await openPage(browser, N2_URL, allPages);
const a = await sdkJoin(A, [N1_URL, N3_URL], TICKET_A);
check(a.peerId === 'alice' && nodeOf(a.url) === 'node 1', `A joined as ${a.peerId} on ${nodeOf(a.url)}`);
check(Array.isArray(a.nodes) && a.nodes.length === 3 && host(a.nodes[0].url) === host(N1_URL) &&
  a.nodes.every((n) => typeof n.id === 'string' && n.id !== '') &&
  [N2_URL, N3_URL].every((u) => a.nodes.some((n) => host(n.url) === host(u))),
  `joined.nodes names the three nodes, node 1 first (${JSON.stringify(a.nodes)})`);
check(nodeOf(a.urls[1]) === 'node 3', `A's SDK will try node 3 next (${a.urls.map(nodeOf).join(', ')})`);
const b = await sdkJoin(B, [N2_URL], TICKET_B);
check(b.peerId === 'bob' && nodeOf(b.url) === 'node 2', `B joined as ${b.peerId} on ${nodeOf(b.url)}`);

await waitFor(A, (id) => window.t.room.peers.get(id)?.isOpen(), 'bob', 'A connected to B peer-to-peer');
await waitFor(B, (id) => window.t.room.peers.get(id)?.isOpen(), 'alice', 'B connected to A peer-to-peer');
await waitVideo(A, 'bob', 'A decodes and renders B\'s video');
await waitVideo(B, 'alice', 'B decodes and renders A\'s video');
const rtt0 = await roundTrip(A, 'bob', 1, 'DataChannel A → B → A');
const rtt1 = await roundTrip(B, 'alice', 2, 'DataChannel B → A → B');
check(true, `DataChannel round trips both ways before the kill (${rtt0} ms, ${rtt1} ms)`);
await waitFor(A, () => window.t.ticks.length > 10, null, 'A receives B\'s ticks on "updates"');
await waitFor(B, () => window.t.ticks.length > 10, null, 'B receives A\'s ticks on "updates"');

// ---- 2. SIGKILL node 1 ------------------------------------------------------------------------
// A restarts ICE just before the kill. Its offer and candidates reach B through node 1, but
// node 1 records A's relay count for a resume elsewhere about once a second, so the kill may
// come first: A's SDK then re-sends them from node 3 and B gets them twice. The call must go on
// either way.
const restartAt = Date.now();
await A.evaluate(() => window.t.room.peers.get('bob').pc.restartIce());
await waitFor(A, (since) => window.t.signals.some((m) => m.type === 'answer' && m.from === 'bob' && m.at >= since), restartAt, 'A restarted ICE (offer A → B, answer B → A)');
const offersBefore = await B.evaluate(() => window.t.signals.filter((m) => m.type === 'offer' && m.from === 'alice').length);
const sentBefore = await A.evaluate(() => window.t.client.sentCount);
const killedAt = Date.now();
process.kill(Number(N1_PID), 'SIGKILL');
console.log(`killed node 1 (pid ${N1_PID}) with SIGKILL`);
await waitFor(A, () => window.t.resumed.length > 0 || window.t.errors.length > 0, null, 'A\'s SDK resumed or failed', 15000);
const res = await A.evaluate(() => ({ resumed: window.t.resumed.map(({ at, url, peerId, received }) => ({ at, url, peerId, received })),
  errors: window.t.errors, fresh: window.t.joinedFresh, peerId: window.t.room.peerId, url: window.t.client.url.href }));
if (res.errors.length) await diagnostics();
check(res.errors.length === 0 && res.resumed.length === 1, `A resumed once, without errors (${JSON.stringify(res.errors)})`);
const resumedMs = res.resumed[0].at - killedAt;
console.log(`resumed on ${nodeOf(res.resumed[0].url)} in ${resumedMs} ms after SIGKILL`);
check(nodeOf(res.url) === 'node 3', `A's session continues on node 3 (${res.url})`);
check(res.peerId === 'alice' && res.fresh === 1, 'same session: same peer id, no fresh join');
const resent = sentBefore - res.resumed[0].received;
console.log(`   node 3 knew of ${res.resumed[0].received} of the ${sentBefore} relay messages A had sent; the SDK re-sent ${resent}`);

// Media and DataChannels are peer-to-peer: they must not notice the kill. Watch 3 s past it.
await sleep(Math.max(0, killedAt + 3000 - Date.now()));
const windowEnd = Date.now();
for (const [page, name, publisher] of [[A, 'A', 'bob'], [B, 'B', 'alice']]) {
  const series = await decodedSeries(page, publisher);
  const stall = longestStall(series, killedAt - 200, windowEnd);
  const after = series.filter(([at]) => at >= killedAt);
  const grew = after.length > 1 ? after[after.length - 1][1] - after[0][1] : 0;
  console.log(`${name} kept decoding ${publisher}'s video through the kill: +${grew} frames in ${windowEnd - killedAt} ms, longest stall ${stall} ms`);
  check(grew > 30 && stall < 1000, `${name} decodes ${publisher}'s video without a stall over 1 s around the kill`);
  const ticks = await page.evaluate(() => window.t.ticks);
  const gap = longestGap(ticks, killedAt, windowEnd);
  console.log(`${name} kept receiving DataChannel updates through the kill: longest gap ${gap} ms`);
  check(gap < 1000, `${name}'s DataChannel carried messages through the kill`);
}
const offersAfter = await B.evaluate(() => window.t.signals.filter((m) => m.type === 'offer' && m.from === 'alice').length);
console.log(`   B got A's last offer again ${offersAfter - offersBefore} time(s) after the resume`);
const rtt2 = await roundTrip(A, 'bob', 3, 'DataChannel A → B → A after the resume');
const rtt3 = await roundTrip(B, 'alice', 4, 'DataChannel B → A → B after the resume');
console.log(`DataChannel round trips after the resume: ${rtt2} ms (A→B→A), ${rtt3} ms (B→A→B)`);

// ---- 3. signaling between node 3 and node 2 -----------------------------------------------------
// A publishes a second camera: A offers, B answers, B gets and decodes the new track.
const t3 = Date.now();
await A.evaluate(async () => {
  const s = await navigator.mediaDevices.getUserMedia({ video: { width: 160, height: 120 } });
  window.t.second = s.getVideoTracks()[0];
  window.t.room.publish(window.t.second);
});
await waitFor(B, (since) => window.t.signals.some((m) => m.type === 'offer' && m.from === 'alice' && m.at >= since), t3, 'B got A\'s renegotiation offer (node 3 → node 2)');
await waitFor(A, (since) => window.t.signals.some((m) => m.type === 'answer' && m.from === 'bob' && m.at >= since), t3, 'A got B\'s answer (node 2 → node 3)');
await waitVideo(B, 'alice', 'B decodes A\'s second camera, negotiated after the resume', 1);
console.log(`renegotiation through node 3 and node 2 took ${Date.now() - t3} ms (offer, answer, first frames)`);

// B restarts ICE: B offers, A answers.
async function iceRestart(from, to, what) {
  const since = Date.now();
  const ufrag = (sdp) => (sdp.match(/a=ice-ufrag:(\S+)/) || [])[1];
  const before = await from.evaluate((to) => window.t.room.peers.get(to).pc.localDescription.sdp, to);
  await from.evaluate((to) => window.t.room.peers.get(to).pc.restartIce(), to);
  const other = from === A ? B : A;
  const me = from === A ? 'alice' : 'bob';
  await waitFor(other, ({ since, me }) => window.t.signals.some((m) => m.type === 'offer' && m.from === me && m.at >= since), { since, me }, `${what}: the offer arrived`);
  await waitFor(from, ({ since, to }) => window.t.signals.some((m) => m.type === 'answer' && m.from === to && m.at >= since), { since, to }, `${what}: the answer arrived`);
  await waitFor(from, ({ to, before }) => {
    const pc = window.t.room.peers.get(to).pc;
    const u = (pc.localDescription?.sdp.match(/a=ice-ufrag:(\S+)/) || [])[1];
    return pc.signalingState === 'stable' && u && u !== before && ['connected', 'completed'].includes(pc.iceConnectionState);
  }, { to, before: ufrag(before) }, `${what}: new ICE credentials, connected`);
  console.log(`${what} took ${Date.now() - since} ms`);
}
await iceRestart(B, 'alice', 'ICE restart from B (node 2 → node 3 → node 2)');

// ---- 4. after node 1's resume grace -------------------------------------------------------------
// Node 1's memberships are removed once the grace has passed (after node 1 is known dead):
// A's moved membership must stay.
await sleep(Math.max(0, killedAt + NODE_TTL_MS + GRACE_MS + 2000 - Date.now()));
console.log(`${Date.now() - killedAt} ms after the kill (resume grace ${GRACE_MS} ms):`);
const views = await Promise.all([A, B].map((p) => p.evaluate(() => ({
  left: window.t.left, members: [...window.t.room.members], peers: [...window.t.room.peers.keys()],
  conn: [...window.t.room.peers.values()].map((p) => p.pc.connectionState), errors: window.t.errors,
  resumed: window.t.resumed.length, reconnects: window.t.client.reconnects,
}))));
const [va, vb] = views;
check(va.left.length === 0 && vb.left.length === 0, `no peer_left on either page (A: ${va.left}, B: ${vb.left})`);
check(va.members.includes('bob') && va.peers.includes('bob'), 'A still lists B');
check(vb.members.includes('alice') && vb.peers.includes('alice'), 'B still lists A');
check(va.conn.every((c) => c === 'connected') && vb.conn.every((c) => c === 'connected'), 'both peer connections connected');
check(va.errors.length === 0 && vb.errors.length === 0 && va.resumed === 1 && vb.resumed === 0 && vb.reconnects === 0,
  'no errors; only A resumed, once; B never reconnected');
await iceRestart(A, 'bob', 'ICE restart from A after the grace (node 3 → node 2 → node 3)');
const rtt4 = await roundTrip(A, 'bob', 5, 'DataChannel A → B → A after the grace');
const rtt5 = await roundTrip(B, 'alice', 6, 'DataChannel B → A → B after the grace');
console.log(`DataChannel round trips after the grace: ${rtt4} ms, ${rtt5} ms`);
await waitVideo(A, 'bob', 'A still decodes B\'s video');
await waitVideo(B, 'alice', 'B still decodes A\'s video');

console.log(`resumed on ${nodeOf(res.resumed[0].url)} in ${resumedMs} ms after SIGKILL`);
await browser.close();
clearTimeout(deadline);
console.log('PASS: cluster mesh browser suite');
