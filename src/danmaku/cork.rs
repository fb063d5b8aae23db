//! The shard's corked fan-out: every frame a viewer gets within one turn of the shard's
//! loop leaves in one write, at the end of the turn.
//!
//! A fan-out ([`super::room::LocalRoom::fanout`]) queues the frame on each viewer's
//! outbound queue without writing it and puts the viewer on this shard's dirty list (once,
//! however many frames it gets). The flusher task, woken by the first viewer of a turn,
//! runs after the tasks already woken in that turn (the mesh receive loop with everything
//! it drained, the readers of the posts), then writes each dirty viewer's queue with one
//! `sendmsg`. So an idle room adds no latency (one item: one write at once), and under load
//! the items that arrived while the shard was busy reach each viewer in one write: the
//! cost per delivery falls as load rises instead of the shard falling behind.
//!
//! Pacing: a flush that took `d` lets the next one start no sooner than `d × PACE` after
//! it ended, so writing sockets takes at most `1 / (1 + PACE)` of the shard's time and the
//! rest goes to reading posts, whose items then leave together. Idle, there is no wait (the
//! last flush ended long ago); saturated, latency grows by at most `d × PACE` (a few ms per
//! thousand viewers) while each write carries more items.
//!
//! What does not fit the socket stays queued and the connection's writer task takes it
//! (io_uring), as for any other frame; frames a viewer must get (acks, history) are not
//! corked and keep their order behind what is queued.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use shards::local::Notify;

use super::viewer::Conn;

/// The next flush starts no sooner than this many times the last flush's duration after
/// it ended (see the module docs).
pub const PACE: u32 = 1;

/// One shard's dirty viewers and the flusher's wake-up.
#[derive(Default)]
pub struct Cork {
    dirty: RefCell<Vec<Rc<Conn>>>,
    /// The list being flushed, kept to reuse its allocation.
    spare: RefCell<Vec<Rc<Conn>>>,
    kick: Notify,
    /// When the last flush ended and how long it took.
    last: Cell<Option<(Instant, Duration)>>,
}

/// What one flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Viewers written (one `sendmsg` each).
    pub writes: u64,
    /// Bytes that went to the kernel.
    pub bytes: u64,
}

impl Cork {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a viewer with corked frames on the list (once per flush) and wakes the flusher.
    pub fn add(&self, conn: &Rc<Conn>) {
        if conn.mark_dirty() {
            let mut dirty = self.dirty.borrow_mut();
            dirty.push(conn.clone());
            if dirty.len() == 1 {
                self.kick.notify();
            }
        }
    }

    /// Viewers waiting for the next flush.
    pub fn pending(&self) -> usize {
        self.dirty.borrow().len()
    }

    /// Writes every dirty viewer's queue, one system call each.
    pub fn flush(&self) -> Flushed {
        let mut list = std::mem::take(&mut *self.spare.borrow_mut());
        std::mem::swap(&mut list, &mut *self.dirty.borrow_mut());
        let mut done = Flushed::default();
        for conn in list.drain(..) {
            let sent = conn.flush();
            done.writes += 1;
            done.bytes += sent;
        }
        *self.spare.borrow_mut() = list;
        done
    }

    /// Waits until a flush is due: a viewer is dirty, and the pacing gap after the last
    /// flush has passed.
    pub async fn due(&self) {
        self.kick.notified().await;
        if let Some((ended, took)) = self.last.get() {
            let at = ended + took * PACE;
            let now = Instant::now();
            if at > now {
                monoio::time::sleep(at - now).await;
            }
        }
    }

    /// Records a flush's start, for the pacing of the next one.
    pub fn flushed(&self, started: Instant) {
        let now = Instant::now();
        self.last.set(Some((now, now - started)));
    }
}
