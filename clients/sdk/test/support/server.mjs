// Starts the real liveshard binary for integration tests, as the Rust tests do
// (tests/support/mod.rs): `serve` on loopback port 0 with a temporary data dir, the first
// stdout line `liveshard ready http=ADDR …` giving the address, and no LIVESHARD_*
// variables from the environment.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');

/** The binary under test: $LIVESHARD_BIN, else target/debug/liveshard in the repository. */
export function binaryPath() {
  return process.env.LIVESHARD_BIN
    ? resolve(process.env.LIVESHARD_BIN)
    : join(repoRoot, 'target', 'debug', 'liveshard');
}

export function tempDataDir() {
  return mkdtempSync(join(tmpdir(), 'liveshard-sdk-test-'));
}

/**
 * Starts `liveshard serve` on `127.0.0.1:port` (0: any free port) with `dataDir`, plus
 * `args`. Resolves once it is ready, with {http, port, https, ready, proc, logs, exited,
 * kill()} (`https`: the ready line's `https=` address, null without `--https`; `ready`: that
 * line); rejects with its log if it exits first or is not ready in `timeoutMs`.
 */
export function startServer({ dataDir, port = 0, args = [], timeoutMs = 30_000 }) {
  const bin = binaryPath();
  if (!existsSync(bin)) {
    return Promise.reject(new Error(`no liveshard binary at ${bin}: build it (cargo build) or set LIVESHARD_BIN`));
  }
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('LIVESHARD_') && k !== 'RUST_LOG') env[k] = v;
  }
  const proc = spawn(
    bin,
    ['serve', '--http', `127.0.0.1:${port}`, '--rtmp', '127.0.0.1:0', '--data-dir', dataDir, ...args],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs = [];
  createInterface({ input: proc.stderr }).on('line', (l) => {
    logs.push(l);
    if (process.env.LIVESHARD_TEST_LOG) console.error('[server]', l);
  });
  const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  return new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error('server not ready in time; log:\n' + logs.join('\n')));
    }, timeoutMs);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before it was ready; log:\n` + logs.join('\n')));
    });
    createInterface({ input: proc.stdout }).on('line', (line) => {
      if (!line.startsWith('liveshard ready')) return;
      clearTimeout(timer);
      const http = /(?:^|\s)http=(\S+)/.exec(line)[1];
      const https = /(?:^|\s)https=(\S+)/.exec(line);
      resolveReady({
        http,
        port: Number(http.split(':').pop()),
        https: https ? https[1] : null,
        ready: line,
        proc,
        logs,
        exited,
        /** SIGKILL (no drain, nothing flushed) and wait for the exit. */
        async kill() {
          if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
          await exited;
        },
      });
    });
  });
}

export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

/** A REST call; resolves with `data` of the {code, message, data} envelope, throws on a non-zero code. */
export async function api(http, method, path, { token, body } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = 'Bearer ' + token;
  const res = await fetch(`http://${http}/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const env = await res.json();
  if (env.code !== 0) throw new Error(`${method} ${path}: ${res.status} ${env.code} ${env.message}`);
  return env.data;
}
