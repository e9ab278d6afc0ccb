// Drives herald's web console in Debian's Chromium, against a real herald over TLS with its
// generated certificate, and prints one line per check and a last line `N passed, M failed`.
//
// Usage: HERALD=target/debug/herald node check.js   (tests/ui/run.sh sets everything up)

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const HERALD = process.env.HERALD;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOTS = process.env.SCREENSHOTS || path.join(here, 'screenshots');
const PASSWORD = 'console-check-pw';
const ADMIN = 'rocketskates';
/** Chromium's flags for a sandbox-less, offline, quiet headless run. */
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
/** How long any condition may take before a check fails. */
const DEADLINE_MS = 10_000;

if (!HERALD) {
  console.error('set HERALD to the herald binary');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// herald under test

/** One `herald serve` process over TLS; start, kill and restart it on the same data directory. */
class Herald {
  constructor(name, extraArgs = []) {
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `herald-console-${name}-`));
    this.extraArgs = extraArgs;
    this.child = null;
    this.port = 0;
    this.log = '';
  }

  /** Starts on `port` (0 picks one) and resolves once herald logs where it listens. */
  async start(port = 0) {
    const args = ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', this.dataDir,
      '--cores', '1', ...this.extraArgs];
    const child = spawn(HERALD, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    child.stderr.setEncoding('utf8');
    const listening = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`herald did not listen within 30 s:\n${this.log}`)), 30_000);
      child.stderr.on('data', (chunk) => {
        this.log += chunk;
        const found = /listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(this.log);
        if (found) {
          clearTimeout(timer);
          resolve(Number(found[1]));
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`herald exited with ${code} before listening:\n${this.log}`));
      });
    });
    this.port = await listening;
    this.log = '';
    this.ca = fs.readFileSync(path.join(this.dataDir, 'tls', 'cert.pem'));
    this.agent = new https.Agent({ keepAlive: true, ca: this.ca });
    return this.port;
  }

  get origin() {
    return `https://127.0.0.1:${this.port}`;
  }

  async signal(name) {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(name);
    await exited;
    this.child = null;
    if (this.agent) this.agent.destroy();
  }

  /** SIGKILL: no goodbye to any client. */
  kill() {
    return this.signal('SIGKILL');
  }

  /** SIGTERM: a graceful stop. */
  stop() {
    return this.signal('SIGTERM');
  }

  /** One REST request as the admin (or with `auth`); resolves {status, headers, body}. */
  request(method, route, body, auth = `Basic ${Buffer.from(`${ADMIN}:${PASSWORD}`).toString('base64')}`) {
    return new Promise((resolve, reject) => {
      const request = https.request(`${this.origin}${route}`, {
        method, agent: this.agent, headers: { Authorization: auth, 'Content-Type': 'application/json' },
      }, (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => { text += chunk; });
        response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, body: text }));
      });
      request.on('error', reject);
      request.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  async json(route) {
    const answer = await this.request('GET', route);
    if (answer.status !== 200) throw new Error(`GET ${route}: ${answer.status} ${answer.body}`);
    return JSON.parse(answer.body);
  }

  /** Publishes events as the admin; resolves the Seq of the last one. */
  async publish(events) {
    const answer = await this.request('POST', '/api/v3/events', events);
    if (answer.status !== 204) throw new Error(`publish: ${answer.status} ${answer.body}`);
    return Number(answer.headers['herald-seq']);
  }
}

// ---------------------------------------------------------------------------------------------
// checks

const results = [];

async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push(true);
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    results.push(false);
    console.log(`FAIL ${name} (${Date.now() - started} ms)\n     ${String(error.stack || error).split('\n').slice(0, 6).join('\n     ')}`);
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

