// The lastwill dashboard: reads the admin API's live feed (/api/events, server-sent events read with
// fetch so that the token goes in the Authorization header, never in a URL) and shows every client,
// the pending wills counting down, the will counters, a client's will timeline (the text of
// `lastwill explain`) and the operator's actions. Data from the broker is only ever put in the page
// as text (textContent), never as HTML.
'use strict';

const TOKEN_KEY = 'lastwill-admin-token';
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  rows: new Map(),        // client id -> row (as the API sends it)
  offset: 0,              // the broker's wall clock minus this browser's, in seconds
  counters: null,
  selected: null,         // the client id whose timeline is open
  filter: '',
  truncated: null,
  renderQueued: false,
};

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const serverNow = () => Date.now() / 1000 + state.offset;

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h.Authorization = 'Bearer ' + state.token;
  return h;
}

async function api(method, path) {
  const response = await fetch(path, {method, headers: headers({Accept: 'application/json'}), cache: 'no-store'});
  let body = null;
  const type = response.headers.get('Content-Type') || '';
  if (type.startsWith('application/json')) body = await response.json();
  else body = await response.text();
  return {status: response.status, body};
}

// ---- the token ------------------------------------------------------------------------------------
function showLogin(message) {
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token').focus();
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  state.token = $('token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  start();
});

async function start() {
  let probe;
  try {
    probe = await api('GET', '/api/wills');
  } catch (e) {
    showLogin('the admin API does not answer: ' + e);
    return;
  }
  if (probe.status === 401) {
    showLogin(state.token ? 'this token was refused' : '');
    return;
  }
  $('login').hidden = true;
  $('main').hidden = false;
  stream();
}

// ---- the live feed ----------------------------------------------------------------------------------
function setLive(on, text) {
  const live = $('live');
  live.className = 'live ' + (on ? 'on' : 'off');
  live.textContent = text || (on ? 'live' : 'reconnecting');
}

// the stream is ended when the page is left (a page kept in the back-forward cache would otherwise keep
// it open, and the broker would keep collecting changes for nobody), and opened again if it comes back
let streaming = null;  // the AbortController of the open stream
window.addEventListener('pagehide', () => {
  if (streaming) streaming.abort();
});
window.addEventListener('pageshow', (event) => {
  if (event.persisted && !$('main').hidden) stream();
});

async function stream() {
  if (streaming) streaming.abort();
  const controller = streaming = new AbortController();
  while (streaming === controller && !controller.signal.aborted) {
    try {
      const response = await fetch('/api/events', {headers: headers({Accept: 'text/event-stream'}), cache: 'no-store',
                                                   signal: controller.signal});
      if (response.status === 401) {
        showLogin('the token was refused');
        return;
      }
      if (!response.ok || !response.body) throw new Error('HTTP ' + response.status);
      setLive(true);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          handleBlock(block);
        }
      }
    } catch (e) {
      // the broker went away or restarted (or the page is being left): try again
    }
    setLive(false);
    await sleep(1000);
  }
}

function handleBlock(block) {
  let name = 'message';
  let data = '';
  for (const line of block.split('\n')) {
    if (line.startsWith('event: ')) name = line.slice(7);
    else if (line.startsWith('data: ')) data += line.slice(6);
  }
  if (!data) return;  // a keep-alive comment
  const message = JSON.parse(data);
  if (name === 'snapshot') {
    state.offset = message.now - Date.now() / 1000;
    state.rows = new Map(message.rows.map((r) => [r.client_id, r]));
    state.truncated = message.truncated ? message.total : null;
    renderCounters(message.counters);
  } else if (name === 'clients') {
    state.offset = message.now - Date.now() / 1000;
    for (const r of message.rows) state.rows.set(r.client_id, r);
    for (const id of message.gone) state.rows.delete(id);
    if (state.selected !== null && (message.rows.some((r) => r.client_id === state.selected) ||
                                    message.gone.includes(state.selected))) {
      loadTimeline(state.selected);
    }
  } else if (name === 'counters') {
    renderCounters(message);
    return;
  }
  queueRender();
}

// ---- the filter: a client id (substring) or a topic (substring, or an MQTT filter with + and #) ----
function topicMatches(filter, topic) {
  const f = filter.split('/');
  const t = topic.split('/');
  if (t[0].startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

function visible(row) {
  const f = state.filter;
  if (!f) return true;
  if (row.client_id.toLowerCase().includes(f.toLowerCase())) return true;
  if (!row.topic) return false;
  if (f.includes('+') || f.includes('#')) return topicMatches(f, row.topic);
  return row.topic.toLowerCase().includes(f.toLowerCase());
}

$('filter').addEventListener('input', () => {
  state.filter = $('filter').value.trim();
  queueRender();
});

// ---- rendering ------------------------------------------------------------------------------------------
function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    render();
  });
}

