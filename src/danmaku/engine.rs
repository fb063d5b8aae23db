//! One shard's danmaku engine: its connections, the local halves of rooms with viewers
//! here, the home halves of rooms homed here, and the handling of danmaku mesh messages.
//!
//! Three background tasks per shard keep time: the *flusher* encodes and sends each dirty
//! room's batch once per merge window; the *online ticker* pushes changed online counts;
//! the *sweeper* (every second) closes connections past their heartbeat or slow-consumer
//! grace, times out joins the home shard never answered, evicts idle home rooms and
//! publishes this shard's counters to the metrics registry.
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

use super::conn::{home_of, submit, Conn, User};
use super::protocol::{self, close, code, encode_item, Item, ItemBody};
use super::room::{HomeRoom, LocalRoom, Priority, RoomSettings};
use super::{Actor, ConnRef, JoinAnswer, ModOp, Msg, Post, PostBody, RoomId, Uid};
use crate::shard::Shard;
use crate::store::model::RoomState;
use crate::store::{AckTo, Request};

/// Wall-clock milliseconds since the Unix epoch (item timestamps, rate limits).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long a join may wait for the home shard's answer before the connection is closed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle home room with nothing but what the store holds is kept (see
/// `HomeRoom::is_pristine`).
const PRISTINE_IDLE: Duration = Duration::from_secs(3);
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
struct Counters {
    posts: Cell<u64>,
    rejected: Cell<u64>,
    items: Cell<u64>,
    batches: Cell<u64>,
    deliveries: Cell<u64>,
    dropped: Cell<u64>,
    sampled_out: Cell<u64>,
    bytes_written: Cell<u64>,
    slow_closed: Cell<u64>,
    heartbeat_closed: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

pub struct Danmaku {
    conns: RefCell<Slab<Rc<Conn>>>,
    joining_since: RefCell<HashMap<usize, Instant>>,
    next_gen: Cell<u32>,
    local: RefCell<HashMap<RoomId, LocalRoom>>,
    home: RefCell<HashMap<RoomId, HomeRoom>>,
    dirty: RefCell<Vec<RoomId>>,
    flush_kick: shards::local::Notify,
    counters: Counters,
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

    /// Starts the shard's danmaku tasks.
    pub fn spawn_tasks(shard: &Rc<Shard>) {
        monoio::spawn(flush_loop(shard.clone()));
        monoio::spawn(online_loop(shard.clone()));
        monoio::spawn(sweep_loop(shard.clone()));
    }

    fn settings(shard: &Shard) -> &super::Settings {
        &shard.common.danmaku.settings
    }

