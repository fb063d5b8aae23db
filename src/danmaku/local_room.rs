//! A room's viewers on one shard ([`LocalRoom`]): the list the room's frames are written
//! to at the end of each turn of the shard's loop, the per-user index for private messages
//! and kicks, and the room's shedding state (used on its home shard). The home shard's
//! half of a room is `super::room::HomeRoom`.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::cork::Flushed;
use super::shed::Shed;
use super::viewer::Conn;
use super::Uid;
use crate::outq::OutQueue;

/// A room's viewers on one shard.
#[derive(Default)]
pub struct LocalRoom {
    pub viewers: Vec<Rc<Conn>>,
    /// Connections that asked to join and wait for the home shard's answer.
    pub joining: u32,
    /// Logged-in viewers by user id (for private messages and kicks).
    pub users: HashMap<Uid, Vec<Rc<Conn>>>,
    /// Frames fanned out in this turn of the shard's loop, written to every viewer by the
    /// end-of-turn flush (`cork`).
    pending: Vec<Bytes>,
    /// When the oldest pending frame's first post arrived (the delivery latency metric).
    pending_since: Option<Instant>,
    /// Whether the room sheds plain danmaku, judged at each flush on its home shard.
    pub shed: Shed,
}

impl LocalRoom {
    /// Viewers counted for the room: joined and joining.
    pub fn count(&self) -> u32 {
        self.viewers.len() as u32 + self.joining
    }

    pub fn add(&mut self, conn: Rc<Conn>) {
        conn.room_slot.set(self.viewers.len());
        self.viewers.push(conn);
    }

    pub fn remove(&mut self, conn: &Conn) {
        let slot = conn.room_slot.get();
        if slot < self.viewers.len() && std::ptr::eq(&*self.viewers[slot], conn) {
            self.viewers.swap_remove(slot);
            if let Some(moved) = self.viewers.get(slot) {
                moved.room_slot.set(slot);
            }
        }
    }

    pub fn index_user(&mut self, uid: Uid, conn: Rc<Conn>) {
        self.users.entry(uid).or_default().push(conn);
    }

    pub fn unindex_user(&mut self, uid: &str, conn: &Conn) {
        if let Some(list) = self.users.get_mut(uid) {
            list.retain(|c| !std::ptr::eq(&**c, conn));
            if list.is_empty() {
                self.users.remove(uid);
            }
        }
    }

    /// Holds `frame` for this turn's flush (`cork`): nothing per viewer yet. Returns true
    /// when it is the turn's first, so the caller puts the room on the dirty list.
    pub fn fanout(&mut self, frame: Bytes, since: Option<Instant>) -> bool {
        if self.viewers.is_empty() {
            return false;
        }
        self.pending.push(frame);
        if let Some(t) = since {
            self.pending_since = Some(self.pending_since.map_or(t, |p| p.min(t)));
        }
        self.pending.len() == 1
    }

    /// Whether frames wait for the flush.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the pending frames to every viewer: the same buffers, one write each (all
    /// of them in one system call where the shard batches its sends), or through its queue
    /// when something is ahead of them. Returns what it did and when the oldest pending
    /// post arrived.
    pub fn flush(&mut self, now: Instant) -> (Flushed, Option<Instant>) {
        let mut done = Flushed::default();
        if self.pending.is_empty() {
            return (done, None);
        }
        OutQueue::offer_batch_all(
            &self.viewers,
            |c| c.fanout_queue(),
            &self.pending,
            now,
            |b| {
                done.delivered += b.delivered as u64;
                done.dropped += b.dropped as u64;
                done.writes += b.wrote as u64;
                done.bytes += b.sent as u64;
                done.behind += b.behind as u64;
            },
        );
        // The allocation stays for the next turn.
        self.pending.clear();
        (done, self.pending_since.take())
    }
}