function stateOf(row) {
  if (row.online) return 'online';
  if (row.will === 'pending') return 'pending';
  return 'offline';
}

function countdown(fireAt) {
  const left = Math.max(0, fireAt - serverNow());
  return left < 100 ? left.toFixed(1) + ' s' : Math.round(left) + ' s';
}

function ago(at) {
  if (!at) return '';
  const s = Math.max(0, serverNow() - at);
  if (s < 60) return Math.round(s) + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}

function render() {
  const rows = [...state.rows.values()];
  const order = {online: 0, pending: 1, offline: 2};
  rows.sort((a, b) => (order[stateOf(a)] - order[stateOf(b)]) || a.client_id.localeCompare(b.client_id));
  const shown = rows.filter(visible);
  const online = rows.filter((r) => r.online).length;
  const pending = rows.filter((r) => r.will === 'pending');
  $('totals').textContent = `${online} online · ${rows.length - online} offline · ${pending.length} pending will(s)`;
  $('shown').textContent = state.filter ? `(${shown.length} of ${rows.length})` : `(${rows.length})`;
  const truncated = $('truncated');
  truncated.hidden = state.truncated === null;
  if (state.truncated !== null) {
    truncated.textContent = `The broker knows ${state.truncated} clients: the first ${state.rows.size} were sent ` +
      '(connected first); changes to the others appear as they happen.';
  }

  const body = $('clients').tBodies[0];
  const fragment = document.createDocumentFragment();
  for (const row of shown) fragment.appendChild(clientRow(row));
  body.replaceChildren(fragment);

  const list = $('pending');
  const items = document.createDocumentFragment();
  for (const row of pending.filter(visible).sort((a, b) => a.fire_at - b.fire_at)) {
    const li = el('li', 'pending-will');
    li.dataset.client = row.client_id;
    li.appendChild(el('span', 'client', row.client_id));
    li.appendChild(el('span', 'arrow', '→'));
    li.appendChild(el('span', 'topic', row.topic || ''));
    const c = el('span', 'countdown', countdown(row.fire_at));
    c.dataset.fireAt = row.fire_at;
    li.appendChild(c);
    if (row.ended) li.appendChild(el('span', 'cause', row.ended.detail));
    li.addEventListener('click', () => select(row.client_id));
    items.appendChild(li);
  }
  list.replaceChildren(items);
  $('no-pending').hidden = pending.length > 0;
  updateDetailButtons();
}

function clientRow(row) {
  const st = stateOf(row);
  const tr = el('tr', st + (row.client_id === state.selected ? ' selected' : ''));
  tr.dataset.client = row.client_id;
  const stateCell = el('td', 'state');
  stateCell.appendChild(el('span', 'dot'));
  stateCell.appendChild(el('span', 'label', st));
  tr.appendChild(stateCell);
  tr.appendChild(el('td', 'client', row.client_id));

  const will = el('td', 'will');
  if (row.will === 'pending') {
    will.appendChild(el('span', 'badge pending', 'pending'));
    will.appendChild(document.createTextNode(' publishes in '));
    const c = el('span', 'countdown', countdown(row.fire_at));
    c.dataset.fireAt = row.fire_at;
    will.appendChild(c);
    will.appendChild(el('span', 'topic', ' on ' + row.topic));
  } else if (row.will === 'armed') {
    will.appendChild(el('span', 'badge armed', 'armed'));
    will.appendChild(el('span', 'topic', ' ' + row.topic));
  } else {
    will.appendChild(el('span', 'summary', row.summary));
  }
  tr.appendChild(will);

  const conn = el('td', 'conn');
  if (row.online) {
    conn.textContent = `${row.peer} · MQTT ${row.protocol === 5 ? '5.0' : row.protocol === 4 ? '3.1.1' : '3.1'} · ` +
      `connected ${ago(row.since)}`;
  } else if (row.ended) {
    conn.appendChild(el('span', 'badge cause', row.ended.cause));
    conn.appendChild(el('span', 'detail', ' ' + row.ended.detail + (row.ended.at ? ' · ' + ago(row.ended.at) : '')));
  } else {
    conn.textContent = row.session ? 'offline, session kept' : 'offline';
  }
  tr.appendChild(conn);
  tr.addEventListener('click', () => select(row.client_id));
  return tr;
}

function renderCounters(counters) {
  state.counters = counters;
  chart('chart-published', counters.published);
  chart('chart-cancelled', counters.cancelled);
  chart('chart-dropped', counters.dropped);
}

