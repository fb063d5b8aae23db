//! One shard's application state and its main future.
//!
//! A [`Shard`] lives on its thread behind an `Rc`: the connections it accepted, its router,
//! its slot of the metrics registry and its mesh endpoint. [`Common`] is what every shard
//! reads and nobody writes after start (config, the metrics registry).
//!
//! [`run`] is the shard's life: accept on its own SO_REUSEPORT listener, serve the mesh,
//! measure loop lag; on stop, raise the shutdown signal (connections finish what they are
//! doing and close), stop accepting and wait until the last connection is gone.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};
use shards::local::{Notify, Signal};
use shards::ShardCtx;

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
    /// Open connections per client address (only kept when `server.max_conns_per_ip` is set).
    per_ip: RefCell<HashMap<IpAddr, u32>>,
    /// Accept-rate token bucket: (tokens, last refill).
    accept_tokens: Cell<(f64, Instant)>,
}

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

    /// Whether a new connection from `ip` may be served: the accept rate and the
    /// per-address cap (both off by default).
    fn admit(&self, ip: IpAddr) -> Result<(), &'static str> {
        let s = &self.config().server;
        if s.accept_rate_per_sec > 0 {
            let rate = s.accept_rate_per_sec as f64;
            let (tokens, last) = self.accept_tokens.get();
            let now = Instant::now();
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
            if tokens < 1.0 {
                self.accept_tokens.set((tokens, now));
                return Err("accept rate limit");
            }
            self.accept_tokens.set((tokens - 1.0, now));
        }
        if s.max_conns_per_ip > 0 {
            let per_shard = s.max_conns_per_ip.div_ceil(self.ctx.count as u32);
            if self.per_ip.borrow().get(&ip).copied().unwrap_or(0) >= per_shard {
                return Err("too many connections from this address");
            }
        }
        Ok(())
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

    fn observe(&self, status: u16) {
        self.metrics().observe_status(status);
    }

    fn refine(&self, head: &RequestHead, r: Response) -> Response {
        crate::api::cors::refine(&self.config().cors, head, r)
    }
}

/// Counts a connection open for as long as it lives.
struct ConnGuard(Rc<Shard>, Option<IpAddr>);

impl ConnGuard {
    fn new(shard: Rc<Shard>, ip: Option<IpAddr>) -> Self {
        shard.conns.set(shard.conns.get() + 1);
        shard
            .metrics()
            .conns_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(ip) = ip {
            *shard.per_ip.borrow_mut().entry(ip).or_insert(0) += 1;
        }
        Self(shard, ip)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let s = &self.0;
        if let Some(ip) = self.1 {
            let mut per_ip = s.per_ip.borrow_mut();
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
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
        per_ip: RefCell::new(HashMap::new()),
        accept_tokens: Cell::new((cfg.server.accept_rate_per_sec as f64, Instant::now())),
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
    monoio::spawn(accept_loop(shard.clone(), http, |shard, stream, peer| {
        crate::http::conn::serve(shard, stream, peer)
    }));
    match TcpListener::from_std(seed.rtmp) {
        Ok(rtmp) => {
            monoio::spawn(accept_loop(
                shard.clone(),
                rtmp,
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

/// Accepts until shutdown; each connection becomes a task counted by a [`ConnGuard`].
/// The listener is dropped when the loop ends, so the shard stops accepting at once.
/// `serve` may hand back a continuation (a connection taken over by WebSocket or a media
/// stream): it runs as a new task, so the first task's state is freed first.
async fn accept_loop<F, Fut>(shard: Rc<Shard>, listener: TcpListener, serve: F)
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
                if let Err(why) = shard.admit(peer.ip()) {
                    shard
                        .metrics()
                        .conns_refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(%peer, why, "connection refused");
                    // Closed at once: no task, no buffers for it.
                    drop(stream);
                    continue;
                }
                let tracked = (shard.config().server.max_conns_per_ip > 0).then(|| peer.ip());
                let guard = ConnGuard::new(shard.clone(), tracked);
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
