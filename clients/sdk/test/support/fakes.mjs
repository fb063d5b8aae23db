// Test doubles: virtual timers, and a fake `wx` whose SocketTasks the test drives as the
// server would (open, deliver frames, close).

/** Virtual time: setTimeout/clearTimeout/now, advanced only by advance(ms). */
export class FakeTimers {
  constructor(start = 1_000_000) {
    this.t = start;
    this.seq = 0;
    this.pending = new Map(); // id → {at, fn}
  }
  setTimeout = (fn, ms) => {
    const id = ++this.seq;
    this.pending.set(id, { at: this.t + Math.max(0, ms || 0), fn });
    return id;
  };
  clearTimeout = (id) => {
    this.pending.delete(id);
  };
  now = () => this.t;
  /** Runs every timer due within `ms`, in time order, including ones they schedule. */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, e] of this.pending) {
        if (e.at <= end && (next === null || e.at < next[1].at || (e.at === next[1].at && id < next[0]))) next = [id, e];
      }
      if (!next) break;
      this.pending.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
}

/** A SocketTask as wx.connectSocket returns it, driven by the test. */
export class FakeTask {
  constructor(url) {
    this.url = url;
    this.sent = []; // parsed JSON of every send({data})
    this.closedWith = null; // {code, reason} when the client called close()
    this.h = {};
    this.failSends = false;
  }
  onOpen(fn) { this.h.open = fn; }
  onMessage(fn) { this.h.message = fn; }
  onClose(fn) { this.h.close = fn; }
  onError(fn) { this.h.error = fn; }
  send({ data, success, fail }) {
    if (this.failSends) return fail && fail({ errMsg: 'sendSocketMessage:fail' });
    this.sent.push(JSON.parse(data));
    if (success) success({ errMsg: 'sendSocketMessage:ok' });
  }
  close({ code, reason } = {}) {
    this.closedWith = { code, reason };
  }
  // --- the "server" side ---
  open() { this.h.open({ header: {} }); }
  receive(msg) { this.h.message({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) }); }
  serverClose(code, reason = '') { this.h.close({ code, reason }); }
  fail(errMsg = 'connect fail') {
    this.h.error({ errMsg });
    this.h.close({ code: 1006, reason: '' });
  }
  sentOfType(type) { return this.sent.filter((m) => m.type === type); }
}

export class FakeWx {
  constructor() {
    this.tasks = [];
  }
  connectSocket = ({ url }) => {
    const t = new FakeTask(url);
    this.tasks.push(t);
    return t;
  };
  get last() {
    return this.tasks[this.tasks.length - 1];
  }
}

/** Lets pending promise callbacks (the client's async dial, a send's settle) run. */
export function flush() {
  return new Promise((r) => setImmediate(r));
}

export function item(id, extra = {}) {
  return { type: 'danmaku', id, room: 'r1', uid: 'u1', nick: 'n', ts: 1, text: 't' + id, color: '#FFFFFF', mode: 'scroll', ...extra };
}
