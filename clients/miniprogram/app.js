// The app: where the server is, and one login shared by every page.
//
// wx.login() gives a single-use code; POST /api/v1/auth/wechat trades it for a token
// (docs/api.md) that the REST API and the danmaku WebSocket both accept.
App({
  globalData: {
    // Production needs https:// (and so wss:// for the socket) on a domain registered in the
    // mini-program admin console: see README.md.
    apiBase: 'https://live.example.com',
    token: null,
  },

  /** Resolves with a token; a failed login can be tried again later. */
  login() {
    if (this.loginPromise) return this.loginPromise;
    const base = this.globalData.apiBase;
    this.loginPromise = new Promise((resolve, reject) => {
      wx.login({
        success: ({ code }) => {
          wx.request({
            url: `${base}/api/v1/auth/wechat`,
            method: 'POST',
            data: { code },
            success: (res) => {
              const body = res.data || {};
              if (body.code === 0) {
                this.globalData.token = body.data.token;
                resolve(body.data.token);
              } else {
                reject(new Error(body.message || `login failed (${res.statusCode})`));
              }
            },
            fail: (e) => reject(new Error(e.errMsg)),
          });
        },
        fail: (e) => reject(new Error(e.errMsg)),
      });
    });
    this.loginPromise.catch(() => {
      this.loginPromise = null;
    });
    return this.loginPromise;
  },
});
