// The Events page: a filter, a live table drawn once per animation frame from the last N events
// (only the rows in view exist in the document, so thousands of events a second cost one small
// update per frame), pause with a count of what arrived meanwhile, rows that open to the whole
// event, and replays.

import { $, el, say, clockTime, localDateTime, count } from './dom.js';
import { EventStream } from './stream.js';
import { problem } from './filter.js';
import { getJson } from './session.js';

const input = $('filter');
const filterError = $('filter-error');
const wrap = $('events-wrap');
const tableHead = $('events-table').tHead;
const body = $('events-body');
const empty = $('events-empty');
const note = $('events-note');
const skippedBadge = $('skipped');
const pauseButton = $('pause');
const link = $('link');

/** Rows drawn beyond each edge of the visible part, so a scroll shows drawn rows at once. */
const OVERSCAN = 8;
/** Events kept beyond `keep` before the list is cut back (cutting every event would copy it). */
const SLACK = 1024;

/** Most rows kept in the table (the Keep menu). */
let keep = Number($('keep').value);
/** Events received, oldest first, as {raw, seq}; the newest `keep` are the table's rows. */
let entries = [];
/** While paused: what arrived, shown on resume. */
let held = [];
/** Events added since the last frame, to keep a scrolled-down reader's rows in place. */
let added = 0;
let skipped = 0;
let paused = false;
let frame = 0;
let received = 0;
let receivedAtLastTick = 0;
let lastTick = performance.now();
/** Height of one row in pixels, measured from the first row drawn. */
let rowHeight = 0;
/** The Seq of the row opened to its JSON, its detail row, and that row's height. */
let expandedSeq = null;
let detailRow = null;
let detailHeight = 0;
/** Rows drawn, by Seq; only the visible part of the table exists in the document. */
const rowsBySeq = new Map();

function schedule() {
  if (!frame) frame = requestAnimationFrame(draw);
}

const stream = new EventStream({
  onEvent(raw, seq) {
    received += 1;
    if (paused) {
      skipped += 1;
      held.push({ raw, seq });
      if (held.length > keep + SLACK) held = held.slice(-keep);
    } else {
      entries.push({ raw, seq });
      added += 1;
    }
    schedule();
  },
  onState(state, detail) {
    link.dataset.state = state;
    link.textContent = detail;
  },
  onNotice(text, kind) {
    if (kind === 'filter-error') showFilterError(text, 'herald');
    else showNote(text, kind);
  },
});

function spacer() {
  return el('tr', { class: 'spacer', 'aria-hidden': 'true' }, el('td', { colspan: 6 }));
}
const topSpacer = spacer();
const bottomSpacer = spacer();
body.append(topSpacer, bottomSpacer);

const rowTemplate = el('tr', { tabindex: 0, 'aria-expanded': 'false' },
  el('td', { class: 'time' }), el('td'), el('td'), el('td', { class: 'key' }),
  el('td', { class: 'principal' }), el('td', { class: 'num' }));

function makeRow(entry) {
  const row = rowTemplate.cloneNode(true);
  row.dataset.seq = entry.seq;
  let event;
  try {
    event = JSON.parse(entry.raw);
  } catch {
    event = { Seq: entry.seq };
  }
  const [time, type, action, key, principal, seq] = row.children;
  time.textContent = clockTime(event.Time);
  time.title = event.Time;
  type.textContent = event.Type;
  action.textContent = event.Action;
  key.textContent = event.Key;
  key.title = event.Key;
  principal.textContent = event.Principal;
  seq.textContent = event.Seq;
  return row;
}

/** How many rows the table has. */
const shown = () => Math.min(entries.length, keep);
/** The event of row `i`, counted from the newest. */
const entryAt = (i) => entries[entries.length - 1 - i];

/** The row index of `seq`, or -1 when it is not among the rows. */
function indexOfSeq(seq) {
  let low = 0;
  let high = entries.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const at = entries[middle].seq;
    if (at === seq) {
      const index = entries.length - 1 - middle;
      return index < shown() ? index : -1;
    }
    if (at < seq) low = middle + 1;
    else high = middle - 1;
  }
  return -1;
}

/**
 * Puts into the document only the rows in view (and a few around them), between two spacers
 * that stand for the rest: the cost of a frame depends on the window's height, not on how many
 * rows are kept or how fast they arrive.
 */
