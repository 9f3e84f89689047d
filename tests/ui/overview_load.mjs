// How the twin browser behaves under load, in Chromium (a benchmark, not a
// test: it reports, it asserts nothing). Start a platform with many machines
// first, e.g.
//
//   ironlake bench live --machines 500 --seconds 120 --http 127.0.0.1:18081 --backfill-day
//   node tests/ui/overview_load.mjs http://127.0.0.1:18081 20 [machine-id]
//
// It opens the overview afresh and reports its first paint and the time
// until every tile is there, then watches it for SECONDS while live events
// arrive: events applied a second, long tasks (> 50 ms on the main thread),
// frame gaps (p50 / p99 / max between animation frames), and script heap.
// With a machine id it then opens that machine's page with a 24-hour chart
// and reports the time to fetch and draw it.
import { chromium } from 'playwright-core';

const [base, secondsArg, machine] = process.argv.slice(2);
const seconds = Number(secondsArg || 20);
const exe = process.env.IRONLAKE_CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath: exe, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const errors = [];
page.on('pageerror', (e) => errors.push(e.message));
await page.addInitScript(() => {
  window.__long = [];
  new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({ entryTypes: ['longtask'] });
});
await page.goto(base + '/#/');
await page.waitForSelector('.tile');
const tiles = await page.locator('.tile').count();
const first = await page.evaluate(() => ({
  first_contentful_paint_ms: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
  // Navigation start to every tile in the DOM (a mark the page sets).
  tiles_ms: (performance.getEntriesByName('ironlake:overview')[0] || {}).startTime,
}));
// Watch: count live events applied (tile state changes) and frame gaps.
const watch = await page.evaluate(async (secs) => {
  let changes = 0;
  const mo = new MutationObserver((ms) => { for (const m of ms) if (m.attributeName === 'data-state') changes++; });
  document.querySelectorAll('.tile').forEach((t) => mo.observe(t, { attributes: true, attributeFilter: ['data-state'] }));
  const gaps = [];
  let last = performance.now();
  const long0 = window.__long.length;
  await new Promise((done) => {
    const end = last + secs * 1000;
    function frame(t) { gaps.push(t - last); last = t; if (t < end) requestAnimationFrame(frame); else done(); }
    requestAnimationFrame(frame);
  });
  mo.disconnect();
  gaps.sort((a, b) => a - b);
  const q = (p) => gaps[Math.min(gaps.length - 1, Math.floor(p * gaps.length))];
  const long = window.__long.slice(long0);
  return {
    state_changes_per_s: changes / secs,
    frames: gaps.length,
    frame_gap_ms: { p50: q(0.5), p99: q(0.99), max: gaps[gaps.length - 1] },
    long_tasks: long.length,
    long_task_ms_total: long.reduce((s, x) => s + x, 0),
    heap_mb: performance.memory ? performance.memory.usedJSHeapSize / 1e6 : null,
  };
}, seconds);
const out = { tiles, ...first, ...watch };
if (machine) {
  await page.goto('about:blank');
  const t0 = Date.now();
  await page.goto(`${base}/#/machine/${encodeURIComponent(machine)}?signal=s1&range=24h`);
  await page.waitForFunction(() => { const c = document.querySelector('.chart'); return c && c.dataset.drawMs; }, null, { timeout: 30000 });
  out.machine_page = {
    day_chart_fetch_and_draw_ms: Number(await page.getAttribute('.chart', 'data-draw-ms')),
    buckets: Number(await page.getAttribute('.chart', 'data-buckets')),
    wall_ms: Date.now() - t0,
  };
}
out.errors = errors;
console.log(JSON.stringify(out, null, 2));
await browser.close();
