// Real browsers through a lossy downlink (e2e/suites/63-sfu-lossy-browser.sh drops a share of
// the SFU's outgoing UDP at random). Two pages publish fake cameras in one SFU room; each must
// keep decoding the other, and its video receiver must have sent NACKs and got a
// retransmission for (nearly) every packet lost (inbound-rtp nackCount, packetsLost,
// retransmittedPacketsReceived).
// Usage: SFU_URL=http://127.0.0.1:P node e2e/browser/sfu-lossy.mjs
import { launchChromium } from './common.mjs';
import { check, sfuHarness, sleep } from './sfu-harness.mjs';

const SFU_URL = process.env.SFU_URL;
const LOSS = Number(process.env.LOSS || 5);
const deadline = setTimeout(() => { console.error('FAIL: suite timed out'); process.exit(1); }, 100_000);

const browser = await launchChromium(['--autoplay-policy=no-user-gesture-required',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost']);
const { newPage, sdkJoin, waitFor, checkDecoding } = sfuHarness(browser);

const [A, B] = [await newPage(SFU_URL), await newPage(SFU_URL)];
const a = await sdkJoin(A, 'lossy');
const b = await sdkJoin(B, 'lossy');
check(a.mode === 'sfu' && b.mode === 'sfu', `two pages joined in SFU mode (${a.id}, ${b.id})`);
for (const [p, x] of [[A, a], [B, b]]) {
  await waitFor(p, () => window.t.peerConnected.has('$sfu') && window.t.sfuConnectedAt !== null, null, `${x.id}: sfu_connected through ${LOSS} % loss`);
}
await checkDecoding([A, B], [a.id, b.id], 'lossy downlink');

/** The page's received video, summed over its inbound-rtp streams. */
const videoIn = (page) => page.evaluate(async () => {
  const o = { received: 0, lost: 0, nacks: 0, rtx: 0, rtxReported: false, decoded: 0, plis: 0, freezes: 0, path: '' };
  const stats = await window.t.room.sfu.pc.getStats();
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      const remote = pair && stats.get(pair.remoteCandidateId);
      if (remote) o.path = `${remote.protocol} ${remote.address}:${remote.port}`;
    }
    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
    o.received += s.packetsReceived || 0;
    o.lost += s.packetsLost || 0;
    o.nacks += s.nackCount || 0;
    o.decoded += s.framesDecoded || 0;
    o.plis += s.pliCount || 0;
    o.freezes += s.freezeCount || 0;
    if (s.retransmittedPacketsReceived !== undefined) {
      o.rtxReported = true;
      o.rtx += s.retransmittedPacketsReceived;
    }
  });
  return o;
});
await sleep(8000);
for (const [p, x] of [[A, a], [B, b]]) {
  const v = await videoIn(p);
  console.log(`${x.id}: ${JSON.stringify(v)}`);
  check(v.nacks > 0 && v.lost > 5, `${x.id}: ${v.lost} video packets lost, the browser sent ${v.nacks} NACKs`);
  // libwebrtc keeps RTX-repaired packets in the media stream's packetsLost (they arrive on the
  // RTX SSRC), so repair shows as retransmissions received against packets lost.
  check(v.rtxReported, `${x.id}: inbound-rtp reports retransmittedPacketsReceived`);
  check(v.rtx >= 0.8 * v.lost, `${x.id}: ${v.rtx} retransmissions arrived for ${v.lost} lost packets`);
}
await checkDecoding([A, B], [a.id, b.id], 'lossy downlink after 8 s');

clearTimeout(deadline);
await browser.close();
console.log('sfu lossy browser suite passed');
