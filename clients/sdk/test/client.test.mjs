// The client against a fake wx socket on virtual time: reconnect and backoff, terminal close
// codes, heartbeat, resume (since + dedupe), gap, acks and errors, the outbox.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  LiveshardClient,
  LiveshardError,
  backoffDelay,
  withParams,
  webSocketTransport,
} from '../src/index.mjs';
import { FakeTimers, FakeWx, flush, item } from './support/fakes.mjs';

/** A client on a fake wx and virtual time, connected and (unless told not to) open. */
async function setup({ open = true, random = () => 0, ...opts } = {}) {
  const wx = new FakeWx();
  const timers = new FakeTimers();
  const c = new LiveshardClient({
    url: 'ws://h/ws',
    room: 'r1',
    token: 'tok',
    wx,
    timers,
    random,
    reconnect: { base: 100, max: 1000, jitter: 0.5 },
    heartbeat: { interval: 30000, timeout: 5000 },
    ...opts,
  });
  const events = [];
  for (const t of ['open', 'close', 'reconnecting', 'danmaku', 'gift', 'live', 'pm', 'gap', 'error', 'online', 'history']) {
    c.on(t, (e) => events.push([t, e]));
  }
  c.connect();
  await flush();
  if (open) wx.last.open();
  return { c, wx, timers, events, of: (t) => events.filter((e) => e[0] === t).map((e) => e[1]) };
}

test('backoff doubles from base, is capped at max, and jitter stays within [d·(1-j), d]', () => {
  const o = { base: 100, max: 1000, jitter: 0.5 };
  assert.deepEqual([0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, o, () => 0)), [100, 200, 400, 800, 1000, 1000]);
  assert.deepEqual([0, 1, 4].map((a) => backoffDelay(a, o, () => 0.999999)), [50, 100, 500]);
  for (let i = 0; i < 2000; i++) {
    const a = i % 8;
    const d = Math.min(1000, 100 * 2 ** a);
    const x = backoffDelay(a, o);
    assert.ok(x >= d / 2 && x <= d, `attempt ${a}: ${x} not in [${d / 2}, ${d}]`);
  }
  assert.equal(backoffDelay(3, { base: 100, max: 1000, jitter: 0 }, Math.random), 800);
  assert.equal(backoffDelay(100, { base: 100, max: 1000 }, () => 0), 1000, 'huge attempt numbers stay capped');
});

test('the first URL carries room and token but no since', async () => {
  const { wx } = await setup({ open: false });
  assert.equal(wx.tasks.length, 1);
  assert.equal(wx.last.url, 'ws://h/ws?room=r1&token=tok');
});

test('withParams replaces parameters of the same name and keeps the others', () => {
  assert.equal(withParams('ws://h/ws?room=a&since=3&x=1', { since: 9, token: 'a b' }), 'ws://h/ws?room=a&x=1&since=9&token=a%20b');
  assert.equal(withParams('ws://h/ws?since=3', { since: null }), 'ws://h/ws');
});

test('a dropped link is retried with growing delays, reset once the room is joined again', async () => {
  const { wx, timers, of } = await setup();
  wx.last.serverClose(1006);
  for (let i = 0; i < 4; i++) {
    // Refused again and again: each attempt waits twice as long.
    const before = wx.tasks.length;
    const delay = of('reconnecting').at(-1).delay;
    timers.advance(delay - 1);
    await flush();
    assert.equal(wx.tasks.length, before, 'not before its delay');
    timers.advance(1);
    await flush();
    assert.equal(wx.tasks.length, before + 1, 'a new socket after the delay');
    wx.last.fail();
  }
  assert.deepEqual(of('reconnecting').map((r) => r.delay), [100, 200, 400, 800, 1000]);
  timers.advance(1000);
  await flush();
  wx.last.open();
  wx.last.receive({ type: 'history', room: 'r1', msgs: [] });
  wx.last.serverClose(1001, 'going away');
  assert.equal(of('reconnecting').at(-1).delay, 100, 'back to base after a join');
  assert.equal(of('close').at(-1).willReconnect, true);
});

for (const code of [4001, 4003, 4011]) {
  test(`close code ${code} stops reconnecting`, async () => {
    const { c, wx, timers, of } = await setup();
    wx.last.serverClose(code, 'bye');
    timers.advance(60_000);
    await flush();
    assert.equal(wx.tasks.length, 1);
    assert.deepEqual(of('close'), [{ code, reason: 'bye', willReconnect: false }]);
    assert.equal(of('reconnecting').length, 0);
    assert.equal(c.state, 'closed');
    await assert.rejects(c.sendDanmaku('x'), (e) => e.code === 'closed');
  });
}

