//! A danmaku viewer as the shard's rooms and engine see it: the [`User`] its token names
//! and its [`Conn`], the connection state that the connection's tasks (`super::conn`) and
//! its shard's room share (`Rc`, `Cell`).
//!
//! Every frame for the viewer goes through its outbound queue ([`crate::outq`], under
//! [`Policy::Drop`]): one byte bound for acks, errors, history, private messages, fan-out
//! batches and pongs alike. Past it, droppable frames (batches, online counts) are dropped
//! for this viewer and counted, must-send frames stop at twice the bound (the connection is
//! closed then), and pongs are coalesced to one. A connection judged slow for the grace
//! period is closed with 1008 "slow consumer" by the shard's sweeper, which also closes one
//! whose oldest unwritten byte is older than the write timeout.
//!
//! A [`Conn`] can be built without a socket, which is how the fan-out benchmark drives it.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::hygiene::TokenBucket;
use super::protocol::close;
use super::{ConnRef, RoomId, Uid};
use crate::auth::Claims;
use crate::outq::{Offer, OutQueue, Policy};

/// A logged-in user, as the token says.
#[derive(Debug)]
pub struct User {
    pub uid: Uid,
    pub nick: Arc<str>,
    pub admin: bool,
    pub vip: bool,
    /// The token's id and issue time, so a revocation can find the connections that
    /// used it (kept here, not in `Conn`, which anonymous viewers also pay for).
    pub jti: Option<Box<str>>,
    pub iat: u64,
}

impl User {
    pub(super) fn from_claims(c: Claims) -> Self {
        let nick = if c.nick.is_empty() {
            c.sub.clone()
        } else {
            c.nick.clone()
        };
        Self {
            admin: c.has_role("admin"),
            vip: c.has_role("vip"),
            jti: c.jti.map(String::into_boxed_str),
            iat: c.iat.unwrap_or(0),
            uid: c.sub.into(),
            nick: nick.into(),
        }
    }

    /// Whether `rev` names the token this user connected with.
    pub fn revoked_by(&self, rev: &crate::auth::Revocation) -> bool {
        match rev {
            crate::auth::Revocation::Token { jti, .. } => self.jti.as_deref() == Some(jti.as_str()),
            crate::auth::Revocation::User {
                uid, not_before, ..
            } => &*self.uid == uid.as_str() && self.iat < *not_before,
        }
    }
}

/// One viewer's connection state, shared by its tasks and its shard's room.
pub struct Conn {
    pub id: ConnRef,
    pub room: RoomId,
    pub user: RefCell<Option<Rc<User>>>,
    /// Position in its `LocalRoom`'s viewer list (for O(1) removal).
    pub room_slot: Cell<usize>,
    /// True once the home shard accepted the join and the connection is in its room.
    pub joined: Cell<bool>,
    /// Everything on its way to the peer, under one byte bound (see `crate::outq`).
    out: OutQueue,
    /// Closed as a slow consumer (counted once, when the connection is let go).
    slow: Cell<bool>,
    last_seen: Cell<Instant>,
    /// This connection's own post rate limit (the room's home keeps the per-user one).
    pub(super) bucket: Cell<TokenBucket>,
    closing: Cell<Option<(u16, &'static str)>>,
    /// While the connection is parked (no task): its socket and what the listener holds
    /// (`super::park`).
    pub(super) parked: RefCell<Option<super::park::Parked>>,
}

impl Conn {
    /// A new connection: its queue's bound and its rate burst, and the engine's clocks now
    /// (monotonic, wall ms) for its heartbeat and rate limit.
    pub fn new(
        id: ConnRef,
        room: RoomId,
        user: Option<Rc<User>>,
        (queue_limit, burst): (usize, f32),
        (now, now_ms): (Instant, u64),
    ) -> Self {
        Self {
            id,
            room,
            user: RefCell::new(user),
            room_slot: Cell::new(usize::MAX),
            joined: Cell::new(false),
            out: OutQueue::new(queue_limit, Policy::Drop),
            slow: Cell::new(false),
            last_seen: Cell::new(now),
            bucket: Cell::new(TokenBucket::full(burst, now_ms)),
            closing: Cell::new(None),
            parked: RefCell::new(None),
        }
    }