function render(scrollTop) {
  const n = shown();
  empty.hidden = n > 0;
  const height = rowHeight || 30;
  let expanded = expandedSeq === null ? -1 : indexOfSeq(expandedSeq);
  if (expandedSeq !== null && expanded < 0) collapse();
  const extra = expanded >= 0 ? detailHeight : 0;
  const top = (i) => i * height + (expanded >= 0 && i > expanded ? extra : 0);
  const head = tableHead.offsetHeight;
  const viewStart = Math.max(0, scrollTop - head);
  const viewEnd = viewStart + wrap.clientHeight;
  let first = Math.floor(viewStart / height);
  if (expanded >= 0 && first > expanded) first = Math.max(expanded, Math.floor((viewStart - extra) / height));
  first = Math.min(n, Math.max(0, first - OVERSCAN));
  let last = first;
  while (last < n && top(last) < viewEnd + OVERSCAN * height) last += 1;

  const wanted = [];
  const visible = new Set();
  for (let i = first; i < last; i += 1) {
    const entry = entryAt(i);
    let row = rowsBySeq.get(entry.seq);
    if (!row) {
      row = makeRow(entry);
      rowsBySeq.set(entry.seq, row);
    }
    row.setAttribute('aria-expanded', String(i === expanded));
    visible.add(entry.seq);
    wanted.push(row);
    if (i === expanded && detailRow) wanted.push(detailRow);
  }
  for (const [seq, row] of rowsBySeq) {
    if (!visible.has(seq)) {
      row.remove();
      rowsBySeq.delete(seq);
    }
  }
  if (detailRow && !wanted.includes(detailRow)) detailRow.remove();
  // Only new rows are inserted; rows already in place stay, and so does the keyboard focus.
  let cursor = topSpacer.nextSibling;
  for (const row of wanted) {
    if (row === cursor) cursor = cursor.nextSibling;
    else body.insertBefore(row, cursor);
  }
  topSpacer.firstChild.style.height = `${top(first)}px`;
  bottomSpacer.firstChild.style.height = `${Math.max(0, top(n) - top(last))}px`;
  if (!rowHeight && wanted.length) rowHeight = wanted[0].getBoundingClientRect().height;
}

/** Draws once per animation frame whatever arrived since the last one. */
function draw() {
  frame = 0;
  if (paused) showSkipped();
  if (entries.length > keep + SLACK) entries = entries.slice(-keep);
  let scrollTop = wrap.scrollTop;
  // A reader scrolled down keeps seeing the same rows while new ones arrive above them.
  if (added > 0 && scrollTop > 0) scrollTop += Math.min(added, keep) * (rowHeight || 30);
  added = 0;
  render(scrollTop);
  if (scrollTop !== wrap.scrollTop) wrap.scrollTop = scrollTop;
  showCounters();
}

/** Closes the opened row, if any. */
function collapse() {
  if (detailRow) detailRow.remove();
  expandedSeq = null;
  detailRow = null;
  detailHeight = 0;
}

function clearRows() {
  entries = [];
  held = [];
  added = 0;
  collapse();
  wrap.scrollTop = 0;
  render(0);
}

function showSkipped() {
  skippedBadge.hidden = !paused;
  skippedBadge.dataset.count = skipped;
  skippedBadge.textContent = `${count(skipped)} skipped while paused`;
}

function setPaused(value) {
  paused = value;
  pauseButton.textContent = paused ? 'Resume' : 'Pause';
  pauseButton.setAttribute('aria-pressed', String(paused));
  if (paused) {
    skipped = 0;
    held = [];
    showSkipped();
    return;
  }
  const arrived = skipped;
  entries = entries.concat(held);
  added += held.length;
  held = [];
  skipped = 0;
  showSkipped();
  if (arrived > 0) {
    const kept = Math.min(arrived, keep);
    showNote(kept === arrived
      ? `Resumed: added the ${count(arrived)} events that arrived while paused.`
      : `Resumed: ${count(arrived)} events arrived while paused; the last ${count(kept)} are kept (replay to see all).`);
  }
  schedule();
}

function toggle(row) {
  const seq = Number(row.dataset.seq);
  if (expandedSeq === seq) {
    collapse();
    render(wrap.scrollTop);
    return;
  }
  const index = indexOfSeq(seq);
  if (index < 0) return;
  let text = entryAt(index).raw;
  try {
    text = JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    // Shown as received.
  }
  collapse();
  expandedSeq = seq;
  detailRow = el('tr', { class: 'detail' }, el('td', { colspan: 6 }, el('pre', { tabindex: 0 }, text)));
  detailHeight = 0;
  render(wrap.scrollTop);
  detailHeight = detailRow.getBoundingClientRect().height;
  render(wrap.scrollTop);
}

/** Scrolls row `index` into view, draws, and focuses it. */
function focusRow(index) {
  const height = rowHeight || 30;
  const expanded = expandedSeq === null ? -1 : indexOfSeq(expandedSeq);
  const top = index * height + (expanded >= 0 && index > expanded ? detailHeight : 0);
  const head = tableHead.offsetHeight;
  if (top < wrap.scrollTop) wrap.scrollTop = top;
  else if (top + height + head > wrap.scrollTop + wrap.clientHeight) {
    wrap.scrollTop = top + height + head - wrap.clientHeight;
  }
  render(wrap.scrollTop);
  const row = rowsBySeq.get(entryAt(index).seq);
  if (row) row.focus({ preventScroll: true });
}

