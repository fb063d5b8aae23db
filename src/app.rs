//! One shard's services, wired: the danmaku engine, the live engine and the API, each built
//! once per shard with its own narrow context (seastar's `sharded<Service>`), and [`App`],
//! the bundle the HTTP front serves.
//!
//! This is where the engines meet, and the only place: [`ShardMsg`] carries each engine's
//! messages on the rings, [`Typed`] turns the shard's mesh into each engine's
//! [`crate::port::Port`], [`Rooms`] is how the live engine tells a room it went live
//! (without naming the danmaku engine), and the store's commits reach the danmaku engine
//! through the sink made by [`commit_sink`]. Dependencies point one way: the API uses the
//! engines; live uses the [`crate::live::RoomEvents`] it is given; danmaku uses neither.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use shards::local::Signal;

use crate::api::Api;
use crate::config::Config;
use crate::danmaku::{Danmaku, PostBody};
use crate::http::codec::RequestHead;
use crate::http::conn::{HttpLimits, Service};
use crate::http::{Response, Router};
use crate::live::{Live, StreamId};
use crate::metrics::{Metrics, Slot};

/// Messages between shards: each engine's own, moved through the SPSC rings. Every variant
/// carries owned data or refcounted `Bytes`, never a reference into another shard.
#[derive(Debug)]
pub enum ShardMsg {
    Danmaku(crate::danmaku::Msg),
    Live(crate::live::Msg),
}

/// Read-only state shared by all shards, built before they start.
pub struct Common {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub danmaku: Arc<crate::danmaku::Shared>,
    pub live: Arc<crate::live::Settings>,
    pub store: crate::store::StoreHandle,
    /// Outbound HTTP calls (WeChat, hooks), made off the shards.
    pub outbound: crate::outbound::OutboundHandle,
    /// What the REST API shares (keys, files, the WeChat client).
    pub api: Arc<crate::api::Shared>,
    /// Signs and checks login tokens.
    pub jwt: Arc<crate::auth::Jwt>,
    /// The revocations in force when the server started (each shard copies them).
    pub revoked: crate::auth::Revoked,
    /// The HTTPS listener's certificates and TLS settings (`server.https`), if any.
    pub tls: Option<Arc<crate::tls::TlsFront>>,
    /// The cluster threads (`cluster.redis`), if the node is one of several.
    pub cluster: Option<crate::cluster::ClusterHandle>,
}

/// The shard's mesh as one engine's port: wraps that engine's messages in [`ShardMsg`].
pub struct Typed<M> {
    mesh: Rc<shards::Mesh<ShardMsg>>,
    wrap: fn(M) -> ShardMsg,
    unwrap: fn(ShardMsg) -> Option<M>,
}

impl<M> crate::port::Mesh<M> for Typed<M> {
    fn me(&self) -> usize {
        self.mesh.me()
    }

    fn shards(&self) -> usize {
        self.mesh.shards()
    }

    fn submit_to(&self, to: usize, msg: M) -> Result<(), M> {
        self.mesh.submit_to(to, (self.wrap)(msg)).map_err(|full| {
            (self.unwrap)(full.0).expect("a refused message comes back as it went in")
        })
    }
}

fn port<M: 'static>(
    mesh: &Rc<shards::Mesh<ShardMsg>>,
    wrap: fn(M) -> ShardMsg,
    unwrap: fn(ShardMsg) -> Option<M>,
) -> crate::port::Port<M> {
    crate::port::Port::new(Rc::new(Typed {
        mesh: mesh.clone(),
        wrap,
        unwrap,
    }))
}

/// How the live engine's room events reach the danmaku engine: a `live` item posted to the
/// room (its home shard assigns it an id like any post), and the stream clock.
struct Rooms(Rc<Danmaku>);

impl crate::live::RoomEvents for Rooms {
    fn live(&self, room: &StreamId, live: bool) {
        self.0.system_post(room.clone(), PostBody::Live { live });
    }

    fn clock(&self, room: &StreamId, media_ms: Option<u64>) {
        self.0.media_clock(room.clone(), media_ms);
    }
}

/// Where the store thread sends each group commit's outcome: the owning shard's danmaku
/// engine, through that shard's `Remote`.
pub fn commit_sink(remotes: Vec<shards::Remote<ShardMsg>>) -> crate::store::CommitSink {
    Box::new(move |shard, committed| {
        if let Some(r) = remotes.get(shard) {
            let _ = r.send(ShardMsg::Danmaku(crate::danmaku::Msg::Committed(committed)));
        }
    })
}

