//! Danmaku: WebSocket rooms with one-encode, cross-shard fan-out (SPEC §1, C3).
//!
//! The flow, one hop in and one hop out:
//! 1. A viewer's message arrives on the shard holding its socket ([`conn`]): parsed,
//!    authenticated, rate-limited and filtered there ([`hygiene`]), then sent as a
//!    [`Msg::Post`] to the room's home shard (`home_shard(room)`).
//! 2. The home shard ([`engine`], [`room::HomeRoom`]) checks moderation, assigns the room's
//!    next id, encodes the item once, applies the delivery cap, acks the sender and queues
//!    the item for the merge window.
//! 3. Each window, the home shard encodes the pending items as ONE WebSocket frame and sends
//!    that `Bytes` to every shard with viewers of the room ([`Msg::Deliver`]).
//! 4. Each of those shards takes its own copy of the frame, holds it on the room for the
//!    turn of its loop ([`room::LocalRoom::fanout`]), and at the end of the turn writes the
//!    turn's frames to each viewer with one `sendmsg` of the same buffers ([`cork`]); a
//!    viewer with something ahead of them gets them through its queue, which its writer
//!    drains with vectored writes. No per-viewer encoding, copy or lock on the way.
//! 5. Offered more than it can write, a room sheds a share of its plain danmaku at step 2
//!    ([`shed`]), judged at its flushes on the home shard.
//!
//! Files: [`protocol`] (JSON messages, frames, codes), [`hygiene`] (text, filter, rate),
//! [`room`] (home and local room state), [`engine`] (per-shard state, mesh handling) with
//! `post.rs` (a post on the home shard), `moderate.rs` (moderation) and `tasks.rs` (the
//! tickers), [`cork`] (the end-of-turn flush and its pacing), [`shed`] (plain danmaku shed past
//! saturation), [`viewer`] (a viewer's user and connection state, with its outbound queue and
//! the slow-consumer rules), [`conn`] (the WebSocket connection driver), [`client`] (what
//! a viewer's messages do), [`plain`] (readers and posts without a WebSocket: SSE and HTTP).

pub mod client;
mod cluster;
pub mod conn;
pub mod cork;
mod dispatch;
pub mod engine;
pub mod hygiene;
mod local_room;
mod moderate;
mod park;
pub mod plain;
mod post;
pub mod protocol;
pub mod room;
pub mod shed;
mod tasks;
pub mod viewer;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use engine::Danmaku;

use crate::ws::WsLimits;
use hygiene::Filter;
use protocol::Mode;

pub use crate::ids::{home_shard, valid_room_id, ConnRef, RoomId, Uid};

/// Who asks for a moderation action; the home shard decides if they may.
#[derive(Clone, Debug)]
pub enum Actor {
    /// A connected user (their token's roles say whether they are a global admin).
    User {
        uid: Uid,
        global_admin: bool,
        reply: ConnRef,
        cid: Option<String>,
    },
    /// The server itself (the REST API, having checked ownership).
    System,
}

#[derive(Clone, Debug)]
pub enum ModOp {
    Mute { uid: Uid, secs: u64 },
    Unmute { uid: Uid },
    Ban { uid: Uid },
    Unban { uid: Uid },
    Kick { uid: Uid },
    SlowMode { secs: u64 },
    AddAdmin { uid: Uid },
    RemoveAdmin { uid: Uid },
    SetOwner { uid: Uid },
}

/// What a post carries, after the sender's shard checked it.
#[derive(Debug)]
pub enum PostBody {
    Danmaku {
        text: String,
        color: String,
        mode: Mode,
    },
    Gift {
        gift_id: String,
        count: u32,
    },
    Like {
        count: u32,
    },
    Pm {
        to: Uid,
        text: String,
    },
    /// Server-originated notices (moderation, API).
    System {
        text: String,
    },
    /// Stream went live or offline (from the media side).
    Live {
        live: bool,
    },
}

#[derive(Debug)]
pub struct Post {
    pub room: RoomId,
    /// The sending connection, for the ack; `None` for server-originated items.
    pub from: Option<ConnRef>,
    /// When its frame was decoded on the sender's shard (or the server made it): where
    /// `liveshard_danmaku_delivery_seconds` starts.
    pub at: std::time::Instant,
    pub uid: Uid,
    pub nick: Arc<str>,
    pub vip: bool,
    pub cid: Option<String>,
    pub body: PostBody,
}

/// What the home shard answers a join with: for a resume that cannot be complete a `gap`
/// frame, then the `history` frame, then the online count.
#[derive(Debug)]
pub struct JoinAnswer {
    pub gap: Option<Bytes>,
    pub history: Bytes,
    pub online: Bytes,
}

