//! One shard's application state and its main future.
//!
//! A [`Shard`] lives on its thread behind an `Rc`: the connections it accepted, its router,
//! its slot of the metrics registry and its mesh endpoint. [`Common`] is what every shard
//! reads and nobody writes after start (config, the metrics registry).
//!
//! [`run`] is the shard's life: accept on its own SO_REUSEPORT listener (admission by
//! [`crate::admit`]: refused HTTP clients get a 503 with `Retry-After`), serve the mesh,
//! measure loop lag; on stop, raise the shutdown signal (connections finish what they are
//! doing and close), stop accepting and wait until the last connection is gone.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};
use shards::local::{Notify, Signal};
use shards::ShardCtx;

use crate::admit::{Admission, Ticket};
use crate::config::Config;
use crate::danmaku::Danmaku;
use crate::http::codec::{HeadLimits, RequestHead};
use crate::http::conn::{HttpLimits, Service};
use crate::http::{Response, Router};
use crate::metrics::{Metrics, ShardMetrics};

/// Messages between shards. Each capability adds its variants; every variant carries
/// owned data or refcounted `Bytes`, never a reference into another shard.
#[derive(Debug)]
pub enum ShardMsg {
    Danmaku(crate::danmaku::Msg),
    Live(crate::live::Msg),
    /// Run a function on the receiving shard ([`Shard::run_on`]): for queries that are
    /// not on a per-message path (the API asking a room's home shard for its state).
    Run(Task),
}

/// A function to run on another shard. It owns what it captured (`Send`), and answers
/// through a channel of its own.
pub struct Task(TaskFn);

type TaskFn = Box<dyn FnOnce(&Rc<Shard>) + Send>;

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Task")
    }
}

/// Read-only state shared by all shards.
pub struct Common {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub danmaku: Arc<crate::danmaku::Shared>,
    pub live: Arc<crate::live::Settings>,
    pub store: crate::store::StoreHandle,
    /// Outbound HTTP calls (WeChat, hooks), made off the shards.
    pub outbound: crate::outbound::OutboundHandle,
    /// What the REST API shares (keys, files, the WeChat client).
    pub api: crate::api::Shared,
    /// The revocations in force when the server started (each shard copies them).
    pub revoked: crate::auth::Revoked,
}

/// What each shard owns from birth.
pub struct Seed {
    pub http: StdTcpListener,
    pub rtmp: StdTcpListener,
}

pub struct Shard {
    pub ctx: ShardCtx<ShardMsg>,
    pub common: Arc<Common>,
    pub danmaku: Danmaku,
    pub live: crate::live::Live,
    router: Router<Shard>,
    limits: HttpLimits,
    shutdown: Rc<Signal>,
    conns: Cell<usize>,
    all_closed: Notify,
    /// Per-address caps and rates, and the accept storm guard.
    admission: Admission,
    /// Refused connections being answered (a 503 to an HTTP client) right now.
    refusing: Cell<usize>,
    /// This shard's copy of the token revocations: every token check looks here, never
    /// at the store or another shard.
    revoked: RefCell<crate::auth::Revoked>,
}

/// Refused connections answered at once per shard; past it, a refused connection is
/// closed without an answer, so a flood of refusals costs no more than this many small
/// tasks (each holds a 1 KiB buffer for at most a few hundred milliseconds).
const MAX_REFUSING: usize = 256;

impl Shard {
    pub fn id(&self) -> usize {
        self.ctx.id
    }

    pub fn config(&self) -> &Config {
        &self.common.config
    }

    pub fn metrics(&self) -> &ShardMetrics {
        &self.common.metrics.shards[self.ctx.id]
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_raised()
    }

    /// Raised when the shard begins its graceful shutdown (long-lived connections end).
    pub fn shutdown_signal(&self) -> &Signal {
        &self.shutdown
    }

    /// Runs `f` on shard `to` and returns its result — seastar's `submit_to` with a
    /// function. `None` if the mesh refused the message (full) or the shard is gone.
    /// One allocation and one cross-shard round trip per call: for control paths.
    pub async fn run_on<T, F>(self: &Rc<Self>, to: usize, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&Rc<Shard>) -> T + Send + 'static,
    {
        if to == self.id() {
            return Some(f(self));
        }
        let (tx, rx) = futures_channel::oneshot::channel();
        let task = Task(Box::new(move |s| {
            let _ = tx.send(f(s));
        }));
        self.ctx.mesh.submit_to(to, ShardMsg::Run(task)).ok()?;
        rx.await.ok()
    }

