// Generated from clients/sdk/src/index.mjs by clients/sdk/build.mjs: edit the source, then
// run `node clients/sdk/build.mjs`.
'use strict';
// liveshard danmaku SDK: one client per room over the danmaku WebSocket (docs/protocol.md),
// on WeChat's wx.connectSocket or a browser WebSocket. No dependencies.
//
// What it adds on top of a raw socket:
// - reconnect with exponential backoff and jitter, stopping on close codes that mean
//   "don't come back" (kicked, banned, token revoked);
// - an app-level heartbeat ({"type":"ping"}), since a mini-program cannot send WebSocket
//   ping frames; a ping left without a pong means a dead link, and the client reconnects;
// - resume: the last room item id seen is sent back as `since` on reconnect, and items at
//   or below it are dropped whatever the server sends (history on join repeats them);
// - sends that return a Promise settled by the server's `ack` or `error` (matched by `cid`)
//   or by a timeout, buffered (bounded) while the client is reconnecting;
// - HoldQueue: holds danmaku until the player reaches the item's `media_ts` (C4), with
//   hlsMediaClock (hls.js) and flvMediaClock (mpegts.js, flv.js) as its clock.
//
// This file is the source. build.mjs derives dist/liveshard.cjs (for `require`, what a
// mini-program copies) from it by rewriting its `export` lines, so keep every export a
// plain `export function|class|const NAME` and import nothing.

/** Close codes the server sends (docs/protocol.md, "Close codes"). */
const CLOSE = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  ABNORMAL: 1006,
  INVALID_DATA: 1007,
  SLOW_CONSUMER: 1008,
  TOO_BIG: 1009,
  TRY_AGAIN_LATER: 1013,
  KICKED: 4001,
  BANNED: 4003,
  HEARTBEAT_TIMEOUT: 4008,
  TOKEN_REVOKED: 4011,
};

// Close codes after which reconnecting is wrong: a moderator removed this user (kicked,
// banned) or the token is dead (revoked: log in again). Everything else — a restart (1001),
// a slow-consumer close (1008), a dropped link (1006), the server's heartbeat timeout (4008),
// "try again later" (1013), even a protocol error (1002/1007/1009, caused by one bad frame)
// — is worth another try after a backoff.
const TERMINAL_CLOSE_CODES = [CLOSE.KICKED, CLOSE.BANNED, CLOSE.TOKEN_REVOKED];

/** Error codes of `{"type":"error"}` (docs/protocol.md, "Error codes"), by name. */
const ERROR_NAMES = {
  4001: 'bad_message',
  4010: 'login_required',
  4011: 'bad_token',
  4012: 'already_authenticated',
  4031: 'muted',
  4032: 'banned',
  4033: 'slow_mode',
  4034: 'not_allowed',
  4040: 'no_such_user',
  4130: 'text_length',
  4220: 'filtered',
  4290: 'rate_limited',
  5030: 'busy',
};

// Room items: they carry a per-room, strictly increasing `id` and arrive in `history` and
// `batch` frames. Private messages are not room items (no id, never replayed), so they are
// not part of resume (see `_item`).
const ITEM_TYPES = ['danmaku', 'gift', 'like', 'system', 'live'];

/**
 * An error a send was rejected with. `code` is the server's number (4290, …) or one of the
 * SDK's own strings: 'timeout', 'disconnected' (the link dropped after the message was
 * written: it may or may not have been posted), 'queue_full', 'closed', 'send_failed'.
 */
class LiveshardError extends Error {
  constructor(code, message, cid) {
    super(message);
    this.name = 'LiveshardError';
    this.code = code;
    this.reason = typeof code === 'number' ? ERROR_NAMES[code] || 'unknown' : code;
    if (cid !== undefined) this.cid = cid;
  }
}

/**
 * Delay before reconnect attempt `attempt` (0-based): base·2^attempt capped at `max`, then
 * reduced by up to `jitter` of itself at random, so clients dropped together (a server
 * restart) do not come back together. With jitter 0.5 the delay is in [d/2, d].
 */
function backoffDelay(attempt, { base = 500, max = 30000, jitter = 0.5 } = {}, random = Math.random) {
  const d = Math.min(max, base * Math.pow(2, Math.min(attempt, 30)));
  return Math.round(d * (1 - jitter * random()));
}

