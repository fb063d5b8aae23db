// The demo page: one room's stream (HLS through hls.js or HTTP-FLV through mpegts.js) with
// its danmaku over the picture, held until the player shows the frame each was sent on.
//
//   /demo/?room=ID              the player is chosen (HTTP-FLV where the browser can, else HLS)
//   /demo/?room=ID&player=hls   or flv: that one
//
// Danmaku come through the SDK (liveshard.mjs, clients/sdk/src/index.mjs); each live item
// carries `media_ts`, the stream time it was sent at, and the SDK's HoldQueue releases it once
// the player's stream time (hlsMediaClock / flvMediaClock) reaches it. What was shown, and at
// which stream time, is kept in `window.liveshardDemo.shown` (the end-to-end test reads it).
//
// Over HLS the player follows the playlist's own latency: where the server offers Low-Latency
// HLS (media.hls_low_latency: partial segments, blocking reloads, PART-HOLD-BACK) hls.js plays
// that far behind the live edge, about a second, and otherwise three target durations.
// `liveshardDemo.latency()` says how far behind the ingest wall clock the picture is.
import { LiveshardClient, HoldQueue, hlsMediaClock, flvMediaClock } from './liveshard.mjs';

const $ = (id) => document.getElementById(id);
const video = $('video');
const overlay = $('overlay');
const params = new URLSearchParams(location.search);
const roomId = params.get('room') || '';
const wanted = (params.get('player') || 'auto').toLowerCase();

const MAX_ON_SCREEN = 80; // danmaku elements at once; the oldest goes first
const MAX_RECORDED = 500; // entries kept in liveshardDemo.shown
const LANE_PX = 30;
const TOKEN_KEY = 'liveshard-demo-token';

/** What the page shows, for tests and the console. */
const demo = {
  room: roomId,
  player: null, // 'hls' | 'flv' once playing
  live: false,
  clock: () => null, // the player's stream time (ms) on screen
  shown: [], // {id, text, mode, media_ts, mediaTime, at}
  hls: null, // the hls.js instance while playing over HLS
  /**
   * How far (ms) the picture is behind the server's ingest clock: now − the program
   * date-time on screen (the playlist's EXT-X-PROGRAM-DATE-TIME is when the server got each
   * segment's first frame). Null when not known (not HLS, not playing yet).
   */
  latency() {
    const date = demo.hls && demo.hls.playingDate;
    const ms = date ? date.getTime() : NaN;
    return Number.isFinite(ms) ? Date.now() - ms : null;
  },
};
window.liveshardDemo = demo;

function notice(text) {
  $('notice').textContent = text || '';
}

async function api(path, init) {
  const res = await fetch(`/api/v1${path}`, init);
  const body = await res.json().catch(() => ({}));
  if (!res.ok || body.code !== 0) {
    const err = new Error(body.message || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return body.data;
}

/** A play URL from the API, on this page's origin (the page may sit behind a proxy). */
function here(url) {
  try {
    const u = new URL(url, location.href);
    return location.origin + u.pathname + u.search;
  } catch {
    return url;
  }
}

// --- the player ------------------------------------------------------------------------------

let play = { flv: '', hls: '' };
let player = null; // {kind, destroy()}
let retry = null;

function choosePlayer() {
  const flv = !!(window.mpegts && mpegts.isSupported() && mpegts.getFeatureList().mseLivePlayback);
  // The API leaves `play.hls` out for a stream HLS does not carry (HEVC, AV1, …).
  const hls = !!(play.hls && window.Hls && Hls.isSupported());
  if (wanted === 'flv') return flv ? 'flv' : null;
  if (wanted === 'hls') return hls ? 'hls' : null;
  return flv ? 'flv' : hls ? 'hls' : null;
}

function startPlayer() {
  if (player || !demo.live) return;
  const kind = choosePlayer();
  if (!kind) {
    if (wanted === 'hls' && !play.hls) {
      notice('This stream is not offered over HLS (its codec): play it over HTTP-FLV.');
      return;
    }
    notice(`This browser cannot play ${wanted === 'auto' ? 'HLS or HTTP-FLV' : wanted} here (no MSE).`);
    return;
  }
  if (kind === 'flv') {
    const p = mpegts.createPlayer(
      { type: 'flv', isLive: true, url: here(play.flv) },
      { enableWorker: false, enableStashBuffer: false, liveBufferLatencyChasing: true },
    );
    const clock = flvMediaClock(p, video);
    p.on(mpegts.Events.ERROR, () => restartSoon());
    p.attachMediaElement(video);
    p.load();
    Promise.resolve(p.play()).catch(() => {});
    player = {
      kind,
      destroy() {
        clock.detach();
        p.destroy();
      },
    };
    demo.clock = clock;
  } else {
    // No liveSyncDuration(Count) here: set by the user, either overrides the playlist's
    // (PART-)HOLD-BACK; left out, hls.js holds back PART-HOLD-BACK in low-latency mode and
    // three target durations (its default count) from a playlist without one. Playing up to
    // 1.25× (pitch kept) lets it catch up to that target after a start or a stall; at 1× it
    // stays wherever it began, about a second behind it.
    const h = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.25, manifestLoadingMaxRetry: 6 });
    const clock = hlsMediaClock(h);
    h.on(Hls.Events.ERROR, (_e, data) => {
      if (data.fatal) restartSoon();
    });
    h.loadSource(here(play.hls));
    h.attachMedia(video);
    video.play().catch(() => {});
    player = {
      kind,
      destroy() {
        clock.detach();
        h.destroy();
        demo.hls = null;
      },
    };
    demo.clock = clock;
    demo.hls = h;
  }
  demo.player = kind;
  $('player-kind').textContent = kind === 'flv' ? 'HTTP-FLV (mpegts.js)' : 'HLS (hls.js)';
}

