// Helpers shared by the SFU browser suites (sfu.mjs, sfu-lossy.mjs): pages that join a room
// through the SDK and publish a fake camera, waits with diagnostics, frames-decoded checks and
// /metrics reads.
import { openPage } from './common.mjs';

export function check(cond, msg) {
  if (!cond) { console.error('FAIL:', msg); process.exit(1); }
  console.log(`ok - ${msg}`);
}
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Page helpers bound to one launched `browser`. */
export function sfuHarness(browser) {
  const allPages = [];
  const newPage = (base) => openPage(browser, base, allPages);

  /** Joins `room` via the SDK; publishes the fake camera when `publish` is set. */
  async function sdkJoin(page, room, { publish = true, simulcast = false, via = null } = {}) {
    return page.evaluate(async ({ room, publish, simulcast, via }) => {
      const sdk = await import('/sdk/switchboard.js');
      const mint = async () => (await (await fetch('/v1/token', { method: 'POST', body: JSON.stringify({ room }) })).json()).token;
      const log = [];
      const client = await sdk.connect(via ?? location.origin, await mint(), { getToken: mint, log: (...a) => log.push(a.map(String).join(' ')) });
      const r = client.room(room);
      const t = { sdk, client, room: r, got: [], updates: [], tracks: [], ended: [], modes: [], errors: [], log,
        sfuConnectedAt: null, peerConnected: new Set(), videos: new Map() };
      window.t = t;
      client.on('signal', (m) => log.push(`${Math.round(performance.now())} <${m.type}${m.from ? ' ' + m.from : ''}${m.publisher ? ' ' + m.publisher : ''}${m.mid ? ' mid=' + m.mid : ''}${m.code ? ' ' + m.code : ''}`));
      r.on('message', (from, m) => t.got.push({ from, m }));
      r.on('update', (from, u) => t.updates.push({ from, u }));
      r.on('error', (e) => t.errors.push(e));
      r.on('mode_changed', (m) => t.modes.push(m));
      r.on('peer_connected', (id) => t.peerConnected.add(id));
      r.on('sfu_connected', () => { if (t.sfuConnectedAt === null) t.sfuConnectedAt = performance.now(); });
      r.on('track', (publisher, track, info) => {
        t.tracks.push({ publisher, trackId: info.trackId, kind: info.kind, mid: info.mid, at: performance.now(), track });
        if (track.kind === 'video') {
          const v = document.createElement('video');
          v.autoplay = true; v.muted = true; v.playsInline = true; v.width = 160;
          v.srcObject = new MediaStream([track]);
          document.body.append(v);
          t.videos.set(publisher, v);
        }
      });
      r.on('track_ended', (publisher, trackId) => {
        t.ended.push({ publisher, trackId, at: performance.now() });
        t.videos.get(publisher)?.remove();
      });
      // Frames decoded per remote publisher (video), from the connection that carries it.
      t.frames = async () => {
        const out = {};
        for (const x of t.tracks) {
          if (x.kind !== 'video' || t.ended.some((e) => e.trackId === x.trackId && e.publisher === x.publisher)) continue;
          const pc = r.sfu && x.mid !== null ? r.sfu.pc : r.peers.get(x.publisher)?.pc;
          if (!pc || x.track.readyState !== 'live') continue;
          let n = 0;
          (await pc.getStats(x.track)).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded || 0; });
          out[x.publisher] = (out[x.publisher] || 0) + n;
        }
        return out;
      };
      const j = await r.join();
      if (publish) {
        const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
        t.camera = stream.getVideoTracks()[0];
        r.publish(t.camera, { simulcast });
      }
      return { id: j.peer_id, mode: j.mode };
    }, { room, publish, simulcast, via });
  }

  async function diagnostics() {
    for (const pg of allPages) {
      if (pg.isClosed()) continue;
      const d = await pg.evaluate(() => window.t ? {
        me: window.t.room.peerId, mode: window.t.room.mode, stats: window.t.room.stats(),
        sfu: window.t.room.sfu ? { sig: window.t.room.sfu.pc.signalingState, ice: window.t.room.sfu.pc.iceConnectionState,
          rel: window.t.room.sfu.reliable.readyState, mids: window.t.room.sfu.pc.getTransceivers().map((x) => `${x.mid}:${x.currentDirection}`) } : null,
        tracks: window.t.tracks.map((x) => `${x.publisher}/${x.mid}`), ended: window.t.ended, errors: window.t.errors,
        log: window.t.log.slice(-40),
      } : null).catch(() => null);
      if (d) console.error('diagnostics:', JSON.stringify(d));
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


  /** Every page decodes every other publisher: framesDecoded > 0, then it grows by at least 10
   * frames (half a second of the fake camera) between two samples, within 6 s. */
  async function checkDecoding(pages, ids, label) {
    for (const [i, p] of pages.entries()) {
      const others = ids.filter((_, j) => j !== i);
      await waitFor(p, async (others) => {
        const f = await window.t.frames();
        return others.every((o) => (f[o] || 0) > 0);
      }, others, `${label}: ${ids[i]} decodes ${others.join(', ')}`, 20000);
    }
    for (const [i, p] of pages.entries()) {
      const others = ids.filter((_, j) => j !== i);
      const r = await p.evaluate(async (others) => {
        const first = await window.t.frames();
        const t1 = performance.now();
        let last = first;
        while (performance.now() - t1 < 6000) {
          last = await window.t.frames();
          if (others.every((o) => (last[o] || 0) >= (first[o] || 0) + 10)) break;
          await new Promise((res) => setTimeout(res, 50));
        }
        return { first, last, ms: performance.now() - t1 };
      }, others);
      const fig = others.map((o) => `${o}: ${r.first[o]}→${r.last[o]}`).join(', ');
      check(others.every((o) => (r.last[o] || 0) >= (r.first[o] || 0) + 10),
        `${label}: ${ids[i]} frames decoded keep growing (${fig} in ${r.ms.toFixed(0)} ms)`);
    }
  }
  return { allPages, newPage, sdkJoin, diagnostics, waitFor, checkDecoding };
}

/** A sample's value from `base`/metrics (the first series of `name`). */
export async function metric(base, name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)`, 'm'));
  return m ? Number(m[1]) : NaN;
}
