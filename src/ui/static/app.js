// ironlake twin browser: a single page over the public REST API and the live
// stream (GET /api/stream). No framework: pages build DOM nodes and keep a
// handle on each node a live event updates, so an event repaints one tile or
// one row, never the page. Text from the server or from users goes into the
// DOM as text (textContent), never as markup.
'use strict';

// ---------- small helpers ----------
const $ = (sel, root = document) => root.querySelector(sel);
const STATES = ['RUNNING', 'IDLE', 'DOWN', 'SETUP', 'UNKNOWN', 'DISCONNECTED'];
const STATE_COLOR = {
  RUNNING: 'var(--running)', IDLE: 'var(--idle)', DOWN: 'var(--down)', SETUP: 'var(--setup)',
  UNKNOWN: 'var(--unknown)', DISCONNECTED: 'var(--disconnected)', 'NO DATA': '#e6e9ee',
};
const SEVERITIES = ['critical', 'warning', 'info'];

/** Build an element: el('div', {class: 'x', onclick: f}, 'text', child, [children]). */
function el(tag, attrs, ...kids) {
  const ns = ['svg', 'g', 'rect', 'circle', 'polygon', 'text', 'title', 'line', 'path'].includes(tag)
    ? 'http://www.w3.org/2000/svg' : null;
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else if (k === 'style' && typeof v === 'object') {
      for (const [sk, sv] of Object.entries(v)) {
        if (sk.startsWith('--')) e.style.setProperty(sk, sv); else e.style[sk] = sv;
      }
    }
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, kids);
  return e;
}
function append(e, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}
function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
/** Replace the children of `e` (nulls skipped, arrays flattened). */
function fill(e, ...kids) { return append(clear(e), kids); }

const fmt = {
  num(v, d = 1) {
    if (v === null || v === undefined || Number.isNaN(v)) return '–';
    const a = Math.abs(v);
    const digits = a >= 1000 ? 0 : a >= 100 ? Math.min(d, 1) : a >= 1 ? d : Math.max(d, 3);
    return Number(v).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  },
  int(v) { return v === null || v === undefined ? '–' : Math.round(v).toLocaleString('en-US'); },
  pct(v) { return v === null || v === undefined ? '–' : (v * 100).toFixed(1) + ' %'; },
  min(ms) { return ms === null || ms === undefined ? '–' : (ms / 60000).toFixed(1) + ' min'; },
  time(ms, tz) {
    if (!ms) return '–';
    return new Date(ms).toLocaleString('en-GB', { timeZone: tz || undefined, hour: '2-digit', minute: '2-digit', second: '2-digit', day: '2-digit', month: 'short' });
  },
  clock(ms, tz) {
    if (!ms) return '–';
    return new Date(ms).toLocaleTimeString('en-GB', { timeZone: tz || undefined, hour: '2-digit', minute: '2-digit' });
  },
  ago(ms) {
    if (!ms) return 'never';
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 90) return Math.round(s) + ' s ago';
    if (s < 5400) return Math.round(s / 60) + ' min ago';
    if (s < 172800) return Math.round(s / 3600) + ' h ago';
    return Math.round(s / 86400) + ' days ago';
  },
};

class ApiError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}
/** JSON from the REST API; errors carry the server's message. A read the
 * server refused as busy (503 with Retry-After) is retried twice. */
async function api(path, opts = {}, attempt = 0) {
  let r;
  try {
    r = await fetch(path, { headers: { accept: 'application/json', ...(opts.headers || {}) }, ...opts });
  } catch (e) {
    throw new ApiError(0, 'ironlake is not reachable (' + e.message + ')');
  }
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (r.status === 503 && r.headers.get('retry-after') && !opts.method && attempt < 2) {
    await new Promise((res) => setTimeout(res, 1000));
    return api(path, opts, attempt + 1);
  }
  if (!r.ok) throw new ApiError(r.status, (body && body.error) || ('HTTP ' + r.status));
  return body;
}
/** Like api(), but a failure becomes null (for optional parts of a page). */
async function maybe(path) { try { return await api(path); } catch (_) { return null; } }

// ---------- application state shared by pages ----------
const app = {
  plants: null,        // GET /api/plants
  cleanup: [],         // run when leaving a page
  route: null,
  operator: localStorage.getItem('ironlake.operator') || '',
};
function plantOf(id) { return (app.plants || []).find((p) => p.id === id); }
function tzOf(plantId) { const p = plantOf(plantId); return p ? p.timezone : undefined; }
function onLeave(f) { app.cleanup.push(f); }

function setBanner(text, kind) {
  const b = $('#banner');
  if (!text) { b.hidden = true; return; }
  b.hidden = false; b.className = kind || ''; b.textContent = text;
}
function setConn(state, text) {
  const c = $('#conn');
  c.className = 'conn ' + state;
  c.textContent = text;
}

// ---------- the live stream ----------
/**
 * A subscription to GET /api/stream. `on.asset(ev)`, `on.values(ev)`, and
 * `on.resync()` (after a reconnection or a lag: reload what the page shows,
 * which is how the page catches up with what it missed).
 */
class Live {
  constructor(params, on) {
    this.url = '/api/stream?' + new URLSearchParams(params).toString();
    this.on = on; this.closed = false; this.connectedOnce = false; this.open();
  }
  open() {
    if (this.closed) return;
    const es = this.es = new EventSource(this.url);
    es.addEventListener('hello', () => {
      setConn('live', 'live');
      if (this.lost) setBanner(null);
      if (this.connectedOnce && this.on.resync) this.on.resync();
      this.connectedOnce = true; this.lost = false;
    });
    es.addEventListener('asset', (m) => this.on.asset && this.on.asset(JSON.parse(m.data)));
    es.addEventListener('values', (m) => this.on.values && this.on.values(JSON.parse(m.data)));
    es.addEventListener('resync', () => this.on.resync && this.on.resync());
    es.onerror = () => {
      if (this.closed) return;
      this.lost = true;
      setConn('down', 'reconnecting…');
      setBanner('Lost the connection to ironlake at ' + new Date().toLocaleTimeString('en-GB') + ' (your clock)' +
        '. Retrying; the page catches up by itself when the server is back.', 'error');
      if (es.readyState === EventSource.CLOSED) {
        // The server answered with an error (e.g. restarting): retry ourselves.
        setTimeout(() => { if (!this.closed && this.es === es) this.open(); }, 2000);
      }
    };
  }
  close() { this.closed = true; if (this.es) this.es.close(); }
}
function live(params, on) { const l = new Live(params, on); onLeave(() => l.close()); return l; }

// ---------- router ----------
const pages = {};
function parseRoute() {
  const h = location.hash.replace(/^#\/?/, '');
  const [path, query] = h.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || 'overview', arg: parts[1], params: new URLSearchParams(query || '') };
}
function href(page, arg, params) {
  let h = '#/' + page + (arg ? '/' + encodeURIComponent(arg) : '');
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString() : '';
  return q ? h + '?' + q : h;
}
async function render() {
  for (const f of app.cleanup.splice(0)) { try { f(); } catch (_) { /* ignore */ } }
  const prev = app.route;
  const r = app.route = parseRoute();
  if (!prev || prev.page !== r.page || prev.arg !== r.arg) window.scrollTo(0, 0);
  document.querySelectorAll('#top nav a').forEach((a) => a.classList.toggle('active', a.dataset.nav === r.page || (r.page === 'plant' && a.dataset.nav === 'overview')));
  // Every visit renders into a view of its own: a page still waiting for
  // the server when the user has moved on fills a view no longer shown,
  // never the page the user is on now.
  const view = el('div', { class: 'view' });
  fill($('#main'), view);
  const page = pages[r.page];
  if (!page) {
    fill(view, errorBox('There is no page “' + r.page + '”.', 'Go to the overview', '#/'));
    return;
  }
  try {
    if (!app.plants) app.plants = await api('/api/plants');
    await page(view, r);
  } catch (e) {
    fill(view, errorBox(e.message, 'Go to the overview', '#/'));
  }
}
function errorBox(msg, linkText, link) {
  return el('div', { class: 'error-box', role: 'alert' }, el('div', { text: msg }),
    link ? el('p', {}, el('a', { href: link, text: linkText })) : null);
}
function title(t) { document.title = t + ' · ironlake'; }

