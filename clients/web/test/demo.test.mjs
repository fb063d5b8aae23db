// The demo page end to end, in headless Chromium against the real server: ffmpeg publishes a
// test pattern to a room, the page plays it over HLS (hls.js) and over HTTP-FLV (mpegts.js),
// a danmaku posted over the WebSocket API shows in the overlay, and it shows on the frame it
// was sent on: within ±250 ms of the player reaching its `media_ts`.
//
// The frame on screen is read from the picture itself, not from the page's clock: ffmpeg
// draws each frame's number as 16 black/white blocks along the top (frame n is at stream time
// n × 40 ms at 25 fps), and when the page shows a comment the test's hook draws the video
// into a canvas and reads the number back. So the check holds the whole chain to account:
// the server's stream clock, media_ts, the playlist's program date-times, the FLV
// onStreamTime tag, the SDK's player clocks and its HoldQueue.
//
// Needs: the server binary ($LIVESHARD_BIN or target/debug/liveshard), ffmpeg, Debian's
// chromium at /usr/bin/chromium (scripts/test.sh installs both) and playwright-core. Nothing
// here skips: a missing piece fails the test. A screenshot per player is saved under
// target/test-artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import WebSocket from 'ws';
import { chromium } from 'playwright-core';

import { LiveshardClient } from '../../sdk/src/index.mjs';
import { startServer, tempDataDir, removeDir } from '../../sdk/test/support/server.mjs';
import { CHROMIUM, CHROMIUM_ARGS, api, artifacts, clientsDir, startFfmpeg, until } from './support.mjs';

const FRAME_MS = 40; // 25 fps
const TOLERANCE_MS = 250;

/** ffmpeg's drawbox chain that writes frame n's number as 16 blocks of 16 px, bit 0 left. */
function frameNumberBoxes() {
  const boxes = ['drawbox=x=0:y=0:w=256:h=16:color=black:t=fill'];
  for (let i = 0; i < 16; i++) {
    boxes.push(`drawbox=x=${i * 16}:y=0:w=16:h=16:color=white:t=fill:enable='eq(mod(floor(n/${2 ** i}),2),1)'`);
  }
  return boxes.join(',');
}

// Runs in the page: when the demo shows a comment, read the frame number off the picture.
function installFrameReader() {
  window.liveshardDemoOnShow = (record) => {
    const v = document.getElementById('video');
    if (!v.videoWidth) return;
    const c = document.createElement('canvas');
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    const g = c.getContext('2d', { willReadFrequently: true });
    g.drawImage(v, 0, 0);
    const scale = v.videoWidth / 320;
    let n = 0;
    for (let i = 0; i < 16; i++) {
      const [r, gr, b] = g.getImageData(Math.round((i * 16 + 8) * scale), Math.round(8 * scale), 1, 1).data;
      if (r + gr + b > 384) n |= 1 << i;
    }
    record.frame = n;
    record.currentTime = v.currentTime;
  };
}

let server;
let dataDir;
let profileDir;
let ffmpeg;
let context;
let room;
let token;
let sender;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: scripts/test.sh installs Debian's chromium`);
  mkdirSync(artifacts, { recursive: true });
  dataDir = tempDataDir();
  server = await startServer({
    dataDir,
    args: [
      '--shards', '2',
      '--set', 'auth.dev_login=true',
      '--set', `server.clients_dir=${clientsDir}`,
      '--set', 'media.hls_segment_secs=1',
      // LIVESHARD_HLS_FMP4=1: the HLS case plays fMP4 segments (media.hls_fmp4).
      ...(process.env.LIVESHARD_HLS_FMP4 ? ['--set', 'media.hls_fmp4=true'] : []),
    ],
  });
  const base = `http://${server.http}`;
  ({ token } = await api(base, '/auth/dev', { method: 'POST', body: { uid: 'host', nick: 'Host' } }));
  room = await api(base, '/rooms', { method: 'POST', token, body: { title: 'demo test' } });
  ffmpeg = startFfmpeg(room.push.url, { vf: frameNumberBoxes() });
  await until(
    'the room to go live',
    async () => {
      if (ffmpeg.proc.exitCode !== null) throw new Error(`ffmpeg exited: ${ffmpeg.log.join('')}`);
      return (await api(base, `/rooms/${room.id}`)).live;
    },
    20_000,
  );
  sender = new LiveshardClient({ url: `ws://${server.http}/ws`, room: room.id, token, WebSocket });
  await new Promise((resolveOpen, reject) => {
    sender.once('open', resolveOpen);
    sender.once('close', (e) => reject(new Error(`sender closed: ${e.code}`)));
    sender.connect();
  });
  profileDir = mkdtempSync(join(tmpdir(), 'liveshard-chromium-'));
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 960, height: 640 },
  });
});

