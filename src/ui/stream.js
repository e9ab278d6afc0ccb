// The console's websocket: one filter, every command matched to its one reply, and a resume
// that never leaves a gap: after any reconnect (or a slow-consumer close) it registers again
// and sends `replay <last Seq received> <Epoch>`, dropping what arrives before that reply.
// The socket itself lives in stream-worker.js, which hands over messages in batches.

import { getJson, websocketUrl } from './session.js';

/** Waits between reconnection attempts, in milliseconds; the last one repeats. */
const BACKOFF = [500, 1000, 2000, 3000, 4000];

export class EventStream {
  /**
   * @param {object} handlers
   * @param {(raw: string, seq: number) => void} handlers.onEvent  an event, newer than all before
   * @param {(state: string, detail: string) => void} handlers.onState  connecting, live, reconnecting, offline
   * @param {(text: string, kind: string) => void} handlers.onNotice  something the user should know
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.filter = null;
    this.lastSeq = null;
    this.epoch = null;
    this.connected = false;
    /** Counts sockets, so that what the worker says about an old one is ignored. */
    this.generation = 0;
    this.worker = new Worker('stream-worker.js');
    this.worker.onmessage = ({ data }) => this.fromWorker(data);
    this.pending = [];
    this.discarding = false;
    this.attempt = 0;
    this.stopped = true;
    this.retryTimer = null;
  }

  /** Connects and watches `filter`, live from the log's current end. */
  start(filter) {
    this.filter = filter;
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  /** Closes the socket for good (logout). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.generation += 1;
    this.connected = false;
    this.worker.postMessage({ op: 'close', generation: this.generation });
    this.failPending('the console closed its connection');
    this.setState('offline', 'offline');
  }

  setState(state, detail) {
    this.state = state;
    this.handlers.onState(state, detail);
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.setState(this.attempt === 0 && this.lastSeq === null ? 'connecting' : 'reconnecting',
      this.attempt === 0 ? 'connecting…' : `reconnecting (attempt ${this.attempt + 1})…`);
    this.generation += 1;
    this.connected = false;
    this.worker.postMessage({ op: 'open', generation: this.generation, url: websocketUrl() });
  }

  fromWorker(message) {
    if (message.generation !== this.generation) return;
    if (message.type === 'open') {
      this.connected = true;
      this.opened(message.generation);
    } else if (message.type === 'batch') {
      for (const item of message.items) this.received(item);
    } else if (message.type === 'close') {
      this.connected = false;
      this.closed(message);
    }
  }

  async opened(generation) {
    try {
      if (this.lastSeq === null) {
        // Live from now, without a gap: start the replay at the log's end as it is now.
        const info = await getJson('/api/v3/info');
        this.lastSeq = info.LastSeq;
        this.epoch = info.Epoch;
      }
      const resumed = this.attempt > 0;
      const from = this.lastSeq;
      this.discarding = true;
      const registered = await this.command(`register ${this.filter}`);
      if (registered.Action === 'error') {
        this.handlers.onNotice(errorMessage(registered), 'filter-error');
      }
      const reply = await this.replay(from, this.epoch);
      if (generation !== this.generation) return;
      this.attempt = 0;
      this.setState('live', 'live');
      if (resumed) {
        this.handlers.onNotice(reply.Object && reply.Object.Recovered === false
          ? gapText(from, reply.Object)
          : `Reconnected; resumed after Seq ${from} with nothing missed.`,
        reply.Object && reply.Object.Recovered === false ? 'warning' : 'info');
      }
    } catch (error) {
      // The socket closed (or the session ended) meanwhile; `closed` takes it from here.
      if (generation === this.generation && this.connected) {
        this.handlers.onNotice(String(error.message || error), 'warning');
      }
    }
  }

  received(item) {
    if (item.seq !== undefined) {
      // Before a replay's reply, events are dropped: the replay sends each of them again.
      if (this.discarding || (this.lastSeq !== null && item.seq <= this.lastSeq)) return;
      this.lastSeq = item.seq;
      this.handlers.onEvent(item.raw, item.seq);
      return;
    }
    let message;
    try {
      message = JSON.parse(item.text);
    } catch {
      return;
    }
    if (message.Type !== 'websocket') return;
    if (message.Action === 'bookmark') {
      // Everything up to the bookmark that this filter should see has been sent.
      const bookmark = Number(message.Key);
      if (!this.discarding && Number.isSafeInteger(bookmark) && bookmark > (this.lastSeq ?? 0)) {
        this.lastSeq = bookmark;
      }
      return;
    }
    const waiter = this.pending.shift();
    if (waiter) waiter.resolve(message);
  }

  closed(close) {
    this.failPending('the connection closed');
    if (this.stopped) return;
    if (close.code === 4008) {
      this.handlers.onNotice(`herald closed this console as a slow consumer (${close.reason}); resuming after Seq ${this.lastSeq}.`, 'warning');
    }
    const wait = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)];
    this.attempt += 1;
    this.setState('reconnecting', `reconnecting in ${Math.round(wait / 100) / 10} s…`);
    this.retryTimer = setTimeout(() => this.connect(), wait);
    if (this.attempt % 3 === 0) {
      // A socket that keeps failing may have an expired token: a REST call tells, and ends
      // the session if so.
      getJson('/api/v3/info').catch(() => {});
    }
  }

  failPending(reason) {
    for (const waiter of this.pending.splice(0)) waiter.reject(new Error(reason));
  }

  /** Sends one command and resolves with its one reply. */
  command(text) {
    return new Promise((resolve, reject) => {
      if (!this.connected) {
        reject(new Error('not connected to herald'));
        return;
      }
      this.pending.push({ resolve, reject });
      this.worker.postMessage({ op: 'send', text });
    });
  }

  /** Restarts the stream after `seq`; events that arrive before its reply are dropped. */
  async replay(seq, epoch) {
    this.discarding = true;
    try {
      const reply = await this.command(epoch ? `replay ${seq} ${epoch}` : `replay ${seq}`);
      if (reply.Action === 'error') throw new Error(errorMessage(reply));
      const bounds = reply.Object || {};
      // Without recovery herald sends from its oldest event (or live, when its log ends before
      // `seq`, as after a reset): accept from there, whatever Seqs came before.
      this.lastSeq = bounds.Recovered === false
        ? Math.max(0, Math.min(seq, bounds.FirstSeq - 1, bounds.LastSeq))
        : seq;
      if (reply.Object && reply.Object.Epoch) this.epoch = reply.Object.Epoch;
      return reply;
    } finally {
      this.discarding = false;
    }
  }

  /** Replays from `seq` on the open connection, for the user. */
  async replayFrom(seq) {
    const reply = await this.replay(seq);
    return reply.Object && reply.Object.Recovered === false ? gapText(seq, reply.Object) : null;
  }

  /**
   * Watches `next` instead of the current filter. Resolves with herald's error text when it
   * refuses the filter (the old one stays), or null.
   */
  async setFilter(next) {
    if (!this.connected || this.lastSeq === null) {
      this.filter = next;
      return null;
    }
    const from = this.lastSeq;
    this.discarding = true;
    let refusal = null;
    try {
      const reply = await this.command(`register ${next}`);
      if (reply.Action === 'error') {
        refusal = errorMessage(reply);
      } else {
        if (this.filter !== next) await this.command(`deregister ${this.filter}`);
        this.filter = next;
      }
    } finally {
      // From the same Seq under the new filter alone: no gap, nothing of the old filter.
      await this.replay(from, this.epoch).catch(() => {});
    }
    return refusal;
  }
}

function errorMessage(reply) {
  const messages = reply.Object && Array.isArray(reply.Object.Messages) ? reply.Object.Messages : [];
  return messages.join('; ') || 'herald refused the command';
}

function gapText(seq, bounds) {
  return `Events after Seq ${seq} are no longer all in herald's log (it holds Seq `
    + `${bounds.FirstSeq}–${bounds.LastSeq}, epoch ${bounds.Epoch}); showing what it still has, `
    + 'so some events were missed.';
}
