// An SFU room across cluster nodes with real browsers (headless Chromium via playwright-core):
//  1. page A joins the room through node A and publishes a fake camera; it is the room's first
//     member, so the room is placed on node A's SFU (every node is idle: this node on a tie);
//  2. pages B and C join through node B and node C and only subscribe; each decodes A's video
//     (framesDecoded grows, the <video> has a width), and the selected ICE candidate pair of
//     each page's connection to "$sfu" has node A's SFU UDP port as its remote candidate;
//  3. a DataChannel message from each page reaches the two others through the SFU;
//  4. node A's /metrics counts 3 SFU sessions, node B's and node C's none.
// Prints each subscriber's time from join to its first decoded frame.
// Usage: A_URL=.. B_URL=.. C_URL=.. A_SFU_UDP=.. B_SFU_UDP=.. C_SFU_UDP=.. TICKET_A=.. TICKET_B=..
//        TICKET_C=.. node e2e/browser/cluster-sfu.mjs
import { launchChromium, openPage } from './common.mjs';
import { check, metric, sleep } from './sfu-harness.mjs';

const env = process.env;
for (const k of ['A_URL', 'B_URL', 'C_URL', 'A_SFU_UDP', 'B_SFU_UDP', 'C_SFU_UDP', 'TICKET_A', 'TICKET_B', 'TICKET_C']) {
  if (!env[k]) { console.error(`FAIL: ${k} is required`); process.exit(1); }
}
const NODES = { A: env.A_URL, B: env.B_URL, C: env.C_URL };
const SFU_UDP = { A: Number(env.A_SFU_UDP), B: Number(env.B_SFU_UDP), C: Number(env.C_SFU_UDP) };
const ROOM = 'cluster-stage';
const host = (u) => new URL(u).host;
const deadline = setTimeout(() => { console.error('FAIL: suite timed out'); process.exit(1); }, 80_000);

const browser = await launchChromium(['--autoplay-policy=no-user-gesture-required',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost']);
const allPages = [];

/** Per-page diagnostics: the SFU connection's state, tracks, errors and the signaling log. */
async function diagnostics() {
  for (const pg of allPages) {
    const d = await pg.evaluate(() => window.t ? {
      me: window.t.room.peerId, mode: window.t.room.mode, url: window.t.client.url.href,
      sfu: window.t.room.sfu ? { sig: window.t.room.sfu.pc.signalingState, ice: window.t.room.sfu.pc.iceConnectionState,
        rel: window.t.room.sfu.reliable.readyState } : null,
      tracks: window.t.tracks.map((x) => ({ publisher: x.publisher, decoded: x.decoded, width: x.video.videoWidth })),
      errors: window.t.errors, log: window.t.log.slice(-40),
    } : null).catch((e) => String(e));
    console.error('diagnostics:', JSON.stringify(d));
  }
}

async function waitFor(page, fn, arg, what, timeout = 20000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
    console.log('ok -', what);
  } catch (e) {
    await diagnostics();
    check(false, `${what} (timed out: ${e.message.split('\n')[0]})`);
  }
}

/**
 * Joins ROOM through the SDK served by the page's node (signaling to that node only), with the
 * fake camera published when `publish` is set. Records in `window.t`: DataChannel messages,
 * errors, a signaling log, the times (performance.now()) of the join call, of `joined`, of
 * `sfu_connected`, and per remote video track of its `track` event, its first decoded frame
 * (getStats sampled every 20 ms) and its first rendered frame (requestVideoFrameCallback).
 */
async function sdkJoin(page, ticket, publish) {
  return page.evaluate(async ({ ticket, room, publish }) => {
    const { connect } = await import('/sdk/switchboard.js');
    const log = [];
    const stamp = (s) => log.push(`${Math.round(performance.now())} ${s}`);
    const client = await connect(location.origin, ticket, { log: (...a) => stamp(a.map(String).join(' ')) });
    const r = client.room(room);
    const t = { client, room: r, log, got: [], errors: [], tracks: [], joinAt: 0, joinedAt: 0, sfuConnectedAt: null };
    window.t = t;
    client.on('signal', (m) => stamp(`<${m.type}${m.from ? ' ' + m.from : ''}${m.publisher ? ' ' + m.publisher : ''}${m.code ? ' ' + m.code : ''}`));
    client.on('error', (e) => t.errors.push(String(e?.message ?? e)));
    r.on('error', (e) => t.errors.push(JSON.stringify(e)));
    r.on('message', (from, m) => t.got.push({ from, m }));
    r.on('sfu_connected', () => { if (t.sfuConnectedAt === null) t.sfuConnectedAt = performance.now(); });
    r.on('track', (publisher, track, info) => {
      if (info.kind !== 'video') return;
      const v = document.createElement('video');
      v.autoplay = true; v.muted = true; v.playsInline = true; v.width = 160;
      v.srcObject = new MediaStream([track]);
      document.body.append(v);
      const x = { publisher, track, video: v, at: performance.now(), decoded: 0, firstDecodedAt: null, firstRenderedAt: null };
      v.requestVideoFrameCallback(() => { x.firstRenderedAt = performance.now(); });
      v.play().catch(() => {});
      t.tracks.push(x);
    });
    // Frames decoded per remote video track, from the SFU connection's inbound-rtp stats.
    const sample = async () => {
      if (r.sfu) {
        for (const x of t.tracks) {
          let n = 0;
          (await r.sfu.pc.getStats(x.track)).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.framesDecoded || 0; });
          x.decoded = n;
          if (n > 0 && x.firstDecodedAt === null) x.firstDecodedAt = performance.now();
        }
      }
      setTimeout(sample, 20);
    };
    sample();
    if (publish) {
      const cam = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
      r.publish(cam.getVideoTracks()[0]);
    }
    t.joinAt = performance.now();
    const j = await r.join();
    t.joinedAt = performance.now();
    return { id: j.peer_id, mode: j.mode, url: client.url.href };
  }, { ticket, room: ROOM, publish });
}