function equal(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

/** Polls `probe` until it returns a truthy value, or fails with `what` after the deadline. */
async function until(what, probe, deadline = DEADLINE_MS) {
  const end = Date.now() + deadline;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out after ${deadline} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const profileEvent = (key, extra = {}) => ({ Type: 'profiles', Action: 'save', Key: key, Object: { Name: key, ...extra } });

/** The Seqs of the event rows, top (newest) first. */
const shownSeqs = (page) => page.$$eval('#events-body tr[data-seq]', (rows) => rows.map((r) => Number(r.dataset.seq)));

async function login(page, password = PASSWORD) {
  await page.fill('#login-user', ADMIN);
  await page.fill('#login-password', password);
  await page.click('#login-submit');
}

async function watch(page, filter) {
  await page.fill('#filter', filter);
  await page.click('#filter-form button[type=submit]');
  await page.waitForFunction((f) => document.getElementById('events-note').textContent === `Watching ${f}.`, filter);
}

async function screenshot(page, name) {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(viewport);
    // Two frames, so the layout has followed the new size.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, `the ${name} page is ${overflow}px wider than a ${viewport.width}px viewport`);
    await page.screenshot({ path: path.join(SCREENSHOTS, `${name}-${size}.png`) });
  }
  await page.setViewportSize(DESKTOP);
}

async function main() {
  const herald = new Herald('main', ['--admin-password', PASSWORD]);
  await herald.start();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: DESKTOP });
  const page = await context.newPage();
  page.setDefaultTimeout(DEADLINE_MS);

  // Everything the page asks for, and anything it complains about, for the origin checks.
  const requested = [];
  const complaints = [];
  page.on('request', (request) => requested.push(request.url()));
  page.on('websocket', (socket) => requested.push(socket.url()));
  page.on('pageerror', (error) => complaints.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content.Security.Policy|Refused to/i.test(message.text())) {
      complaints.push(`console: ${message.text()}`);
    }
  });

  const origin = herald.origin;
  let firstResponse;

  await check('the root redirects to the console, which carries a strict Content-Security-Policy', async () => {
    firstResponse = await page.goto(`${origin}/`);
    equal(new URL(page.url()).pathname, '/ui/', 'the page after the redirect');
    const headers = firstResponse.headers();
    const csp = headers['content-security-policy'] || '';
    for (const directive of ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", `wss://127.0.0.1:${herald.port}`]) {
      assert(csp.includes(directive), `the policy ${JSON.stringify(csp)} lacks ${directive}`);
    }
    assert(!csp.includes('unsafe'), `the policy allows something unsafe: ${csp}`);
    equal(headers['content-type'], 'text/html; charset=utf-8', 'the page\'s content type');
    equal(headers['x-content-type-options'], 'nosniff', 'X-Content-Type-Options');
  });

  await check('the login page is shown first and keyboard reachable', async () => {
    await page.waitForSelector('#page-login:not([hidden])');
    await screenshot(page, 'login');
    await page.focus('#login-user');
    await page.keyboard.press('Tab');
    equal(await page.evaluate(() => document.activeElement.id), 'login-password', 'focus after the user field');
    await page.keyboard.press('Tab');
    equal(await page.evaluate(() => document.activeElement.id), 'login-submit', 'focus after the password');
  });

  await check('a wrong password is refused with a clear message', async () => {
    await login(page, 'not-the-password');
    await page.waitForSelector('#login-message:not([hidden])');
    equal(await page.textContent('#login-message'), 'Wrong user name or password.', 'the message');
    assert(await page.isVisible('#page-login'), 'still on the login page');
  });

  await check('logging in keeps only a token, and only in the tab\'s session storage', async () => {
    await login(page);
    await page.waitForSelector('#page-events:not([hidden])');
    await page.waitForSelector('#link[data-state="live"]');
    const stored = await page.evaluate(() => ({
      session: { ...sessionStorage },
      local: localStorage.length,
      cookies: document.cookie,
    }));
    const saved = JSON.parse(stored.session['herald.session'] || 'null');
    assert(saved && typeof saved.token === 'string' && saved.token.length > 20, `no token stored: ${JSON.stringify(stored)}`);
    assert(!JSON.stringify(stored).includes(PASSWORD), 'the password is stored');
    equal(stored.local, 0, 'entries in localStorage');
    equal(stored.cookies, '', 'cookies');
    const banner = await page.isVisible('#banner');
    equal(banner, false, 'a default-password warning on a server with its own password');
  });

  let lastSeen = 0;
  await check('a registered filter shows a published event within 1 s with the right Seq', async () => {
    await watch(page, 'profiles.*.*');
    // Events of other types must not appear under this filter.
    await herald.publish({ Type: 'machines', Action: 'save', Key: 'other', Object: {} });
    const seq = await herald.publish(profileEvent('console-first'));
    const published = Date.now();
    await page.waitForSelector(`#events-body tr[data-seq="${seq}"]`, { timeout: 1000 });
    const shownAfter = Date.now() - published;
    assert(shownAfter <= 1000, `the row took ${shownAfter} ms`);
    const cells = await page.$$eval(`#events-body tr[data-seq="${seq}"] td`, (tds) => tds.map((td) => td.textContent));
    equal(cells.slice(1), ['profiles', 'save', 'console-first', `user:${ADMIN}`, String(seq)], 'the row');
    equal(await shownSeqs(page), [seq], 'the rows under profiles.*.*');
    lastSeen = seq;
  });

  await check('a row opens to the whole event as JSON, by mouse and by keyboard', async () => {
    await page.click(`#events-body tr[data-seq="${lastSeen}"]`);
    const text = await page.textContent('#events-body tr.detail pre');
    const event = JSON.parse(text);
    equal([event.Seq, event.Object.Name, event.Principal], [lastSeen, 'console-first', `user:${ADMIN}`], 'the JSON shown');
    await page.focus(`#events-body tr[data-seq="${lastSeen}"]`);
    await page.keyboard.press('Enter');
    equal(await page.$$eval('#events-body tr.detail', (rows) => rows.length), 0, 'details after Enter closes them');
  });

  await check('pausing counts the events skipped meanwhile, and resuming shows them in order', async () => {
    await page.click('#pause');
    const seqs = [];
    for (const key of ['paused-1', 'paused-2', 'paused-3']) seqs.push(await herald.publish(profileEvent(key)));
    await page.waitForFunction(() => document.getElementById('skipped').dataset.count === '3');
    equal(await page.textContent('#skipped'), '3 skipped while paused', 'the counter');
    equal(await shownSeqs(page), [lastSeen], 'the rows while paused');
    await page.click('#pause');
    await page.waitForSelector(`#events-body tr[data-seq="${seqs[2]}"]`);
    equal(await shownSeqs(page), [seqs[2], seqs[1], seqs[0], lastSeen], 'the rows after resuming');
    assert(await page.isHidden('#skipped'), 'the counter is hidden after resuming');
    lastSeen = seqs[2];
  });

  await check('replay from a Seq shows exactly the log\'s matching events after it', async () => {
    const fromLog = await herald.json('/api/v3/events?since=0&filter=profiles.*.*');
    const after = fromLog[1].Seq;
    await page.fill('#replay-seq', String(after));
    await page.click('#replay-form button');
    const expected = fromLog.filter((e) => e.Seq > after).map((e) => e.Seq).reverse();
    await until('the replayed rows', async () => JSON.stringify(await shownSeqs(page)) === JSON.stringify(expected));
  });

  await check('replay since a time starts at the first event at or after it', async () => {
    const fromLog = await herald.json('/api/v3/events?since=0&filter=profiles.*.*');
    // A time between the first two profile events: only the later ones come back.
    const second = fromLog[1];
    const at = new Date(Date.parse(second.Time.replace(/(\.\d{3})\d+/, '$1')));
    const local = new Date(at.getTime() - at.getTimezoneOffset() * 60_000).toISOString().slice(0, 19);
    // datetime-local takes whole seconds: the first event in that second comes back as well.
    const expected = fromLog.filter((e) => Date.parse(e.Time.replace(/(\.\d{3})\d+/, '$1')) >= Math.floor(at.getTime() / 1000) * 1000)
      .map((e) => e.Seq).reverse();
    await page.fill('#since-time', local);
    await page.click('#since-form button');
    await until('the rows since that time', async () => JSON.stringify(await shownSeqs(page)) === JSON.stringify(expected));
  });

  await check('a wrong filter shows herald\'s own error text', async () => {
    await page.fill('#filter', 'profiles.save');
    await page.waitForSelector('#filter-error[data-source="console"]:not([hidden])');
    await page.click('#filter-form button[type=submit]');
    await page.waitForSelector('#filter-error[data-source="herald"]');
    const shown = await page.textContent('#filter-error');
    // What herald itself answers to the same command on a websocket of its own.
    const heralds = await page.evaluate(() => new Promise((resolve, reject) => {
      const { token } = JSON.parse(sessionStorage.getItem('herald.session'));
      const socket = new WebSocket(`wss://${location.host}/api/v3/ws?token=${encodeURIComponent(token)}`);
      socket.onopen = () => socket.send('register profiles.save');
      socket.onmessage = (m) => { socket.close(); resolve(JSON.parse(m.data).Object.Messages[0]); };
      socket.onerror = () => reject(new Error('websocket failed'));
    }));
    equal(shown, `herald refused it: ${heralds}`, 'the error shown');
    assert(heralds.includes('has 2 fields'), `herald's text: ${heralds}`);
    await watch(page, 'profiles.*.*');
    await page.waitForSelector('#filter-error', { state: 'hidden' });
  });

  await check('the page resumes by itself after herald is killed and restarted, each event once', async () => {
    const before = await herald.publish(profileEvent('before-kill'));
    await page.waitForSelector(`#events-body tr[data-seq="${before}"]`);
    const port = herald.port;
    await herald.kill();
    await page.waitForSelector('#link[data-state="reconnecting"]');
    // Published while the page cannot reach herald: a second herald on the same log, elsewhere.
    await herald.start(0);
    const meanwhile = [];
    for (let i = 1; i <= 5; i += 1) meanwhile.push(await herald.publish(profileEvent(`meanwhile-${i}`)));
    await herald.stop();
    await herald.start(port);
    await page.waitForSelector('#link[data-state="live"]', { timeout: 20_000 });
    const after = [await herald.publish(profileEvent('after-restart'))];
    const expected = [...meanwhile, ...after];
    await until('the events published meanwhile', async () => {
      const seqs = await shownSeqs(page);
      return expected.every((s) => seqs.includes(s));
    });
    const seqs = await shownSeqs(page);
    equal(seqs.length, new Set(seqs).size, `no Seq twice (${seqs})`);
    const newer = seqs.filter((s) => s > before).reverse();
    equal(newer, expected, 'the rows after the restart');
    // Bookmarks may have moved the resume point past `before`, never past what came meanwhile.
    const note = await page.textContent('#events-note');
    const resumed = /resumed after Seq (\d+) with nothing missed/.exec(note);
    assert(resumed && Number(resumed[1]) >= before && Number(resumed[1]) < meanwhile[0], `the note: ${note}`);
    lastSeen = after[0];
  });

  await check('the events page is drawn at both sizes and in dark mode', async () => {
    await herald.publish([
      { Type: 'machines', Action: 'update', Key: 'b2c5f1c6-1f1a-4d3e-9a57-8d0d4c1f7e21', Object: { Runnable: true } },
      profileEvent('global', { Params: { bar: 'blatz' } }),
    ]);
    await watch(page, '*.*.*');
    await page.fill('#replay-seq', '0');
    await page.click('#replay-form button');
    await until('a screenful of rows', async () => (await shownSeqs(page)).length >= 10);
    await page.click('#events-body tr[data-seq]:nth-child(3)');
    await screenshot(page, 'events');
    const light = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.emulateMedia({ colorScheme: 'dark' });
    const dark = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert(light !== dark, `the background is ${light} in both modes`);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'events-dark.png') });
    await page.emulateMedia({ colorScheme: 'light' });
  });

  await check('the connections table shows the browser\'s own websocket', async () => {
    await page.click('.nav a[data-page="connections"]');
    await page.waitForSelector('#page-connections:not([hidden])');
    const live = await herald.json('/api/v3/connections');
    const mine = live.filter((c) => c.Type === 'websocket' && c.Principal === `user:${ADMIN}` && c.Filters.includes('*.*.*'));
    equal(mine.length, 1, 'websockets of the console listed by herald');
    await page.waitForSelector(`#conn-body tr[data-type="websocket"][data-remote="${mine[0].RemoteAddr}"]`);
    const row = await page.$$eval(`#conn-body tr[data-remote="${mine[0].RemoteAddr}"] td`, (tds) => tds.map((td) => td.textContent));
    equal([row[0], row[1], row[3]], [`user:${ADMIN}`, 'websocket', '*.*.*'], 'the row');
    await page.fill('#conn-search', 'websocket');
    await until('the search', async () => (await page.$$('#conn-body tr[data-type="api"]')).length === 0);
    await page.fill('#conn-search', '');
    await page.click('#conn-table th[data-key="EventsSent"] button');
    equal(await page.getAttribute('#conn-table th[data-key="EventsSent"]', 'aria-sort'), 'descending', 'the sort');
  });

  await check('a principal\'s history lists its closed connections with their close reasons', async () => {
    await page.click(`#conn-body button[data-principal="user:${ADMIN}"]`);
    await page.waitForSelector('#history:not([hidden])');
    const fromHerald = await herald.json(`/api/v3/connections/history?principal=${encodeURIComponent(`user:${ADMIN}`)}&limit=50`);
    assert(fromHerald.some((c) => c.CloseReason === 'server crashed'), 'herald recorded the kill');
    await until('the history rows', async () => (await page.$$('#history-body tr')).length === fromHerald.length);
    const reasons = await page.$$eval('#history-body tr td:nth-child(6)', (tds) => tds.map((td) => td.textContent));
    equal(reasons, fromHerald.map((c) => c.CloseReason), 'the close reasons');
    await screenshot(page, 'connections');
  });

  await check('the health page\'s numbers match /api/v3/info', async () => {
    await page.click('.nav a[data-page="health"]');
    await page.waitForSelector('#health-facts .fact[data-field="LastSeq"]');
    const value = (field) => page.getAttribute(`#health-facts .fact[data-field="${field}"] dd`, 'data-value');
    await until('the page and /api/v3/info to agree', async () => {
      const info = await herald.json('/api/v3/info');
      const shown = {};
      for (const field of ['FirstSeq', 'LastSeq', 'Epoch', 'Durability', 'Driver', 'Cores']) shown[field] = await value(field);
      const expected = {
        FirstSeq: String(info.FirstSeq), LastSeq: String(info.LastSeq), Epoch: info.Epoch,
        Durability: info.Durability, Driver: info.Driver, Cores: String(info.Cores),
      };
      return JSON.stringify(shown) === JSON.stringify(expected);
    });
    // A few seconds of traffic at a changing rate, so the charts have a shape to show.
    const started = Date.now();
    for (let second = 0; second < 6; second += 1) {
      const batch = Array.from({ length: 20 + 40 * (second % 3) }, (_, i) => ({ Type: 'machines', Action: 'update', Key: `m-${i}`, Object: {} }));
      await herald.publish(batch);
      await new Promise((resolve) => setTimeout(resolve, started + (second + 1) * 1000 - Date.now()));
    }
    await until('the charts', async () => (await page.$$('#chart-events polyline')).length === 2);
    await page.waitForTimeout(2100);
    await screenshot(page, 'health');
  });

  await check('the objects page shows a profile and its last events', async () => {
    const created = await herald.request('POST', '/api/v3/profiles', { Name: 'console-demo', Params: {} });
    equal(created.status, 201, 'creating the profile');
    for (const value of ['one', 'two']) {
      const set = await herald.request('POST', '/api/v3/profiles/console-demo/params/color', value);
      equal(set.status, 200, 'setting a param');
    }
    const fromLog = await herald.json(`/api/v3/events?since=0&filter=${encodeURIComponent('profiles.*.console-demo')}`);
    await page.click('.nav a[data-page="objects"]');
    await page.click('#object-kinds button[data-kind="profiles"]');
    await page.click('#object-list button[data-key="console-demo"]');
    await until('the object', async () => (await page.textContent('#object-view pre')).includes('"color": "two"'));
    await until('its last events', async () => {
      const seqs = await page.$$eval('#object-view tbody tr[data-seq]', (rows) => rows.map((r) => Number(r.dataset.seq)));
      return JSON.stringify(seqs) === JSON.stringify(fromLog.map((e) => e.Seq).reverse());
    });
    await screenshot(page, 'objects');
  });

  await check('no request of the page leaves herald\'s origin, and nothing broke the policy', async () => {
    assert(requested.length > 10, `only ${requested.length} requests were seen`);
    assert(requested.some((url) => url.startsWith('wss://')), `the websocket was not seen: ${requested}`);
    const elsewhere = requested.filter((url) => new URL(url).host !== `127.0.0.1:${herald.port}`);
    equal(elsewhere, [], 'requests to other origins');
    equal(complaints, [], 'errors and policy violations');
  });

  await check('an expired token sends the page back to the login with a message', async () => {
    const minted = await herald.json('/api/v3/users/rocketskates/token?ttl=1');
    const other = await context.newPage();
    await other.goto(`${origin}/ui/`);
    // The stored expiry is far off, so it is herald's answer that ends the session.
    await other.evaluate((token) => sessionStorage.setItem('herald.session',
      JSON.stringify({ user: 'rocketskates', token, expires: '2999-01-01T00:00:00Z' })), minted.Token);
    await until('the token to expire', async () => (await herald.request('GET', '/api/v3/info', undefined, `Bearer ${minted.Token}`)).status === 403);
    await other.reload();
    await other.waitForSelector('#page-login:not([hidden])');
    await other.waitForSelector('#login-message:not([hidden])');
    equal(await other.textContent('#login-message'), 'Your session has expired; log in again.', 'the message');
    await other.close();
  });

  await check('a server with DRP\'s default admin password is warned about after login', async () => {
    const open = new Herald('default');
    await open.start();
    const other = await context.newPage();
    try {
      await other.goto(`${open.origin}/ui/`);
      await login(other, 'r0cketsk8ts');
      await other.waitForSelector('#banner:not([hidden])');
      const text = await other.textContent('#banner');
      assert(text.includes('default password') && text.includes('--admin-password'), `the banner: ${text}`);
    } finally {
      await other.close();
      // Killed, not stopped: herald's graceful stop waits out its timeout for a TLS connection
      // that never sent a request, and Chromium leaves such preconnected sockets behind.
      await open.kill();
      fs.rmSync(open.dataDir, { recursive: true, force: true });
    }
  });

  await check('logging out forgets the token', async () => {
    await page.click('#logout');
    await page.waitForSelector('#page-login:not([hidden])');
    equal(await page.evaluate(() => sessionStorage.getItem('herald.session')), null, 'the stored session');
    await page.waitForSelector('#link[data-state="offline"]', { state: 'attached' });
  });

  await browser.close();
  await herald.stop();
  fs.rmSync(herald.dataDir, { recursive: true, force: true });
}

try {
  await main();
} catch (error) {
  console.log(`FAIL the checks could not run: ${error.stack || error}`);
  results.push(false);
}
const passed = results.filter(Boolean).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
process.exit(results.every(Boolean) && results.length > 0 ? 0 : 1);
