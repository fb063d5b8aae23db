// What the Chromium tests of the demo page share: where artifacts go, how Chromium is
// launched, polling for a condition, a REST call that must succeed, and an ffmpeg publisher.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The `clients/` directory (the server's `server.clients_dir`). */
export const clientsDir = resolve(here, '../..');
const repoRoot = resolve(clientsDir, '..');
/** Screenshots and page logs: `target/test-artifacts/`. */
export const artifacts = join(
  process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(repoRoot, 'target'),
  'test-artifacts',
);
export const CHROMIUM = process.env.LIVESHARD_CHROMIUM || '/usr/bin/chromium';
// SPEC §5's flags, plus no QUIC. Playwright adds --headless and the fresh profile directory.
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--autoplay-policy=no-user-gesture-required',
];

/** Resolves when `check()` returns a truthy value (polled), or rejects after `timeoutMs`. */
export async function until(what, check, timeoutMs = 30_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** `/api/v1{path}` on `base`; its `data`, after checking the answer's `code` is 0. */
export async function api(base, path, { method = 'GET', token, body } = {}) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body ? { 'Content-Type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  assert.equal(json.code, 0, `${method} ${path}: ${JSON.stringify(json)}`);
  return json.data;
}

/**
 * Publishes a test pattern (320x240 video at 25 fps, a sine tone) to `url` over RTMP until
 * killed, through the video filter `vf` if given. {proc, log (stderr), exited}.
 */
export function startFfmpeg(url, { vf } = {}) {
  const args = [
    '-hide_banner', '-loglevel', 'error', '-nostdin',
    '-re', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=25',
    '-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100',
    ...(vf ? ['-vf', vf] : []),
    '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '25', '-pix_fmt', 'yuv420p',
    '-c:a', 'aac', '-b:a', '64k', '-ar', '44100',
    '-f', 'flv', url,
  ];
  const proc = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const log = [];
  proc.stderr.on('data', (d) => log.push(String(d)));
  const exited = new Promise((r) => proc.once('exit', r));
  return { proc, log, exited };
}
