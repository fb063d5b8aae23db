// HTTPS and WSS end to end, in headless Chromium against the real server: `serve --https`
// with a certificate made here (a CA of our own and a leaf for 127.0.0.1 / localhost signed by
// it). ffmpeg publishes a test pattern to a room; the demo page, loaded over https, plays it
// over HTTP-FLV on the same https origin, connects its danmaku WebSocket as wss://, and a
// comment posted over wss from Node shows over the picture.
//
// Chromium does not trust our CA; `--ignore-certificate-errors-spki-list` tells it to accept a
// chain holding a certificate whose public key (SPKI) hashes to one listed. Chromium matches it
// against the certificates the server presents (the leaf, plus any intermediates it sends), so
// the leaf's hash is the one listed. And the other way round: without that flag Chromium
// refuses the page, and a Node client refuses the server unless given the CA.
//
// Needs: the server binary ($LIVESHARD_BIN or target/debug/liveshard), the openssl CLI, ffmpeg,
// Debian's chromium at /usr/bin/chromium and playwright-core. Nothing here skips: a missing
// piece fails the test. A screenshot is saved under target/test-artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import WebSocket from 'ws';
import { chromium } from 'playwright-core';

import { startServer, tempDataDir, removeDir } from '../../sdk/test/support/server.mjs';
import { CHROMIUM, CHROMIUM_ARGS, api, artifacts, clientsDir, startFfmpeg, until } from './support.mjs';

// What Node's TLS says when a chain does not lead to a CA it trusts: the leaf alone
// (UNABLE_TO_VERIFY_LEAF_SIGNATURE), or leaf and CA when the server sends the CA too.
const UNTRUSTED_CHAIN = ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY'];

function openssl(cwd, ...args) {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`openssl ${args.join(' ')} failed: ${err.stderr || err.message}`);
  }
}

/** A CA, and a leaf for 127.0.0.1 and localhost signed by it (P-256 keys, valid two days). */
function makeCertificates(dir) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, 'req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=liveshard test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl(dir, 'req', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=127.0.0.1');
  writeFileSync(join(dir, 'leaf.ext'), [
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    '',
  ].join('\n'));
  openssl(dir, 'x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'leaf.pem', '-days', '2', '-extfile', 'leaf.ext');
  return {
    ca: readFileSync(join(dir, 'ca.pem')),
    cert: join(dir, 'leaf.pem'),
    key: join(dir, 'leaf.key'),
    leaf: new X509Certificate(readFileSync(join(dir, 'leaf.pem'))),
  };
}

/** base64(SHA-256(SubjectPublicKeyInfo)): the form `--ignore-certificate-errors-spki-list` takes. */
function spkiHash(x509) {
  const der = x509.publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

/**
 * Opens a danmaku WebSocket and resolves once the join is answered (its `history` frame),
 * with {ws, frames, peer} (`peer`: the certificate the server presented); rejects on an
 * error or a close before that.
 */
function joinRoom(url, options = {}) {
  return new Promise((resolveJoin, reject) => {
    const ws = new WebSocket(url, options);
    const frames = [];
    let peer = null;
    ws.on('upgrade', (res) => {
      peer = res.socket.getPeerCertificate();
    });
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data));
      frames.push(frame);
      if (frame.type === 'history') resolveJoin({ ws, frames, peer });
    });
    ws.once('error', reject);
    ws.once('close', (code, reason) => reject(new Error(`closed before the join: ${code} ${reason}`)));
  });
}

/** Sends `msg` with a cid and resolves with the frame answering it (`ack` or `error`). */
async function request(conn, msg) {
  const cid = `t${conn.frames.length}-${Math.random().toString(36).slice(2, 8)}`;
  const seen = conn.frames.length;
  conn.ws.send(JSON.stringify({ ...msg, cid }));
  return until(`the answer to ${msg.type}`, () => conn.frames.slice(seen).find((f) => f.cid === cid));
}