    /// Verifies a login token: signature and claims, then this shard's revocations.
    pub fn verify_token(
        &self,
        token: &str,
    ) -> Result<crate::auth::Claims, crate::auth::TokenError> {
        let claims = self
            .common
            .danmaku
            .jwt
            .verify(token, crate::auth::now_unix())?;
        if self.revoked.borrow().refuses(&claims) {
            return Err(crate::auth::TokenError::Revoked);
        }
        Ok(claims)
    }

    /// Applies a committed revocation here: later checks refuse what it names, and this
    /// shard's WebSocket connections that used such a token are closed.
    pub fn apply_revocation(self: &Rc<Self>, rev: &crate::auth::Revocation) {
        self.revoked.borrow_mut().apply(rev);
        self.danmaku.close_revoked(rev);
    }

    /// Drops revocations that expired (the danmaku sweep calls it).
    pub fn sweep_revocations(&self, now: u64) {
        self.revoked.borrow_mut().sweep(now);
    }

    fn handle_msg(self: &Rc<Self>, from: usize, msg: ShardMsg) {
        match msg {
            ShardMsg::Danmaku(m) => self.danmaku.handle(self, from, m),
            ShardMsg::Live(m) => self.live.handle(self, from, m),
            ShardMsg::Run(Task(f)) => f(self),
        }
    }
}

impl Service for Shard {
    fn router(&self) -> &Router<Self> {
        &self.router
    }

    fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    fn shutdown(&self) -> &Signal {
        &self.shutdown
    }

    fn observe(&self, status: u16, route: Option<&'static str>, elapsed: Duration) {
        let m = self.metrics();
        m.observe_status(status);
        m.observe_http(self.common.metrics.route_index(route), elapsed);
    }

    fn refine(&self, head: &RequestHead, r: Response) -> Response {
        crate::api::cors::refine(&self.config().cors, head, r)
    }
}

/// Counts a connection open for as long as it lives (and its address's share).
struct ConnGuard(Rc<Shard>, Ticket);

impl ConnGuard {
    fn new(shard: Rc<Shard>, ticket: Ticket) -> Self {
        shard.conns.set(shard.conns.get() + 1);
        shard
            .metrics()
            .conns_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(shard, ticket)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let s = &self.0;
        s.admission.release(self.1.take());
        s.conns.set(s.conns.get() - 1);
        s.metrics()
            .conns_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if s.conns.get() == 0 {
            s.all_closed.notify();
        }
    }
}

/// The shard's main future.
pub async fn run(ctx: ShardCtx<ShardMsg>, seed: Seed, common: Arc<Common>) {
    let cfg = &common.config;
    let limits = HttpLimits {
        head: HeadLimits {
            max_header_bytes: cfg.http.max_header_bytes,
            max_headers: cfg.http.max_headers,
        },
        max_body: cfg.http.max_body_bytes,
        body_budget: cfg.http.body_budget_bytes,
        header_timeout: Duration::from_millis(cfg.http.header_timeout_ms),
        body_timeout: Duration::from_millis(cfg.http.body_timeout_ms),
        idle_timeout: Duration::from_millis(cfg.http.idle_timeout_ms),
        write_timeout: Duration::from_millis(cfg.http.write_timeout_ms),
    };
    let shard = Rc::new(Shard {
        router: crate::routes::router(cfg),
        limits,
        shutdown: Signal::new(),
        conns: Cell::new(0),
        all_closed: Notify::new(),
        admission: Admission::new(&cfg.server, ctx.count),
        refusing: Cell::new(0),
        revoked: RefCell::new(common.revoked.clone()),
        common: common.clone(),
        danmaku: Danmaku::new(),
        live: crate::live::Live::new(),
        ctx,
    });

    {
        let shard = shard.clone();
        monoio::spawn(async move {
            let mesh = shard.ctx.mesh.clone();
            mesh.serve(|from, msg| shard.handle_msg(from, msg)).await
        });
    }
    monoio::spawn(measure_loop_lag(shard.clone()));
    Danmaku::spawn_tasks(&shard);
    crate::live::Live::spawn_tasks(&shard);

    let http = match TcpListener::from_std(seed.http) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(shard = shard.id(), error = %e, "cannot register the HTTP listener");
            return;
        }
    };
    monoio::spawn(accept_loop(
        shard.clone(),
        http,
        Refused::Answer503,
        crate::http::conn::serve,
    ));
    match TcpListener::from_std(seed.rtmp) {
        Ok(rtmp) => {
            monoio::spawn(accept_loop(
                shard.clone(),
                rtmp,
                Refused::Close,
                |shard, stream, peer| async move {
                    crate::live::rtmp_conn::serve(shard, stream, peer).await;
                    None
                },
            ));
        }
        Err(e) => {
            tracing::error!(shard = shard.id(), error = %e, "cannot register the RTMP listener")
        }
    }

    shard.ctx.stop_signal().wait().await;
    tracing::debug!(
        shard = shard.id(),
        open = shard.conns.get(),
        "shard draining"
    );
    shard.shutdown.raise();
    shard.danmaku.close_all();
    // Half the bound for connections to finish what is queued; then writes still stuck on
    // slow peers are abandoned so the rest of the bound is left for closing.
    let half = Duration::from_millis(cfg.server.shutdown_timeout_ms / 2);
    let drained = monoio::time::timeout(half, async {
        while shard.conns.get() > 0 {
            shard.all_closed.notified().await;
        }
    })
    .await;
    if drained.is_err() {
        shard.danmaku.abort_all();
        while shard.conns.get() > 0 {
            shard.all_closed.notified().await;
        }
    }
    tracing::debug!(shard = shard.id(), "shard stopped");
}

