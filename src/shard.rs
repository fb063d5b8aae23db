//! One shard's life: wiring its services, accepting, serving the mesh, draining.
//!
//! [`run`] builds the shard's [`App`] (its engines, each with a narrow context; see
//! [`crate::app`]), then accepts on its own SO_REUSEPORT listeners (admission by
//! [`crate::admit`]: refused HTTP clients get a 503 with `Retry-After`), hands every mesh
//! message to its engine, and measures loop lag; on stop, it raises the shutdown signal
//! (connections finish what they are doing and close), stops accepting and waits until the
//! last connection is gone. Nothing here knows a room or a stream.

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};
use shards::local::{Notify, Signal};
use shards::ShardCtx;

use crate::admit::{Admission, Ticket};
use crate::app::{App, Common, ShardMsg};
use crate::metrics::Slot;
use crate::sock::Sock;

/// What each shard owns from birth.
pub struct Seed {
    pub http: StdTcpListener,
    pub rtmp: StdTcpListener,
    /// The HTTPS listener, when `server.https` is set.
    pub https: Option<StdTcpListener>,
}

/// The shard's doors: its open connections, admission, and refusals being answered.
struct Doors {
    id: usize,
    metrics: Slot,
    shutdown: Rc<Signal>,
    conns: Cell<usize>,
    all_closed: Notify,
    /// Per-address caps and rates, and the accept storm guard.
    admission: Admission,
    /// Refused connections being answered (a 503 to an HTTP client) right now.
    refusing: Cell<usize>,
}

/// Refused connections answered at once per shard; past it, a refused connection is
/// closed without an answer, so a flood of refusals costs no more than this many small
/// tasks (each holds a 1 KiB buffer for at most a few hundred milliseconds).
const MAX_REFUSING: usize = 256;

/// Counts a connection open for as long as it lives (and its address's share).
struct ConnGuard(Rc<Doors>, Ticket);

impl ConnGuard {
    fn new(doors: Rc<Doors>, ticket: Ticket) -> Self {
        doors.conns.set(doors.conns.get() + 1);
        doors
            .metrics
            .conns_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(doors, ticket)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let s = &self.0;
        s.admission.release(self.1.take());
        s.conns.set(s.conns.get() - 1);
        s.metrics
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
    // A room's flush writes to all its viewers in one system call where io_uring is in use.
    crate::outq::sendring::allow(ctx.driver == shards::DriverInUse::Uring);
    let shutdown = Signal::new();
    let app = App::new(
        ctx.id,
        ctx.mesh.clone(),
        &common,
        crate::routes::router(cfg),
        shutdown.clone(),
    );
    let doors = Rc::new(Doors {
        id: ctx.id,
        metrics: app.metrics.clone(),
        shutdown: shutdown.clone(),
        conns: Cell::new(0),
        all_closed: Notify::new(),
        admission: Admission::new(&cfg.server, ctx.count),
        refusing: Cell::new(0),
    });

    {
        let app = app.clone();
        monoio::spawn(async move {
            let mesh = app.mesh.clone();
            mesh.serve(|from, msg| app.handle(from, msg)).await
        });
    }
    monoio::spawn(measure_loop_lag(doors.clone()));
    app.danmaku.spawn_tasks();
    app.live.spawn_tasks();

    let http = match TcpListener::from_std(seed.http) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(shard = ctx.id, error = %e, "cannot register the HTTP listener");
            return;
        }
    };
    {
        let app = app.clone();
        monoio::spawn(accept_loop(
            doors.clone(),
            http,
            Refused::Answer503,
            move |stream, peer| crate::http::conn::serve(app.clone(), Sock::Tcp(stream), peer),
        ));
    }
    if let (Some(https), Some(front)) = (seed.https, common.tls.clone()) {
        match TcpListener::from_std(https) {
            Ok(https) => {
                let app = app.clone();
                monoio::spawn(accept_loop(
                    doors.clone(),
                    https,
                    Refused::Close,
                    move |stream, peer| serve_tls(app.clone(), front.clone(), stream, peer),
                ));
            }
            Err(e) => {
                tracing::error!(shard = ctx.id, error = %e, "cannot register the HTTPS listener")
            }
        }
    }
    match TcpListener::from_std(seed.rtmp) {
        Ok(rtmp) => {
            let live = app.live.clone();
            monoio::spawn(accept_loop(
                doors.clone(),
                rtmp,
                Refused::Close,
                move |stream, peer| {
                    let live = live.clone();
                    async move {
                        crate::live::rtmp_conn::serve(live, stream, peer).await;
                        None
                    }
                },
            ));
        }
        Err(e) => {
            tracing::error!(shard = ctx.id, error = %e, "cannot register the RTMP listener")
        }
    }

    ctx.stop_signal().wait().await;
    tracing::debug!(shard = ctx.id, open = doors.conns.get(), "shard draining");
    shutdown.raise();
    app.danmaku.close_all();
    // Half the bound for connections to finish what is queued; then writes still stuck on
    // slow peers are abandoned so the rest of the bound is left for closing.
    let half = Duration::from_millis(cfg.server.shutdown_timeout_ms / 2);
    let drained = monoio::time::timeout(half, async {
        while doors.conns.get() > 0 {
            doors.all_closed.notified().await;
        }
    })
    .await;
    if drained.is_err() {
        app.danmaku.abort_all();
        while doors.conns.get() > 0 {
            doors.all_closed.notified().await;
        }
    }
    tracing::debug!(shard = ctx.id, "shard stopped");
}