let certDir;
let certs;
let spki;
let server;
let dataDir;
let browser;
let token;
let ffmpeg;
const sockets = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: scripts/test.sh installs Debian's chromium`);
  mkdirSync(artifacts, { recursive: true });
  certDir = mkdtempSync(join(tmpdir(), 'liveshard-tls-'));
  certs = makeCertificates(certDir);
  spki = spkiHash(certs.leaf);
  dataDir = tempDataDir();
  server = await startServer({
    dataDir,
    args: [
      '--https', '127.0.0.1:0',
      '--set', `server.tls_cert=${certs.cert}`,
      '--set', `server.tls_key=${certs.key}`,
      '--set', 'auth.dev_login=true',
      '--set', `server.clients_dir=${clientsDir}`,
    ],
  });
  assert.match(server.https || '', /^127\.0\.0\.1:\d+$/, `the ready line gives the https address: ${server.ready}`);
  ({ token } = await api(`http://${server.http}`, '/auth/dev', { method: 'POST', body: { uid: 'host', nick: 'Host' } }));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${spki}`],
  });
});

after(async () => {
  for (const ws of sockets) ws.terminate();
  if (ffmpeg) {
    ffmpeg.proc.kill('SIGKILL');
    await ffmpeg.exited;
  }
  if (browser) await browser.close().catch(() => {});
  if (server) await server.kill();
  if (dataDir) removeDir(dataDir);
  if (certDir) rmSync(certDir, { recursive: true, force: true });
});

test('the demo page over https plays the stream, joins its room over wss and shows a danmaku sent over wss', async () => {
  const base = `http://${server.http}`;
  const room = await api(base, '/rooms', { method: 'POST', token, body: { title: 'tls demo' } });
  ffmpeg = startFfmpeg(room.push.url);
  await until(
    'the room to go live',
    async () => {
      if (ffmpeg.proc.exitCode !== null) throw new Error(`ffmpeg exited: ${ffmpeg.log.join('')}`);
      return (await api(base, `/rooms/${room.id}`)).live;
    },
    15_000,
  );
  const page = await browser.newPage({ viewport: { width: 960, height: 640 } });
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  const pageSockets = [];
  page.on('websocket', (ws) => pageSockets.push(ws.url()));
  const flvPath = new URL(room.play.flv).pathname;
  const flvResponses = [];
  page.on('response', (r) => {
    if (new URL(r.url()).pathname === flvPath) flvResponses.push(`${r.status()} ${r.url()}`);
  });
  try {
    const res = await page.goto(`https://${server.https}/demo/?room=${room.id}&player=flv`);
    assert.equal(res.status(), 200);
    // The page's own REST call (GET /api/v1/rooms/ID, over https) filled in the title.
    await until('the room title', async () => (await page.textContent('#title')) === 'tls demo');
    // The stream plays, from https://…/live/….flv: the video's time advances.
    const t0 = await until(
      'the video to play',
      () => page.evaluate(() => {
        const v = document.getElementById('video');
        return window.liveshardDemo.player === 'flv' && v.currentTime > 0.2 ? v.currentTime : 0;
      }),
      15_000,
    );
    await until('the video time to advance', () => page.evaluate((t) => document.getElementById('video').currentTime > t + 0.5, t0));
    assert.deepEqual(flvResponses, [`200 https://${server.https}${flvPath}`]);
    // The join answers with the room's online count: the page's connection is up.
    await until('the page to be online', async () => Number(await page.textContent('#online')) >= 1);
    assert.deepEqual(pageSockets, [`wss://${server.https}/ws?room=${room.id}`]);

    const sender = await joinRoom(`wss://${server.https}/ws?room=${room.id}&token=${token}`, { ca: certs.ca });
    sockets.push(sender.ws);
    const text = `over wss ${Date.now()}`;
    const ack = await request(sender, { type: 'danmaku', text, color: '#FFCC00', mode: 'top' });
    assert.equal(ack.type, 'ack', JSON.stringify(ack));
    // In the overlay, in its colour, and on top: the topmost element at its centre is the
    // comment, not the curtain or anything else. (Hit testing skips the overlay, which ignores
    // pointer events, so they are turned on for this one elementFromPoint.)
    const shown = await until('the danmaku in the overlay', () => page.evaluate((t) => {
      const el = [...document.querySelectorAll('#overlay .dm')].find((e) => e.textContent === t);
      if (!el) return null;
      const r = el.getBoundingClientRect();
      const overlay = document.getElementById('overlay');
      overlay.style.pointerEvents = 'auto';
      const atCentre = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
      overlay.style.pointerEvents = '';
      return { colour: getComputedStyle(el).color, onTop: el === atCentre || el.contains(atCentre) };
    }, text), 20_000);
    assert.deepEqual(shown, { colour: 'rgb(255, 204, 0)', onTop: true });
    await page.screenshot({ path: join(artifacts, 'tls-demo.png') });
    sender.ws.close();
  } catch (err) {
    await page.screenshot({ path: join(artifacts, 'tls-demo-failed.png') }).catch(() => {});
    err.message += `\nnotice: ${await page.textContent('#notice').catch(() => '?')}\npage console:\n${logs.join('\n')}`;
    throw err;
  } finally {
    await page.close();
  }
});

test('Chromium without the certificate allowed refuses the https page', async () => {
  const plain = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    await assert.rejects(
      (await plain.newPage()).goto(`https://${server.https}/demo/?room=nope`),
      /net::ERR_CERT_AUTHORITY_INVALID/,
    );
    // The same browser is fine with the plain HTTP listener: it is the certificate it refused.
    const res = await (await plain.newPage()).goto(`http://${server.http}/demo/?room=nope`);
    assert.equal(res.status(), 200);
  } finally {
    await plain.close();
  }
});

test('a Node client trusts the server over wss only with the CA', async () => {
  const room = await api(`http://${server.http}`, '/rooms', { method: 'POST', token, body: { title: 'tls node' } });
  const url = `wss://${server.https}/ws?room=${room.id}`;

  // Without the CA: the TLS handshake fails on the chain, before any upgrade.
  const err = await joinRoom(url).then(
    (c) => {
      sockets.push(c.ws);
      throw new Error('joined without trusting the CA');
    },
    (e) => e,
  );
  assert.ok(UNTRUSTED_CHAIN.includes(err.code), `expected a certificate error, got ${err.code}: ${err.message}`);

  // With it: the join is answered, and the server presented our leaf.
  const conn = await joinRoom(url, { ca: certs.ca });
  sockets.push(conn.ws);
  assert.equal(conn.frames.find((f) => f.type === 'history').room, room.id);
  assert.equal(conn.peer.fingerprint256, certs.leaf.fingerprint256);
  assert.equal(spkiHash(new X509Certificate(conn.peer.raw)), spki);

  conn.ws.close();
});
