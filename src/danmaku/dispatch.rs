//! The danmaku engine's mesh messages: the readiness gate (a room's messages wait while
//! its stored state loads, then go in order), joins and their answers, leaves, identify,
//! replies, deliveries to this shard's viewers, kicks, the media clock, group-commit
//! acks and calls from other shards. Everything a shard sends itself goes through the
//! mesh's local queue, so no handler runs inside another.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::engine::{bump, Danmaku};
use super::protocol::{self, close, code};
use super::room::LocalRoom;
use super::shed::Load;
use super::{ConnRef, JoinAnswer, Msg, RoomId, Uid};
use crate::cluster::Event;
use crate::store::model::RoomState;
use crate::store::{Committed, Request};

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
        Msg::Cluster(Event::Items { room, .. } | Event::Control { room, .. }) => Some(room),
        _ => None,
    }
}

impl Danmaku {
    /// A danmaku message from shard `from` (this one included). Messages for a room whose
    /// stored state is still loading wait, and are dispatched in order once it is loaded.
    pub fn handle(self: &Rc<Self>, from: usize, msg: Msg) {
        if let Some(room) = home_room_of(&msg) {
            if !self.home_ready(room) {
                let mut home = self.home.borrow_mut();
                let r = home.get_mut(room).expect("home_ready created it");
                if r.waiting.len() < MAX_WAITING {
                    r.waiting.push((from, msg));
                } else if let Msg::Post(post) = msg {
                    drop(home);
                    self.reply_to(
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
        self.dispatch(from, msg);
    }

    fn dispatch(self: &Rc<Self>, from: usize, msg: Msg) {
        match msg {
            Msg::Join {
                room,
                conn,
                uid,
                count,
                since,
            } => self.on_join(from, (room, conn, uid), count, since),
            Msg::Joined { conn, answer } => self.on_joined(conn, answer),
            Msg::Leave { room, uid, count } => {
                if let Some(r) = self.home.borrow_mut().get_mut(&room) {
                    r.set_count(from, count, self.now_ms());
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
                    let _ = self.submit(from, kick);
                }
            }
            Msg::Post(post) => self.on_post(*post),
            Msg::Reply { conn, frame } => {
                if let Some(c) = self.lookup(conn) {
                    c.send(frame);
                }
            }
            Msg::Deliver { room, frame, since } => self.fanout_local(from, &room, frame, since),
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
            Msg::Moderate { room, op, actor } => self.on_moderate(room, op, *actor),
            Msg::MediaClock { room, media_ms } => {
                let mut home = self.home.borrow_mut();
                let r = self.home_room(&mut home, &room, self.now_ms());
                match media_ms {
                    Some(ms) => r.set_media_clock(ms, self.now_ms()),
                    None => r.clear_media_clock(),
                }
            }
            Msg::Committed(c) => self.on_committed(c),
            Msg::Cluster(ev) => self.on_cluster(ev),
            Msg::Call(call) => call.run(self),
        }
    }

    /// Whether the home half of `room` is ready; creates it (and starts loading its stored
    /// state) if it does not exist.
    fn home_ready(self: &Rc<Self>, room: &RoomId) -> bool {
        let mut home = self.home.borrow_mut();
        if let Some(r) = home.get(room) {
            return !r.loading;
        }
        self.home_room(&mut home, room, self.now_ms()).loading = true;
        drop(home);
        let me = self.clone();
        let room = room.clone();
        monoio::spawn(async move {
            // In a cluster, the room's channel first: every batch published after the
            // state is read then arrives (the ones before it are trimmed by id).
            if let Some(cluster) = &me.ctx.cluster {
                cluster.subscribe(room.clone()).await;
            }
            let tail = me.settings().history_capacity;
            let mut delay = Duration::from_millis(50);
            loop {
                let state = me
                    .ctx
                    .store
                    .call(|reply| Request::RoomState {
                        room: room.to_string(),
                        tail,
                        reply,
                    })
                    .await;
                match state {
                    Ok(state) => return me.loaded(&room, state),
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

    /// The room's stored state arrived (in a task of its own, not inside `handle`): what
    /// waited for it is dispatched now, in arrival order.
    fn loaded(self: &Rc<Self>, room: &RoomId, state: RoomState) {
        let waiting = {
            let mut home = self.home.borrow_mut();
            let Some(r) = home.get_mut(room) else { return };
            r.restore(state, self.now_ms());
            r.loading = false;
            std::mem::take(&mut r.waiting)
        };
        for (from, msg) in waiting {
            self.dispatch(from, msg);
        }
    }

    /// A group commit finished: the acks (or errors) of this shard's connections.
    fn on_committed(&self, c: Committed) {
        for (id, ack) in c.acks {
            let frame = if c.stored {
                protocol::ack_frame(ack.cid.as_deref(), id)
            } else {
                protocol::error_frame(
                    code::BUSY,
                    "could not store the message; it may not be kept",
                    ack.cid.as_deref(),
                )
            };
            if let Some(conn) = self.lookup(ack.conn) {
                conn.send(frame);
            }
        }
    }

    /// Sends a frame to one connection, wherever it is.
    pub(super) fn reply_to(&self, to: Option<ConnRef>, frame: Bytes) {
        let Some(to) = to else { return };
        let _ = self.submit(to.shard as usize, Msg::Reply { conn: to, frame });
    }

    /// A join, answered on this (the home) shard's lane to the viewer's shard: the items
    /// flushed before it are in its history frame, and the batches flushed after it follow
    /// it on the same lane, so the viewer (added to its room when the answer arrives) gets
    /// each item once. With `since`, the history frame holds the items after that id.
    fn on_join(
        &self,
        from: usize,
        (room, conn, uid): (RoomId, ConnRef, Option<Uid>),
        count: u32,
        since: Option<u64>,
    ) {
        let answer = {
            let mut home = self.home.borrow_mut();
            let r = self.home_room(&mut home, &room, self.now_ms());
            r.set_count(from, count, self.now_ms());
            if uid.as_deref().is_some_and(|u| r.is_banned(u)) {
                Err((close::BANNED, "banned from this room"))
            } else {
                if let Some(uid) = &uid {
                    r.user_joined(uid);
                }
                let (gap, history) = match since {
                    None => (None, r.history_frame(self.settings().history_on_join)),
                    Some(since) => {
                        let f = r.resume_frames(since);
                        (f.gap, f.history)
                    }
                };
                Ok(Box::new(JoinAnswer {
                    gap,
                    history,
                    online: protocol::online_frame(&room, r.online()),
                }))
            }
        };
        let _ = self.submit(from, Msg::Joined { conn, answer });
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
                if let Some(gap) = answer.gap {
                    conn.send(gap);
                }
                conn.send(answer.history);
                conn.send(answer.online);
                let mut local = self.local.borrow_mut();
                let room = local.entry(conn.room.clone()).or_default();
                room.joining = room.joining.saturating_sub(1);
                // Frames pending for this turn are in the history just sent: the others
                // get them now, before the newcomer is one of them.
                if room.has_pending() {
                    self.flush_room(&conn.room, room);
                }
                room.add(conn.clone());
                if let Some(uid) = conn.uid() {
                    room.index_user(uid, conn.clone());
                }
                conn.joined.set(true);
            }
        }
    }

    /// Sends one encoded frame to every target shard (this one through the mesh's local
    /// queue, like any other).
    pub(super) fn deliver(
        &self,
        room: &RoomId,
        frame: Bytes,
        targets: Vec<usize>,
        since: Option<Instant>,
    ) {
        bump(&self.counters.batches, 1);
        for s in targets {
            let msg = Msg::Deliver {
                room: room.clone(),
                frame: frame.clone(),
                since,
            };
            if self.submit(s, msg).is_err() {
                // That shard's ring and backlog are full: its viewers miss this batch.
                bump(&self.counters.dropped, 1);
            }
        }
    }

    /// Holds a frame for this shard's viewers of `room` until the end of the loop's turn
    /// (`super::cork`): the flush writes the turn's frames to each viewer at once.
    fn fanout_local(&self, from: usize, room: &RoomId, frame: Bytes, since: Option<Instant>) {
        if let Some(r) = self.local.borrow_mut().get_mut(room) {
            if r.fanout(own_copy(from, self.port().me(), frame), since) {
                self.cork.add(room.clone());
            }
        }
    }

    /// Writes a room's pending frames to its viewers now, and counts it.
    pub(super) fn flush_room(&self, id: &RoomId, r: &mut LocalRoom) {
        let now = Instant::now();
        let (done, since) = r.flush(now);
        self.count_flushed(done);
        if let Some(t) = since.filter(|_| done.delivered + done.dropped > 0) {
            self.ctx.metrics.observe_danmaku_delivery(t.elapsed());
        }
        if done.delivered + done.dropped > 0 && self.home_of(id) == self.port().me() {
            self.judge_shedding(id, r, done.behind as usize, now);
        }
    }

    /// Moves the room's shedding share after a flush on its home shard (`super::shed`);
    /// a room that starts or stops shedding is logged, with why.
    fn judge_shedding(&self, id: &RoomId, r: &mut LocalRoom, behind: usize, now: Instant) {
        let shard = self.cork.shard_load(now);
        let load = Load::judge(behind, r.viewers.len(), shard);
        let was = r.shed.share();
        r.shed.observe(load, now);
        let share = r.shed.share();
        if was == 1.0 && share < 1.0 {
            tracing::info!(
                room = %id,
                behind,
                viewers = r.viewers.len(),
                ?shard,
                "room sheds plain danmaku: more is offered than its viewers are written"
            );
        } else if was < 1.0 && share == 1.0 {
            tracing::info!(room = %id, "room delivers all its danmaku again");
        }
    }
}

/// A frame from another shard becomes this shard's own copy: one copy per shard per frame,
/// so that the refcount of the buffer the viewers' queues clone and drop is on a cache line
/// no other core touches. Measured with `cargo bench --bench fanout` (one room, 10,000
/// viewers on 2 shards, 2 cores): sharing the home's buffer gave 0.72x one shard's
/// deliveries/s, a copy per shard 1.46x.
fn own_copy(from: usize, me: usize, frame: Bytes) -> Bytes {
    if from == me {
        frame
    } else {
        Bytes::copy_from_slice(&frame)
    }
}