    /// The outbound queue (the connection's tasks read and write it).
    pub(super) fn out(&self) -> &OutQueue {
        &self.out
    }

    /// Lets frames go straight to the socket while nothing is queued.
    pub(super) fn set_fd(&self, fd: RawFd) {
        self.out.set_fd(fd);
    }

    /// The peer was heard from (the heartbeat check).
    pub(super) fn touch(&self, now: Instant) {
        self.last_seen.set(now);
    }

    /// The close code and reason, once closing started.
    pub fn closing(&self) -> Option<(u16, &'static str)> {
        self.closing.get()
    }

    /// Takes every queued frame in the order the writer would write them, as if the peer
    /// had read them all (an in-memory peer: the engine tests).
    pub fn take_frames(&self) -> Vec<Bytes> {
        self.out.take_all()
    }

    /// Bytes written directly since the last call (the sweeper collects them).
    pub fn take_direct_bytes(&self) -> u64 {
        self.out.take_direct_bytes()
    }

    /// When the oldest byte not yet written was queued, if one is: the write timeout
    /// runs from there, so a peer that takes a few bytes at a time does not restart it.
    pub fn write_since(&self) -> Option<Instant> {
        self.out.oldest_unwritten()
    }

    pub fn uid(&self) -> Option<Uid> {
        self.user.borrow().as_ref().map(|u| u.uid.clone())
    }

    /// Sends a frame this connection must get (acks, errors, history, private messages).
    /// Past the hard ceiling (twice the bound) the connection is closed as a slow consumer
    /// instead: it has stopped reading, and nothing more is held for it.
    pub fn send(&self, frame: Bytes) {
        if self.closing.get().is_some() {
            return;
        }
        if self.out.send(frame) == Offer::Closed {
            self.close_slow();
        }
    }

    /// Queues a fan-out frame unless the queue is over its bound; returns false if the
    /// frame was dropped for this viewer (the slow-consumer clock starts then). `now` is
    /// read once per fan-out by the caller.
    pub fn send_droppable(&self, frame: &Bytes, now: Instant) -> bool {
        if self.closing.get().is_some() {
            return true;
        }
        self.out.send_droppable(frame, now)
    }

    /// The queue a room's frames of one turn go to (`super::cork`, through
    /// `OutQueue::offer_batch_all`); `None` once the connection is closing.
    pub fn fanout_queue(&self) -> Option<&OutQueue> {
        self.closing.get().is_none().then_some(&self.out)
    }

    /// Answers a ping. At most one pong waits: a newer ping replaces the older one's answer
    /// (RFC 6455 §5.5.3), so a flood of pings holds one control frame, not a queue of them.
    pub(super) fn send_pong(&self, frame: Bytes) {
        if self.closing.get().is_some() {
            return;
        }
        self.out.set_pong(frame);
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.out.queued_bytes()
    }

    /// Takes every queued frame (the fan-out benchmark's in-memory sink).
    pub fn drain_queue(&self) -> usize {
        self.out.drain()
    }

    pub fn over_since(&self) -> Option<Instant> {
        self.out.over_since()
    }

    /// Whether it was closed as a slow consumer.
    pub fn closed_slow(&self) -> bool {
        self.slow.get()
    }

    pub fn last_seen(&self) -> Instant {
        self.last_seen.get()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get().is_some()
    }

    /// Starts closing: the writer sends what is queued, then the close frame.
    pub fn close(&self, code: u16, reason: &'static str) {
        if self.closing.get().is_none() {
            self.closing.set(Some((code, reason)));
        }
        self.out.finish();
    }

    /// Closes without waiting for the queue: a write in flight is abandoned.
    pub fn close_now(&self, code: u16, reason: &'static str) {
        self.close(code, reason);
        self.out.abort();
    }

    /// Closes with 1008 "slow consumer" at once (the grace ran out, or the hard ceiling).
    pub fn close_slow(&self) {
        if self.closing.get().is_none() {
            self.slow.set(true);
        }
        self.close_now(close::POLICY, "slow consumer");
    }
}