after(async () => {
  if (sender) sender.close();
  if (context) await context.close().catch(() => {});
  if (ffmpeg) {
    ffmpeg.proc.kill('SIGKILL');
    await ffmpeg.exited;
  }
  if (server) await server.kill();
  if (dataDir) removeDir(dataDir);
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
});

for (const kind of ['hls', 'flv']) {
  test(`demo page over ${kind}: the video plays and each danmaku shows on the frame it was sent on`, async () => {
    const page = await context.newPage();
    const console = [];
    page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`));
    try {
      await page.addInitScript(installFrameReader);
      await page.goto(`http://${server.http}/demo/?room=${room.id}&player=${kind}`);
      await until(`the ${kind} player`, () => page.evaluate(() => window.liveshardDemo && window.liveshardDemo.player), 15_000);
      assert.equal(await page.evaluate(() => window.liveshardDemo.player), kind);
      // The video plays: its time advances, and the player knows the stream time on screen.
      const t0 = await until(
        'the video to play',
        () => page.evaluate(() => {
          const v = document.getElementById('video');
          return v.currentTime > 0.5 && window.liveshardDemo.clock() !== null ? v.currentTime : 0;
        }),
        30_000,
      );
      await until('the video time to advance', () => page.evaluate((t) => document.getElementById('video').currentTime > t + 1, t0), 15_000);

      const sent = [];
      for (let i = 0; i < 3; i++) {
        const text = `${kind} hello ${i}`;
        const ack = await sender.sendDanmaku(text, { color: '#FFCC00', mode: i === 1 ? 'top' : 'scroll' });
        sent.push({ text, at: Date.now(), ack });
        await new Promise((r) => setTimeout(r, 300));
      }
      const shown = await until(
        'the danmaku in the overlay',
        async () => {
          const s = await page.evaluate(() => window.liveshardDemo.shown);
          return sent.every((x) => s.some((r) => r.text === x.text)) ? s : null;
        },
        20_000,
      );
      // On screen in the overlay, in its colour.
      const colour = await page.evaluate((text) => {
        const el = [...document.querySelectorAll('#overlay .dm')].find((e) => e.textContent === text);
        return el ? getComputedStyle(el).color : null;
      }, sent[sent.length - 1].text);
      assert.equal(colour, 'rgb(255, 204, 0)');
      await page.screenshot({ path: join(artifacts, `demo-${kind}.png`) });

      const report = [];
      for (const x of sent) {
        const r = shown.find((s) => s.text === x.text);
        assert.equal(typeof r.media_ts, 'number', `${x.text}: stamped with media_ts while live`);
        assert.equal(typeof r.mediaTime, 'number', `${x.text}: the player's stream time was known`);
        assert.equal(typeof r.frame, 'number', `${x.text}: the frame on screen was read`);
        const clockError = r.mediaTime - r.media_ts;
        const frameError = r.frame * FRAME_MS - r.media_ts;
        report.push({ text: x.text, media_ts: r.media_ts, clockError, frameError, heldMs: r.at - x.at });
        assert.ok(
          Math.abs(frameError) <= TOLERANCE_MS,
          `${x.text}: shown on frame ${r.frame} (${r.frame * FRAME_MS} ms), media_ts ${r.media_ts}: off by ${frameError} ms`,
        );
        assert.ok(Math.abs(clockError) <= TOLERANCE_MS, `${x.text}: the player's clock was off by ${clockError} ms`);
      }
      if (process.env.LIVESHARD_TEST_LOG || process.env.LIVESHARD_DEMO_REPORT) {
        process.stderr.write(`${kind}: ${JSON.stringify(report)}\n`);
      }
      if (kind === 'hls') {
        // An HLS player is segments behind: the comments were held, not shown as they came.
        assert.ok(report.every((r) => r.heldMs > 1000), `held: ${JSON.stringify(report)}`);
      }
    } catch (err) {
      await page.screenshot({ path: join(artifacts, `demo-${kind}-failed.png`) }).catch(() => {});
      err.message += `\npage console:\n${console.join('\n')}`;
      throw err;
    } finally {
      await page.close();
    }
  });
}
