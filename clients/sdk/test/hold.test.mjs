// The media-time hold queue (C4): release at the player's time, at once without media_ts,
// never later than maxHoldMs, bounded, in arrival order.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { HoldQueue } from '../src/index.mjs';
import { FakeTimers } from './support/fakes.mjs';

function setup(opts = {}) {
  const timers = new FakeTimers();
  const player = { t: null };
  const out = [];
  const q = new HoldQueue({ clock: () => player.t, onRelease: (i) => out.push(i.id), timers, maxHoldMs: 5000, ...opts });
  return { q, timers, player, out };
}

test('items wait until the player reaches their media_ts, then leave in arrival order', () => {
  const { q, player, out } = setup();
  player.t = 1000;
  q.push({ id: 1, media_ts: 1500 });
  q.push({ id: 2, media_ts: 1600 });
  q.push({ id: 3, media_ts: 900 }); // already shown: out at once
  assert.deepEqual(out, [3]);
  player.t = 1550;
  q.tick();
  assert.deepEqual(out, [3, 1]);
  player.t = 1600;
  q.tick();
  assert.deepEqual(out, [3, 1, 2]);
  assert.equal(q.size, 0);
});

test('items without media_ts are released immediately', () => {
  const { q, out } = setup();
  q.push({ id: 1 });
  q.push({ id: 2, media_ts: undefined });
  assert.deepEqual(out, [1, 2]);
});

test('nothing is held longer than maxHoldMs, even with no player time', () => {
  const { q, timers, out } = setup();
  q.push({ id: 1, media_ts: 99_999 });
  timers.advance(4999);
  q.tick();
  assert.deepEqual(out, []);
  timers.advance(1);
  q.tick();
  assert.deepEqual(out, [1]);
});

test('due items are released together and in arrival order', () => {
  const { q, player, out } = setup();
  player.t = 0;
  for (let i = 1; i <= 5; i++) q.push({ id: i, media_ts: i * 100 });
  player.t = 350;
  q.tick();
  assert.deepEqual(out, [1, 2, 3]);
});

test('past the cap the oldest is released early, never lost', () => {
  const { q, player, out } = setup({ cap: 3 });
  player.t = 0;
  for (let i = 1; i <= 5; i++) q.push({ id: i, media_ts: 1000 });
  assert.deepEqual(out, [1, 2]);
  assert.equal(q.size, 3);
  assert.equal(q.releasedEarly, 2);
  q.flush();
  assert.deepEqual(out, [1, 2, 3, 4, 5]);
});

test('start() drives it by a timer; stop() ends that', () => {
  const { q, timers, player, out } = setup();
  player.t = 0;
  q.push({ id: 1, media_ts: 250 });
  q.start(100);
  player.t = 240;
  timers.advance(100);
  assert.deepEqual(out, []);
  player.t = 260;
  timers.advance(100);
  assert.deepEqual(out, [1]);
  q.stop();
  q.push({ id: 2, media_ts: 10_000 });
  timers.advance(60_000);
  assert.deepEqual(out, [1], 'no ticks after stop');
  assert.equal(timers.pending.size, 0);
});

test('clear() drops what is held', () => {
  const { q, out, player } = setup();
  player.t = 0;
  q.push({ id: 1, media_ts: 10 });
  q.clear();
  player.t = 100;
  q.tick();
  assert.deepEqual(out, []);
});

test('hlsMediaClock: playingDate − (the playing fragment date-time − its t=)', async () => {
  const { hlsMediaClock, segmentStreamTime } = await import('../src/index.mjs');
  assert.equal(segmentStreamTime('t=57000'), 57000);
  assert.equal(segmentStreamTime(''), null);
  assert.equal(segmentStreamTime(null), null);
  assert.equal(segmentStreamTime('t=-1'), null);
  const listeners = new Map();
  const hls = {
    playingDate: null,
    on: (e, f) => listeners.set(e, f),
    off: (e) => listeners.delete(e),
  };
  const clock = hlsMediaClock(hls);
  assert.equal(clock(), null, 'nothing played yet');
  hls.playingDate = new Date(1_732_336_935_000);
  assert.equal(clock(), null, 'no fragment seen yet');
  listeners.get('hlsFragChanged')('hlsFragChanged', { frag: { title: 't=57000', programDateTime: 1_732_336_935_901 } });
  hls.playingDate = new Date(1_732_336_936_901);
  assert.equal(clock(), 58000);
  clock.detach();
  assert.equal(listeners.size, 0);
});

test('flvMediaClock: onStreamTime.start + currentTime', async () => {
  const { flvMediaClock } = await import('../src/index.mjs');
  const listeners = new Map();
  const player = { on: (e, f) => listeners.set(e, f), off: (e) => listeners.delete(e) };
  const video = { currentTime: 0 };
  const clock = flvMediaClock(player, video);
  assert.equal(clock(), null, 'no onStreamTime yet');
  listeners.get('scriptdata_arrived')({ onMetaData: { width: 320 } });
  assert.equal(clock(), null);
  listeners.get('scriptdata_arrived')({ onStreamTime: { start: 8160 } });
  video.currentTime = 1.5;
  assert.equal(clock(), 9660);
  clock.detach();
  assert.equal(listeners.size, 0);
});
