//! One shard's danmaku engine: its context, its connections, the local halves of rooms
//! with viewers here and the home halves of rooms homed here.
//!
//! The rest of `Danmaku` lives next door as `impl Danmaku` blocks: `dispatch.rs` (the mesh
//! messages), `post.rs` (a post on the home shard), `moderate.rs` (moderation actions) and
//! `tasks.rs` (the flusher, online ticker and sweeper, and the publishing of the counters
//! below).
//!
//! Hot counters live in `Cell`s here and reach the shared atomics once a second, so the
//! per-delivery path touches no atomic but the `Bytes` refcount.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use super::cork::Cork;
use super::protocol::{self, close, code};
use super::room::{HomeRoom, LocalRoom, RoomSettings};
use super::viewer::{Conn, User};
use super::{ConnRef, Msg, Post, PostBody, RoomId, Shared, Uid};
use crate::auth::Tokens;
use crate::metrics::Slot;
use crate::port::Port;
use crate::store::StoreHandle;

/// Wall-clock milliseconds since the Unix epoch (the real clock; the engine reads its
/// context's [`crate::clock::Clock`]).
pub fn now_ms() -> u64 {
    crate::clock::unix_ms()
}

/// Counters kept in cells and published to `ShardMetrics` by the sweeper.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) posts: Cell<u64>,
    pub(super) rejected: Cell<u64>,
    pub(super) items: Cell<u64>,
    pub(super) batches: Cell<u64>,
    pub(super) deliveries: Cell<u64>,
    pub(super) dropped: Cell<u64>,
    pub(super) sampled_out: Cell<u64>,
    /// Plain items shed because the shard could not write what it was offered.
    pub(super) shed: Cell<u64>,
    pub(super) bytes_written: Cell<u64>,
    /// End-of-turn flushes, and the writes they made (one per dirty viewer).
    pub(super) flushes: Cell<u64>,
    pub(super) flush_writes: Cell<u64>,
    pub(super) slow_closed: Cell<u64>,
    pub(super) heartbeat_closed: Cell<u64>,
}

pub(super) fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// What the danmaku engine is given when its shard wires it, and nothing else of the
/// shard: its mesh port, its settings, the store, its metrics slot, the shard's token
/// check, and the shutdown signal.
pub struct Ctx {
    pub port: Port<Msg>,
    pub shared: Arc<Shared>,
    pub store: StoreHandle,
    pub metrics: Slot,
    pub tokens: Rc<Tokens>,
    pub shutdown: Rc<shards::local::Signal>,
    /// What "now" is for the engine's decisions (rates, mutes, timeouts, idle rooms).
    pub clock: Rc<dyn crate::clock::Clock>,
    /// The cluster threads, when the node is one of several over Redis.
    pub cluster: Option<crate::cluster::ClusterHandle>,
}

pub struct Danmaku {
    pub(super) ctx: Ctx,
    pub(super) conns: RefCell<Slab<Rc<Conn>>>,
    pub(super) joining_since: RefCell<HashMap<usize, Instant>>,
    next_gen: Cell<u32>,
    pub(super) local: RefCell<HashMap<RoomId, LocalRoom>>,
    pub(super) home: RefCell<HashMap<RoomId, HomeRoom>>,
    pub(super) dirty: RefCell<Vec<RoomId>>,
    pub(super) flush_kick: shards::local::Notify,
    /// Viewers with fan-out frames waiting for the end-of-turn flush.
    pub(super) cork: Cork,
    pub(super) counters: Counters,
    /// In a cluster: rooms with viewers or a live stream on any node, from the last
    /// heartbeat (`crate::cluster::Event::Directory`).
    pub(super) directory: RefCell<Arc<Vec<crate::cluster::RoomCount>>>,
    /// Idle connections parked without a task (`super::park`); set when the shard's tasks
    /// start.
    pub(super) parking: std::cell::OnceCell<Rc<super::park::Parking>>,
}

impl Danmaku {
    pub fn new(ctx: Ctx) -> Rc<Self> {
        Rc::new(Self {
            ctx,
            conns: RefCell::new(Slab::new()),
            joining_since: RefCell::new(HashMap::new()),
            next_gen: Cell::new(0),
            local: RefCell::new(HashMap::new()),
            home: RefCell::new(HashMap::new()),
            dirty: RefCell::new(Vec::new()),
            flush_kick: shards::local::Notify::new(),
            cork: Cork::new(),
            counters: Counters::default(),
            directory: RefCell::new(Arc::new(Vec::new())),
            parking: std::cell::OnceCell::new(),
        })
    }

    /// The engine's mesh port (the API calls other shards' engines through it).
    pub fn port(&self) -> &Port<Msg> {
        &self.ctx.port
    }

    /// The cluster threads, when the node is one of several.
    pub fn cluster(&self) -> Option<&crate::cluster::ClusterHandle> {
        self.ctx.cluster.as_ref()
    }

