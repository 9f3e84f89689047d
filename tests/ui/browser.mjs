// The twin browser in a real Chromium, driven by Playwright (playwright-core
// with the system Chromium). Run by tests/ui.rs against a running demo:
//
//   node tests/ui/browser.mjs BASE_URL OUT_DIR CHROMIUM
//
// It prints `RESTART` when it wants the platform restarted and waits for a
// line `RESTARTED` on stdin. Any JavaScript error, console error, failed
// request or HTTP error on a page fails the run (exit code 1), except those a
// step expects. Screenshots and timings go to OUT_DIR.
import { chromium } from 'playwright-core';
import { writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';

const [base, out, exe] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
rmSync(`${out}/failure.png`, { force: true });
const problems = [];
const timings = {};
let allow = () => false; // what the current step expects to fail
const lines = createInterface({ input: process.stdin });
const stdinLines = [];
let stdinWaiter = null;
lines.on('line', (l) => { stdinLines.push(l); if (stdinWaiter) stdinWaiter(); });

function check(cond, msg) { if (!cond) throw new Error('check failed: ' + msg); }
function log(...a) { console.log('[ui]', ...a); }

const browser = await chromium.launch({
  executablePath: exe, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
page.on('pageerror', (e) => problems.push('JavaScript error: ' + e.message));
page.on('console', (m) => { if (m.type() === 'error' && !allow(m.text())) problems.push('console error: ' + m.text()); });
page.on('requestfailed', (r) => {
  const why = r.failure() ? r.failure().errorText : '';
  // Leaving a page closes its live stream: that abort is expected.
  if (why === 'net::ERR_ABORTED' && r.url().includes('/api/stream')) return;
  if (!allow(r.url())) problems.push('request failed: ' + r.url() + ' ' + why);
});
page.on('response', (r) => { if (r.status() >= 400 && !allow(r.url())) problems.push('HTTP ' + r.status() + ': ' + r.url()); });

async function shot(name) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${out}/${name}.png`, fullPage: true });
}
async function api(path, opts) {
  const r = await fetch(base + path, opts);
  const body = await r.json();
  if (!r.ok) throw new Error(path + ': ' + JSON.stringify(body));
  return body;
}
async function sql(q) { return (await api('/api/sql', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sql: q }) })).rows; }
const pct = (v) => (v === null || v === undefined ? '–' : (v * 100).toFixed(1) + ' %');
/** A page opened afresh (as from a bookmark): time from navigation start to
 * its first paint and to `selector` (its content) being there. */
async function firstPaint(hash, selector, mark) {
  await page.goto('about:blank');
  await page.goto(base + '/' + hash);
  await page.waitForSelector(selector, { timeout: 10000 });
  return page.evaluate((m) => {
    const p = performance.getEntriesByName('first-contentful-paint')[0];
    const c = performance.getEntriesByName(m)[0];
    return { first_contentful_paint_ms: p ? p.startTime : null, content_ms: c ? c.startTime : null };
  }, mark);
}

try {
  // 1. The overview during a demo run shows both plants, tiles and OEE.
  timings.overview = await firstPaint('#/', '.tile', 'ironlake:overview');
  await page.waitForSelector('section[data-plant="plant-a"]');
  await page.waitForSelector('section[data-plant="plant-b"]');
  const tiles = await page.locator('.tile').count();
  check(tiles === 17, 'the demo has 17 machine tiles, saw ' + tiles);
  await page.waitForSelector('td[data-oee="current"] b');
  await page.waitForTimeout(1500);
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(await overflow() <= 0, 'the overview is no wider than the window (a very long machine name wraps)');
  await shot('overview');
  log('overview ok', JSON.stringify(timings.overview));

  // 2. A machine page: live values change within 3 seconds.
  timings.machine = await firstPaint('#/machine/mill-a1', 'tr[data-signal="spindle_speed"] td[data-value]', 'ironlake:machine');
  const values = () => page.evaluate(() => [...document.querySelectorAll('td[data-value]')].map((t) => t.dataset.value).join('|'));
  const before = await values();
  const t0 = Date.now();
  await page.waitForFunction((b) => [...document.querySelectorAll('td[data-value]')].map((t) => t.dataset.value).join('|') !== b, before, { timeout: 3000 });
  timings.live_value_change_ms = Date.now() - t0;
  log('live value changed after', timings.live_value_change_ms, 'ms');

  // 3. A chart over the last 15 minutes.
  await page.click('tr[data-signal="spindle_speed"]');
  await page.click('button[data-range="15m"]');
  await page.waitForFunction(() => {
    const c = document.querySelector('.chart');
    return c && c.querySelector('canvas') && Number(c.dataset.buckets) > 0 && location.hash.includes('range=15m');
  }, null, { timeout: 10000 });
  timings.chart_15m_ms = Number(await page.getAttribute('.chart', 'data-draw-ms'));
  // The shipped champion's prediction (a feature row closes every 10 s).
  await page.waitForFunction(() => {
    const k = document.querySelectorAll('.prediction .kpi .v');
    return k.length === 4 && k[0].textContent !== '–' && k[2].textContent.endsWith(' h') && k[3].textContent.endsWith(' kW');
  }, null, { timeout: 30000 });
  const predText = await page.textContent('.prediction');
  check(predText.includes('cnc_mill_failure v1 (champion)'), 'the machine page names the serving model');
  check(predText.includes('cnc_mill_energy v1 (champion)') && predText.includes('expected'), 'the machine page shows the energy baseline\'s expected power');
  // Model monitoring under the prediction: the drift check and past quality (none yet in a fresh demo).
  await page.waitForFunction(() => ((document.querySelector('.monitor') || {}).textContent || '').includes('drift'), null, { timeout: 30000 });
  await page.waitForTimeout(500);
  await shot('machine');
  log('chart ok', timings.chart_15m_ms, 'ms');

  // 4. Acknowledge an alarm (the stuck temperature sensor of mill-a2), with
  // markup in the name and comment: shown as text, never run.
  await page.goto(base + '/#/machine/mill-a2');
  const ackSel = 'button[data-ack="mill-a2/temperature_sensor_stuck"]';
  await page.waitForSelector(ackSel, { timeout: 90000 });
  await page.click(ackSel);
  const who = '<img src=x onerror="window.__xss=1">Dana';
  const comment = '<script>window.__xss=2</script> sensor cable checked';
  await page.fill('dialog input[name="by"]', who);
  await page.fill('dialog textarea[name="comment"]', comment);
  await page.click('dialog button[type="submit"]');
  await page.waitForSelector('dialog', { state: 'detached' });
  await page.waitForFunction((w) => document.body.innerText.includes('✓ ' + w), who, { timeout: 5000 });
  check(await page.evaluate(() => window.__xss === undefined), 'typed markup ran');
  check(await page.locator('img[src="x"]').count() === 0, 'typed markup became an element');
  const al = await api('/api/alarms?asset=mill-a2&state=acknowledged');
  const a = al.alarms.find((x) => x.name === 'temperature_sensor_stuck');
  check(a && a.acknowledged.by === who && a.acknowledged.comment === comment, 'REST shows the acknowledgement: ' + JSON.stringify(al));
  let rows = [];
  for (let i = 0; i < 20 && !rows.length; i++) {
    rows = await sql("SELECT message FROM silver.asset_events WHERE kind = 'alarm_ack' AND asset_id = 'mill-a2'");
    if (!rows.length) await new Promise((r) => setTimeout(r, 500));
  }
  check(rows.length >= 1 && JSON.parse(rows[0].message).by === who, 'silver.asset_events holds the acknowledgement: ' + JSON.stringify(rows));
  await shot('machine-alarm-acknowledged');
  log('acknowledge ok');

  // 5. The shift report shows exactly gold.oee_shift's figures.
  let same = false; let seen = [];
  for (let attempt = 0; attempt < 20 && !same; attempt++) {
    await page.goto(base + '/#/report/plant-a');
    await page.waitForSelector('#report td[data-oee]', { timeout: 30000 });
    const computed = Number(await page.getAttribute('#report', 'data-computed-at'));
    const start = Number(await page.getAttribute('#report', 'data-shift-start'));
    const gold = await sql(`SELECT asset_id, oee, CAST(computed_at AS BIGINT) / 1000 AS computed_at FROM gold.oee_shift WHERE plant = 'plant-a' AND shift_start = to_timestamp_micros(${start * 1000})`);
    seen.push([computed, gold.map((g) => g.computed_at)]);
    if (Math.max(...gold.map((g) => g.computed_at)) !== computed) continue; // recomputed in between
    check(gold.length >= 1, 'gold.oee_shift has rows for the shift');
    for (const g of gold) {
      const shown = await page.textContent(`#report td[data-oee="${g.asset_id}"]`);
      check(shown === pct(g.oee), `${g.asset_id}: page shows ${shown}, gold.oee_shift has ${pct(g.oee)}`);
    }
    same = true;
  }
  check(same, 'the report and gold.oee_shift were compared at one version: ' + JSON.stringify(seen));
  await shot('shift-report');
  log('shift report ok');

  // 6. The other pages.
  await page.goto(base + '/#/map/plant-a');
  await page.waitForSelector('svg.map g[data-asset="mill-a1"]');
  await shot('floor-map');
  await page.goto(base + '/#/alarms');
  await page.waitForSelector('main table, main .empty');
  await shot('alarms');
  await page.goto(base + '/#/health');
  await page.waitForSelector('tr[data-pipeline="oee_shift"]');
  const lag = await page.evaluate(() => [...document.querySelectorAll('.kpi')].find((k) => k.textContent.includes('lag')).querySelector('.v').textContent);
  check(/^[0-9.,]+ s$/.test(lag), 'the ingest lag is shown from /metrics, got ' + lag);
  await shot('data-health');

  // A machine whose name is longer than the screen is wide.
  await page.goto(base + '/#/machine/compressor-b1');
  await page.waitForSelector('h1');
  check((await page.textContent('h1')).startsWith('Compressor B1 of the north wall'), 'the long name is shown');
  check(await overflow() <= 0, 'the machine page is no wider than the window');
  await page.goto(base + '/#/map/plant-b');
  await page.waitForSelector('svg.map g[data-asset="compressor-b1"]');
  check(await overflow() <= 0, 'the floor map is no wider than the window');

  // 7. Search finds a machine by name and opens it.
  await page.fill('#search', 'dmu 65');
  await page.waitForSelector('#search-results li[data-id="mill-a3"]');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash.startsWith('#/machine/mill-a3'));
  log('search ok');

  // 8. Bad moments: an unknown asset, a shift with no gold rows yet.
  allow = (u) => u.includes('/api/assets/no-such-machine') || u.includes('404');
  await page.goto(base + '/#/machine/no-such-machine');
  await page.waitForSelector('.error-box');
  check((await page.textContent('.error-box')).includes('no asset “no-such-machine”'), 'unknown asset says so');
  await page.goto(base + '/#/report/plant-b?shift=' + (Date.now() - 20 * 86400e3));
  await page.waitForSelector('[data-empty="report"]');
  allow = () => false;

  // 9. The server goes away and comes back: the page says so, reconnects
  // by itself and catches up.
  await page.goto(base + '/#/machine/mill-a1');
  await page.waitForSelector('#conn.live');
  allow = () => true;
  console.log('RESTART');
  await page.waitForSelector('#banner:not([hidden])', { timeout: 15000 });
  check((await page.textContent('#banner')).includes('Lost the connection'), 'the page says the server is gone');
  await shot('server-gone');
  await new Promise((r) => { if (stdinLines.includes('RESTARTED')) r(); else stdinWaiter = () => { if (stdinLines.includes('RESTARTED')) r(); }; });
  await page.waitForSelector('#conn.live', { timeout: 30000 });
  await page.waitForSelector('#banner', { state: 'hidden', timeout: 5000 });
  allow = () => false;
  const after = await values();
  await page.waitForFunction((b) => [...document.querySelectorAll('td[data-value]')].map((t) => t.dataset.value).join('|') !== b, after, { timeout: 10000 });
  log('reconnect ok');
} catch (e) {
  problems.push(String(e && e.stack ? e.stack : e));
  try { await shot('failure'); } catch (_) { /* ignore */ }
}
writeFileSync(`${out}/timings.json`, JSON.stringify(timings, null, 2));
await browser.close();
lines.close();
if (problems.length) {
  for (const p of problems) console.log('PROBLEM', p);
  process.exit(1);
}
log('all checks passed', JSON.stringify(timings));
process.exit(0);
