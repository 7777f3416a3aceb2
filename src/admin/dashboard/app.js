// Runs dashboard for envoy-async-sidecar. Plain browser JavaScript: no framework, no build step.
// Talks only to the admin port it was served from: its runs API (docs/CONTRACT.md §5) and /queues.
'use strict';

(() => {
  const API = document.querySelector('meta[name="eas-runs-api"]').getAttribute('content') || '/v1/runs';
  const QUEUES_API = '/queues';
  const TOKEN_KEY = 'eas-admin-token';
  const POLL_MS = 2000;
  const STATS_LIMIT = 500;
  const TABLE_LIMIT = 100;
  const CHART_MINUTES = 30;
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

  const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'expired'];
  const LABEL = {
    queued: 'Queued',
    running: 'Running',
    succeeded: 'Succeeded',
    failed: 'Failed',
    timed_out: 'Timed out',
    cancelled: 'Cancelled',
    expired: 'Expired',
  };
  /** Why a queued run waits after the app turned it away (README "Queues"). */
  const QUEUE_REASON = {
    upstream_busy: 'The app answered 429 (busy)',
    upstream_unavailable: 'The app answered 503 or refused the connection',
  };
  const WEBHOOK_LABEL = { none: 'None', pending: 'Pending', delivered: 'Delivered', failed: 'Failed' };
  /** Chart series, bottom to top. "active" stacks queued and running runs. */
  const SERIES = [
    { key: 'succeeded', label: 'Succeeded' },
    { key: 'failed', label: 'Failed' },
    { key: 'timed_out', label: 'Timed out' },
    { key: 'cancelled', label: 'Cancelled' },
    { key: 'expired', label: 'Expired' },
    { key: 'active', label: 'In progress' },
  ];

  const $ = (id) => document.getElementById(id);
  const els = {
    live: $('live'),
    liveText: $('live-text'),
    tokenButton: $('token-button'),
    counts: $('counts'),
    queuesBody: $('queues-body'),
    queuesNote: $('queues-note'),
    countsScope: $('counts-scope'),
    chart: $('chart'),
    chartSummary: $('chart-summary'),
    legend: $('legend'),
    filter: $('status-filter'),
    search: $('search'),
    body: $('runs-body'),
    empty: $('empty'),
    runsCount: $('runs-count'),
    authBanner: $('auth-banner'),
    authOpen: $('auth-open'),
    layout: $('layout'),
    detail: $('detail'),
    detailTitle: $('detail-title'),
    detailBody: $('detail-body'),
    detailClose: $('detail-close'),
    cancel: $('cancel-button'),
    redeliver: $('redeliver-button'),
    actionsHint: $('actions-hint'),
    dialog: $('token-dialog'),
    tokenForm: $('token-form'),
    tokenInput: $('token-input'),
    tokenError: $('token-error'),
    tokenLater: $('token-later'),
    toast: $('toast'),
  };

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    needToken: false,
    runs: [],
    table: [],
    /** The last answer of /queues, and why the latest call failed (null when it worked). */
    queues: [],
    queuesProblem: null,
    selectedId: null,
    selected: null,
    lastRow: null,
    timer: null,
    inflight: null,
    again: false,
    busy: false,
  };

  class AuthError extends Error {}

  // ---- helpers ---------------------------------------------------------------------------------

  /** Creates an element; children are nodes or text (never parsed as HTML). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
    return el;
  }

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    for (const c of children) el.append(c instanceof Node ? c : String(c));
    return el;
  }

  const ms = (iso) => (iso ? Date.parse(iso) : null);
  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function clock(iso, withMs) {
    const d = new Date(iso);
    const today = new Date();
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${withMs ? `.${pad(d.getMilliseconds(), 3)}` : ''}`;
    if (d.toDateString() === today.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function ago(iso) {
    const s = Math.max(0, Math.round((Date.now() - ms(iso)) / 1000));
    if (s < 5) return 'just now';
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function duration(msValue) {
    if (msValue === null || msValue === undefined || Number.isNaN(msValue)) return '—';
    const v = Math.max(0, msValue);
    if (v < 1000) return `${Math.round(v)} ms`;
    if (v < 60_000) return `${(v / 1000).toFixed(v < 10_000 ? 2 : 1)} s`;
    if (v < 3_600_000) return `${Math.floor(v / 60_000)}m ${pad(Math.floor((v % 60_000) / 1000))}s`;
    return `${Math.floor(v / 3_600_000)}h ${pad(Math.floor((v % 3_600_000) / 60_000))}m`;
  }

  /** Run time: start to end, or start to now while it runs. */
  function runDuration(run) {
    const start = ms(run.started_at);
    if (start === null) return null;
    return (ms(run.finished_at) ?? Date.now()) - start;
  }

  function bytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  const isLive = (status) => status === 'queued' || status === 'running';
  const codeClass = (code) => (code >= 500 ? 'code-5xx' : code >= 400 ? 'code-4xx' : code >= 300 ? 'code-3xx' : 'code-2xx');

  function badge(status) {
    return h(
      'span',
      { class: `badge badge-${status}`, 'data-status': status },
      h('span', { class: 'badge-dot', 'aria-hidden': 'true' }),
      LABEL[status] || status,
    );
  }

  function webhookText(webhook) {
    if (!webhook || webhook.status === 'none') return null;
    const n = webhook.attempts;
    return `${WEBHOOK_LABEL[webhook.status] || webhook.status} · ${n} attempt${n === 1 ? '' : 's'}`;
  }

  let toastTimer = null;
  function toast(message, kind) {
    els.toast.textContent = message;
    els.toast.className = `toast ${kind === 'error' ? 'toast-error' : 'toast-ok'}`;
    els.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      els.toast.hidden = true;
    }, 3500);
  }

  function setLive(kind, text) {
    els.live.className = `live live-${kind}`;
    els.liveText.textContent = text;
  }

  // ---- API -------------------------------------------------------------------------------------

  /** A call to the runs API (`path` is relative to its prefix). */
  function api(path, method = 'GET') {
    return admin(API + path, method);
  }

  async function admin(url, method = 'GET') {
    const headers = { accept: 'application/json' };
    if (state.token) headers.authorization = `Bearer ${state.token}`;
    const res = await fetch(url, { method, headers, cache: 'no-store', credentials: 'omit' });
    if (res.status === 401) throw new AuthError('unauthorized');
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    return { status: res.status, body };
  }

  // ---- data ------------------------------------------------------------------------------------

  async function load() {
    const filter = els.filter.value;
    const search = els.search.value.trim().toLowerCase();
    const [all, queues] = await Promise.all([api(`?limit=${STATS_LIMIT}`), admin(QUEUES_API)]);
    if (all.status !== 200) throw new Error(all.body?.error?.message || `runs API answered ${all.status}`);
    state.runs = all.body.runs;
    // The queues' counts come from Redis too, but a failure there must not hide the runs.
    if (queues.status === 200) {
      state.queues = queues.body.queues;
      state.queuesProblem = null;
    } else {
      state.queuesProblem = queues.body?.error?.message || `${QUEUES_API} answered ${queues.status}`;
    }
    let table = state.runs;
    if (filter) {
      const filtered = await api(`?status=${encodeURIComponent(filter)}&limit=${TABLE_LIMIT}`);
      if (filtered.status !== 200) throw new Error(`runs API answered ${filtered.status}`);
      table = filtered.body.runs;
    }
    if (search) {
      table = table.filter((r) => r.run_id.includes(search));
      if (table.length === 0 && UUID.test(search)) {
        // An older run, beyond the listed page: ask for it by id.
        const one = await api(`/${search}`);
        if (one.status === 200 && (!filter || one.body.status === filter)) table = [one.body];
      }
    }
    state.table = table.slice(0, TABLE_LIMIT);
    if (state.selectedId) {
      const one = await api(`/${state.selectedId}`);
      state.selected = one.status === 200 ? one.body : state.selected && { ...state.selected, gone: true };
    }
  }

  /** Loads and renders now; calls made while one is in flight coalesce into one more. */
  function refresh() {
    if (state.inflight) {
      state.again = true;
      return state.inflight;
    }
    clearTimeout(state.timer);
    state.inflight = (async () => {
      try {
        await load();
        state.needToken = false;
        render();
        setLive('ok', `Live · updated ${clock(new Date().toISOString())}`);
      } catch (err) {
        if (err instanceof AuthError) {
          needToken();
        } else {
          setLive('error', 'Cannot reach the runs API · retrying');
        }
      } finally {
        state.inflight = null;
        if (state.again) {
          state.again = false;
          void refresh();
        } else schedule();
      }
    })();
    return state.inflight;
  }

  function schedule() {
    clearTimeout(state.timer);
    if (state.needToken) return;
    state.timer = setTimeout(() => {
      if (!document.hidden) void refresh();
      else schedule();
    }, POLL_MS);
  }

  // ---- rendering -------------------------------------------------------------------------------

  function render() {
    els.authBanner.hidden = true;
    els.tokenButton.hidden = !state.token;
    renderCounts();
    renderQueues();
    renderChart();
    renderTable();
    renderDetail();
  }

  function renderCounts() {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const r of state.runs) counts[r.status] = (counts[r.status] || 0) + 1;
    const current = els.filter.value;
    const total = state.runs.length;
    const item = (key, label, n) =>
      h(
        'button',
        {
          type: 'button',
          class: `count count-${key || 'all'}${current === key ? ' count-active' : ''}`,
          'data-status': key,
          'aria-pressed': current === key ? 'true' : 'false',
          title: key ? `Show only ${label.toLowerCase()} runs` : 'Show all runs',
        },
        h('span', { class: 'count-label' }, key ? badgeDot(key) : null, label),
        key
          ? h(
              'span',
              { class: 'count-bar', 'aria-hidden': 'true' },
              h('span', { class: `count-fill dot-${key}`, 'data-pct': String(total ? Math.round((n / total) * 100) : 0) }),
            )
          : h('span'),
        h('span', { class: 'count-n' }, String(n)),
      );
    els.counts.replaceChildren(item('', 'All runs', total), ...STATUSES.map((s) => item(s, LABEL[s], counts[s])));
    // Bar widths through the CSSOM: the page's CSP allows no inline style attributes.
    for (const fill of els.counts.querySelectorAll('.count-fill')) fill.style.width = `${fill.dataset.pct}%`;
    els.countsScope.textContent = total >= STATS_LIMIT ? `latest ${STATS_LIMIT} runs` : 'all retained runs';
  }

  function badgeDot(status) {
    return h('span', { class: `dot dot-${status}`, 'aria-hidden': 'true' });
  }

  function renderQueues() {
    els.queuesNote.hidden = state.queuesProblem === null;
    els.queuesNote.textContent = state.queuesProblem === null ? '' : `Queue counts not updated: ${state.queuesProblem}`;
    const rows = new Map([...els.queuesBody.children].map((tr) => [tr.dataset.queue, tr]));
    const wanted = state.queues.map((q) => {
      const tr = rows.get(q.name) || createQueueRow(q.name);
      fillQueueRow(tr, q);
      return tr;
    });
    const same = wanted.length === els.queuesBody.children.length && wanted.every((tr, i) => els.queuesBody.children[i] === tr);
    if (!same) els.queuesBody.replaceChildren(...wanted);
    // Bar widths through the CSSOM: the page's CSP allows no inline style attributes.
    for (const fill of els.queuesBody.querySelectorAll('.slots-fill')) fill.style.width = `${fill.dataset.pct}%`;
  }

  function createQueueRow(name) {
    const tr = h('tr', { 'data-queue': name, class: 'queue-row' });
    for (let i = 0; i < 5; i++) tr.append(h('td'));
    for (const i of [1, 2, 4]) tr.cells[i].className = 'num';
    return tr;
  }

  function fillQueueRow(tr, q) {
    const [name, queued, backingOff, slots, oldest] = tr.cells;
    const limit = q.max_concurrency;
    const age = q.oldest_queued_age_ms === null ? null : duration(q.oldest_queued_age_ms);
    tr.setAttribute(
      'aria-label',
      `Queue ${q.name}: ${q.queued} queued, ${q.backing_off} backing off, ${q.in_flight} in flight of ${limit === null ? 'no limit' : limit}` +
        (age ? `, oldest queued ${age}` : ''),
    );
    setCell(name, q.name, () => h('span', { class: 'queue-name' }, q.name));
    setCell(queued, String(q.queued), () => h('span', { class: q.queued ? 'count-n' : 'muted' }, String(q.queued)));
    setCell(backingOff, String(q.backing_off), () => h('span', { class: q.backing_off ? 'backing-off' : 'muted' }, String(q.backing_off)));
    const full = limit !== null && q.in_flight >= limit;
    setCell(slots, `${q.in_flight}|${limit}`, () => [
      h('span', { class: `slots-text${full ? ' slots-full' : ''}` }, `${q.in_flight} / ${limit === null ? 'no limit' : limit}`),
      limit === null
        ? null
        : h(
            'span',
            { class: 'slots-bar', 'aria-hidden': 'true' },
            h('span', { class: `slots-fill${full ? ' slots-fill-full' : ''}`, 'data-pct': String(Math.min(100, Math.round((q.in_flight / limit) * 100))) }),
          ),
    ]);
    setCell(oldest, age || 'none', () => (age ? h('span', {}, age) : h('span', { class: 'muted' }, '—')));
  }

  function renderChart() {
    const W = Math.max(320, Math.round(els.chart.clientWidth || 640)),
      H = 150,
      left = 30,
      right = 6,
      top = 8,
      bottom = 22;
    els.chart.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const now = Date.now();
    const minute = 60_000;
    const end = Math.floor(now / minute) * minute + minute; // end of the current minute
    const buckets = Array.from({ length: CHART_MINUTES }, (_, i) => ({
      start: end - (CHART_MINUTES - i) * minute,
      succeeded: 0,
      failed: 0,
      timed_out: 0,
      cancelled: 0,
      expired: 0,
      active: 0,
    }));
    let total = 0;
    for (const r of state.runs) {
      const t = ms(r.created_at);
      const i = Math.floor((t - (end - CHART_MINUTES * minute)) / minute);
      if (i < 0 || i >= CHART_MINUTES) continue;
      buckets[i][isLive(r.status) ? 'active' : r.status] += 1;
      total += 1;
    }
    const sums = buckets.map((b) => SERIES.reduce((a, s) => a + b[s.key], 0));
    const max = Math.max(1, ...sums);
    const niceMax = max <= 4 ? max : Math.ceil(max / 5) * 5;
    const plotW = W - left - right,
      plotH = H - top - bottom;
    const slot = plotW / CHART_MINUTES,
      barW = Math.max(2, slot - 4);
    const y = (v) => top + plotH - (v / niceMax) * plotH;

    const nodes = [];
    for (const v of [0, niceMax / 2, niceMax]) {
      if (v !== Math.round(v) && v !== 0) continue;
      nodes.push(svg('line', { x1: left, x2: W - right, y1: y(v), y2: y(v), class: v === 0 ? 'axis' : 'grid' }));
      nodes.push(svg('text', { x: left - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, String(v)));
    }
    buckets.forEach((b, i) => {
      const x = left + i * slot + (slot - barW) / 2;
      const g = svg('g', { class: 'bar' });
      let acc = 0;
      for (const s of SERIES) {
        const n = b[s.key];
        if (!n) continue;
        const y0 = y(acc),
          y1 = y(acc + n);
        g.append(svg('rect', { x, y: y1, width: barW, height: Math.max(1, y0 - y1), class: `series-${s.key}`, rx: 1.5 }));
        acc += n;
      }
      const d = new Date(b.start);
      const parts = SERIES.filter((s) => b[s.key]).map((s) => `${b[s.key]} ${s.label.toLowerCase()}`);
      g.append(svg('title', {}, `${pad(d.getHours())}:${pad(d.getMinutes())} · ${parts.length ? parts.join(', ') : 'no runs'}`));
      // A full-height transparent target so that the tooltip works on empty minutes too.
      g.prepend(svg('rect', { x: left + i * slot, y: top, width: slot, height: plotH, class: 'hit' }));
      nodes.push(g);
    });
    for (const [i, label] of [
      [0, '30 min ago'],
      [15, '15 min ago'],
      [CHART_MINUTES - 1, 'now'],
    ]) {
      const anchor = i === 0 ? 'start' : i === CHART_MINUTES - 1 ? 'end' : 'middle';
      const x = i === 0 ? left : i === CHART_MINUTES - 1 ? W - right : left + i * slot;
      nodes.push(svg('text', { x, y: H - 6, class: 'tick', 'text-anchor': anchor }, label));
    }
    els.chart.replaceChildren(...nodes);

    const totals = SERIES.map((s) => ({ ...s, n: buckets.reduce((a, b) => a + b[s.key], 0) }));
    els.chartSummary.textContent = `${total} runs created in the last ${CHART_MINUTES} minutes: ${totals.map((s) => `${s.n} ${s.label.toLowerCase()}`).join(', ')}.`;
    els.legend.replaceChildren(
      ...totals.map((s) => h('li', {}, h('span', { class: `swatch series-${s.key}`, 'aria-hidden': 'true' }), `${s.label} `, h('strong', {}, String(s.n)))),
    );
  }

  function renderTable() {
    const rows = new Map([...els.body.children].map((tr) => [tr.dataset.id, tr]));
    const focusedId = document.activeElement && document.activeElement.closest && document.activeElement.closest('tr[data-id]')?.dataset.id;
    const wanted = state.table.map((run) => {
      const tr = rows.get(run.run_id) || createRow(run.run_id);
      fillRow(tr, run);
      return tr;
    });
    const same = wanted.length === els.body.children.length && wanted.every((tr, i) => els.body.children[i] === tr);
    if (!same) els.body.replaceChildren(...wanted);
    if (focusedId && document.activeElement === document.body) {
      const again = els.body.querySelector(`tr[data-id="${CSS.escape(focusedId)}"]`);
      if (again) again.focus();
    }
    const filtered = els.filter.value || els.search.value.trim();
    els.empty.hidden = state.table.length > 0;
    els.empty.textContent = filtered ? 'No runs match these filters.' : 'No runs yet. Send a request with ?async=true and it shows up here.';
    els.runsCount.textContent = `${state.table.length} run${state.table.length === 1 ? '' : 's'} shown.`;
  }

  function createRow(id) {
    const tr = h('tr', { tabindex: '0', 'data-id': id, class: 'run-row' });
    for (let i = 0; i < 7; i++) tr.append(h('td'));
    tr.cells[4].className = 'num';
    tr.cells[5].className = 'num';
    return tr;
  }

  function markSelected(tr, on) {
    tr.classList.toggle('selected', on);
    if (on) tr.setAttribute('aria-current', 'true');
    else tr.removeAttribute('aria-current');
  }

  /** Updates a cell only when what it shows changed, so that the live refresh does not flicker. */
  function setCell(td, key, build) {
    if (td.dataset.key === key) return;
    td.dataset.key = key;
    td.replaceChildren(...[build()].flat().filter((x) => x !== null));
  }

  function fillRow(tr, run) {
    const [status, req, queue, created, dur, upstream, webhook] = tr.cells;
    tr.dataset.status = run.status;
    markSelected(tr, run.run_id === state.selectedId);
    tr.setAttribute('aria-label', `${LABEL[run.status]} run ${run.run_id}, ${run.request.method} ${run.request.path}`);
    setCell(status, run.status, () => badge(run.status));
    setCell(req, `${run.request.method} ${run.request.path} ${run.run_id}`, () => [
      h(
        'div',
        { class: 'req-line' },
        h('span', { class: 'method' }, run.request.method),
        h('span', { class: 'path', title: run.request.path }, run.request.path),
      ),
      h('code', { class: 'run-id', title: run.run_id }, run.run_id.slice(0, 8)),
    ]);
    const where = standing(run);
    setCell(queue, `${run.queue}|${where}`, () => [
      h('span', { class: 'queue-name' }, run.queue),
      where ? h('span', { class: `queue-where${run.next_attempt_at ? ' backing-off' : ''}` }, where) : null,
    ]);
    const rel = ago(run.created_at);
    setCell(created, `${run.created_at}|${rel}`, () => h('time', { datetime: run.created_at, title: new Date(run.created_at).toLocaleString() }, rel));
    const d = runDuration(run);
    setCell(dur, `${run.status}|${duration(d)}`, () =>
      h('span', { class: isLive(run.status) ? 'ticking' : '' }, run.status === 'queued' ? 'waiting' : duration(d)),
    );
    const code = run.response ? run.response.status_code : null;
    setCell(upstream, String(code), () => (code ? h('span', { class: `code ${codeClass(code)}` }, String(code)) : h('span', { class: 'muted' }, '—')));
    const wh = webhookText(run.webhook);
    setCell(webhook, wh || 'none', () => (wh ? h('span', { class: `wh wh-${run.webhook.status}` }, wh) : h('span', { class: 'muted' }, '—')));
  }

  /** Where a queued run stands: its place in line, or that it is backing off; null once taken. */
  function standing(run) {
    if (run.status !== 'queued') return null;
    if (run.next_attempt_at) return 'backing off';
    if (run.queue_position === null || run.queue_position === undefined) return null;
    return run.queue_position === 0 ? 'next in line' : `${run.queue_position} ahead`;
  }

  function kv(pairs) {
    return h(
      'dl',
      { class: 'kv' },
      pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
    );
  }

  function renderDetail() {
    const run = state.selected;
    els.layout.classList.toggle('with-detail', Boolean(state.selectedId));
    els.detail.hidden = !state.selectedId;
    if (!state.selectedId || !run) return;
    const created = ms(run.created_at),
      started = ms(run.started_at),
      finished = ms(run.finished_at);
    const parts = [];
    parts.push(
      h(
        'div',
        { class: 'detail-summary' },
        badge(run.status),
        h('span', { class: 'detail-request' }, h('span', { class: 'method' }, run.request.method), ' ', run.request.path),
      ),
    );
    parts.push(h('p', { class: 'detail-id' }, h('span', { class: 'muted' }, 'Run ID '), h('code', { id: 'detail-run-id' }, run.run_id)));
    if (run.gone) parts.push(h('p', { class: 'notice' }, 'This run is no longer in the store (expired).'));
    if (run.error) {
      parts.push(h('div', { class: 'error-box', id: 'detail-error' }, h('strong', {}, run.error.code), h('span', {}, run.error.message)));
    }

    parts.push(h('h3', {}, 'Queue'));
    const where = standing(run);
    parts.push(
      kv([
        ['Queue', h('span', { class: 'queue-name', id: 'detail-queue' }, run.queue)],
        ['Priority', run.priority],
        where && ['Standing', h('span', { id: 'detail-standing' }, where)],
        run.status === 'queued' && run.queue_reason && ['Waiting because', QUEUE_REASON[run.queue_reason] || run.queue_reason],
        run.status === 'queued' && run.next_attempt_at && ['Next attempt', h('time', { datetime: run.next_attempt_at }, clock(run.next_attempt_at, true))],
      ]),
    );
    if (run.dispatch_history && run.dispatch_history.length) {
      parts.push(
        h(
          'table',
          { class: 'history', id: 'dispatch-history' },
          h('caption', { class: 'visually-hidden' }, 'Tries the app turned away'),
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['Attempt', 'Time', 'App said', 'Retry in'].map((t) => h('th', { scope: 'col' }, t)),
            ),
          ),
          h(
            'tbody',
            {},
            run.dispatch_history.map((a) =>
              h(
                'tr',
                {},
                h('td', {}, String(a.attempt)),
                h('td', {}, h('time', { datetime: a.at, title: a.at }, clock(a.at, true))),
                h('td', {}, a.status_code === null ? (a.error === 'connection_refused' ? 'connection refused' : a.error || '—') : String(a.status_code)),
                h('td', {}, duration(a.retry_in_ms)),
              ),
            ),
          ),
        ),
      );
    }

    parts.push(h('h3', {}, 'Timeline'));
    const steps = [
      ['Created', run.created_at, null],
      ['Started', run.started_at, started !== null ? `after ${duration(started - created)} in queue` : null],
      ['Finished', run.finished_at, finished !== null && started !== null ? `ran ${duration(finished - started)}` : null],
    ];
    parts.push(
      h(
        'ol',
        { class: 'timeline', id: 'detail-timeline' },
        steps.map(([label, iso, note]) =>
          h(
            'li',
            { class: iso ? 'done' : 'pending' },
            h('span', { class: 'tl-label' }, label),
            iso ? h('time', { datetime: iso, title: iso }, clock(iso, true)) : h('span', { class: 'muted' }, isLive(run.status) ? 'not yet' : '—'),
            note ? h('span', { class: 'muted tl-note' }, note) : null,
          ),
        ),
      ),
    );

    parts.push(h('h3', {}, 'Upstream'));
    parts.push(
      kv([
        [
          'Response',
          run.response
            ? h('span', { class: `code ${codeClass(run.response.status_code)}` }, String(run.response.status_code))
            : h('span', { class: 'muted' }, isLive(run.status) ? 'waiting' : 'none'),
        ],
        run.response && ['Content type', run.response.content_type || '—'],
        run.response && ['Size', `${bytes(run.response.size)}${run.response.truncated ? ' (truncated)' : ''}`],
        ['Dispatch attempts', String(run.dispatch_attempts)],
        ['Request ID', run.request.request_id ? h('code', {}, run.request.request_id) : '—'],
      ]),
    );

    parts.push(h('h3', {}, 'Webhook'));
    const wh = run.webhook;
    if (!wh || wh.status === 'none') {
      parts.push(h('p', { class: 'muted' }, 'No webhook: the run was created without a webhookEndpoint.'));
    } else {
      parts.push(
        kv([
          ['Status', h('span', { class: `wh wh-${wh.status}`, id: 'detail-webhook-status' }, WEBHOOK_LABEL[wh.status] || wh.status)],
          ['Attempts', String(wh.attempts)],
          ['Last HTTP status', wh.last_status_code === null ? '—' : String(wh.last_status_code)],
          wh.next_attempt_at && ['Next attempt', h('time', { datetime: wh.next_attempt_at }, clock(wh.next_attempt_at))],
        ]),
      );
      if (wh.history && wh.history.length) {
        parts.push(
          h(
            'table',
            { class: 'history', id: 'webhook-history' },
            h('caption', { class: 'visually-hidden' }, 'Webhook delivery attempts'),
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                ['#', 'Time', 'Outcome', 'HTTP', 'Took'].map((t) => h('th', { scope: 'col' }, t)),
              ),
            ),
            h(
              'tbody',
              {},
              wh.history.map((a, i) =>
                h(
                  'tr',
                  {},
                  h('td', {}, String(i + 1)),
                  h('td', {}, h('time', { datetime: a.at, title: a.at }, clock(a.at, true))),
                  h(
                    'td',
                    {},
                    h('span', { class: `outcome outcome-${a.outcome}` }, a.outcome),
                    a.error ? h('span', { class: 'muted attempt-error' }, ` ${a.error}`) : null,
                  ),
                  h('td', {}, a.status_code === null ? '—' : String(a.status_code)),
                  h('td', {}, duration(a.duration_ms)),
                ),
              ),
            ),
          ),
        );
      }
    }
    els.detailBody.replaceChildren(...parts);

    const canCancel = isLive(run.status) && !run.gone;
    const canRedeliver = !isLive(run.status) && wh && wh.status !== 'none' && !run.gone;
    els.cancel.disabled = !canCancel || state.busy;
    els.redeliver.disabled = !canRedeliver || state.busy;
    els.actionsHint.textContent = canCancel
      ? 'Cancelling aborts the upstream call.'
      : !wh || wh.status === 'none'
        ? 'This run has no webhook to redeliver.'
        : isLive(run.status)
          ? 'The webhook is sent when the run ends.'
          : 'Redelivery sends the webhook again, with a fresh schedule of attempts.';
  }

  // ---- interaction -----------------------------------------------------------------------------

  async function openDetail(id, row) {
    state.selectedId = id;
    state.lastRow = row || null;
    state.selected = state.table.find((r) => r.run_id === id) || state.runs.find((r) => r.run_id === id) || null;
    for (const tr of els.body.children) markSelected(tr, tr.dataset.id === id);
    renderDetail();
    els.detailTitle.focus();
    await refresh();
  }

  function closeDetail() {
    const id = state.selectedId;
    state.selectedId = null;
    state.selected = null;
    renderDetail();
    for (const tr of els.body.children) markSelected(tr, false);
    const row = id && els.body.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    if (row) row.focus();
  }

  els.body.addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-id]');
    if (tr) void openDetail(tr.dataset.id, tr);
  });
  els.body.addEventListener('keydown', (e) => {
    const tr = e.target.closest('tr[data-id]');
    if (!tr) return;
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      void openDetail(tr.dataset.id, tr);
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const next = e.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling;
      if (next) next.focus();
    }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && state.selectedId && !els.dialog.open) closeDetail();
  });
  els.detailClose.addEventListener('click', closeDetail);

  els.counts.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-status]');
    if (!b) return;
    els.filter.value = b.dataset.status;
    void refresh();
  });
  els.filter.addEventListener('change', () => void refresh());
  let searchTimer = null;
  els.search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => void refresh(), 150);
  });

  async function act(button, path, method, okText, doneStatus) {
    const id = state.selectedId;
    if (!id) return;
    state.busy = true;
    els.cancel.disabled = true;
    els.redeliver.disabled = true;
    try {
      const res = await api(`/${id}${path}`, method);
      if (res.status === doneStatus) toast(okText, 'ok');
      else toast(res.body?.error?.message || `The runs API answered ${res.status}.`, 'error');
    } catch (err) {
      if (err instanceof AuthError) needToken();
      else toast('Could not reach the runs API.', 'error');
    } finally {
      state.busy = false;
      await refresh();
      if (!button.disabled) button.focus();
      else els.detailTitle.focus();
    }
  }

  els.cancel.addEventListener('click', () => {
    if (!state.selectedId) return;
    if (!window.confirm(`Cancel run ${state.selectedId}? Its upstream call is aborted.`)) return;
    void act(els.cancel, '', 'DELETE', 'Run cancelled.', 200);
  });
  els.redeliver.addEventListener('click', () => void act(els.redeliver, '/webhook', 'POST', 'Webhook redelivery queued.', 202));

  // ---- admin token -----------------------------------------------------------------------------

  function needToken() {
    const had = Boolean(state.token);
    state.needToken = true;
    clearTimeout(state.timer);
    setLive('locked', 'Admin token needed');
    els.authBanner.hidden = false;
    if (!els.dialog.open) {
      els.tokenError.hidden = !had;
      els.tokenError.textContent = had ? 'The saved token was refused; enter the current one.' : '';
      els.tokenInput.value = '';
      els.dialog.showModal();
      els.tokenInput.focus();
    }
  }

  els.tokenForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = els.tokenInput.value.trim();
    if (!token) {
      els.tokenError.textContent = 'Enter the token.';
      els.tokenError.hidden = false;
      return;
    }
    const previous = state.token;
    state.token = token;
    try {
      await api('?limit=1');
    } catch (err) {
      state.token = previous;
      els.tokenError.textContent = err instanceof AuthError ? 'That token was refused.' : 'Could not reach the runs API.';
      els.tokenError.hidden = false;
      els.tokenInput.select();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.needToken = false;
    els.dialog.close();
    els.authBanner.hidden = true;
    void refresh();
  });
  els.tokenLater.addEventListener('click', () => els.dialog.close());
  els.authOpen.addEventListener('click', () => {
    els.tokenError.hidden = true;
    els.dialog.showModal();
    els.tokenInput.focus();
  });
  els.tokenButton.addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    els.tokenButton.hidden = true;
    toast('Token forgotten for this tab.', 'ok');
    void refresh();
  });

  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(renderChart, 100);
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !state.needToken) void refresh();
  });

  renderChart();
  void refresh();
})();
