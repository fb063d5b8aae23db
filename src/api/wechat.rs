//! The WeChat server API client: `jscode2session` for login, and the `client_credential`
//! access token other WeChat calls need, cached and refreshed before it expires.
//!
//! Every call goes through the outbound pool ([`crate::outbound`]); nothing here runs on a
//! shard's loop except building URLs and reading the (small, bounded) JSON answers.
//!
//! The access token lives in a [`TokenCache`] behind a `Mutex`/`Condvar` that only
//! outbound threads and the keeper thread lock: a shard that wants the token sends a job
//! to the pool ([`WeChat::access_token`]) and awaits the answer. The cache allows one
//! refresh in flight: a caller that finds a refresh running waits for its result instead
//! of starting another (WeChat invalidates a token a few minutes after a new one is
//! issued, so racing refreshes would hand out tokens that stop working). The keeper thread
//! refreshes `wechat.token_refresh_margin_secs` before `expires_in` runs out, so callers
//! almost never wait.
//!
//! On several nodes sharing Redis (`cluster.redis`), the token is shared too (as the seeds
//! cache it in Redis): a node due for one first reads Redis; only if that one is due as
//! well does it take the fetch lock (`SET NX` with a TTL) and ask WeChat, and the others
//! wait for what it stores. So one node at a time fetches, cluster-wide. If Redis cannot be
//! reached, each node fetches its own.
//!
//! The URLs carry the AppSecret and the user's login code: errors quoting them are
//! redacted where they are made (`crate::outbound`), and log lines once more on the way
//! out (`crate::logging`), so neither ever reaches a log.
//!
//! The answers' shapes (the documented contract, which the tests' local server speaks):
//! - `GET /sns/jscode2session?appid&secret&js_code&grant_type=authorization_code` →
//!   `{"openid","session_key","unionid"?}` or `{"errcode":40029,"errmsg":…}`;
//! - `GET /cgi-bin/token?grant_type=client_credential&appid&secret` →
//!   `{"access_token","expires_in":7200}` or `{"errcode":…,"errmsg":…}`.

use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::WechatConfig;
use crate::outbound::{encode_component, Client, HttpReply, OutboundError, OutboundHandle};

/// Why a WeChat call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WxError {
    /// WeChat answered with a non-zero `errcode`.
    Code { errcode: i64, errmsg: String },
    /// No answer in time.
    Timeout,
    /// Unreachable, or an answer we cannot read (status, JSON, missing fields).
    BadReply(String),
    /// The outbound pool is full or stopped.
    Busy,
}

impl std::fmt::Display for WxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WxError::Code { errcode, errmsg } => write!(f, "errcode {errcode}: {errmsg}"),
            WxError::Timeout => f.write_str("timed out"),
            WxError::BadReply(e) => write!(f, "bad reply: {e}"),
            WxError::Busy => f.write_str("outbound calls busy"),
        }
    }
}

impl From<OutboundError> for WxError {
    fn from(e: OutboundError) -> Self {
        match e {
            OutboundError::Timeout => WxError::Timeout,
            OutboundError::Busy | OutboundError::Closed => WxError::Busy,
            other => WxError::BadReply(other.to_string()),
        }
    }
}

/// What a successful `jscode2session` says. The `session_key` is neither kept nor
/// returned: nothing here decrypts user data, and it must never reach a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub openid: String,
    pub unionid: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(default)]
    openid: Option<String>,
    #[serde(default)]
    unionid: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn answer(reply: &HttpReply) -> Result<Answer, WxError> {
    let a: Answer = serde_json::from_slice(&reply.body).map_err(|_| {
        WxError::BadReply(format!(
            "HTTP {} with a body that is not JSON",
            reply.status
        ))
    })?;
    if a.errcode != 0 {
        return Err(WxError::Code {
            errcode: a.errcode,
            errmsg: a.errmsg.chars().take(200).collect(),
        });
    }
    if reply.status != 200 {
        return Err(WxError::BadReply(format!("HTTP {}", reply.status)));
    }
    Ok(a)
}

/// Reads a `jscode2session` answer.
pub fn parse_session(reply: &HttpReply) -> Result<Session, WxError> {
    let a = answer(reply)?;
    let openid = a
        .openid
        .filter(|o| (1..=128).contains(&o.len()))
        .ok_or_else(|| WxError::BadReply("no openid in the answer".into()))?;
    Ok(Session {
        openid,
        unionid: a.unionid.filter(|u| (1..=128).contains(&u.len())),
    })
}