// ---------- pieces used by several pages ----------
function stateChip(state) { return el('span', { class: 'chip st-' + state, text: state }); }
function sevChip(sev) { return el('span', { class: 'chip sev-' + sev, text: sev }); }

function tree(plants, assets, dots) {
  const byLine = groupBy(assets, (a) => a.line);
  const root = el('ul');
  for (const p of plants) {
    const areas = el('ul');
    for (const area of p.areas) {
      const lines = el('ul');
      for (const l of (p.linesFull || []).filter((l) => l.area === area.id)) {
        const ms = el('ul');
        for (const a of byLine.get(l.id) || []) {
          const dot = el('span', { class: 'dot st-' + a.state, 'data-dot': a.id });
          if (dots) dots.set(a.id, dot);
          ms.append(el('li', {}, dot, el('a', { href: href('machine', a.id), text: a.name })));
        }
        lines.append(el('li', {}, el('span', { text: l.name }), ms));
      }
      areas.append(el('li', {}, el('span', { class: 'muted', text: area.name }), lines));
    }
    root.append(el('li', {}, el('a', { href: href('plant', p.id) }, el('b', { text: p.name })), areas));
  }
  return el('nav', { class: 'panel tree', 'aria-label': 'Plant tree' }, root);
}
function groupBy(xs, f) {
  const m = new Map();
  for (const x of xs) { const k = f(x); if (!m.has(k)) m.set(k, []); m.get(k).push(x); }
  return m;
}

// ---------- overview ----------
pages.overview = async (main, r) => overview(main, null);
pages.plant = async (main, r) => {
  if (!plantOf(r.arg)) throw new ApiError(404, 'Unknown plant “' + r.arg + '”.');
  return overview(main, r.arg);
};

async function overview(main, only) {
  title(only ? plantOf(only).name : 'Overview');
  const plants = only ? [plantOf(only)] : app.plants;
  const [assets, alarms, details] = await Promise.all([
    api('/api/assets' + (only ? '?plant=' + encodeURIComponent(only) : '')),
    maybe('/api/alarms?state=active' + (only ? '&plant=' + encodeURIComponent(only) : '')),
    Promise.all(plants.map((p) => api('/api/plants/' + encodeURIComponent(p.id)))),
  ]);
  plants.forEach((p, i) => { p.linesFull = details[i].lines; });
  const byId = new Map(assets.map((a) => [a.id, a]));
  const tiles = new Map(); // asset id -> tile element
  const counts = new Map(); // plant id -> {stateEl, alarmEl}
  const content = el('div');
  for (const p of plants) {
    const pa = assets.filter((a) => a.plant === p.id);
    const stateEl = el('div', { class: 'chips' });
    const alarmEl = el('div', { class: 'chips' });
    counts.set(p.id, { stateEl, alarmEl });
    const oeeBody = el('tbody', {}, el('tr', {}, el('td', { colspan: 9, class: 'muted', text: 'Loading OEE…' })));
    const sec = el('section', { class: 'panel', 'data-plant': p.id },
      el('div', { class: 'toolbar' }, el('h2', {}, el('a', { href: href('plant', p.id), text: p.name })),
        el('span', { class: 'muted small', text: p.timezone }),
        el('a', { class: 'small', href: href('map', p.id), text: 'floor map' }),
        el('a', { class: 'small', href: href('report', p.id), text: 'shift report' })),
      stateEl, alarmEl,
      el('table', { class: 'oee' }, el('thead', {}, el('tr', {},
        ['Line', 'Machines', 'Good parts (shift)', 'Rejects', 'OEE', 'Availability', 'Performance', 'Quality', 'OEE previous shift']
          .map((h, i) => el('th', { class: i > 0 ? 'num' : '', text: h })))), oeeBody));
    const byLine = groupBy(pa, (a) => a.line);
    for (const l of p.linesFull) {
      const box = el('div', { class: 'tiles' });
      for (const a of byLine.get(l.id) || []) {
        const t = tile(a);
        tiles.set(a.id, t);
        box.append(t);
      }
      sec.append(el('h3', { text: l.name }), box);
    }
    content.append(sec);
    loadOee(p, oeeBody);
  }
  const activeAlarms = new Map(); // asset id -> [alarms]
  for (const a of (alarms && alarms.alarms) || []) {
    if (!activeAlarms.has(a.asset)) activeAlarms.set(a.asset, []);
    activeAlarms.get(a.asset).push(a);
  }
  function recount() {
    for (const p of plants) {
      const c = counts.get(p.id);
      const pa = [...byId.values()].filter((a) => a.plant === p.id);
      fill(c.stateEl, ...STATES.map((s) => {
        const n = pa.filter((a) => a.state === s).length;
        return n ? el('span', { class: 'chip st-' + s, 'data-count': s, text: s + ' ' + n }) : null;
      }).filter(Boolean));
      const sev = { critical: 0, warning: 0, info: 0 };
      for (const a of pa) for (const al of activeAlarms.get(a.id) || []) sev[al.severity] = (sev[al.severity] || 0) + 1;
      const total = sev.critical + sev.warning + sev.info;
      fill(c.alarmEl, total
        ? [el('a', { href: href('alarms', null, { plant: p.id }), class: 'small', text: 'Active alarms:' }),
          ...SEVERITIES.filter((s) => sev[s]).map((s) => el('span', { class: 'chip sev-' + s, text: sev[s] + ' ' + s }))]
        : el('span', { class: 'muted small', text: 'No active alarms' }));
    }
  }
  const dots = new Map();
  fill(main, el('div', { class: 'layout' }, tree(plants, assets, dots), content));
  recount();
  performance.mark('ironlake:overview');
  let pending = false;
  const l = live(only ? { plant: only } : {}, {
    asset(ev) {
      const a = byId.get(ev.id);
      if (!a) return;
      a.state = ev.state; a.active_alarms = ev.alarms.length;
      activeAlarms.set(ev.id, ev.alarms.map((x) => ({ ...x, asset: ev.id })));
      updateTile(tiles.get(ev.id), a);
      const dot = dots.get(ev.id);
      if (dot) dot.className = 'dot st-' + a.state;
      if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; recount(); }); }
    },
    async resync() {
      const fresh = await maybe('/api/assets' + (only ? '?plant=' + encodeURIComponent(only) : ''));
      for (const a of fresh || []) { if (byId.has(a.id)) { Object.assign(byId.get(a.id), a); updateTile(tiles.get(a.id), a); } }
      const al = await maybe('/api/alarms?state=active' + (only ? '&plant=' + encodeURIComponent(only) : ''));
      if (al) { activeAlarms.clear(); for (const x of al.alarms) { if (!activeAlarms.has(x.asset)) activeAlarms.set(x.asset, []); activeAlarms.get(x.asset).push(x); } }
      recount();
    },
  });
  const timer = setInterval(() => plants.forEach((p) => loadOee(p, $('section[data-plant="' + CSS.escape(p.id) + '"] table.oee tbody'))), 30000);
  onLeave(() => clearInterval(timer));
  void l;
}

function tile(a) {
  const t = el('a', { class: 'tile', href: href('machine', a.id), 'data-asset': a.id, title: a.name + ' (' + a.id + ')' },
    el('div', { class: 'name', text: a.name }), el('div', { class: 'state' }), el('span', { class: 'badge' }));
  updateTile(t, a);
  return t;
}
function updateTile(t, a) {
  if (!t) return;
  t.className = 'tile st-' + a.state;
  t.dataset.state = a.state;
  t.querySelector('.state').textContent = a.state + (a.connected === false && a.state !== 'DISCONNECTED' ? ' · source down' : '');
  const b = t.querySelector('.badge');
  b.hidden = !a.active_alarms;
  b.textContent = a.active_alarms ? '⚠ ' + a.active_alarms : '';
}

