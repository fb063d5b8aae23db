//! Outbound HTTP: calls from the server to other services (WeChat login, publish hooks),
//! made on a small pool of threads of their own, never on a shard's event loop.
//!
//! A shard asks with [`OutboundHandle::get`], [`OutboundHandle::post_json`] or
//! [`OutboundHandle::run`]; the request goes on a bounded channel (a full channel is
//! [`OutboundError::Busy`] at once, so a slow peer can never back up into a shard), a pool
//! thread does the blocking call with `ureq` under the caller's timeout, and the answer comes
//! back through a `futures_channel::oneshot`, whose completion wakes the waiting task on its
//! shard. Every call has a deadline and every response body a size cap.
//!
//! Why threads and not async I/O on the shards: these calls are rare (a login, a publish),
//! may hit DNS and TLS, and must not add latency to the connections a shard serves. A few
//! blocking threads are the simplest thing that cannot stall a shard.
//!
//! Error texts never carry a secret: transport errors quote the URL, whose query may
//! hold an AppSecret or a token, so every text an [`OutboundError`] carries is passed
//! through [`crate::logging::redact`] where it is made.
//!
//! The receiving end of the channel is shared by the pool threads behind a `Mutex`: that
//! lock is taken only by pool threads, never by a shard.

use std::future::Future;
use std::io::Read as _;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

/// Settings of the pool, from `[outbound]`.
#[derive(Clone, Debug)]
pub struct OutboundSettings {
    pub threads: usize,
    /// Calls waiting for a thread at most; past it, callers get `Busy`.
    pub queue: usize,
    /// Largest response body read; a larger one is `TooLarge`.
    pub max_response_bytes: usize,
}

impl OutboundSettings {
    /// Here rather than in `config`, so that `config` (which `admit` and `metrics` reach)
    /// does not import back into this pool.
    pub fn from_config(c: &crate::config::OutboundConfig) -> Self {
        OutboundSettings {
            threads: c.threads,
            queue: c.queue,
            max_response_bytes: c.max_response_bytes,
        }
    }
}

/// A response: status and body (any status; the caller decides what is an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboundError {
    /// Too many calls waiting: retry later.
    Busy,
    /// The pool has stopped (shutting down).
    Closed,
    /// No complete answer within the timeout.
    Timeout,
    /// Could not connect (DNS, refused, TLS).
    Connect(String),
    /// The response body is over `max_response_bytes`.
    TooLarge,
    /// The URL is not a valid http(s) URL.
    BadUrl(String),
    /// Anything else on the wire (reset, malformed response).
    Io(String),
}

impl std::fmt::Display for OutboundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutboundError::Busy => f.write_str("outbound calls are busy"),
            OutboundError::Closed => f.write_str("outbound calls are stopped"),
            OutboundError::Timeout => f.write_str("timed out"),
            OutboundError::Connect(e) => write!(f, "cannot connect: {e}"),
            OutboundError::TooLarge => f.write_str("response too large"),
            OutboundError::BadUrl(e) => write!(f, "bad URL: {e}"),
            OutboundError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A blocking HTTP client: what pool threads (and jobs run on them) call.
pub struct Client {
    agent: ureq::Agent,
    max_response_bytes: usize,
}

impl Client {
    pub fn new(max_response_bytes: usize) -> Self {
        let agent = ureq::AgentBuilder::new()
            // Hooks and APIs answer directly; following redirects would let a configured
            // URL send us somewhere else.
            .redirects(0)
            .user_agent(concat!("liveshard/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent,
            max_response_bytes,
        }
    }

    /// One request, blocking, bounded by `timeout` from connect to the last body byte.
    /// Its duration goes to `liveshard_outbound_request_duration_seconds` (every outbound
    /// call, pool or token keeper, passes here).
    pub fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<(&str, &[u8])>,
        timeout: Duration,
    ) -> Result<HttpReply, OutboundError> {
        let started = Instant::now();
        let result = self.request_untimed(method, url, body, timeout);
        crate::metrics::OUTBOUND_TIMES[call_kind(url)]
            .observe_shared(&crate::metrics::histogram::OUTBOUND, started.elapsed());
        result
    }