    pub fn tokens(&self) -> &Tokens {
        &self.ctx.tokens
    }

    /// The engine's wall clock in ms (item timestamps, rates, mutes).
    pub(super) fn now_ms(&self) -> u64 {
        self.ctx.clock.unix_ms()
    }

    /// The engine's monotonic clock.
    pub(super) fn now(&self) -> Instant {
        self.ctx.clock.now()
    }

    pub(super) fn settings(&self) -> &super::Settings {
        &self.ctx.shared.settings
    }

    /// Sends a danmaku message to shard `to` (this one included) through the mesh.
    pub(super) fn submit(&self, to: usize, msg: Msg) -> Result<(), Msg> {
        self.ctx.port.submit_to(to, msg)
    }

    /// The home shard of `room`.
    pub(super) fn home_of(&self, room: &str) -> usize {
        self.ctx.port.home_of(room)
    }

    /// The home half of `room`, created empty if this shard has none yet.
    pub(super) fn home_room<'a>(
        &self,
        home: &'a mut HashMap<RoomId, HomeRoom>,
        room: &RoomId,
        now: u64,
    ) -> &'a mut HomeRoom {
        home.entry(room.clone()).or_insert_with(|| {
            HomeRoom::new(
                room.clone(),
                self.ctx.port.shards(),
                &self.room_settings(),
                now,
            )
        })
    }

    pub(super) fn room_settings(&self) -> RoomSettings {
        let s = self.settings();
        RoomSettings {
            history_capacity: s.history_capacity,
            cap_per_sec: s.cap_per_sec,
            user_rate: (s.rate_per_sec, s.rate_burst),
            heartbeat_ms: s.heartbeat.as_millis() as u64,
        }
    }

    // --- connections (viewer side) -----------------------------------------------------

    /// Adds a new connection to this shard's registry.
    pub fn register(&self, room: RoomId, user: Option<Rc<User>>) -> Rc<Conn> {
        let s = self.settings();
        let mut conns = self.conns.borrow_mut();
        let entry = conns.vacant_entry();
        let gen = self.next_gen.get().wrapping_add(1);
        self.next_gen.set(gen);
        let id = ConnRef {
            shard: self.ctx.port.me() as u16,
            key: entry.key() as u32,
            gen,
        };
        let conn = Rc::new(Conn::new(
            id,
            room,
            user,
            (s.queue_bytes, s.rate_burst),
            (self.now(), self.now_ms()),
        ));
        entry.insert(conn.clone());
        self.ctx.metrics.ws_connections.fetch_add(1, Relaxed);
        conn
    }

    pub(super) fn lookup(&self, id: ConnRef) -> Option<Rc<Conn>> {
        self.conns
            .borrow()
            .get(id.key as usize)
            .filter(|c| c.id == id)
            .cloned()
    }

    /// Asks the room's home shard to admit the connection.
    pub fn join(&self, conn: &Rc<Conn>) {
        self.join_since(conn, None)
    }

    /// Asks the room's home shard to admit the connection; with `since`, a viewer coming
    /// back that has seen every item up to that id (it gets the ones after it).
    pub fn join_since(&self, conn: &Rc<Conn>, since: Option<u64>) {
        let count = {
            let mut local = self.local.borrow_mut();
            let room = local.entry(conn.room.clone()).or_default();
            room.joining += 1;
            room.count()
        };
        self.joining_since
            .borrow_mut()
            .insert(conn.id.key as usize, self.now());
        let msg = Msg::Join {
            room: conn.room.clone(),
            conn: conn.id,
            uid: conn.uid(),
            count,
            since,
        };
        if self.submit(self.home_of(&conn.room), msg).is_err() {
            conn.close_now(close::TRY_AGAIN_LATER, "server busy, try again later");
        }
    }

    /// Removes a closed connection from its room and the registry, and tells the home.
    pub fn unregister(&self, conn: &Rc<Conn>) {
        let uid = conn.uid();
        let count = {
            let mut local = self.local.borrow_mut();
            let Some(room) = local.get_mut(&conn.room) else {
                return self.forget(conn);
            };
            if conn.joined.get() {
                room.remove(conn);
                if let Some(uid) = &uid {
                    room.unindex_user(uid, conn);
                }
            } else {
                room.joining = room.joining.saturating_sub(1);
            }
            let count = room.count();
            if count == 0 {
                local.remove(&conn.room);
            }
            count
        };
        let msg = Msg::Leave {
            room: conn.room.clone(),
            uid,
            count,
        };
        // A full ring here leaves the home's count high until this shard's next change
        // for the room; counts are absolute, so the next one corrects it.
        let _ = self.submit(self.home_of(&conn.room), msg);
        self.forget(conn);
    }

    pub(super) fn forget(&self, conn: &Rc<Conn>) {
        // What was written straight to it since the last sweep still counts.
        bump(&self.counters.bytes_written, conn.take_direct_bytes());
        // Counted here, once, whether the sweeper's grace or the hard ceiling closed it.
        if conn.closed_slow() {
            bump(&self.counters.slow_closed, 1);
        }
        self.joining_since
            .borrow_mut()
            .remove(&(conn.id.key as usize));
        let mut conns = self.conns.borrow_mut();
        if conns
            .get(conn.id.key as usize)
            .is_some_and(|c| c.id == conn.id)
        {
            conns.remove(conn.id.key as usize);
            self.ctx.metrics.ws_connections.fetch_sub(1, Relaxed);
        }
    }

    /// An anonymous connection logged in: index it and tell the home shard.
    pub fn identify(&self, conn: &Rc<Conn>, uid: Uid) {
        if conn.joined.get() {
            if let Some(room) = self.local.borrow_mut().get_mut(&conn.room) {
                room.index_user(uid.clone(), conn.clone());
            }
        }
        let _ = self.submit(
            self.home_of(&conn.room),
            Msg::Identify {
                room: conn.room.clone(),
                uid,
            },
        );
    }

    /// Forwards a checked post to the room's home shard.
    pub fn post(&self, conn: &Rc<Conn>, post: Post) {
        let cid = post.cid.clone();
        if self
            .submit(self.home_of(&post.room), Msg::Post(Box::new(post)))
            .is_err()
        {
            conn.send(protocol::error_frame(
                code::BUSY,
                "server busy, retry",
                cid.as_deref(),
            ));
            bump(&self.counters.rejected, 1);
            return;
        }
        bump(&self.counters.posts, 1);
    }

    /// A server-originated item (system notice, live/offline) for `room`.
    pub fn system_post(&self, room: RoomId, body: PostBody) {
        let post = Post {
            room: room.clone(),
            from: None,
            at: self.now(),
            uid: "".into(),
            nick: "".into(),
            vip: false,
            cid: None,
            body,
        };
        let _ = self.submit(self.home_of(&room), Msg::Post(Box::new(post)));
    }

    /// The stream clock of `room` (media timestamp in ms; `None` when the stream stops),
    /// for the room's home shard.
    pub fn media_clock(&self, room: RoomId, media_ms: Option<u64>) {
        let _ = self.submit(self.home_of(&room), Msg::MediaClock { room, media_ms });
    }

    pub fn rejected(&self) {
        bump(&self.counters.rejected, 1);
    }

    pub fn wrote(&self, n: usize) {
        bump(&self.counters.bytes_written, n as u64);
    }

    /// On shutdown: every connection gets 1001 "going away" after what is queued.
    pub fn close_all(&self) {
        for (_, conn) in self.conns.borrow().iter() {
            conn.close(close::GOING_AWAY, "server shutting down");
        }
    }

    /// A token revocation was committed: this shard's token checks refuse what it names
    /// from now on, and its connections that used such a token are closed with 4011 (after
    /// what is already queued for them).
    pub fn apply_revocation(&self, rev: &crate::auth::Revocation) {
        self.ctx.tokens.apply(rev);
        for (_, conn) in self.conns.borrow().iter() {
            let revoked = conn
                .user
                .borrow()
                .as_ref()
                .is_some_and(|u| u.revoked_by(rev));
            if revoked {
                conn.close(close::TOKEN_REVOKED, "token revoked");
            }
        }
    }

    /// Abandons writes still in flight (the shutdown bound is near).
    pub fn abort_all(&self) {
        for (_, conn) in self.conns.borrow().iter() {
            conn.close_now(close::GOING_AWAY, "server shutting down");
        }
    }

    /// Online count and live status of a room homed on this shard (`None` if the room is
    /// not active here). Ask the home shard: `port().call(home, …)`.
    pub fn home_status(&self, room: &str) -> Option<(u64, bool)> {
        self.home
            .borrow()
            .get(room)
            .map(|r| (r.online(), r.is_live()))
    }

    /// Rooms homed here whose stored state is still loading (their messages wait).
    pub fn rooms_loading(&self) -> usize {
        self.home.borrow().values().filter(|r| r.loading).count()
    }

    /// In a cluster: every room with viewers or a live stream on some node, with its
    /// viewers in all and whether it is live anywhere, as of the last heartbeat; empty
    /// without a cluster.
    pub fn directory(&self) -> Arc<Vec<crate::cluster::RoomCount>> {
        self.directory.borrow().clone()
    }

    /// Rooms homed on this shard that are live or have viewers: (room, online, live). For
    /// listings that put live rooms first.
    pub fn home_active(&self) -> Vec<(String, u64, bool)> {
        self.home
            .borrow()
            .values()
            .filter(|r| !r.loading && (r.is_live() || r.online() > 0))
            .map(|r| (r.id.to_string(), r.online(), r.is_live()))
            .collect()
    }
}