async function loadOee(p, tbody) {
  if (!tbody) return;
  const o = await maybe('/api/plants/' + encodeURIComponent(p.id) + '/oee');
  clear(tbody);
  for (const l of p.linesFull) {
    const cur = o && o.current.oee.lines.find((x) => x.line === l.id);
    const prev = o && o.previous.oee.lines.find((x) => x.line === l.id);
    tbody.append(el('tr', { 'data-line': l.id },
      el('td', {}, el('a', { href: href('report', p.id), text: l.name })),
      el('td', { class: 'num', text: l.aggregate.machines }),
      el('td', { class: 'num', text: cur ? fmt.int(cur.good) : '–' }),
      el('td', { class: 'num', text: cur ? fmt.int(cur.reject) : '–' }),
      el('td', { class: 'num', 'data-oee': 'current' }, el('b', { text: cur ? fmt.pct(cur.oee) : '–' })),
      el('td', { class: 'num', text: cur ? fmt.pct(cur.availability) : '–' }),
      el('td', { class: 'num', text: cur ? fmt.pct(cur.performance) : '–' }),
      el('td', { class: 'num', text: cur ? fmt.pct(cur.quality) : '–' }),
      el('td', { class: 'num', text: prev ? fmt.pct(prev.oee) : '–' })));
  }
  if (o) {
    const cur = o.current;
    const when = cur.oee.lines.length
      ? 'Current shift ' + cur.shift.name + ' since ' + fmt.clock(cur.shift.start, p.timezone) + ', as of ' + fmt.clock(Math.max(...cur.oee.lines.map((x) => x.computed_at)), p.timezone)
      : 'Current shift ' + cur.shift.name + ' since ' + fmt.clock(cur.shift.start, p.timezone) + ': no OEE computed yet (the gold job runs every minute)';
    tbody.append(el('tr', {}, el('td', { colspan: 9, class: 'muted small', text: when })));
  }
}

// ---------- floor map ----------
pages.map = async (main, r) => {
  const pid = r.arg || (app.plants[0] && app.plants[0].id);
  const p = plantOf(pid);
  if (!p) throw new ApiError(404, 'Unknown plant “' + pid + '”.');
  title('Floor map ' + p.name);
  const [detail, assets] = await Promise.all([
    api('/api/plants/' + encodeURIComponent(p.id)),
    api('/api/assets?plant=' + encodeURIComponent(p.id)),
  ]);
  const pick = el('div', { class: 'toolbar' }, el('h1', { text: 'Floor map' }),
    ...app.plants.map((x) => el('a', { href: href('map', x.id) }, el('button', { class: x.id === p.id ? 'on' : '', text: x.name }))));
  const floor = detail.floor;
  const placed = assets.filter((a) => a.pos);
  const unplaced = assets.filter((a) => !a.pos);
  const panel = el('div', { class: 'panel' });
  fill(main, pick, panel);
  if (!floor && !placed.length) {
    panel.append(el('div', { class: 'empty', text: 'This plant has no floor plan yet: add [floor] outline and x, y to its machines in the plant file (see the README).' }));
    return;
  }
  const pts = [...(floor ? floor.outline : []), ...placed.map((a) => a.pos)];
  const xs = pts.map((q) => q[0]); const ys = pts.map((q) => q[1]);
  const pad = 3;
  const minX = Math.min(...xs) - pad; const minY = Math.min(...ys) - pad;
  const w = Math.max(...xs) - minX + pad; const hgt = Math.max(...ys) - minY + pad;
  const svg = el('svg', { class: 'map', viewBox: `${minX} ${minY} ${w} ${hgt}`, role: 'img', 'aria-label': 'Floor map of ' + p.name });
  // Layers: the building, the machines, and moving assets (drawn later on top).
  const gFloor = el('g', { class: 'layer-floor' });
  const gMachines = el('g', { class: 'layer-machines' });
  const gMovers = el('g', { class: 'layer-movers' });
  svg.append(gFloor, gMachines, gMovers);
  if (floor) {
    gFloor.append(el('polygon', { class: 'outline', points: floor.outline.map((q) => q.join(',')).join(' ') }));
    for (const z of floor.zones || []) {
      const [x, y, zw, zh] = z.rect;
      gFloor.append(el('rect', { class: 'zone', x, y, width: zw, height: zh, rx: 0.4 }),
        el('text', { class: 'zone-label', x: x + 0.6, y: y + 2 }, z.name));
    }
  }
  const marks = new Map();
  for (const a of placed) {
    const g = el('g', { 'data-asset': a.id, onclick: () => { location.hash = href('machine', a.id); } });
    const ring = el('circle', { class: 'alarm-ring', cx: a.pos[0], cy: a.pos[1], r: 2.4 });
    const dot = el('rect', { class: 'machine', x: a.pos[0] - 1.6, y: a.pos[1] - 1.6, width: 3.2, height: 3.2, rx: 0.5 },
      el('title', {}, a.name + ' (' + a.id + ')'));
    const label = el('text', { class: 'mlabel', x: a.pos[0], y: a.pos[1] + 3.1, 'text-anchor': 'middle' }, a.name.length > 18 ? a.name.slice(0, 17) + '…' : a.name);
    g.append(ring, dot, label);
    gMachines.append(g);
    marks.set(a.id, { ring, dot, a });
    paintMark(marks.get(a.id));
  }
  const legend = el('div', { class: 'legend' }, STATES.map((s) => el('span', { style: { '--c': STATE_COLOR[s] }, text: s })),
    el('span', { style: { '--c': 'var(--critical)' }, text: 'pulsing ring: active alarm' }));
  panel.append(svg, legend);
  if (unplaced.length) {
    panel.append(el('p', { class: 'muted small' }, 'Not placed on the map (no x, y in the plant file): ',
      unplaced.map((a, i) => [i ? ', ' : '', el('a', { href: href('machine', a.id), text: a.name })])));
  }
  live({ plant: p.id }, {
    asset(ev) { const m = marks.get(ev.id); if (m) { m.a.state = ev.state; m.a.active_alarms = ev.alarms.length; paintMark(m); } },
    async resync() {
      for (const a of (await maybe('/api/assets?plant=' + encodeURIComponent(p.id))) || []) {
        const m = marks.get(a.id); if (m) { m.a.state = a.state; m.a.active_alarms = a.active_alarms; paintMark(m); }
      }
    },
  });
};
function paintMark(m) {
  m.dot.setAttribute('class', 'machine fill-' + m.a.state);
  m.ring.style.display = m.a.active_alarms ? '' : 'none';
}

// ---------- machine page ----------
const RANGES = [['15m', 15 * 60e3], ['1h', 3600e3], ['8h', 8 * 3600e3], ['24h', 24 * 3600e3]];

