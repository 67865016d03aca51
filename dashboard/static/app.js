// Telehub dashboard: a device list, a device view with live charts, boards
// of panels across devices, and the alerts view.
//
// The device view joins history and live data exactly: it loads each chart
// through the series API, whose answer names the last message it includes
// ("seq"), then opens the WebSocket with since=seq. Live readings are folded
// into the same buckets (the series API gives each bucket's reading count),
// so every reading is drawn once. After a disconnect the feed reconnects
// with backoff and resumes from the last sequence number it saw.
//
// No build step: this file, app.css and the vendored uPlot are embedded in
// the hub binary. Every piece of text from the hub is inserted with
// textContent, never as HTML.
'use strict';
(function () {
  const POLL_MS = 2000;          // device list refresh
  const LOG_ROWS = 200;          // raw messages kept in the log
  const LOG_RENDER_MS = 250;     // the log is redrawn at most this often
  const DEFAULT_CHARTS = 8;      // metrics charted when none were chosen
  const MAX_METRICS = 20;        // the series API's limit per request
  const CHART_HEIGHT = 220;
  const ACTIVE_MS = 2 * 60 * 1000; // no status topic: "active" if seen this recently
  const WINDOWS = [['5m', 5 * 60e3], ['1h', 3600e3], ['24h', 86400e3], ['7d', 7 * 86400e3]];

  // ---- small helpers ------------------------------------------------------

  function h(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k === 'style') e.style.cssText = v; // CSSOM: allowed by the CSP, unlike a style attribute
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of kids.flat()) if (c != null) e.append(c instanceof Node ? c : String(c));
    return e;
  }

  async function api(path, signal, method, body) {
    const init = { headers: { Accept: 'application/json' }, signal };
    if (method) {
      init.method = method;
      init.headers['Content-Type'] = 'application/json';
      init.body = body;
    }
    const r = await fetch(path, init);
    if (r.status === 401) showLogin();
    if (!r.ok) {
      let detail = r.status + ' ' + r.statusText;
      try { const p = await r.json(); if (p.detail) detail = p.detail; } catch (_) { /* not problem+json */ }
      const err = new Error(detail);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  // enc escapes a path segment, dots too: "." and ".." are device ids, and
  // a browser would drop them from the path as dot segments.
  const enc = (s) => encodeURIComponent(s).replace(/\./g, '%2E');

  function fmtValue(v) {
    if (typeof v === 'number') {
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      if (a >= 1e9) return v.toPrecision(6);
      if (a >= 1) return String(+v.toFixed(2)); // 4154.155 is 4154.16, not 4154
      return String(+v.toPrecision(3));
    }
    if (typeof v === 'string') return v;
    return JSON.stringify(v);
  }

  // metricSettings holds how each metric is shown (label, unit, decimals,
  // y axis min and max; GET /api/v1/metric-settings), read at start and
  // after a change, for every chart: the device view's and the boards'.
  const metricSettings = {
    byMetric: new Map(),
    async refresh() {
      try {
        const r = await api('api/v1/metric-settings');
        this.byMetric = new Map(r.metrics.map((m) => [m.metric, m]));
      } catch (_) { /* an older hub, or none stored: the defaults */ }
    },
    of(metric) { return this.byMetric.get(metric) || { metric }; },
    label(metric) { return this.of(metric).label || metric; },
    // display is what applies to a panel of metric: the panel's own
    // settings where it has them, else the metric's.
    display(metric, own) {
      const m = this.of(metric), o = own || {};
      const pick = (k) => (o[k] != null && o[k] !== '' ? o[k] : m[k]);
      return { unit: pick('unit'), decimals: pick('decimals'), min: pick('min'), max: pick('max'), thresholds: o.thresholds };
    },
    async save(metric, settings) {
      await api('api/v1/metric-settings/' + enc(metric), null, 'PUT', JSON.stringify(settings));
      await this.refresh();
    },
    async remove(metric) {
      try { await api('api/v1/metric-settings/' + enc(metric), null, 'DELETE'); } catch (e) { if (e.status !== 404) throw e; }
      await this.refresh();
    },
  };

  // fmtWith formats a value with display settings: decimals and unit.
  function fmtWith(d, v) {
    if (typeof v !== 'number') return v == null ? '–' : fmtValue(v);
    const s = d && d.decimals != null ? v.toFixed(d.decimals) : fmtValue(v);
    return d && d.unit ? s + ' ' + d.unit : s;
  }

  function fmtRate(r) {
    if (r == null) return '–';
    if (r === 0) return '0/s';
    if (r < 0.1) return (r * 60).toFixed(1) + '/min';
    return (r < 10 ? r.toFixed(1) : r.toFixed(0)) + '/s';
  }

  function ago(ms) {
    const s = (Date.now() - ms) / 1000;
    if (s < 0) return 'in the future';
    if (s < 2) return 'just now';
    if (s < 60) return Math.floor(s) + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  // agoEl shows a time as "12 s ago", kept current by the ticker below.
  function agoEl(ms) {
    const e = h('span', { 'data-ago': ms, title: ms ? new Date(ms).toLocaleString() : '' });
    e.textContent = ms ? ago(ms) : 'never';
    return e;
  }
  setInterval(() => {
    for (const e of document.querySelectorAll('[data-ago]')) {
      const ms = +e.getAttribute('data-ago');
      if (ms) e.textContent = ago(ms);
    }
  }, 1000);

  // statusOf turns a device's status (the payload of its latest status
  // message) and last_seen into one of online, offline, active, idle.
  function statusOf(status, lastSeen) {
    const s = String(status || '').toLowerCase();
    if (s.includes('offline') || s === 'false' || s === '0') return 'offline';
    if (s.includes('online') || s === 'true' || s === '1') return 'online';
    return Date.now() - lastSeen < ACTIVE_MS ? 'active' : 'idle';
  }

  function statusEl(state) {
    const e = h('span', { class: 'status' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), h('span', { text: state }));
    e.setAttribute('data-status', state === 'active' ? 'online' : state);
    return e;
  }

  const conn = {
    set(state, text) {
      const e = document.getElementById('conn');
      e.setAttribute('data-state', state);
      document.getElementById('conn-text').textContent = text || state;
    },
  };

  // ---- payloads -----------------------------------------------------------

  function parseTs(v) {
    if (typeof v === 'number' && Number.isFinite(v)) return Math.trunc(v);
    if (typeof v === 'string') { const t = Date.parse(v); return Number.isNaN(t) ? null : t; }
    return null;
  }

  // readings returns [metric, ts, number] for every numeric (or boolean)
  // metric of a message, reading the same payload shapes as the hub: an
  // object of metrics with an optional "ts", ThingsBoard's
  // {"ts":..,"values":{..}}, and an array of those.
  function readings(m) {
    const out = [];
    if (m.kind === 'status' || m.encoding !== 'json') return out;
    const object = (o) => {
      let ts = m.received;
      if ('ts' in o) { const t = parseTs(o.ts); if (t != null) ts = t; }
      let metrics = o, skipTs = true;
      const n = Object.keys(o).length;
      if (o.values && typeof o.values === 'object' && !Array.isArray(o.values) && (n === 1 || (n === 2 && 'ts' in o))) {
        metrics = o.values;
        skipTs = false;
      }
      for (const [k, v] of Object.entries(metrics)) {
        if (skipTs && k === 'ts') continue;
        const x = typeof v === 'number' ? v : v === true ? 1 : v === false ? 0 : null;
        if (x !== null) out.push([k, ts, x]);
      }
    };
    const p = m.payload;
    const isObj = (o) => o !== null && typeof o === 'object' && !Array.isArray(o);
    if (Array.isArray(p)) {
      if (p.length && p.every((o) => isObj(o) && 'values' in o)) p.forEach(object);
    } else if (isObj(p)) {
      object(p);
    }
    return out;
  }

  // ---- live feed ----------------------------------------------------------

  // LiveFeed streams committed messages after `since` over the WebSocket,
  // reconnecting with backoff and resuming where it stopped. Replay and live
  // frames both come in seq order, so each message is delivered once by
  // remembering the last seq. A "reset" frame means the hub cannot continue
  // from that seq (its database was restored or replaced, or the page was
  // too far behind): onReset reloads the view.
  class LiveFeed {
    constructor({ device, since, events, onMessages, onState, onStatus, onReset, onCommand, onAttributes, onAlert }) {
      this.device = device;
      this.events = events;      // status, command, attribute and alert frames only
      this.onAlert = onAlert;
      this.seq = since;          // every message up to seq was delivered
      this.onMessages = onMessages;
      this.onState = onState;
      this.onStatus = onStatus;
      this.onCommand = onCommand;
      this.onAttributes = onAttributes;
      this.onReset = onReset;
      this.attempt = 0;
      this.stopped = false;
      this.connect();
    }

    url() {
      const u = new URL('api/v1/ws', location.href);
      u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
      u.hash = '';
      const q = this.events ? new URLSearchParams({ events: '1' }) : new URLSearchParams({ since: String(this.seq), batch: '1' });
      if (this.device) q.set('device', this.device);
      u.search = q.toString();
      return u.href;
    }

    connect() {
      this.onState(this.attempt ? 'reconnecting' : 'connecting');
      this.live = false; // until the replay ends
      const ws = new WebSocket(this.url());
      this.ws = ws;
      ws.onmessage = (ev) => {
        if (this.ws !== ws) return;
        let f;
        try { f = JSON.parse(ev.data); } catch (_) { return; }
        if (f.type === 'messages' || f.type === 'message') this.deliver(f.type === 'messages' ? f.messages : [f]);
        else if (f.type === 'status') { if (this.onStatus) this.onStatus(f); }
        else if (f.type === 'command') { if (this.onCommand) this.onCommand(f.command); }
        else if (f.type === 'attributes') { if (this.onAttributes) this.onAttributes(f.event); }
        else if (f.type === 'alert') { if (this.onAlert) this.onAlert(f.alert); }
        else if (f.type === 'reset') {
          this.seq = f.seq;
          if (this.onReset) this.onReset(f.seq);
        } else if (f.type === 'replay_end') {
          this.seq = Math.max(this.seq, f.seq);
          this.live = true;
          this.attempt = 0;
          this.onState('live');
        }
      };
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.ws = null;
        if (!this.stopped) this.retry();
      };
    }

    deliver(list) {
      const fresh = [];
      for (const m of list) {
        if (m.seq <= this.seq) continue;
        this.seq = m.seq;
        fresh.push(m);
      }
      if (fresh.length) this.onMessages(fresh);
    }

    retry() {
      const delay = Math.min(10000, 500 * 2 ** this.attempt++) * (0.75 + Math.random() * 0.5);
      this.onState('reconnecting', delay);
      this.timer = setTimeout(() => this.connect(), delay);
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(1000, 'leaving');
    }
  }

  // ---- charts -------------------------------------------------------------

  function upperBound(xs, x) { // first index with xs[i] > x
    let lo = 0, hi = xs.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid] <= x) lo = mid + 1; else hi = mid; }
    return lo;
  }

  // Points is one metric's chart data: bucket starts, averages and how many
  // readings each average holds, so a live reading is folded in exactly.
  class Points {
    constructor(interval) {
      this.interval = interval; // ms; 0: raw points
      this.xs = [];
      this.ys = [];
      this.ns = [];
    }

    load(points) {
      for (const [t, v, n] of points) { this.xs.push(t); this.ys.push(v); this.ns.push(n == null ? 1 : n); }
    }

    add(ts, v) {
      const key = this.interval > 0 ? Math.floor(ts / this.interval) * this.interval : ts;
      const i = upperBound(this.xs, key);
      if (this.interval > 0 && i > 0 && this.xs[i - 1] === key) {
        const j = i - 1, n = this.ns[j];
        this.ys[j] = this.ys[j] == null ? v : (this.ys[j] * n + v) / (n + 1);
        this.ns[j] = n + 1;
        return;
      }
      this.xs.splice(i, 0, key);
      this.ys.splice(i, 0, v);
      this.ns.splice(i, 0, 1);
    }

    // trim drops points before minX and keeps at most cap points.
    trim(minX, cap) {
      let k = upperBound(this.xs, minX - 1);
      k = Math.max(k, this.xs.length - cap);
      if (k > 0) { this.xs.splice(0, k); this.ys.splice(0, k); this.ns.splice(0, k); }
    }
  }

  // axisValues labels y ticks with as many decimals as their spacing needs.
  function axisValues(splits) {
    const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 1;
    const decimals = step > 0 ? Math.min(10, Math.max(0, -Math.floor(Math.log10(step)))) : 0;
    return splits.map((v) => (v == null ? '' : Math.abs(v) >= 1e6 ? v.toExponential(2) : v.toFixed(decimals)));
  }

  // axisSize fits the y axis to its longest label, so that 4154.155 is
  // never clipped to .54.155 (about 7 px a character at the axis font,
  // plus the ticks).
  function axisSize(u, values) {
    if (!values) return 40;
    return 18 + 7 * Math.max(1, ...values.map((v) => String(v).length));
  }

  // brokerArgs returns mosquitto_pub's -h and -p for the hub's MQTT address
  // (GET /api/v1/info, read at start: host:port, or an external broker's URL).
  let hubInfo = {};
  // access says what the page's token may do: views hide the controls of
  // changes a read token would be refused (the hub checks either way).
  const access = { admin: true };
  function brokerArgs() {
    let host = '', port = '1883';
    try {
      const u = new URL((hubInfo.mqtt || '').includes('://') ? hubInfo.mqtt : 'tcp://' + hubInfo.mqtt);
      host = u.hostname.replace(/^\[|\]$/g, '');
      port = u.port || port;
    } catch (_) { /* unknown: the defaults */ }
    if (!host || host === '0.0.0.0' || host === '::') host = location.hostname || '127.0.0.1';
    return '-h ' + host + ' -p ' + port;
  }

  // yRange is a uPlot y scale that keeps min and max where they are set
  // (and grows past them when the data does).
  function yRange(d) {
    if (d.min == null && d.max == null) return {};
    return { range: (u, lo, hi) => [d.min != null ? Math.min(d.min, lo == null ? d.min : lo) : lo, d.max != null ? Math.max(d.max, hi == null ? d.max : hi) : hi] };
  }

  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  class Chart {
    constructor(metric, points, range) {
      this.metric = metric;
      this.points = points;
      this.range = range; // () => [min, max] of the x axis, ms
      this.latest = h('span', { class: 'latest' });
      this.last = null; // {v, ts}: the latest reading itself, not a bucket's average
      this.hover = h('span', { class: 'hover muted' });
      this.plot = h('div', { class: 'plot' });
      this.title = h('span', { class: 'chart-title' });
      this.settingsBox = h('form', { class: 'metric-settings', hidden: true, onsubmit: (e) => { e.preventDefault(); this.saveSettings(); } });
      this.el = h('section', { class: 'chart', 'data-metric': metric, 'aria-label': 'chart of ' + metric },
        h('h3', null, this.title, this.hover, this.latest, !access.admin ? null :
          h('button', { type: 'button', class: 'icon', title: 'Display settings of ' + metric, 'aria-label': 'display settings of ' + metric, 'data-action': 'metric-settings', text: '⚙', onclick: () => this.toggleSettings() })),
        this.settingsBox, this.plot);
      this.showTitle();
      this.alerts = []; // this metric's alerts and the device's own (see DeviceView.showAlerts)
      this.dirty = true;
    }

    showTitle() {
      const label = metricSettings.label(this.metric), unit = metricSettings.of(this.metric).unit;
      this.title.replaceChildren(label, ...(unit ? [h('span', { class: 'muted', text: ' (' + unit + ')' })] : []),
        ...(label !== this.metric ? [h('span', { class: 'muted', text: ' ' + this.metric })] : []));
    }

    // toggleSettings opens the form for the metric's display settings,
    // which apply to every chart of it (admin token).
    toggleSettings() {
      const box = this.settingsBox;
      if (!box.hidden) { box.hidden = true; return; }
      const m = metricSettings.of(this.metric);
      const field = (name, label, value, attrs) => h('label', null, label + ' ', h('input', Object.assign({ name, value: value == null ? '' : String(value) }, attrs)));
      this.settingsError = h('span', { class: 'error', role: 'alert' });
      box.replaceChildren(
        field('label', 'Name', m.label, { maxlength: 200, placeholder: this.metric }),
        field('unit', 'Unit', m.unit, { maxlength: 32, size: 6 }),
        field('decimals', 'Decimals', m.decimals, { type: 'number', min: 0, max: 10, size: 3 }),
        field('min', 'Min', m.min, { type: 'number', step: 'any', size: 6 }),
        field('max', 'Max', m.max, { type: 'number', step: 'any', size: 6 }),
        h('button', { type: 'submit', text: 'Save' }),
        h('button', { type: 'button', text: 'Reset', onclick: () => this.saveSettings(true) }),
        this.settingsError);
      box.hidden = false;
      box.querySelector('input').focus();
    }

    async saveSettings(reset) {
      const f = new FormData(this.settingsBox), out = {};
      for (const k of ['label', 'unit']) if (String(f.get(k)).trim()) out[k] = String(f.get(k)).trim();
      for (const k of ['decimals', 'min', 'max']) if (String(f.get(k)).trim() !== '') out[k] = Number(f.get(k));
      try {
        if (reset) await metricSettings.remove(this.metric);
        else await metricSettings.save(this.metric, out);
        this.settingsBox.hidden = true;
        this.showTitle();
        this.make();
        this.draw();
      } catch (e) {
        this.settingsError.textContent = e.status === 403 ? 'Display settings need an admin token.' : e.message;
      }
    }

    make() {
      if (this.u) this.u.destroy();
      const width = Math.max(200, this.plot.clientWidth || 460);
      const d = metricSettings.display(this.metric);
      const axis = { stroke: cssVar('--muted'), grid: { stroke: cssVar('--grid'), width: 1 }, ticks: { stroke: cssVar('--grid'), width: 1 } };
      this.u = new uPlot({
        width, height: CHART_HEIGHT, ms: 1,
        cursor: { drag: { x: false, y: false } },
        legend: { show: false },
        hooks: { setCursor: [(u) => this.showCursor(u.cursor.idx)], draw: [(u) => this.drawAlerts(u)] },
        scales: { x: { time: true, range: () => this.range() }, y: yRange(d) },
        series: [{}, { label: this.metric, stroke: cssVar('--accent'), width: 1.5, spanGaps: false, value: (u, v) => fmtWith(d, v) }],
        // x: room for a time label per tick, even on a phone; y: as wide as its labels.
        axes: [Object.assign({ space: 90 }, axis), Object.assign({ size: axisSize, values: (u, splits) => axisValues(splits) }, axis)],
      }, [this.points.xs, this.points.ys], this.plot);
      this.dirty = false;
    }

    draw() {
      if (!this.u) this.make();
      else this.u.setData([this.points.xs, this.points.ys]);
      this.latest.textContent = this.last ? fmtWith(metricSettings.display(this.metric), this.last.v) : '';
      this.dirty = false;
    }

    // setLast records a reading as the latest, if it is not older.
    setLast(v, ts) {
      if (typeof v === 'boolean') v = v ? 1 : 0;
      if (typeof v !== 'number') return;
      if (!this.last || ts >= this.last.ts) this.last = { v, ts };
    }

    // drawAlerts shades the time each alert of this chart was open, from
    // its first trigger to its clear (or now), with a line at its start.
    drawAlerts(u) {
      const min = u.scales.x.min, max = u.scales.x.max;
      if (min == null || !this.alerts.length) return;
      const ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
      for (const a of this.alerts) {
        const x0 = Math.max(a.first_at, min), x1 = Math.min(a.cleared_at || Date.now(), max);
        if (x1 < min || x0 > max) continue;
        const left = u.valToPos(x0, 'x', true), right = u.valToPos(x1, 'x', true);
        ctx.save();
        ctx.fillStyle = alertColor(a.severity, 0.12);
        ctx.fillRect(left, top, Math.max(2, right - left), height);
        if (a.first_at >= min) {
          ctx.strokeStyle = alertColor(a.severity, 1);
          ctx.lineWidth = 1.5;
          ctx.beginPath();
          ctx.moveTo(left, top);
          ctx.lineTo(left, top + height);
          ctx.stroke();
        }
        ctx.restore();
      }
    }

    showCursor(i) {
      const p = this.points;
      this.hover.textContent = i == null || i >= p.xs.length ? '' : new Date(p.xs[i]).toLocaleString() + '  ' + fmtWith(metricSettings.display(this.metric), p.ys[i]) + (p.ns[i] > 1 ? ' (avg of ' + p.ns[i] + ')' : '');
    }

    resize() { if (this.u) this.u.setSize({ width: Math.max(200, this.plot.clientWidth), height: CHART_HEIGHT }); }

    destroy() { if (this.u) this.u.destroy(); this.u = null; }
  }

  // ---- alerts -------------------------------------------------------------

  const SEVERITIES = ['critical', 'major', 'minor', 'warning', 'info'];
  const worse = (a, b) => (SEVERITIES.indexOf(a) <= SEVERITIES.indexOf(b) ? a : b);

  // openAlerts knows the open (not cleared) alerts of the fleet, for the
  // badge in the navigation and on the devices that have some.
  const openAlerts = {
    byDevice: new Map(), // device -> {n, worst}
    available: true,
    async refresh(signal) {
      if (!this.available) return;
      try {
        this.set((await api('api/v1/alerts?status=open&limit=1000', signal)).alerts);
      } catch (e) {
        if (e.status === 501) this.available = false;
      }
    },
    set(list) {
      this.byDevice.clear();
      let worst = 'info';
      for (const a of list) {
        const d = this.byDevice.get(a.device) || { n: 0, worst: 'info' };
        d.n++;
        d.worst = worse(a.severity, d.worst);
        worst = worse(a.severity, worst);
        this.byDevice.set(a.device, d);
      }
      const badge = document.getElementById('alert-badge');
      badge.textContent = list.length ? String(list.length) + (list.length === 1000 ? '+' : '') : '';
      badge.dataset.severity = worst;
      badge.hidden = !list.length;
    },
  };

  // alertBadge links a device's open alerts, or is null when it has none.
  function alertBadge(device) {
    const d = openAlerts.byDevice.get(device);
    if (!d) return null;
    return h('a', { class: 'badge', 'data-severity': d.worst, href: '#/alerts?device=' + encodeURIComponent(device),
      title: d.n + (d.n === 1 ? ' open alert' : ' open alerts'), text: String(d.n) });
  }

  const severityEl = (sev) => h('span', { class: 'sev', 'data-severity': sev, text: sev });

  function alertColor(sev, alpha) {
    const v = sev === 'critical' || sev === 'major' ? '--bad' : sev === 'info' ? '--muted' : '--warn';
    const c = cssVar(v);
    if (alpha >= 1 || !/^#[0-9a-f]{6}$/i.test(c)) return c;
    return c + Math.round(alpha * 255).toString(16).padStart(2, '0');
  }

  // laterState reports whether b is not older than a, two states of one
  // command or alert: by time (ms), then, within the same millisecond, by
  // the order of their statuses in their life.
  const COMMAND_ORDER = ['queued', 'sent', 'delivered', 'replied', 'failed', 'expired', 'cancelled'];
  const ALERT_ORDER = ['active', 'acknowledged', 'cleared'];
  function laterState(b, a, order) {
    if (b.updated !== a.updated) return b.updated > a.updated;
    return order.indexOf(b.status) >= order.indexOf(a.status);
  }

  // changeAlert acknowledges or clears an alert (admin token).
  const changeAlert = (a, what) => api('api/v1/alerts/' + a.id + '/' + what, null, 'POST', '{}');

  // AlertsView lists alerts, open ones first, filtered by status, severity
  // and device; changes arrive live (alert frames) and, after a reconnect,
  // the list is read again so nothing missed stays missing.
  class AlertsView {
    constructor(root, params) {
      this.status = params.get('status') || 'open';
      this.severity = params.get('severity') || '';
      this.device = params.get('device') || '';
      this.alerts = new Map(); // id -> alert
      document.title = 'Alerts · Telehub';
      const select = (label, value, options, onchange) => {
        const e = h('select', { 'aria-label': label }, options.map(([v, t]) => h('option', { value: v, text: t, selected: v === value })));
        e.addEventListener('change', () => onchange(e.value));
        return e;
      };
      const statusSel = select('status', this.status, [['open', 'Open'], ['active', 'Active'], ['acknowledged', 'Acknowledged'], ['cleared', 'Cleared'], ['', 'All']], (v) => { this.status = v; this.changed(); });
      const sevSel = select('severity', this.severity, [['', 'Any severity'], ...SEVERITIES.map((s) => [s, s])], (v) => { this.severity = v; this.changed(); });
      const devIn = h('input', { type: 'search', placeholder: 'Device id', 'aria-label': 'device', value: this.device });
      devIn.addEventListener('change', () => { this.device = devIn.value.trim(); this.changed(); });
      this.error = h('div', { class: 'notice error', role: 'alert', hidden: true });
      this.empty = h('div', { class: 'notice no-alerts', hidden: true });
      this.tbody = h('tbody');
      const th = (t, cls) => h('th', { class: cls, text: t });
      this.table = h('table', { class: 'devices alerts' }, h('thead', null, h('tr', null,
        th('Severity'), th('Status'), th('Rule'), th('Device'), th('What', 'hide-narrow'), th('Since'), th('Count', 'hide-narrow'), th(''))), this.tbody);
      root.append(h('h1', { text: 'Alerts' }), h('div', { class: 'toolbar' }, statusSel, sevSel, devIn), this.error, this.empty, this.table);
      this.load();
      this.connect();
    }

    connect() {
      if (this.feed) this.feed.stop();
      this.feed = new LiveFeed({
        events: true, device: this.device || undefined,
        onMessages: () => {},
        onAlert: (a) => this.onAlert(a),
        onState: (state, delay) => {
          if (state === 'live') { conn.set('live', 'live'); this.load(); }
          else if (state === 'reconnecting') conn.set('reconnecting', 'reconnecting' + (delay ? ' in ' + Math.ceil(delay / 1000) + ' s' : ''));
          else conn.set('connecting', 'connecting');
        },
      });
    }

    changed() {
      const q = new URLSearchParams();
      if (this.status !== 'open') q.set('status', this.status);
      if (this.severity) q.set('severity', this.severity);
      if (this.device) q.set('device', this.device);
      const s = q.toString();
      history.replaceState(null, '', '#/alerts' + (s ? '?' + s : ''));
      this.connect();
      this.load();
    }

    matches(a) {
      if (this.status === 'open' ? a.status === 'cleared' : this.status && a.status !== this.status) return false;
      return (!this.severity || a.severity === this.severity) && (!this.device || a.device === this.device);
    }

    // load reads the list again. A change that arrives while the read is
    // under way may be newer than what it answers (the read began before
    // the change was committed): such changes are applied again on top.
    async load() {
      const gen = (this.gen = (this.gen || 0) + 1);
      const during = (this.during = new Map());
      const q = new URLSearchParams({ limit: '500' });
      if (this.status) q.set('status', this.status);
      if (this.severity) q.set('severity', this.severity);
      if (this.device) q.set('device', this.device);
      try {
        const res = await api('api/v1/alerts?' + q);
        if (gen !== this.gen) return;
        this.alerts.clear();
        for (const a of res.alerts) this.alerts.set(a.id, a);
        for (const a of during.values()) this.apply(a);
        this.during = null;
        this.error.hidden = true;
        this.render();
        openAlerts.refresh();
      } catch (e) {
        if (gen !== this.gen) return;
        this.error.textContent = e.status === 501 ? 'Alerts are not available on this hub.' : 'Cannot load the alerts (' + e.message + ').';
        this.error.hidden = false;
      }
    }

    onAlert(a) {
      if (this.during) this.during.set(a.id, a);
      this.apply(a);
      this.render();
      openAlerts.refresh();
    }

    // apply takes in a change of an alert unless what the list holds is newer.
    apply(a) {
      const old = this.alerts.get(a.id);
      if (old && !laterState(a, old, ALERT_ORDER)) return;
      if (this.matches(a)) this.alerts.set(a.id, a);
      else this.alerts.delete(a.id);
    }

    async act(a, what) {
      try {
        this.onAlert(await changeAlert(a, what));
      } catch (e) {
        this.error.textContent = 'Cannot ' + (what === 'ack' ? 'acknowledge' : 'clear') + ' alert ' + a.id + ': ' + e.message;
        this.error.hidden = false;
      }
    }

    render() {
      // Open first (active before acknowledged), then by severity, newest first.
      const rank = { active: 0, acknowledged: 1, cleared: 2 };
      const list = [...this.alerts.values()].sort((x, y) => (rank[x.status] - rank[y.status]) ||
        (SEVERITIES.indexOf(x.severity) - SEVERITIES.indexOf(y.severity)) || (y.id - x.id));
      this.tbody.replaceChildren(...list.map((a) => h('tr', { 'data-alert': String(a.id), 'data-status': a.status },
        h('td', null, severityEl(a.severity)),
        h('td', { text: a.status + (a.acked_by ? ' by ' + a.acked_by : '') }),
        h('td', { text: a.rule }),
        h('td', null, h('a', { href: '#/device/' + enc(a.device), text: a.device })),
        h('td', { class: 'hide-narrow', text: a.message }),
        h('td', { class: 'num' }, agoEl(a.created)),
        h('td', { class: 'num hide-narrow', text: String(a.count) }),
        h('td', { class: 'actions' },
          a.status === 'active' ? h('button', { type: 'button', text: 'Ack', 'data-action': 'ack', onclick: () => this.act(a, 'ack') }) : null,
          a.status !== 'cleared' ? h('button', { type: 'button', text: 'Clear', 'data-action': 'clear', onclick: () => this.act(a, 'clear') }) : null))));
      this.table.hidden = !list.length;
      this.empty.hidden = !!list.length;
      this.empty.textContent = this.status === 'open' ? 'No open alerts. Rules are managed at /api/v1/rules (see docs/alerts.md).' : 'No alerts match.';
    }

    destroy() { if (this.feed) this.feed.stop(); this.gen++; }
  }

  // ---- device list --------------------------------------------------------

  class ListView {
    constructor(root, params) {
      this.prefix = params.get('q') || '';
      this.sort = params.get('sort') || 'id';
      this.desc = params.get('desc') === '1';
      this.prev = new Map(); // id -> {count, t} of the previous poll, for rates
      this.rates = new Map();
      this.rows = new Map(); // id -> {tr, key} of the rendered rows
      this.devices = [];
      document.title = 'Devices · Telehub';

      const search = h('input', { type: 'search', placeholder: 'Device id starts with…', 'aria-label': 'Filter devices by id prefix', value: this.prefix });
      search.addEventListener('input', () => {
        this.prefix = search.value.trim();
        this.saveURL();
        clearTimeout(this.searchTimer);
        this.searchTimer = setTimeout(() => this.poll(), 200);
      });
      this.summary = h('span', { class: 'muted' });
      this.tbody = h('tbody');
      this.head = h('tr');
      this.table = h('table', { class: 'devices' }, h('thead', null, this.head), this.tbody);
      this.empty = h('div', { class: 'notice', hidden: true });
      this.error = h('div', { class: 'notice error', role: 'alert', hidden: true });
      root.append(h('h1', { text: 'Devices' }), h('div', { class: 'toolbar' }, search, h('span', { class: 'grow' }), this.summary), this.error, this.empty, this.table);
      this.renderHead();
      this.poll();
    }

    saveURL() {
      const q = new URLSearchParams();
      if (this.prefix) q.set('q', this.prefix);
      if (this.sort !== 'id') q.set('sort', this.sort);
      if (this.desc) q.set('desc', '1');
      const s = q.toString();
      history.replaceState(null, '', '#/' + (s ? '?' + s : ''));
    }

    renderHead() {
      const cols = [['id', 'Device'], ['status', 'Status'], ['last_seen', 'Last seen'], ['rate', 'Rate'], ['count', 'Messages', 'hide-narrow'], [null, 'Latest values', 'hide-narrow']];
      this.head.replaceChildren(...cols.map(([key, label, cls]) => {
        if (!key) return h('th', { class: cls, text: label });
        const b = h('button', { type: 'button', text: label });
        if (this.sort === key) b.setAttribute('aria-sort', this.desc ? 'descending' : 'ascending');
        b.addEventListener('click', () => {
          if (this.sort === key) this.desc = !this.desc;
          else { this.sort = key; this.desc = key === 'last_seen' || key === 'rate' || key === 'count'; }
          this.saveURL();
          this.renderHead();
          this.render();
        });
        return h('th', { class: cls }, b);
      }));
    }

    async poll() {
      clearTimeout(this.timer);
      if (this.stopped) return;
      const ctl = new AbortController();
      this.abort = ctl;
      try {
        const q = new URLSearchParams({ limit: '1000' });
        if (this.prefix) q.set('prefix', this.prefix);
        const [res] = await Promise.all([api('api/v1/devices?' + q, ctl.signal), openAlerts.refresh(ctl.signal)]);
        const now = Date.now();
        for (const d of res.devices) {
          const p = this.prev.get(d.id);
          if (p && now > p.t) this.rates.set(d.id, Math.max(0, (d.message_count - p.count) * 1000 / (now - p.t)));
          this.prev.set(d.id, { count: d.message_count, t: now });
        }
        this.devices = res.devices;
        this.more = res.more;
        this.error.hidden = true;
        conn.set('live', 'live');
        this.render();
      } catch (e) {
        if (ctl.signal.aborted) return;
        this.error.textContent = 'Cannot reach the hub (' + e.message + '). Retrying…';
        this.error.hidden = false;
        conn.set('offline', 'hub unreachable');
      } finally {
        if (!this.stopped && this.abort === ctl) this.timer = setTimeout(() => this.poll(), POLL_MS);
      }
    }

    render() {
      const key = (d) => {
        switch (this.sort) {
          case 'status': return statusOf(d.status, d.last_seen);
          case 'last_seen': return d.last_seen;
          case 'rate': return this.rates.get(d.id) || 0;
          case 'count': return d.message_count;
          default: return d.id;
        }
      };
      const list = this.devices.slice().sort((a, b) => {
        const x = key(a), y = key(b);
        const c = x < y ? -1 : x > y ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
        return this.desc ? -c : c;
      });
      // Rows are kept per device and only their changed cells rewritten, so
      // a refresh of a large fleet does not rebuild the table.
      const keep = new Set();
      list.forEach((d, i) => {
        keep.add(d.id);
        let r = this.rows.get(d.id);
        if (!r) {
          r = { tr: h('tr', { 'data-device': d.id }), key: '' };
          this.rows.set(d.id, r);
        }
        const state = statusOf(d.status, d.last_seen);
        const rate = fmtRate(this.rates.get(d.id));
        const al = openAlerts.byDevice.get(d.id);
        const key = [state, d.last_seen, rate, d.message_count, JSON.stringify(d.latest || {}), al ? al.n + al.worst : ''].join('|');
        if (r.key !== key) {
          r.key = key;
          const values = Object.entries(d.latest || {}).slice(0, 6).map(([k, l]) => h('span', null, h('b', { text: k + ' ' }), fmtValue(l.v)));
          r.tr.replaceChildren(
            h('td', null, h('a', { href: '#/device/' + enc(d.id), text: d.id }), ' ', alertBadge(d.id)),
            h('td', null, statusEl(state)),
            h('td', { class: 'num' }, agoEl(d.last_seen)),
            h('td', { class: 'num', text: rate }),
            h('td', { class: 'num hide-narrow', text: d.message_count.toLocaleString() }),
            h('td', { class: 'hide-narrow' }, h('div', { class: 'values' }, values)));
        }
        if (this.tbody.children[i] !== r.tr) this.tbody.insertBefore(r.tr, this.tbody.children[i] || null);
      });
      for (const [id, r] of this.rows) {
        if (!keep.has(id)) { r.tr.remove(); this.rows.delete(id); }
      }
      const n = this.devices.length;
      this.summary.textContent = n ? (this.more ? 'first ' + n.toLocaleString() + ' devices; type a prefix to narrow' : n.toLocaleString() + (n === 1 ? ' device' : ' devices')) : '';
      this.table.hidden = n === 0;
      this.empty.hidden = n !== 0;
      if (n === 0) {
        this.empty.replaceChildren(
          this.prefix ? h('p', { text: 'No device id starts with “' + this.prefix + '”.' }) : h('p', { text: 'No devices yet. Publish JSON telemetry over MQTT to devices/{id}/telemetry, for example:' }),
          this.prefix ? null : h('pre', { text: 'mosquitto_pub ' + brokerArgs() + ' -q 1 -t devices/kitchen/telemetry -m \'{"temp":21.5}\'' }),
          this.prefix ? null : h('p', { class: 'muted', text: 'or start the hub with --demo 10 to watch ten simulated devices.' }));
      }
    }

    destroy() {
      this.stopped = true;
      clearTimeout(this.timer);
      clearTimeout(this.searchTimer);
      if (this.abort) this.abort.abort();
    }
  }

  // ---- device view --------------------------------------------------------

  class DeviceView {
    constructor(root, id, params) {
      this.id = id;
      this.root = root;
      this.win = params.get('w') || '5m';
      this.from = +params.get('from') || 0;
      this.to = +params.get('to') || 0;
      if (this.from && this.to) this.win = 'custom';
      this.chosen = params.get('m') ? params.get('m').split(',').filter(Boolean) : null;
      this.following = this.win !== 'custom';
      this.charts = new Map();
      this.log = [];           // newest first
      this.logSeqs = new Set();
      this.reloadedFor = new Set(); // metrics that made the view reload
      this.numeric = new Set(); // metrics seen with numeric readings, whatever their latest value
      this.arrivals = [];      // receive times of the last messages, for the rate
      this.loadGen = 0;
      document.title = id + ' · Telehub';
      this.build();
      this.load();
      this.slide = setInterval(() => { if (this.following) this.markAll(); }, 1000);
      this.resizer = new ResizeObserver(() => { for (const c of this.charts.values()) c.resize(); });
      this.resizer.observe(this.chartsEl);
      this.scheme = matchMedia('(prefers-color-scheme: dark)');
      this.onScheme = () => { for (const c of this.charts.values()) { c.make(); } };
      this.scheme.addEventListener('change', this.onScheme);
    }

    build() {
      this.statusSlot = h('span');
      this.lastSeen = h('span', { class: 'muted' });
      this.rateEl = h('span', { class: 'muted' });
      const winButtons = WINDOWS.map(([name]) => h('button', { type: 'button', 'data-window': name, text: name, onclick: () => this.setWindow(name) }));
      this.customBtn = h('button', { type: 'button', 'data-window': 'custom', text: 'custom', onclick: () => this.toggleCustom() });
      this.winButtons = [...winButtons, this.customBtn];
      this.fromIn = h('input', { type: 'datetime-local', 'aria-label': 'from', step: '1' });
      this.toIn = h('input', { type: 'datetime-local', 'aria-label': 'to', step: '1' });
      this.custom = h('span', { class: 'custom' }, this.fromIn, '–', this.toIn,
        h('button', { type: 'button', text: 'Show', onclick: () => this.applyCustom() }));
      this.followBtn = h('button', { type: 'button', 'aria-pressed': 'true', text: 'Following', title: 'Pause or follow live data', onclick: () => this.toggleFollow() });
      this.exportLink = h('a', { href: '#', download: '', text: 'Export CSV', onclick: () => { this.exportLink.href = this.exportURL(); } });
      this.chips = h('div', { class: 'chips', role: 'group', 'aria-label': 'metrics' });
      this.chartsEl = h('div', { class: 'charts' });
      this.notice = h('div', { class: 'notice', hidden: true });
      this.error = h('div', { class: 'notice error', role: 'alert', hidden: true });
      this.logBody = h('tbody');
      this.root.append(
        h('p', null, h('a', { href: '#/', text: '← Devices' })),
        h('h1', null, h('span', { text: this.id }), this.statusSlot, this.lastSeen, this.rateEl),
        h('div', { class: 'toolbar' }, h('span', { class: 'segmented', role: 'group', 'aria-label': 'time window' }, this.winButtons), this.custom,
          h('span', { class: 'grow' }), this.followBtn, this.exportLink),
        this.alertsEl = h('div', { class: 'device-alerts', hidden: true }),
        this.error, this.notice, this.chips, this.chartsEl,
        h('h2', { text: 'Messages' }),
        h('div', { class: 'log-wrap' }, h('table', { class: 'log' },
          h('thead', null, h('tr', null, h('th', { text: 'seq' }), h('th', { text: 'received' }), h('th', { class: 'hide-narrow', text: 'device time' }), h('th', { text: 'payload' }))),
          this.logBody)),
        ...this.buildDownlink());
      this.markWindow();
    }

    // buildDownlink is the way back to the device: a command form with the
    // device's latest commands (live), and its attributes.
    buildDownlink() {
      this.commands = new Map(); // id -> command, newest kept
      this.cmdMethod = h('input', { type: 'text', name: 'method', 'aria-label': 'method', value: 'ping', required: true, size: 12 });
      this.cmdParams = h('input', { type: 'text', name: 'params', 'aria-label': 'params (JSON)', placeholder: 'params, e.g. {"seconds":5}', class: 'grow' });
      this.cmdTimeout = h('input', { type: 'text', name: 'timeout', 'aria-label': 'timeout', value: '30s', size: 5 });
      this.cmdOneway = h('input', { type: 'checkbox', name: 'oneway' });
      this.cmdError = h('div', { class: 'notice error', role: 'alert', hidden: true });
      this.cmdBody = h('tbody');
      this.attrEdit = h('input', { type: 'text', name: 'shared', 'aria-label': 'shared attributes to set (JSON)', placeholder: 'set shared attributes, e.g. {"target":21.5}; null deletes', class: 'grow' });
      this.attrError = h('div', { class: 'notice error', role: 'alert', hidden: true });
      this.attrBody = h('tbody');
      const th = (t) => h('th', { text: t });
      return [
        h('h2', { text: 'Commands' }), this.cmdError,
        h('form', { class: 'toolbar', 'aria-label': 'send a command', onsubmit: (e) => { e.preventDefault(); this.sendCommand(); } },
          this.cmdMethod, this.cmdParams, this.cmdTimeout, h('label', null, this.cmdOneway, ' one way'), h('button', { type: 'submit', text: 'Send' })),
        h('div', { class: 'log-wrap' }, h('table', { class: 'log commands' },
          h('thead', null, h('tr', null, th('id'), th('method'), th('status'), th('updated'), th('answer'))), this.cmdBody)),
        h('h2', { text: 'Attributes' }), this.attrError,
        h('form', { class: 'toolbar', 'aria-label': 'set shared attributes', onsubmit: (e) => { e.preventDefault(); this.setShared(); } },
          this.attrEdit, h('button', { type: 'submit', text: 'Set' })),
        h('div', { class: 'log-wrap' }, h('table', { class: 'log attributes' },
          h('thead', null, h('tr', null, th('scope'), th('key'), th('value'), th('set'))), this.attrBody)),
      ];
    }

    // loadAlerts reads the device's latest alerts, for the header and the
    // charts' markers.
    // Changes that arrive while the read is under way are applied again on
    // top of its answer, which may predate them.
    async loadAlerts(signal) {
      const during = (this.alertsDuring = new Map());
      try {
        const res = await api('api/v1/devices/' + enc(this.id) + '/alerts?limit=100', signal);
        this.alertList = new Map(res.alerts.map((a) => [a.id, a]));
        this.alertsDuring = null;
        for (const a of during.values()) this.onAlert(a);
        this.showAlerts();
      } catch (_) { /* alerts off, or shown with the page's own error */ }
    }

    onAlert(a) {
      if (this.alertsDuring) this.alertsDuring.set(a.id, a);
      if (!this.alertList) this.alertList = new Map();
      const old = this.alertList.get(a.id);
      if (!old || laterState(a, old, ALERT_ORDER)) this.alertList.set(a.id, a);
      this.showAlerts();
    }

    showAlerts() {
      const list = [...(this.alertList || new Map()).values()];
      const open = list.filter((a) => a.status !== 'cleared');
      this.alertsEl.replaceChildren(...(open.length ? [h('a', { href: '#/alerts?device=' + encodeURIComponent(this.id) },
        severityEl(open.reduce((w, a) => worse(a.severity, w), 'info')), ' ',
        open.length === 1 ? '1 open alert: ' + open[0].rule + ' (' + open[0].message + ')' : open.length + ' open alerts')] : []));
      this.alertsEl.hidden = !open.length;
      for (const c of this.charts.values()) {
        c.alerts = list.filter((a) => !a.metric || a.metric === c.metric);
        if (c.u) c.u.redraw();
      }
    }

    // loadDownlink reads the device's latest commands and its attributes;
    // command changes pushed while the read is under way are applied again
    // on top of its answer, which may predate them.
    async loadDownlink(signal) {
      this.loadAlerts(signal);
      const during = (this.commandsDuring = new Map());
      try {
        const [list, attrs] = await Promise.all([
          api('api/v1/devices/' + enc(this.id) + '/commands?limit=20', signal),
          api('api/v1/devices/' + enc(this.id) + '/attributes', signal),
        ]);
        this.commands.clear();
        for (const c of list.commands.reverse()) this.commands.set(c.id, c);
        this.commandsDuring = null;
        for (const c of during.values()) this.onCommand(c);
        this.renderCommands();
        this.renderAttributes(attrs);
      } catch (_) { /* shown with the page's own error */ }
    }

    onCommand(c) {
      if (this.commandsDuring) this.commandsDuring.set(c.id, c);
      const old = this.commands.get(c.id);
      if (old && !laterState(c, old, COMMAND_ORDER)) return; // an older change, late
      this.commands.set(c.id, c);
      this.renderCommands();
    }

    renderCommands() {
      const rows = [...this.commands.values()].sort((a, b) => b.id - a.id).slice(0, 20);
      this.cmdBody.replaceChildren(...rows.map((c) => h('tr', { 'data-command': String(c.id), 'data-status': c.status },
        h('td', { text: String(c.id) }), h('td', { text: c.method }),
        h('td', null, h('span', { class: 'badge cmd-' + c.status, text: c.status })),
        h('td', null, agoEl(c.updated)),
        h('td', { class: 'payload', text: c.error ? 'error: ' + c.error : (c.response === undefined ? '' : JSON.stringify(c.response)) }))));
    }

    async sendCommand() {
      const body = { method: this.cmdMethod.value.trim(), timeout: this.cmdTimeout.value.trim() || '30s', oneway: this.cmdOneway.checked };
      const raw = this.cmdParams.value.trim();
      if (raw) {
        try { body.params = JSON.parse(raw); } catch (_) { this.cmdError.textContent = 'The params are not JSON.'; this.cmdError.hidden = false; return; }
      }
      try {
        const c = await api('api/v1/devices/' + enc(this.id) + '/commands', undefined, 'POST', JSON.stringify(body));
        this.cmdError.hidden = true;
        this.onCommand(c);
        this.followCommand(c.id, 0);
      } catch (e) {
        this.cmdError.textContent = 'Command not sent: ' + e.message;
        this.cmdError.hidden = false;
      }
    }

    // followCommand reads a command the page sent until it ends, besides
    // the live frames: those of a change made before the WebSocket was
    // live are not replayed.
    followCommand(id, tries, gen = this.loadGen) {
      if (tries >= 30 || gen !== this.loadGen) return;
      this.cmdTimer = setTimeout(async () => {
        if (gen !== this.loadGen) return; // the view was left or reloaded
        try {
          const c = await api('api/v1/devices/' + enc(this.id) + '/commands/' + id);
          this.onCommand(c);
          if (['replied', 'expired', 'failed', 'cancelled'].includes(c.status) || (c.oneway && c.status === 'delivered')) return;
        } catch (_) { /* tried again below */ }
        this.followCommand(id, tries + 1, gen);
      }, 1000);
    }

    renderAttributes(a) {
      const rows = [];
      for (const scope of ['shared', 'client']) {
        for (const k of Object.keys(a[scope] || {}).sort()) {
          const v = a[scope][k];
          rows.push(h('tr', { 'data-scope': scope, 'data-key': k }, h('td', { text: scope }), h('td', { text: k }),
            h('td', { class: 'payload', text: JSON.stringify(v.value) }), h('td', null, agoEl(v.ts))));
        }
      }
      this.attrBody.replaceChildren(...rows);
    }

    async reloadAttributes() {
      try { this.renderAttributes(await api('api/v1/devices/' + enc(this.id) + '/attributes')); } catch (_) { /* the next change retries */ }
    }

    async setShared() {
      let set;
      try { set = JSON.parse(this.attrEdit.value); } catch (_) { set = null; }
      if (!set || typeof set !== 'object' || Array.isArray(set)) {
        this.attrError.textContent = 'Give a JSON object, e.g. {"target":21.5}.';
        this.attrError.hidden = false;
        return;
      }
      try {
        const a = await api('api/v1/devices/' + enc(this.id) + '/attributes/shared', undefined, 'PATCH', JSON.stringify(set));
        this.attrError.hidden = true;
        this.attrEdit.value = '';
        this.renderAttributes(a);
      } catch (e) {
        this.attrError.textContent = 'Attributes not set: ' + e.message;
        this.attrError.hidden = false;
      }
    }

    // range is the x axis: the window up to now when following, else the
    // window as loaded.
    range() {
      if (this.win === 'custom') return [this.from, this.to];
      const to = this.following ? Date.now() : this.loadedTo;
      return [to - this.windowMs(), to];
    }

    windowMs() { const w = WINDOWS.find(([n]) => n === this.win); return w ? w[1] : 5 * 60e3; }

    exportURL() {
      const [from, to] = this.range();
      return 'api/v1/export?' + new URLSearchParams({ device: this.id, format: 'csv', from: String(Math.floor(from)), to: String(Math.ceil(to)) });
    }

    saveURL() {
      const q = new URLSearchParams();
      if (this.win === 'custom') { q.set('from', String(this.from)); q.set('to', String(this.to)); } else q.set('w', this.win);
      if (this.chosen) q.set('m', this.chosen.join(','));
      history.replaceState(null, '', '#/device/' + enc(this.id) + '?' + q);
    }

    markWindow() {
      for (const b of this.winButtons) b.setAttribute('aria-pressed', String(b.getAttribute('data-window') === this.win));
      this.custom.setAttribute('data-open', String(this.win === 'custom' || this.customOpen === true));
      this.followBtn.disabled = this.win === 'custom';
      this.followBtn.setAttribute('aria-pressed', String(this.following));
      this.followBtn.textContent = this.following ? 'Following' : 'Paused';
    }

    setWindow(name) {
      this.win = name;
      this.following = true;
      this.customOpen = false;
      this.markWindow();
      this.saveURL();
      this.load();
    }

    toggleCustom() {
      this.customOpen = !this.customOpen;
      const [from, to] = this.range();
      const local = (ms) => { const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3); return d.toISOString().slice(0, 19); };
      this.fromIn.value = local(from);
      this.toIn.value = local(to);
      this.markWindow();
    }

    applyCustom() {
      const from = new Date(this.fromIn.value).getTime(), to = new Date(this.toIn.value).getTime();
      if (!(from < to)) { this.showError('The custom window needs a start before its end.'); return; }
      this.win = 'custom';
      this.from = from;
      this.to = to;
      this.following = false;
      this.markWindow();
      this.saveURL();
      this.load();
    }

    toggleFollow() {
      this.following = !this.following;
      if (this.following) { this.markAll(); this.renderLog(); } else this.loadedTo = Date.now();
      this.markWindow();
    }

    showError(msg) { this.error.textContent = msg; this.error.hidden = !msg; }

    // load fetches the device and its history, then starts the live feed at
    // the history's consistency point.
    async load() {
      const gen = ++this.loadGen;
      if (this.feed) { this.feed.stop(); this.feed = null; }
      if (this.abort) this.abort.abort();
      const ctl = new AbortController();
      this.abort = ctl;
      clearTimeout(this.retryTimer);
      try {
        const dev = await api('api/v1/devices/' + enc(this.id), ctl.signal);
        this.showDevice(dev);
        // Every metric with a scalar latest value is a candidate: one whose
        // latest reading is a string ("error") may still have numeric
        // history. Numeric ones come first; charts of candidates with no
        // numeric point in the window are dropped once the series is in.
        const latest = dev.latest || {};
        const numeric = (k) => typeof latest[k].v === 'number' || typeof latest[k].v === 'boolean' || this.numeric.has(k);
        this.metrics = Object.keys(latest).filter((k) => latest[k].v === null || typeof latest[k].v !== 'object').sort((a, b) => (numeric(b) - numeric(a)) || (a < b ? -1 : a > b ? 1 : 0));
        let chosen = (this.chosen || this.metrics.slice(0, DEFAULT_CHARTS)).filter((m) => this.metrics.includes(m)).slice(0, MAX_METRICS);
        const [from, to] = this.win === 'custom' ? [this.from, this.to] : ((t) => [t - this.windowMs(), t])(Date.now());
        this.loadedTo = to;
        let series = null;
        if (chosen.length) {
          const q = new URLSearchParams({ metrics: chosen.join(','), from: String(from), to: String(to), max_points: String(this.maxPoints()), counts: '1' });
          series = await api('api/v1/devices/' + enc(this.id) + '/series?' + q, ctl.signal);
        }
        const recent = await api('api/v1/devices/' + enc(this.id) + '/messages?limit=50', ctl.signal);
        // Readings stamped after the window's end (a clock ahead, or ts set
        // while the series was read) but committed before the series' seq
        // are in neither the series nor the live feed: fetch them, so that
        // they appear when the window reaches them.
        let ahead = [];
        if (series && this.win !== 'custom') {
          const q = new URLSearchParams({ from: String(to + 1), order: 'asc', limit: '1000' });
          ahead = (await api('api/v1/devices/' + enc(this.id) + '/messages?' + q, ctl.signal)).messages.filter((m) => m.seq <= series.seq);
        }
        if (gen !== this.loadGen) return;
        if (series) {
          for (const m of chosen) if (series.points[m] && series.points[m].length) this.numeric.add(m);
          if (!this.chosen) chosen = chosen.filter((m) => numeric(m));
        }
        this.showError('');
        this.notice.hidden = true;
        this.renderChips(chosen);
        this.resetCharts(chosen, series);
        // The header's latest value: the device's latest reading of the
        // metric, or its latest numeric one among the recent messages when
        // the very latest was not a number; else the last point drawn.
        for (const [k, l] of Object.entries(latest)) { const c = this.charts.get(k); if (c) c.setLast(l.v, l.ts); }
        for (const m of recent.messages) for (const [k, ts, x] of readings(m)) { const c = this.charts.get(k); if (c) c.setLast(x, ts); }
        for (const c of this.charts.values()) { const p = c.points; if (!c.last && p.ys.length) c.setLast(p.ys[p.ys.length - 1], p.xs[p.xs.length - 1]); }
        for (const m of ahead) {
          for (const [k, ts, x] of readings(m)) {
            const c = this.charts.get(k);
            if (c && ts > to) c.points.add(ts, x);
          }
        }
        this.log = [];
        this.logSeqs.clear();
        this.addToLog(recent.messages);
        this.loadDownlink(ctl.signal);
        const since = series ? series.seq : recent.messages.reduce((s, m) => Math.max(s, m.seq), dev.last_seq || 0);
        this.feed = new LiveFeed({
          device: this.id, since,
          onMessages: (ms) => this.onMessages(ms),
          onStatus: (ev) => { this.status = ev.status; this.renderHeader(); },
          onCommand: (c) => this.onCommand(c),
          onAttributes: () => this.reloadAttributes(),
          onAlert: (a) => this.onAlert(a),
          onReset: () => this.load(),
          onState: (state, delay) => {
            if (state === 'live') { conn.set('live', 'live'); this.loadDownlink(); }
            else if (state === 'reconnecting') conn.set('reconnecting', 'reconnecting' + (delay ? ' in ' + Math.ceil(delay / 1000) + ' s' : ''));
            else conn.set('connecting', 'connecting');
          },
        });
      } catch (e) {
        if (ctl.signal.aborted || gen !== this.loadGen) return;
        if (e.status === 404) {
          this.notice.textContent = 'No messages from “' + this.id + '” yet. This page starts showing them as soon as they arrive.';
          this.notice.hidden = false;
          this.showError('');
          conn.set('live', 'waiting');
        } else {
          this.showError('Cannot load ' + this.id + ' (' + e.message + '). Retrying…');
          conn.set('offline', 'hub unreachable');
        }
        this.retryTimer = setTimeout(() => this.load(), 3000);
      }
    }

    // maxPoints asks for about one point per pixel of chart width.
    maxPoints() {
      const w = this.chartsEl.clientWidth || 900;
      const cols = Math.max(1, Math.floor(w / 460));
      return Math.max(100, Math.min(2000, Math.round(w / cols)));
    }

    showDevice(dev) {
      this.lastSeenMs = dev.last_seen;
      this.status = dev.status;
      this.messageCount = dev.message_count;
      this.renderHeader();
    }

    renderHeader() {
      this.statusSlot.replaceChildren(statusEl(statusOf(this.status, this.lastSeenMs)));
      this.lastSeen.replaceChildren('last seen ', agoEl(this.lastSeenMs));
      const now = Date.now();
      while (this.arrivals.length && now - this.arrivals[0] > 10000) this.arrivals.shift();
      this.rateEl.textContent = this.arrivals.length ? fmtRate(this.arrivals.length / 10) : '';
    }

    renderChips(chosen) {
      this.chips.replaceChildren(...this.metrics.map((m) => h('button', {
        type: 'button', 'aria-pressed': String(chosen.includes(m)), text: m,
        onclick: () => {
          const set = new Set(chosen);
          if (set.has(m)) set.delete(m);
          else if (set.size < MAX_METRICS) set.add(m);
          this.chosen = this.metrics.filter((x) => set.has(x));
          this.saveURL();
          this.load();
        },
      })));
      this.chips.hidden = this.metrics.length < 2;
    }

    resetCharts(chosen, series) {
      for (const c of this.charts.values()) c.destroy();
      this.charts.clear();
      this.chartsEl.replaceChildren();
      for (const m of chosen) {
        const pts = new Points(series ? series.interval_ms : 0);
        if (series && series.points[m]) pts.load(series.points[m]);
        const c = new Chart(m, pts, () => this.range());
        this.charts.set(m, c);
        this.chartsEl.append(c.el);
      }
      if (!chosen.length) {
        this.chartsEl.append(h('p', { class: 'muted', text: this.metrics.length ? 'Choose metrics to chart.' : 'This device has sent no numeric metrics yet; its messages are below.' }));
      }
      this.truncated = series && series.truncated;
      if (this.truncated) { this.notice.textContent = 'This window holds more data than one chart request returns; pick a shorter window for full detail.'; this.notice.hidden = false; }
      this.markAll();
    }

    onMessages(ms) {
      let unknown = false;
      const now = Date.now();
      for (const m of ms) {
        this.arrivals.push(now);
        this.lastSeenMs = Math.max(this.lastSeenMs || 0, m.received);
        if (m.kind === 'status') this.status = typeof m.payload === 'string' ? m.payload : JSON.stringify(m.payload);
        for (const [k, ts, x] of readings(m)) {
          const c = this.charts.get(k);
          if (c) {
            c.setLast(x, ts);
            if (this.win === 'custom' && (ts < this.from || ts > this.to)) continue;
            c.points.add(ts, x);
            c.dirty = true;
          } else if (!this.metrics.includes(k) && !this.reloadedFor.has(k)) {
            this.reloadedFor.add(k); // once per metric, whatever its history
            unknown = true;
          }
        }
      }
      this.addToLog(ms);
      this.renderHeader();
      this.frame();
      // A metric this page has not seen: reload, so its chart gets its
      // history too (rare: once per new metric).
      if (unknown && !this.reloadTimer) this.reloadTimer = setTimeout(() => { this.reloadTimer = null; this.load(); }, 1000);
    }

    markAll() { for (const c of this.charts.values()) c.dirty = true; this.frame(); }

    // frame redraws the charts that changed, at most once per animation
    // frame however fast messages arrive.
    frame() {
      if (this.raf) return;
      this.raf = requestAnimationFrame(() => {
        this.raf = 0;
        const paused = !this.following && this.win !== 'custom';
        const [min] = this.range();
        const cap = 4 * this.maxPoints();
        for (const c of this.charts.values()) {
          if (!c.dirty) continue;
          c.points.trim(this.following ? min - (c.points.interval || 0) : -Infinity, cap);
          if (paused && c.u) continue; // paused: keep the picture, collect the data
          c.draw();
        }
      });
    }

    addToLog(ms) {
      for (const m of ms) {
        if (this.logSeqs.has(m.seq)) continue;
        this.logSeqs.add(m.seq);
        this.log.push(m);
      }
      this.log.sort((a, b) => b.seq - a.seq);
      while (this.log.length > LOG_ROWS) this.logSeqs.delete(this.log.pop().seq);
      if (!this.logTimer) this.logTimer = setTimeout(() => { this.logTimer = 0; this.renderLog(); }, this.logBody.childElementCount ? LOG_RENDER_MS : 0);
    }

    renderLog() {
      if (!this.following && this.win !== 'custom' && this.logBody.childElementCount) return;
      this.logBody.replaceChildren(...this.log.map((m) => h('tr', { 'data-seq': m.seq },
        h('td', { class: 'num', text: m.seq }),
        h('td', { class: 'num', text: new Date(m.received).toLocaleTimeString(), title: new Date(m.received).toISOString() }),
        h('td', { class: 'num hide-narrow' + (Math.abs(m.ts - m.received) > 60000 ? ' skew' : ''), title: Math.abs(m.ts - m.received) > 60000 ? 'the device clock is off by more than a minute' : null,
          text: new Date(m.ts).toDateString() === new Date(m.received).toDateString() ? new Date(m.ts).toLocaleTimeString() : new Date(m.ts).toLocaleString() }),
        h('td', { class: 'payload', text: (m.kind === 'status' ? 'status ' : '') + (m.encoding === 'json' ? JSON.stringify(m.payload) : m.encoding === 'text' ? m.payload : m.payload + ' (base64)') + (m.flags ? ' [' + m.flags.join(', ') + ']' : '') }))));
    }

    // snapshot is for tests and the curious: what the page holds right now.
    snapshot() {
      const charts = {};
      for (const [m, c] of this.charts) charts[m] = { xs: c.points.xs.slice(), ys: c.points.ys.slice(), ns: c.points.ns.slice(), drawn: !!c.u, latest: c.latest.textContent, yAxis: c.u ? c.u.axes[1]._size : 0, yLabels: c.u ? (c.u.axes[1]._values || []).map(String) : [], alerts: c.alerts.map((a) => a.id) };
      return { device: this.id, seq: this.feed ? this.feed.seq : null, live: !!(this.feed && this.feed.ws && this.feed.live), charts, log: this.log.map((m) => m.seq) };
    }

    destroy() {
      this.loadGen++;
      if (this.feed) this.feed.stop();
      if (this.abort) this.abort.abort();
      clearTimeout(this.retryTimer);
      clearTimeout(this.cmdTimer);
      clearTimeout(this.reloadTimer);
      clearTimeout(this.logTimer);
      clearInterval(this.slide);
      cancelAnimationFrame(this.raf);
      this.resizer.disconnect();
      this.scheme.removeEventListener('change', this.onScheme);
      for (const c of this.charts.values()) c.destroy();
    }
  }

  // ---- login --------------------------------------------------------------

  // LoginView asks for an API token. The hub checks it and keeps it in an
  // HttpOnly cookie: this page never stores it.
  class LoginView {
    constructor(root) {
      document.title = 'Log in · Telehub';
      conn.set('offline', 'logged out');
      const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', required: true, placeholder: 'tha_…', 'aria-label': 'API token' });
      const error = h('p', { class: 'notice error', role: 'alert', hidden: true });
      const form = h('form', { class: 'login' },
        h('h1', { text: 'Log in' }),
        h('p', { class: 'muted', text: 'This hub requires an API token. Create one with: telehub token add NAME --scope read' }),
        input, h('button', { type: 'submit', text: 'Log in' }), error);
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        try {
          const r = await fetch('api/v1/login', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token: input.value }) });
          if (!r.ok) throw new Error(r.status === 401 ? 'That token is unknown or revoked.' : 'Login failed (' + r.status + ').');
          input.value = '';
          loginShown = false;
          start();
        } catch (e) {
          error.textContent = e.message;
          error.hidden = false;
        }
      });
      root.append(form);
      input.focus();
    }

    destroy() {}
  }

  let loginShown = false;
  function showLogin() {
    if (loginShown) return;
    loginShown = true;
    document.getElementById('logout').hidden = true;
    if (current) current.destroy();
    const root = document.getElementById('view');
    root.replaceChildren();
    current = new LoginView(root);
  }

  async function logout() {
    await fetch('api/v1/logout', { method: 'POST' });
    showLogin();
  }

  // ---- routing ------------------------------------------------------------

  let current = null;
  // route shows the view the URL names. A view with changes it has not
  // saved (canLeave) may keep the page: the URL goes back to it.
  function route(ev) {
    if (loginShown) return;
    if (ev && ev.oldURL && current && current.canLeave && !current.canLeave()) {
      history.replaceState(null, '', ev.oldURL);
      return;
    }
    if (current) current.destroy();
    const hash = location.hash.slice(1) || '/';
    const at = hash.indexOf('?');
    const path = at < 0 ? hash : hash.slice(0, at);
    const params = new URLSearchParams(at < 0 ? '' : hash.slice(at + 1));
    const root = document.getElementById('view');
    root.replaceChildren();
    const m = path.match(/^\/device\/(.+)$/);
    const bm = path.match(/^\/board\/(\d+)$/);
    if (m) current = new DeviceView(root, decodeURIComponent(m[1]), params);
    else if (bm) current = new window.telehub.boards.BoardView(root, bm[1], params);
    else if (path === '/boards') current = new window.telehub.boards.BoardsView(root);
    else if (path === '/alerts') current = new AlertsView(root, params);
    else current = new ListView(root, params);
  }

  // start asks the hub whether a token is needed, then shows the login
  // page or the view the URL names.
  async function start() {
    const out = document.getElementById('logout');
    try {
      const a = await api('api/v1/auth');
      access.admin = !a.required || a.scope === 'admin';
      out.hidden = !(a.required && a.authenticated);
      if (a.required && !a.authenticated) { showLogin(); return; }
      [hubInfo] = await Promise.all([api('api/v1/info'), metricSettings.refresh()]);
    } catch (_) { /* the views show the hub as unreachable and retry */ }
    route();
  }

  // What boards.js (loaded next) builds on; it adds window.telehub.boards.
  window.telehub = {
    get view() { return current; },
    ui: { h, api, enc, fmtValue, statusOf, statusEl, agoEl, readings, LiveFeed, Points, axisValues, axisSize, cssVar, conn,
      alertBadge, alertColor, severityEl, changeAlert, openAlerts, metricSettings, fmtWith, yRange, access, laterState, COMMAND_ORDER, ALERT_ORDER },
  };

  document.getElementById('logout').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  // Deferred scripts all run before DOMContentLoaded: boards.js is there.
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