for (const code of [1000, 1001, 1006, 1008, 1013, 4008]) {
  test(`close code ${code} reconnects`, async () => {
    const { wx, timers } = await setup();
    wx.last.serverClose(code);
    timers.advance(1000);
    await flush();
    assert.equal(wx.tasks.length, 2);
  });
}

test('maxAttempts bounds the retries', async () => {
  const { c, wx, timers, of } = await setup({ reconnect: { base: 10, max: 10, maxAttempts: 2 } });
  wx.last.serverClose(1006);
  for (let i = 0; i < 5; i++) {
    timers.advance(10);
    await flush();
    if (c.state === 'connecting') wx.last.fail();
  }
  assert.equal(wx.tasks.length, 3, 'the first socket and two retries');
  assert.equal(of('close').at(-1).willReconnect, false);
});

test('a connect that never opens times out and is retried', async () => {
  const { wx, timers } = await setup({ open: false, connectTimeout: 3000 });
  timers.advance(3000);
  assert.ok(wx.tasks[0].closedWith, 'the stuck socket is closed');
  timers.advance(100);
  await flush();
  assert.equal(wx.tasks.length, 2);
});

test("heartbeat: the server's interval from the history frame, unless the caller set one", async () => {
  const { wx, timers } = await setup({ heartbeat: { timeout: 5000 } });
  wx.last.receive({ type: 'history', room: 'r1', msgs: [], heartbeat_ms: 10000, history_max: 200 });
  timers.advance(9_999);
  assert.equal(wx.last.sentOfType('ping').length, 0);
  timers.advance(1);
  assert.equal(wx.last.sentOfType('ping').length, 1, "a ping after the server's 10 s");

  const set = await setup({ heartbeat: { interval: 30000, timeout: 5000 } });
  set.wx.last.receive({ type: 'history', room: 'r1', msgs: [], heartbeat_ms: 10000 });
  set.timers.advance(10_000);
  assert.equal(set.wx.last.sentOfType('ping').length, 0, "the caller's 30 s stands");
  set.timers.advance(20_000);
  assert.equal(set.wx.last.sentOfType('ping').length, 1);
});

test('heartbeat: a ping every interval; a pong keeps the link, a missing pong reconnects', async () => {
  const { wx, timers, of } = await setup();
  const first = wx.last;
  timers.advance(29_999);
  assert.equal(first.sentOfType('ping').length, 0);
  timers.advance(1);
  const [ping] = first.sentOfType('ping');
  assert.equal(ping.ts, timers.now());
  first.receive({ type: 'pong', ts: ping.ts, server_ts: 5 });
  timers.advance(30_000);
  assert.equal(first.sentOfType('ping').length, 2, 'the next ping an interval after the pong');
  assert.equal(of('close').length, 0);
  // No pong this time: after `timeout` the link counts as dead.
  timers.advance(4_999);
  assert.equal(first.closedWith, null);
  timers.advance(1);
  assert.equal(first.closedWith.code, 4000);
  assert.equal(of('close')[0].willReconnect, true);
  timers.advance(100);
  await flush();
  assert.equal(wx.tasks.length, 2, 'a new socket');
  // Events from the abandoned socket are ignored.
  first.receive({ type: 'batch', room: 'r1', msgs: [item(1)] });
  assert.equal(of('danmaku').length, 0);
});

test('resume: the reconnect URL has since=LAST_ID, replayed items are dropped, pm is not part of it', async () => {
  const { c, wx, timers, of } = await setup();
  wx.last.receive({ type: 'history', room: 'r1', msgs: [item(1), item(2), { type: 'gift', id: 3, room: 'r1', gift_id: 'rose', count: 1 }] });
  wx.last.receive({ type: 'batch', room: 'r1', msgs: [item(4)] });
  wx.last.receive({ type: 'pm', id: 5, room: 'r1', from: 'u2', to: 'u1', text: 'hi' });
  assert.equal(c.lastId(), 4);
  wx.last.serverClose(1001);
  timers.advance(1000);
  await flush();
  assert.equal(wx.last.url, 'ws://h/ws?room=r1&token=tok&since=4');
  wx.last.open();
  // A server that ignores `since` replays its history: only what is new comes through.
  wx.last.receive({ type: 'history', room: 'r1', msgs: [item(2), item(3), item(4), item(6)] });
  wx.last.receive({ type: 'batch', room: 'r1', msgs: [item(6), item(7)] });
  assert.deepEqual(of('danmaku').map((d) => d.id), [1, 2, 4, 6, 7]);
  assert.equal(of('gift').length, 1);
  assert.equal(of('pm').length, 1);
  assert.deepEqual(of('history').map((h) => h.items.map((i) => i.id)), [[1, 2, 3], [6]]);
  assert.equal(c.stats.duplicates, 4);
  assert.equal(c.lastId(), 7);
});