/// Reads a `cgi-bin/token` answer: the token and its lifetime in seconds.
pub fn parse_token(reply: &HttpReply) -> Result<(String, u64), WxError> {
    let a = answer(reply)?;
    let token = a
        .access_token
        .filter(|t| (1..=2048).contains(&t.len()))
        .ok_or_else(|| WxError::BadReply("no access_token in the answer".into()))?;
    Ok((token, a.expires_in.unwrap_or(7200).max(1)))
}

/// Where the WeChat API is and who we are to it. Its `Debug` leaves the secret out.
#[derive(Clone)]
struct Endpoint {
    appid: String,
    secret: String,
    /// Without a trailing slash.
    base: String,
    timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("appid", &self.appid)
            .field("secret", &crate::logging::MASK)
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The WeChat client the API handlers use. `None` in `Shared` when `wechat.appid` is
/// empty.
pub struct WeChat {
    endpoint: Endpoint,
    cache: Arc<TokenCache>,
}

impl WeChat {
    /// `shared`: the Redis the nodes of a cluster share the token through.
    pub fn from_config(
        cfg: &WechatConfig,
        shared: Option<crate::cluster::client::Target>,
    ) -> Option<Self> {
        if cfg.appid.is_empty() {
            return None;
        }
        let endpoint = Endpoint {
            appid: cfg.appid.clone(),
            secret: cfg.secret.clone(),
            base: cfg.api_base.trim_end_matches('/').to_string(),
            timeout: Duration::from_millis(cfg.timeout_ms),
        };
        Some(Self {
            cache: Arc::new(TokenCache::new(
                endpoint.clone(),
                Duration::from_secs(cfg.token_refresh_margin_secs),
                shared,
            )),
            endpoint,
        })
    }

    /// Exchanges a login code from `wx.login()` for the user's openid.
    pub async fn code2session(&self, out: &OutboundHandle, code: &str) -> Result<Session, WxError> {
        let e = &self.endpoint;
        let url = format!(
            "{}/sns/jscode2session?appid={}&secret={}&js_code={}&grant_type=authorization_code",
            e.base,
            encode_component(&e.appid),
            encode_component(&e.secret),
            encode_component(code),
        );
        let reply = out.get(&url, e.timeout).await?;
        parse_session(&reply)
    }

    /// The current access token (for WeChat calls that need one), fetched or refreshed on
    /// an outbound thread if the cached one is missing or due.
    pub async fn access_token(&self, out: &OutboundHandle) -> Result<String, WxError> {
        let cache = self.cache.clone();
        out.run(move |client| cache.get(client)).await?
    }

