// Small line charts in SVG, drawn from plain arrays; labels stay HTML so they never stretch.

import { el } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 600;
const HEIGHT = 150;

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

/** The smallest of 1, 2, 2.5, 5 × 10^n at or above `value` (at least `floor`). */
function niceCeiling(value, floor) {
  const target = Math.max(value, floor);
  const power = 10 ** Math.floor(Math.log10(target));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= target) return step * power;
  }
  return 10 * power;
}

/**
 * Draws a chart into `figure`.
 * @param {HTMLElement} figure
 * @param {object} chart
 * @param {string} chart.title
 * @param {number} chart.slots  how many samples span the width (the newest is at the right)
 * @param {string} chart.span  what the width covers, e.g. "10 min"
 * @param {(value: number) => string} chart.format
 * @param {number} [chart.floor]  the least top of the scale
 * @param {{label: string, className: string, values: number[]}[]} chart.series
 */
export function drawChart(figure, chart) {
  const top = niceCeiling(Math.max(0, ...chart.series.flatMap((s) => s.values)), chart.floor ?? 1);
  const plot = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: 'none', role: 'img',
    'aria-label': `${chart.title}, scale up to ${chart.format(top)}`,
  });
  for (const fraction of [0, 0.5, 1]) {
    const y = HEIGHT - fraction * HEIGHT;
    plot.append(svg('line', { x1: 0, x2: WIDTH, y1: y, y2: y, class: 'grid-line' }));
  }
  const step = WIDTH / Math.max(1, chart.slots - 1);
  for (const series of chart.series) {
    const offset = chart.slots - series.values.length;
    const points = series.values.map((value, i) => {
      const x = (offset + i) * step;
      const y = HEIGHT - (value / top) * (HEIGHT - 2) - 1;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    if (points.length === 1) points.push(points[0]);
    plot.append(svg('polyline', { points: points.join(' '), class: `series ${series.className}` }));
  }
  const legend = chart.series.map((series) => {
    const latest = series.values.length ? series.values[series.values.length - 1] : 0;
    return el('span', { class: `legend ${series.className}` }, `${series.label} `,
      el('strong', {}, chart.format(latest)));
  });
  figure.replaceChildren(
    el('figcaption', {}, el('span', { class: 'chart-title' }, chart.title), el('span', { class: 'legends' }, legend)),
    el('div', { class: 'plot' }, el('span', { class: 'scale' }, chart.format(top)), plot),
    el('div', { class: 'axis' }, el('span', {}, `${chart.span} ago`), el('span', {}, 'now')),
  );
}