/** Sets query parameters on a URL (replacing ones of the same name; null removes). Kept
 * free of the URL class, which mini-programs do not have. */
function withParams(url, params) {
  const hash = url.indexOf('#');
  if (hash >= 0) url = url.slice(0, hash);
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const kept = (q < 0 ? '' : url.slice(q + 1))
    .split('&')
    .filter((p) => p && !Object.prototype.hasOwnProperty.call(params, decodeURIComponent(p.split('=')[0])));
  for (const k of Object.keys(params)) {
    if (params[k] !== null && params[k] !== undefined) {
      kept.push(encodeURIComponent(k) + '=' + encodeURIComponent(String(params[k])));
    }
  }
  return kept.length ? path + '?' + kept.join('&') : path;
}

function queryParam(url, name) {
  const q = url.indexOf('?');
  if (q < 0) return null;
  for (const p of url.slice(q + 1).split('#')[0].split('&')) {
    const eq = p.indexOf('=');
    if (decodeURIComponent(eq < 0 ? p : p.slice(0, eq)) === name) {
      return eq < 0 ? '' : decodeURIComponent(p.slice(eq + 1));
    }
  }
  return null;
}

// --- transports -----------------------------------------------------------------------------
//
// A transport opens one socket: open(url, handlers) with handlers {onOpen, onMessage(text),
// onClose(code, reason), onError(err)} returns {send(text, done(err)), close(code, reason)}.

/** WeChat's SocketTask (wx.connectSocket, base library ≥ 1.7). */
function wxTransport(wx) {
  return {
    name: 'wx',
    open(url, h) {
      const task = wx.connectSocket({
        url,
        fail: (e) => h.onError(e),
      });
      task.onOpen(() => h.onOpen());
      task.onMessage((r) => h.onMessage(r.data));
      task.onClose((r) => h.onClose(r && r.code, r && r.reason));
      task.onError((e) => h.onError(e));
      return {
        send(text, done) {
          task.send({ data: text, success: () => done(null), fail: (e) => done(e || new Error('send failed')) });
        },
        close(code, reason) {
          task.close({ code, reason });
        },
      };
    },
  };
}

/** A browser-style WebSocket constructor (window.WebSocket, or a compatible one). */
function webSocketTransport(WebSocketCtor) {
  return {
    name: 'websocket',
    open(url, h) {
      const ws = new WebSocketCtor(url);
      ws.onopen = () => h.onOpen();
      ws.onmessage = (e) => h.onMessage(e.data);
      ws.onclose = (e) => h.onClose(e.code, e.reason);
      ws.onerror = (e) => h.onError(e);
      return {
        send(text, done) {
          try {
            ws.send(text);
            done(null);
          } catch (e) {
            done(e);
          }
        },
        close(code, reason) {
          try {
            ws.close(code, reason);
          } catch (e) {
            // Closing a socket that never opened can throw in some browsers; it is gone anyway.
          }
        },
      };
    },
  };
}

function pickTransport(opts) {
  if (opts.transport) return opts.transport;
  if (opts.wx) return wxTransport(opts.wx);
  if (opts.WebSocket) return webSocketTransport(opts.WebSocket);
  /* global wx */
  if (typeof wx !== 'undefined' && wx && typeof wx.connectSocket === 'function') return wxTransport(wx);
  if (typeof WebSocket === 'function') return webSocketTransport(WebSocket);
  throw new Error('liveshard: no WebSocket here; pass {wx} or {WebSocket}');
}

const realTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t),
  now: () => Date.now(),
};

// --- the client -----------------------------------------------------------------------------

/**
 * A danmaku client for one room.
 *
 * Events (client.on(name, fn)): 'open', 'close' {code, reason, willReconnect},
 * 'reconnecting' {attempt, delay}, 'history' {room, items}, 'item' (every room item),
 * 'danmaku', 'gift', 'like', 'system', 'live' (item.status is 'live' or 'offline'),
 * 'online' {room, count}, 'pm', 'gap', 'error' (a server error that answers no pending
 * send), 'authed', 'pong' {rtt}, 'message' (every frame, parsed).
 * Room item events get (item, {history}) — history is true for items from the join replay.
 */
