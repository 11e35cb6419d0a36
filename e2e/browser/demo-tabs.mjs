// The demo page as a newcomer opens it from `serve --dev`'s banner (headless Chromium):
//  1. the printed demo URL opened in two tabs of one browser: both tabs are in the room on the
//     first try, see each other, and their direct DataChannel opens;
//  2. the same URL carrying the printed single-use ticket (`&token=`) in two more tabs: the
//     first tab uses the ticket, the second finds it spent and joins with a fresh guest ticket.
// Usage: DEMO_URL=http://127.0.0.1:PORT/?room=lobby TICKET=<jwt> node e2e/browser/demo-tabs.mjs
import { launchChromium } from './common.mjs';

const DEMO_URL = process.env.DEMO_URL;
const TICKET = process.env.TICKET;
if (!DEMO_URL || !TICKET) { console.error('FAIL: DEMO_URL and TICKET are required'); process.exit(1); }
const deadline = setTimeout(() => { console.error('FAIL: demo tabs timed out'); process.exit(1); }, 90_000);

function check(cond, msg) {
  if (!cond) { console.error('FAIL:', msg); process.exit(1); }
  console.log('ok -', msg);
}

const browser = await launchChromium(['--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost']);
// One context: tabs of one browser window share cookies and storage, as a newcomer's do.
const ctx = await browser.newContext({ viewport: { width: 1280, height: 720 } });
await ctx.grantPermissions(['camera', 'microphone']);

/** Opens `url` in a new tab and waits until the page's room has `peers` connected peers. */
async function tab(url) {
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.error('pageerror:', e.message));
  await page.goto(url);
  return page;
}

async function inRoomWith(page, n, what) {
  try {
    await page.waitForFunction((n) => window.sb && window.sb.room.peers.size === n &&
      [...window.sb.room.peers.values()].every((p) => p.isOpen()), n, { timeout: 30_000, polling: 50 });
  } catch (e) {
    const status = await page.evaluate(() => ({
      status: document.getElementById('status').textContent,
      log: document.getElementById('log').textContent,
    })).catch(() => null);
    console.error('diagnostics:', JSON.stringify(status));
    check(false, `${what}: ${e.message}`);
  }
  const status = await page.evaluate(() => document.getElementById('status').textContent);
  check(/^in /.test(status), `${what} (status "${status}")`);
}

const ids = async (p) => p.evaluate(() => ({ me: window.sb.room.peerId, peers: [...window.sb.room.peers.keys()] }));

// 1. The printed URL, twice.
const t1 = await tab(DEMO_URL);
const t2 = await tab(DEMO_URL);
await inRoomWith(t1, 1, 'first tab from the printed URL is in the room with the second');
await inRoomWith(t2, 1, 'second tab from the printed URL is in the room on the first try');
const [a, b] = [await ids(t1), await ids(t2)];
check(a.me !== b.me && a.peers[0] === b.me && b.peers[0] === a.me, `the tabs see each other (${a.me}, ${b.me})`);
await t1.close();
await t2.close();

// 2. The printed URL with the printed single-use ticket, in two tabs of another room.
const withTicket = new URL(DEMO_URL);
withTicket.searchParams.set('room', 'ticket-tabs');
withTicket.searchParams.set('token', TICKET);
const t3 = await tab(withTicket.toString());
await t3.waitForFunction(() => window.sb, null, { timeout: 30_000, polling: 50 });
const t4 = await tab(withTicket.toString());
await inRoomWith(t3, 1, 'tab with the printed ticket is in the room');
await inRoomWith(t4, 1, 'second tab with the same (spent) ticket joined with a fresh guest ticket');
check((await ids(t3)).me === 'dev-user', 'the first tab used the printed ticket (identity dev-user)');
check((await ids(t4)).me.startsWith('guest-'), 'the second tab minted its own guest ticket');

clearTimeout(deadline);
await browser.close();
console.log('demo tabs: all checks passed');
