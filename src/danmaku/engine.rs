//! One shard's danmaku engine: its connections, the local halves of rooms with viewers
//! here, the home halves of rooms homed here, and the dispatch of danmaku mesh messages
//! (joins, leaves, replies, deliveries, kicks, the media clock).
//!
//! The rest of `Danmaku` lives next door as `impl Danmaku` blocks: `post.rs` (a post on
//! the home shard), `moderate.rs` (moderation actions) and `tasks.rs` (the flusher, online
//! ticker and sweeper, and the publishing of the counters below).
//!
//! Hot counters live in `Cell`s here and reach the shared atomics once a second, so the
//! per-delivery path touches no atomic but the `Bytes` refcount.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use slab::Slab;

use super::conn::{home_of, submit};
use super::protocol::{self, close, code};
use super::room::{HomeRoom, LocalRoom, RoomSettings};
use super::viewer::{Conn, User};
use super::{ConnRef, JoinAnswer, Msg, Post, PostBody, RoomId, Uid};
use crate::shard::Shard;
use crate::store::model::RoomState;
use crate::store::Request;

/// Wall-clock milliseconds since the Unix epoch (item timestamps, rate limits).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Messages held per room while its stored state loads; past it, posts are refused.
const MAX_WAITING: usize = 10_000;

/// The room a message is about, if it needs the room's home half.
fn home_room_of(msg: &Msg) -> Option<&RoomId> {
    match msg {
        Msg::Join { room, .. }
        | Msg::Leave { room, .. }
        | Msg::Identify { room, .. }
        | Msg::Moderate { room, .. }
        | Msg::MediaClock { room, .. } => Some(room),
        Msg::Post(p) => Some(&p.room),
        _ => None,
    }
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
    pub(super) bytes_written: Cell<u64>,
    pub(super) slow_closed: Cell<u64>,
    pub(super) heartbeat_closed: Cell<u64>,
}

pub(super) fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

pub struct Danmaku {
    pub(super) conns: RefCell<Slab<Rc<Conn>>>,
    pub(super) joining_since: RefCell<HashMap<usize, Instant>>,
    next_gen: Cell<u32>,
    pub(super) local: RefCell<HashMap<RoomId, LocalRoom>>,
    pub(super) home: RefCell<HashMap<RoomId, HomeRoom>>,
    pub(super) dirty: RefCell<Vec<RoomId>>,
    pub(super) flush_kick: shards::local::Notify,
    pub(super) counters: Counters,
}

impl Default for Danmaku {
    fn default() -> Self {
        Self::new()
    }
}

impl Danmaku {
    pub fn new() -> Self {
        Self {
            conns: RefCell::new(Slab::new()),
            joining_since: RefCell::new(HashMap::new()),
            next_gen: Cell::new(0),
            local: RefCell::new(HashMap::new()),
            home: RefCell::new(HashMap::new()),
            dirty: RefCell::new(Vec::new()),
            flush_kick: shards::local::Notify::new(),
            counters: Counters::default(),
        }
    }

    pub(super) fn settings(shard: &Shard) -> &super::Settings {
        &shard.common.danmaku.settings
    }

    pub(super) fn room_settings(shard: &Shard) -> RoomSettings {
        let s = Self::settings(shard);
        RoomSettings {
            history_capacity: s.history_capacity,
            cap_per_sec: s.cap_per_sec,
            user_rate: (s.rate_per_sec, s.rate_burst),
        }
    }

    // --- connections (viewer side) -----------------------------------------------------

    /// Adds a new connection to this shard's registry.
    pub fn register(&self, shard: &Shard, room: RoomId, user: Option<Rc<User>>) -> Rc<Conn> {
        let s = Self::settings(shard);
        let mut conns = self.conns.borrow_mut();
        let entry = conns.vacant_entry();
        let gen = self.next_gen.get().wrapping_add(1);
        self.next_gen.set(gen);
        let id = ConnRef {
            shard: shard.id() as u16,
            key: entry.key() as u32,
            gen,
        };
        let conn = Rc::new(Conn::new(id, room, user, s.queue_bytes, s.rate_burst));
        entry.insert(conn.clone());
        shard.metrics().ws_connections.fetch_add(1, Relaxed);
        conn
    }