test('history items are marked as such; live and online events arrive typed', async () => {
  const { wx, of, c } = await setup();
  const seen = [];
  c.on('item', (i, meta) => seen.push([i.id, meta.history]));
  wx.last.receive({ type: 'history', room: 'r1', msgs: [item(1)] });
  wx.last.receive({ type: 'batch', room: 'r1', msgs: [{ type: 'live', id: 2, room: 'r1', ts: 1, status: 'offline' }] });
  wx.last.receive({ type: 'online', room: 'r1', count: 12 });
  assert.deepEqual(seen, [[1, true], [2, false]]);
  assert.equal(of('live')[0].status, 'offline');
  assert.equal(of('online')[0].count, 12);
});

test('a since given up front is used on the first connect', async () => {
  const { wx } = await setup({ open: false, since: 41 });
  assert.match(wx.last.url, /since=41$/);
});

test('a url provider is asked on every attempt', async () => {
  let n = 0;
  const { c, wx, timers } = await setup({ url: async () => `ws://h${++n}/ws?room=r1`, room: undefined });
  assert.equal(wx.last.url, 'ws://h1/ws?room=r1&token=tok');
  wx.last.receive({ type: 'batch', room: 'r1', msgs: [item(9)] });
  wx.last.serverClose(1006);
  timers.advance(1000);
  await flush();
  assert.equal(wx.last.url, 'ws://h2/ws?room=r1&token=tok&since=9');
  assert.equal(c.lastId(), 9, 'the room comes from the URL');
});

test('a gap message is surfaced as an event', async () => {
  const { c, wx, of } = await setup();
  wx.last.receive({ type: 'batch', room: 'r1', msgs: [item(7)] });
  wx.last.receive({ type: 'gap', room: 'r1', from: 7, first: 120 });
  assert.deepEqual(of('gap'), [{ type: 'gap', room: 'r1', from: 7, first: 120 }]);
  assert.equal(c.lastId(), 7, 'an ordinary gap keeps the last id');
});

test('a gap whose first id is not above from (ids reset) starts the room over', async () => {
  const { c, wx, of } = await setup();
  wx.last.receive({ type: 'batch', room: 'r1', msgs: [item(50)] });
  wx.last.receive({ type: 'gap', room: 'r1', from: 50, first: 1 });
  wx.last.receive({ type: 'history', room: 'r1', msgs: [item(1), item(2)] });
  assert.equal(c.lastId(), 2);
  assert.deepEqual(of('danmaku').map((d) => d.id), [50, 1, 2]);
});

test('send resolves with the ack matched by cid', async () => {
  const { c, wx } = await setup();
  const p = c.sendDanmaku('主播好!', { color: '#FFCC00' });
  const [m] = wx.last.sentOfType('danmaku');
  assert.equal(m.text, '主播好!');
  assert.equal(m.color, '#FFCC00');
  assert.ok(m.cid);
  wx.last.receive({ type: 'ack', cid: 'someone-else', id: 40 });
  wx.last.receive({ type: 'ack', cid: m.cid, id: 41 });
  assert.deepEqual(await p, { type: 'ack', cid: m.cid, id: 41 });
});

test('a server error with the cid rejects with its code, name and message', async () => {
  const { c, wx, of } = await setup();
  const p = c.sendGift('rocket', 3);
  const [m] = wx.last.sentOfType('gift');
  assert.equal(m.gift_id, 'rocket');
  wx.last.receive({ type: 'error', code: 4290, message: 'too many messages; slow down', cid: m.cid });
  await assert.rejects(p, (e) => e instanceof LiveshardError && e.code === 4290 && e.reason === 'rate_limited' && e.message === 'too many messages; slow down');
  // An error that answers nothing pending is an 'error' event.
  wx.last.receive({ type: 'error', code: 4001, message: 'bad message' });
  assert.equal(of('error')[0].code, 4001);
  assert.equal(of('error')[0].reason, 'bad_message');
});