    fn room_settings(shard: &Shard) -> RoomSettings {
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

    /// Sends a moderation action to the room's home shard.
    pub fn moderate(
        &self,
        shard: &Shard,
        room: RoomId,
        op: ModOp,
        actor: Actor,
        conn: Option<&Rc<Conn>>,
    ) {
        let home = home_of(shard, &room);
        let msg = Msg::Moderate {
            room,
            op,
            actor: Box::new(actor),
        };
        if submit(shard, home, msg).is_err() {
            if let Some(conn) = conn {
                conn.send(protocol::error_frame(
                    code::BUSY,
                    "server busy, retry",
                    None,
                ));
            }
        }
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
    fn reply_to(&self, shard: &Shard, to: Option<ConnRef>, frame: Bytes) {
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

    fn on_post(&self, shard: &Rc<Shard>, post: Post) {
        let now = now_ms();
        let reply = |frame: Bytes| self.reply_to(shard, post.from, frame);
        let mut home = self.home.borrow_mut();
        let r = home.entry(post.room.clone()).or_insert_with(|| {
            HomeRoom::new(
                post.room.clone(),
                shard.ctx.count,
                &Self::room_settings(shard),
                now,
            )
        });
        if post.from.is_some() {
            if let Err((c, m)) = r.admit(&post.uid, now) {
                return reply(protocol::error_frame(c, m, post.cid.as_deref()));
            }
        }
        if let PostBody::Pm { to, text } = &post.body {
            if !r.has_user(to) {
                return reply(protocol::error_frame(
                    code::NO_SUCH_USER,
                    "that user is not in this room",
                    post.cid.as_deref(),
                ));
            }
            let id = r.next_id();
            let frame = protocol::frame_json(&serde_json::json!({
                "type": "pm", "id": id, "room": &*post.room, "from": &*post.uid,
                "nick": &*post.nick, "to": &**to, "text": text, "ts": now,
            }));
            let targets: Vec<usize> = r.targets().collect();
            drop(home);
            reply(protocol::ack_frame(post.cid.as_deref(), id));
            for s in targets {
                let msg = Msg::DeliverTo {
                    room: post.room.clone(),
                    uid: to.clone(),
                    frame: frame.clone(),
                };
                if s == shard.id() {
                    self.handle(shard, s, msg);
                } else {
                    let _ = submit(shard, s, msg);
                }
            }
            return;
        }
        let id = r.next_id();
        let media_ts = r.media_now(now);
        let (kind, body, priority) = match &post.body {
            PostBody::Danmaku { text, color, mode } => (
                "danmaku",
                ItemBody::Danmaku {
                    text,
                    color,
                    mode: *mode,
                },
                if post.vip {
                    Priority::Vip
                } else {
                    Priority::Plain
                },
            ),
            PostBody::Gift { gift_id, count } => (
                "gift",
                ItemBody::Gift {
                    gift_id,
                    count: *count,
                },
                Priority::Gift,
            ),
            PostBody::Like { count } => ("like", ItemBody::Like { count: *count }, Priority::Plain),
            PostBody::System { text } => ("system", ItemBody::System { text }, Priority::System),
            PostBody::Live { live } => (
                "live",
                ItemBody::Live {
                    status: if *live { "live" } else { "offline" },
                },
                Priority::System,
            ),
            PostBody::Pm { .. } => unreachable!("handled above"),
        };
        let item = encode_item(&Item {
            kind,
            id,
            room: &post.room,
            uid: &post.uid,
            nick: &post.nick,
            ts: now,
            media_ts,
            body,
        });
        bump(&self.counters.items, 1);
        if r.push(item.clone(), priority, now) {
            r.pending_since.get_or_insert(post.at);
        } else {
            bump(&self.counters.sampled_out, 1);
        }
        // The ack waits for the store under the durable policy: it is sent by the store
        // thread once the item is committed.
        let durable = Self::settings(shard).durable_ack && post.from.is_some();
        let append = Request::AppendDanmaku {
            room: post.room.to_string(),
            id,
            item,
            ack: durable.then(|| AckTo {
                conn: post.from.expect("checked"),
                cid: post.cid.clone(),
            }),
        };
        match shard.common.store.send(append) {
            Ok(()) if durable => {}
            Ok(()) => reply(protocol::ack_frame(post.cid.as_deref(), id)),
            Err(e) => {
                tracing::warn!(room = %post.room, error = %e, "item not stored");
                reply(protocol::error_frame(
                    code::BUSY,
                    "delivered but not stored; retry later",
                    post.cid.as_deref(),
                ));
            }
        }
        if Self::settings(shard).merge_window.is_zero() {
            // Window 0: one frame per item, sent at once.
            if let Some(frame) = r.flush() {
                let targets: Vec<usize> = r.targets().collect();
                let since = r.pending_since.take();
                drop(home);
                self.deliver(shard, &post.room, frame, targets, since);
            }
        } else if !r.dirty {
            r.dirty = true;
            self.dirty.borrow_mut().push(post.room.clone());
            self.flush_kick.notify();
        }
    }

    fn on_moderate(&self, shard: &Rc<Shard>, room: RoomId, op: ModOp, actor: Actor) {
        let now = now_ms();
        let (reply_to, cid) = match &actor {
            Actor::User { reply, cid, .. } => (Some(*reply), cid.clone()),
            Actor::System => (None, None),
        };
        let answer = |frame: Bytes| {
            if let Some(to) = reply_to {
                let _ = submit(shard, to.shard as usize, Msg::Reply { conn: to, frame });
            }
        };
        let mut home = self.home.borrow_mut();
        let r = home.entry(room.clone()).or_insert_with(|| {
            HomeRoom::new(
                room.clone(),
                shard.ctx.count,
                &Self::room_settings(shard),
                now,
            )
        });
        let allowed = match &actor {
            Actor::System => true,
            Actor::User {
                uid, global_admin, ..
            } => {
                let owner_only = matches!(
                    op,
                    ModOp::AddAdmin { .. } | ModOp::RemoveAdmin { .. } | ModOp::SetOwner { .. }
                );
                *global_admin
                    || (!owner_only && r.is_moderator(uid))
                    || r.owner.as_deref() == Some(&**uid)
            }
        };
        if !allowed {
            return answer(protocol::error_frame(
                code::NOT_ALLOWED,
                "only the room owner or an admin may do that",
                cid.as_deref(),
            ));
        }
        let mut kick: Option<(Uid, u16, &'static str)> = None;
        match op {
            ModOp::Mute { uid, secs } => {
                let until = if secs == 0 {
                    u64::MAX
                } else {
                    now.saturating_add(secs.saturating_mul(1000))
                };
                r.mute(uid, until);
            }
            ModOp::Unmute { uid } => r.unmute(&uid),
            ModOp::Ban { uid } => {
                r.ban(uid.clone());
                kick = Some((uid, close::BANNED, "banned from this room"));
            }
            ModOp::Unban { uid } => r.unban(&uid),
            ModOp::Kick { uid } => kick = Some((uid, close::KICKED, "kicked by a moderator")),
            ModOp::SlowMode { secs } => r.set_slow_mode(secs.min(3600)),
            ModOp::AddAdmin { uid } => r.add_admin(uid),
            ModOp::RemoveAdmin { uid } => r.remove_admin(&uid),
            ModOp::SetOwner { uid } => r.owner = Some(uid),
        }
        let mods = r.mod_snapshot(now);
        if let Err(e) = shard.common.store.send(Request::SaveMods {
            room: room.to_string(),
            mods,
        }) {
            tracing::warn!(%room, error = %e, "moderation change not stored");
        }
        let targets: Vec<usize> = r.targets().collect();
        drop(home);
        answer(protocol::frame_json(
            &serde_json::json!({"type": "ack", "cid": cid}),
        ));
        if let Some((uid, code, reason)) = kick {
            for s in targets {
                let msg = Msg::Kick {
                    room: room.clone(),
                    uid: uid.clone(),
                    code,
                    reason,
                };
                if s == shard.id() {
                    self.handle(shard, s, msg);
                } else {
                    let _ = submit(shard, s, msg);
                }
            }
        }
    }

    /// Sends one encoded frame to every target shard; this shard's viewers directly.
    fn deliver(
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

    fn flush_dirty(&self, shard: &Shard) {
        let rooms = std::mem::take(&mut *self.dirty.borrow_mut());
        for room in rooms {
            let flushed = {
                let mut home = self.home.borrow_mut();
                home.get_mut(&room).and_then(|r| {
                    r.dirty = false;
                    let since = r.pending_since.take();
                    r.flush()
                        .map(|f| (f, r.targets().collect::<Vec<_>>(), since))
                })
            };
            if let Some((frame, targets, since)) = flushed {
                self.deliver(shard, &room, frame, targets, since);
            }
        }
    }

    fn push_online(&self, shard: &Shard, interval: Duration) {
        let now = now_ms();
        let mut out = Vec::new();
        for r in self.home.borrow_mut().values_mut() {
            if r.online_changed
                && now.saturating_sub(r.online_sent_ms) >= interval.as_millis() as u64
            {
                r.online_changed = false;
                r.online_sent_ms = now;
                out.push((
                    r.id.clone(),
                    protocol::online_frame(&r.id, r.online()),
                    r.targets().collect::<Vec<_>>(),
                ));
            }
        }
        for (room, frame, targets) in out {
            self.deliver(shard, &room, frame, targets, None);
        }
    }

    fn sweep(&self, shard: &Shard) {
        let s = Self::settings(shard);
        let now = Instant::now();
        let silence = s.heartbeat * 2;
        let write_timeout = Duration::from_millis(shard.config().http.write_timeout_ms);
        let mut queued = 0usize;
        let mut direct = 0u64;
        for (_, c) in self.conns.borrow().iter() {
            queued += c.queued_bytes();
            direct += c.take_direct_bytes();
            if c.is_closing() {
                continue;
            }
            if c.write_since()
                .is_some_and(|t| now.duration_since(t) >= write_timeout)
            {
                c.close_now(close::ABNORMAL, "write timed out");
                continue;
            }
            if c.over_since()
                .is_some_and(|t| now.duration_since(t) >= s.slow_grace)
            {
                c.close_slow();
            } else if now.duration_since(c.last_seen()) >= silence {
                bump(&self.counters.heartbeat_closed, 1);
                c.close_now(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
            }
        }
        let stuck: Vec<usize> = self
            .joining_since
            .borrow()
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= JOIN_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for key in stuck {
            self.joining_since.borrow_mut().remove(&key);
            if let Some(c) = self.conns.borrow().get(key) {
                c.close_now(close::TRY_AGAIN_LATER, "join timed out, try again");
            }
        }
        let idle_ms = s.room_idle.as_millis() as u64;
        let pristine_idle_ms = idle_ms.min(PRISTINE_IDLE.as_millis() as u64);
        let wall = now_ms();
        self.home.borrow_mut().retain(|_, r| {
            let keep_ms = if r.is_pristine() && !r.loading {
                pristine_idle_ms
            } else {
                idle_ms
            };
            r.dirty
                || r.idle_since_ms
                    .is_none_or(|t| wall.saturating_sub(t) < keep_ms)
        });
        bump(&self.counters.bytes_written, direct);
        self.publish(shard, queued);
        shard.live.publish_metrics(shard);
    }

    fn publish(&self, shard: &Shard, queued: usize) {
        let m = shard.metrics();
        let c = &self.counters;
        let take = |cell: &Cell<u64>| cell.replace(0);
        m.ws_posts.fetch_add(take(&c.posts), Relaxed);
        m.ws_rejected.fetch_add(take(&c.rejected), Relaxed);
        m.ws_items.fetch_add(take(&c.items), Relaxed);
        m.ws_batches.fetch_add(take(&c.batches), Relaxed);
        m.ws_deliveries.fetch_add(take(&c.deliveries), Relaxed);
        m.ws_dropped.fetch_add(take(&c.dropped), Relaxed);
        m.ws_sampled_out.fetch_add(take(&c.sampled_out), Relaxed);
        m.ws_bytes_out.fetch_add(take(&c.bytes_written), Relaxed);
        m.ws_slow_closed.fetch_add(take(&c.slow_closed), Relaxed);
        m.ws_heartbeat_closed
            .fetch_add(take(&c.heartbeat_closed), Relaxed);
        m.ws_queue_bytes.store(queued as u64, Relaxed);
        m.ws_rooms_home
            .store(self.home.borrow().len() as u64, Relaxed);
        m.ws_rooms_local
            .store(self.local.borrow().len() as u64, Relaxed);
    }
}

async fn flush_loop(shard: Rc<Shard>) {
    let window = Danmaku::settings(&shard).merge_window;
    loop {
        shard.danmaku.flush_kick.notified().await;
        monoio::time::sleep(window).await;
        shard.danmaku.flush_dirty(&shard);
    }
}

async fn online_loop(shard: Rc<Shard>) {
    let interval = Danmaku::settings(&shard).online_interval;
    let tick = interval.clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        monoio::time::sleep(tick).await;
        shard.danmaku.push_online(&shard, interval);
    }
}

async fn sweep_loop(shard: Rc<Shard>) {
    let mut ticks = 0u32;
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        shard.danmaku.sweep(&shard);
        // Expired revocations go once a minute: the set can be large, and an expired
        // entry refuses nothing the token's own `exp` does not.
        ticks = ticks.wrapping_add(1);
        if ticks % 60 == 0 {
            shard.sweep_revocations(crate::auth::now_unix());
        }
    }
}
