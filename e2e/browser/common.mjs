// Shared by the browser suites: headless Chromium with fake media devices, and a TCP proxy whose
// connections can be cut without a close frame (a network loss, as far as the server can tell).
import { chromium } from 'playwright-core';
import net from 'node:net';

/** Chromium flags every suite uses; `extra` adds suite-specific ones. */
export function launchChromium(extra = []) {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      '--allow-loopback-in-peer-connection', ...extra],
  });
}

/**
 * A page in a fresh context of `browser` (720p viewport, camera and microphone granted), its
 * errors logged, opened on `base`/healthz so it shares the server's origin; added to `pages`.
 */
export async function openPage(browser, base, pages) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  await ctx.grantPermissions(['camera', 'microphone']);
  const page = await ctx.newPage();
  pages.push(page);
  page.on('pageerror', (e) => console.error('pageerror:', e.message));
  await page.goto(`${base}/healthz`);
  return page;
}

/**
 * A loopback TCP proxy to `target` (an http:// URL). `cut()` destroys every proxied connection
 * and refuses new ones until `restore()`.
 */
export async function cuttableProxy(target) {
  const addr = new URL(target);
  const live = new Set();
  let refuse = false;
  const server = net.createServer((cl) => {
    if (refuse) { cl.destroy(); return; }
    const up = net.connect(Number(addr.port), addr.hostname);
    live.add(cl); live.add(up);
    cl.pipe(up); up.pipe(cl);
    const done = () => { cl.destroy(); up.destroy(); live.delete(cl); live.delete(up); };
    cl.on('error', done); up.on('error', done); cl.on('close', done); up.on('close', done);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() { refuse = true; for (const s of live) s.destroy(); },
    restore() { refuse = false; },
    close() { server.close(); },
  };
}