test('no answer in time rejects with timeout; a dropped link rejects what was written', async () => {
  const { c, wx, timers } = await setup();
  const p1 = c.sendLike(1, { timeout: 2000 });
  timers.advance(2000);
  await assert.rejects(p1, (e) => e.code === 'timeout');
  const p2 = c.sendDanmaku('x');
  wx.last.serverClose(1006);
  await assert.rejects(p2, (e) => e.code === 'disconnected');
});

test('a failed wx send rejects with send_failed', async () => {
  const { c, wx } = await setup();
  wx.last.failSends = true;
  await assert.rejects(c.sendDanmaku('x'), (e) => e.code === 'send_failed' && /fail/.test(e.message));
});

test('sends while reconnecting wait in a bounded outbox and go out in order on open', async () => {
  const { c, wx, timers } = await setup({ maxOutbox: 2 });
  wx.last.serverClose(1006);
  const a = c.sendDanmaku('a');
  const b = c.sendDanmaku('b');
  await assert.rejects(c.sendDanmaku('c'), (e) => e.code === 'queue_full');
  timers.advance(1000);
  await flush();
  wx.last.open();
  const sent = wx.last.sentOfType('danmaku');
  assert.deepEqual(sent.map((m) => m.text), ['a', 'b']);
  for (const m of sent) wx.last.receive({ type: 'ack', cid: m.cid, id: m.text === 'a' ? 1 : 2 });
  assert.equal((await a).id, 1);
  assert.equal((await b).id, 2);
});

test('a timeout also covers the time spent in the outbox', async () => {
  const { c, wx, timers } = await setup();
  wx.last.serverClose(1006);
  const p = c.sendDanmaku('late', {}, { timeout: 50 });
  timers.advance(50);
  await assert.rejects(p, (e) => e.code === 'timeout');
  timers.advance(1000);
  await flush();
  wx.last.open();
  assert.equal(wx.last.sentOfType('danmaku').length, 0, 'a timed-out send is not sent later');
});

test('close() stops for good and rejects what is pending', async () => {
  const { c, wx, timers, of } = await setup();
  const p = c.sendDanmaku('x');
  c.close();
  await assert.rejects(p, (e) => e.code === 'closed');
  assert.equal(wx.last.closedWith.code, 1000);
  timers.advance(60_000);
  await flush();
  assert.equal(wx.tasks.length, 1);
  assert.equal(of('close').at(-1).willReconnect, false);
});

test('moderation sends carry their fields and resolve on an ack without id', async () => {
  const { c, wx } = await setup();
  const p = c.mute('u42', 600);
  const [m] = wx.last.sentOfType('mute');
  assert.deepEqual({ uid: m.uid, seconds: m.seconds }, { uid: 'u42', seconds: 600 });
  wx.last.receive({ type: 'ack', cid: m.cid });
  assert.equal((await p).id, undefined);
});

test('the browser WebSocket path: a constructor passed in is used the same way', async () => {
  const made = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.sent = [];
      made.push(this);
    }
    send(t) { this.sent.push(JSON.parse(t)); }
    close(code) { this.closedWith = code; }
  }
  const timers = new FakeTimers();
  const c = new LiveshardClient({ url: 'ws://h/ws?room=r9', WebSocket: FakeWS, timers, random: () => 0 });
  const got = [];
  c.on('danmaku', (d) => got.push(d.id));
  c.connect();
  await flush();
  assert.equal(made[0].url, 'ws://h/ws?room=r9');
  made[0].onopen();
  made[0].onmessage({ data: JSON.stringify({ type: 'batch', room: 'r9', msgs: [item(3, { room: 'r9' })] }) });
  const p = c.sendLike();
  made[0].onmessage({ data: JSON.stringify({ type: 'ack', cid: made[0].sent[0].cid, id: 4 }) });
  assert.equal((await p).id, 4);
  made[0].onclose({ code: 1006, reason: '' });
  timers.advance(1000);
  await flush();
  assert.equal(made[1].url, 'ws://h/ws?room=r9&since=3');
  assert.deepEqual(got, [3]);
  assert.equal(webSocketTransport(FakeWS).name, 'websocket');
});

test('wx is found on the global object when none is passed', async () => {
  const wx = new FakeWx();
  globalThis.wx = wx;
  try {
    const c = new LiveshardClient({ url: 'ws://h/ws?room=r1', timers: new FakeTimers() });
    assert.equal(c.transport.name, 'wx');
    c.connect();
    await flush();
    assert.equal(wx.tasks.length, 1);
    c.close();
  } finally {
    delete globalThis.wx;
  }
});