/// An HTTPS connection: the handshake (bounded by the head timeout), then the inside of
/// the connection served by the HTTP driver like any other (see [`crate::tls`]).
async fn serve_tls(
    app: Rc<App>,
    front: Arc<crate::tls::TlsFront>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<crate::http::Handover> {
    let limits = crate::http::conn::Service::limits(&*app);
    let (handshake, write) = (limits.header_timeout, limits.write_timeout);
    let done = crate::tls::accept(&front, stream, handshake, write).await;
    let slot = match &done {
        Ok(_) => 0,
        Err(e) => e.index(),
    };
    app.metrics.tls_handshakes[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match done {
        Ok(inside) => crate::http::conn::serve(app, inside, peer).await,
        Err(e) => {
            tracing::debug!(%peer, result = e.label(), "TLS handshake failed");
            None
        }
    }
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
async fn accept_loop<F, Fut>(doors: Rc<Doors>, listener: TcpListener, refused: Refused, serve: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + 'static,
    Fut: std::future::Future<Output = Option<crate::http::Handover>> + 'static,
{
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = doors.shutdown.wait() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                doors
                    .metrics
                    .conns_accepted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let ticket = match doors.admission.admit(peer.ip(), Instant::now()) {
                    Ok(ticket) => ticket,
                    Err(why) => {
                        doors.metrics.conns_refused[why as usize]
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(%peer, reason = why.label(), "connection refused");
                        refuse(&doors, stream, refused, why);
                        continue;
                    }
                };
                let guard = ConnGuard::new(doors.clone(), ticket);
                let conn = serve(stream, peer);
                monoio::spawn(async move {
                    if let Some(next) = conn.await {
                        monoio::spawn(next.start(crate::http::Held::new(guard)));
                    }
                });
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning on accept.
                tracing::warn!(shard = doors.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Tells a refused HTTP client why (bounded: see [`MAX_REFUSING`]), or just closes.
fn refuse(doors: &Rc<Doors>, stream: TcpStream, refused: Refused, why: crate::admit::Refusal) {
    if matches!(refused, Refused::Close) || doors.refusing.get() >= MAX_REFUSING {
        drop(stream);
        return;
    }
    doors.refusing.set(doors.refusing.get() + 1);
    let doors = doors.clone();
    monoio::spawn(async move {
        crate::http::conn::refuse(Sock::Tcp(stream), why.retry_after_secs(), why.message()).await;
        doors.refusing.set(doors.refusing.get() - 1);
    });
}

/// Every 100 ms, records how much later than asked the shard's timer fired: the time the
/// loop spent on other work first.
async fn measure_loop_lag(doors: Rc<Doors>) {
    const TICK: Duration = Duration::from_millis(100);
    while !doors.shutdown.is_raised() {
        let asked = Instant::now();
        monoio::time::sleep(TICK).await;
        let lag = asked.elapsed().saturating_sub(TICK);
        doors.metrics.observe_lag(lag.as_micros() as u64);
    }
}
