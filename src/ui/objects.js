// The Objects page: read-only lists of herald's objects, one object's JSON, and its last events
// read back from the log.

import { $, el, say, clockTime, every } from './dom.js';
import { element } from './filter.js';
import { api, getJson } from './session.js';

/** Each kind with the field that keys it and the one that names it in the list. */
const KINDS = [
  { kind: 'profiles', key: 'Name' },
  { kind: 'params', key: 'Name' },
  { kind: 'machines', key: 'Uuid', name: 'Name' },
  { kind: 'clusters', key: 'Uuid', name: 'Name' },
  { kind: 'resource_brokers', key: 'Uuid', name: 'Name' },
  { kind: 'users', key: 'Name' },
  { kind: 'roles', key: 'Name' },
];
/** Events shown under an object. */
const LAST_EVENTS = 10;
/** The largest page of GET /api/v3/events. */
const PAGE = 10000;

let current = KINDS[0];
let objects = [];
let chosen = null;
const list = $('object-list');
const view = $('object-view');
const refresher = every(5000, () => load(true));

$('object-kinds').replaceChildren(...KINDS.map((k) => el('button', {
  type: 'button', 'data-kind': k.kind, 'aria-pressed': String(k === current),
}, k.kind.replace('_', ' '))));

$('object-kinds').addEventListener('click', (click) => {
  const button = click.target.closest('button[data-kind]');
  if (!button) return;
  current = KINDS.find((k) => k.kind === button.dataset.kind);
  for (const b of $('object-kinds').children) b.setAttribute('aria-pressed', String(b === button));
  chosen = null;
  view.replaceChildren(el('p', { class: 'muted' }, 'Choose an object to see it and its last events.'));
  load(true);
});

function label(object) {
  const key = object[current.key];
  const name = current.name && object[current.name];
  return name && name !== key ? `${name} (${key.slice(0, 8)}…)` : String(key);
}

function renderList() {
  const words = $('object-search').value.trim().toLowerCase();
  const shown = objects.filter((o) => !words || label(o).toLowerCase().includes(words));
  list.replaceChildren(...shown.map((o) => el('li', {},
    el('button', { type: 'button', 'data-key': o[current.key], 'aria-current': o[current.key] === chosen ? 'true' : false }, label(o)))));
  if (!shown.length) list.append(el('li', { class: 'muted' }, objects.length ? 'Nothing matches.' : `No ${current.kind}.`));
}

async function load(fresh) {
  try {
    objects = await getJson(`/api/v3/${current.kind}`);
    objects.sort((a, b) => label(a).localeCompare(label(b)));
    say($('object-error'), '');
  } catch (failure) {
    objects = [];
    say($('object-error'), `The ${current.kind} could not be listed: ${failure.message}`);
  }
  renderList();
  if (fresh && chosen === null && objects.length) open(objects[0][current.key]);
}

/** The last events of one object, newest first, read from the log's end backwards. */
async function lastEvents(kind, key) {
  const info = await getJson('/api/v3/info');
  const filter = encodeURIComponent(`${kind}.*.${element(key)}`);
  let window = 1000;
  for (;;) {
    const start = Math.max(info.FirstSeq - 1, info.LastSeq - window, 0);
    let since = start;
    let found = [];
    for (;;) {
      const response = await api(`/api/v3/events?since=${since}&limit=${PAGE}&filter=${filter}`);
      const page = await response.json();
      found = found.concat(page).slice(-LAST_EVENTS);
      if (page.length < PAGE) break;
      since = Number(response.headers.get('Herald-Next-Since'));
    }
    if (found.length >= LAST_EVENTS || start <= Math.max(info.FirstSeq - 1, 0)) return found.reverse();
    window *= 10;
  }
}

async function open(key) {
  chosen = key;
  renderList();
  const object = objects.find((o) => o[current.key] === key);
  const kind = current.kind;
  const events = el('tbody');
  view.replaceChildren(
    el('h2', {}, object ? label(object) : key),
    el('pre', { class: 'json', tabindex: 0 }, JSON.stringify(object, null, 2)),
    el('h3', {}, 'Last events'),
    el('div', { class: 'table-wrap' }, el('table', { class: 'grid' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Time'), el('th', { scope: 'col' }, 'Action'),
        el('th', { scope: 'col' }, 'Principal'), el('th', { scope: 'col', class: 'num' }, 'Seq'))),
      events)),
  );
  try {
    const found = await lastEvents(kind, key);
    if (chosen !== key) return;
    events.replaceChildren(...found.map((e) => el('tr', { 'data-seq': e.Seq },
      el('td', { title: e.Time }, clockTime(e.Time)), el('td', {}, e.Action),
      el('td', {}, e.Principal), el('td', { class: 'num' }, e.Seq))));
    if (!found.length) events.append(el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'No events of this object are in the log.')));
  } catch (failure) {
    events.replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'message' }, `The events could not be read: ${failure.message}`)));
  }
}

list.addEventListener('click', (click) => {
  const button = click.target.closest('button[data-key]');
  if (button) open(button.dataset.key);
});
$('object-search').addEventListener('input', renderList);

export function show() {
  refresher.start();
}

export function hide() {
  refresher.stop();
}