pages.machine = async (main, r) => {
  const id = r.arg;
  let snap;
  try {
    snap = await api('/api/assets/' + encodeURIComponent(id || ''));
  } catch (e) {
    if (e.status === 404) {
      title('Unknown asset');
      fill(main, errorBox('There is no asset “' + (id || '') + '”. Use the search box above to find one by id or name.', 'Go to the overview', '#/'));
      return;
    }
    throw e;
  }
  const tz = tzOf(snap.plant);
  title(snap.name);
  const plant = plantOf(snap.plant);
  const head = el('div', { class: 'panel' });
  const signalsBody = el('tbody');
  const chartBox = el('div', { class: 'chart' });
  const chartInfo = el('div', { class: 'muted small' });
  const timelineBox = el('div');
  const alarmsBox = el('div');
  const recentBox = el('div');
  const countersBox = el('div', { class: 'kpis' });
  const sourceBox = el('div');
  const predBox = el('div', { class: 'prediction' });
  const monitorBox = el('div', { class: 'monitor small' });
  const rows = new Map();
  let chartSignal = r.params.get('signal') || (snap.signals[0] && snap.signals[0].name);
  let range = r.params.get('range') || '1h';

  function paintHead() {
    fill(head, 
      el('div', { class: 'toolbar' }, el('h1', { text: snap.name }), stateChip(snap.state),
        el('span', { class: 'muted', text: 'since ' + fmt.time(snap.state_since, tz) })),
      el('div', { class: 'muted' }, snap.id + ' · ' + snap.kind + ' · ',
        el('a', { href: href('plant', snap.plant), text: plant ? plant.name : snap.plant }), ' · line ' + snap.line,
        ' · last data ' + fmt.ago(snap.last_update)));
  }
  function paintCounters() {
    const c = snap.counters || {};
    const g = c.good_total || 0; const rj = c.reject_total || 0;
    fill(countersBox, 
      kpi(fmt.int(g), 'good parts counted'), kpi(fmt.int(rj), 'rejected parts counted'),
      kpi(g + rj ? fmt.pct(rj / (g + rj)) : '–', 'scrap rate'), kpi(fmt.int(snap.readings_total), 'readings'),
      el('div', { class: 'muted small', style: { flexBasis: '100%' }, text: 'Counted by the twin from the PLC counters (PLC now: good ' + fmt.int(c.good_parts) + ', rejected ' + fmt.int(c.rejected_parts) + '), across counter resets.' }));
  }
  function paintSource() {
    const s = snap.source || {};
    fill(sourceBox, el('div', {}, el('span', { class: 'chip ' + (s.connected ? 'st-RUNNING' : 'st-DOWN'), text: s.connected ? 'connected' : 'disconnected' }),
      ' ' + (s.protocol || '') + ' ' + (s.endpoint || '')),
    el('div', { class: 'muted small', text: 'since ' + fmt.time(s.since_ms, tz) + ' · last message ' + fmt.ago(s.last_message_ms) + ' · reconnects ' + (s.reconnects || 0) }),
    s.last_error ? el('div', { class: 'small q-BAD', text: 'last error: ' + s.last_error }) : null);
  }
  function paintPrediction() {
    const p = snap.prediction;
    if (!p) {
      fill(predBox, el('div', { class: 'muted', text: 'No model serves ' + snap.kind + ' machines: train one (ironlake train --model ' + snap.kind + '_failure --promote) or wait for the first feature row.' }));
      return;
    }
    const fm = (p.scores || []).find((x) => x.role === 'champion' && x.failure_prob !== undefined);
    const kids = [
      el('div', { class: 'kpis' },
        kpi(p.health === null || p.health === undefined ? '–' : fmt.num(p.health, 1), 'health (0..100)'),
        kpi(p.failure_prob === null || p.failure_prob === undefined ? '–' : fmt.pct(p.failure_prob), 'failure within ' + (fm && fm.horizon_h ? fmt.num(fm.horizon_h, 0) + ' h' : 'the horizon')),
        kpi(p.rul_h === null || p.rul_h === undefined ? '–' : fmt.num(p.rul_h, 0) + ' h', 'remaining useful life'),
        p.energy_expected_kw === null || p.energy_expected_kw === undefined ? null
          : kpi(fmt.num(p.energy_actual_kw, 1) + ' kW', 'drawn · expected ' + fmt.num(p.energy_expected_kw, 1) + ' kW (' + (p.energy_deviation_kw >= 0 ? '+' : '') + fmt.num(p.energy_deviation_kw, 1) + ')')),
    ];
    if (p.energy_waste) {
      kids.push(el('div', { class: 'q-STALE small', text: 'Energy waste: drawing ' + fmt.num(p.energy_deviation_kw, 1) + ' kW more than a machine in this state and at this load needs (auxiliaries left on, a leak?).' }));
    }
    if (p.alert && fm) {
      kids.push(el('div', { class: 'q-BAD small', text: 'Failure predicted: probability ' + fmt.pct(fm.failure_prob) + ' over the threshold ' + fmt.pct(fm.threshold) + '.' }));
      if (fm.reasons && fm.reasons.length) {
        kids.push(el('div', { class: 'small' }, 'Pushed by: ', fm.reasons.map(([f, d]) => f + ' (+' + fmt.num(d * 100, 1) + ' pts)').join(', ')));
      }
    }
    kids.push(el('div', { class: 'muted small', text: (p.scores || []).map((x) => x.model + ' v' + x.version + ' (' + x.role + ')').join(' · ') + ' · scored ' + fmt.ago(p.bucket_end) }));
    fill(predBox, ...kids);
  }
  // Model monitoring of this machine's failure model: drift of its inputs
  // (the latest check) and how past predictions turned out.
  let monitorLoaded = false;
  async function loadMonitor() {
    const name = snap.kind + '_failure';
    // Only a machine a failure model serves has anything to show (and asking
    // for a model that does not exist would be a 404).
    if (!(snap.prediction && (snap.prediction.scores || []).some((x) => x.model === name))) return;
    const [d, q] = await Promise.all([maybe('/api/models/' + name + '/drift'), maybe('/api/models/' + name + '/quality')]);
    monitorLoaded = true;
    const kids = [];
    if (d && d.rows && !d.rows.length) kids.push(el('div', { class: 'muted' }, 'No drift check of ' + name + ' yet (one runs every models.drift_interval_s).'));
    if (d && d.rows && d.rows.length) {
      const mine = d.rows.filter((x) => x.scope === 'asset' && x.asset_id === snap.id);
      const bad = mine.filter((x) => x.status === 'ALERT');
      kids.push(el('div', { class: bad.length ? 'q-STALE' : 'muted', 'data-drift': String(bad.length) },
        mine.length
          ? (bad.length ? 'Input drift on this machine: ' + bad.slice(0, 3).map((x) => x.feature + ' (PSI ' + fmt.num(x.psi, 2) + ')').join(', ') + (bad.length > 3 ? ' and ' + (bad.length - 3) + ' more' : '') : 'No input drift on this machine')
          : 'Drift not checked for this machine yet',
        ' · checked ' + fmt.ago(Date.parse(d.checked))));
    }
    if (q && q.summary && !q.summary.length) kids.push(el('div', { class: 'muted' }, 'No past prediction of ' + name + ' with a known outcome yet.'));
    if (q && q.summary && q.summary.length) {
      kids.push(el('div', { class: 'muted', 'data-quality': String(q.summary.length) }, 'Past predictions with known outcome (' + name + ', all machines): ' +
        q.summary.map((x) => 'v' + x.version + ' ' + x.role + ' alert precision ' + (x.alert_precision === null ? '–' : fmt.pct(x.alert_precision)) + ', recall ' + (x.alert_recall === null ? '–' : fmt.pct(x.alert_recall)) + ' (' + x.failures + ' failures)').join(' · ')));
    }
    fill(monitorBox, ...kids);
  }
  function paintSignals(signals) {
    for (const sg of signals) {
      let row = rows.get(sg.name);
      if (!row) {
        row = {
          tr: el('tr', { class: 'clickable', 'data-signal': sg.name, onclick: () => { chartSignal = sg.name; setParams(); } }),
          cells: [],
        };
        row.cells = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => el('td', { class: i >= 1 && i !== 3 ? 'num' : '' }));
        row.tr.append(el('td', { class: 'wrap', text: sg.name }), ...row.cells);
        rows.set(sg.name, row);
        signalsBody.append(row.tr);
      }
      const cw = sg.count_window || {};
      const v = [fmt.num(sg.value, 2), sg.unit || '', null, fmt.num(sg.ema, 2), fmt.num(cw.min, 2), fmt.num(cw.mean, 2), fmt.num(cw.max, 2), fmt.num(sg.rate_hz, 2)];
      row.cells[0].textContent = v[0];
      row.cells[0].dataset.value = sg.value === null ? '' : String(sg.value);
      row.cells[1].textContent = v[1];
      row.cells[2].textContent = sg.quality;
      row.cells[2].className = 'q-' + sg.quality;
      row.cells[2].title = sg.rejected_reason || (sg.ts ? 'at ' + fmt.time(sg.ts, tz) : 'no value received yet');
      for (let i = 3; i < 8; i++) row.cells[i].textContent = v[i];
      row.tr.classList.toggle('selected', sg.name === chartSignal);
    }
  }
  function paintAlarms() {
    clear(alarmsBox);
    if (!snap.alarms.length) { alarmsBox.append(el('div', { class: 'muted', text: 'No active alarms.' })); return; }
    alarmsBox.append(alarmTable(snap.alarms.map((a) => ({ ...a, asset: snap.id, raised: a.since, state: 'active', severity: a.severity.toLowerCase() })), tz, false, () => reloadSnap()));
  }
  async function loadRecent() {
    const rec = await maybe('/api/alarms?state=cleared&asset=' + encodeURIComponent(snap.id) + '&limit=20');
    fill(recentBox, rec && rec.alarms.length ? alarmTable(rec.alarms, tz, false) : el('div', { class: 'muted', text: 'No alarms cleared in the last 24 hours.' }));
  }
  async function loadTimeline() {
    const shifts = await maybe('/api/plants/' + encodeURIComponent(snap.plant) + '/shifts?limit=1');
    if (!shifts) return;
    const sh = shifts.current;
    const ev = await maybe('/api/assets/' + encodeURIComponent(snap.id) + '/events?kind=state&from=' + sh.start + '&to=' + Date.now());
    fill(timelineBox, el('div', { class: 'muted small', text: 'Shift ' + sh.name + ': ' + fmt.time(sh.start, tz) + ' to ' + fmt.time(sh.end, tz) }));
    if (!ev) { timelineBox.append(el('div', { class: 'muted', text: 'State history is not available.' })); return; }
    // The twin knows a change a moment before silver holds its event.
    const last = ev.events.length ? ev.events[ev.events.length - 1] : ev.state_before;
    if (snap.state_since && snap.state_since >= sh.start && (!last || (last.code !== snap.state && snap.state_since > last.ts))) {
      ev.events.push({ ts: snap.state_since, code: snap.state });
    }
    timelineBox.append(stateTimeline(ev, sh.start, Math.min(Date.now(), sh.end), tz));
  }
  async function reloadSnap() {
    try {
      snap = await api('/api/assets/' + encodeURIComponent(snap.id));
      paintHead(); paintCounters(); paintSource(); paintSignals(snap.signals); paintAlarms(); paintPrediction();
    } catch (_) { /* the stream banner tells the user */ }
  }
  function setParams() {
    history.replaceState(null, '', href('machine', snap.id, { signal: chartSignal, range }));
    for (const [n, row] of rows) row.tr.classList.toggle('selected', n === chartSignal);
    drawChart();
  }
  const rangeBtns = el('span', {});
  const fromIn = el('input', { type: 'datetime-local', 'aria-label': 'from' });
  const toIn = el('input', { type: 'datetime-local', 'aria-label': 'to' });
  let chart = null; let custom = null;
  async function drawChart(zoom) {
    fill(rangeBtns, RANGES.map(([k]) => el('button', { class: range === k && !zoom ? 'on' : '', 'data-range': k, onclick: () => { range = k; custom = null; setParams(); } }, k)));
    let to = Date.now(); let from = to - (RANGES.find((x) => x[0] === range) || RANGES[1])[1];
    if (custom) [from, to] = custom;
    if (zoom) [from, to] = zoom;
    const width = Math.max(300, chartBox.clientWidth || 800);
    const points = Math.min(2000, Math.round(width / 2));
    const t0 = performance.now();
    let h;
    try {
      h = await api('/api/assets/' + encodeURIComponent(snap.id) + '/history?signal=' + encodeURIComponent(chartSignal) + '&from=' + Math.round(from) + '&to=' + Math.round(to) + '&points=' + points);
    } catch (e) { fill(chartBox, errorBox('History could not be read: ' + e.message)); return; }
    const b = h.buckets;
    const data = [b.ts.map((t) => t / 1000), b.min, b.avg, b.max];
    const opts = {
      width, height: 300,
      scales: { x: { time: true, min: from / 1000, max: to / 1000 } },
      series: [{ value: (u, v) => (v === null ? '–' : fmt.time(v * 1000, tz)) },
        { label: 'min', stroke: '#9ab6e0', width: 1, points: { show: false } },
        { label: chartSignal + (h.unit ? ' (' + h.unit + ')' : ''), stroke: '#1d5fbf', width: 1.6, points: { show: b.ts.length < 60 } },
        { label: 'max', stroke: '#9ab6e0', width: 1, points: { show: false } }],
      bands: [{ series: [3, 1], fill: 'rgba(29,95,191,0.12)' }],
      cursor: { drag: { x: true, y: false } },
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 5) return;
          const a = u.posToVal(u.select.left, 'x') * 1000; const z = u.posToVal(u.select.left + u.select.width, 'x') * 1000;
          drawChart([a, z]);
        }],
      },
      axes: [{ values: (u, splits) => splits.map((v) => (to - from > 36 * 3600e3 ? fmt.time(v * 1000, tz).slice(0, 13) : fmt.clock(v * 1000, tz))) }, { size: 60 }],
    };
    if (chart) chart.destroy();
    clear(chartBox);
    if (!b.ts.length) {
      chartBox.append(el('div', { class: 'empty', text: 'No data for ' + chartSignal + ' between ' + fmt.time(from, tz) + ' and ' + fmt.time(to, tz) + '.' }));
      chart = null;
    } else {
      chart = new uPlot(opts, data, chartBox);
    }
    const ms = Math.round(performance.now() - t0);
    chartBox.dataset.drawMs = String(ms);
    chartBox.dataset.buckets = String(b.ts.length);
    const raw = b.count.reduce((s, x) => s + x, 0);
    chartInfo.textContent = fmt.int(raw) + ' readings in ' + b.ts.length + ' buckets of ' + fmt.num(h.bucket_ms / 1000, 1) + ' s (min, mean, max), fetched and drawn in ' + ms + ' ms. Drag across the chart to zoom.' + (zoom ? '' : '');
    if (zoom) chartInfo.append(' ', el('button', { onclick: () => drawChart(), text: 'reset zoom' }));
  }
  fill(main, 
    head,
    el('div', { class: 'grid2' },
      el('div', { class: 'panel' }, el('h3', { text: 'Signals (live)' }),
        el('table', {}, el('thead', {}, el('tr', {}, ['Signal', 'Value', 'Unit', 'Quality', 'EMA', 'Min', 'Mean', 'Max', 'Rate Hz'].map((x, i) => el('th', { class: i && i !== 2 && i !== 3 ? 'num' : '', text: x })))), signalsBody),
        el('div', { class: 'muted small', text: 'Min, mean and max over the count window; click a signal to chart it.' })),
      el('div', {},
        el('div', { class: 'panel' }, el('h3', { text: 'Part counters' }), countersBox),
        el('div', { class: 'panel' }, el('h3', { text: 'Source' }), sourceBox),
        el('div', { class: 'panel' }, el('h3', { text: 'Health and failure prediction' }), predBox, monitorBox))),
    el('div', { class: 'panel' }, el('h3', { text: 'History' }),
      el('div', { class: 'toolbar no-print' }, rangeBtns, el('span', { class: 'muted small', text: 'custom:' }), fromIn, toIn,
        el('button', { text: 'show', onclick: () => { const a = Date.parse(fromIn.value); const z = Date.parse(toIn.value); if (a < z) { custom = [a, z]; range = ''; drawChart(); } } })),
      chartBox, chartInfo),
    el('div', { class: 'panel' }, el('h3', { text: 'State this shift' }), timelineBox),
    el('div', { class: 'grid2' },
      el('div', { class: 'panel' }, el('h3', { text: 'Active alarms' }), alarmsBox),
      el('div', { class: 'panel' }, el('h3', { text: 'Recently cleared alarms' }), recentBox)));
  paintHead(); paintCounters(); paintSource(); paintSignals(snap.signals); paintAlarms(); paintPrediction();
  performance.mark('ironlake:machine');
  // The chart first: the other panels' queries would share the query pool with it.
  drawChart().finally(() => { loadTimeline(); loadRecent(); loadMonitor(); });
  live({ assets: snap.id }, {
    asset(ev) {
      const changed = ev.state !== snap.state;
      Object.assign(snap, { state: ev.state, state_since: ev.state_since, alarms: ev.alarms, last_update: ev.last_update });
      snap.counters = { ...snap.counters, good_total: ev.good_parts, reject_total: ev.rejected_parts };
      if (snap.source) snap.source.connected = ev.connected;
      paintHead(); paintCounters(); paintSource(); paintAlarms();
      if (changed) loadTimeline();
    },
    values(ev) { snap.readings_total = ev.readings_total; snap.last_update = ev.last_update; paintSignals(ev.signals); },
    resync: reloadSnap,
  });
  const slow = setInterval(() => { loadTimeline(); loadRecent(); loadMonitor(); }, 30000);
  // Source status and the models' scores (a feature bucket closes every 10 s in the demo).
  const pred = setInterval(() => { maybe('/api/assets/' + encodeURIComponent(snap.id)).then((s) => { if (s) { snap.source = s.source; snap.prediction = s.prediction; paintSource(); paintPrediction(); if (!monitorLoaded) loadMonitor(); } }); }, 10000);
  onLeave(() => { clearInterval(slow); clearInterval(pred); if (chart) chart.destroy(); });
};