function chart(id, counts) {
  const bars = $(id).querySelector('.bars');
  const entries = Object.entries(counts || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...entries.map(([, n]) => n));
  const fragment = document.createDocumentFragment();
  if (!entries.length) fragment.appendChild(el('p', 'empty', 'none yet'));
  for (const [key, n] of entries) {
    const line = el('div', 'bar-line');
    line.dataset.key = key;
    line.appendChild(el('span', 'bar-label', key));
    const track = el('span', 'bar-track');
    const bar = el('span', 'bar');
    bar.style.width = (100 * n / max).toFixed(1) + '%';
    track.appendChild(bar);
    line.appendChild(track);
    line.appendChild(el('span', 'bar-value', n));
    fragment.appendChild(line);
  }
  bars.replaceChildren(fragment);
}

setInterval(() => {
  for (const c of document.querySelectorAll('.countdown')) c.textContent = countdown(Number(c.dataset.fireAt));
}, 100);

// ---- one client: its timeline (the text of `lastwill explain`) and the operator's actions ------------------
function select(clientId) {
  state.selected = clientId;
  $('detail').hidden = false;
  $('detail-title').textContent = clientId;
  $('action-result').textContent = '';
  loadTimeline(clientId);
  queueRender();
}

$('detail-close').addEventListener('click', () => {
  state.selected = null;
  $('detail').hidden = true;
  queueRender();
});

async function loadTimeline(clientId) {
  const {status, body} = await api('GET', `/api/clients/${encodeURIComponent(clientId)}/timeline?format=text`);
  if (state.selected !== clientId) return;
  $('timeline').textContent = status === 200 ? body : (body && body.error) || `HTTP ${status}`;
}

const ACTIONS = {
  'disconnect': ['POST', (id) => `/api/clients/${id}/disconnect`],
  'disconnect-discard': ['POST', (id) => `/api/clients/${id}/disconnect?discard_will=true`],
  'publish-will': ['POST', (id) => `/api/clients/${id}/will/publish`],
  'cancel-will': ['POST', (id) => `/api/clients/${id}/will/cancel`],
  'delete-session': ['DELETE', (id) => `/api/sessions/${id}`],
  'delete-session-discard': ['DELETE', (id) => `/api/sessions/${id}?discard_will=true`],
};

function updateDetailButtons() {
  const row = state.selected !== null ? state.rows.get(state.selected) : null;
  const can = {
    'disconnect': !!(row && row.online),
    'disconnect-discard': !!(row && row.online && row.will !== 'none'),
    'publish-will': !!(row && row.will === 'pending'),
    'cancel-will': !!(row && row.will === 'pending'),
    'delete-session': !!(row && row.session),
    'delete-session-discard': !!(row && row.session && row.will !== 'none'),
  };
  for (const button of document.querySelectorAll('#actions button')) button.disabled = !can[button.dataset.action];
}

for (const button of document.querySelectorAll('#actions button')) {
  button.addEventListener('click', async () => {
    const clientId = state.selected;
    if (clientId === null) return;
    const [method, path] = ACTIONS[button.dataset.action];
    const {status, body} = await api(method, path(encodeURIComponent(clientId)));
    $('action-result').textContent = body && body.detail ? body.detail : `HTTP ${status}`;
    $('action-result').className = status === 200 ? 'ok' : 'error';
    loadTimeline(clientId);
  });
}

// ---- retained messages --------------------------------------------------------------------------------------
async function listRetained() {
  const filter = $('retained-filter').value.trim() || '#';
  const {status, body} = await api('GET', '/api/retained?filter=' + encodeURIComponent(filter));
  const rows = document.createDocumentFragment();
  if (status !== 200) {
    $('retained-result').textContent = (body && body.error) || `HTTP ${status}`;
  } else {
    $('retained-result').textContent = `${body.count} message(s)`;
    for (const r of body.retained) {
      const tr = el('tr');
      tr.dataset.topic = r.topic;
      tr.appendChild(el('td', 'topic', r.topic));
      tr.appendChild(el('td', 'num', r.qos));
      tr.appendChild(el('td', 'num', r.bytes));
      tr.appendChild(el('td', 'num', r.expires_in === null ? 'never' : Math.round(r.expires_in) + ' s'));
      tr.appendChild(el('td', 'payload', r.payload === null ? '(binary)' : r.payload + (r.truncated ? '…' : '')));
      rows.appendChild(tr);
    }
  }
  $('retained').tBodies[0].replaceChildren(rows);
}

$('retained-form').addEventListener('submit', (event) => {
  event.preventDefault();
  listRetained();
});

$('retained-delete').addEventListener('click', async () => {
  const filter = $('retained-filter').value.trim();
  if (!filter) return;
  const {status, body} = await api('DELETE', '/api/retained?filter=' + encodeURIComponent(filter));
  await listRetained();
  $('retained-result').textContent = (body && (body.detail || body.error)) || `HTTP ${status}`;
});

start();
