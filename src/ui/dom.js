// Small DOM and formatting helpers shared by the pages.

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** A new element with attributes (class, data-*, aria-*, …) and children (nodes or text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === 'class') node.className = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

/** Shows `text` in a message element, or hides it when `text` is empty. */
export function say(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

/** Milliseconds since the epoch of an RFC 3339 time (JavaScript keeps milliseconds only). */
export function parseTime(text) {
  return Date.parse(String(text).replace(/(\.\d{3})\d+/, '$1'));
}

const clock = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
});

/** `HH:MM:SS.mmm` in local time, from an RFC 3339 time. */
export function clockTime(text) {
  const ms = parseTime(text);
  if (Number.isNaN(ms)) return String(text);
  return `${clock.format(ms)}.${String(ms % 1000).padStart(3, '0')}`;
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: '2-digit', day: '2-digit',
  hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
});

/** A local date and time, from an RFC 3339 time. */
export function localDateTime(text) {
  const ms = parseTime(text);
  return Number.isNaN(ms) ? String(text ?? '') : dateTime.format(ms);
}

/** A duration in the largest unit that fits: `12 s`, `4 min`, `3 h`, `2 d`. */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172800) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** A whole number with thousands separators. */
export const count = (n) => integer.format(n ?? 0);

/** A byte count in B, KB, MB or GB. */
export function bytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = Number(n) || 0;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** Calls `tick` now and then every `ms` while started; `stop` ends it. */
export function every(ms, tick) {
  let timer = null;
  return {
    start() {
      if (timer === null) {
        tick();
        timer = setInterval(tick, ms);
      }
    },
    stop() {
      clearInterval(timer);
      timer = null;
    },
  };
}