function showNote(text, kind = 'info') {
  note.dataset.kind = kind;
  say(note, text);
}

function showFilterError(text, source) {
  filterError.dataset.source = source || '';
  say(filterError, source === 'herald' && text ? `herald refused it: ${text}` : text);
  input.setAttribute('aria-invalid', String(Boolean(text)));
}

/** The Seq to replay after so the first event shown is the first one at or after `time`. */
async function seqBefore(time) {
  const info = await getJson('/api/v3/info');
  let low = Math.max(0, info.FirstSeq - 1);
  let high = Math.max(low, info.LastSeq);
  // The log is in Seq order and times normally rise with it: find the first event at or after.
  while (low < high) {
    const middle = Math.floor((low + high) / 2);
    const [next] = await getJson(`/api/v3/events?since=${middle}&limit=1`);
    if (!next || Date.parse(String(next.Time).replace(/(\.\d{3})\d+/, '$1')) >= time) high = middle;
    else low = middle + 1;
  }
  return low;
}

input.addEventListener('input', () => showFilterError(problem(input.value.trim()), 'console'));

$('filter-form').addEventListener('submit', async (submit) => {
  submit.preventDefault();
  const text = input.value.trim();
  if (text === '') {
    showFilterError(problem(text), 'console');
    return;
  }
  // Sent even when the check above objects: herald has the last word, and its text is shown.
  try {
    const refusal = await stream.setFilter(text);
    if (refusal) {
      showFilterError(refusal, 'herald');
      return;
    }
    clearRows();
    showFilterError('', '');
    showNote(`Watching ${text}.`);
  } catch (error) {
    showNote(`The filter was not applied: ${error.message}`, 'warning');
  }
});

pauseButton.addEventListener('click', () => setPaused(!paused));
$('clear').addEventListener('click', clearRows);
$('keep').addEventListener('change', (change) => {
  keep = Number(change.target.value);
  schedule();
});

body.addEventListener('click', (click) => {
  const row = click.target.closest('tr');
  if (row && row.dataset.seq) toggle(row);
});
body.addEventListener('keydown', (key) => {
  const row = key.target;
  if (!(row instanceof HTMLTableRowElement) || !row.dataset.seq) return;
  const index = indexOfSeq(Number(row.dataset.seq));
  const target = { ArrowDown: index + 1, ArrowUp: index - 1, Home: 0, End: shown() - 1 }[key.key];
  if (key.key === 'Enter' || key.key === ' ') {
    key.preventDefault();
    toggle(row);
  } else if (target !== undefined && index >= 0 && target >= 0 && target < shown()) {
    key.preventDefault();
    focusRow(target);
  }
});
wrap.addEventListener('scroll', schedule, { passive: true });

async function replayAfter(seq, describe) {
  clearRows();
  try {
    const gap = await stream.replayFrom(seq);
    showNote(gap || describe, gap ? 'warning' : 'info');
  } catch (error) {
    showNote(`The replay failed: ${error.message}`, 'warning');
  }
}

$('replay-form').addEventListener('submit', (submit) => {
  submit.preventDefault();
  const text = $('replay-seq').value.trim();
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    showNote('Replay after Seq takes a whole number, such as 0 for everything the log holds.', 'warning');
    return;
  }
  replayAfter(Number(text), `Replaying the events after Seq ${text}, then live.`);
});

$('since-form').addEventListener('submit', async (submit) => {
  submit.preventDefault();
  const time = new Date($('since-time').value).getTime();
  if (Number.isNaN(time)) {
    showNote('Choose a date and time to replay from.', 'warning');
    return;
  }
  try {
    const seq = await seqBefore(time);
    const since = localDateTime(new Date(time).toISOString());
    replayAfter(seq, `Replaying from ${since} (after Seq ${seq}), then live.`);
  } catch (error) {
    showNote(`The replay failed: ${error.message}`, 'warning');
  }
});

function showCounters() {
  $('received').textContent = count(received);
  $('last-seq').textContent = stream.lastSeq === null ? '–' : count(stream.lastSeq);
  $('last-seq').dataset.value = stream.lastSeq ?? '';
}

// The rate once a second; the other counters with each drawn frame as well.
setInterval(() => {
  const now = performance.now();
  const rate = ((received - receivedAtLastTick) * 1000) / (now - lastTick);
  receivedAtLastTick = received;
  lastTick = now;
  $('rate').textContent = count(Math.round(rate));
  showCounters();
}, 1000);

/** Connects for the logged-in session. */
export function start() {
  stream.start(input.value.trim() || '*.*.*');
}

/** Disconnects and forgets what was shown (logout). */
export function stop() {
  stream.stop();
  stream.lastSeq = null;
  stream.epoch = null;
  clearRows();
  setPaused(false);
  say(note, '');
  received = 0;
  receivedAtLastTick = 0;
}
