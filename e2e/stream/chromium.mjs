// Headless Chromium loads a page from a separate static server and streams from Switchboard
// through clients/js/src/stream.js (gRPC-Web over fetch, cross-origin).
import { chromium } from "playwright-core";

const [pageUrl] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"],
});
let code = 1;
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.log("page:", m.text()));
  page.on("pageerror", (e) => console.log("page error:", e.message));
  await page.goto(pageUrl);
  await page.waitForFunction(() => typeof window.runAll === "function", null, { timeout: 10000 });
  const r = await page.evaluate(() => window.runAll());
  console.log(JSON.stringify(r));
  const problems = [];
  if (r.count !== 13 || !r.lastDone) problems.push(`expected 13 chunks ending with done, got ${r.count}`);
  if (!r.bytesOk) problems.push("chunk bytes differ from SHA-256 counter mode");
  if (!(r.lastMs - r.firstMs > 300)) problems.push(`chunks not incremental: first ${r.firstMs} ms, last ${r.lastMs} ms`);
  if (r.abort !== "AbortError" || r.abortSeen !== 2) problems.push(`abort: ${r.abort}/${r.abortSeen}`);
  if (r.badToken !== 16) problems.push(`bad token gave ${r.badToken}`);
  if (r.badPayload !== 3) problems.push(`bad payload gave ${r.badPayload}`);
  if (r.deadline !== 4 || !(r.deadlineChunks >= 1 && r.deadlineChunks < 10)) problems.push(`deadline gave ${r.deadline} after ${r.deadlineChunks}`);
  if (problems.length) console.log("FAIL:", problems.join("; "));
  else code = 0;
} finally {
  await browser.close();
}
process.exit(code);