class LiveshardClient {
  constructor(opts) {
    if (!opts || !opts.url) throw new Error('liveshard: url is required');
    this.opts = opts;
    this.transport = pickTransport(opts);
    this.timers = opts.timers || realTimers;
    this.random = opts.random || Math.random;
    const rc = opts.reconnect || {};
    this.reconnectOpts = {
      base: rc.base !== undefined ? rc.base : 500,
      max: rc.max !== undefined ? rc.max : 30000,
      jitter: rc.jitter !== undefined ? rc.jitter : 0.5,
      maxAttempts: rc.maxAttempts !== undefined ? rc.maxAttempts : Infinity,
    };
    const hb = opts.heartbeat || {};
    // The server closes a connection silent for two of its intervals (danmaku.heartbeat_secs,
    // 30 s by default), so one ping per interval keeps it open with a full interval to spare.
    this.heartbeatOpts = {
      interval: hb.interval !== undefined ? hb.interval : 30000,
      timeout: hb.timeout !== undefined ? hb.timeout : 10000,
    };
    // Unless the caller chose an interval, the server's (`heartbeat_ms` in the history frame)
    // replaces the default once the first join is answered.
    this._intervalFromServer = hb.interval === undefined;
    this.connectTimeout = opts.connectTimeout !== undefined ? opts.connectTimeout : 10000;
    this.ackTimeout = opts.ackTimeout !== undefined ? opts.ackTimeout : 10000;
    this.maxOutbox = opts.maxOutbox !== undefined ? opts.maxOutbox : 50;

    this.state = 'idle'; // idle | connecting | open | waiting | closed
    this.attempt = 0; // failed attempts since the last successful join
    this.stats = { duplicates: 0, reconnects: 0 };
    this._lastIds = new Map(); // room → last room item id seen
    if (opts.since !== undefined && opts.room) this._lastIds.set(opts.room, Number(opts.since));
    this._listeners = new Map();
    this._sock = null; // the live transport socket; events from any other are ignored
    this._gen = 0; // bumped per dial and on close(), so a stale async dial gives up
    this._timer = null; // backoff or connect timeout
    this._pingTimer = null;
    this._pongTimer = null;
    this._pingSentAt = 0;
    this._cidSeq = 0;
    this._cidPrefix = Math.floor(this.random() * 36 ** 4).toString(36);
    this._inflight = new Map(); // cid → pending send written to the socket
    this._outbox = []; // pending sends waiting for a socket
  }

