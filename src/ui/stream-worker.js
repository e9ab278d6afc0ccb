// The console's websocket, kept off the page's main thread: at thousands of events a second the
// cost is in receiving each message, so this worker receives them and hands the page one batch
// per frame instead of one task per event. It only moves messages; stream.js decides.

/** How long events wait to be handed over together (about one frame). */
const FLUSH_MS = 16;
/** Matches the `Seq` herald appends as the last field of every event (replies have none). */
const SEQ_AT_END = /"Seq":(\d+)\}\s*$/;

let socket = null;
let generation = 0;
let items = [];
let timer = 0;

function flush() {
  clearTimeout(timer);
  timer = 0;
  if (items.length) {
    postMessage({ type: 'batch', generation, items });
    items = [];
  }
}

function open(url) {
  const mine = generation;
  const ws = new WebSocket(url);
  socket = ws;
  ws.onopen = () => postMessage({ type: 'open', generation: mine });
  ws.onmessage = (message) => {
    if (ws !== socket || typeof message.data !== 'string') return;
    const seq = SEQ_AT_END.exec(message.data.slice(-32));
    if (seq) {
      items.push({ seq: Number(seq[1]), raw: message.data });
      if (!timer) timer = setTimeout(flush, FLUSH_MS);
    } else {
      // A reply or a bookmark: handed over at once, after the events before it.
      items.push({ text: message.data });
      flush();
    }
  };
  ws.onclose = (close) => {
    if (ws !== socket) return;
    flush();
    socket = null;
    postMessage({ type: 'close', generation: mine, code: close.code, reason: close.reason });
  };
}

onmessage = ({ data }) => {
  if (data.op === 'open' || data.op === 'close') {
    flush();
    if (socket) {
      const old = socket;
      socket = null;
      old.close(1000, 'console closed');
    }
    generation = data.generation;
    if (data.op === 'open') open(data.url);
  } else if (data.op === 'send' && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(data.text);
  }
};
