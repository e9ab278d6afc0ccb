// The Health page: the log's bounds, durability, driver and cores from /api/v3/info, and charts
// of the last ten minutes from herald's own samples (/api/v3/info/activity), every 2 s.

import { $, el, say, count, duration, every } from './dom.js';
import { drawChart } from './chart.js';
import { getJson } from './session.js';

/** Samples the charts span (ten minutes at herald's one a second). */
const SLOTS = 600;
/** The fewest samples a chart spans, so a fresh server's first seconds are not a sliver. */
const MIN_SLOTS = 60;
let samples = [];
let lastTick = 0;
let lastUptime = -1;
let slowConsumerCloses = 0;

const refresher = every(2000, refresh);

function fact(field, label, value, shown = String(value), attention = false) {
  return el('div', { class: attention ? 'fact attention' : 'fact', 'data-field': field },
    el('dt', {}, label), el('dd', { 'data-value': value, title: shown }, shown));
}

async function refresh() {
  let info;
  let activity;
  try {
    info = await getJson('/api/v3/info');
    if (info.Uptime < lastUptime) {
      // herald restarted: its sample numbers started again.
      samples = [];
      lastTick = 0;
    }
    lastUptime = info.Uptime;
    activity = await getJson(`/api/v3/info/activity?after=${lastTick}`);
    say($('health-error'), '');
  } catch (failure) {
    say($('health-error'), `herald's health could not be read: ${failure.message}`);
    return;
  }
  samples = samples.concat(activity.Samples).slice(-SLOTS);
  if (samples.length) lastTick = samples[samples.length - 1].Tick;
  slowConsumerCloses = activity.SlowConsumerCloses;
  const latest = samples[samples.length - 1] || { Websockets: 0, ApiConnections: 0 };
  const lastMinute = samples.slice(-60);
  const lagged = lastMinute.filter((s) => s.DeliveryLagSeconds > 0);
  const meanLag = lagged.length
    ? lagged.reduce((sum, s) => sum + s.DeliveryLagSeconds, 0) / lagged.length : 0;
  const retained = Math.max(0, info.LastSeq - info.FirstSeq + 1);
  $('health-facts').replaceChildren(
    el('dl', { class: 'fact-group' },
      fact('LastSeq', 'Last Seq', info.LastSeq, count(info.LastSeq)),
      fact('FirstSeq', 'First Seq', info.FirstSeq, count(info.FirstSeq)),
      fact('Retained', 'Events retained', retained, count(retained)),
      fact('Epoch', 'Epoch', info.Epoch)),
    el('dl', { class: 'fact-group' },
      fact('Durability', 'Durability', info.Durability),
      fact('Driver', 'Driver', info.Driver),
      fact('Cores', 'Cores', info.Cores),
      fact('Uptime', 'Up for', info.Uptime, duration(info.Uptime * 1000))),
    el('dl', { class: 'fact-group' },
      fact('Websockets', 'Websockets', latest.Websockets),
      fact('ApiConnections', 'REST connections', latest.ApiConnections),
      fact('DeliveryLag', 'Delivery lag (1 min)', meanLag, lagText(meanLag), meanLag > 0.1),
      fact('SlowConsumerCloses', 'Slow-consumer closes', slowConsumerCloses, count(slowConsumerCloses), slowConsumerCloses > 0)),
    el('p', { class: 'muted small version' }, `herald ${info.Version} · single node`),
  );
  const perSecond = (field) => samples.map((s) => s[field] / activity.IntervalSeconds);
  // The charts widen with the history herald has, from one minute up to ten.
  const slots = Math.min(SLOTS, Math.max(MIN_SLOTS, samples.length));
  const span = `${Math.round((slots * activity.IntervalSeconds) / 60)} min`;
  drawChart($('chart-events'), {
    title: 'Events per second', slots, span, format: (v) => count(Math.round(v)),
    series: [
      { label: 'published', className: 's1', values: perSecond('Published') },
      { label: 'delivered', className: 's2', values: perSecond('Delivered') },
    ],
  });
  drawChart($('chart-connections'), {
    title: 'Connections', slots, span, format: count,
    series: [
      { label: 'websockets', className: 's1', values: samples.map((s) => s.Websockets) },
      { label: 'REST', className: 's2', values: samples.map((s) => s.ApiConnections) },
    ],
  });
  drawChart($('chart-lag'), {
    title: 'Delivery lag (mean)', slots, span, format: lagText, floor: 0.001,
    series: [{ label: 'lag', className: 's3', values: samples.map((s) => s.DeliveryLagSeconds) }],
  });
  drawChart($('chart-slow'), {
    title: 'Slow-consumer closes', slots, span, format: count,
    series: [{ label: 'closes', className: 's4', values: samples.map((s) => s.SlowConsumerCloses) }],
  });
}

function lagText(seconds) {
  if (seconds === 0) return '0 ms';
  if (seconds < 0.001) return `${Math.round(seconds * 1e6)} µs`;
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 0)} ms`;
  return `${seconds.toFixed(2)} s`;
}

export function show() {
  refresher.start();
}

export function hide() {
  refresher.stop();
}