function kpi(v, label) { return el('div', { class: 'kpi' }, el('div', { class: 'v', text: v }), el('div', { class: 'l', text: label })); }

function stateTimeline(ev, from, to, tz) {
  const segs = [];
  // Before the first state known in this range: no data (not a state).
  let cur = ev.state_before ? ev.state_before.code : 'NO DATA';
  let t = from;
  for (const e of ev.events) {
    if (e.ts > t) segs.push([cur, t, e.ts]);
    cur = e.code; t = Math.max(t, e.ts);
  }
  if (to > t) segs.push([cur, t, to]);
  const span = Math.max(1, to - from);
  const bar = el('div', { class: 'timeline', role: 'img', 'aria-label': 'machine state over the shift' });
  const totals = {};
  for (const [s, a, b] of segs) {
    totals[s] = (totals[s] || 0) + (b - a);
    bar.append(el('div', { style: { width: ((b - a) / span * 100) + '%', background: STATE_COLOR[s] || STATE_COLOR.UNKNOWN }, title: s + ' ' + fmt.clock(a, tz) + '–' + fmt.clock(b, tz) }));
  }
  return el('div', {}, bar, el('div', { class: 'legend' }, Object.entries(totals).map(([s, ms]) => el('span', { style: { '--c': STATE_COLOR[s] || STATE_COLOR.UNKNOWN }, text: s + ' ' + fmt.min(ms) }))));
}

