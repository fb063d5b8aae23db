// A live room: the room's HTTP-FLV stream in <live-player> and its danmaku through the SDK.
//
// <live-player> plays FLV under a second behind the broadcaster and does not report the
// stream time it shows, so comments are shown as they arrive. A player that reports its
// stream time (an HLS player several seconds behind) would pass each danmaku through the
// SDK's HoldQueue instead, to show it on the frame it was sent on.
const { LiveshardClient, CLOSE } = require('../../libs/liveshard.js');

const app = getApp();
const MAX_LINES = 30; // lines kept on screen
const RENDER_MS = 150; // setData is costly: new lines are rendered in batches

// What the user reads when the room closes the socket for good.
const FINAL_CLOSE = {
  [CLOSE.KICKED]: 'You were removed from this room.',
  [CLOSE.BANNED]: 'You are banned from this room.',
  [CLOSE.TOKEN_REVOKED]: 'You were signed out. Open the room again to log in.',
};

Page({
  data: {
    flvUrl: '',
    live: false,
    online: 0,
    lines: [],
    draft: '',
    canSend: false,
    sending: false,
    notice: '',
  },

  onLoad(query) {
    this.roomId = query.id;
    this.pending = [];
    this.lineKey = 0;
    // Anonymous viewers may read: a failed login only turns sending off.
    app
      .login()
      .then(() => this.setData({ canSend: true }))
      .catch(() => this.setData({ notice: 'Not logged in: watching only.' }))
      .then(() => this.loadRoom());
  },

  onUnload() {
    if (this.client) this.client.close();
    clearTimeout(this.renderTimer);
  },

  loadRoom() {
    wx.request({
      url: `${app.globalData.apiBase}/api/v1/rooms/${encodeURIComponent(this.roomId)}`,
      success: (res) => {
        const body = res.data || {};
        if (body.code !== 0) {
          this.setData({ notice: body.message || 'Room not found.' });
          return;
        }
        const room = body.data;
        wx.setNavigationBarTitle({ title: room.title });
        this.setData({ flvUrl: room.play.flv, live: room.live, online: room.online });
        this.connect(room.ws_url);
      },
      fail: (e) => this.setData({ notice: 'Network error: ' + e.errMsg }),
    });
  },

  connect(wsUrl) {
    const client = new LiveshardClient({
      url: wsUrl,
      // Asked on every reconnect, so a fresh login is picked up.
      token: () => app.globalData.token,
      wx,
    });
    client.on('open', () => this.setData({ notice: '' }));
    client.on('close', (e) => {
      if (e.willReconnect) this.setData({ notice: 'Reconnecting…' });
      else if (FINAL_CLOSE[e.code]) this.setData({ notice: FINAL_CLOSE[e.code], canSend: false });
    });
    client.on('danmaku', (d) => this.addLine('danmaku', d.nick, d.text, d.color));
    client.on('gift', (g) => this.addLine('gift', g.nick, `sent ${g.gift_id} ×${g.count}`));
    client.on('system', (s) => this.addLine('system', '', s.text));
    client.on('live', (l) => this.setData({ live: l.status === 'live' }));
    client.on('online', (o) => this.setData({ online: o.count }));
    client.on('gap', () => this.addLine('system', '', 'Some earlier comments could not be loaded.'));
    client.connect();
    this.client = client;
  },

  addLine(kind, nick, text, color) {
    this.pending.push({ key: ++this.lineKey, kind, nick: nick || '', text, color: color || '' });
    if (!this.renderTimer) {
      this.renderTimer = setTimeout(() => {
        this.renderTimer = null;
        const lines = this.data.lines.concat(this.pending.splice(0)).slice(-MAX_LINES);
        this.setData({ lines });
      }, RENDER_MS);
    }
  },

  onInput(e) {
    this.setData({ draft: e.detail.value });
  },

  onSend() {
    const text = this.data.draft.trim();
    if (!text || !this.client || this.data.sending) return;
    this.setData({ sending: true });
    this.client
      .sendDanmaku(text)
      // The comment itself comes back through the room like everyone else's.
      .then(() => this.setData({ draft: '' }))
      .catch((err) => wx.showToast({ title: sendErrorText(err), icon: 'none' }))
      .then(() => this.setData({ sending: false }));
  },

  onPlayerError(e) {
    this.setData({ notice: 'Player: ' + (e.detail.errMsg || 'error') });
  },
});

function sendErrorText(err) {
  switch (err.reason) {
    case 'rate_limited':
    case 'slow_mode':
      return 'Slow down a little';
    case 'muted':
      return 'You are muted';
    case 'filtered':
      return 'That contains a blocked word';
    case 'text_length':
      return 'Too long';
    case 'login_required':
      return 'Log in to send';
    case 'disconnected':
      return 'Connection lost: it may not have been sent';
    case 'timeout':
    case 'queue_full':
      return 'Not sent: connection trouble';
    default:
      return err.message || 'Not sent';
  }
}
