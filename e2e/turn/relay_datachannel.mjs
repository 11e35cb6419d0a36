// Two headless Chromium pages connect through Switchboard's TURN only
// (iceTransportPolicy 'relay', iceServers from /v1/ice-servers filtered to one transport) and
// exchange DataChannel messages. The harness carries the SDP between the pages (signaling is
// not under test here). Usage: node relay_datachannel.mjs SB_URL udp|tcp
import { chromium } from 'playwright-core';

const [sbUrl, transport] = process.argv.slice(2);
if (!sbUrl || !['udp', 'tcp'].includes(transport)) {
  console.error('usage: relay_datachannel.mjs SB_URL udp|tcp');
  process.exit(2);
}

async function iceServers(identityRoom) {
  const t = await fetch(`${sbUrl}/v1/token`, { method: 'POST', body: JSON.stringify({ room: identityRoom }) });
  if (!t.ok) throw new Error(`token: ${t.status}`);
  const { token } = await t.json();
  const r = await fetch(`${sbUrl}/v1/ice-servers`, { headers: { authorization: `Bearer ${token}` } });
  if (!r.ok) throw new Error(`ice-servers: ${r.status}`);
  const doc = await r.json();
  const turn = doc.iceServers.find((s) => s.username);
  const urls = turn.urls.filter((u) => u.startsWith('turn:') && u.endsWith(`transport=${transport}`));
  if (urls.length !== 1) throw new Error(`no turn url for ${transport}: ${JSON.stringify(turn.urls)}`);
  return [{ urls, username: turn.username, credential: turn.credential }];
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost'],
});
const deadline = setTimeout(() => { console.error('timeout'); process.exit(1); }, 45000);
try {
  const ctx = await browser.newContext();
  const [a, b] = [await ctx.newPage(), await ctx.newPage()];
  for (const p of [a, b]) p.on('console', (m) => console.log(`[page] ${m.text()}`));
  const setup = async (page, servers, offerer) => page.evaluate(async ({ servers, offerer }) => {
    const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: 'relay' });
    window.pc = pc;
    window.got = [];
    const wire = (dc) => {
      window.dc = dc;
      dc.onmessage = (e) => { window.got.push(e.data); if (!offerer) dc.send(`echo:${e.data}`); };
    };
    if (offerer) wire(pc.createDataChannel('updates', { ordered: true }));
    else pc.ondatachannel = (e) => wire(e.channel);
    window.gathered = new Promise((res) => {
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && res();
    });
  }, { servers, offerer });
  await setup(a, await iceServers('turn-e2e'), true);
  await setup(b, await iceServers('turn-e2e'), false);
  const t0 = Date.now();
  const offer = await a.evaluate(async () => {
    await pc.setLocalDescription(await pc.createOffer());
    await window.gathered;
    return pc.localDescription.toJSON();
  });
  if (!/typ relay/.test(offer.sdp)) throw new Error('offerer gathered no relay candidate:\n' + offer.sdp);
  const answer = await b.evaluate(async (offer) => {
    await pc.setRemoteDescription(offer);
    await pc.setLocalDescription(await pc.createAnswer());
    await window.gathered;
    return pc.localDescription.toJSON();
  }, offer);
  await a.evaluate(async (answer) => pc.setRemoteDescription(answer), answer);
  await a.waitForFunction(() => window.dc && window.dc.readyState === 'open', null, { timeout: 20000 });
  const openMs = Date.now() - t0;
  const N = 50;
  await a.evaluate((N) => { for (let i = 0; i < N; i++) dc.send(`m${i}`); }, N);
  await a.waitForFunction((N) => window.got.length >= N, N, { timeout: 15000 });
  const echoed = await a.evaluate(() => window.got);
  const want = Array.from({ length: N }, (_, i) => `echo:m${i}`);
  if (JSON.stringify(echoed) !== JSON.stringify(want)) throw new Error(`bad echo: ${echoed.slice(0, 5)}`);
  const pair = await a.evaluate(async () => {
    const stats = await pc.getStats();
    let sel;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) sel = stats.get(s.selectedCandidatePairId); });
    if (!sel) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') sel = s; });
    const l = stats.get(sel.localCandidateId);
    const r = stats.get(sel.remoteCandidateId);
    return { local: l.candidateType, relayProtocol: l.relayProtocol, remote: r.candidateType, url: l.url };
  });
  if (pair.local !== 'relay' || pair.remote !== 'relay') throw new Error(`not relayed: ${JSON.stringify(pair)}`);
  if (pair.relayProtocol && pair.relayProtocol !== transport) throw new Error(`wrong relay protocol: ${JSON.stringify(pair)}`);
  console.log(`OK transport=${transport} open_ms=${openMs} echoed=${echoed.length} pair=${JSON.stringify(pair)}`);
} finally {
  clearTimeout(deadline);
  await browser.close();
}
