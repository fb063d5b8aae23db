// What the Chromium tests of the demo page share: where artifacts go, how Chromium is
// launched, polling for a condition, and a REST call that must succeed.
import assert from 'node:assert/strict';
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