/** The selected ICE candidate pair of the page's connection to the SFU: its remote candidate. */
async function selectedRemote(page) {
  return page.evaluate(async () => {
    const stats = await window.t.room.sfu.pc.getStats();
    let pairId = null;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
    const pair = pairId ? stats.get(pairId) : null;
    const remote = pair ? stats.get(pair.remoteCandidateId) : null;
    return remote ? { address: remote.address, port: remote.port, protocol: remote.protocol, type: remote.candidateType, state: pair.state } : null;
  });
}

/** Per SFU node, its switchboard_sfu_sessions gauge. */
const sessions = async () => Object.fromEntries(await Promise.all(
  Object.entries(NODES).map(async ([n, u]) => [n, await metric(u, 'switchboard_sfu_sessions')])));

// ---- 1. the publisher creates the room on node A ------------------------------------------------
const A = await openPage(browser, NODES.A, allPages);
const a = await sdkJoin(A, env.TICKET_A, true);
check(a.mode === 'sfu' && host(a.url) === host(NODES.A), `A joined as ${a.id} in SFU mode through node A (${JSON.stringify(a)})`);
await waitFor(A, () => window.t.sfuConnectedAt !== null && window.t.room.sfu?.isOpen(), null, 'A: sfu_connected, DataChannels open');
const ra = await selectedRemote(A);
check(ra?.port === SFU_UDP.A, `A's connection goes to node A's SFU (${JSON.stringify(ra)})`);