// ---------- alarms ----------
function alarmTable(list, tzAll, withAsset, after) {
  const body = el('tbody');
  for (const a of list) {
    const tz = tzAll || tzOf(a.plant);
    const ack = a.acknowledged;
    body.append(el('tr', { 'data-alarm': a.asset + '/' + a.name },
      el('td', {}, sevChip(a.severity || 'warning')),
      withAsset ? el('td', { class: 'wrap' }, el('a', { href: href('machine', a.asset), text: a.asset_name || a.asset }), el('div', { class: 'muted small', text: a.plant + ' · ' + a.line })) : null,
      el('td', { class: 'wrap' }, el('b', { text: a.name }), el('div', { class: 'muted small', text: (a.message || '') + (a.signal ? ' (' + a.signal + ' = ' + fmt.num(a.value, 2) + ')' : '') })),
      el('td', { class: 'small', text: fmt.time(a.raised, tz) + (a.cleared ? ' → ' + fmt.time(a.cleared, tz) : '') }),
      el('td', { class: 'small wrap' }, ack
        ? [el('span', { text: '✓ ' + ack.by + ' ' + fmt.clock(ack.at, tz) }), ack.comment ? el('div', { class: 'muted', text: ack.comment }) : null]
        : (a.state === 'active' ? el('button', { class: 'primary', 'data-ack': a.asset + '/' + a.name, onclick: () => ackDialog(a, after) }, 'Acknowledge') : el('span', { class: 'muted', text: 'not acknowledged' })))));
  }
  return el('table', {}, el('thead', {}, el('tr', {}, ['Severity', withAsset ? 'Machine' : null, 'Alarm', 'Raised', 'Acknowledgement'].filter(Boolean).map((h) => el('th', { text: h })))), body);
}

function ackDialog(a, after) {
  const by = el('input', { type: 'text', name: 'by', maxlength: 80, required: true, value: app.operator });
  const comment = el('textarea', { name: 'comment', rows: 3, maxlength: 1000 });
  const err = el('div', { class: 'q-BAD small' });
  const dlg = el('dialog', { 'aria-label': 'Acknowledge alarm' });
  const form = el('form', { method: 'dialog' },
    el('h2', { text: 'Acknowledge ' + a.name }),
    el('div', { class: 'muted small', text: (a.asset_name || a.asset) + ' · raised ' + fmt.time(a.raised, tzOf(a.plant)) }),
    el('label', { text: 'Your name' }), by, el('label', { text: 'Comment (optional)' }), comment, err,
    el('div', { class: 'toolbar', style: { marginTop: '10px' } },
      el('button', { class: 'primary', type: 'submit', value: 'ok', text: 'Acknowledge' }),
      el('button', { type: 'button', text: 'Cancel', onclick: () => dlg.close() })));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('/api/assets/' + encodeURIComponent(a.asset) + '/alarms/' + encodeURIComponent(a.name) + '/ack', {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ by: by.value, comment: comment.value }),
      });
      app.operator = by.value.trim();
      localStorage.setItem('ironlake.operator', app.operator);
      dlg.close();
      if (after) after();
    } catch (x) { err.textContent = x.message; }
  });
  dlg.append(form);
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  (by.value ? comment : by).focus();
}

pages.alarms = async (main, r) => {
  title('Alarms');
  const f = { plant: r.params.get('plant') || '', line: r.params.get('line') || '', severity: r.params.get('severity') || '', state: r.params.get('state') || 'active' };
  const lines = app.plants.flatMap((p) => (p.lines || []).map((l) => [l, p.id])).filter(([, p]) => !f.plant || p === f.plant);
  const sel = (name, opts) => el('select', { name, 'aria-label': name, onchange: (e) => { f[name] = e.target.value; if (name === 'plant') f.line = ''; location.hash = href('alarms', null, f); } },
    opts.map(([v, t]) => el('option', { value: v, selected: f[name] === v, text: t })));
  const list = el('div', {}, el('div', { class: 'muted', text: 'Loading…' }));
  fill(main, el('div', { class: 'panel' },
    el('div', { class: 'toolbar' }, el('h1', { text: 'Alarms' }),
      sel('plant', [['', 'all plants'], ...app.plants.map((p) => [p.id, p.name])]),
      sel('line', [['', 'all lines'], ...lines.map(([l]) => [l, l])]),
      sel('severity', [['', 'any severity'], ...SEVERITIES.map((s) => [s, s])]),
      sel('state', [['active', 'active'], ['unacknowledged', 'active, not acknowledged'], ['acknowledged', 'active, acknowledged'], ['cleared', 'cleared (24 h)'], ['all', 'all (24 h)']])),
    list));
  async function load() {
    const q = new URLSearchParams(Object.entries(f).filter(([, v]) => v)).toString();
    try {
      const res = await api('/api/alarms?' + q);
      fill(list, res.alarms.length ? alarmTable(res.alarms, undefined, true, load) : el('div', { class: 'empty', text: 'No alarms match.' }),
        res.truncated ? el('div', { class: 'muted small', text: 'Showing the first ' + res.count + '.' }) : null);
    } catch (e) { fill(list, errorBox(e.message)); }
  }
  await load();
  let t = null;
  live(f.plant ? { plant: f.plant } : {}, {
    asset() { clearTimeout(t); t = setTimeout(load, 300); },
    resync: load,
  });
  onLeave(() => clearTimeout(t));
};