  // --- events ---

  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, []);
    this._listeners.get(type).push(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const l = this._listeners.get(type);
    if (l) this._listeners.set(type, l.filter((f) => f !== fn));
  }

  once(type, fn) {
    const off = this.on(type, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  _emit(type, ...args) {
    for (const fn of this._listeners.get(type) || []) {
      try {
        fn(...args);
      } catch (e) {
        // A listener's bug must not break the connection; report it where it can be seen.
        if (typeof console !== 'undefined') console.error('liveshard: listener for', type, 'threw', e);
      }
    }
  }

  /** The last room item id seen in `room` (default: the client's room, from `room` or the URL). */
  lastId(room) {
    const r = room || this.opts.room || this._room;
    return this._lastIds.get(r) || 0;
  }

  // --- lifecycle ---

  /** Starts connecting (and keeps reconnecting until close()). */
  connect() {
    if (this.state === 'idle' || this.state === 'closed') {
      this.attempt = 0;
      this._dial();
    }
    return this;
  }

  /** Closes for good: no reconnect; pending sends are rejected with 'closed'. */
  close(code = CLOSE.NORMAL, reason = '') {
    const wasOpen = this.state === 'open';
    this.state = 'closed';
    this._gen++;
    this._clearTimer();
    this._stopHeartbeat();
    const sock = this._sock;
    this._sock = null;
    if (sock) sock.close(code, reason);
    this._failInflight('closed', 'client closed');
    for (const p of this._outbox.splice(0)) this._settle(p, new LiveshardError('closed', 'client closed', p.cid));
    if (wasOpen || sock) this._emit('close', { code, reason, willReconnect: false });
  }

  async _dial() {
    const gen = ++this._gen;
    this.state = 'connecting';
    let url;
    try {
      url = await this._buildUrl();
    } catch (e) {
      if (gen === this._gen) this._lost(CLOSE.ABNORMAL, 'url or token provider failed: ' + (e && e.message));
      return;
    }
    if (gen !== this._gen) return; // closed or redialled while the providers ran
    this._room = queryParam(url, 'room') || this.opts.room;
    let sock = null;
    const mine = () => sock !== null && sock === this._sock;
    const handlers = {
      onOpen: () => mine() && this._opened(),
      onMessage: (data) => mine() && this._frame(data),
      onClose: (code, reason) => mine() && this._lost(code || CLOSE.ABNORMAL, reason || ''),
      // An error is followed by a close on both APIs; the close decides what happens next.
      onError: () => {},
    };
    try {
      sock = this.transport.open(url, handlers);
    } catch (e) {
      this._lost(CLOSE.ABNORMAL, 'could not open: ' + (e && e.message));
      return;
    }
    this._sock = sock;
    this._clearTimer();
    this._timer = this.timers.setTimeout(() => {
      if (mine() && this.state === 'connecting') this._drop(CLOSE.ABNORMAL, 'connect timeout');
    }, this.connectTimeout);
  }

  async _buildUrl() {
    const o = this.opts;
    const base = typeof o.url === 'function' ? await o.url({ attempt: this.attempt }) : o.url;
    const room = o.room || queryParam(base, 'room');
    const token = typeof o.token === 'function' ? await o.token() : o.token;
    const since = room ? this._lastIds.get(room) : undefined;
    return withParams(base, {
      room: room || null,
      token: token || null,
      since: since ? since : null,
    });
  }

  _opened() {
    this._clearTimer();
    this.state = 'open';
    this._emit('open', { room: this._room, since: this.lastId(this._room) || null });
    this._startHeartbeat();
    // Sends made while disconnected go out in the order they were made.
    for (const p of this._outbox.splice(0)) this._write(p);
  }

  /** Ends the current socket ourselves (dead link, connect timeout) and moves on at once:
   * a closing handshake with a peer that is gone would only wait. */
  _drop(code, reason) {
    const sock = this._sock;
    this._sock = null;
    if (sock) sock.close(4000, reason);
    this._lost(code, reason);
  }

  /** The socket is gone (closed by the server, the network, or _drop). */
  _lost(code, reason) {
    if (this.state === 'closed') return;
    this._sock = null;
    this._clearTimer();
    this._stopHeartbeat();
    this._failInflight('disconnected', 'connection lost before the answer (' + code + ')');
    const terminal = TERMINAL_CLOSE_CODES.indexOf(code) >= 0;
    const exhausted = this.attempt >= this.reconnectOpts.maxAttempts;
    const willReconnect = !terminal && !exhausted;
    this._emit('close', { code, reason, willReconnect });
    if (!willReconnect) {
      this.state = 'closed';
      for (const p of this._outbox.splice(0)) this._settle(p, new LiveshardError('closed', 'connection closed (' + code + ')', p.cid));
      return;
    }
    const delay = backoffDelay(this.attempt, this.reconnectOpts, this.random);
    this.attempt++;
    this.stats.reconnects++;
    this.state = 'waiting';
    this._emit('reconnecting', { attempt: this.attempt, delay, code });
    this._timer = this.timers.setTimeout(() => {
      this._timer = null;
      if (this.state === 'waiting') this._dial();
    }, delay);
  }

  _clearTimer() {
    if (this._timer !== null) this.timers.clearTimeout(this._timer);
    this._timer = null;
  }

  // --- heartbeat ---

  _startHeartbeat() {
    this._stopHeartbeat();
    const { interval } = this.heartbeatOpts;
    if (!(interval > 0)) return;
    this._pingTimer = this.timers.setTimeout(() => this._ping(), interval);
  }

  _stopHeartbeat() {
    if (this._pingTimer !== null) this.timers.clearTimeout(this._pingTimer);
    if (this._pongTimer !== null) this.timers.clearTimeout(this._pongTimer);
    this._pingTimer = this._pongTimer = null;
  }

  _ping() {
    this._pingTimer = null;
    if (this.state !== 'open') return;
    this._pingSentAt = this.timers.now();
    this._raw({ type: 'ping', ts: this._pingSentAt });
    this._pongTimer = this.timers.setTimeout(() => {
      this._pongTimer = null;
      if (this.state === 'open') this._drop(CLOSE.ABNORMAL, 'no pong');
    }, this.heartbeatOpts.timeout);
  }

  _pong(m) {
    if (this._pongTimer === null) return; // a late or unasked pong
    this.timers.clearTimeout(this._pongTimer);
    this._pongTimer = null;
    this._emit('pong', { rtt: this.timers.now() - this._pingSentAt, serverTs: m.server_ts });
    this._startHeartbeat();
  }

  // --- receiving ---

  _frame(data) {
    if (typeof data !== 'string') return; // the server sends text frames only
    let m;
    try {
      m = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (!m || typeof m !== 'object') return;
    this._emit('message', m);
    switch (m.type) {
      case 'history':
      case 'batch': {
        const fresh = [];
        for (const item of Array.isArray(m.msgs) ? m.msgs : []) {
          if (this._item(item, m.type === 'history')) fresh.push(item);
        }
        if (m.type === 'history') {
          // Admitted to the room: the link works, so the next failure backs off from the start.
          this.attempt = 0;
          if (this._intervalFromServer && m.heartbeat_ms > 0 && m.heartbeat_ms !== this.heartbeatOpts.interval) {
            this.heartbeatOpts.interval = m.heartbeat_ms;
            if (this._pingTimer !== null) this._startHeartbeat();
          }
          this._emit('history', { room: m.room, items: fresh });
        }
        break;
      }
      case 'ack':
        this._answer(m.cid, null, m);
        break;
      case 'error':
        if (!this._answer(m.cid, new LiveshardError(m.code, m.message || '', m.cid))) {
          this._emit('error', new LiveshardError(m.code, m.message || '', m.cid));
        }
        break;
      case 'pong':
        this._pong(m);
        break;
      case 'gap': {
        // {room, from, first}: items above `from` and below `first` are gone. first <= from
        // means the room's ids went back (its data was reset): what follows starts over.
        const room = m.room || this._room;
        if (typeof m.first === 'number' && typeof m.from === 'number' && m.first <= m.from) {
          this._lastIds.set(room, Math.max(0, m.first - 1));
        }
        this._emit('gap', m);
        break;
      }
      case 'online':
      case 'pm':
      case 'authed':
        this._emit(m.type, m);
        break;
      default:
        // A bare item (not in a batch) is handled like one, should the server send it.
        if (ITEM_TYPES.indexOf(m.type) >= 0) this._item(m, false);
    }
  }

  /** One room item; false when it was seen already (its id at or below the last one). */
  _item(item, history) {
    if (!item || ITEM_TYPES.indexOf(item.type) < 0) return false;
    const room = item.room || this._room;
    if (typeof item.id === 'number') {
      const last = this._lastIds.get(room) || 0;
      if (item.id <= last) {
        this.stats.duplicates++;
        return false;
      }
      this._lastIds.set(room, item.id);
    }
    const meta = { history };
    this._emit('item', item, meta);
    this._emit(item.type, item, meta);
    return true;
  }

  // --- sending ---

  /**
   * Sends `{type, cid, ...fields}` and resolves with the server's ack
   * (`{type:'ack', cid, id}`; moderation acks have no id), or rejects with a
   * LiveshardError. While reconnecting the message waits in a bounded outbox.
   */
  send(type, fields = {}, { timeout } = {}) {
    return new Promise((resolve, reject) => {
      if (this.state === 'closed' || this.state === 'idle') {
        reject(new LiveshardError('closed', 'client is not connected; call connect()'));
        return;
      }
      const cid = this._cidPrefix + '-' + ++this._cidSeq;
      const p = { cid, msg: Object.assign({ type }, fields, { cid }), resolve, reject, timer: null };
      if (this.state !== 'open' && this._outbox.length >= this.maxOutbox) {
        reject(new LiveshardError('queue_full', 'too many messages waiting for the connection', cid));
        return;
      }
      // The timeout counts from the call, waiting in the outbox included.
      p.timer = this.timers.setTimeout(() => {
        const i = this._outbox.indexOf(p);
        if (i >= 0) this._outbox.splice(i, 1);
        this._inflight.delete(cid);
        reject(new LiveshardError('timeout', 'no answer in time', cid));
      }, timeout !== undefined ? timeout : this.ackTimeout);
      if (this.state === 'open') this._write(p);
      else this._outbox.push(p);
    });
  }

  sendDanmaku(text, { color, mode } = {}, opts) {
    const f = { text };
    if (color) f.color = color;
    if (mode) f.mode = mode;
    return this.send('danmaku', f, opts);
  }

  sendGift(giftId, count = 1, opts) {
    return this.send('gift', { gift_id: giftId, count }, opts);
  }

  sendLike(count = 1, opts) {
    return this.send('like', { count }, opts);
  }

  sendPm(to, text, opts) {
    return this.send('pm', { to, text }, opts);
  }

  // Moderation (room owner or admin): resolved by an ack without id.
  mute(uid, seconds = 0, opts) {
    return this.send('mute', { uid, seconds }, opts);
  }
  unmute(uid, opts) {
    return this.send('unmute', { uid }, opts);
  }
  ban(uid, opts) {
    return this.send('ban', { uid }, opts);
  }
  unban(uid, opts) {
    return this.send('unban', { uid }, opts);
  }
  kick(uid, opts) {
    return this.send('kick', { uid }, opts);
  }
  slowMode(seconds, opts) {
    return this.send('slow_mode', { seconds }, opts);
  }

  _write(p) {
    this._inflight.set(p.cid, p);
    this._sock.send(JSON.stringify(p.msg), (err) => {
      if (err && this._inflight.get(p.cid) === p) {
        this._answer(p.cid, new LiveshardError('send_failed', (err && (err.errMsg || err.message)) || 'send failed', p.cid));
      }
    });
  }

  _raw(msg) {
    if (this._sock) this._sock.send(JSON.stringify(msg), () => {});
  }

  /** Settles the pending send with this cid; false if there is none. */
  _answer(cid, err, ack) {
    const p = cid !== undefined && cid !== null ? this._inflight.get(cid) : undefined;
    if (!p) return false;
    this._inflight.delete(cid);
    this._settle(p, err, ack);
    return true;
  }

  _settle(p, err, ack) {
    this.timers.clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(ack);
  }

  _failInflight(code, message) {
    const all = [...this._inflight.values()];
    this._inflight.clear();
    for (const p of all) this._settle(p, new LiveshardError(code, message, p.cid));
  }
}

/** `new LiveshardClient(opts).connect()`. */
function connect(opts) {
  return new LiveshardClient(opts).connect();
}

// --- media-time hold queue (C4) -------------------------------------------------------------

/**
 * Holds items until the player shows the frame they were sent on.
 *
 * Each danmaku carries `media_ts` (stream time in ms) while the room is live. `clock()`
 * returns the player's current stream time in ms (or null while unknown). An item is
 * released to `onRelease(item)` once clock() ≥ item.media_ts, at once if it has no
 * media_ts, and in any case after `maxHoldMs` of wall time (a stalled or seeking player
 * must not swallow comments). At most `cap` items are held: past it, the oldest is released
 * early rather than lost. Released in arrival order among those due.
 *
 * Drive it with start(intervalMs) (a timer) or call tick() yourself, e.g. from the
 * player's time-update callback.
 */
class HoldQueue {
  constructor({ clock, onRelease, maxHoldMs = 10000, cap = 200, timers } = {}) {
    if (typeof clock !== 'function') throw new Error('HoldQueue: clock() is required');
    if (typeof onRelease !== 'function') throw new Error('HoldQueue: onRelease(item) is required');
    this.clock = clock;
    this.onRelease = onRelease;
    this.maxHoldMs = maxHoldMs;
    this.cap = Math.max(1, cap);
    this.timers = timers || realTimers;
    this._held = []; // {item, at} in arrival order
    this._interval = null;
    this.releasedEarly = 0; // pushed out by the cap
  }

  get size() {
    return this._held.length;
  }

  push(item) {
    if (!item || typeof item.media_ts !== 'number') {
      this.onRelease(item);
      return;
    }
    this._held.push({ item, at: this.timers.now() });
    if (this._held.length > this.cap) {
      this.releasedEarly++;
      this.onRelease(this._held.shift().item);
    }
    this.tick();
  }

  /** Releases every item that is due now. */
  tick() {
    if (!this._held.length) return;
    const t = this.clock();
    const known = typeof t === 'number' && isFinite(t);
    const now = this.timers.now();
    const keep = [];
    const due = [];
    for (const h of this._held) {
      if ((known && t >= h.item.media_ts) || now - h.at >= this.maxHoldMs) due.push(h.item);
      else keep.push(h);
    }
    this._held = keep;
    for (const item of due) this.onRelease(item);
  }

  /** Ticks every `intervalMs` (default 100 ms). */
  start(intervalMs = 100) {
    this.stop();
    const loop = () => {
      this.tick();
      this._interval = this.timers.setTimeout(loop, intervalMs);
    };
    this._interval = this.timers.setTimeout(loop, intervalMs);
    return this;
  }

  stop() {
    if (this._interval !== null) this.timers.clearTimeout(this._interval);
    this._interval = null;
  }

  /** Releases everything held (e.g. when the player stops), then empties. */
  flush() {
    const all = this._held.splice(0);
    for (const h of all) this.onRelease(h.item);
  }

  /** Drops everything held. */
  clear() {
    this._held = [];
  }
}

// --- the player's stream time (C4) ----------------------------------------------------------
//
// `media_ts` is stream time: the stream's own millisecond clock, the same one its FLV tags and
// HLS segments are stamped with (docs/media.md, "Media time"). These return a `clock()` for
// HoldQueue: the stream time of the frame on screen, or null while it is not known yet.

/** The stream time (ms) an HLS segment's EXTINF title `t=<ms>` names, or null. */
function segmentStreamTime(title) {
  const m = /^t=(\d+)$/.exec(typeof title === 'string' ? title.trim() : '');
  return m ? Number(m[1]) : null;
}

/**
 * HLS through hls.js: each segment's `EXT-X-PROGRAM-DATE-TIME` is the stream's epoch plus the
 * segment's stream time (its EXTINF title, `t=<ms>`), so the stream time on screen is
 * `hls.playingDate − epoch`. The epoch is read from the first fragment played.
 * `clock.detach()` stops listening.
 */
function hlsMediaClock(hls) {
  let epoch = null;
  const onFrag = (_event, data) => {
    const frag = data && data.frag;
    const t = frag ? segmentStreamTime(frag.title) : null;
    if (t !== null && Number.isFinite(frag.programDateTime)) epoch = frag.programDateTime - t;
  };
  hls.on('hlsFragChanged', onFrag);
  const clock = () => {
    const date = hls.playingDate;
    if (epoch === null || !date) return null;
    const ms = date.getTime();
    return Number.isFinite(ms) ? ms - epoch : null;
  };
  clock.detach = () => hls.off('hlsFragChanged', onFrag);
  return clock;
}

/**
 * HTTP-FLV through mpegts.js (or flv.js): the player counts `video.currentTime` from the
 * first frame it got, and the server's first tag, `onStreamTime {start}`, names that frame's
 * stream time, so the stream time on screen is `start + currentTime × 1000`.
 * `clock.detach()` stops listening.
 */
function flvMediaClock(player, video) {
  let start = null;
  const onScript = (data) => {
    const s = data && data.onStreamTime;
    if (s && Number.isFinite(s.start)) start = s.start;
  };
  player.on('scriptdata_arrived', onScript);
  const clock = () => {
    const t = video.currentTime;
    return start === null || !Number.isFinite(t) ? null : start + t * 1000;
  };
  clock.detach = () => player.off('scriptdata_arrived', onScript);
  return clock;
}

module.exports = { CLOSE, TERMINAL_CLOSE_CODES, ERROR_NAMES, LiveshardError, backoffDelay, withParams, wxTransport, webSocketTransport, LiveshardClient, connect, HoldQueue, segmentStreamTime, hlsMediaClock, flvMediaClock };