// ---- 2. subscribers on node B and node C ---------------------------------------------------------
const B = await openPage(browser, NODES.B, allPages);
const C = await openPage(browser, NODES.C, allPages);
const [b, c] = await Promise.all([sdkJoin(B, env.TICKET_B, false), sdkJoin(C, env.TICKET_C, false)]);
check(b.mode === 'sfu' && host(b.url) === host(NODES.B), `B joined as ${b.id} in SFU mode through node B (${JSON.stringify(b)})`);
check(c.mode === 'sfu' && host(c.url) === host(NODES.C), `C joined as ${c.id} in SFU mode through node C (${JSON.stringify(c)})`);
const viewers = [[B, 'B', b], [C, 'C', c]];
for (const [p, name] of viewers) {
  await waitFor(p, (pub) => window.t.tracks.some((x) => x.publisher === pub && x.firstDecodedAt !== null && x.video.videoWidth > 0),
    a.id, `${name} decodes A's video`);
}
for (const [p, name] of viewers) {
  const d = await p.evaluate(async (pub) => {
    const x = window.t.tracks.find((y) => y.publisher === pub);
    const first = x.decoded;
    const t1 = performance.now();
    while (performance.now() - t1 < 5000 && x.decoded < first + 10) await new Promise((res) => setTimeout(res, 50));
    return { first, last: x.decoded, ms: Math.round(performance.now() - t1), w: x.video.videoWidth, h: x.video.videoHeight };
  }, a.id);
  check(d.last >= d.first + 10 && d.w > 0,
    `${name}: A's frames decoded keep growing (${d.first}→${d.last} in ${d.ms} ms), <video> ${d.w}x${d.h}`);
}
for (const [p, name] of viewers) {
  const r = await selectedRemote(p);
  check(r?.port === SFU_UDP.A && r.protocol === 'udp' && r.address === '127.0.0.1',
    `${name}'s selected candidate pair ends at node A's SFU ${r?.address}:${r?.port}/${r?.protocol} (A ${SFU_UDP.A}, B ${SFU_UDP.B}, C ${SFU_UDP.C})`);
}

// ---- 3. DataChannel messages through the SFU -----------------------------------------------------
const pages = [[A, 'A', a], ...viewers];
for (const [p, name] of pages) {
  await waitFor(p, () => window.t.room.sfu?.isOpen(), null, `${name}: DataChannels to the SFU open`);
}
for (const [p, name] of pages) await p.evaluate((name) => window.t.room.send({ hello: name }), name);
for (const [p, name] of pages) {
  for (const [, other, o] of pages.filter(([q]) => q !== p)) {
    await waitFor(p, ({ other, id }) => window.t.got.some((g) => g.m?.hello === other && g.from === id), { other, id: o.id },
      `${name} got ${other}'s DataChannel message (from ${o.id})`, 10000);
  }
}
await sleep(200);
for (const [p, name] of pages) {
  const own = await p.evaluate((name) => window.t.got.filter((g) => g.m?.hello === name).length, name);
  check(own === 0, `${name} did not get its own broadcast back`);
}
await B.evaluate((id) => window.t.room.send({ direct: 'B to C' }, { to: id }), c.id);
await waitFor(C, (id) => window.t.got.some((g) => g.m?.direct === 'B to C' && g.from === id), b.id, 'C got B\'s targeted message');
await sleep(200);
check(!(await A.evaluate(() => window.t.got.some((g) => g.m?.direct))), 'A did not get the message targeted at C');

// ---- 4. one SFU serves the room: node A's ----------------------------------------------------------
let s = await sessions();
for (let i = 0; i < 50 && !(s.A === 3 && s.B === 0 && s.C === 0); i++) { await sleep(100); s = await sessions(); }
check(s.A === 3 && s.B === 0 && s.C === 0, `switchboard_sfu_sessions: node A ${s.A}, node B ${s.B}, node C ${s.C}`);

const errors = (await Promise.all(pages.map(([p]) => p.evaluate(() => window.t.errors)))).flat();
check(errors.length === 0, `no errors on any page (${JSON.stringify(errors)})`);

// ---- times ---------------------------------------------------------------------------------------
for (const [p, name] of viewers) {
  const x = await p.evaluate((pub) => {
    const t = window.t;
    const tr = t.tracks.find((y) => y.publisher === pub);
    const rel = (v) => (v === null ? null : Math.round(v - t.joinAt));
    return { joined: rel(t.joinedAt), connected: rel(t.sfuConnectedAt), track: rel(tr.at), decoded: rel(tr.firstDecodedAt), rendered: rel(tr.firstRenderedAt) };
  }, a.id);
  console.log(`${name} (node ${name}): join → first decoded frame ${x.decoded} ms ` +
    `(joined ${x.joined} ms, sfu_connected ${x.connected} ms, track ${x.track} ms, first rendered ${x.rendered} ms)`);
}

await browser.close();
clearTimeout(deadline);
console.log('PASS: cluster SFU browser suite');