    fn request_untimed(
        &self,
        method: &str,
        url: &str,
        body: Option<(&str, &[u8])>,
        timeout: Duration,
    ) -> Result<HttpReply, OutboundError> {
        let deadline = Instant::now() + timeout;
        let req = self.agent.request(method, url).timeout(timeout);
        let result = match body {
            Some((content_type, bytes)) => req.set("Content-Type", content_type).send_bytes(bytes),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(map_transport(&t)),
        };
        let status = resp.status();
        let mut body = Vec::new();
        let limit = self.max_response_bytes as u64 + 1;
        match resp.into_reader().take(limit).read_to_end(&mut body) {
            Ok(_) if body.len() > self.max_response_bytes => Err(OutboundError::TooLarge),
            Ok(_) => Ok(HttpReply { status, body }),
            Err(_) if Instant::now() >= deadline => Err(OutboundError::Timeout),
            Err(e) if is_timeout(&e) => Err(OutboundError::Timeout),
            Err(e) => Err(OutboundError::Io(redacted(&e.to_string()))),
        }
    }
}

/// Which [`crate::metrics::OUTBOUND_KINDS`] a call is, from the WeChat API paths it uses
/// (`/sns/jscode2session` logs in, `/cgi-bin/…token` fetches the access token); anything
/// else is a publish hook, the only other caller.
fn call_kind(url: &str) -> usize {
    let path = url.split('?').next().unwrap_or(url);
    if path.ends_with("/sns/jscode2session") {
        1
    } else if path.contains("/cgi-bin/") && path.ends_with("token") {
        2
    } else {
        0
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

fn map_transport(t: &ureq::Transport) -> OutboundError {
    use std::error::Error as _;
    let timed_out = t
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(is_timeout);
    if timed_out {
        return OutboundError::Timeout;
    }
    // ureq's text starts with the whole URL (query included).
    let text = redacted(&t.to_string());
    match t.kind() {
        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => OutboundError::BadUrl(text),
        ureq::ErrorKind::Dns | ureq::ErrorKind::ConnectionFailed => OutboundError::Connect(text),
        _ => OutboundError::Io(text),
    }
}

fn redacted(text: &str) -> String {
    crate::logging::redact(text).into_owned()
}

type Reply<T> = oneshot::Sender<Result<T, OutboundError>>;

enum Job {
    Request {
        method: &'static str,
        url: String,
        body: Option<(&'static str, Vec<u8>)>,
        timeout: Duration,
        reply: Reply<HttpReply>,
    },
    /// A blocking function to run on a pool thread with its client.
    Run(Box<dyn FnOnce(&Client) + Send>),
    Stop,
}

/// The shards' side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct OutboundHandle {
    tx: SyncSender<Job>,
}

impl OutboundHandle {
    fn submit(&self, job: Job) -> Result<(), OutboundError> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => OutboundError::Busy,
            TrySendError::Disconnected(_) => OutboundError::Closed,
        })
    }

    fn call(
        &self,
        method: &'static str,
        url: &str,
        body: Option<(&'static str, Vec<u8>)>,
        timeout: Duration,
    ) -> impl Future<Output = Result<HttpReply, OutboundError>> + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.submit(Job::Request {
            method,
            url: url.to_string(),
            body,
            timeout,
            reply,
        });
        async move {
            sent?;
            rx.await.unwrap_or(Err(OutboundError::Closed))
        }
    }

    /// `GET url`, answered within `timeout`.
    pub fn get(
        &self,
        url: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<HttpReply, OutboundError>> + 'static {
        self.call("GET", url, None, timeout)
    }

    /// `POST url` with a JSON body, answered within `timeout`.
    pub fn post_json<T: serde::Serialize + ?Sized>(
        &self,
        url: &str,
        body: &T,
        timeout: Duration,
    ) -> impl Future<Output = Result<HttpReply, OutboundError>> + 'static {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.call("POST", url, Some(("application/json", bytes)), timeout)
    }

    /// Runs a blocking function on a pool thread (for clients that keep state there, such
    /// as a cached access token) and returns its result.
    pub fn run<T, F>(&self, f: F) -> impl Future<Output = Result<T, OutboundError>> + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Client) -> T + Send + 'static,
    {
        let (reply, rx) = oneshot::channel::<Result<T, OutboundError>>();
        let sent = self.submit(Job::Run(Box::new(move |client| {
            let _ = reply.send(Ok(f(client)));
        })));
        async move {
            sent?;
            rx.await.unwrap_or(Err(OutboundError::Closed))
        }
    }
}