/// Where the cluster threads send what they hear: the room's home shard's danmaku engine,
/// through that shard's `Remote`.
pub fn cluster_sink(remotes: Vec<shards::Remote<ShardMsg>>) -> crate::cluster::Sink {
    Arc::new(move |shard, event| {
        let Some(r) = remotes.get(shard) else { return };
        let msg = match event {
            // A room closed on another node: its stream's publisher, if it is here.
            crate::cluster::Event::StopStream(room) => {
                let call = crate::port::Call::new(move |l: &Rc<Live>| l.stop(&room));
                ShardMsg::Live(crate::live::Msg::Call(call))
            }
            event => ShardMsg::Danmaku(crate::danmaku::Msg::Cluster(event)),
        };
        let _ = r.send(msg);
    })
}

/// One shard's services and what its HTTP front needs.
pub struct App {
    pub id: usize,
    pub config: Arc<Config>,
    pub metrics: Slot,
    pub mesh: Rc<shards::Mesh<ShardMsg>>,
    pub danmaku: Rc<Danmaku>,
    pub live: Rc<Live>,
    pub api: Rc<Api>,
    router: Router<App>,
    limits: HttpLimits,
    shutdown: Rc<Signal>,
}

impl App {
    /// Builds the shard's engines, each with its narrow context.
    pub fn new(
        id: usize,
        mesh: Rc<shards::Mesh<ShardMsg>>,
        common: &Common,
        router: Router<App>,
        shutdown: Rc<Signal>,
    ) -> Rc<Self> {
        let cfg = &common.config;
        let metrics = Slot::new(common.metrics.clone(), id);
        let tokens = Rc::new(crate::auth::Tokens::new(
            common.jwt.clone(),
            common.revoked.clone(),
        ));
        let danmaku = Danmaku::new(crate::danmaku::engine::Ctx {
            port: port(&mesh, ShardMsg::Danmaku, |m| match m {
                ShardMsg::Danmaku(m) => Some(m),
                _ => None,
            }),
            shared: common.danmaku.clone(),
            store: common.store.clone(),
            metrics: metrics.clone(),
            tokens: tokens.clone(),
            shutdown: shutdown.clone(),
            clock: Rc::new(crate::clock::SystemClock),
            cluster: common.cluster.clone(),
        });
        let live = Live::new(crate::live::engine::Ctx {
            port: port(&mesh, ShardMsg::Live, |m| match m {
                ShardMsg::Live(m) => Some(m),
                _ => None,
            }),
            settings: common.live.clone(),
            outbound: common.outbound.clone(),
            store: common.store.clone(),
            metrics: metrics.clone(),
            events: Rc::new(Rooms(danmaku.clone())),
            shutdown: shutdown.clone(),
            clock: Rc::new(crate::clock::SystemClock),
        });
        let api = Rc::new(Api {
            config: cfg.clone(),
            shared: common.api.clone(),
            store: common.store.clone(),
            outbound: common.outbound.clone(),
            tokens,
            danmaku: danmaku.clone(),
            live: live.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        });
        Rc::new(Self {
            id,
            config: cfg.clone(),
            metrics,
            mesh,
            danmaku,
            live,
            api,
            router,
            limits: http_limits(cfg),
            shutdown,
        })
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_raised()
    }

    /// Hands a message from shard `from` to its engine.
    pub fn handle(&self, from: usize, msg: ShardMsg) {
        match msg {
            ShardMsg::Danmaku(m) => self.danmaku.handle(from, m),
            ShardMsg::Live(m) => self.live.handle(from, m),
        }
    }
}

/// The HTTP front's limits and timeouts, from `[http]`.
fn http_limits(cfg: &Config) -> HttpLimits {
    HttpLimits {
        head: crate::http::codec::HeadLimits {
            max_header_bytes: cfg.http.max_header_bytes,
            max_headers: cfg.http.max_headers,
        },
        max_body: cfg.http.max_body_bytes,
        body_budget: cfg.http.body_budget_bytes,
        header_timeout: Duration::from_millis(cfg.http.header_timeout_ms),
        body_timeout: Duration::from_millis(cfg.http.body_timeout_ms),
        idle_timeout: Duration::from_millis(cfg.http.idle_timeout_ms),
        write_timeout: Duration::from_millis(cfg.http.write_timeout_ms),
    }
}

impl Service for App {
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
        self.metrics.observe_status(status);
        self.metrics
            .observe_http(self.metrics.registry().route_index(route), elapsed);
    }

    fn refine(&self, head: &RequestHead, r: Response) -> Response {
        crate::api::cors::refine(&self.config.cors, head, r)
    }
}
