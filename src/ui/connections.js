// The Connections page: every live connection (sortable, searchable, refreshed every 2 s) and,
// for a chosen principal, its closed connections with their close reasons.

import { $, el, say, count, bytes, duration, localDateTime, parseTime, every } from './dom.js';
import { getJson } from './session.js';

const tableBody = $('conn-body');
const search = $('conn-search');
const auto = $('conn-auto');
const error = $('conn-error');
let connections = [];
let sort = { key: 'CreateTime', descending: true };
let historyOf = null;

const refresher = every(2000, refresh);

async function refresh() {
  try {
    connections = await getJson('/api/v3/connections');
    say(error, '');
    render();
    if (historyOf) showHistory(historyOf);
  } catch (failure) {
    say(error, `The connections could not be read: ${failure.message}`);
  }
}

function compare(a, b) {
  const x = sort.key === 'Filters' ? a.Filters.join(' ') : a[sort.key];
  const y = sort.key === 'Filters' ? b.Filters.join(' ') : b[sort.key];
  const order = typeof x === 'number' ? x - y : String(x).localeCompare(String(y));
  return sort.descending ? -order : order;
}

function render() {
  const words = search.value.trim().toLowerCase();
  const shown = connections
    .filter((c) => !words || [c.Principal, c.Type, c.RemoteAddr, ...c.Filters]
      .some((field) => String(field).toLowerCase().includes(words)))
    .sort(compare);
  const now = Date.now();
  tableBody.replaceChildren(...shown.map((c) => el('tr', { 'data-remote': c.RemoteAddr, 'data-type': c.Type },
    el('td', {}, el('button', { type: 'button', class: 'link-button', 'data-principal': c.Principal,
      title: `History of ${c.Principal}` }, c.Principal)),
    el('td', {}, el('span', { class: `tag ${c.Type}` }, c.Type)),
    el('td', { class: 'mono' }, c.RemoteAddr),
    el('td', { class: 'mono filters' }, c.Filters.join(', ') || '–'),
    el('td', { class: 'num' }, count(c.EventsSent)),
    el('td', { class: 'num' }, bytes(c.BytesSent)),
    el('td', { class: 'num' }, c.LastSeq ? count(c.LastSeq) : '–'),
    el('td', { class: 'num', title: localDateTime(c.CreateTime) }, duration(now - parseTime(c.CreateTime))))));
  const websockets = connections.filter((c) => c.Type === 'websocket').length;
  $('conn-count').textContent = `${shown.length} of ${connections.length} shown · ${websockets} websocket${websockets === 1 ? '' : 's'}`;
  for (const th of document.querySelectorAll('#conn-table th[data-key]')) {
    th.setAttribute('aria-sort', th.dataset.key === sort.key ? (sort.descending ? 'descending' : 'ascending') : 'none');
  }
}

async function showHistory(principal) {
  historyOf = principal;
  $('history').hidden = false;
  $('history-principal').textContent = principal;
  try {
    const closed = await getJson(`/api/v3/connections/history?principal=${encodeURIComponent(principal)}&limit=50`);
    if (historyOf !== principal) return;
    $('history-empty').hidden = closed.length > 0;
    $('history-body').replaceChildren(...closed.map((c) => el('tr', {},
      el('td', {}, localDateTime(c.CreateTime)),
      el('td', {}, localDateTime(c.CloseTime)),
      el('td', { class: 'num' }, duration(parseTime(c.CloseTime) - parseTime(c.CreateTime))),
      el('td', {}, c.Type),
      el('td', { class: 'mono' }, c.RemoteAddr),
      el('td', { class: c.CloseReason === 'client closed' ? '' : 'attention' }, c.CloseReason),
      el('td', { class: 'num' }, count(c.EventsSent)))));
  } catch (failure) {
    say(error, `The history could not be read: ${failure.message}`);
  }
}

document.querySelector('#conn-table thead').addEventListener('click', (click) => {
  const th = click.target.closest('th[data-key]');
  if (!th) return;
  sort = th.dataset.key === sort.key
    ? { key: sort.key, descending: !sort.descending }
    : { key: th.dataset.key, descending: ['EventsSent', 'BytesSent', 'LastSeq'].includes(th.dataset.key) };
  render();
});

tableBody.addEventListener('click', (click) => {
  const button = click.target.closest('button[data-principal]');
  if (button) {
    showHistory(button.dataset.principal);
    $('history').scrollIntoView({ block: 'nearest' });
  }
});

$('history-close').addEventListener('click', () => {
  historyOf = null;
  $('history').hidden = true;
});

search.addEventListener('input', render);
auto.addEventListener('change', () => (auto.checked ? refresher.start() : refresher.stop()));

export function show() {
  if (auto.checked) refresher.start();
  else refresh();
}

export function hide() {
  refresher.stop();
}