// ---------- shift report ----------
pages.report = async (main, r) => {
  const pid = r.arg || app.plants[0].id;
  const p = plantOf(pid);
  if (!p) throw new ApiError(404, 'Unknown plant “' + pid + '”.');
  const tz = p.timezone;
  title('Shift report ' + p.name);
  const shiftParam = r.params.get('shift');
  const [shifts, rep, detail] = await Promise.all([
    api('/api/plants/' + encodeURIComponent(p.id) + '/shifts?limit=60'),
    api('/api/plants/' + encodeURIComponent(p.id) + '/shift-report' + (shiftParam ? '?shift=' + encodeURIComponent(shiftParam) : '')),
    api('/api/plants/' + encodeURIComponent(p.id)),
  ]);
  const lineName = (id) => { const l = detail.lines.find((x) => x.id === id); return l ? l.name : id; };
  const options = [shifts.current, ...shifts.shifts.filter((s) => s.start !== shifts.current.start)];
  if (!options.some((s) => s.start === rep.shift.start)) options.push(rep.shift);
  options.sort((a, b) => b.start - a.start);
  const pickShift = el('select', { 'aria-label': 'shift', onchange: (e) => { location.hash = href('report', p.id, { shift: e.target.value }); } },
    options.map((s) => el('option', { value: s.start, selected: s.start === rep.shift.start, text: fmt.time(s.start, tz) + ' · ' + s.name + (s.start === shifts.current.start ? ' (current)' : '') })));
  const pickPlant = el('select', { 'aria-label': 'plant', onchange: (e) => { location.hash = href('report', e.target.value); } },
    app.plants.map((x) => el('option', { value: x.id, selected: x.id === p.id, text: x.name })));
  const headLine = 'Shift ' + rep.shift.name + ', ' + fmt.time(rep.shift.start, tz) + ' to ' + fmt.time(rep.shift.end, tz) + ' (' + tz + ')' + (rep.shift.current ? ', in progress' : '');
  const out = el('div', { id: 'report', 'data-computed-at': rep.computed_at || '', 'data-shift-start': rep.shift.start });
  fill(main, el('div', { class: 'panel' },
    el('div', { class: 'toolbar' }, el('h1', { text: 'Shift report · ' + p.name }),
      el('span', { class: 'no-print' }, pickPlant, ' ', pickShift, ' ', el('button', { text: 'Print', onclick: () => window.print() }))),
    el('div', { text: headLine }),
    el('div', { class: 'muted small', text: rep.computed_at ? 'Computed from the gold tables at ' + fmt.time(rep.computed_at, tz) + '.' : '' })), out);
  if (!rep.machines.length) {
    out.append(el('div', { class: 'panel empty', 'data-empty': 'report', text: 'No OEE rows for this shift yet. The gold jobs run every pipelines.interval_s (60 s by default) once data has arrived; a shift with no production has none.' }));
    return;
  }
  const t = rep.total;
  if (t) {
    out.append(el('div', { class: 'panel' }, el('h3', { text: 'Plant' }), el('div', { class: 'kpis' },
      kpi(fmt.pct(t.oee), 'OEE'), kpi(fmt.pct(t.availability), 'availability'), kpi(fmt.pct(t.performance), 'performance'),
      kpi(fmt.pct(t.quality), 'quality'), kpi(fmt.int(t.good), 'good parts'), kpi(fmt.int(t.reject), 'rejects'))));
  }
  const lineRows = rep.lines.map((l) => el('tr', { 'data-line': l.line },
    el('td', { text: lineName(l.line) }), el('td', { class: 'num', 'data-oee': l.line }, el('b', { text: fmt.pct(l.oee) })),
    ...[l.availability, l.performance, l.quality].map((v) => el('td', { class: 'num', text: fmt.pct(v) })),
    el('td', { class: 'num', text: fmt.int(l.good) }), el('td', { class: 'num', text: fmt.int(l.reject) }),
    el('td', { class: 'num', text: fmt.min(l.planned_ms) }), el('td', { class: 'num', text: fmt.min(l.running_ms) })));
  out.append(el('div', { class: 'panel' }, el('h3', { text: 'Lines' }),
    el('table', {}, el('thead', {}, el('tr', {}, ['Line', 'OEE', 'Availability', 'Performance', 'Quality', 'Good', 'Rejects', 'Planned', 'Running'].map((x, i) => el('th', { class: i ? 'num' : '', text: x })))), el('tbody', {}, lineRows))));
  // Loss waterfall per line: planned time, minus each loss, leaves fully productive time.
  const wf = el('div', { class: 'panel' }, el('h3', { text: 'OEE losses (minutes)' }));
  for (const l of [...(t ? [{ ...t, line: '' }] : []), ...rep.lines]) wf.append(waterfall(l, l.line ? lineName(l.line) : 'Plant', rep.machines.filter((m) => !l.line || m.line === l.line)));
  out.append(wf);
  // Downtime Pareto by reason.
  const byReason = new Map();
  for (const d of rep.downtime) {
    const k = d.reason || d.state;
    const e = byReason.get(k) || { reason: k, ms: 0, events: 0 };
    e.ms += d.duration_ms; e.events += d.events; byReason.set(k, e);
  }
  const pareto = [...byReason.values()].sort((a, b) => b.ms - a.ms);
  const totalDown = pareto.reduce((s, x) => s + x.ms, 0);
  let cum = 0;
  out.append(el('div', { class: 'grid2' },
    el('div', { class: 'panel' }, el('h3', { text: 'Downtime by reason (Pareto)' }),
      pareto.length ? el('table', { class: 'bars' }, el('thead', {}, el('tr', {}, ['Reason', 'Events', 'Minutes', '', 'Cumulative'].map((x) => el('th', { text: x })))),
        el('tbody', {}, pareto.map((x) => {
          cum += x.ms;
          return el('tr', { 'data-reason': x.reason }, el('td', { class: 'wrap', text: x.reason }), el('td', { class: 'num', text: x.events }),
            el('td', { class: 'num', text: (x.ms / 60000).toFixed(1) }),
            el('td', { style: { width: '40%' } }, el('div', { class: 'bar', style: { width: (x.ms / pareto[0].ms * 100) + '%', background: 'var(--down)' } })),
            el('td', { class: 'num', text: (cum / totalDown * 100).toFixed(0) + ' %' }));
        }))) : el('div', { class: 'muted', text: 'No downtime recorded in this shift.' })),
    el('div', { class: 'panel' }, el('h3', { text: 'Energy' }), energyTable(rep.energy))));
  // Machines.
  out.append(el('div', { class: 'panel' }, el('h3', { text: 'Machines' }),
    el('table', {}, el('thead', {}, el('tr', {}, ['Machine', 'Line', 'OEE', 'A', 'P', 'Q', 'Good', 'Rejects', 'Running', 'Down', 'Idle', 'Setup', 'Unknown', 'Avg cycle s'].map((x, i) => el('th', { class: i > 1 ? 'num' : '', text: x })))),
      el('tbody', {}, rep.machines.map((m) => el('tr', { 'data-asset': m.asset_id },
        el('td', { class: 'wrap' }, el('a', { href: href('machine', m.asset_id), text: m.asset_id })), el('td', { text: lineName(m.line) }),
        el('td', { class: 'num', 'data-oee': m.asset_id }, el('b', { text: fmt.pct(m.oee) })),
        ...[m.availability, m.performance, m.quality].map((v) => el('td', { class: 'num', text: fmt.pct(v) })),
        el('td', { class: 'num', text: fmt.int(m.good) }), el('td', { class: 'num', text: fmt.int(m.reject) }),
        ...[m.running_ms, m.down_ms, m.idle_ms, m.setup_ms, m.unknown_ms].map((v) => el('td', { class: 'num', text: fmt.min(v) })),
        el('td', { class: 'num', text: fmt.num(m.avg_cycle_s, 2) })))))));
};

/** Planned time -> availability loss -> performance loss -> quality loss -> productive time. */
function waterfall(l, name, machines) {
  const planned = l.planned_ms || 0;
  const availLoss = Math.max(0, planned - (l.running_ms || 0));
  const perfLoss = machines.reduce((s, m) => s + (m.speed_loss_ms || 0), 0);
  const qualLoss = machines.reduce((s, m) => s + (m.reject || 0) * (m.ideal_cycle_s || 0) * 1000, 0);
  const productive = Math.max(0, planned - availLoss - perfLoss - qualLoss);
  const steps = [
    ['planned', planned, 0, '#5c6670', ''],
    ['availability loss', availLoss, planned - availLoss, 'var(--down)', 'down, idle, setup and unknown time'],
    ['performance loss', perfLoss, planned - availLoss - perfLoss, 'var(--idle)', 'slower than the ideal cycle'],
    ['quality loss', qualLoss, productive, '#8e44ad', fmt.int(l.reject) + ' rejected parts at the ideal cycle'],
    ['fully productive', productive, 0, 'var(--running)', 'OEE ' + fmt.pct(l.oee)],
  ];
  const span = Math.max(1, planned);
  return el('div', { style: { marginBottom: '10px' } }, el('b', { text: name }),
    el('table', { class: 'waterfall' }, el('tbody', {}, steps.map(([name, v, off, c, note]) => el('tr', {},
      el('td', { class: 'small', text: name }),
      el('td', {}, el('div', { class: 'wf' }, el('div', { style: { left: (off / span * 100) + '%', width: Math.max(0.2, v / span * 100) + '%', background: c } }))),
      el('td', { class: 'num small', text: (v / 60000).toFixed(1) }),
      el('td', { class: 'muted small', text: note }))))));
}

function energyTable(rows) {
  if (!rows.length) return el('div', { class: 'muted', text: 'No energy rows for this shift (machines without a power signal have none).' });
  const tot = rows.reduce((s, r) => ({ kwh: s.kwh + r.kwh, idle: s.idle + r.idle_kwh, good: s.good + r.good }), { kwh: 0, idle: 0, good: 0 });
  return el('div', {}, el('div', { class: 'kpis' }, kpi(fmt.num(tot.kwh, 1) + ' kWh', 'energy this shift'), kpi(fmt.num(tot.idle, 1) + ' kWh', 'while idle'),
    kpi(tot.good ? fmt.num(tot.kwh / tot.good, 3) + ' kWh' : '–', 'per good part')),
  el('table', {}, el('thead', {}, el('tr', {}, ['Machine', 'kWh', 'Idle kWh', 'Good', 'kWh / good part'].map((x, i) => el('th', { class: i ? 'num' : '', text: x })))),
    el('tbody', {}, rows.map((r) => el('tr', {}, el('td', { class: 'wrap', text: r.asset_id }), el('td', { class: 'num', text: fmt.num(r.kwh, 2) }),
      el('td', { class: 'num', text: fmt.num(r.idle_kwh, 2) }), el('td', { class: 'num', text: fmt.int(r.good) }), el('td', { class: 'num', text: fmt.num(r.kwh_per_good_part, 3) }))))));
}

