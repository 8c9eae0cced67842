// jobstatus dashboard: what a person looks at, live, at any size of the store.
//
// Nothing here grows with the store. The counts per kind and status come from the
// server (GET /api/v1/counts/watch: server-sent `counts` events, pushed when the
// store moves on). The table is one page of one kind's jobs, filtered and paged on
// the server (GET /api/v1/dashboard/jobs: status, "active only", id prefix, creation
// time; keyset page tokens). The rows on screen follow an SSE watch of just their
// ids (GET /api/v1/watch/{kind}?ids=..., envelope=true), resumed from the revision
// the page was read at, so no change between the read and the watch is lost; the
// first page is read again when the counts say the store moved on, so new jobs
// appear. A dropped stream resumes from its last id; a resume point the server no
// longer keeps (410) reads the page again. Every job field is rendered with
// textContent, never as markup.
'use strict';

(() => {
  const KEY_STORE = 'jobstatus.apiKey';
  const KEY_MESSAGE = 'jobstatus.keyMessage';
  const HEARTBEAT_SECONDS = 5;
  const PAGE_SIZE = 50;
  const RELIST_MS = 1000; // the first page is read again at most this often while jobs change
  const HISTORY_PAGES = 20;

  const $ = (id) => document.getElementById(id);

  const model = {
    kinds: [], // from /dashboard/kinds.json
    info: {}, // kind -> {title, short, idKey, outcome: Map(status -> outcome)}
    counts: { revision: 0, byKind: {} }, // kind -> Map(status label -> n), from the server
    countsState: 'connecting',
    counted: false, // the first counts arrived
    key: null,
    keysRequired: false,
    storeRevision: 0,
    lastHeartbeat: null,
  };
  // The page on screen: its rows (in the server's order), by key, the revision it was
  // read at, and the tokens of the pages before it (to go back) and after it.
  const page = {
    rows: [],
    byKey: new Map(),
    revision: 0,
    tokens: [''], // tokens[i]: the token of page i (page 0: none)
    index: 0, // the page on screen
    wanted: 0, // the page asked for last
    next: '',
    loading: false,
    again: false, // asked to read again while a read was under way
    relist: null, // the timer of a first page read again soon
    stopWatch: null, // ends the watch of the rows on screen
    readAt: 0,
    error: '',
    generation: 0, // bumps with every read: the row watch of an older page stops
    watchState: 'connecting',
  };
  const view = {
    scheduled: false,
    selected: null,
    selectedRevision: -1,
    historyFor: null,
    historyAt: 0,
  };

  // --- jobs -----------------------------------------------------------------------
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

  function filters() {
    return {
      kind: $('filter-kind').value,
      status: $('filter-status').value,
      prefix: $('filter-prefix').value.trim(),
      since: $('filter-since').value,
      until: $('filter-until').value,
      active: $('filter-active').checked,
    };
  }

  function isoOf(local) {
    // A datetime-local value is the browser's local time.
    if (!local) return '';
    const moment = new Date(local);
    return Number.isNaN(moment.getTime()) ? '' : moment.toISOString();
  }

  function pageQuery(token) {
    const f = filters();
    const query = new URLSearchParams({ kind: f.kind, page_size: String(PAGE_SIZE) });
    query.set('active', f.active ? 'true' : 'false');
    if (f.status) query.set('status', f.status);
    if (f.prefix) query.set('prefix', f.prefix);
    if (isoOf(f.since)) query.set('since', isoOf(f.since));
    if (isoOf(f.until)) query.set('until', isoOf(f.until));
    if (token) query.set('page_token', token);
    return query;
  }

  // Read page `index` (0: the first) of the current filter from the server, and watch
  // its rows. `fresh`: the filter changed, so the page tokens of the old one are void.
  // One read at a time: a read asked for meanwhile runs next, and the answer of the one
  // under way, no longer wanted, is dropped.
  async function readPage(index, fresh) {
    if (fresh) page.tokens = [''];
    page.wanted = fresh ? 0 : index;
    if (page.loading) {
      page.again = true;
      return;
    }
    page.loading = true;
    page.readAt = Date.now();
    const wanted = page.wanted;
    try {
      const response = await fetch(`/api/v1/dashboard/jobs?${pageQuery(page.tokens[wanted])}`, {
        headers: headers(),
        cache: 'no-store',
      });
      if (response.status === 401 || response.status === 403) {
        keyRefused(response.status === 401 ? 'The server did not accept this key.'
          : 'This key does not have the read scope.');
        return;
      }
      const body = await response.json();
      if (response.status >= 500) throw new Error(`the server answered ${response.status}`);
      if (page.again) {
        // another read was asked for meanwhile: this answer is stale
      } else if (!response.ok) {
        page.error = (body.error && body.error.message) || response.statusText;
      } else {
        page.error = '';
        const kind = body.kind;
        page.rows = body.jobs.map((data) => record(kind, data));
        page.byKey = new Map(page.rows.map((rec) => [rec.key, rec]));
        page.revision = Number(body.revision) || 0;
        page.index = wanted;
        page.next = body.nextPageToken || '';
        page.tokens.length = wanted + 1;
        if (page.next) page.tokens.push(page.next);
        if (page.revision > model.storeRevision) model.storeRevision = page.revision;
        page.generation += 1;
        watchRows(kind, page.generation);
      }
    } catch (error) {
      // The server is away or failed: the same page again in a while, unless another
      // read is asked for meanwhile.
      page.error = String(error.message || error);
      setTimeout(() => {
        if (!page.loading && page.wanted === wanted && page.error) readPage(wanted, false);
      }, 1000);
    } finally {
      page.loading = false;
    }
    document.body.dataset.pageGeneration = String(page.generation);
    schedule();
    if (page.again) {
      page.again = false;
      readPage(page.wanted, false);
    }
  }

  function update(rec) {
    const old = page.byKey.get(rec.key);
    if (!old || old.revision >= rec.revision) return; // never go back
    page.byKey.set(rec.key, rec);
    page.rows[page.rows.indexOf(old)] = rec;
    if (rec.revision > model.storeRevision) model.storeRevision = rec.revision;
    schedule();
  }

  function remove(rec) {
    // A job deleted by the retention policy leaves the page (the next read fills it up).
    const old = page.byKey.get(rec.key);
    if (!old) return;
    page.byKey.delete(rec.key);
    page.rows.splice(page.rows.indexOf(old), 1);
    schedule();
  }

  // The first page is read again when the counts say the store moved on past it (new
  // jobs may belong on it), at most every RELIST_MS.
  function storeMoved(revision) {
    if (page.wanted !== 0 || revision <= page.revision) return;
    const wait = page.readAt + RELIST_MS - Date.now();
    if (wait > 0) {
      if (!page.relist) {
        page.relist = setTimeout(() => {
          page.relist = null;
          storeMoved(model.counts.revision);
        }, wait);
      }
      return;
    }
    readPage(0, false);
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


  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch (error) {
      return null;
    }
  }

  // Follow `path` as server-sent events: `handle(event)` for each, resumed from the
  // last id after a drop (Last-Event-ID) while `wanted()` holds. `gone()` is called on a
  // 410 (the resume point is no longer kept); `state(name)` follows the connection;
  // `holder.controller` can end the connection under way at once.
  async function follow(path, resumeFrom, handle, wanted, state, gone, holder = {}) {
    let lastId = resumeFrom;
    let delay = 500;
    while (wanted()) {
      const extra = {};
      if (lastId !== null) extra['Last-Event-ID'] = String(lastId);
      const controller = new AbortController();
      holder.controller = controller;
      let response = null;
      try {
        response = await fetch(path, { headers: headers(extra), cache: 'no-store', signal: controller.signal });
      } catch (error) {
        response = null;
      }
      if (!wanted()) {
        controller.abort();
        return;
      }
      if (response && (response.status === 401 || response.status === 403)) {
        keyRefused(response.status === 401 ? 'The server did not accept this key.'
          : 'This key does not have the read scope.');
        return;
      }
      if (response && response.status === 410) {
        controller.abort();
        gone();
        return;
      }
      if (response && response.ok && response.body) {
        delay = 500;
        state('live');
        let refused = false;
        try {
          await readEvents(response.body, (event) => {
            if (!wanted()) {
              controller.abort();
              return;
            }
            if (event.id !== null) lastId = Number(event.id);
            const data = parse(event);
            if (event.event === 'error' && data
              && (data.code === 'UNAUTHENTICATED' || data.code === 'PERMISSION_DENIED')) {
              refused = true;
            }
            if (data) handle(event, data);
          });
        } catch (error) {
          // the connection dropped (or was let go); resume below
        }
        if (refused) {
          keyRefused('The key was revoked.');
          return;
        }
      }
      if (!wanted()) return;
      state('reconnecting');
      await sleep(delay);
      delay = Math.min(delay * 2, 5000);
    }
  }

  function revisionSeen(revision) {
    if (revision > model.storeRevision) model.storeRevision = revision;
  }

  // The rows on screen, live: a watch of just their ids from the page's revision, until
  // another page is read.
  function watchRows(kind, generation) {
    const ids = page.rows.map((rec) => rec.id);
    const wanted = () => page.generation === generation;
    const holder = {};
    if (page.stopWatch) page.stopWatch(); // the last page's watch ends now
    page.stopWatch = () => holder.controller && holder.controller.abort();
    if (!ids.length) {
      page.watchState = 'live';
      return;
    }
    page.watchState = 'connecting';
    const query = new URLSearchParams({
      ids: ids.join(','),
      envelope: 'true',
      heartbeat: String(HEARTBEAT_SECONDS),
    });
    follow(
      `/api/v1/watch/${encodeURIComponent(kind)}?${query}`,
      page.revision,
      (event, data) => {
        if (event.event === 'change') update(record(kind, data));
        if (event.event === 'deleted') remove(record(kind, data));
        if (event.event === 'heartbeat') model.lastHeartbeat = new Date();
        if (event.id !== null) revisionSeen(Number(event.id));
        schedule();
      },
      wanted,
      (state) => {
        if (wanted()) page.watchState = state;
        schedule();
      },
      () => readPage(page.index, false),
      holder,
    );
  }

  // The counts of every kind and status, pushed by the server when they change.
  function watchCounts() {
    follow(
      `/api/v1/counts/watch?heartbeat=${HEARTBEAT_SECONDS}`,
      null,
      (event, data) => {
        if (event.event === 'counts') {
          const byKind = {};
          for (const kind of model.kinds) byKind[kind.kind] = new Map();
          for (const c of data.counts) {
            if (!byKind[c.kind]) byKind[c.kind] = new Map();
            byKind[c.kind].set(c.label, c.count);
          }
          model.counts = { revision: Number(data.revision) || 0, byKind };
          model.counted = true;
          document.body.dataset.countsRevision = String(model.counts.revision);
          revisionSeen(model.counts.revision);
          storeMoved(model.counts.revision);
        } else if (event.event === 'heartbeat') {
          model.lastHeartbeat = new Date();
        }
        schedule();
      },
      () => true,
      (state) => {
        model.countsState = state;
        schedule();
      },
      () => {},
    );
  }

  function connectionState() {
    const states = [model.countsState, page.watchState];
    if (states.includes('reconnecting')) return 'reconnecting';
    if (states.includes('connecting') || !model.counted) return 'connecting';
    return 'live';
  }

  // --- drawing --------------------------------------------------------------------

  function schedule() {
    if (view.scheduled) return;
    view.scheduled = true;
    requestAnimationFrame(draw);
  }

  function draw() {
    view.scheduled = false;
    drawRows();
    drawPager();
    drawSummary();
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
    const holder = $('rows');
    while (holder.childElementCount > page.rows.length) holder.lastElementChild.remove();
    while (holder.childElementCount < page.rows.length) holder.append(rowNode());
    for (let i = 0; i < page.rows.length; i += 1) {
      const rec = page.rows[i];
      const row = holder.children[i];
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
    $('empty').hidden = page.rows.length > 0 || page.loading;
    $('page-error').textContent = page.error;
  }

  function drawPager() {
    const first = page.index * PAGE_SIZE;
    $('page-info').textContent = page.rows.length
      ? `jobs ${first + 1}–${first + page.rows.length}${page.next ? '' : ' (the last)'}`
      : '';
    $('page-prev').disabled = page.index === 0;
    $('page-next').disabled = !page.next;
  }

  function drawSummary() {
    const cards = [];
    for (const kind of model.kinds) {
      const counts = model.counts.byKind[kind.kind] || new Map();
      let total = 0;
      for (const n of counts.values()) total += n;
      const card = el('div', 'card');
      card.dataset.kind = kind.kind;
      const title = el('h2');
      title.append(el('span', '', kind.title), el('span', 'muted total', total));
      const chips = el('div', 'chips');
      const statuses = kind.statuses.map((s) => s.status);
      if (kind.kind === 'dataset') statuses.push('no run');
      for (const status of statuses) {
        const n = counts.get(status) || 0;
        const chip = el('button', `chip outcome-${outcomeOf(kind.kind, status)}${n ? '' : ' zero'}`);
        chip.type = 'button';
        chip.dataset.status = status;
        chip.dataset.count = String(n);
        chip.append(el('span', '', status), el('b', '', n));
        chip.addEventListener('click', () => {
          $('filter-kind').value = kind.kind;
          fillStatusFilter();
          $('filter-status').value = status;
          if (outcomeOf(kind.kind, status) !== 'running') $('filter-active').checked = false;
          readPage(0, true);
        });
        chips.append(chip);
      }
      card.append(title, chips);
      cards.push(card);
    }
    const summary = $('summary');
    const drawn = summary.dataset.revision;
    if (drawn !== String(model.counts.revision) || summary.childElementCount !== cards.length) {
      summary.replaceChildren(...cards);
      summary.dataset.revision = String(model.counts.revision);
    }
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
    const rec = page.byKey.get(view.selected);
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
    const kind = model.kinds.find((k) => k.kind === $('filter-kind').value);
    const select = $('filter-status');
    const current = select.value;
    const statuses = kind ? kind.statuses.map((s) => s.status) : [];
    if (kind && kind.kind === 'dataset') statuses.push('no run');
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
    kindSelect.value = model.kinds.length ? model.kinds[0].kind : '';
    fillStatusFilter();
    const refilter = () => readPage(0, true);
    let typing = null;
    kindSelect.addEventListener('change', () => {
      fillStatusFilter();
      refilter();
    });
    for (const id of ['filter-status', 'filter-active', 'filter-since', 'filter-until']) {
      $(id).addEventListener('change', refilter);
    }
    $('filter-prefix').addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(refilter, 250);
    });
    $('page-prev').addEventListener('click', () => readPage(Math.max(0, page.index - 1), false));
    $('page-next').addEventListener('click', () => {
      if (page.next) readPage(page.index + 1, false);
    });
    $('detail-close').addEventListener('click', closeDetail);
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') closeDetail();
    });
    setInterval(schedule, 1000); // the heartbeat's age
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
    watchCounts();
    readPage(0, true);
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