function stopPlayer() {
  clearTimeout(retry);
  retry = null;
  if (!player) return;
  player.destroy();
  player = null;
  demo.clock = () => null;
  video.removeAttribute('src');
  video.load();
}

/** After a player error: start again in a moment, if the stream is still live. */
function restartSoon() {
  if (retry) return;
  retry = setTimeout(() => {
    retry = null;
    stopPlayer();
    startPlayer();
  }, 2000);
}

function setLive(live) {
  demo.live = live;
  const state = $('state');
  state.textContent = live ? 'live' : 'offline';
  state.className = `badge ${live ? 'live' : 'offline'}`;
  $('curtain').hidden = live;
  if (live) startPlayer();
  else {
    stopPlayer();
    hold.flush();
  }
}

// --- the overlay -----------------------------------------------------------------------------

const lanes = { scroll: [], top: [], bottom: [] }; // per lane: when it is free again (ms)

function lane(mode, now) {
  const count = Math.max(1, Math.floor((overlay.clientHeight * (mode === 'scroll' ? 0.8 : 0.4)) / LANE_PX));
  const busy = lanes[mode];
  let best = 0;
  for (let i = 0; i < count; i++) {
    if (!(busy[i] > now)) return i;
    if (busy[i] < busy[best]) best = i;
  }
  return best;
}

function colour(c) {
  return typeof c === 'string' && /^#[0-9a-fA-F]{6}$/.test(c) ? c : '#ffffff';
}

function show(item) {
  if (!item || typeof item.text !== 'string') return;
  const mode = item.mode === 'top' || item.mode === 'bottom' ? item.mode : 'scroll';
  const now = performance.now();
  const el = document.createElement('div');
  el.className = `dm ${mode}`;
  el.textContent = item.text;
  el.style.color = colour(item.color);
  const i = lane(mode, now);
  if (mode === 'bottom') el.style.bottom = `${8 + i * LANE_PX}px`;
  else el.style.top = `${8 + i * LANE_PX}px`;
  // A scrolling lane frees once the comment's tail has entered; a fixed one when it fades.
  lanes[mode][i] = now + (mode === 'scroll' ? 2500 : 4000);
  el.addEventListener('animationend', () => el.remove());
  overlay.appendChild(el);
  while (overlay.childElementCount > MAX_ON_SCREEN) overlay.firstElementChild.remove();

  const record = {
    id: item.id,
    text: item.text,
    mode,
    media_ts: typeof item.media_ts === 'number' ? item.media_ts : null,
    mediaTime: demo.clock(),
    at: Date.now(),
  };
  demo.shown.push(record);
  if (demo.shown.length > MAX_RECORDED) demo.shown.shift();
  if (typeof window.liveshardDemoOnShow === 'function') window.liveshardDemoOnShow(record);
}

// Held until the player's stream time reaches the item's media_ts (at most 15 s: an HLS
// player is a few segments behind, and a stalled one must not swallow comments).
const hold = new HoldQueue({ clock: () => demo.clock(), onRelease: show, maxHoldMs: 15000 }).start(20);

// --- danmaku ---------------------------------------------------------------------------------

let client = null;

function connect(token) {
  if (client) client.close();
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  client = new LiveshardClient({ url: `${scheme}://${location.host}/ws`, room: roomId, token: token || undefined });
  client.on('danmaku', (item, { history }) => {
    // The join replays recent history: that is the past, not for the picture now.
    if (!history) hold.push(item);
  });
  client.on('online', ({ count }) => {
    $('online').textContent = String(count);
  });
  client.on('live', (item, { history }) => {
    if (!history) setLive(item.status === 'live');
  });
  client.on('open', () => notice(''));
  client.on('close', ({ code, reason, willReconnect }) => {
    if (!willReconnect) notice(`Danmaku closed (${code}${reason ? `: ${reason}` : ''}).`);
  });
  client.on('reconnecting', () => notice('Danmaku: reconnecting…'));
  client.connect();
  const canSend = !!token;
  $('text').disabled = !canSend;
  $('send-button').disabled = !canSend;
}

$('send').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = $('text').value.trim();
  if (!text || !client) return;
  try {
    await client.sendDanmaku(text, { color: $('color').value.toUpperCase(), mode: $('mode').value });
    $('text').value = '';
  } catch (err) {
    notice(`Not sent: ${err.message}`);
  }
});

$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const nick = $('nick').value.trim() || 'guest';
  const uid = `web-${nick.replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 24) || 'guest'}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    const data = await api('/auth/dev', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ uid, nick }),
    });
    localStorage.setItem(TOKEN_KEY, data.token);
    $('who').textContent = `as ${data.user.nick}`;
    connect(data.token);
  } catch (err) {
    notice(err.status === 404 ? 'Dev login is off (auth.dev_login = true turns it on).' : `Login failed: ${err.message}`);
  }
});

// --- start -----------------------------------------------------------------------------------

// The header's lag: how far behind the ingest clock the picture is (known over HLS).
setInterval(() => {
  const ms = demo.latency();
  $('lag').textContent = ms === null ? '' : `${(ms / 1000).toFixed(1)} s behind`;
}, 1000);

async function main() {
  if (!roomId) {
    notice('Open this page with ?room=ROOM_ID (create a room with POST /api/v1/rooms).');
    return;
  }
  let room;
  try {
    room = await api(`/rooms/${encodeURIComponent(roomId)}`);
  } catch (err) {
    notice(`Room ${roomId}: ${err.message}`);
    return;
  }
  $('title').textContent = room.title || roomId;
  $('online').textContent = String(room.online || 0);
  play = room.play || play;
  connect(localStorage.getItem(TOKEN_KEY));
  setLive(!!room.live);
}

main();
