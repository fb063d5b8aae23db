//! Several nodes as one service over Redis (C10, SPEC §1 "Beyond one machine").
//!
//! What crosses nodes, and how:
//! - **Danmaku.** A room's home shard on the node where posts arrive checks them (rate,
//!   filter, moderation) and, per merge window, sends the batch here ([`Request::Publish`]).
//!   The `cluster` thread ([`publish`]) runs ONE script per room batch on Redis: it takes
//!   the next ids from the room's counter, appends the items to the room's history stream
//!   and publishes them on the room's shard channel, atomically (the room's keys and
//!   channel share a hash tag, so it works on a Redis Cluster). The ids come back for the
//!   acks: acknowledged means "in Redis". Every node with the room, the posting one
//!   included, delivers from its subscription ([`subscribe`]), so every viewer sees the
//!   same items with the same ids in the same order; a node that sees a hole in the ids
//!   fills it from the stream before going on. Redis load grows with rooms × windows,
//!   not with messages.
//! - **Subscriptions** follow the rooms a node holds: a home shard subscribes when it
//!   brings a room up (before reading its stored state, so nothing falls between the two)
//!   and unsubscribes when it lets the room go.
//! - **Online counts**: each node writes its rooms' viewer counts under a key that expires
//!   unless renewed ([`keys::node_online`]); a room's count is the sum over the nodes
//!   alive.
//! - **Control**: moderation changes go out on the room's channel too, so a ban on one
//!   node holds at once on every node that has the room; token revocations and "stop this
//!   stream" (its room was closed) go out on one channel every node listens to
//!   ([`keys::NODES_CHANNEL`]), so a logout on one node closes the token's connections on
//!   all, and closing a room stops its publisher wherever it is.
//!
//! - **Streams** ([`media`], the `cluster-media` thread): a publisher's claim on its
//!   stream is cluster-wide (a key with a TTL, renewed while it publishes), and a node
//!   with viewers of a stream published elsewhere pulls it once from that node.
//!
//! Threads, never a shard: `cluster` (publishes, heartbeats), `cluster-sub`
//! (subscriptions, hole filling) and `cluster-media` (claims). Shards reach them through bounded channels
//! ([`ClusterHandle`]; a full one is an immediate "busy") and hear back through the
//! [`Sink`] the wiring gives, as the store's commits do.

pub mod client;
pub mod keys;
pub mod media;
mod publish;
mod subscribe;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::config::ClusterConfig;
use crate::ids::{ConnRef, RoomId};

/// Where an item's ack goes once Redis has it.
#[derive(Debug)]
pub struct Ack {
    pub conn: ConnRef,
    pub cid: Option<String>,
}

/// One item of a room batch, encoded but for its id: the item is `prefix`, the id,
/// `suffix` (the id is the one field Redis decides).
#[derive(Debug)]
pub struct Outgoing {
    /// How the item competes for a node's delivery cap (`danmaku::room::Priority` as a
    /// letter: `p` plain, `v` VIP, `g` gift, `s` system); travels with the item.
    pub prio: u8,
    pub prefix: Bytes,
    pub suffix: Bytes,
    pub ack: Option<Ack>,
}

/// What a shard asks of the cluster threads.
#[derive(Debug)]
pub enum Request {
    /// A room's batch from its home shard here (`shard`), which has seen ids up to
    /// `floor`.
    Publish {
        room: RoomId,
        shard: usize,
        floor: u64,
        items: Vec<Outgoing>,
    },
    /// A control message (moderation) for every node holding the room.
    Control { room: RoomId, body: Bytes },
    /// A token revocation committed here (JSON), for every other node to apply.
    Revoked(Bytes),
    /// A room was closed here: whichever node publishes its stream stops the publisher.
    StopStream(RoomId),
    /// Shard `shard`'s viewers per room it is home of, and whether the room's stream is
    /// live here (replaces what it sent before).
    Counts {
        shard: usize,
        counts: Vec<RoomCount>,
    },
}

enum SubRequest {
    Subscribe {
        room: RoomId,
        done: oneshot::Sender<bool>,
    },
    Unsubscribe {
        room: RoomId,
    },
}

/// What the cluster threads tell a shard (always the room's home shard).
#[derive(Debug)]
pub enum Event {
    /// Items `first..=last` of a room, in id order (`items` may be fewer: none lost, but
    /// ids taken by nothing are possible after a failed script), each with its priority
    /// letter. Every node gets the same.
    Items {
        room: RoomId,
        first: u64,
        last: u64,
        items: Vec<(u8, Bytes)>,
    },
    /// A control message from some node (this one included).
    Control { room: RoomId, body: Bytes },
    /// What became of this node's batch: the ids of the acknowledged items, and the
    /// items Redis did not take (unreachable), whole.
    Published {
        room: RoomId,
        acks: Vec<(u64, Ack)>,
        failed: Vec<Outgoing>,
    },
    /// Viewers of each room on the other nodes alive.
    Elsewhere { counts: Vec<(RoomId, u64)> },
    /// Every room with viewers or a live stream on some node: viewers in all, live
    /// anywhere; the busiest first (for room listings). Every shard gets the same.
    Directory(Arc<Vec<RoomCount>>),
    /// A token revocation committed on another node (JSON); every shard gets it.
    Revoked(Bytes),
    /// Stop the publisher of this stream, if it is on this node (its room was closed on
    /// some node); the stream's home shard gets it.
    StopStream(RoomId),
}

