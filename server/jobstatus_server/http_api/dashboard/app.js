// jobstatus dashboard: every job of every kind, live from the SSE watch.
//
// One watch stream per kind, read with fetch() (so the API key can go in a header
// and Last-Event-ID is ours to set): `state` events, `synced`, then `change`
// events with id = revision, and heartbeats. A dropped stream or a restarted
// server is resumed from the last id; a resume point the server no longer keeps
// (410) starts over from the state ("resynced"). Events only update the model;
// the page is drawn at most once per animation frame, and the job table draws
// only the rows in view, so 10,000 jobs and hundreds of changes per second stay
// smooth. Every job field is rendered with textContent, never as markup.
'use strict';

(() => {
  const KEY_STORE = 'jobstatus.apiKey';
  const KEY_MESSAGE = 'jobstatus.keyMessage';
  const ROW_HEIGHT = 30;
  const HEARTBEAT_SECONDS = 5;
  const VIEW_INTERVAL_MS = 250; // re-filter and re-sort at most this often while changes flow
  const RESYNCED_MS = 5000; // how long "resynced" stays up after a fresh start
  const HISTORY_PAGES = 20;

  const $ = (id) => document.getElementById(id);

  const model = {
    kinds: [], // from /dashboard/kinds.json
    info: {}, // kind -> {title, idKey, outcome: Map(status -> outcome), statuses: []}
    jobs: new Map(), // "kind\u0000id" -> record
    counts: {}, // kind -> Map(status -> n)
    key: null,
    keysRequired: false,
    streams: {}, // kind -> stream state
    storeRevision: 0,
    lastHeartbeat: null,
    resyncedAt: 0,
    resyncs: 0,
  };
  const view = {
    rows: [], // records after filter and sort
    builtAt: 0,
    stale: true, // the filter or the set of jobs changed
    jobsChanged: false,
    countsChanged: true,
    scheduled: false,
    selected: null,
    selectedRevision: -1,
    historyFor: null,
    historyAt: 0,
    pool: [],
  };

  // --- the model ------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function pad(n) {
    return String(n).padStart(2, '0');
  }

  function localTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function statusOf(kind, job) {
    if (kind === 'dataset' && !job.status) return 'no run';
    return typeof job.status === 'string' ? job.status : '';
  }

  function outcomeOf(kind, status) {
    return model.info[kind].outcome.get(status) || 'idle';
  }

  function record(kind, data) {
    const job = data.job || {};
    const id = String(job[model.info[kind].idKey] ?? '');
    const status = statusOf(kind, job);
    return {
      key: `${kind}\u0000${id}`,
      kind,
      id,
      idLower: id.toLowerCase(),
      status,
      outcome: outcomeOf(kind, status),
      job,
      revision: Number(data.revision) || 0,
      updateTime: data.updateTime || '',
      updated: localTime(data.updateTime),
    };
  }

  function count(kind, status, delta) {
    const counts = model.counts[kind];
    counts.set(status, (counts.get(status) || 0) + delta);
  }

  function upsert(rec) {
    const old = model.jobs.get(rec.key);
    if (old && old.revision > rec.revision) return; // never go back
    if (old) count(old.kind, old.status, -1);
    count(rec.kind, rec.status, +1);
    model.jobs.set(rec.key, rec);
    if (rec.revision > model.storeRevision) model.storeRevision = rec.revision;
    view.jobsChanged = true;
    view.countsChanged = true;
    schedule();
  }

  function replaceKind(kind, staged) {
    for (const [key, rec] of model.jobs) {
      if (rec.kind === kind) model.jobs.delete(key);
    }
    model.counts[kind] = new Map();
    for (const rec of staged.values()) {
      model.jobs.set(rec.key, rec);
      count(kind, rec.status, +1);
    }
    view.stale = true;
    view.countsChanged = true;
    schedule();
  }

  // --- the streams ----------------------------------------------------------------

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function headers(extra) {
    const out = Object.assign({}, extra || {});
    if (model.key) out['X-Api-Key'] = model.key;
    return out;
  }

  async function readEvents(body, handle) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = { event: 'message', data: '', id: null };
        let hasData = false;
        for (const line of block.split('\n')) {
          if (!line || line[0] === ':') continue;
          const colon = line.indexOf(':');
          const name = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value[0] === ' ') value = value.slice(1);
          if (name === 'data') {
            event.data += (hasData ? '\n' : '') + value;
            hasData = true;
          } else if (name === 'event') {
            event.event = value;
          } else if (name === 'id') {
            event.id = value;
          }
        }
        if (hasData) handle(event);
      }
    }
  }

  function setStreamState(kind, state) {
    model.streams[kind].state = state;
    schedule();
  }

  function onEvent(kind, stream, event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    const revision = event.id !== null ? Number(event.id) : null;
    switch (event.event) {
      case 'state':
        if (!stream.staged) stream.staged = new Map();
        {
          const rec = record(kind, data);
          stream.staged.set(rec.key, rec);
        }
        break;
      case 'synced':
        replaceKind(kind, stream.staged || new Map());
        stream.staged = null;
        stream.lastId = revision;
        if (stream.resync) {
          model.resyncedAt = Date.now();
          model.resyncs += 1;
          document.body.dataset.resyncs = String(model.resyncs);
          stream.resync = false;
        }
        setStreamState(kind, 'live');
        break;
      case 'change':
        upsert(record(kind, data));
        stream.lastId = revision;
        break;
      case 'heartbeat':
        stream.lastId = revision;
        model.lastHeartbeat = new Date();
        schedule();
        break;
      case 'error':
        stream.error = data;
        break;
      default:
        break;
    }
    if (revision !== null && revision > model.storeRevision) {
      model.storeRevision = revision;
      schedule();
    }
  }

  async function follow(kind) {
    const stream = (model.streams[kind] = {
      state: 'connecting',
      lastId: null,
      staged: null,
      resync: false,
      error: null,
      delay: 500,
    });
    for (;;) {
      const extra = {};
      if (stream.lastId !== null) extra['Last-Event-ID'] = String(stream.lastId);
      stream.staged = null;
      stream.error = null;
      let response = null;
      try {
        response = await fetch(
          `/api/v1/watch/${encodeURIComponent(kind)}?envelope=true&heartbeat=${HEARTBEAT_SECONDS}`,
          { headers: headers(extra), cache: 'no-store' },
        );
      } catch (error) {
        response = null;
      }
      if (response && (response.status === 401 || response.status === 403)) {
        keyRefused(response.status === 401 ? 'The server did not accept this key.'
          : 'This key does not have the read scope.');
        return;
      }
      if (response && response.status === 410) {
        // The resume point is older than the kept history: start over from the state.
        await response.body?.cancel();
        stream.lastId = null;
        stream.resync = true;
        continue;
      }
      if (response && response.ok && response.body) {
        stream.delay = 500;
        setStreamState(kind, stream.lastId === null ? 'connecting' : 'live');
        try {
          await readEvents(response.body, (event) => onEvent(kind, stream, event));
        } catch (error) {
          // the connection dropped; resume below
        }
        const code = stream.error && stream.error.code;
        if (code === 'UNAUTHENTICATED' || code === 'PERMISSION_DENIED') {
          keyRefused('The key was revoked.');
          return;
        }
      }
      setStreamState(kind, 'reconnecting');
      await sleep(stream.delay);
      stream.delay = Math.min(stream.delay * 2, 5000);
    }
  }

  function connectionState() {
    const states = Object.values(model.streams).map((s) => s.state);
    if (states.includes('reconnecting')) return 'reconnecting';
    if (states.length === 0 || states.includes('connecting')) return 'connecting';
    if (Date.now() - model.resyncedAt < RESYNCED_MS) return 'resynced';
    return 'live';
  }

  // --- drawing --------------------------------------------------------------------

  function schedule() {
    if (view.scheduled) return;
    view.scheduled = true;
    requestAnimationFrame(draw);
  }

  function filters() {
    return {
      kind: $('filter-kind').value,
      status: $('filter-status').value,
      search: $('filter-search').value.trim().toLowerCase(),
      order: $('order').value,
    };
  }

  function buildRows() {
    const f = filters();
    const rows = [];
    for (const rec of model.jobs.values()) {
      if (f.kind && rec.kind !== f.kind) continue;
      if (f.status && rec.status !== f.status) continue;
      if (f.search && !rec.idLower.includes(f.search)) continue;
      rows.push(rec);
    }
    if (f.order === 'id') {
      rows.sort((a, b) => (a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    } else {
      rows.sort((a, b) => b.revision - a.revision);
    }
    view.rows = rows;
    view.builtAt = performance.now();
    view.stale = false;
    view.jobsChanged = false;
    $('shown-count').textContent = `${rows.length} of ${model.jobs.size} jobs`;
    $('spacer').style.height = `${rows.length * ROW_HEIGHT}px`;
  }

  function draw() {
    view.scheduled = false;
    const now = performance.now();
    if (view.stale || (view.jobsChanged && now - view.builtAt >= VIEW_INTERVAL_MS)) {
      buildRows();
    } else if (view.jobsChanged) {
      setTimeout(schedule, VIEW_INTERVAL_MS);
    }
    drawRows();
    if (view.countsChanged) drawSummary();
    drawConnection();
    drawDetail();
  }

  function progressCell(cell, rec) {
    cell.replaceChildren();
    const job = rec.job;
    const bar = el('div', 'bar');
    let percent = null;
    let label = '';
    if (rec.kind === 'map_import' || rec.kind === 'prepared_delivery') {
      const value = rec.kind === 'map_import' ? (job.metaData || {}).progress : job.progress;
      percent = Math.max(0, Math.min(100, Number(value) || 0));
      label = `${percent}%`;
    } else if (rec.kind === 'dataset') {
      const steps = Array.isArray(job.steps) ? job.steps : [];
      bar.classList.add('steps');
      for (const name of ['fetch', 'import']) {
        const step = steps.find((s) => s.name === name);
        const seg = el('span', 'seg');
        if (step) {
          const outcome = step.status === 'success' ? 'succeeded'
            : step.status === 'failed' ? 'failed' : 'running';
          seg.classList.add(outcome);
          seg.title = `${name}: ${step.status}`;
        } else {
          seg.title = `${name}: not started`;
        }
        bar.append(seg);
      }
      const done = steps.filter((s) => s.status === 'success').length;
      percent = steps.length ? Math.round((done / 2) * 100) : 0;
      label = `${done}/2`;
    } else if (rec.kind === 'catalog_import') {
      if (rec.status === 'IN_PROGRESS') {
        bar.classList.add('pulse');
        bar.append(el('div', 'fill'));
        label = '';
      } else if (rec.outcome !== 'running') {
        percent = 100;
      } else {
        percent = 0;
      }
    }
    if (percent !== null && !bar.classList.contains('steps')) {
      const fill = el('div', 'fill');
      fill.style.width = `${percent}%`;
      bar.append(fill);
    }
    if (rec.outcome === 'succeeded' || rec.outcome === 'failed') bar.classList.add(rec.outcome);
    cell.dataset.progress = percent === null ? '' : String(percent);
    cell.append(bar, el('span', 'pct', label));
  }

  function rowNode() {
    const row = el('div', 'row job');
    row.setAttribute('role', 'row');
    for (const cls of ['kind muted', 'id mono', 'status', 'progress', 'updated', 'revision num']) {
      const cell = el('span', cls);
      cell.setAttribute('role', 'cell');
      row.append(cell);
    }
    row.addEventListener('click', () => openDetail(row.dataset.key));
    return row;
  }

  function drawRows() {
    const viewport = $('viewport');
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW_HEIGHT) - 5);
    const visible = Math.ceil(viewport.clientHeight / ROW_HEIGHT) + 10;
    const last = Math.min(view.rows.length, first + visible);
    const holder = $('rows');
    holder.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    while (view.pool.length < last - first) view.pool.push(rowNode());
    const wanted = view.pool.slice(0, Math.max(0, last - first));
    if (holder.childElementCount !== wanted.length) holder.replaceChildren(...wanted);
    for (let i = 0; i < wanted.length; i += 1) {
      const rec = view.rows[first + i];
      const row = wanted[i];
      if (row.dataset.key === rec.key && Number(row.dataset.revision) === rec.revision) continue;
      row.dataset.key = rec.key;
      row.dataset.kind = rec.kind;
      row.dataset.id = rec.id;
      row.dataset.status = rec.status;
      row.dataset.outcome = rec.outcome;
      row.dataset.revision = String(rec.revision);
      const [kind, id, status, progress, updated, revision] = row.children;
      kind.textContent = model.info[rec.kind].short;
      id.textContent = rec.id;
      id.title = rec.id;
      status.textContent = rec.status;
      status.className = `status outcome-${rec.outcome}`;
      progressCell(progress, rec);
      updated.textContent = rec.updated;
      revision.textContent = String(rec.revision);
    }
  }

  function drawSummary() {
    view.countsChanged = false;
    const cards = [];
    for (const kind of model.kinds) {
      const counts = model.counts[kind.kind] || new Map();
      let total = 0;
      for (const n of counts.values()) total += n;
      const card = el('div', 'card');
      card.dataset.kind = kind.kind;
      const title = el('h2');
      title.append(el('span', '', kind.title), el('span', 'muted total', total));
      const chips = el('div', 'chips');
      const statuses = [...kind.statuses.map((s) => s.status)];
      if (kind.kind === 'dataset') statuses.push('no run');
      for (const status of statuses) {
        const n = counts.get(status) || 0;
        const chip = el('button', `chip outcome-${outcomeOf(kind.kind, status)}${n ? '' : ' zero'}`);
        chip.type = 'button';
        chip.dataset.status = status;
        chip.append(el('span', '', status), el('b', '', n));
        chip.addEventListener('click', () => {
          $('filter-kind').value = kind.kind;
          fillStatusFilter();
          $('filter-status').value = status;
          view.stale = true;
          schedule();
        });
        chips.append(chip);
      }
      card.append(title, chips);
      cards.push(card);
    }
    $('summary').replaceChildren(...cards);
  }

  function drawConnection() {
    const state = connectionState();
    const node = $('conn-state');
    if (node.dataset.state !== state) {
      node.dataset.state = state;
      node.textContent = state;
      node.className = `conn conn-${state}`;
      document.body.dataset.connection = state;
    }
    $('store-revision').textContent = model.storeRevision ? String(model.storeRevision) : '–';
    if (model.lastHeartbeat) {
      const ago = Math.round((Date.now() - model.lastHeartbeat.getTime()) / 1000);
      $('last-heartbeat').textContent =
        `${pad(model.lastHeartbeat.getHours())}:${pad(model.lastHeartbeat.getMinutes())}:` +
        `${pad(model.lastHeartbeat.getSeconds())} (${ago} s ago)`;
    }
  }

  // --- the detail view ---------------------------------------------------------------

  function openDetail(key) {
    if (!key) return;
    view.selected = key;
    view.selectedRevision = -1;
    view.historyFor = null;
    $('detail').hidden = false;
    schedule();
  }

  function closeDetail() {
    view.selected = null;
    $('detail').hidden = true;
  }

  function section(title) {
    const node = el('section', 'detail-section');
    node.append(el('h3', '', title));
    return node;
  }

  function table(headings, rows) {
    const t = el('table', 'list');
    const head = el('tr');
    for (const h of headings) head.append(el('th', '', h));
    t.append(head);
    for (const cells of rows) {
      const tr = el('tr');
      for (const c of cells) tr.append(el('td', '', c));
      t.append(tr);
    }
    return t;
  }

  function messagesOf(rec) {
    const out = [];
    const job = rec.job;
    if (job.error && (job.error.message || job.error.errorCode)) {
      out.push([job.error.errorCode || 'error', job.error.message || '']);
    }
    if (rec.kind === 'catalog_import' && job.message) out.push(['message', job.message]);
    return out;
  }

  function drawDetail() {
    if (!view.selected) return;
    const rec = model.jobs.get(view.selected);
    if (!rec) return;
    if (rec.revision === view.selectedRevision) return;
    view.selectedRevision = rec.revision;
    $('detail-title').textContent = `${model.info[rec.kind].title}: ${rec.id}`;
    const body = $('detail-body');
    const parts = [];

    const summary = el('p');
    const status = el('span', `status outcome-${rec.outcome}`, rec.status);
    summary.append(status, el('span', 'muted', ` · revision ${rec.revision} · updated ${rec.updated}`));
    parts.push(summary);

    for (const [code, text] of messagesOf(rec)) {
      const box = el('div', 'message');
      box.append(el('b', '', `${code}: `), el('span', 'message-text', text));
      parts.push(box);
    }

    if (rec.kind === 'prepared_delivery') {
      const artifacts = section('Artifacts');
      const list = Array.isArray(rec.job.artifacts) ? rec.job.artifacts : [];
      artifacts.append(list.length
        ? table(['item', 'type', 'size', 'url'], list.map((a) => [a.itemKey, a.artifactType || '', a.size, a.url]))
        : el('p', 'muted', 'none yet'));
      parts.push(artifacts);
    }
    if (rec.kind === 'dataset') {
      const steps = section('Steps');
      const list = Array.isArray(rec.job.steps) ? rec.job.steps : [];
      if (!list.length) steps.append(el('p', 'muted', 'no import run yet'));
      for (const step of list) {
        const head = el('p');
        head.append(
          el('b', '', step.name),
          el('span', `status outcome-${step.status === 'success' ? 'succeeded' : step.status === 'failed' ? 'failed' : 'running'}`, ` ${step.status}`),
          el('span', 'muted', ` · ${localTime(step.start)} → ${step.end ? localTime(step.end) : 'running'}`),
        );
        steps.append(head);
        const entries = Array.isArray(step.entries) ? step.entries : [];
        if (entries.length) {
          steps.append(table(['time', 'level', 'detail'], entries.map((e) => [localTime(e.created_at), e.level, e.detail])));
        }
      }
      parts.push(steps);
    }

    const history = section('History');
    history.id = 'detail-history';
    const old = document.getElementById('detail-history');
    if (old && view.historyFor === rec.key) history.replaceChildren(...old.childNodes);
    else history.append(el('p', 'muted', 'loading…'));
    parts.push(history);

    const json = section('Documented JSON');
    json.append(el('pre', 'json mono', JSON.stringify(rec.job, null, 2)));
    parts.push(json);

    body.replaceChildren(...parts);
    loadHistory(rec);
  }

  async function loadHistory(rec) {
    const now = Date.now();
    if (view.historyFor === rec.key && now - view.historyAt < 1000) {
      setTimeout(() => {
        if (view.selected === rec.key) {
          view.selectedRevision = -1;
          schedule();
        }
      }, 1000);
      return;
    }
    view.historyFor = rec.key;
    view.historyAt = now;
    const changes = [];
    let token = '';
    let first = null;
    try {
      for (let page = 0; page < HISTORY_PAGES; page += 1) {
        const query = new URLSearchParams({ page_size: '1000' });
        if (token) query.set('page_token', token);
        const response = await fetch(
          `/api/v1/history/${encodeURIComponent(rec.kind)}/${encodeURIComponent(rec.id)}?${query}`,
          { headers: headers(), cache: 'no-store' },
        );
        const body = await response.json();
        if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
        if (!first) first = body;
        changes.push(...body.changes);
        token = body.nextPageToken;
        if (!token) break;
      }
    } catch (error) {
      drawHistory(rec, null, [], String(error.message || error));
      return;
    }
    drawHistory(rec, first, changes, null);
  }

  function seconds(ms) {
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }

  // Running statuses differ in shade of blue on the timeline (Start, InProgress, Pause...).
  function shade(kind, status) {
    const statuses = model.kinds.find((k) => k.kind === kind)?.statuses || [];
    const index = Math.max(0, statuses.findIndex((s) => s.status === status));
    return `hsl(${205 + ((index * 37) % 60)}, 75%, ${38 + ((index * 13) % 30)}%)`;
  }

  function drawHistory(rec, page, changes, failure) {
    const node = document.getElementById('detail-history');
    if (!node || view.selected !== rec.key) return;
    const parts = [el('h3', '', 'History')];
    if (failure) {
      parts.push(el('p', 'message', failure));
      node.replaceChildren(...parts);
      return;
    }
    if (page && page.truncated) {
      parts.push(el('p', 'note', `The earliest changes were compacted away: the kept history starts at revision ${page.oldestRevision}.`));
    }
    // Time spent in each status: from one change to the next (the last one until now,
    // unless the job is settled).
    const spans = [];
    for (let i = 0; i < changes.length; i += 1) {
      const status = statusOf(rec.kind, changes[i].job || {});
      const from = Date.parse(changes[i].time);
      const settled = outcomeOf(rec.kind, status) !== 'running';
      const to = i + 1 < changes.length ? Date.parse(changes[i + 1].time) : (settled ? from : Date.now());
      const last = spans[spans.length - 1];
      if (last && last.status === status) last.ms += Math.max(0, to - from);
      else spans.push({ status, ms: Math.max(0, to - from), from });
    }
    const bar = el('div', 'timeline');
    const total = spans.reduce((sum, s) => sum + s.ms, 0) || 1;
    for (const span of spans) {
      const outcome = outcomeOf(rec.kind, span.status);
      const part = el('span', outcome);
      part.style.flexGrow = String(Math.max(span.ms / total, 0.01));
      if (outcome === 'running') part.style.backgroundColor = shade(rec.kind, span.status);
      part.title = `${span.status}: ${seconds(span.ms)}`;
      bar.append(part);
    }
    parts.push(bar);
    const timeline = el('ol', 'spans');
    for (const span of spans) {
      const item = el('li');
      const swatch = el('span', `swatch ${outcomeOf(rec.kind, span.status)}`);
      if (outcomeOf(rec.kind, span.status) === 'running') swatch.style.backgroundColor = shade(rec.kind, span.status);
      item.append(
        swatch,
        el('span', `status outcome-${outcomeOf(rec.kind, span.status)}`, span.status),
        el('span', 'muted', ` from ${localTime(new Date(span.from).toISOString())} for ${seconds(span.ms)}`),
      );
      timeline.append(item);
    }
    parts.push(timeline);
    parts.push(table(['revision', 'time', 'status', 'progress'], changes.map((c) => {
      const job = c.job || {};
      const progress = rec.kind === 'map_import' ? (job.metaData || {}).progress
        : rec.kind === 'prepared_delivery' ? job.progress
          : rec.kind === 'dataset' ? (Array.isArray(job.steps) ? job.steps.map((s) => `${s.name} ${s.status}`).join(', ') : '')
            : job.type || '';
      return [c.revision, localTime(c.time), statusOf(rec.kind, job), progress ?? ''];
    })));
    const table_ = parts[parts.length - 1];
    table_.classList.add('history-changes');
    node.replaceChildren(...parts);
  }

  // --- filters ----------------------------------------------------------------------

  function fillStatusFilter() {
    const kind = $('filter-kind').value;
    const select = $('filter-status');
    const current = select.value;
    const statuses = [];
    for (const k of model.kinds) {
      if (kind && k.kind !== kind) continue;
      for (const s of k.statuses) if (!statuses.includes(s.status)) statuses.push(s.status);
      if (k.kind === 'dataset') statuses.push('no run');
    }
    const options = [el('option', '', 'all statuses')];
    options[0].value = '';
    for (const status of statuses) {
      const option = el('option', '', status);
      option.value = status;
      options.push(option);
    }
    select.replaceChildren(...options);
    select.value = statuses.includes(current) ? current : '';
  }

  function setupFilters() {
    const kindSelect = $('filter-kind');
    for (const kind of model.kinds) {
      const option = el('option', '', kind.title);
      option.value = kind.kind;
      kindSelect.append(option);
    }
    fillStatusFilter();
    const refilter = () => {
      view.stale = true;
      $('viewport').scrollTop = 0;
      schedule();
    };
    kindSelect.addEventListener('change', () => {
      fillStatusFilter();
      refilter();
    });
    $('filter-status').addEventListener('change', refilter);
    $('filter-search').addEventListener('input', refilter);
    $('order').addEventListener('change', refilter);
    $('viewport').addEventListener('scroll', schedule, { passive: true });
    window.addEventListener('resize', schedule);
    $('detail-close').addEventListener('click', closeDetail);
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') closeDetail();
    });
    setInterval(schedule, 1000); // the heartbeat's age and the "resynced" badge
  }

  // --- the key --------------------------------------------------------------------------

  let started = false;

  function showPrompt(message) {
    $('app').hidden = true;
    $('key-prompt').hidden = false;
    $('key-error').textContent = message || '';
    $('key-input').focus();
  }

  function keyRefused(message) {
    // Every stream stops: the page starts over at the prompt, saying why.
    sessionStorage.removeItem(KEY_STORE);
    sessionStorage.setItem(KEY_MESSAGE, message);
    window.location.reload();
  }

  async function keyWorks(key) {
    const response = await fetch('/api/v1/watch/map_import', {
      method: 'HEAD',
      headers: { 'X-Api-Key': key },
      cache: 'no-store',
    });
    if (response.ok) return null;
    if (response.status === 401) return 'The server did not accept this key.';
    if (response.status === 403) return 'This key does not have the read scope.';
    return `The server answered ${response.status}.`;
  }

  function start() {
    if (started) return;
    started = true;
    $('key-prompt').hidden = true;
    $('app').hidden = false;
    $('forget-key').hidden = !model.keysRequired;
    setupFilters();
    schedule();
    for (const kind of model.kinds) follow(kind.kind);
  }

  async function boot() {
    const response = await fetch('/dashboard/kinds.json', { cache: 'no-store' });
    const config = await response.json();
    model.keysRequired = Boolean(config.keys);
    model.kinds = config.kinds;
    const shortNames = {
      map_import: 'map import',
      prepared_delivery: 'delivery',
      dataset: 'dataset',
      catalog_import: 'catalog import',
    };
    for (const kind of model.kinds) {
      model.info[kind.kind] = {
        title: kind.title,
        short: shortNames[kind.kind] || kind.kind,
        idKey: kind.idKey,
        outcome: new Map(kind.statuses.map((s) => [s.status, s.outcome])),
      };
      model.counts[kind.kind] = new Map();
    }
    $('forget-key').addEventListener('click', () => {
      sessionStorage.removeItem(KEY_STORE);
      window.location.reload();
    });
    $('key-prompt').addEventListener('submit', async (event) => {
      event.preventDefault();
      const key = $('key-input').value.trim();
      if (!key) return;
      const problem = await keyWorks(key);
      if (problem) {
        showPrompt(problem);
        return;
      }
      sessionStorage.setItem(KEY_STORE, key);
      model.key = key;
      $('key-input').value = '';
      start();
    });
    if (!model.keysRequired) {
      start();
      return;
    }
    const saved = sessionStorage.getItem(KEY_STORE);
    if (saved && !(await keyWorks(saved))) {
      model.key = saved;
      start();
    } else {
      if (saved) sessionStorage.removeItem(KEY_STORE);
      const message = sessionStorage.getItem(KEY_MESSAGE) || '';
      sessionStorage.removeItem(KEY_MESSAGE);
      showPrompt(message);
    }
  }

  window.addEventListener('DOMContentLoaded', boot);
})();