/// The pool: started before the shards, joined after them.
pub struct Outbound {
    handle: OutboundHandle,
    threads: Vec<JoinHandle<()>>,
}

impl Outbound {
    pub fn start(settings: &OutboundSettings) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..settings.threads.max(1) {
            let rx = rx.clone();
            let client = Client::new(settings.max_response_bytes);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("outbound-{i}"))
                    .spawn(move || work(&rx, &client))?,
            );
        }
        Ok(Self {
            handle: OutboundHandle { tx },
            threads,
        })
    }

    pub fn handle(&self) -> OutboundHandle {
        self.handle.clone()
    }

    /// Stops the threads once the calls queued so far are done (each is bounded by its own
    /// timeout); waits up to `timeout`. Call once the shards have stopped.
    pub fn join(self, timeout: Duration) {
        for _ in &self.threads {
            // Blocking is fine here: this is the main thread, not a shard.
            let _ = self.handle.tx.send(Job::Stop);
        }
        crate::threads::join_within(self.threads, timeout, "outbound call");
    }
}

fn work(rx: &Mutex<Receiver<Job>>, client: &Client) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        match job {
            Err(_) | Ok(Job::Stop) => return,
            Ok(Job::Request {
                method,
                url,
                body,
                timeout,
                reply,
            }) => {
                let result = client.request(
                    method,
                    &url,
                    body.as_ref().map(|(t, b)| (*t, &b[..])),
                    timeout,
                );
                if let Err(e) = &result {
                    let url = crate::logging::redact(&url);
                    tracing::debug!(%method, %url, error = %e, "outbound call failed");
                }
                let _ = reply.send(result);
            }
            Ok(Job::Run(f)) => {
                // A failing job must not take a pool thread with it; its caller sees the
                // reply slot dropped (`Closed`).
                let run = std::panic::AssertUnwindSafe(|| f(client));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!("outbound job panicked");
                }
            }
        }
    }
}

/// Percent-encodes a query-string component (RFC 3986 unreserved characters stay).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_names_the_url_without_its_secret() {
        // A closed port: ureq's error quotes the URL.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/cgi-bin/token?appid=wx1&secret=TopSecret1");
        let e = Client::new(1024)
            .request("GET", &url, None, Duration::from_secs(2))
            .unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("TopSecret1"), "{text}");
        assert!(text.contains("secret=***"), "{text}");
    }

    #[test]
    fn calls_are_labelled_by_the_service_they_reach() {
        assert_eq!(call_kind("http://127.0.0.1:9/hooks/publish"), 0);
        assert_eq!(
            call_kind("https://api.weixin.qq.com/sns/jscode2session?appid=a&js_code=c"),
            1
        );
        assert_eq!(
            call_kind("https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential"),
            2
        );
        assert_eq!(
            call_kind("https://api.weixin.qq.com/cgi-bin/stable_token"),
            2
        );
    }

    #[test]
    fn components_are_encoded() {
        assert_eq!(encode_component("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode_component("Az09-_.~"), "Az09-_.~");
    }
}