/// Danmaku messages between shards, through the engine's [`crate::port::Port`].
#[derive(Debug)]
pub enum Msg {
    /// Viewer shard → home: a connection joins; `count` is that shard's new total.
    /// `since`: the last item id a returning viewer saw (it gets the items after it).
    Join {
        room: RoomId,
        conn: ConnRef,
        uid: Option<Uid>,
        count: u32,
        since: Option<u64>,
    },
    /// Home → viewer shard: the join's answer (or a refusal: close code and reason).
    Joined {
        conn: ConnRef,
        answer: Result<Box<JoinAnswer>, (u16, &'static str)>,
    },
    /// Viewer shard → home: a connection left; `count` is that shard's new total.
    Leave {
        room: RoomId,
        uid: Option<Uid>,
        count: u32,
    },
    /// Viewer shard → home: an anonymous connection logged in with an `auth` message.
    Identify { room: RoomId, uid: Uid },
    /// Viewer shard → home: a post for the room.
    Post(Box<Post>),
    /// Home → viewer shard: a frame for one connection (ack, error).
    Reply { conn: ConnRef, frame: Bytes },
    /// Home → viewer shards: a frame for every local viewer of the room.
    /// `since`: when the batch's oldest post was decoded (`None` for frames that are not
    /// posts, such as online counts).
    Deliver {
        room: RoomId,
        frame: Bytes,
        since: Option<std::time::Instant>,
    },
    /// Home → viewer shards: a frame for the local connections of one user in the room.
    DeliverTo {
        room: RoomId,
        uid: Uid,
        frame: Bytes,
    },
    /// Home → viewer shards: close the local connections of one user in the room.
    Kick {
        room: RoomId,
        uid: Uid,
        code: u16,
        reason: &'static str,
    },
    /// Any shard → home: a moderation action.
    Moderate {
        room: RoomId,
        op: ModOp,
        actor: Box<Actor>,
    },
    /// Any shard → home: the room's stream clock (media timestamp in ms), or `None` when
    /// the stream stops.
    MediaClock { room: RoomId, media_ms: Option<u64> },
    /// Store → this shard (through the wiring's commit sink): a group commit finished.
    Committed(crate::store::Committed),
    /// From the cluster threads (a cluster over Redis): a room's items from Redis, a
    /// control message, this node's acks, the other nodes' viewer counts.
    Cluster(crate::cluster::Event),
    /// Any shard → any shard: run a function on this shard's engine (control paths).
    Call(crate::port::Call<Danmaku>),
}

impl From<crate::port::Call<Danmaku>> for Msg {
    fn from(c: crate::port::Call<Danmaku>) -> Self {
        Msg::Call(c)
    }
}

/// Settings of the danmaku engine, from `[danmaku]`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub merge_window: Duration,
    pub history_on_join: usize,
    pub history_capacity: usize,
    pub max_text_chars: usize,
    pub rate_per_sec: f32,
    pub rate_burst: f32,
    pub ws: WsLimits,
    pub heartbeat: Duration,
    pub online_interval: Duration,
    pub queue_bytes: usize,
    pub slow_grace: Duration,
    pub cap_per_sec: u32,
    pub origins: Vec<String>,
    pub send_buffer: usize,
    pub room_idle: Duration,
    /// Acks wait until the item is stored durably (`store.ack = "durable"`).
    pub durable_ack: bool,
    /// A write that makes no progress for this long closes the connection
    /// (`http.write_timeout_ms`).
    pub write_timeout: Duration,
}

/// What every shard's danmaku engine reads and nobody writes after start.
pub struct Shared {
    pub settings: Settings,
    pub filter: Filter,
}

impl Shared {
    /// Builds the engine's shared state from the validated config.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Self, String> {
        let d = &cfg.danmaku;
        let mode = if d.filter_mode == "mask" {
            hygiene::FilterMode::Mask
        } else {
            hygiene::FilterMode::Reject
        };
        Ok(Self {
            settings: Settings {
                merge_window: Duration::from_millis(d.merge_window_ms),
                history_on_join: d.history_on_join,
                history_capacity: d.history_capacity,
                max_text_chars: d.max_text_chars,
                rate_per_sec: d.rate_per_sec as f32,
                rate_burst: d.rate_burst as f32,
                ws: WsLimits {
                    max_frame: d.max_frame_bytes,
                    max_message: d.max_frame_bytes,
                },
                heartbeat: Duration::from_secs(d.heartbeat_secs),
                online_interval: Duration::from_millis(d.online_interval_ms),
                queue_bytes: d.queue_bytes,
                slow_grace: Duration::from_millis(d.slow_grace_ms),
                cap_per_sec: d.room_cap_per_sec,
                origins: d.origins.clone(),
                send_buffer: d.send_buffer_bytes,
                room_idle: Duration::from_secs(d.room_idle_secs),
                durable_ack: cfg.store.ack == "durable",
                write_timeout: Duration::from_millis(cfg.http.write_timeout_ms),
            },
            filter: Filter::new(&d.filter_words, mode)?,
        })
    }
}