    /// Starts the thread that keeps the access token fresh.
    pub fn start_keeper(&self, max_response_bytes: usize) -> std::io::Result<Keeper> {
        let cache = self.cache.clone();
        let (stop, stopped) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("wechat-token".into())
            .spawn(move || {
                let client = Client::new(max_response_bytes);
                let mut backoff = Duration::from_secs(1);
                loop {
                    let wait = cache.due_in();
                    match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    if !cache.due_in().is_zero() {
                        continue;
                    }
                    match cache.get(&client) {
                        Ok(_) => backoff = Duration::from_secs(1),
                        Err(e) => {
                            tracing::warn!(error = %e, "WeChat access token not refreshed");
                            cache.retry_after(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                        }
                    }
                }
            })?;
        Ok(Keeper { stop, thread })
    }
}

/// The access-token refresher thread.
pub struct Keeper {
    stop: SyncSender<()>,
    thread: JoinHandle<()>,
}

impl Keeper {
    /// Stops the thread (a refresh in flight is bounded by `wechat.timeout_ms`).
    pub fn join(self, timeout: Duration) {
        let _ = self.stop.try_send(());
        let deadline = Instant::now() + timeout;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
    }
}

/// When a token that lives `lifetime` is refreshed: `margin` before it expires, or half-way
/// for a short-lived one.
fn refresh_in(lifetime: Duration, margin: Duration) -> Duration {
    if lifetime > margin {
        lifetime - margin
    } else {
        lifetime / 2
    }
}

/// The lifetime (s) to report for a shared token with `left` to live and due in `due`, so
/// [`refresh_in`] here gives `due` again (to the second).
fn lifetime_for(left: Duration, due: Duration, margin: Duration) -> u64 {
    let as_if = due + margin;
    if as_if <= left {
        as_if.as_secs().max(1)
    } else {
        (due * 2).as_secs().max(1).min(left.as_secs().max(1))
    }
}

struct Token {
    value: String,
    /// When to refresh: `margin` before expiry (or half-way for short-lived tokens).
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
struct TokenState {
    token: Option<Token>,
    refreshing: bool,
    /// After a failed refresh, the keeper waits until then.
    retry_at: Option<Instant>,
}

/// The cached access token. Locked only by outbound threads and the keeper.
pub struct TokenCache {
    endpoint: Endpoint,
    margin: Duration,
    /// Where the nodes of a cluster share the token.
    shared: Option<crate::cluster::client::Target>,
    state: Mutex<TokenState>,
    changed: Condvar,
}

impl TokenCache {
    fn new(
        endpoint: Endpoint,
        margin: Duration,
        shared: Option<crate::cluster::client::Target>,
    ) -> Self {
        Self {
            endpoint,
            margin,
            shared,
            state: Mutex::new(TokenState::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long until the token should be refreshed (zero: now).
    fn due_in(&self) -> Duration {
        let st = self.lock();
        let now = Instant::now();
        if let Some(retry) = st.retry_at {
            return retry.saturating_duration_since(now);
        }
        match &st.token {
            Some(t) => t.refresh_at.saturating_duration_since(now),
            None => Duration::ZERO,
        }
    }

    fn retry_after(&self, wait: Duration) {
        self.lock().retry_at = Some(Instant::now() + wait);
    }

    /// The token, refreshing it first if it is due. Blocking: outbound threads only.
    pub fn get(&self, client: &Client) -> Result<String, WxError> {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            if let Some(t) = &st.token {
                if now < t.refresh_at || (st.refreshing && now < t.expires_at) {
                    // Fresh; or due but still valid while another caller refreshes it.
                    return Ok(t.value.clone());
                }
            }
            if !st.refreshing {
                break;
            }
            // One refresh in flight: wait for its result (bounded by its timeout).
            let wait = self.endpoint.timeout + Duration::from_secs(1);
            let (guard, timeout) = self
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            if timeout.timed_out() && st.refreshing {
                return Err(WxError::Timeout);
            }
        }
        st.refreshing = true;
        drop(st);
        let fetched = self.fetch(client);
        let mut st = self.lock();
        st.refreshing = false;
        let result = match fetched {
            Ok((value, expires_in)) => {
                let now = Instant::now();
                let lifetime = Duration::from_secs(expires_in);
                st.token = Some(Token {
                    value: value.clone(),
                    refresh_at: now + refresh_in(lifetime, self.margin),
                    expires_at: now + lifetime,
                });
                st.retry_at = None;
                tracing::debug!(expires_in, "WeChat access token refreshed");
                Ok(value)
            }
            Err(e) => Err(e),
        };
        drop(st);
        self.changed.notify_all();
        result
    }

    /// A token and its lifetime in seconds: from the cluster's Redis when one is there
    /// and its token is not due, else from WeChat.
    fn fetch(&self, client: &Client) -> Result<(String, u64), WxError> {
        let Some(target) = &self.shared else {
            return self.fetch_wechat(client);
        };
        match self.fetch_shared(target, client) {
            Ok(fetched) => fetched,
            Err(kind) => {
                tracing::warn!(
                    ?kind,
                    "redis unreachable; fetching the WeChat access token alone"
                );
                self.fetch_wechat(client)
            }
        }
    }

    /// One node at a time: the shared token if it is not due, else the fetch lock and a
    /// fetch, else wait for the node that holds the lock (a timeout if it takes longer
    /// than a fetch may). The shared value: `token\n<refresh at>\n<expires at>` (Unix ms),
    /// so every node refreshes on the same schedule as one alone.
    fn fetch_shared(
        &self,
        target: &crate::cluster::client::Target,
        client: &Client,
    ) -> Result<Result<(String, u64), WxError>, redis::ErrorKind> {
        use crate::cluster::keys;
        let e = &self.endpoint;
        let (key, lock) = (keys::wechat_token(&e.appid), keys::wechat_lock(&e.appid));
        let mut con = target.connect(e.timeout).map_err(|e| e.kind())?;
        let deadline = Instant::now() + e.timeout * 2 + Duration::from_secs(1);
        // The shared token if it is not due yet.
        let read = |con: &mut crate::cluster::client::Conn| -> Result<_, redis::ErrorKind> {
            let now = crate::clock::unix_ms();
            let stored: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query(con.like())
                .map_err(|e| e.kind())?;
            let parsed = stored.as_deref().and_then(|v| {
                let mut parts = v.split('\n');
                let token = parts.next()?;
                let refresh_at = parts.next()?.parse::<u64>().ok()?;
                let expires = parts.next()?.parse::<u64>().ok()?;
                Some((token.to_string(), refresh_at, expires))
            });
            Ok(parsed.filter(|&(_, refresh_at, _)| now < refresh_at).map(
                |(token, refresh_at, expires)| {
                    // This node refreshes when the fetching one would have.
                    let left = Duration::from_millis(expires.saturating_sub(now));
                    let due = Duration::from_millis(refresh_at - now);
                    (token, lifetime_for(left, due, self.margin))
                },
            ))
        };
        loop {
            if let Some(fresh) = read(&mut con)? {
                return Ok(Ok(fresh));
            }
            let hold_ms = (e.timeout * 2 + Duration::from_secs(1)).as_millis() as u64;
            let taken: Option<String> = redis::cmd("SET")
                .arg(&lock)
                .arg(std::process::id())
                .arg("NX")
                .arg("PX")
                .arg(hold_ms)
                .query(con.like())
                .map_err(|e| e.kind())?;
            if taken.is_some() {
                // Another node may have stored a fresh token between the read above and
                // taking the lock (it fetched and let the lock go meanwhile): use that one.
                let fetched = match read(&mut con) {
                    Ok(Some(fresh)) => Ok(fresh),
                    _ => {
                        let fetched = self.fetch_wechat(client);
                        if let Ok((token, lifetime)) = &fetched {
                            let now = crate::clock::unix_ms();
                            let life = Duration::from_secs(*lifetime);
                            let refresh_at = now + refresh_in(life, self.margin).as_millis() as u64;
                            let expires = now + lifetime * 1000;
                            let _: redis::RedisResult<()> = redis::cmd("SET")
                                .arg(&key)
                                .arg(format!("{token}\n{refresh_at}\n{expires}"))
                                .arg("PX")
                                .arg(lifetime * 1000)
                                .query(con.like());
                        }
                        fetched
                    }
                };
                let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&lock).query(con.like());
                return Ok(fetched);
            }
            if Instant::now() >= deadline {
                return Ok(Err(WxError::Timeout));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn fetch_wechat(&self, client: &Client) -> Result<(String, u64), WxError> {
        let e = &self.endpoint;
        let url = format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
            e.base,
            encode_component(&e.appid),
            encode_component(&e.secret),
        );
        let reply = client.request("GET", &url, None, e.timeout)?;
        parse_token(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> HttpReply {
        HttpReply {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn sessions_and_their_errors() {
        assert_eq!(
            parse_session(&reply(200, r#"{"openid":"o1","session_key":"k"}"#)).unwrap(),
            Session {
                openid: "o1".into(),
                unionid: None
            }
        );
        assert_eq!(
            parse_session(&reply(
                200,
                r#"{"openid":"o1","session_key":"k","unionid":"u1"}"#
            ))
            .unwrap()
            .unionid
            .as_deref(),
            Some("u1")
        );
        assert_eq!(
            parse_session(&reply(200, r#"{"errcode":40029,"errmsg":"invalid code"}"#)),
            Err(WxError::Code {
                errcode: 40029,
                errmsg: "invalid code".into()
            })
        );
        assert!(matches!(
            parse_session(&reply(200, r#"{"errcode":0}"#)),
            Err(WxError::BadReply(_))
        ));
        assert!(matches!(
            parse_session(&reply(502, "<html>")),
            Err(WxError::BadReply(_))
        ));
        assert!(matches!(
            parse_session(&reply(500, r#"{"openid":"o"}"#)),
            Err(WxError::BadReply(_))
        ));
    }

    #[test]
    fn tokens() {
        assert_eq!(
            parse_token(&reply(200, r#"{"access_token":"T","expires_in":7200}"#)).unwrap(),
            ("T".to_string(), 7200)
        );
        assert!(matches!(
            parse_token(&reply(200, r#"{"errcode":-1,"errmsg":"system busy"}"#)),
            Err(WxError::Code { errcode: -1, .. })
        ));
    }

    /// Eight callers at once with no token: one fetch, all get its token.
    #[test]
    fn one_refresh_in_flight() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = fetches.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let counted = counted.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    while r.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    // SeqCst: a test counter, read after the callers finish.
                    let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    std::thread::sleep(Duration::from_millis(200));
                    let body = format!(r#"{{"access_token":"t{n}","expires_in":7200}}"#);
                    let mut w = conn;
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        let cache = Arc::new(TokenCache::new(
            Endpoint {
                appid: "a".into(),
                secret: "s".into(),
                base,
                timeout: Duration::from_secs(5),
            },
            Duration::from_secs(300),
            None,
        ));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || cache.get(&Client::new(4096)))
            })
            .collect();
        for c in callers {
            assert_eq!(c.join().unwrap().unwrap(), "t1");
        }
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(cache.due_in() > Duration::from_secs(6800));
    }
}
