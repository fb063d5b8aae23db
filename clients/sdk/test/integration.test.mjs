// The SDK's wx path against the real server: two clients in a room through a SocketTask
// shim over real WebSockets; the heartbeat's pongs come back and an anonymous viewer's send
// is refused with 4010; a danmaku acknowledged to one client arrives at the other with the
// same id; the server is killed (-9) and restarted on the same data dir, the clients come
// back by themselves (resuming with since=LAST_ID), and what is posted after the restart
// arrives exactly once, with nothing from before it repeated.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { LiveshardClient } from '../src/index.mjs';
import { createWx } from './support/wx-shim.mjs';
import { api, removeDir, startServer, tempDataDir } from './support/server.mjs';

const SERVER_ARGS = ['--shards', '2', '--set', 'auth.dev_login=true'];
const WAIT_MS = 20_000;

/** Records a client's events and waits for one matching a predicate (seen before or after). */
function record(client) {
  const seen = [];
  const waiters = [];
  const types = ['open', 'close', 'reconnecting', 'history', 'danmaku', 'like', 'error', 'pong'];
  for (const type of types) {
    client.on(type, (e) => {
      seen.push({ type, e });
      for (const w of waiters.slice()) if (w.type === type && w.pred(e, w.skip)) w.done(e);
    });
  }
  return {
    seen,
    of: (type) => seen.filter((s) => s.type === type).map((s) => s.e),
    /** The first `type` event matching `pred`, waiting up to WAIT_MS for it. */
    waitFor(type, pred = () => true, what = type) {
      const hit = seen.find((s) => s.type === type && pred(s.e));
      if (hit) return Promise.resolve(hit.e);
      return new Promise((resolve, reject) => {
        const w = { type, pred };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`timed out waiting for ${what}`));
        }, WAIT_MS);
        w.done = (e) => {
          clearTimeout(timer);
          waiters.splice(waiters.indexOf(w), 1);
          resolve(e);
        };
        waiters.push(w);
      });
    },
    /** Waits until `type` has happened `n` times. */
    count(type, n) {
      return this.waitFor(type, () => this.of(type).length >= n, `${n} × ${type}`);
    },
  };
}

test('wx clients reconnect by themselves across a server kill and restart, without duplicates', { timeout: 120_000 }, async (t) => {
  const dataDir = tempDataDir();
  let server = await startServer({ dataDir, args: SERVER_ARGS });
  const clients = [];
  const wxs = [];
  t.after(async () => {
    for (const c of clients) c.close();
    for (const wx of wxs) wx.closeAll();
    await server.kill();
    removeDir(dataDir);
  });

  const alice = await api(server.http, 'POST', '/auth/dev', { body: { uid: 'alice', nick: 'Alice' } });
  const bob = await api(server.http, 'POST', '/auth/dev', { body: { uid: 'bob', nick: 'Bob' } });
  const room = await api(server.http, 'POST', '/rooms', { token: alice.token, body: { title: 'SDK test' } });
  assert.match(room.ws_url, /^ws:\/\/.*\/ws\?room=/);

  // The URL is asked for on every attempt, so the clients follow the server wherever it
  // comes back.
  const url = () => `ws://${server.http}/ws?room=${room.id}`;
  const open = (token) => {
    const wx = createWx();
    // A short heartbeat, so the server's pongs are part of the run.
    const c = new LiveshardClient({ url, token, wx, reconnect: { base: 50, max: 500 }, heartbeat: { interval: 200, timeout: 5000 } });
    wxs.push(wx);
    clients.push(c);
    return { c, wx, ev: record(c) };
  };
  const a = open(alice.token);
  const b = open(bob.token);
  const anon = open(null);
  for (const x of [a, b, anon]) x.c.connect();
  await Promise.all([a, b, anon].map((x) => x.ev.count('history', 1)));

  // The app-level heartbeat is answered; an anonymous viewer's send is refused with 4010.
  const pong = await a.ev.waitFor('pong');
  assert.equal(typeof pong.serverTs, 'number');
  await assert.rejects(anon.c.sendDanmaku('hi'), (e) => e.code === 4010 && e.reason === 'login_required' && e.message.length > 0);
  anon.c.close();

  // A danmaku acknowledged to alice reaches bob with the id of the ack.
  const ack1 = await a.c.sendDanmaku('before the restart', { color: '#FFCC00' });
  assert.equal(typeof ack1.id, 'number');
  const got1 = await b.ev.waitFor('danmaku', (d) => d.id === ack1.id, `danmaku ${ack1.id} at bob`);
  assert.equal(got1.text, 'before the restart');
  assert.equal(got1.color, '#FFCC00');
  assert.equal(got1.uid, 'alice');
  assert.equal(b.c.lastId(), ack1.id);

  // kill -9, then the same data dir on the same port (a new one if it cannot be had).
  const port = server.port;
  await server.kill();
  await Promise.all([a.ev.waitFor('close'), b.ev.waitFor('close')]);
  for (const x of [a, b]) assert.equal(x.ev.of('close')[0].willReconnect, true);
  try {
    server = await startServer({ dataDir, port, args: SERVER_ARGS });
  } catch (e) {
    t.diagnostic(`port ${port} could not be reused (${e.message.split('\n')[0]}); using a new one`);
    server = await startServer({ dataDir, args: SERVER_ARGS });
  }

  // Back by themselves: a second join each, resuming from the last id seen.
  await Promise.all([a.ev.count('history', 2), b.ev.count('history', 2)]);
  assert.ok(b.ev.of('reconnecting').length >= 1);
  assert.match(b.wx.urls.at(-1), new RegExp(`[?&]since=${ack1.id}(&|$)`));
  assert.doesNotMatch(b.wx.urls[0], /since=/);

  const ack2 = await a.c.sendDanmaku('after the restart');
  assert.ok(ack2.id > ack1.id, `ids go on after a restart: ${ack2.id} > ${ack1.id}`);
  await b.ev.waitFor('danmaku', (d) => d.id === ack2.id, `danmaku ${ack2.id} at bob`);

  // A last item from bob: a connection's items arrive in order, so once bob has it, any
  // repeat of the earlier ones would already have arrived.
  const ack3 = await b.c.sendLike(1);
  await b.ev.waitFor('like', (l) => l.id === ack3.id, `like ${ack3.id} at bob`);
  await a.ev.waitFor('like', (l) => l.id === ack3.id, `like ${ack3.id} at alice`);

  for (const x of [a, b]) {
    const ids = x.ev.of('danmaku').map((d) => d.id);
    assert.deepEqual(ids, [ack1.id, ack2.id], 'each danmaku exactly once, in order');
  }
  // What the SDK dropped: history replayed on the reconnect (the server does not act on since).
  t.diagnostic(`duplicates dropped by the SDK: alice ${a.c.stats.duplicates}, bob ${b.c.stats.duplicates}`);
});
