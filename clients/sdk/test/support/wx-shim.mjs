// A `wx` object with WeChat's documented wx.connectSocket / SocketTask contract, implemented
// over a real WebSocket (the npm `ws` package), so the SDK's wx path runs against the real
// server in Node.
//
// The contract followed (WeChat API docs, "wx.connectSocket" and "SocketTask"):
// - wx.connectSocket({url, header, protocols, success, fail, complete}) returns a SocketTask;
//   success/fail only say whether the call was accepted, not whether the socket opened.
// - SocketTask.onOpen(cb({header})), onMessage(cb({data})) with data a string for text
//   frames or an ArrayBuffer for binary ones, onClose(cb({code, reason})),
//   onError(cb({errMsg})) — a failed connection reports onError, then onClose.
// - SocketTask.send({data, success, fail, complete}): fails when the socket is not open.
// - SocketTask.close({code, reason, success, fail, complete}): code 1000 or 3000–4999.
import WebSocket from 'ws';

function call(opts, name, arg) {
  if (opts && typeof opts[name] === 'function') opts[name](arg);
}

function finish(opts, ok, arg) {
  call(opts, ok ? 'success' : 'fail', arg);
  call(opts, 'complete', arg);
}

class SocketTask {
  constructor(ws) {
    this.ws = ws;
    this.cbs = { open: [], message: [], close: [], error: [] };
    ws.on('upgrade', (res) => (this.header = res.headers));
    ws.on('open', () => this.fire('open', { header: this.header || {} }));
    ws.on('message', (data, isBinary) => {
      const payload = isBinary
        ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)
        : data.toString('utf8');
      this.fire('message', { data: payload });
    });
    ws.on('error', (e) => this.fire('error', { errMsg: 'WebSocket error: ' + e.message }));
    ws.on('close', (code, reason) => this.fire('close', { code, reason: reason.toString('utf8') }));
  }

  fire(kind, arg) {
    for (const cb of this.cbs[kind]) cb(arg);
  }

  onOpen(cb) { this.cbs.open.push(cb); }
  onMessage(cb) { this.cbs.message.push(cb); }
  onClose(cb) { this.cbs.close.push(cb); }
  onError(cb) { this.cbs.error.push(cb); }

  send(opts) {
    if (this.ws.readyState !== WebSocket.OPEN) {
      finish(opts, false, { errMsg: 'sendSocketMessage:fail WebSocket is not connected' });
      return;
    }
    this.ws.send(opts.data, (err) =>
      finish(opts, !err, { errMsg: err ? 'sendSocketMessage:fail ' + err.message : 'sendSocketMessage:ok' }),
    );
  }

  close(opts = {}) {
    const code = opts.code === undefined ? 1000 : opts.code;
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
      finish(opts, false, { errMsg: 'closeSocket:fail code must be 1000 or 3000-4999' });
      return;
    }
    if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    else this.ws.close(code, opts.reason || '');
    finish(opts, true, { errMsg: 'closeSocket:ok' });
  }
}

/** A fresh `wx` whose `urls` lists every URL connectSocket was called with. */
export function createWx() {
  const wx = {
    urls: [],
    tasks: [],
    connectSocket(opts) {
      wx.urls.push(opts.url);
      if (!/^wss?:\/\//.test(opts.url || '')) {
        finish(opts, false, { errMsg: 'connectSocket:fail invalid url' });
      }
      const ws = new WebSocket(opts.url, opts.protocols || [], { headers: opts.header || {} });
      const task = new SocketTask(ws);
      wx.tasks.push(task);
      finish(opts, true, { errMsg: 'connectSocket:ok' });
      return task;
    },
    /** Ends every socket (test cleanup). */
    closeAll() {
      for (const t of wx.tasks) t.ws.terminate();
    },
  };
  return wx;
}
