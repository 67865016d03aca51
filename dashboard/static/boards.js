// Telehub boards: dashboards a user composes from panels (time series,
// stat, table, map, status, text, command, alerts) on a 12-column grid,
// stored on the hub (GET/PUT /api/v1/boards/{id}).
//
// A board is exact like the device view: every panel loads its history
// through the REST API, each answer naming the last message it holds per
// device, and one WebSocket for the whole page continues from the lowest
// of those, skipping per device what the history held; after a reconnect
// it resumes from the last seq it saw. Redraws are coalesced per animation
// frame, each panel at most once per its own interval.
//
// In edit mode panels are moved and resized with the mouse (drag the
// title, pull the corner) or the keyboard (arrows move, Shift+arrows
// resize, Enter edits, Delete removes), and edited in a form; nothing is
// stored until Save.
//
// This file builds on app.js (window.telehub.ui) and is loaded after it.
// Leaflet and the country outlines are loaded when a map is first shown.
'use strict';
(function () {
  const { h, api, enc, fmtValue, statusOf, statusEl, agoEl, readings, LiveFeed, Points, axisValues, axisSize, cssVar, conn,
    alertBadge, severityEl, metricSettings, fmtWith, yRange, access, laterState, COMMAND_ORDER, ALERT_ORDER } = window.telehub.ui;

  const BOARD_WINDOWS = [['5m', 5 * 60e3], ['15m', 15 * 60e3], ['1h', 3600e3], ['6h', 6 * 3600e3], ['24h', 86400e3], ['7d', 7 * 86400e3], ['30d', 30 * 86400e3]];
  const BOARD_DEVICES = 20;      // devices drawn per series of a prefix
  const BOARD_ROW_PX = 64;       // height of one grid row
  const BOARD_GAP_PX = 12;       // between rows and columns
  const COLUMNS = 12;
  const FRAME_BUDGET_MS = 6;     // redraw work per animation frame
  const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#ea580c', '#4f46e5'];
  const KINDS = { timeseries: 'Time series', stat: 'Stat', table: 'Table', map: 'Map', status: 'Status', text: 'Text', command: 'Command button', alerts: 'Alerts' };
  const TERMINAL = ['replied', 'expired', 'failed', 'cancelled'];

  // windowMs reads a board window: "90m", "12h", "3d" (1m to 90d), else 0.
  function windowMs(w) {
    const m = /^([1-9][0-9]{0,4})([mhd])$/.exec(w || '');
    if (!m) return 0;
    const ms = +m[1] * { m: 60e3, h: 3600e3, d: 86400e3 }[m[2]];
    return ms <= 90 * 86400e3 ? ms : 0;
  }

  // fmtPanel formats a value with what applies to a panel of metric: the
  // panel's decimals and unit, else the metric's display settings.
  function fmtPanel(p, v, metric) { return fmtWith(metricSettings.display(metric || p.metric, p), v); }

  // thresholdColor is the colour of the highest threshold v reaches.
  function thresholdColor(p, v) {
    let c = null;
    for (const t of (p.thresholds || []).slice().sort((a, b) => a.value - b.value)) if (v >= t.value) c = t.color;
    return c;
  }

  const clone = (o) => JSON.parse(JSON.stringify(o));
  const boardBody = (b) => ({ name: b.name, window: b.window, variables: b.variables, panels: b.panels });

  // loadScript adds a vendored script once; Leaflet and the outlines cost
  // nothing until a board has a map.
  const scripts = new Map();
  function loadScript(src) {
    if (!scripts.has(src)) {
      scripts.set(src, new Promise((resolve, reject) => {
        const s = h('script', { src });
        s.onload = resolve;
        s.onerror = () => { scripts.delete(src); reject(new Error('cannot load ' + src)); };
        document.head.append(s);
      }));
    }
    return scripts.get(src);
  }
  let leaflet = null;
  function loadLeaflet() {
    if (!leaflet) {
      document.head.append(h('link', { rel: 'stylesheet', href: 'vendor/leaflet/leaflet.css' }));
      leaflet = Promise.all([loadScript('vendor/leaflet/leaflet.js'), loadScript('vendor/topojson/topojson-client.min.js')])
        .then(() => fetch('vendor/world-atlas/countries-110m.json'))
        .then((r) => r.json())
        .then((topo) => window.topojson.feature(topo, topo.objects.countries))
        .catch((e) => { leaflet = null; throw e; });
    }
    return leaflet;
  }

  // markdown renders the small Markdown of text panels as DOM nodes, never
  // as HTML: headings, paragraphs, lists, **bold**, *italic*, `code` and
  // [links](https://...) (http, https and relative only).
  function markdown(src) {
    const inline = (text) => {
      const out = [];
      const re = /(\*\*([^*]+)\*\*|\*([^*]+)\*|`([^`]+)`|\[([^\]]+)\]\(([^)\s]+)\))/g;
      let at = 0, m;
      while ((m = re.exec(text))) {
        if (m.index > at) out.push(text.slice(at, m.index));
        if (m[2]) out.push(h('strong', { text: m[2] }));
        else if (m[3]) out.push(h('em', { text: m[3] }));
        else if (m[4]) out.push(h('code', { text: m[4] }));
        else {
          const safe = /^(https?:\/\/|#|\/)/i.test(m[6]);
          out.push(safe ? h('a', { href: m[6], rel: 'noopener noreferrer', target: m[6].startsWith('#') ? null : '_blank', text: m[5] }) : m[5]);
        }
        at = re.lastIndex;
      }
      if (at < text.length) out.push(text.slice(at));
      return out;
    };
    const root = h('div', { class: 'markdown' });
    let list = null, para = [];
    const flush = () => { if (para.length) root.append(h('p', null, inline(para.join(' ')))); para = []; };
    for (const line of String(src).split('\n')) {
      const head = line.match(/^(#{1,4})\s+(.*)$/);
      const item = line.match(/^\s*[-*]\s+(.*)$/);
      if (head) { flush(); list = null; root.append(h('h' + (head[1].length + 2), null, inline(head[2]))); }
      else if (item) { flush(); if (!list) { list = h('ul'); root.append(list); } list.append(h('li', null, inline(item[1]))); }
      else if (!line.trim()) { flush(); list = null; }
      else { list = null; para.push(line.trim()); }
    }
    flush();
    return root;
  }

  // BoardsView lists the boards, and makes or imports one.
  class BoardsView {
    constructor(root) {
      document.title = 'Boards · Telehub';
      this.list = h('ul', { class: 'boards' });
      this.error = h('div', { class: 'notice error', role: 'alert', hidden: true });
      this.importText = h('textarea', { class: 'board-json', rows: 6, 'aria-label': 'board JSON to import', placeholder: 'Paste a board exported from a hub (JSON)' });
      root.append(h('h1', { text: 'Boards' }), this.error, this.list);
      // Making and importing boards needs an admin token.
      if (access.admin) {
        root.append(h('div', { class: 'toolbar' }, h('button', { type: 'button', text: 'New board', 'data-action': 'new', onclick: () => this.create() })),
          h('details', null, h('summary', { text: 'Import a board' }), this.importText,
            h('div', { class: 'toolbar' }, h('button', { type: 'button', text: 'Import', 'data-action': 'import', onclick: () => this.import() }))));
      }
      this.load();
    }

    async load() {
      try {
        const res = await api('api/v1/boards');
        this.list.replaceChildren(...res.boards.map((b) => h('li', null, h('a', { href: '#/board/' + b.id, text: b.name }),
          h('span', { class: 'muted', text: ' ' + b.panels.length + (b.panels.length === 1 ? ' panel' : ' panels') }))));
        if (!res.boards.length) this.list.append(h('li', { class: 'muted', text: 'No boards yet: the Fleet board appears once a device has published.' }));
      } catch (e) { this.fail(e); }
    }

    fail(e) { this.error.textContent = e.status === 403 ? 'Changing boards needs an admin token.' : e.message; this.error.hidden = false; }

    async create() {
      try {
        const b = await api('api/v1/boards', null, 'POST', JSON.stringify({ name: 'Board ' + new Date().toLocaleString(), window: '1h',
          panels: [{ kind: 'text', x: 0, y: 0, w: 12, h: 2, text: '# New board\nEdit it (**Edit**) to add panels.' }] }));
        location.hash = '#/board/' + b.id + '?edit=1';
      } catch (e) { this.fail(e); }
    }

    async import() {
      try {
        const b = await api('api/v1/boards', null, 'POST', this.importText.value);
        location.hash = '#/board/' + b.id;
      } catch (e) { this.fail(e); }
    }

    destroy() {}
  }

  // BoardView shows one board: its panels fed by one WebSocket for all of
  // them. Each panel's history comes from the series and device APIs, each
  // answer naming the last message it includes per device; the feed starts
  // at the lowest of those and skips, per device, what the history held,
  // so every reading is shown once, also after a reconnect (the feed
  // resumes from the last seq it saw).
  class BoardView {
    constructor(root, id, params) {
      this.root = root;
      this.id = id;
      this.params = params;
      this.panels = [];
      this.loadGen = 0;
      this.editing = params.get('edit') === '1' && access.admin;
      this.paused = null; // [from, to] while paused
      this.resizer = new ResizeObserver(() => { for (const p of this.panels) if (p.resize) p.resize(); });
      this.onLeave = (e) => { if (this.unsaved) { e.preventDefault(); e.returnValue = ''; } };
      window.addEventListener('beforeunload', this.onLeave);
      // Light and dark follow the system: charts and maps take the new colours.
      this.scheme = matchMedia('(prefers-color-scheme: dark)');
      this.onScheme = () => { for (const p of this.panels) if (p.restyle) p.restyle(); };
      this.scheme.addEventListener('change', this.onScheme);
      this.load();
    }

    // The window: the URL's (a viewer's choice, ?w=), else the board's.
    window() { return (!this.editing && windowMs(this.params.get('w')) ? this.params.get('w') : this.draft.window) || '1h'; }
    windowMs() { return windowMs(this.window()) || 3600e3; }
    range() {
      if (this.paused) return this.paused;
      const now = Date.now();
      return [now - this.windowMs(), now];
    }

    async load() {
      const gen = ++this.loadGen;
      this.stopFeed();
      try {
        const [board, devs] = await Promise.all([api('api/v1/boards/' + this.id), api('api/v1/devices?limit=1000')]);
        if (gen !== this.loadGen) return;
        this.board = board;
        if (!this.unsaved) this.draft = clone(boardBody(board));
        this.devices = new Map(devs.devices.map((d) => [d.id, d]));
        document.title = board.name + ' · Telehub';
        this.build();
        await this.start(gen);
      } catch (e) {
        if (gen !== this.loadGen) return;
        this.root.replaceChildren(h('p', null, h('a', { href: '#/boards', text: '← Boards' })),
          h('div', { class: 'notice error', role: 'alert', text: e.status === 404 ? 'No board ' + this.id + '.' : 'Cannot load the board (' + e.message + ').' }));
      }
    }

    // rebuild shows the draft again: panels anew, their history, the feed;
    // focus (a panel's index) is the panel the keyboard is on afterwards.
    rebuild(focus) {
      this.stopFeed();
      this.build();
      if (focus != null) {
        const el = this.grid.querySelector('section.panel[data-panel="' + focus + '"]') || this.grid.querySelector('section.panel');
        if (el) el.focus();
      }
      return this.start(this.loadGen);
    }

    build() {
      const b = this.draft;
      this.error = h('div', { class: 'notice error', role: 'alert', hidden: true });
      this.live = h('div', { class: 'sr-only', 'aria-live': 'polite' }); // what the keyboard just did
      const win = this.window();
      const winButtons = BOARD_WINDOWS.map(([name]) => h('button', { type: 'button', text: name, 'data-window': name, 'aria-pressed': String(win === name),
        onclick: () => this.setWindow(name) }));
      const custom = h('input', { class: 'window-custom', 'aria-label': 'custom time window (90m, 12h, 3d)', placeholder: 'custom', size: 6,
        value: BOARD_WINDOWS.some(([n]) => n === win) ? '' : win });
      custom.addEventListener('change', () => {
        if (windowMs(custom.value.trim())) this.setWindow(custom.value.trim());
        else { this.fail('A window is minutes, hours or days, from 1m to 90d: 90m, 12h, 3d.'); custom.value = ''; }
      });
      this.pauseButton = h('button', { type: 'button', 'data-action': 'pause', 'aria-pressed': String(!!this.paused), text: this.paused ? 'Follow' : 'Pause',
        title: 'Stop or resume moving the window with time (live data is kept either way)', onclick: () => this.togglePause() });
      // Variables: a device chosen among those of a prefix, kept in the URL.
      this.vars = {};
      const selects = (b.variables || []).map((v) => {
        const choices = [...this.devices.keys()].filter((d) => d.startsWith(v.prefix || '')).sort();
        const want = this.params.get(v.name);
        this.vars[v.name] = choices.includes(want) ? want : choices[0] || '';
        const sel = h('select', { 'aria-label': '$' + v.name, 'data-variable': v.name }, choices.slice(0, 1000).map((d) => h('option', { value: d, text: d, selected: d === this.vars[v.name] })));
        sel.addEventListener('change', () => {
          this.params.set(v.name, sel.value);
          history.replaceState(null, '', '#/board/' + this.id + '?' + this.params);
          this.rebuild();
        });
        return h('label', null, '$' + v.name + ' ', sel);
      });
      this.grid = h('div', { class: 'board-grid', 'data-editing': String(this.editing) });
      const title = this.editing
        ? h('input', { class: 'board-name', 'aria-label': 'board name', value: b.name, maxlength: 200, oninput: (e) => { b.name = e.target.value; this.changed(); } })
        : h('h1', { text: b.name });
      this.root.replaceChildren(
        h('p', null, h('a', { href: '#/boards', text: '← Boards' })),
        title,
        h('div', { class: 'toolbar' }, h('span', { class: 'segmented', role: 'group', 'aria-label': 'time window' }, winButtons), custom, this.pauseButton,
          ...selects, h('span', { class: 'grow' }),
          ...(access.admin ? [
            h('button', { type: 'button', text: this.editing ? 'Done' : 'Edit', 'data-action': 'edit', 'aria-pressed': String(this.editing), onclick: () => this.toggleEdit() }),
            h('button', { type: 'button', text: 'Duplicate', onclick: () => this.duplicate() })] : []),
          h('a', { href: 'api/v1/boards/' + this.id, download: 'board-' + this.id + '.json', text: 'Export' }),
          ...(access.admin ? [h('button', { type: 'button', text: 'Delete', onclick: () => this.remove() })] : [])),
        ...(this.editing ? [this.editBar()] : []),
        this.error, this.live, this.grid);
      for (const p of this.panels) if (p.destroy) p.destroy();
      this.resizer.disconnect();
      this.panels = b.panels.map((spec, i) => this.makePanel(this.bind(spec), i));
      // In the page in reading order (rows, then columns): a phone stacks
      // them so, and Tab goes through them so.
      for (const p of this.panels.slice().sort((a, c) => a.spec.y - c.spec.y || a.spec.x - c.spec.x)) {
        this.place(p);
        this.grid.append(p.el);
        this.resizer.observe(p.el);
      }
      if (!b.panels.length) this.grid.append(h('p', { class: 'muted', text: this.editing ? 'No panels yet: add one above.' : 'No panels yet: Edit to add some.' }));
    }

    // editBar: add panels, save or discard, and the JSON of the whole board.
    editBar() {
      this.saveButton = h('button', { type: 'button', text: 'Save', 'data-action': 'save', class: 'primary', disabled: !this.unsaved, onclick: () => this.save() });
      this.jsonBox = h('textarea', { class: 'board-json', rows: 16, 'aria-label': 'board JSON', spellcheck: 'false' });
      this.jsonBox.value = JSON.stringify(this.draft, null, 2);
      return h('div', { class: 'board-editor' },
        h('div', { class: 'toolbar' },
          h('label', null, 'Add ', h('select', { 'aria-label': 'kind of panel to add', 'data-action': 'add-kind' }, Object.entries(KINDS).map(([k, name]) => h('option', { value: k, text: name })))),
          h('button', { type: 'button', text: 'Add panel', 'data-action': 'add', onclick: (e) => this.editPanel(-1, e.target.previousElementSibling.querySelector('select').value) }),
          this.saveButton,
          h('button', { type: 'button', text: 'Discard changes', 'data-action': 'discard', onclick: () => this.discard() }),
          h('span', { class: 'muted', text: 'Drag a title to move a panel and its corner to resize it; or focus a panel: arrows move, Shift+arrows resize, Enter edits, Delete removes.' })),
        h('details', null, h('summary', { text: 'Board JSON' }), this.jsonBox,
          h('div', { class: 'toolbar' }, h('button', { type: 'button', text: 'Use this JSON', 'data-action': 'apply-json', onclick: () => this.applyJSON() }),
            h('span', { class: 'muted', text: 'Panels: kind, x, y, w, h on a 12-column grid, and the fields of their kind; see docs/boards.md.' }))));
    }

    // canLeave asks before the page leaves a board with unsaved changes.
    canLeave() { return !this.unsaved || confirm('Leave the board? Its changes are not saved.'); }

    toggleEdit() {
      if (this.editing && this.unsaved && !confirm('Leave editing? The changes are not saved.')) return;
      if (this.editing && this.unsaved) this.draft = clone(boardBody(this.board));
      this.editing = !this.editing;
      this.unsaved = false;
      this.params.delete('edit');
      if (this.editing) this.params.set('edit', '1');
      history.replaceState(null, '', '#/board/' + this.id + (String(this.params) ? '?' + this.params : ''));
      this.rebuild();
    }

    // changed marks the draft as differing from what the hub has.
    changed() {
      this.unsaved = true;
      if (this.saveButton) this.saveButton.disabled = false;
      if (this.jsonBox) this.jsonBox.value = JSON.stringify(this.draft, null, 2);
    }

    // setWindow changes the window: the board's own while editing, else
    // only this page's (kept in the URL).
    setWindow(w) {
      this.paused = null;
      if (this.editing) { this.draft.window = w; this.changed(); } else {
        this.params.set('w', w);
        history.replaceState(null, '', '#/board/' + this.id + '?' + this.params);
      }
      this.rebuild();
    }

    togglePause() {
      this.paused = this.paused ? null : this.range();
      this.pauseButton.textContent = this.paused ? 'Follow' : 'Pause';
      this.pauseButton.setAttribute('aria-pressed', String(!!this.paused));
      this.markAll();
    }

    // place puts a panel's element where its spec says.
    place(p) {
      const s = this.draft.panels[p.index];
      p.el.style.gridColumn = (s.x + 1) + ' / span ' + s.w;
      p.el.style.gridRow = (s.y + 1) + ' / span ' + s.h;
      p.el.style.minHeight = (s.h * BOARD_ROW_PX + (s.h - 1) * BOARD_GAP_PX) + 'px';
      Object.assign(p.spec, { x: s.x, y: s.y, w: s.w, h: s.h });
    }

    // bind puts the chosen devices in place of a panel's $variables.
    bind(spec) {
      const v = (d) => (typeof d === 'string' && d.startsWith('$') ? this.vars[d.slice(1)] || '' : d);
      const out = Object.assign({ x: 0, y: 0, w: 6, h: 4 }, spec, { device: v(spec.device) });
      if (spec.series) out.series = spec.series.map((s) => Object.assign({}, s, { device: v(s.device) }));
      if (out.title) out.title = out.title.replace(/\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, n) => (n in this.vars ? this.vars[n] : m));
      return out;
    }

    makePanel(spec, i) {
      const mk = { timeseries: SeriesPanel, stat: StatPanel, table: TablePanel, status: StatusPanel, text: TextPanel, map: MapPanel, command: CommandPanel, alerts: AlertsPanel }[spec.kind] || TextPanel;
      const p = new mk(this, spec);
      p.index = i;
      p.el.setAttribute('data-panel', String(i));
      p.el.setAttribute('data-kind', spec.kind);
      if (this.editing) this.editable(p);
      return p;
    }

    // editable gives a panel its edit controls: drag the title to move,
    // the corner to resize, keys, and edit and remove buttons.
    editable(p) {
      const el = p.el, head = el.querySelector('h3');
      el.tabIndex = 0;
      el.setAttribute('aria-roledescription', 'movable panel');
      el.setAttribute('aria-keyshortcuts', 'ArrowLeft ArrowRight ArrowUp ArrowDown Shift+ArrowLeft Shift+ArrowRight Shift+ArrowUp Shift+ArrowDown Enter Delete');
      const tools = h('span', { class: 'panel-tools' },
        h('button', { type: 'button', text: 'Edit', 'data-action': 'edit-panel', onclick: () => this.editPanel(p.index) }),
        h('button', { type: 'button', text: 'Remove', 'data-action': 'remove-panel', onclick: () => this.removePanel(p.index) }));
      head.append(tools);
      head.classList.add('drag');
      const corner = h('span', { class: 'resize-corner', 'aria-hidden': 'true', title: 'drag to resize' });
      el.append(corner);
      const drag = (e, resize) => {
        if (e.button !== 0 || e.target.closest('button')) return;
        e.preventDefault();
        const s = this.draft.panels[p.index], start = { x: s.x, y: s.y, w: s.w, h: s.h }, x0 = e.clientX, y0 = e.clientY;
        const col = (this.grid.clientWidth + BOARD_GAP_PX) / COLUMNS, row = BOARD_ROW_PX + BOARD_GAP_PX;
        const target = e.currentTarget;
        target.setPointerCapture(e.pointerId);
        el.classList.add('moving');
        const move = (ev) => {
          const dx = Math.round((ev.clientX - x0) / col), dy = Math.round((ev.clientY - y0) / row);
          if (resize) this.setBox(p.index, { x: start.x, y: start.y, w: start.w + dx, h: start.h + dy });
          else this.setBox(p.index, { x: start.x + dx, y: start.y + dy, w: start.w, h: start.h });
        };
        const up = () => {
          target.removeEventListener('pointermove', move);
          target.removeEventListener('pointerup', up);
          target.removeEventListener('pointercancel', up);
          el.classList.remove('moving');
        };
        target.addEventListener('pointermove', move);
        target.addEventListener('pointerup', up);
        target.addEventListener('pointercancel', up);
      };
      head.addEventListener('pointerdown', (e) => drag(e, false));
      corner.addEventListener('pointerdown', (e) => drag(e, true));
      el.addEventListener('keydown', (e) => {
        if (e.target !== el) return; // keys typed in the panel's own inputs
        const s = this.draft.panels[p.index];
        const d = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[e.key];
        if (d) {
          e.preventDefault();
          if (e.shiftKey) this.setBox(p.index, { x: s.x, y: s.y, w: s.w + d[0], h: s.h + d[1] });
          else this.setBox(p.index, { x: s.x + d[0], y: s.y + d[1], w: s.w, h: s.h });
          const n = this.draft.panels[p.index];
          this.live.textContent = (p.spec.title || KINDS[p.spec.kind]) + ': column ' + (n.x + 1) + ', row ' + (n.y + 1) + ', ' + n.w + ' wide, ' + n.h + ' high';
        } else if (e.key === 'Enter') { e.preventDefault(); this.editPanel(p.index); }
        else if (e.key === 'Delete' || e.key === 'Backspace') { e.preventDefault(); this.removePanel(p.index); }
      });
    }

    // setBox moves or resizes panel i, within the grid, and pushes the
    // panels it now overlaps down below it (and those they overlap).
    setBox(i, box) {
      const ps = this.draft.panels;
      const s = ps[i];
      const w = Math.max(1, Math.min(COLUMNS, box.w)), hh = Math.max(1, Math.min(24, box.h));
      const next = { x: Math.max(0, Math.min(COLUMNS - w, box.x)), y: Math.max(0, Math.min(1000, box.y)), w, h: hh };
      if (next.x === s.x && next.y === s.y && next.w === s.w && next.h === s.h) return;
      Object.assign(s, next);
      const overlap = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
      const settle = (j, depth) => {
        if (depth > ps.length) return;
        for (let k = 0; k < ps.length; k++) {
          if (k === j || k === i || !overlap(ps[j], ps[k])) continue;
          ps[k].y = ps[j].y + ps[j].h;
          settle(k, depth + 1);
        }
      };
      settle(i, 0);
      for (const p of this.panels) {
        const before = p.spec.h, wide = p.spec.w;
        this.place(p);
        if ((p.spec.h !== before || p.spec.w !== wide) && p.relayout) p.relayout();
      }
      this.changed();
    }

    removePanel(i) {
      this.draft.panels.splice(i, 1);
      this.changed();
      this.rebuild(Math.min(i, this.draft.panels.length - 1));
    }

    // editPanel opens the form of panel i (-1: a new panel of kind).
    editPanel(i, kind) {
      const known = { devices: [...this.devices.keys()].sort(), metrics: this.metricNames(), variables: (this.draft.variables || []).map((v) => '$' + v.name) };
      const spec = i >= 0 ? clone(this.draft.panels[i]) : newPanel(kind, known);
      openPanelForm(spec, known, i < 0, (out) => {
        if (i >= 0) this.draft.panels[i] = Object.assign(out, { x: spec.x, y: spec.y });
        else {
          out.x = 0;
          out.y = this.draft.panels.reduce((m, q) => Math.max(m, (q.y || 0) + (q.h || 4)), 0);
          this.draft.panels.push(out);
        }
        this.changed();
        this.rebuild(i >= 0 ? i : this.draft.panels.length - 1);
      });
    }

    // metricNames lists the metrics the devices report, most common first.
    metricNames() {
      const n = new Map();
      for (const d of this.devices.values()) for (const k of Object.keys(d.latest || {})) n.set(k, (n.get(k) || 0) + 1);
      return [...n].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([k]) => k);
    }

    applyJSON() {
      let b;
      try { b = JSON.parse(this.jsonBox.value); } catch (e) { this.fail('Not JSON: ' + e.message); return; }
      if (!b || typeof b !== 'object' || !Array.isArray(b.panels)) { this.fail('A board is {"name":...,"panels":[...]}.'); return; }
      this.draft = boardBody(b);
      this.changed();
      this.rebuild();
    }

    discard() {
      this.draft = clone(boardBody(this.board));
      this.unsaved = false;
      this.rebuild();
    }

    // devicesOf lists the devices a series or panel names.
    devicesOf(ref) {
      if (ref.device) return [ref.device];
      const pre = ref.device_prefix || '';
      return [...this.devices.keys()].filter((d) => d.startsWith(pre)).sort().slice(0, BOARD_DEVICES);
    }

    async start(gen) {
      // History of every panel, then one feed from the lowest seq any of
      // them holds; seen[device] is what the history holds of each device.
      // The device list was read at one moment: every message up to its
      // highest last_seq was in it, of every device.
      this.seen = new Map();
      let listed = 0;
      for (const d of this.devices.values()) listed = Math.max(listed, d.last_seq || 0);
      for (const d of this.devices.values()) this.seen.set(d.id, listed);
      this.listed = listed;
      const failed = [];
      await Promise.all(this.panels.map((p) => (p.load ? p.load().catch((e) => failed.push(e.message)) : null)));
      if (gen !== this.loadGen) return;
      if (failed.length) this.fail('Some panels could not load their history: ' + failed[0]);
      let since = this.listed;
      for (const s of this.seen.values()) since = Math.min(since, s);
      for (const p of this.panels) if (p.draw) p.draw();
      this.feed = new LiveFeed({
        since,
        onMessages: (ms) => this.onMessages(ms),
        onStatus: (ev) => { const d = this.devices.get(ev.device); if (d) { d.status = ev.status; this.markAll(); } },
        onCommand: (c) => { for (const p of this.panels) if (p.onCommand && p.onCommand(c)) { p.dirty = true; this.schedule(); } },
        onAlert: (a) => { for (const p of this.panels) if (p.onAlert && p.onAlert(a)) { p.dirty = true; this.schedule(); } },
        onReset: () => this.load(),
        onState: (state, delay) => {
          if (state === 'live') {
            conn.set('live', 'live');
            // Alerts and commands changed while the page was away are not
            // replayed: those panels read theirs again.
            if (this.wasDown) for (const p of this.panels) if (p.reread) p.reread();
            this.wasDown = false;
          } else if (state === 'reconnecting') {
            this.wasDown = true;
            conn.set('reconnecting', 'reconnecting' + (delay ? ' in ' + Math.ceil(delay / 1000) + ' s' : ''));
          } else conn.set('connecting', 'connecting');
        },
      });
      this.slide = setInterval(() => { if (!this.paused) this.markAll(); }, 5000); // the window moves on
    }

    fail(text) { this.error.textContent = text; this.error.hidden = false; }

    // seenSeq records that the history of device holds everything up to seq.
    seenSeq(device, seq) { this.seen.set(device, Math.max(this.seen.get(device) || 0, seq || 0)); }

    onMessages(ms) {
      for (const m of ms) {
        if (m.seq <= (this.seen.has(m.device) ? this.seen.get(m.device) : this.listed)) continue; // in the history already
        this.seen.set(m.device, m.seq);
        let d = this.devices.get(m.device);
        if (!d) { d = { id: m.device, latest: {}, last_seq: 0, message_count: 0 }; this.devices.set(m.device, d); }
        d.last_seen = Math.max(d.last_seen || 0, m.received);
        d.last_seq = m.seq;
        d.message_count = (d.message_count || 0) + 1;
        const rs = readings(m);
        for (const [k, ts, x] of rs) { const l = d.latest[k]; if (!l || ts >= l.ts) d.latest[k] = { v: x, ts, seq: m.seq }; }
        for (const p of this.panels) {
          if (p.onReadings ? p.onReadings(m.device, rs) : p.shows && p.shows(m.device)) p.dirty = true;
        }
      }
      this.schedule();
    }

    markAll() {
      for (const p of this.panels) p.dirty = true;
      this.schedule();
    }

    // schedule redraws the dirty panels at the next animation frame, each
    // at most once per its own interval (a chart of twenty lines need not
    // redraw sixty times a second; a table once a second is plenty), and
    // no more of them in one frame than fit in a few milliseconds: the
    // rest go in the next frames, the longest waiting first.
    schedule() {
      if (this.raf || this.later) return;
      this.raf = requestAnimationFrame(() => {
        this.raf = 0;
        const start = performance.now();
        let wait = Infinity, more = false;
        const due = (p) => (p.drawnAt || 0) + (p.every || 0);
        for (const p of this.panels.filter((q) => q.dirty && q.draw).sort((a, b) => due(a) - due(b))) {
          const now = performance.now();
          if (now < due(p)) { wait = Math.min(wait, due(p) - now); continue; }
          if (now - start > FRAME_BUDGET_MS) { more = true; break; }
          p.dirty = false;
          p.drawnAt = now;
          p.draw();
        }
        if (more) this.schedule();
        else if (wait < Infinity) this.later = setTimeout(() => { this.later = 0; this.schedule(); }, wait);
      });
    }

    async save() {
      try {
        this.board = await api('api/v1/boards/' + this.id, null, 'PUT', JSON.stringify(this.draft));
        this.draft = clone(boardBody(this.board));
        this.unsaved = false;
        document.title = this.board.name + ' · Telehub';
        await this.rebuild();
      } catch (e) {
        this.fail(e.status === 403 ? 'Changing a board needs an admin token.' : 'Not saved: ' + e.message);
      }
    }

    async duplicate() {
      try {
        const b = await api('api/v1/boards', null, 'POST', JSON.stringify(Object.assign(clone(this.draft), { name: this.draft.name + ' (copy ' + new Date().toLocaleTimeString() + ')' })));
        location.hash = '#/board/' + b.id;
      } catch (e) { this.fail(e.status === 403 ? 'Making a board needs an admin token.' : e.message); }
    }

    async remove() {
      if (!confirm('Delete the board “' + this.board.name + '”?')) return;
      try { await api('api/v1/boards/' + this.id, null, 'DELETE'); this.unsaved = false; location.hash = '#/boards'; } catch (e) { this.fail(e.status === 403 ? 'Deleting a board needs an admin token.' : e.message); }
    }

    stopFeed() {
      if (this.feed) this.feed.stop();
      this.feed = null;
      clearInterval(this.slide);
    }

    // snapshot is the board's state for tests: each panel's points.
    snapshot() {
      return { id: this.id, live: !!(this.feed && this.feed.ws && this.feed.live), seq: this.feed ? this.feed.seq : null, unsaved: !!this.unsaved,
        layout: this.draft.panels.map((s) => [s.x, s.y, s.w, s.h]),
        panels: this.panels.map((p) => (p.snapshot ? p.snapshot() : { kind: p.spec.kind })) };
    }

    destroy() {
      this.loadGen++;
      this.stopFeed();
      cancelAnimationFrame(this.raf);
      clearTimeout(this.later);
      this.resizer.disconnect();
      window.removeEventListener('beforeunload', this.onLeave);
      this.scheme.removeEventListener('change', this.onScheme);
      for (const p of this.panels) if (p.destroy) p.destroy();
    }
  }

  // newPanel is a new panel of kind, filled from what the devices report.
  function newPanel(kind, known) {
    const device = known.variables[0] || known.devices[0] || '', metric = known.metrics.find((m) => m !== 'lat' && m !== 'lon') || 'temp';
    return {
      timeseries: { kind, w: 6, h: 4, series: [{ device_prefix: '', metric }] },
      stat: { kind, w: 3, h: 3, device, metric },
      table: { kind, w: 6, h: 4, device_prefix: '' },
      map: { kind, w: 6, h: 6, device_prefix: '', track: true },
      status: { kind, w: 4, h: 4, device_prefix: '' },
      text: { kind, w: 6, h: 2, text: '## Notes\nWhat this board is for, with [links](https://example.com).' },
      command: { kind, w: 3, h: 3, device, method: 'ping' },
      alerts: { kind, w: 6, h: 4, device_prefix: '' },
    }[kind];
  }

  // parseThresholds reads "30 #d97706, 40 red" into [{value, color}].
  function parseThresholds(text) {
    const out = [];
    for (const part of text.split(',').map((t) => t.trim()).filter(Boolean)) {
      const m = /^(-?[0-9.eE+-]+)\s+(\S+)$/.exec(part);
      if (!m || !Number.isFinite(+m[1])) throw new Error('thresholds: write each as a value and a colour, such as "30 #d97706, 40 red"');
      out.push({ value: +m[1], color: m[2] });
    }
    return out;
  }

  // openPanelForm edits a panel in a dialog, its fields those of its kind,
  // and calls apply with the panel when the form is submitted. Device
  // fields offer the devices and the board's $variables, metric fields the
  // metrics the devices report.
  function openPanelForm(spec, known, isNew, apply) {
    const uid = 'pf' + Math.random().toString(36).slice(2, 8);
    const lists = [
      h('datalist', { id: uid + '-dev' }, [...known.variables, ...known.devices.slice(0, 500)].map((d) => h('option', { value: d }))),
      h('datalist', { id: uid + '-met' }, known.metrics.slice(0, 500).map((m) => h('option', { value: m }))),
    ];
    const field = (name, label, value, attrs) => h('label', { class: 'field' }, h('span', { text: label }),
      h('input', Object.assign({ name, value: value == null ? '' : String(value) }, attrs || {})));
    const check = (name, label, on) => h('label', { class: 'field check' }, h('input', { type: 'checkbox', name, checked: !!on }), h('span', { text: label }));
    const deviceField = (value) => field('device', 'Device', value, { list: uid + '-dev', required: true, placeholder: 'device id or $variable' });
    const prefixField = (value) => field('device_prefix', 'Devices whose id starts with', value, { list: uid + '-dev', placeholder: 'empty: every device' });
    const metricField = (value) => field('metric', 'Metric', value, { list: uid + '-met', required: true });
    const display = () => [
      field('unit', 'Unit', spec.unit, { size: 6, maxlength: 32, placeholder: 'the metric\'s' }),
      field('decimals', 'Decimals', spec.decimals, { type: 'number', min: 0, max: 10 }),
      field('thresholds', 'Thresholds (value colour, …)', (spec.thresholds || []).map((t) => t.value + ' ' + t.color).join(', '), { placeholder: '30 #d97706, 40 #dc2626' }),
    ];
    const seriesRows = h('div', { class: 'series-rows' });
    const addSeries = (s, n) => {
      const byPrefix = !s.device;
      const row = h('fieldset', { class: 'series-row', 'data-series': '' },
        h('legend', { text: 'Series' }),
        h('label', { class: 'field' }, h('span', { text: 'Of' }), h('select', { name: 'mode' },
          h('option', { value: 'device', text: 'one device', selected: !byPrefix }), h('option', { value: 'prefix', text: 'devices whose id starts with', selected: byPrefix }))),
        field('target', 'Device or prefix', byPrefix ? s.device_prefix || '' : s.device, { list: uid + '-dev', placeholder: 'empty prefix: every device' }),
        metricField(s.metric),
        field('label', 'Label', s.label, { maxlength: 200 }),
        h('label', { class: 'field' }, h('span', { text: 'Colour' }), h('input', { type: 'color', name: 'color', value: s.color || PALETTE[n % PALETTE.length] })),
        h('button', { type: 'button', text: 'Remove series', onclick: () => { if (seriesRows.children.length > 1) row.remove(); } }));
      seriesRows.append(row);
    };
    let body;
    switch (spec.kind) {
      case 'timeseries':
        (spec.series || []).forEach((s, n) => addSeries(s, n));
        body = [seriesRows, h('button', { type: 'button', text: 'Add series', 'data-action': 'add-series', onclick: () => addSeries({ device_prefix: '', metric: known.metrics[0] || '' }, seriesRows.children.length) }),
          h('div', { class: 'fields' }, display(), field('min', 'Y min', spec.min, { type: 'number', step: 'any' }), field('max', 'Y max', spec.max, { type: 'number', step: 'any' }))];
        break;
      case 'stat':
        body = [h('div', { class: 'fields' }, deviceField(spec.device), metricField(spec.metric), display(),
          check('gauge', 'Draw a gauge from min to max', spec.gauge), field('min', 'Min', spec.min, { type: 'number', step: 'any' }), field('max', 'Max', spec.max, { type: 'number', step: 'any' }))];
        break;
      case 'table': body = [h('div', { class: 'fields' }, prefixField(spec.device_prefix), field('columns', 'Columns (metrics, comma separated)', (spec.columns || []).join(', '), { placeholder: 'empty: the most common' }), display())]; break;
      case 'status': case 'alerts': body = [h('div', { class: 'fields' }, prefixField(spec.device_prefix))]; break;
      case 'map':
        body = [h('div', { class: 'fields' }, prefixField(spec.device_prefix), check('track', 'Draw each device\'s track over the window', spec.track),
          field('tiles', 'Tile URL (online maps; empty: the country outlines shipped with the hub)', spec.tiles, { type: 'url', placeholder: 'https://tile.openstreetmap.org/{z}/{x}/{y}.png', size: 40 }))];
        break;
      case 'text': body = [h('label', { class: 'field wide' }, h('span', { text: 'Markdown' }), h('textarea', { name: 'text', rows: 8, maxlength: 20480, text: spec.text || '' }))]; break;
      case 'command':
        body = [h('div', { class: 'fields' }, deviceField(spec.device), field('method', 'Method', spec.method, { required: true, pattern: '[A-Za-z0-9_.:\\-]{1,64}' }),
          field('button', 'Button label', spec.button, { maxlength: 200, placeholder: spec.method || '' })),
          h('label', { class: 'field wide' }, h('span', { text: 'Params (a JSON object)' }), h('textarea', { name: 'params', rows: 3, class: 'mono', text: spec.params ? JSON.stringify(spec.params) : '' }))];
        break;
      default: body = [];
    }
    const error = h('p', { class: 'error', role: 'alert' });
    const form = h('form', { method: 'dialog', class: 'panel-form' },
      h('h2', { text: (isNew ? 'New panel: ' : 'Panel: ') + (KINDS[spec.kind] || spec.kind) }),
      h('div', { class: 'fields' }, field('title', 'Title', spec.title, { maxlength: 200 }),
        field('w', 'Width (of 12)', spec.w || 6, { type: 'number', min: 1, max: 12, required: true }), field('h', 'Height (rows)', spec.h || 4, { type: 'number', min: 1, max: 24, required: true })),
      body, error,
      h('div', { class: 'toolbar' }, h('button', { type: 'submit', class: 'primary', text: isNew ? 'Add' : 'Apply', 'data-action': 'apply-panel' }),
        h('button', { type: 'button', text: 'Cancel', onclick: () => dlg.close() })));
    const dlg = h('dialog', { class: 'panel-dialog', 'aria-label': 'panel settings' }, lists, form);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const f = new FormData(form), str = (k) => String(f.get(k) == null ? '' : f.get(k)).trim();
      const num = (k) => (str(k) === '' ? undefined : Number(str(k)));
      try {
        const out = { kind: spec.kind };
        if (str('title')) out.title = str('title');
        out.w = Math.max(1, Math.min(12, num('w') || 6));
        out.h = Math.max(1, Math.min(24, num('h') || 4));
        for (const k of ['device', 'metric', 'device_prefix', 'unit', 'method', 'button', 'tiles']) if (str(k) && !(spec.kind === 'timeseries' && (k === 'device' || k === 'metric'))) out[k] = str(k);
        if (spec.kind === 'table' && str('columns')) out.columns = str('columns').split(',').map((c) => c.trim()).filter(Boolean);
        for (const k of ['decimals', 'min', 'max']) if (num(k) !== undefined) out[k] = num(k);
        if (str('thresholds')) out.thresholds = parseThresholds(str('thresholds'));
        if (spec.kind === 'map' && f.get('track')) out.track = true;
        if (spec.kind === 'stat' && f.get('gauge')) out.gauge = true;
        if (spec.kind === 'text') out.text = String(f.get('text') || '');
        if (spec.kind === 'command' && str('params')) {
          try { out.params = JSON.parse(str('params')); } catch (_) { throw new Error('params: not JSON'); }
          if (!out.params || typeof out.params !== 'object' || Array.isArray(out.params)) throw new Error('params: want a JSON object such as {"seconds":5}');
        }
        if (spec.kind === 'timeseries') {
          out.series = [...seriesRows.querySelectorAll('[data-series]')].map((row) => {
            const v = (n) => row.querySelector('[name="' + n + '"]').value.trim();
            const s = v('mode') === 'device' ? { device: v('target') } : { device_prefix: v('target') };
            s.metric = v('metric');
            if (v('label')) s.label = v('label');
            s.color = v('color');
            if (v('mode') === 'device' && !s.device) throw new Error('series: name a device, or choose "devices whose id starts with"');
            return s;
          });
        }
        apply(out);
        dlg.close();
      } catch (err) { error.textContent = err.message; }
    });
    dlg.addEventListener('close', () => dlg.remove());
    document.body.append(dlg);
    dlg.showModal();
    const first = form.querySelector('input[name="device"], input[name="target"], input[name="title"]');
    if (first) first.focus();
    return dlg;
  }

  // Panel is what every kind of panel shares: its board, its spec (with
  // the board's variables bound), its frame (a section with the title and
  // a body) and how often it may redraw (every, ms; see BoardView.schedule).
  class Panel {
    constructor(board, spec, cls, every) {
      this.board = board;
      this.spec = spec;
      this.every = every;
      this.body = h('div', { class: 'panel-body ' + cls });
      const title = spec.title || (spec.metric ? metricSettings.label(spec.metric) : spec.kind === 'command' ? spec.method : KINDS[spec.kind] || spec.kind);
      this.el = h('section', { class: 'panel', 'aria-label': title }, h('h3', null, h('span', { class: 'panel-title', text: title })), this.body);
    }
  }

  // panelHeight is the pixel height of a panel's body: its rows less the
  // title.
  const panelHeight = (spec) => spec.h * BOARD_ROW_PX + (spec.h - 1) * BOARD_GAP_PX - 44;

  // SeriesPanel draws metrics of devices on one chart. Its history comes
  // downsampled to about a point per pixel, so a 30-day window costs the
  // page what five minutes do.
  class SeriesPanel extends Panel {
    constructor(board, spec) {
      super(board, spec, 'plot', 200);
      this.lines = []; // {device, metric, label, color, points: Points}
      this.hover = h('span', { class: 'hover muted' });
      this.el.querySelector('h3').append(this.hover);
    }

    // display: the panel's own settings, else those of its first metric.
    display() { return metricSettings.display(this.spec.series[0].metric, this.spec); }

    async load() {
      const b = this.board;
      this.lines = [];
      let n = 0;
      for (const ref of this.spec.series) {
        const devs = b.devicesOf(ref);
        for (const d of devs) {
          const name = ref.label || metricSettings.label(ref.metric);
          this.lines.push({ device: d, metric: ref.metric, label: ref.label && devs.length === 1 ? ref.label : d + ' ' + name,
            color: ref.color && d === devs[0] ? ref.color : PALETTE[n % PALETTE.length], points: new Points(0) });
          n++;
        }
      }
      const [from, to] = b.range();
      const width = this.body.clientWidth || 600;
      const byDevice = new Map();
      for (const l of this.lines) { if (!byDevice.has(l.device)) byDevice.set(l.device, new Set()); byDevice.get(l.device).add(l.metric); }
      await Promise.all([...byDevice].map(async ([d, metrics]) => {
        const q = new URLSearchParams({ metrics: [...metrics].join(','), from: String(from), to: String(to), max_points: String(Math.max(50, Math.min(1000, width))), counts: '1' });
        try {
          const s = await api('api/v1/devices/' + enc(d) + '/series?' + q);
          b.seenSeq(d, s.seq);
          for (const l of this.lines) if (l.device === d) { l.points = new Points(s.interval_ms || 0); if (s.points[l.metric]) l.points.load(s.points[l.metric]); }
        } catch (e) { if (e.status !== 404) throw e; }
      }));
    }

    onReadings(device, rs) {
      let hit = false;
      for (const [k, ts, x] of rs) for (const l of this.lines) if (l.device === device && l.metric === k) { l.points.add(ts, x); hit = true; }
      return hit;
    }

    data() {
      const [from] = this.board.range();
      const xs = new Set();
      for (const l of this.lines) { l.points.trim(from, 5000); for (const x of l.points.xs) xs.add(x); }
      const all = [...xs].sort((a, b) => a - b);
      const at = new Map(all.map((x, i) => [x, i]));
      return [all, ...this.lines.map((l) => { const ys = new Array(all.length).fill(null); l.points.xs.forEach((x, i) => { ys[at.get(x)] = l.points.ys[i]; }); return ys; })];
    }

    draw() {
      const data = this.data();
      if (!this.u || this.u.series.length !== this.lines.length + 1) this.make(data);
      else this.u.setData(data);
    }

    make(data) {
      if (this.u) this.u.destroy();
      const d = this.display();
      const axis = { stroke: cssVar('--muted'), grid: { stroke: cssVar('--grid'), width: 1 }, ticks: { stroke: cssVar('--grid'), width: 1 } };
      const legend = this.lines.length > 1 && this.lines.length <= 8;
      this.u = new uPlot({
        width: Math.max(200, this.body.clientWidth || 400), height: Math.max(100, panelHeight(this.spec) - (legend ? 28 : 0)), ms: 1,
        cursor: { drag: { x: false, y: false } },
        legend: { show: legend, live: false },
        hooks: { draw: [(u) => this.drawThresholds(u)], setCursor: [(u) => { const i = u.cursor.idx; this.hover.textContent = i == null ? '' : new Date(u.data[0][i]).toLocaleString(); }] },
        scales: { x: { time: true, range: () => this.board.range() }, y: yRange(d) },
        series: [{}, ...this.lines.map((l) => ({ label: l.label, stroke: l.color, width: 1.5, spanGaps: true, value: (u, v) => fmtWith(metricSettings.display(l.metric, this.spec), v) }))],
        axes: [Object.assign({ space: 90 }, axis), Object.assign({ size: axisSize, values: (u, splits) => axisValues(splits) }, axis, d.unit ? { label: d.unit, labelSize: 18 } : {})],
      }, data || this.data(), this.body);
    }

    drawThresholds(u) {
      const ctx = u.ctx;
      for (const t of this.spec.thresholds || []) {
        const y = u.valToPos(t.value, 'y', true);
        if (!(y >= u.bbox.top && y <= u.bbox.top + u.bbox.height)) continue;
        ctx.save();
        ctx.strokeStyle = t.color;
        ctx.setLineDash([4, 4]);
        ctx.beginPath();
        ctx.moveTo(u.bbox.left, y);
        ctx.lineTo(u.bbox.left + u.bbox.width, y);
        ctx.stroke();
        ctx.restore();
      }
    }

    resize() { if (this.u) this.u.setSize({ width: Math.max(200, this.body.clientWidth), height: this.u.height }); }
    relayout() { if (this.u) this.make(); }
    restyle() { if (this.u) this.make(); }

    snapshot() { return { kind: 'timeseries', lines: this.lines.map((l) => ({ device: l.device, metric: l.metric, xs: l.points.xs.slice(), ys: l.points.ys.slice(), ns: l.points.ns.slice() })) }; }

    destroy() { if (this.u) this.u.destroy(); this.u = null; }
  }

  // StatPanel: the latest value of one metric, coloured by threshold, with
  // a sparkline of the window.
  class StatPanel extends Panel {
    constructor(board, spec) {
      super(board, spec, 'stat', 200);
      this.value = h('div', { class: 'stat-value' });
      this.spark = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
      this.spark.setAttribute('class', 'spark');
      this.spark.setAttribute('preserveAspectRatio', 'none');
      this.spark.setAttribute('viewBox', '0 0 100 30');
      this.spark.setAttribute('aria-hidden', 'true');
      this.line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
      this.spark.append(this.line);
      if (spec.gauge) {
        // An arc from min to max, filled up to the value.
        const svg = (tag, attrs) => { const e = document.createElementNS('http://www.w3.org/2000/svg', tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; };
        this.gauge = svg('svg', { class: 'gauge', viewBox: '0 0 100 64', 'aria-hidden': 'true' });
        this.track = svg('path', { class: 'gauge-track', d: 'M 10 50 A 40 40 0 0 1 90 50' });
        this.arc = svg('path', { class: 'gauge-value', d: '' });
        this.lo = svg('text', { x: '10', y: '63', 'text-anchor': 'middle' });
        this.hi = svg('text', { x: '90', y: '63', 'text-anchor': 'middle' });
        this.gauge.append(this.track, this.arc, this.lo, this.hi);
        this.body.classList.add('has-gauge');
        this.body.append(this.gauge, this.value, this.spark);
      } else this.body.append(this.value, this.spark);
      this.points = new Points(0);
    }

    // drawGauge fills the arc to v's place between min and max (the
    // panel's, else the metric's, else 0 and 100).
    drawGauge(v, color) {
      const d = metricSettings.display(this.spec.metric, this.spec);
      const lo = d.min != null ? d.min : 0, hi = d.max != null ? d.max : 100;
      this.lo.textContent = fmtValue(lo);
      this.hi.textContent = fmtValue(hi);
      if (typeof v !== 'number' || !(hi > lo)) { this.arc.setAttribute('d', ''); return; }
      const f = Math.min(1, Math.max(0, (v - lo) / (hi - lo))), a = Math.PI * (1 - f);
      this.arc.setAttribute('d', f === 0 ? '' : 'M 10 50 A 40 40 0 0 1 ' + (50 + 40 * Math.cos(a)).toFixed(2) + ' ' + (50 - 40 * Math.sin(a)).toFixed(2));
      this.arc.style.stroke = color || '';
    }

    async load() {
      if (!this.spec.device) return;
      const [from, to] = this.board.range();
      const q = new URLSearchParams({ metrics: this.spec.metric, from: String(from), to: String(to), max_points: '100', counts: '1' });
      try {
        const s = await api('api/v1/devices/' + enc(this.spec.device) + '/series?' + q);
        this.board.seenSeq(this.spec.device, s.seq);
        this.points = new Points(s.interval_ms || 0);
        if (s.points[this.spec.metric]) this.points.load(s.points[this.spec.metric]);
      } catch (e) { if (e.status !== 404) throw e; }
    }

    onReadings(device, rs) {
      if (device !== this.spec.device) return false;
      for (const [k, ts, x] of rs) if (k === this.spec.metric) this.points.add(ts, x);
      return true;
    }

    draw() {
      const d = this.board.devices.get(this.spec.device);
      const l = d && d.latest ? d.latest[this.spec.metric] : null;
      const v = l ? l.v : null;
      this.value.textContent = fmtPanel(this.spec, v);
      const color = typeof v === 'number' ? thresholdColor(this.spec, v) || '' : '';
      this.value.style.color = color;
      if (this.gauge) this.drawGauge(v, color);
      this.points.trim(this.board.range()[0], 1000);
      const ys = this.points.ys.filter((y) => y != null);
      if (ys.length < 2) { this.line.setAttribute('points', ''); return; }
      const [x0, x1] = this.board.range();
      let lo = Infinity, hi = -Infinity;
      for (const y of ys) { if (y < lo) lo = y; if (y > hi) hi = y; }
      const span = hi - lo || 1;
      this.line.setAttribute('points', this.points.xs.map((x, i) => this.points.ys[i] == null ? null : ((x - x0) / (x1 - x0) * 100).toFixed(2) + ',' + (28 - (this.points.ys[i] - lo) / span * 26).toFixed(2)).filter(Boolean).join(' '));
    }

    snapshot() {
      const d = this.board.devices.get(this.spec.device);
      return { kind: 'stat', value: this.value.textContent, latest: d && d.latest[this.spec.metric] ? d.latest[this.spec.metric].v : null, gauge: this.arc ? this.arc.getAttribute('d') : null };
    }
  }

  // TablePanel: the latest values of many devices, one row each, sortable.
  class TablePanel extends Panel {
    constructor(board, spec) {
      super(board, spec, 'table-wrap', 1000);
      this.sort = 'id';
      this.desc = false;
    }

    devices() { return [...this.board.devices.values()].filter((d) => d.id.startsWith(this.spec.device_prefix || '')); }

    columns() {
      if (this.spec.columns && this.spec.columns.length) return this.spec.columns;
      const seen = new Map();
      for (const d of this.devices()) for (const [k, l] of Object.entries(d.latest || {})) if (typeof l.v === 'number') seen.set(k, (seen.get(k) || 0) + 1);
      return [...seen].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 6).map(([k]) => k);
    }

    shows(device) { return device.startsWith(this.spec.device_prefix || ''); }

    // draw updates the table in place: rows are kept per device and only
    // the cells whose text changed are written, so a table of hundreds of
    // devices costs a frame little; it is rebuilt when the columns change.
    draw() {
      const cols = this.columns();
      const val = (d, c) => (c === 'id' ? d.id : c === 'status' ? statusOf(d.status, d.last_seen) : d.latest && d.latest[c] ? d.latest[c].v : null);
      const rows = this.devices().sort((a, b) => {
        const x = val(a, this.sort), y = val(b, this.sort);
        const c = x == null ? 1 : y == null ? -1 : x < y ? -1 : x > y ? 1 : 0;
        return this.desc ? -c : c;
      }).slice(0, 500);
      const key = cols.join('\u0000') + '\u0000' + this.sort + '\u0000' + this.desc;
      if (key !== this.key) {
        this.key = key;
        this.rows = new Map(); // device -> {tr, status, cells}
        const head = ['id', 'status', ...cols].map((c) => {
          const d = c === 'id' || c === 'status' ? {} : metricSettings.display(c, this.spec);
          const b = h('button', { type: 'button', text: (c === 'id' ? 'device' : c === 'status' ? 'status' : metricSettings.label(c)) + (d.unit ? ' (' + d.unit + ')' : ''),
            onclick: () => { if (this.sort === c) this.desc = !this.desc; else { this.sort = c; this.desc = false; } this.draw(); } });
          const th = h('th', null, b);
          if (this.sort === c) th.setAttribute('aria-sort', this.desc ? 'descending' : 'ascending');
          return th;
        });
        this.tbody = h('tbody');
        this.body.replaceChildren(h('table', { class: 'devices' }, h('thead', null, h('tr', null, head)), this.tbody));
        this.order = '';
      }
      const disps = cols.map((c) => Object.assign({}, metricSettings.display(c, this.spec), { unit: '' }));
      for (const d of rows) {
        let r = this.rows.get(d.id);
        if (!r) {
          r = { tr: h('tr', { 'data-device': d.id }), status: '', cells: cols.map(() => h('td', { class: 'num' })), badge: h('span') };
          r.statusTd = h('td');
          r.tr.append(h('td', null, h('a', { href: '#/device/' + enc(d.id), text: d.id }), ' ', r.badge), r.statusTd, ...r.cells);
          this.rows.set(d.id, r);
        }
        const st = statusOf(d.status, d.last_seen);
        if (st !== r.status) { r.status = st; r.statusTd.replaceChildren(statusEl(st)); }
        const badge = alertBadge(d.id);
        const bt = badge ? badge.textContent + badge.dataset.severity : '';
        if (bt !== r.badgeText) { r.badgeText = bt; r.badge.replaceChildren(...(badge ? [badge] : [])); }
        cols.forEach((c, i) => {
          const v = val(d, c), text = fmtWith(disps[i], v), color = typeof v === 'number' ? thresholdColor(this.spec, v) || '' : '';
          const td = r.cells[i];
          if (td.textContent !== text) td.textContent = text;
          if (td.style.color !== color) td.style.color = color;
        });
      }
      const order = rows.map((d) => d.id).join('\u0000');
      if (order !== this.order) {
        this.order = order;
        this.tbody.replaceChildren(...rows.map((d) => this.rows.get(d.id).tr));
      }
    }

    snapshot() { return { kind: 'table', rows: [...this.body.querySelectorAll('tbody tr')].map((tr) => [...tr.children].map((td) => td.textContent.trim())) }; }
  }

  // StatusPanel: online/offline and last seen of a set of devices.
  class StatusPanel extends Panel {
    constructor(board, spec) {
      super(board, spec, 'status-list', 1000);
    }

    shows(device) { return device.startsWith(this.spec.device_prefix || ''); }

    // draw updates the list in place, like TablePanel: an item per device,
    // its status rewritten only when it changes; "12 s ago" is kept
    // current by the page's ticker from the item's data-ago.
    draw() {
      const devs = [...this.board.devices.values()].filter((d) => d.id.startsWith(this.spec.device_prefix || '')).sort((a, b) => (a.id < b.id ? -1 : 1)).slice(0, 500);
      if (!this.list) {
        this.summary = h('p', { class: 'muted' });
        this.list = h('ul');
        this.items = new Map(); // device -> {li, state, seen}
        this.body.replaceChildren(this.summary, this.list);
        this.order = '';
      }
      const n = { online: 0, offline: 0, active: 0, idle: 0 };
      for (const d of devs) {
        const st = statusOf(d.status, d.last_seen);
        n[st]++;
        let it = this.items.get(d.id);
        if (!it) {
          it = { state: '', seen: d.last_seen, dot: h('span'), ago: agoEl(d.last_seen) };
          it.li = h('li', { 'data-device': d.id }, it.dot, ' ', h('a', { href: '#/device/' + enc(d.id), text: d.id }), ' ', h('span', { class: 'muted' }, it.ago));
          this.items.set(d.id, it);
        }
        if (it.state !== st) { it.state = st; it.dot.replaceChildren(statusEl(st)); }
        if (it.seen !== d.last_seen) { it.seen = d.last_seen; it.ago.setAttribute('data-ago', d.last_seen || 0); } // the page's ticker rewrites the text
      }
      const summary = (n.online + n.active) + ' up, ' + (n.offline + n.idle) + ' down or quiet, of ' + devs.length;
      if (this.summary.textContent !== summary) this.summary.textContent = summary;
      const order = devs.map((d) => d.id).join('\u0000');
      if (order !== this.order) {
        this.order = order;
        this.list.replaceChildren(...devs.map((d) => this.items.get(d.id).li));
      }
    }
  }

  // TextPanel: Markdown, rendered safely.
  class TextPanel extends Panel {
    constructor(board, spec) {
      super(board, spec, 'text', 0);
      this.body.append(markdown(spec.text || ''));
    }
  }

  // MapPanel: where devices that report lat and lon are, and optionally
  // their tracks over the window, drawn with Leaflet over the country
  // outlines shipped with the hub (no tile server, no Internet), or over
  // the panel's tile URL.
  class MapPanel extends Panel {
    constructor(board, spec) {
      super(board, spec, 'map', 1000);
      this.mapEl = h('div', { class: 'map-canvas', role: 'img', 'aria-label': 'map of device positions' });
      this.note = h('p', { class: 'muted map-note' });
      this.body.append(this.mapEl, this.note);
      this.tracks = new Map(); // device -> [[lat, lon]]
      this.markers = new Map(); // device -> circle marker
      this.lines = new Map(); // device -> polyline
    }

    shows(device) { return device.startsWith(this.spec.device_prefix || ''); }

    placed() {
      const num = (l) => l && typeof l.v === 'number' && Number.isFinite(l.v);
      return [...this.board.devices.values()].filter((d) => this.shows(d.id) && d.latest && num(d.latest.lat) && num(d.latest.lon) &&
        Math.abs(d.latest.lat.v) <= 90 && Math.abs(d.latest.lon.v) <= 180);
    }

    async load() {
      try { this.countries = await loadLeaflet(); } catch (e) { this.failed = 'The map cannot load (' + e.message + ').'; return; }
      if (!this.spec.track) return;
      const [from, to] = this.board.range();
      await Promise.all(this.placed().slice(0, BOARD_DEVICES).map(async (d) => {
        const q = new URLSearchParams({ metrics: 'lat,lon', from: String(from), to: String(to), max_points: '500', counts: '1' });
        try {
          const s = await api('api/v1/devices/' + enc(d.id) + '/series?' + q);
          this.board.seenSeq(d.id, s.seq);
          const lon = new Map((s.points.lon || []).map(([t, v]) => [t, v]));
          this.tracks.set(d.id, (s.points.lat || []).filter(([t, v]) => v != null && lon.get(t) != null).map(([t, v]) => [v, lon.get(t)]));
        } catch (e) { if (e.status !== 404) throw e; }
      }));
    }

    onReadings(device, rs) {
      if (!this.shows(device)) return false;
      if (this.spec.track) {
        let lat = null, lon = null;
        for (const [k, , x] of rs) { if (k === 'lat') lat = x; else if (k === 'lon') lon = x; }
        if (lat != null && lon != null) {
          const t = this.tracks.get(device) || [];
          t.push([lat, lon]);
          if (t.length > 2000) t.splice(0, t.length - 2000);
          this.tracks.set(device, t);
        }
      }
      return true;
    }

    make() {
      const L = window.L;
      // No animations: a map removed while one runs throws, and a board
      // redraws often enough without them.
      this.map = L.map(this.mapEl, { worldCopyJump: true, attributionControl: !!this.spec.tiles, zoomSnap: 0.5, zoomAnimation: false, fadeAnimation: false, markerZoomAnimation: false });
      if (this.spec.tiles) {
        L.tileLayer(this.spec.tiles, { maxZoom: 19, attribution: 'tiles: ' + new URL(this.spec.tiles).host }).addTo(this.map);
      } else {
        this.outline = L.geoJSON(this.countries, { interactive: false, style: { color: cssVar('--map-border'), weight: 0.6, fillColor: cssVar('--map-land'), fillOpacity: 1 } }).addTo(this.map);
      }
      this.map.setView([20, 0], 1);
      // Until the user pans or zooms, the map keeps every device in view.
      this.map.on('dragstart', () => { this.touched = true; });
      this.mapEl.addEventListener('wheel', () => { this.touched = true; }, { passive: true });
      this.mapEl.addEventListener('click', (e) => { if (e.target.closest('.leaflet-control-zoom')) this.touched = true; });
    }

    fit() {
      const pts = this.placed();
      if (!pts.length) return;
      const all = pts.map((d) => [d.latest.lat.v, d.latest.lon.v]);
      for (const t of this.tracks.values()) all.push(...t);
      this.map.fitBounds(window.L.latLngBounds(all).pad(0.3), { maxZoom: 12, animate: false });
      this.fitted = true;
    }

    draw() {
      if (this.failed || !window.L) { this.note.textContent = this.failed || 'Loading the map…'; return; }
      if (!this.map) this.make();
      const L = window.L, pts = this.placed(), accent = cssVar('--accent');
      for (const d of pts) {
        const at = [d.latest.lat.v, d.latest.lon.v];
        let m = this.markers.get(d.id);
        if (!m) {
          m = L.circleMarker(at, { radius: 6, color: '#fff', weight: 1.5, fillColor: accent, fillOpacity: 0.9 }).addTo(this.map);
          m.on('click', () => { location.hash = '#/device/' + enc(d.id); });
          this.markers.set(d.id, m);
        } else m.setLatLng(at);
        m.bindTooltip(d.id + '  ' + at[0].toFixed(5) + ', ' + at[1].toFixed(5));
        const t = this.tracks.get(d.id);
        if (t && t.length > 1) {
          let line = this.lines.get(d.id);
          if (!line) { line = L.polyline(t, { color: accent, weight: 2, opacity: 0.6, interactive: false }).addTo(this.map); this.lines.set(d.id, line); } else line.setLatLngs(t);
        }
      }
      if (!this.fitted) this.fit();
      this.note.textContent = pts.length + (pts.length === 1 ? ' device' : ' devices') + ' with a position' + (pts.length ? '' : ' (metrics lat and lon)');
    }

    restyle() {
      if (this.outline) this.outline.setStyle({ color: cssVar('--map-border'), fillColor: cssVar('--map-land') });
      for (const m of this.markers.values()) m.setStyle({ fillColor: cssVar('--accent') });
      for (const l of this.lines.values()) l.setStyle({ color: cssVar('--accent') });
    }

    resize() {
      if (!this.map) return;
      this.map.invalidateSize({ animate: false });
      if (!this.touched) this.fit();
    }

    snapshot() {
      return { kind: 'map', base: this.spec.tiles ? 'tiles' : this.outline ? 'outline' : 'none', outlines: this.outline ? this.outline.getLayers().length : 0,
        markers: [...this.markers].map(([device, m]) => ({ device, lat: m.getLatLng().lat, lon: m.getLatLng().lng })),
        tracks: Object.fromEntries([...this.tracks].map(([d, t]) => [d, t.length])) };
    }

    destroy() { if (this.map) this.map.remove(); this.map = null; }
  }

  // CommandPanel: a button that sends its device a command, and the latest
  // such command's status and answer, live.
  class CommandPanel extends Panel {
    constructor(board, spec) {
      super(board, spec, 'command', 200);
      this.button = h('button', { type: 'button', class: 'primary', 'data-action': 'send-command', text: spec.button || spec.method, disabled: !spec.device, onclick: () => this.send() });
      this.state = h('div', { class: 'command-state', role: 'status', 'aria-live': 'polite' });
      this.body.append(h('p', { class: 'muted', text: spec.method + ' → ' + (spec.device || 'no device') + (spec.params ? ' ' + JSON.stringify(spec.params) : '') }), this.button, this.state);
      this.last = null;
    }

    async load() {
      if (!this.spec.device) return;
      try {
        const list = await api('api/v1/devices/' + enc(this.spec.device) + '/commands?limit=50');
        const mine = list.commands.filter((c) => c.method === this.spec.method);
        if (mine.length) this.onCommand(mine[0]); // unless a newer one came live meanwhile
      } catch (e) { if (e.status !== 404 && e.status !== 501) throw e; }
    }

    reread() { this.load().then(() => { this.dirty = true; this.board.schedule(); }, () => {}); }

    onCommand(c) {
      if (c.device !== this.spec.device || c.method !== this.spec.method) return false;
      if (this.last && (c.id < this.last.id || c.id === this.last.id && !laterState(c, this.last, COMMAND_ORDER))) return false;
      this.last = c;
      return true;
    }

    async send() {
      this.button.disabled = true;
      this.error = '';
      try {
        const body = { method: this.spec.method };
        if (this.spec.params) body.params = this.spec.params;
        // The answer waits a little; live frames show each change meanwhile.
        const c = await api('api/v1/devices/' + enc(this.spec.device) + '/commands?wait=10s', null, 'POST', JSON.stringify(body));
        this.onCommand(c);
      } catch (e) {
        this.error = e.status === 403 ? 'Sending commands needs an admin token.' : 'Not sent: ' + e.message;
      }
      this.button.disabled = false;
      this.draw();
    }

    draw() {
      const c = this.last;
      if (this.error) { this.state.replaceChildren(h('span', { class: 'error', text: this.error })); return; }
      if (!c) { this.state.replaceChildren(h('span', { class: 'muted', text: 'Not sent yet.' })); return; }
      this.state.replaceChildren(h('span', { class: 'badge cmd-' + c.status, 'data-status': c.status, text: c.status }), ' ', h('span', { class: 'muted' }, '#' + c.id + ', ', agoEl(c.updated)),
        ...(c.error || c.response !== undefined ? [h('pre', { class: 'payload', text: c.error ? 'error: ' + c.error : JSON.stringify(c.response, null, 1) })] : []));
    }

    snapshot() { return { kind: 'command', id: this.last ? this.last.id : null, status: this.last ? this.last.status : null, response: this.last ? this.last.response : null, error: this.error || null }; }
  }

  // AlertsPanel: the open alerts of a set of devices, worst first, live.
  class AlertsPanel extends Panel {
    constructor(board, spec) {
      super(board, spec, 'alerts', 500);
      this.alerts = new Map(); // id -> alert
    }

    mine(a) { return a.device.startsWith(this.spec.device_prefix || ''); }

    // load reads the open alerts; changes that arrive while it is under
    // way are applied again on top (the read may predate them).
    async load() {
      const during = (this.during = new Map());
      try {
        const list = await api('api/v1/alerts?status=open&limit=1000');
        this.alerts = new Map(list.alerts.filter((a) => this.mine(a)).map((a) => [a.id, a]));
        this.during = null;
        for (const a of during.values()) this.onAlert(a);
      } catch (e) { if (e.status === 501) this.unavailable = true; else throw e; }
    }

    reread() { this.load().then(() => { this.dirty = true; this.board.schedule(); }, () => {}); }

    onAlert(a) {
      if (!this.mine(a)) return false;
      if (this.during) this.during.set(a.id, a);
      const old = this.alerts.get(a.id);
      if (old && !laterState(a, old, ALERT_ORDER)) return false;
      if (a.status === 'cleared') this.alerts.delete(a.id); else this.alerts.set(a.id, a);
      return true;
    }

    draw() {
      if (this.unavailable) { this.body.replaceChildren(h('p', { class: 'muted', text: 'This hub has no alerts.' })); return; }
      const rank = ['critical', 'major', 'minor', 'warning', 'info'];
      const list = [...this.alerts.values()].sort((a, b) => rank.indexOf(a.severity) - rank.indexOf(b.severity) || b.first_at - a.first_at);
      if (!list.length) { this.body.replaceChildren(h('p', { class: 'muted', text: 'No open alerts.' })); return; }
      this.body.replaceChildren(h('ul', { class: 'alert-list' }, list.slice(0, 200).map((a) => h('li', { 'data-alert': String(a.id), 'data-status': a.status },
        severityEl(a.severity), ' ', h('a', { href: '#/device/' + enc(a.device), text: a.device }), ' ', h('span', { text: a.message || a.rule }), ' ',
        h('span', { class: 'muted' }, a.status === 'acknowledged' ? 'acknowledged, ' : '', 'since ', agoEl(a.first_at))))),
      h('p', null, h('a', { href: '#/alerts', text: list.length + (list.length === 1 ? ' open alert' : ' open alerts') + ' →' })));
    }

    snapshot() { return { kind: 'alerts', alerts: [...this.alerts.values()].map((a) => ({ id: a.id, device: a.device, severity: a.severity, status: a.status })) }; }
  }

  window.telehub.boards = { BoardsView, BoardView };
})();
