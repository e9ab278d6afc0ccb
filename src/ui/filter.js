// The DRP filter grammar, checked as herald checks it, so the hint says what `register` would.

/** The most index entries one filter may expand to (herald's MAX_FILTER_ENTRIES). */
export const MAX_FILTER_ENTRIES = 4096;
/** The largest command herald takes by default, in bytes. */
export const MAX_COMMAND_BYTES = 4096;

function unescape(element) {
  return element.replace(/\\([123])/g, (_, digit) => ({ 1: '.', 2: ',', 3: '*' })[digit]);
}

/** How many values one field stands for: 1 for `*`, else its distinct list elements. */
function slotCount(field) {
  if (field.trim() === '*') return 1;
  return new Set(field.split(',').map((element) => unescape(element.trim()))).size;
}

/** Why herald would refuse `register <text>`, in herald's words, or null when it would not. */
export function problem(text) {
  if (text.trim() === '') return 'Enter a filter such as profiles.*.* (type.action.key).';
  if (new TextEncoder().encode(`register ${text}`).length > MAX_COMMAND_BYTES) {
    return `the filter is longer than herald's ${MAX_COMMAND_BYTES}-byte command limit`;
  }
  const dot1 = text.indexOf('.');
  const dot2 = dot1 < 0 ? -1 : text.indexOf('.', dot1 + 1);
  if (dot2 < 0) {
    const fields = text.split('.').length;
    return `filter "${text}" has ${fields} field${fields === 1 ? '' : 's'}; a filter is type.action.key`;
  }
  const fields = [text.slice(0, dot1), text.slice(dot1 + 1, dot2), text.slice(dot2 + 1)];
  const entries = fields.reduce((product, field) => product * slotCount(field), 1);
  if (entries > MAX_FILTER_ENTRIES) {
    return `filter "${text}" expands to ${entries} combinations of type, action and key; `
      + `at most ${MAX_FILTER_ENTRIES} are allowed, so split it into several filters or use *`;
  }
  return null;
}

/** One exact value as a filter list element (dots, commas and stars escaped). */
export function element(value) {
  return String(value).replace(/\./g, '\\1').replace(/,/g, '\\2').replace(/\*/g, '\\3');
}