/// What a listener does with a connection it refuses.
#[derive(Clone, Copy)]
enum Refused {
    /// HTTP: read the request head briefly and answer 503 with `Retry-After`.
    Answer503,
    /// RTMP has no way to say why before its handshake: close.
    Close,
}

/// Accepts until shutdown; each admitted connection becomes a task counted by a
/// [`ConnGuard`]. The listener is dropped when the loop ends, so the shard stops accepting
/// at once. `serve` may hand back a continuation (a connection taken over by WebSocket or a
/// media stream): it runs as a new task, so the first task's state is freed first.
async fn accept_loop<F, Fut>(shard: Rc<Shard>, listener: TcpListener, refused: Refused, serve: F)
where
    F: Fn(Rc<Shard>, TcpStream, SocketAddr) -> Fut + 'static,
    Fut: std::future::Future<Output = Option<crate::http::LocalBoxFuture<'static, ()>>> + 'static,
{
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = shard.shutdown.wait() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                shard
                    .metrics()
                    .conns_accepted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let ticket = match shard.admission.admit(peer.ip(), Instant::now()) {
                    Ok(ticket) => ticket,
                    Err(why) => {
                        shard.metrics().conns_refused[why as usize]
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(%peer, reason = why.label(), "connection refused");
                        refuse(&shard, stream, refused, why);
                        continue;
                    }
                };
                let guard = ConnGuard::new(shard.clone(), ticket);
                let conn = serve(shard.clone(), stream, peer);
                monoio::spawn(async move {
                    if let Some(next) = conn.await {
                        monoio::spawn(async move {
                            next.await;
                            drop(guard);
                        });
                    }
                });
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning on accept.
                tracing::warn!(shard = shard.id(), error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Tells a refused HTTP client why (bounded: see [`MAX_REFUSING`]), or just closes.
fn refuse(shard: &Rc<Shard>, stream: TcpStream, refused: Refused, why: crate::admit::Refusal) {
    if matches!(refused, Refused::Close) || shard.refusing.get() >= MAX_REFUSING {
        drop(stream);
        return;
    }
    shard.refusing.set(shard.refusing.get() + 1);
    let shard = shard.clone();
    monoio::spawn(async move {
        crate::http::conn::refuse(stream, why.retry_after_secs(), why.message()).await;
        shard.refusing.set(shard.refusing.get() - 1);
    });
}

/// Every 100 ms, records how much later than asked the shard's timer fired: the time the
/// loop spent on other work first.
async fn measure_loop_lag(shard: Rc<Shard>) {
    const TICK: Duration = Duration::from_millis(100);
    while !shard.shutting_down() {
        let asked = Instant::now();
        monoio::time::sleep(TICK).await;
        let lag = asked.elapsed().saturating_sub(TICK);
        shard.metrics().observe_lag(lag.as_micros() as u64);
    }
}