/// A room, its viewers, whether its stream is live.
pub type RoomCount = (RoomId, u64, bool);

/// Where the cluster threads deliver: `sink(shard, event)`. It may block (waiting for room
/// on that shard's channel); a shard never does.
pub type Sink = Arc<dyn Fn(usize, Event) + Send + Sync>;

/// The cluster's figures for `/metrics` and `/readyz`, written by the cluster threads.
#[derive(Debug, Default)]
pub struct Stats {
    /// Redis reachable (the last command or connection attempt succeeded).
    pub up: AtomicBool,
    pub publishes: AtomicU64,
    pub items: AtomicU64,
    pub fills: AtomicU64,
    pub controls: AtomicU64,
    pub heartbeats: AtomicU64,
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub subscriptions: AtomicI64,
    /// Posts refused because Redis was unreachable (their senders got an error).
    pub refused: AtomicU64,
    /// Round trips (µs), a fixed-bucket histogram: counts per bucket of [`RTT_BUCKETS_US`].
    pub rtt: [AtomicU64; RTT_BUCKETS_US.len() + 1],
    pub rtt_sum_us: AtomicU64,
}

/// Upper bounds (µs) of the round-trip buckets.
pub const RTT_BUCKETS_US: [u64; 10] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

impl Stats {
    fn observe(&self, d: Duration) {
        let us = d.as_micros() as u64;
        let i = RTT_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(RTT_BUCKETS_US.len());
        self.rtt[i].fetch_add(1, Ordering::Relaxed);
        self.rtt_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The `liveshard_cluster_*` families (`docs/metrics.md`).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP liveshard_cluster_redis_up Whether Redis answered the last command (1) or not (0).\n\
             # TYPE liveshard_cluster_redis_up gauge\nliveshard_cluster_redis_up {}",
            u8::from(self.up.load(Ordering::Relaxed))
        );
        let _ = writeln!(
            out,
            "# HELP liveshard_cluster_commands_total Redis calls by kind.\n\
             # TYPE liveshard_cluster_commands_total counter"
        );
        for (kind, v) in [
            ("publish", &self.publishes),
            ("fill", &self.fills),
            ("control", &self.controls),
            ("heartbeat", &self.heartbeats),
        ] {
            let _ = writeln!(
                out,
                "liveshard_cluster_commands_total{{kind=\"{kind}\"}} {}",
                get(v)
            );
        }
        for (name, help, v) in [
            (
                "liveshard_cluster_items_total",
                "Danmaku items this node published to Redis.",
                &self.items,
            ),
            (
                "liveshard_cluster_errors_total",
                "Redis calls that failed (unreachable, timed out, refused).",
                &self.errors,
            ),
            (
                "liveshard_cluster_reconnects_total",
                "Connections to Redis opened (the first ones included).",
                &self.reconnects,
            ),
            (
                "liveshard_cluster_local_only_total",
                "Items Redis did not take, delivered to this node's viewers only.",
                &self.refused,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(v)
            );
        }
        let _ = writeln!(
            out,
            "# HELP liveshard_cluster_subscriptions Room channels this node is subscribed to.\n\
             # TYPE liveshard_cluster_subscriptions gauge\nliveshard_cluster_subscriptions {}",
            self.subscriptions.load(Ordering::Relaxed).max(0)
        );
        let name = "liveshard_cluster_redis_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Round trip of each Redis call from the cluster threads.\n# TYPE {name} histogram"
        );
        let mut cum = 0;
        for (i, b) in RTT_BUCKETS_US.iter().enumerate() {
            cum += get(&self.rtt[i]);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", *b as f64 / 1e6);
        }
        cum += get(&self.rtt[RTT_BUCKETS_US.len()]);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum {}", get(&self.rtt_sum_us) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {cum}");
    }

    fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        if was != up {
            if up {
                tracing::info!("redis reachable");
            } else {
                tracing::warn!("redis unreachable; serving local viewers only until it returns");
            }
        }
    }
}

/// The shards' side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct ClusterHandle {
    tx: SyncSender<Request>,
    sub: SyncSender<SubRequest>,
    pub stats: Arc<Stats>,
    pub node: Arc<str>,
    /// How long a room with no viewer here is kept (`cluster.room_linger_ms`).
    pub linger: Duration,
}