// ---------- pipelines and data health ----------
pages.health = async (main) => {
  title('Data health');
  const box = el('div');
  fill(main, el('h1', { text: 'Pipelines and data health' }), box);
  let prev = null;
  async function load() {
    const [h, pipes, q, m] = await Promise.all([maybe('/api/health'), maybe('/api/pipelines'), maybe('/api/quarantine?since=now-1h'),
      fetch('/metrics').then((r) => (r.ok ? r.text() : '')).catch(() => '')]);
    const metric = (name, agg) => {
      const v = m.split('\n').filter((l) => l.startsWith(name + '{') || l.startsWith(name + ' ')).map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)));
      return v.length ? v.reduce((a, b) => agg(a, b)) : null;
    };
    const lag = metric('ironlake_journal_age_seconds', Math.max);
    const pendingBytes = metric('ironlake_journal_pending_bytes', (a, b) => a + b);
    const queued = metric('ironlake_ingest_queue_depth', (a, b) => a + b);
    if (!h) { fill(box, errorBox('ironlake is not reachable; retrying every 5 s.')); return; }
    const now = Date.now();
    const rate = prev ? (h.ingest.readings - prev.h.ingest.readings) / ((now - prev.t) / 1000) : null;
    prev = { h, t: now };
    const w = h.lake.writers || [];
    fill(box, 
      el('div', { class: 'panel' }, el('h3', { text: 'Ingest' }), el('div', { class: 'kpis' },
        kpi(h.status, 'status'), kpi(rate === null ? '…' : fmt.int(rate) + '/s', 'readings per second'),
        kpi(fmt.int(h.ingest.readings), 'readings since start'), kpi(fmt.int(h.ingest.quarantined), 'quarantined'),
        kpi(fmt.int(h.ingest.duplicates), 'duplicates dropped'), kpi(fmt.int(h.ingest.readings_lost), 'readings lost'),
        kpi(h.sources.connected + ' / ' + (h.sources.connected + h.sources.disconnected), 'sources connected'),
        kpi(lag === null ? '–' : fmt.num(lag, 1) + ' s', 'lag: oldest reading not yet in Delta'),
        kpi(pendingBytes === null ? '–' : fmt.num(pendingBytes / 1e6, 1) + ' MB', 'journal pending'),
        kpi(queued === null ? '–' : fmt.int(queued), 'messages queued'))),
      el('div', { class: 'panel' }, el('h3', { text: 'Tables' }), el('table', {}, el('thead', {}, el('tr', {}, ['Table', 'Version', 'Rows committed', 'Pending', 'Last error'].map((x, i) => el('th', { class: i && i < 4 ? 'num' : '', text: x })))),
        el('tbody', {}, w.map((x) => el('tr', {}, el('td', { text: x.table }), el('td', { class: 'num', text: x.version }), el('td', { class: 'num', text: fmt.int(x.rows_committed) }),
          el('td', { class: 'num', text: fmt.int(x.pending_rows) }), el('td', { class: 'wrap small q-BAD', text: x.last_error || '' })))))),
      el('div', { class: 'panel' }, el('h3', { text: 'Pipelines (latest run)' }), pipelineTable(pipes || [])),
      el('div', { class: 'panel' }, el('h3', { text: 'Quarantine, last hour' }), quarantineTable(q)));
  }
  await load();
  const timer = setInterval(load, 5000);
  onLeave(() => clearInterval(timer));
};

function pipelineTable(pipes) {
  if (!pipes.length) return el('div', { class: 'muted', text: 'No pipelines configured.' });
  return el('table', {}, el('thead', {}, el('tr', {}, ['Pipeline', 'Target', 'Status', 'Finished', 'Rows in', 'Rows out', 'Dropped', 'Expectations'].map((x, i) => el('th', { class: i >= 4 && i < 7 ? 'num' : '', text: x })))),
    el('tbody', {}, pipes.map((p) => {
      const r = p.last_run;
      const exp = r && r.expectations ? (Array.isArray(r.expectations) ? r.expectations : Object.entries(r.expectations).map(([k, v]) => ({ name: k, ...v }))) : [];
      return el('tr', { 'data-pipeline': p.name }, el('td', { class: 'wrap' }, el('b', { text: p.name }), el('div', { class: 'muted small', text: p.description || '' })),
        el('td', { text: p.target }), el('td', {}, r ? el('span', { class: 'chip ' + (r.status === 'ok' || r.status === 'success' ? 'st-RUNNING' : 'st-DOWN'), text: r.status }) : el('span', { class: 'muted', text: 'not run yet' })),
        el('td', { class: 'small', text: r ? String(r.finished).replace('T', ' ').slice(0, 19) : '–' }),
        el('td', { class: 'num', text: r ? fmt.int(r.rows_in) : '–' }), el('td', { class: 'num', text: r ? fmt.int(r.rows_out) : '–' }), el('td', { class: 'num', text: r ? fmt.int(r.rows_dropped) : '–' }),
        el('td', { class: 'small wrap' }, exp.map((e) => el('div', { text: (e.name || '') + ': ' + (e.dropped !== undefined ? fmt.int(e.dropped) + ' dropped' : e.failed !== undefined ? fmt.int(e.failed) + ' failed' : JSON.stringify(e)) }))));
    })));
}
function quarantineTable(q) {
  if (!q) return el('div', { class: 'muted', text: 'Quarantine counts are not available.' });
  if (!q.reasons.length) return el('div', { class: 'muted', text: 'Nothing quarantined in the last hour.' });
  return el('table', {}, el('thead', {}, el('tr', {}, ['Plant', 'Reason', 'Rows', 'Last', 'Latest example', 'Its payload'].map((x, i) => el('th', { class: i === 2 ? 'num' : '', text: x })))),
    el('tbody', {}, q.reasons.map((r) => el('tr', {}, el('td', { text: r.plant }), el('td', { text: r.expectation }),
      el('td', { class: 'num', text: fmt.int(r.rows) }), el('td', { class: 'small', text: fmt.ago(r.last) }),
      el('td', { class: 'small wrap', text: r.example_reason || '' }),
      el('td', { class: 'small wrap muted', text: String(r.example || '').slice(0, 160) })))));
}

// ---------- search ----------
function setupSearch() {
  const input = $('#search'); const list = $('#search-results');
  let seq = 0; let sel = -1; let items = [];
  function show(res) {
    items = res; sel = res.length ? 0 : -1;
    clear(list);
    list.hidden = !input.value.trim();
    if (!res.length) { list.append(el('li', { class: 'muted', text: 'No asset matches.' })); return; }
    res.slice(0, 12).forEach((a, i) => list.append(el('li', { class: i === sel ? 'sel' : '', 'data-id': a.id, onmousedown: (e) => { e.preventDefault(); go(a); } },
      el('b', { text: a.name }), ' ', el('span', { class: 'muted small', text: a.id + ' · ' + a.plant + ' · ' + a.state }))));
  }
  function go(a) { list.hidden = true; input.value = ''; location.hash = href('machine', a.id); }
  input.addEventListener('input', async () => {
    const q = input.value.trim(); const n = ++seq;
    if (!q) { list.hidden = true; return; }
    const res = await maybe('/api/assets?q=' + encodeURIComponent(q));
    if (n === seq) show(res || []);
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      sel = Math.max(0, Math.min(items.length - 1, sel + (e.key === 'ArrowDown' ? 1 : -1)));
      [...list.children].forEach((li, i) => li.classList.toggle('sel', i === sel));
      e.preventDefault();
    } else if (e.key === 'Enter' && items[sel]) { go(items[sel]); } else if (e.key === 'Escape') { list.hidden = true; }
  });
  input.addEventListener('blur', () => setTimeout(() => { list.hidden = true; }, 150));
}

window.addEventListener('hashchange', render);
setupSearch();
render();