    fn lookup(&self, id: ConnRef) -> Option<Rc<Conn>> {
        self.conns
            .borrow()
            .get(id.key as usize)
            .filter(|c| c.id == id)
            .cloned()
    }

    /// Asks the room's home shard to admit the connection.
    pub fn join(&self, shard: &Shard, conn: &Rc<Conn>) {
        let count = {
            let mut local = self.local.borrow_mut();
            let room = local.entry(conn.room.clone()).or_default();
            room.joining += 1;
            room.count()
        };
        self.joining_since
            .borrow_mut()
            .insert(conn.id.key as usize, Instant::now());
        let msg = Msg::Join {
            room: conn.room.clone(),
            conn: conn.id,
            uid: conn.uid(),
            count,
        };
        if submit(shard, home_of(shard, &conn.room), msg).is_err() {
            conn.close_now(close::TRY_AGAIN_LATER, "server busy, try again later");
        }
    }

    /// Removes a closed connection from its room and the registry, and tells the home.
    pub fn unregister(&self, shard: &Shard, conn: &Rc<Conn>) {
        let uid = conn.uid();
        let count = {
            let mut local = self.local.borrow_mut();
            let Some(room) = local.get_mut(&conn.room) else {
                return self.forget(shard, conn);
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
        let _ = submit(shard, home_of(shard, &conn.room), msg);
        self.forget(shard, conn);
    }

    fn forget(&self, shard: &Shard, conn: &Rc<Conn>) {
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
            shard.metrics().ws_connections.fetch_sub(1, Relaxed);
        }
    }

    /// An anonymous connection logged in: index it and tell the home shard.
    pub fn identify(&self, shard: &Shard, conn: &Rc<Conn>, uid: Uid) {
        if conn.joined.get() {
            if let Some(room) = self.local.borrow_mut().get_mut(&conn.room) {
                room.index_user(uid.clone(), conn.clone());
            }
        }
        let _ = submit(
            shard,
            home_of(shard, &conn.room),
            Msg::Identify {
                room: conn.room.clone(),
                uid,
            },
        );
    }

    /// Forwards a checked post to the room's home shard.
    pub fn post(&self, shard: &Shard, conn: &Rc<Conn>, post: Post) {
        let cid = post.cid.clone();
        if submit(shard, home_of(shard, &post.room), Msg::Post(Box::new(post))).is_err() {
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
    pub fn system_post(&self, shard: &Shard, room: RoomId, body: PostBody) {
        let post = Post {
            room: room.clone(),
            from: None,
            at: Instant::now(),
            uid: "".into(),
            nick: "".into(),
            vip: false,
            cid: None,
            body,
        };
        let _ = submit(shard, home_of(shard, &room), Msg::Post(Box::new(post)));
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

    /// A token revocation was committed: this shard's connections whose token it names
    /// are closed with 4011 (after what is already queued for them).
    pub fn close_revoked(&self, rev: &crate::auth::Revocation) {
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
    /// not active here). Ask the home shard: `shard.run_on(home_of(room), …)`.
    pub fn home_status(&self, room: &str) -> Option<(u64, bool)> {
        self.home
            .borrow()
            .get(room)
            .map(|r| (r.online(), r.is_live()))
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

    // --- mesh messages -----------------------------------------------------------------

    pub fn handle(&self, shard: &Rc<Shard>, from: usize, msg: Msg) {
        if let Some(room) = home_room_of(&msg) {
            if !self.home_ready(shard, room) {
                let mut home = self.home.borrow_mut();
                let r = home.get_mut(room).expect("home_ready created it");
                if r.waiting.len() < MAX_WAITING {
                    r.waiting.push((from, msg));
                } else if let Msg::Post(post) = msg {
                    drop(home);
                    self.reply_to(
                        shard,
                        post.from,
                        protocol::error_frame(
                            code::BUSY,
                            "room is loading, retry",
                            post.cid.as_deref(),
                        ),
                    );
                }
                return;
            }
        }
        match msg {
            Msg::Join {
                room,
                conn,
                uid,
                count,
            } => self.on_join(shard, from, room, conn, uid, count),
            Msg::Joined { conn, answer } => self.on_joined(conn, answer),
            Msg::Leave { room, uid, count } => {
                if let Some(r) = self.home.borrow_mut().get_mut(&room) {
                    r.set_count(from, count, now_ms());
                    if let Some(uid) = uid {
                        r.user_left(&uid);
                    }
                }
            }
            Msg::Identify { room, uid } => {
                let banned = {
                    let mut home = self.home.borrow_mut();
                    let Some(r) = home.get_mut(&room) else { return };
                    r.user_joined(&uid);
                    r.is_banned(&uid)
                };
                if banned {
                    let kick = Msg::Kick {
                        room,
                        uid,
                        code: close::BANNED,
                        reason: "banned from this room",
                    };
                    let _ = submit(shard, from, kick);
                }
            }
            Msg::Post(post) => self.on_post(shard, *post),
            Msg::Reply { conn, frame } => {
                if let Some(c) = self.lookup(conn) {
                    c.send(frame);
                }
            }
            Msg::Deliver { room, frame, since } => self.fanout_local(shard, &room, &frame, since),
            Msg::DeliverTo { room, uid, frame } => {
                if let Some(r) = self.local.borrow().get(&room) {
                    for c in r.users.get(&uid).into_iter().flatten() {
                        c.send(frame.clone());
                    }
                }
            }
            Msg::Kick {
                room,
                uid,
                code,
                reason,
            } => {
                if let Some(r) = self.local.borrow().get(&room) {
                    for c in r.users.get(&uid).into_iter().flatten() {
                        c.close(code, reason);
                    }
                }
                // Also connections of that user still waiting for their join answer.
                for (_, c) in self.conns.borrow().iter() {
                    if !c.joined.get() && c.room == room && c.uid().as_deref() == Some(&*uid) {
                        c.close(code, reason);
                    }
                }
            }
            Msg::Moderate { room, op, actor } => self.on_moderate(shard, room, op, *actor),
            Msg::MediaClock { room, media_ms } => {
                let mut home = self.home.borrow_mut();
                let r = home.entry(room.clone()).or_insert_with(|| {
                    HomeRoom::new(room, shard.ctx.count, &Self::room_settings(shard), now_ms())
                });
                match media_ms {
                    Some(ms) => r.set_media_clock(ms, now_ms()),
                    None => r.clear_media_clock(),
                }
            }
        }
    }

    /// Whether the home half of `room` is ready; creates it (and starts loading its stored
    /// state) if it does not exist.
    fn home_ready(&self, shard: &Rc<Shard>, room: &RoomId) -> bool {
        let mut home = self.home.borrow_mut();
        if let Some(r) = home.get(room) {
            return !r.loading;
        }
        let mut r = HomeRoom::new(
            room.clone(),
            shard.ctx.count,
            &Self::room_settings(shard),
            now_ms(),
        );
        r.loading = true;
        home.insert(room.clone(), r);
        drop(home);
        let shard = shard.clone();
        let room = room.clone();
        monoio::spawn(async move {
            let tail = Self::settings(&shard).history_capacity;
            let mut delay = Duration::from_millis(50);
            loop {
                let state = shard
                    .common
                    .store
                    .call(|reply| Request::RoomState {
                        room: room.to_string(),
                        tail,
                        reply,
                    })
                    .await;
                match state {
                    Ok(state) => return shard.danmaku.loaded(&shard, &room, state),
                    Err(e) => {
                        tracing::warn!(%room, error = %e, "room state not loaded yet; retrying");
                        monoio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
        false
    }

    fn loaded(&self, shard: &Rc<Shard>, room: &RoomId, state: RoomState) {
        let waiting = {
            let mut home = self.home.borrow_mut();
            let Some(r) = home.get_mut(room) else { return };
            r.restore(state, now_ms());
            r.loading = false;
            std::mem::take(&mut r.waiting)
        };
        for (from, msg) in waiting {
            self.handle(shard, from, msg);
        }
    }

    /// Sends a frame to one connection, wherever it is.
    pub(super) fn reply_to(&self, shard: &Shard, to: Option<ConnRef>, frame: Bytes) {
        let Some(to) = to else { return };
        if to.shard as usize == shard.id() {
            if let Some(c) = self.lookup(to) {
                c.send(frame);
            }
        } else {
            let _ = submit(shard, to.shard as usize, Msg::Reply { conn: to, frame });
        }
    }

    fn on_join(
        &self,
        shard: &Shard,
        from: usize,
        room: RoomId,
        conn: ConnRef,
        uid: Option<Uid>,
        count: u32,
    ) {
        let answer = {
            let mut home = self.home.borrow_mut();
            let r = home.entry(room.clone()).or_insert_with(|| {
                HomeRoom::new(
                    room.clone(),
                    shard.ctx.count,
                    &Self::room_settings(shard),
                    now_ms(),
                )
            });
            r.set_count(from, count, now_ms());
            if uid.as_deref().is_some_and(|u| r.is_banned(u)) {
                Err((close::BANNED, "banned from this room"))
            } else {
                if let Some(uid) = &uid {
                    r.user_joined(uid);
                }
                Ok(Box::new(JoinAnswer {
                    history: r.history_frame(Self::settings(shard).history_on_join),
                    online: protocol::online_frame(&room, r.online()),
                }))
            }
        };
        let _ = submit(shard, from, Msg::Joined { conn, answer });
    }

    fn on_joined(&self, id: ConnRef, answer: Result<Box<JoinAnswer>, (u16, &'static str)>) {
        let Some(conn) = self.lookup(id) else { return };
        self.joining_since.borrow_mut().remove(&(id.key as usize));
        match answer {
            Err((code, reason)) => conn.close(code, reason),
            Ok(answer) => {
                if conn.is_closing() {
                    return;
                }
                conn.send(answer.history);
                conn.send(answer.online);
                let mut local = self.local.borrow_mut();
                let room = local.entry(conn.room.clone()).or_default();
                room.joining = room.joining.saturating_sub(1);
                room.add(conn.clone());
                if let Some(uid) = conn.uid() {
                    room.index_user(uid, conn.clone());
                }
                conn.joined.set(true);
            }
        }
    }

    /// Sends one encoded frame to every target shard; this shard's viewers directly.
    pub(super) fn deliver(
        &self,
        shard: &Shard,
        room: &RoomId,
        frame: Bytes,
        targets: Vec<usize>,
        since: Option<Instant>,
    ) {
        bump(&self.counters.batches, 1);
        for s in targets {
            if s == shard.id() {
                self.fanout_local(shard, room, &frame, since);
            } else {
                let msg = Msg::Deliver {
                    room: room.clone(),
                    frame: frame.clone(),
                    since,
                };
                if submit(shard, s, msg).is_err() {
                    // That shard's ring and backlog are full: its viewers miss this batch.
                    bump(&self.counters.dropped, 1);
                }
            }
        }
    }

    /// Queues a frame to this shard's viewers of `room`. A batch of posts is timed once
    /// here, for the whole shard (no per-viewer cost).
    fn fanout_local(&self, shard: &Shard, room: &str, frame: &Bytes, since: Option<Instant>) {
        if let Some(r) = self.local.borrow().get(room) {
            let (delivered, dropped) = r.fanout(frame);
            bump(&self.counters.deliveries, delivered);
            bump(&self.counters.dropped, dropped);
            if let Some(t) = since.filter(|_| delivered + dropped > 0) {
                shard.metrics().observe_danmaku_delivery(t.elapsed());
            }
        }
    }
}
