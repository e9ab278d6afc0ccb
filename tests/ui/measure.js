// Measures how fast an event stream the Events page can show and stay responsive: herald
// (over TLS) delivers N events a second to the page while the page counts its animation frames.
// Not part of the checks: it takes about a minute and its figures depend on the machine.
//
// Usage: HERALD=target/release/herald node measure.js [rate …]   (default rates below)

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const HERALD = process.env.HERALD;
const PASSWORD = 'console-measure-pw';
const RATES = process.argv.slice(2).map(Number).filter((n) => n > 0);
const rates = RATES.length ? RATES : [1000, 2000, 5000, 10000, 20000, 40000];
/** Seconds of load per rate, and the window in its middle where frames are counted. */
const LOAD_SECONDS = 6;
const MEASURE_MS = 4000;
/** Publishes go out this often, each with rate × tick events. */
const TICK_MS = 50;

if (!HERALD) {
  console.error('set HERALD to the herald binary');
  process.exit(2);
}

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-measure-'));
const herald = spawn(HERALD, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir,
  '--admin-password', PASSWORD, '--log-level', 'warn,herald::server=info'], { stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
herald.stderr.setEncoding('utf8');
const port = await new Promise((resolve, reject) => {
  herald.stderr.on('data', (chunk) => {
    log += chunk;
    const found = /listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(log);
    if (found) resolve(Number(found[1]));
  });
  herald.on('exit', () => reject(new Error(log)));
});
const origin = `https://127.0.0.1:${port}`;
const agent = new https.Agent({ keepAlive: true, maxSockets: 4, rejectUnauthorized: false });
const auth = `Basic ${Buffer.from(`rocketskates:${PASSWORD}`).toString('base64')}`;

function publish(events) {
  return new Promise((resolve, reject) => {
    const request = https.request(`${origin}/api/v3/events`, {
      method: 'POST', agent, headers: { Authorization: auth, 'Content-Type': 'application/json' },
    }, (response) => {
      response.resume();
      response.on('end', () => (response.statusCode === 204 ? resolve() : reject(new Error(`publish: ${response.statusCode}`))));
    });
    request.on('error', reject);
    request.end(JSON.stringify(events));
  });
}

/** Publishes at `rate` events a second for `seconds`, in ticks; resolves the events sent. */
async function load(rate, seconds) {
  const perTick = Math.max(1, Math.round((rate * TICK_MS) / 1000));
  const start = Date.now();
  let sent = 0;
  for (let tick = 0; Date.now() - start < seconds * 1000; tick += 1) {
    const events = Array.from({ length: perTick }, (_, i) => ({
      Type: 'load', Action: 'update', Key: `machine-${(sent + i) % 1000}`,
      Object: { Name: `machine-${(sent + i) % 1000}`, Runnable: true, Stage: 'discover', Params: { tick } },
    }));
    await publish(events);
    sent += perTick;
    const wait = start + (tick + 1) * TICK_MS - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
  return sent / ((Date.now() - start) / 1000);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await (await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } })).newPage();
await page.goto(`${origin}/ui/`);
await page.fill('#login-password', PASSWORD);
await page.click('#login-submit');
await page.waitForSelector('#link[data-state="live"]');
if (process.env.KEEP) await page.selectOption('#keep', process.env.KEEP);
await page.fill('#filter', 'load.*.*');
await page.click('#filter-form button[type=submit]');
await page.waitForFunction(() => document.getElementById('events-note').textContent.startsWith('Watching'));

console.log('rate asked | published/s | shown by page/s | frames/s | longest frame | slow-consumer closes');
const results = [];
const closes = async () => JSON.parse(await page.evaluate(async () => {
  const { token } = JSON.parse(sessionStorage.getItem('herald.session'));
  return (await fetch('/api/v3/info/activity?after=18446744073709551615', { headers: { Authorization: `Bearer ${token}` } })).text();
})).SlowConsumerCloses;
for (const rate of rates) {
  const received = () => page.evaluate(() => Number(document.getElementById('received').textContent.replace(/,/g, '')));
  const closedBefore = await closes();
  const loading = load(rate, LOAD_SECONDS);
  await page.waitForTimeout(1000);
  const before = await received();
  // Frames counted inside the page: how often it got to draw while the events poured in.
  const frames = await page.evaluate((ms) => new Promise((resolve) => {
    let count = 0;
    let longest = 0;
    let last = performance.now();
    const start = last;
    function frame(now) {
      count += 1;
      longest = Math.max(longest, now - last);
      last = now;
      if (now - start < ms) requestAnimationFrame(frame);
      else resolve({ fps: (count * 1000) / (now - start), longest, elapsed: now - start });
    }
    requestAnimationFrame(frame);
  }), MEASURE_MS);
  const after = await received();
  const published = await loading;
  const closed = (await closes()) - closedBefore;
  const shown = ((after - before) * 1000) / frames.elapsed;
  results.push({ rate, published, shown, ...frames, closed });
  console.log(`${rate} | ${Math.round(published)} | ${Math.round(shown)} | ${frames.fps.toFixed(1)} | ${Math.round(frames.longest)} ms | ${closed}`);
  // Let the page and herald settle before the next rate.
  await page.waitForTimeout(2000);
}

// Responsive: at least 30 frames a second, no frame over 200 ms, and keeping up (no close).
const responsive = results.filter((r) => r.fps >= 30 && r.longest <= 200 && r.closed === 0 && r.shown >= 0.9 * r.published);
const best = responsive.length ? responsive[responsive.length - 1] : null;
console.log(best
  ? `largest responsive rate: ${Math.round(best.published)} events/s shown at ${best.fps.toFixed(1)} frames/s (longest frame ${Math.round(best.longest)} ms)`
  : 'no rate kept the page at 30 frames/s');
await browser.close();
herald.kill('SIGTERM');
await new Promise((resolve) => herald.on('exit', resolve));
fs.rmSync(dataDir, { recursive: true, force: true });