impl ClusterHandle {
    pub fn send(&self, req: Request) -> Result<(), Request> {
        self.tx.try_send(req).map_err(|e| match e {
            TrySendError::Full(r) | TrySendError::Disconnected(r) => r,
        })
    }

    /// Subscribes this node to `room`'s channel; resolves once Redis confirmed it (`true`),
    /// or `false` if it could not (Redis down: the room then serves this node's viewers
    /// alone, and the subscription is made when Redis returns).
    pub async fn subscribe(&self, room: RoomId) -> bool {
        let (done, rx) = oneshot::channel();
        if self
            .sub
            .try_send(SubRequest::Subscribe { room, done })
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    pub fn unsubscribe(&self, room: RoomId) {
        let _ = self.sub.try_send(SubRequest::Unsubscribe { room });
    }

    pub fn is_up(&self) -> bool {
        self.stats.up.load(Ordering::Relaxed)
    }
}

/// The cluster threads: made before the shards (the handle goes into their contexts),
/// started once the shards' remotes exist.
pub struct Cluster {
    settings: Settings,
    handle: ClusterHandle,
    rx: Option<(Receiver<Request>, Receiver<SubRequest>)>,
    threads: Vec<JoinHandle<()>>,
}

/// What the threads need of the config.
#[derive(Clone)]
struct Settings {
    target: client::Target,
    node: Arc<str>,
    shards: usize,
    history: u64,
    heartbeat: Duration,
    node_ttl: Duration,
    timeout: Duration,
}

impl Cluster {
    /// `None` without `cluster.redis`. `http` names the node when `cluster.node_id` is empty.
    pub fn new(
        config: &ClusterConfig,
        shards: usize,
        history: u64,
        http: std::net::SocketAddr,
    ) -> Result<Option<Cluster>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        let timeout = Duration::from_millis(config.command_timeout_ms);
        let target = client::Target::parse(&config.redis, timeout)
            .map_err(|e| format!("cluster.redis: {e}"))?;
        let node: Arc<str> = media::identity(config, http).0.into();
        let (tx, rx) = sync_channel(config.queue);
        let (sub, sub_rx) = sync_channel(config.queue);
        let stats = Arc::new(Stats::default());
        Ok(Some(Cluster {
            settings: Settings {
                target,
                node: node.clone(),
                shards,
                history,
                heartbeat: Duration::from_millis(config.heartbeat_ms),
                node_ttl: Duration::from_millis(config.node_ttl_ms),
                timeout,
            },
            handle: ClusterHandle {
                tx,
                sub,
                stats,
                node,
                linger: Duration::from_millis(config.room_linger_ms),
            },
            rx: Some((rx, sub_rx)),
            threads: Vec::new(),
        }))
    }

    pub fn handle(&self) -> ClusterHandle {
        self.handle.clone()
    }

    pub fn start(&mut self, sink: Sink) -> std::io::Result<()> {
        let Some((rx, sub_rx)) = self.rx.take() else {
            return Ok(());
        };
        let (s, stats) = (self.settings.clone(), self.handle.stats.clone());
        let sink2 = sink.clone();
        let stats2 = stats.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name("cluster".into())
                .spawn(move || publish::run(s, rx, sink, stats))?,
        );
        let s = self.settings.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name("cluster-sub".into())
                .spawn(move || subscribe::run(s, sub_rx, sink2, stats2))?,
        );
        Ok(())
    }

    /// Stops the threads (their channels close once every handle is gone).
    pub fn join(&mut self, within: Duration) {
        crate::threads::join_within(std::mem::take(&mut self.threads), within, "cluster");
    }
}

/// The shard-channel payload of a batch: `i<first> <last>` then one line per item, its
/// priority letter and its JSON (JSON has no raw newline). A control message: `c<body>`;
/// on the nodes' channel, a revocation `r<node>\n<json>` or a stream to stop `s<room>`.
pub fn parse_payload(payload: &[u8]) -> Option<Parsed> {
    let (&tag, rest) = payload.split_first()?;
    match tag {
        b'c' => Some(Parsed::Control(Bytes::copy_from_slice(rest))),
        b'i' => {
            let mut lines = rest.split(|&b| b == b'\n');
            let head = std::str::from_utf8(lines.next()?).ok()?;
            let (first, last) = head.split_once(' ')?;
            let (first, last) = (first.parse().ok()?, last.parse().ok()?);
            let items = lines
                .filter_map(|l| l.split_first())
                .map(|(&p, item)| (p, Bytes::copy_from_slice(item)))
                .collect();
            Some(Parsed::Items { first, last, items })
        }
        _ => None,
    }
}

/// A message on a room's channel, read ([`parse_payload`]).
#[derive(Debug)]
pub enum Parsed {
    Items {
        first: u64,
        last: u64,
        items: Vec<(u8, Bytes)>,
    },
    Control(Bytes),
}
